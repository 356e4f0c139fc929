"""What the thp role reads on a node: the live THP knobs, the GRUB defaults line it edits, and every other
thing that sets THP at boot (tuned, the kernel command line, units and tmpfiles, a per-size knob that does
not inherit). Reads only; the role's decisions on what it read are in thp.py.
"""

from __future__ import annotations

import json
import shutil

from . import grub
from .catalog import THP_DIR, THP_KHUGEPAGED_DEFRAG_CHOICES, THP_SIZE_KNOB
from .cmdline import cmdline_facts
from .sysfs import parse_choices, parse_tunable
from .tree import Tree
from .tuners import TUNED_ACTIVE_PROFILE, boot_writer_facts, tuned_profile_settings

# Role variable -> the tunable file it sets.
THP_SETTINGS = {
    "thp_enabled": f"{THP_DIR}/enabled",
    "thp_defrag": f"{THP_DIR}/defrag",
    "thp_khugepaged_defrag": f"{THP_DIR}/khugepaged/defrag",
}
SYSTEMD_UNIT_DIR = "/etc/systemd/system"
SYSTEMD_RUNNING_DIR = "/run/systemd/system"
TUNED_ENABLED_GLOB = "/etc/systemd/system/*.wants/tuned.service"
GRUB_REGENERATORS = (
    ("update-grub", []),
    ("grub2-mkconfig", ["-o", "/boot/grub2/grub.cfg"]),
    ("grub-mkconfig", ["-o", "/boot/grub/grub.cfg"]),
)
CMDLINE_VARIABLE = "GRUB_CMDLINE_LINUX"
# tuned's [vm] key for THP; older profiles spell it without the s.
TUNED_THP_KEYS = ("vm.transparent_hugepages", "vm.transparent_hugepage")


def read_settings(tree: Tree) -> dict:
    """Per role variable: the tunable's path, current value and the choices this kernel offers."""
    settings = {}
    for name, path in THP_SETTINGS.items():
        current, choices = parse_tunable(tree.read(path))
        if name == "thp_khugepaged_defrag":
            choices = [str(choice) for choice in THP_KHUGEPAGED_DEFRAG_CHOICES]
        settings[name] = {"path": path, "current": current, "choices": choices}
    return settings


def thp_option(cmdline: str | None) -> str | None:
    """The transparent_hugepage= value of a command line, the last one as the kernel reads it."""
    return cmdline_facts(cmdline)[0]["transparent_hugepage"]


# --- GRUB defaults: read and edited through core/grub.py (the shell's reading of the file) ----------------
THP_SELECTOR = grub.option_selector("transparent_hugepage")


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _regenerator(tree: Tree, defaults_file: str, which) -> tuple[str | None, list[str] | None, str | None]:
    """(text of the defaults file, the command that regenerates grub.cfg, why GRUB cannot be managed)."""
    text = tree.read(defaults_file)
    if text is None:
        return None, None, f"no bootloader config found: {defaults_file} does not exist; only GRUB is managed"
    for tool, args in GRUB_REGENERATORS:
        found = which(tool)
        if found:
            return text, [found, *args], None
    names = ", ".join(tool for tool, _ in GRUB_REGENERATORS)
    return text, None, f"no bootloader config found: {defaults_file} exists but none of {names} is installed"


