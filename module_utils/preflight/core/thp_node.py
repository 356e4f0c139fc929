"""What the thp role reads on a node: the live THP knobs, the GRUB defaults line it edits, and every other
thing that sets THP at boot (tuned, the kernel command line, units and tmpfiles, a per-size knob that does
not inherit). Reads only; the role's decisions on what it read are in thp.py.
"""

from __future__ import annotations

import json
import re
import shutil

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


# --- GRUB defaults: the line the role edits (its editing behaviour is kept as it was) --------------------
def grub_line(text: str, variable: str) -> tuple[str | None, str, str]:
    """(whole line or None, unquoted value, quote character) of the last `variable=` assignment."""
    found = None
    for line in text.splitlines():
        if re.match(rf"^\s*{variable}=", line):
            found = line
    if found is None:
        return None, "", '"'
    raw = found.split("=", 1)[1].strip()
    quote = raw[0] if raw[:1] in ("'", '"') else '"'
    value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in ("'", '"') else raw
    return found, value, quote


def wanted_grub_line(value: str, quote: str, thp: str) -> str:
    """The GRUB_CMDLINE_LINUX line with every transparent_hugepage= taken out and ``thp`` (if any) appended."""
    args = [a for a in value.split() if not a.startswith("transparent_hugepage=")]
    if thp:
        args.append(f"transparent_hugepage={thp}")
    return f"{CMDLINE_VARIABLE}={quote}{' '.join(args)}{quote}"


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def bootloader(tree: Tree, defaults_file: str, cmdline_thp: str, which=find_tool) -> dict:
    """Whether the role can persist through GRUB here, and the line it would write for ``cmdline_thp``."""
    info = {
        "kind": None,
        "reason": None,
        "defaults_file": defaults_file,
        "regenerate": None,
        "current_line": None,
        "wanted_line": None,
        "option": None,
        "default_option": None,
    }
    text = tree.read(defaults_file)
    if text is None:
        info["reason"] = f"no bootloader config found: {defaults_file} does not exist; only GRUB is managed"
        return info
    for tool, args in GRUB_REGENERATORS:
        found = which(tool)
        if found:
            info["regenerate"] = [found, *args]
            break
    if info["regenerate"] is None:
        names = ", ".join(tool for tool, _ in GRUB_REGENERATORS)
        info["reason"] = f"no bootloader config found: {defaults_file} exists but none of {names} is installed"
        return info
    line, value, quote = grub_line(text, CMDLINE_VARIABLE)
    _, default_value, _ = grub_line(text, CMDLINE_VARIABLE + "_DEFAULT")
    info.update(
        kind="grub",
        current_line=line,
        wanted_line=wanted_grub_line(value, quote, cmdline_thp),
        option=thp_option(value),
        default_option=thp_option(default_value),
    )
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


def size_knob_conflict(tree: Tree, enabled: str) -> list[str]:
    """The PMD-size knob of multi-size THP, when it does not follow the global 'enabled'."""
    pmd_size = (tree.read(f"{THP_DIR}/hpage_pmd_size") or "").strip()
    if not pmd_size.isdigit():
        return []
    knob = THP_SIZE_KNOB.format(size=f"{int(pmd_size) // 1024}kB")
    text = tree.read(knob)
    if text is None:
        return []
    current = parse_choices(text)[0]
    if current == "inherit":
        return []
    return [f"{knob} is '{current}', not 'inherit': pages of that size follow it, not thp_enabled={enabled}"]


def conflicts(tree: Tree, enabled: str, defrag: str, booted: str | None, boot: dict, own_unit: str) -> list[str]:
    """One sentence per thing that overrides, or would override at boot, the wanted THP settings."""
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
    found += tuned_conflicts(tree, enabled)
    for path in other_writers(tree, own_unit):
        found.append(
            f"{path} writes Transparent Huge Pages settings too: at boot it may override thp_enabled={enabled} "
            f"and thp_defrag={defrag}; remove it or make it agree"
        )
    return found + size_knob_conflict(tree, enabled)


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
            wants_dir: str) -> dict:
    """Everything the role decides on, read from the node (the role's thp_inspect returns it as is)."""
    booted = thp_option(tree.read("/proc/cmdline"))
    boot = bootloader(tree, grub_defaults_file, cmdline_thp)
    return {
        "supported": tree.isdir(THP_DIR),
        "settings": read_settings(tree),
        "systemd": systemd_facts(tree, own_unit, wants_dir),
        "bootloader": boot,
        "booted_option": booted,
        "conflicts": conflicts(tree, enabled, defrag, booted, boot, own_unit) if enabled else [],
    }
