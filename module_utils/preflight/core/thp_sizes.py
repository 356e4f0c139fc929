"""Per-size (multi-size) THP, kernels since 6.8: one ``hugepages-<N>kB/enabled`` knob per anonymous page size
(always, inherit, madvise, never). The thp role's ``thp_sizes`` map ({"64kB": "always", ...}) is read, checked
against what this kernel offers, planned, persisted at boot with ``thp_anon=`` and rolled back here; thp.py
folds it into the role's validation, plan and record.

Every path is read under a Tree's root, so a copy of a sysfs tree (one without per-size knobs) stands in for
the live one in tests.
"""

from __future__ import annotations

import re

from . import grub
from .catalog import (
    THP_ANON_MIN_KERNEL,
    THP_ANON_OPTION,
    THP_DIR,
    THP_SIZE_KNOB,
    THP_SIZE_NAME,
    THP_SIZES_VARIABLE,
)
from .cmdline import kernel_params
from .sysfs import parse_choices
from .tree import Tree

OSRELEASE = "/proc/sys/kernel/osrelease"
CMDLINE_VARIABLE = "GRUB_CMDLINE_LINUX"


def size_kb(size: str) -> int:
    """'64kB' -> 64."""
    return int(size[: -len("kB")])


def setting_name(size: str) -> str:
    """The name a per-size knob has in the role's plan, record and report: thp_sizes[64kB]."""
    return f"{THP_SIZES_VARIABLE}[{size}]"


# --- Reading ------------------------------------------------------------------------------------------------
def read_sizes(tree: Tree) -> dict:
    """Every size this kernel offers for anonymous THP, smallest first: {"64kB": {path, current, choices}}.
    Sizes offered to shmem or files only have a directory but no ``enabled`` and are left out; a kernel before
    6.8 (or without THP) gives {}."""
    names = [name for name in tree.listdir(THP_DIR) or () if re.fullmatch(f"hugepages-{THP_SIZE_NAME}", name)]
    sizes = {}
    for name in sorted(names, key=lambda n: size_kb(n[len("hugepages-"):])):
        size = name[len("hugepages-"):]
        path = THP_SIZE_KNOB.format(size=size)
        current, choices = parse_choices(tree.read(path))
        if current is None and not choices:
            continue
        sizes[size] = {"path": path, "current": current, "choices": choices}
    return sizes


def settings(sizes: dict) -> dict:
    """read_sizes keyed as the plan names them (thp_sizes[64kB]), beside the role's other settings."""
    return {setting_name(size): dict(entry) for size, entry in sizes.items()}


# --- Validation (before anything is touched) -----------------------------------------------------------------
def validate(wanted, sizes: dict) -> list[str]:
    """Every error in the map, one sentence each, naming the variable, the size or value and what is allowed.
    An empty map (or null) asks for nothing and is never an error."""
    name = THP_SIZES_VARIABLE
    if wanted is None or wanted == {}:
        return []
    if not isinstance(wanted, dict):
        return [f"{name}: '{wanted}' is not a map of page size to setting; write e.g. {{\"64kB\": always}}"]
    if not sizes:
        return [
            f"{name}: this kernel has no per-size THP knobs ({THP_DIR}/hugepages-<N>kB/enabled, Linux 6.8 and "
            f"later), so {', '.join(str(size) for size in wanted)} cannot be set; set {name}: {{}} for this host "
            "or boot a newer kernel"
        ]
    errors = []
    offered = ", ".join(sizes)
    for size, value in wanted.items():
        if size not in sizes:
            errors.append(f"{name}: size '{size}' is not offered by this kernel; allowed sizes: {offered}")
            continue
        choices = sizes[size]["choices"]
        if isinstance(value, bool):
            errors.append(f"{name}[{size}]: '{value}' is a YAML boolean, not a word (quote it: \"never\"); "
                          f"allowed: {', '.join(choices)}")
        elif str(value) not in choices:
            errors.append(f"{name}[{size}]: '{value}' is not offered by this kernel ({sizes[size]['path']}); "
                          f"allowed: {', '.join(choices)}")
    return errors


def plan(wanted, sizes: dict) -> list[dict]:
    """The per-size knobs to set, smallest size first, as thp.plan's entries (name, path, desired, current)."""
    chosen = wanted or {}
    return [
        {"name": setting_name(size), "path": entry["path"], "desired": str(chosen[size]), "current": entry["current"]}
        for size, entry in sizes.items()
        if size in chosen
    ]


# --- The boot option ----------------------------------------------------------------------------------------
def kernel_release(tree: Tree) -> tuple[int, int] | None:
    """(major, minor) of the running kernel, None when /proc/sys/kernel/osrelease cannot be read."""
    match = re.match(r"(\d+)\.(\d+)", (tree.read(OSRELEASE) or "").strip())
    return (int(match[1]), int(match[2])) if match else None