def bootloader(tree: Tree, defaults_file: str, cmdline_thp: str, which=find_tool) -> dict:
    """Whether the role can persist through GRUB here, and the file as it would be with ``cmdline_thp``
    (``content``, ``changed`` and ``edit``: the record of exactly what the edit adds and replaces). A file
    core/grub.py cannot read with certainty gives ``error`` (and no GRUB): the role refuses, writes nothing."""
    info = {"kind": None, "reason": None, "error": None, "defaults_file": defaults_file, "regenerate": None,
            "mode": None, "content": None, "changed": False, "edit": None, "option": None, "default_option": None}
    text, regenerate, info["reason"] = _regenerator(tree, defaults_file, which)
    if regenerate is None:
        return info
    try:
        values = grub.cmdline_values([(defaults_file, text)])
        edit = {"text": text, "changed": False, "record": None}
        if cmdline_thp:
            token = f"transparent_hugepage={cmdline_thp}"
            edit = grub.apply(text, defaults_file, CMDLINE_VARIABLE, THP_SELECTOR, [token])
    except grub.GrubError as err:
        info.update(reason=str(err), error=str(err))
        return info
    info.update(
        kind="grub",
        regenerate=regenerate,
        mode=grub.file_mode(tree, defaults_file),
        content=edit["text"],
        changed=edit["changed"],
        edit=edit["record"],
        option=thp_option(values[CMDLINE_VARIABLE]),
        default_option=thp_option(values[CMDLINE_VARIABLE + "_DEFAULT"]),
    )
    return info


def rollback_bootloader(tree: Tree, recorded: dict | None, which=find_tool, after: dict | None = None) -> dict:
    """The GRUB defaults file as rollback leaves it: exactly the option Preflight added taken out and the one it
    replaced put back (core/grub.py revert), every later edit kept. ``error`` names the file and the difference
    when the file no longer holds what Preflight wrote (the role then stops and keeps the record). A record of
    an older Preflight (``original_option``, no ``added``) is read as: the one THP option the line holds now is
    Preflight's, the recorded original is what it replaced. ``after``: the record of the thp_anon= words
    (core/thp_sizes.py), put in after the transparent_hugepage= option and so taken out first."""
    path = (recorded or after)["file"]
    info = {"kind": None, "reason": None, "error": None, "defaults_file": path, "regenerate": None,
            "mode": None, "content": None, "changed": False}
    text, info["regenerate"], info["reason"] = _regenerator(tree, path, which)
    if info["regenerate"] is None:
        return info
    try:
        reverted = {"text": text, "changed": False}
        if after:
            reverted = grub.revert(text, path, after)
        if recorded and "added" not in recorded:
            original = recorded.get("original_option")
            replaced = [f"transparent_hugepage={original}"] if original else []
            recorded = grub.record_from(None, reverted["text"], path, recorded.get("variable", CMDLINE_VARIABLE),
                                        THP_SELECTOR, replaced)
        if recorded:
            reverted = {"text": grub.revert(reverted["text"], path, recorded)["text"], "changed": True}
    except grub.GrubError as err:
        info.update(reason=str(err), error=str(err))
        return info
    info.update(kind="grub", content=reverted["text"], changed=reverted["changed"], mode=grub.file_mode(tree, path))
    return info


# --- Other tuners that set THP ------------------------------------------------------------------------------
def tuned_conflicts(tree: Tree, enabled: str) -> list[str]:
    profiles = (tree.read(TUNED_ACTIVE_PROFILE) or "").split()
    if not profiles or not tree.glob(TUNED_ENABLED_GLOB):
        return []
    conflicts = []
    for profile in profiles:
        settings, origins = tuned_profile_settings(tree, profile, [])
        key = next((key for key in TUNED_THP_KEYS if key in settings), None)
        if key is not None and settings[key] != enabled:
            conflicts.append(
                f"tuned profile '{profile}' sets transparent_hugepages={settings[key]} ({origins[key]}) and tuned is "
                f"enabled: it applies that at every start and overrides thp_enabled={enabled}; set it in a custom "
                f"tuned profile or disable tuned"
            )
    return conflicts


def other_writers(tree: Tree, own_unit: str) -> list[str]:
    """Files other than the role's unit that write THP at boot (core/tuners.py boot_writer_facts)."""
    writers = []
    for path in boot_writer_facts(tree)["transparent_hugepage"]:
        link = tree.readlink(path)
        if path == f"{SYSTEMD_UNIT_DIR}/{own_unit}" or (link and link.rstrip("/").rsplit("/", 1)[-1] == own_unit):
            continue
        writers.append(path)
    return writers


