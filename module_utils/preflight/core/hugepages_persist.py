"""What roles/hugepages writes to persist a pool and its mounts: fstab lines, the sysctl.d file, the boot
unit, the GRUB_CMDLINE_LINUX pair; and the other tuners that set hugepages at boot (reported, never fought)."""

from __future__ import annotations

from . import grub
from .cmdline import split_cmdline
from .hugepages import (
    CMDLINE_KEYS,
    MANAGED_BY,
    SIZES_KB,
    Host,
    _node_number,
    pagesize_kb,
    size_label,
    unescape_mount_path,
)
from .tree import Tree

# The sysctls that size a pool at boot: another file setting one of them competes with ours.
POOL_SYSCTLS = ("vm.nr_hugepages", "vm.nr_hugepages_mempolicy")
GRUB_VARIABLE = "GRUB_CMDLINE_LINUX"


def mount_options(mount: dict, size: str, host: Host) -> dict[str, str]:
    """The options a managed hugetlbfs mount gets, in fstab order."""
    kb = pagesize_kb(mount.get("pagesize") or size)
    return {
        "pagesize": size_label(kb),
        "mode": mount.get("mode", "0755"),
        "uid": str(host.users.get(str(mount.get("owner", "root")), 0)),
        "gid": str(host.groups.get(str(mount.get("group", "root")), 0)),
    }