def anon_support(tree: Tree) -> str | None:
    """None when the running kernel takes thp_anon=, else why not (a sentence)."""
    release = kernel_release(tree)
    least = ".".join(str(part) for part in THP_ANON_MIN_KERNEL)
    if release is None:
        return f"the kernel release cannot be read ({OSRELEASE}), so whether it takes {THP_ANON_OPTION}= is unknown"
    if release < THP_ANON_MIN_KERNEL:
        return (f"the running kernel {release[0]}.{release[1]} is older than {least} and ignores "
                f"{THP_ANON_OPTION}=")
    return None


def anon_tokens(wanted, sizes: dict) -> list[str]:
    """thp_anon= words that make every anonymous size boot as it is after this run: the wanted value, else the
    live one (a thp_anon= option that leaves a size out turns the PMD size off at boot instead of 'inherit').
    One word per size, each a plain option: grub.cfg passes the line to GRUB's script parser, for which the ';'
    of a one-word list would end the command. The kernel applies repeated thp_anon= options one after the
    other, so the words add up."""
    chosen = wanted or {}
    tokens = []
    for size, entry in sizes.items():
        value = str(chosen[size]) if size in chosen else entry["current"]
        if value is not None:
            tokens.append(f"{THP_ANON_OPTION}={size_kb(size)}K:{value}")
    return tokens


def anon_selector(words: list, i: int) -> int:
    """Preflight's group of thp_anon= words: the run of adjacent ones starting at i."""
    count = 0
    while i + count < len(words) and words[i + count] is not None and grub.option_key(words[i + count]) == \
            THP_ANON_OPTION:
        count += 1
    return count


def with_anon(boot: dict, tokens: list[str], support: str | None, booted: list[str] | None = None) -> dict:
    """The thp role's bootloader facts with the thp_anon= words put in GRUB_CMDLINE_LINUX after its own edit
    (``anon_edit``: what this edit adds and replaces, for the record; ``anon_reason``: why none is made;
    ``error``: the line cannot be edited with certainty; ``anon_booted``: booted_anon, the running kernel's)."""
    boot = {**boot, "anon_edit": None, "anon_tokens": tokens, "anon_reason": None, "anon_booted": booted}
    if not tokens:
        return boot
    if support is not None:
        boot["anon_reason"] = support
        return boot
    if boot["kind"] != "grub":
        boot["anon_reason"] = boot["reason"]
        return boot
    try:
        edit = grub.apply(boot["content"], boot["defaults_file"], CMDLINE_VARIABLE, anon_selector, tokens)
    except grub.GrubError as err:
        return {**boot, "error": f"{THP_ANON_OPTION}=: {err}", "reason": str(err)}
    return {**boot, "content": edit["text"], "changed": boot["changed"] or edit["changed"],
            "anon_edit": edit["record"]}


def booted_anon(tree: Tree) -> list[str]:
    """The thp_anon= words of the running kernel's command line, in order."""
    return [f"{THP_ANON_OPTION}={value}" for name, value in kernel_params(tree.read("/proc/cmdline"))
            if name == THP_ANON_OPTION]


def anon_reboot(boot: dict) -> bool:
    """Whether the thp_anon= words Preflight keeps on the GRUB line differ from those the kernel booted with."""
    tokens = boot.get("anon_tokens") or []
    return bool(tokens) and not boot.get("anon_reason") and boot.get("anon_booted") != tokens


def anon_note(boot: dict) -> str:
    """What the kernel_cmdline method did with thp_sizes, to follow its detail ('' when thp_sizes is empty)."""
    tokens = boot.get("anon_tokens") or []
    if not tokens:
        return ""
    if boot.get("anon_reason"):
        return (f"; {THP_SIZES_VARIABLE}: no {THP_ANON_OPTION}= written ({boot['anon_reason']}), the per-size "
                "values persist through the systemd method only")
    return f"; {THP_SIZES_VARIABLE} at boot: {' '.join(tokens)}"


def record_anon(kept: dict | None, boot: dict, now: str) -> dict | None:
    """The thp_anon= part of the rollback record after this run (None: nothing to record): what Preflight
    replaced first stays, what it holds now is the new group."""
    if not boot.get("anon_edit") or (kept and "added" not in kept):
        return kept
    return grub.merge(kept, {**boot["anon_edit"], "recorded_at": now})


def revert_anon(text: str, record: dict) -> str:
    """The GRUB defaults file without the thp_anon= words Preflight added (and with those it replaced); runs
    before the transparent_hugepage= revert, the reverse of the order the edits were made in."""
    return grub.revert(text, record["file"], record)["text"]