def size_knob_conflict(tree: Tree, enabled: str, sizes: dict | None = None) -> list[str]:
    """The PMD-size knob of multi-size THP, when it does not follow the global 'enabled' (and thp_sizes,
    ``sizes``, does not set it: then it is what the operator asked for)."""
    pmd_size = (tree.read(f"{THP_DIR}/hpage_pmd_size") or "").strip()
    if not pmd_size.isdigit():
        return []
    knob = THP_SIZE_KNOB.format(size=f"{int(pmd_size) // 1024}kB")
    text = tree.read(knob)
    if text is None or f"{int(pmd_size) // 1024}kB" in (sizes or {}):
        return []
    current = parse_choices(text)[0]
    if current == "inherit":
        return []
    return [f"{knob} is '{current}', not 'inherit': pages of that size follow it, not thp_enabled={enabled}"]


def conflicts(tree: Tree, enabled: str, defrag: str, booted: str | None, boot: dict, own_unit: str,
              sizes: dict | None = None, through_tuned: bool = False) -> list[str]:
    """One sentence per thing that overrides, or would override at boot, the wanted THP settings. Persisting
    through tuned (``through_tuned``), the active profile's THP value is overridden by Preflight's profile, which
    includes it: not a conflict."""
    found = []
    if booted is not None and booted != enabled:
        found.append(
            f"the running kernel was booted with transparent_hugepage={booted} (/proc/cmdline) but thp_enabled is "
            f"{enabled}: every boot starts from {booted} until Preflight's unit runs or the command line is changed"
        )
    default_option = boot.get("default_option")
    if default_option is not None and default_option != enabled:
        found.append(
            f"{boot['defaults_file']} sets transparent_hugepage={default_option} in {CMDLINE_VARIABLE}_DEFAULT, "
            f"which comes after {CMDLINE_VARIABLE} on the command line and wins at boot over thp_enabled={enabled}: "
            f"remove it there"
        )
    if not through_tuned:
        found += tuned_conflicts(tree, enabled)
    for path in other_writers(tree, own_unit):
        found.append(
            f"{path} writes Transparent Huge Pages settings too: at boot it may override thp_enabled={enabled} "
            f"and thp_defrag={defrag}; remove it or make it agree"
        )
    return found + size_knob_conflict(tree, enabled, sizes)


def systemd_facts(tree: Tree, own_unit: str, wants_dir: str) -> dict:
    return {
        "running": tree.isdir(SYSTEMD_RUNNING_DIR),
        "installed": tree.isdir(SYSTEMD_UNIT_DIR),
        "wants_dir_exists": tree.isdir(wants_dir),
        "unit_exists": tree.exists(f"{SYSTEMD_UNIT_DIR}/{own_unit}"),
    }


def read_record(tree: Tree, path: str | None) -> dict:
    """The role's rollback record, {} when there is none; OSError or ValueError when it cannot be read."""
    if not path or not tree.exists(path):
        return {}
    with open(tree.real(path), encoding="utf-8") as handle:
        return json.load(handle)


def inspect(tree: Tree, enabled: str | None, defrag: str, cmdline_thp: str, own_unit: str, grub_defaults_file: str,
            wants_dir: str, sizes: dict | None = None, through_tuned: bool = False) -> dict:
    """Everything the role decides on, read from the node (the role's thp_inspect returns it as is)."""
    booted = thp_option(tree.read("/proc/cmdline"))
    boot = bootloader(tree, grub_defaults_file, cmdline_thp)
    return {
        "supported": tree.isdir(THP_DIR),
        "settings": read_settings(tree),
        "systemd": systemd_facts(tree, own_unit, wants_dir),
        "bootloader": boot,
        "booted_option": booted,
        "conflicts": conflicts(tree, enabled, defrag, booted, boot, own_unit, sizes, through_tuned) if enabled else [],
    }