def options_text(options: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def mounted_as_wanted(current: dict[str, str], wanted: dict[str, str]) -> bool:
    """/proc/mounts shows mode=770 and drops uid=0/gid=0; compare meanings, not spellings."""
    if pagesize_kb(current.get("pagesize", "")) != pagesize_kb(wanted["pagesize"]):
        return False
    if int(current.get("mode", "755"), 8) != int(wanted["mode"], 8):
        return False
    return current.get("uid", "0") == wanted["uid"] and current.get("gid", "0") == wanted["gid"]


def fstab_line(path: str, options: dict[str, str]) -> str:
    return f"hugetlbfs {path} hugetlbfs {options_text(options)} 0 0"


def edit_fstab(text: str, wanted: dict[str, str | None]) -> str:
    """Put one hugetlbfs line per managed mount point (None: remove it), leaving every other byte alone."""
    lines = text.splitlines(keepends=True)
    placed: set[str] = set()
    out = []
    for line in lines:
        fields = line.split()
        is_entry = len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "hugetlbfs"
        path = unescape_mount_path(fields[1]) if is_entry else None
        if path in wanted:
            if wanted[path] is not None and path not in placed:
                ending = "\n" if line.endswith("\n") else ""
                out.append(wanted[path] + ending)
            placed.add(path)
            continue
        out.append(line)
    missing = [line for path, line in wanted.items() if line is not None and path not in placed]
    if missing:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.extend(line + "\n" for line in missing)
    return "".join(out)


def sysctl_content(count: int) -> str:
    return (
        f"{MANAGED_BY}\n"
        "# Reserved 2 MiB hugepages, applied at boot by systemd-sysctl (or sysctl --system).\n"
        f"vm.nr_hugepages = {count}\n"
    )


def unit_content(settings: list[dict], size_kb: int) -> str:
    """A oneshot unit that writes the pool files early at boot, before memory fragments."""
    lines = [
        MANAGED_BY,
        "[Unit]",
        f"Description=Preflight: reserve {size_label(size_kb)} hugepages at boot",
        "DefaultDependencies=no",
        "After=systemd-sysctl.service",
        "Before=sysinit.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
    ]
    for setting in settings:
        lines.append(f"ExecStart=/bin/sh -c 'echo {setting['desired']} > {setting['path']}'")
    lines += ["", "[Install]", "WantedBy=sysinit.target", ""]
    return "\n".join(lines)


def cmdline_tokens(params: dict) -> list[str]:
    """Kernel command line for 1 GiB pages: 'hugepagesz=1G hugepages=N' (or N per node as '0:N,1:M')."""
    if params.get("count") is not None:
        amount = str(params["count"])
    else:
        pairs = sorted((_node_number(k), v) for k, v in params["per_node"].items())
        amount = ",".join(f"{node}:{value}" for node, value in pairs)
    return [f"hugepagesz={params['size']}", f"hugepages={amount}"]


def hugepages_selector(size_kb: int) -> grub.Selector:
    """Preflight's group in a GRUB command line: 'hugepagesz=SIZE' of this size and the 'hugepages=' after it
    (the kernel pairs them in that order)."""

    def select(words: list, i: int) -> int:
        word = words[i]
        if word is None or grub.option_key(word) != "hugepagesz" or pagesize_kb(word.split("=", 1)[-1]) != size_kb:
            return 0
        after = words[i + 1] if i + 1 < len(words) else None
        return 2 if after is not None and grub.option_key(after) == "hugepages" else 1

    return select


def edit_grub_cmdline(text: str, path: str, size: str, tokens: list[str]) -> dict:
    """The GRUB defaults file with the 'hugepagesz=SIZE hugepages=N' pair in GRUB_CMDLINE_LINUX (core/grub.py
    apply: text, changed and the record of exactly what was added and replaced). GrubError for a file that
    cannot be read with certainty, or one that already holds two pairs of that size (the kernel ignores the
    second)."""
    return grub.apply(text, path, GRUB_VARIABLE, hugepages_selector(pagesize_kb(size)), tokens, unique=True)


def grub_entry(recorded: dict | None, item: dict) -> dict | None:
    """The record of the GRUB defaults file after this run: the first run's edit keeps what it replaced, a later
    one updates what Preflight holds there now (core/grub.py merge). A record of an older Preflight (a copy of the
    file, ``backup``) stays as it is: grub_rollback reads it. None when Preflight never changed the file."""
    if recorded and recorded.get("backup"):
        return recorded
    cmdline = grub.merge((recorded or {}).get("cmdline"), item.get("cmdline"))
    return {"kind": "file", "existed": True, "role": "grub", "cmdline": cmdline} if cmdline else recorded


def grub_rollback(tree: Tree, recorded: dict, state_dir: str) -> list[dict]:
    """Per GRUB defaults file of the record: the file as rollback leaves it (path, content, changed): exactly the
    pair Preflight added taken out and what it replaced put back (core/grub.py revert), every later edit kept.
    A record of an older Preflight (a whole-file copy, ``backup``) is read as: the pair the file holds now is
    Preflight's, the pair of the copy is what it replaced; the copy itself is never put back (it may hold
    another role's option or miss the operator's later edits). GrubError names the file and the difference."""
    restores = []
    for path, entry in sorted((recorded.get("files") or {}).items()):
        if entry.get("role") != "grub" or not (entry.get("cmdline") or entry.get("backup")):
            continue
        text = tree.read(path)
        if text is None:
            raise grub.GrubError(f"{path} is gone: the hugepages option Preflight put there cannot be taken out")
        edit = entry.get("cmdline")
        if edit is None:
            original = tree.read(f"{state_dir}/{entry['backup']}")
            edit = grub.record_from(original, text, path, GRUB_VARIABLE, hugepages_selector(SIZES_KB["1G"]))
        reverted = grub.revert(text, path, edit)
        restores.append({"path": path, "mode": grub.file_mode(tree, path), "content": reverted["text"],
                         "changed": reverted["changed"]})
    return restores


def cmdline_has(cmdline: str, tokens: list[str]) -> bool:
    """Whether the kernel command line holds ``tokens`` in a row, split as the kernel splits it."""
    words = split_cmdline(cmdline)
    return any(words[i : i + len(tokens)] == tokens for i in range(len(words)))


def _tuned_sets_hugepages(settings: dict[str, str]) -> bool:
    """Whether a tuned profile's settings (core/tuners.py tuned_facts) size a pool: a sysctl or a cmdline word."""
    for key, value in settings.items():
        if key.startswith("sysctl.") and key[len("sysctl.") :] in POOL_SYSCTLS:
            return True
        if key.startswith("bootloader.cmdline") and any(w.split("=", 1)[0] in CMDLINE_KEYS for w in value.split()):
            return True
    return False


def conflicts(params: dict, host: Host, sysctl_file: str) -> list[dict]:
    """Other places that set hugepages at boot: reported, never fought."""
    found = []
    ours = sysctl_file.rsplit("/", 1)[-1]
    for setting in sorted(host.sysctl_settings, key=lambda s: s["path"]):
        path = setting["path"]
        if path == sysctl_file or setting["key"] not in POOL_SYSCTLS:
            continue
        after = path.rsplit("/", 1)[-1] > ours or path.endswith("/sysctl.conf")
        effect = (
            "applied after Preflight's file at boot: its value wins"
            if after
            else "applied before Preflight's file at boot: Preflight's value wins"
        )
        found.append({"source": path, "setting": setting["key"], "value": setting["value"], "effect": effect})
    words = [w for w in host.cmdline.split() if w.split("=", 1)[0] in CMDLINE_KEYS]
    if words:
        found.append(
            {
                "source": "/proc/cmdline",
                "setting": "kernel command line",
                "value": " ".join(words),
                "effect": "the kernel reserves these pages at boot; Preflight's sysctl or unit then resizes the pool",
            }
        )
    if _tuned_sets_hugepages(host.tuned.get("settings") or {}):
        found.append(
            {
                "source": host.tuned.get("path", "tuned"),
                "setting": f"tuned profile {host.tuned.get('profile')}",
                "value": "sets hugepages",
                "effect": "tuned re-applies its value when it starts; stop it managing hugepages or align the values",
            }
        )
    return found
