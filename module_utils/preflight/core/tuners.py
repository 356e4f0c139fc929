"""Other tuners that set our knobs at boot: sysctl.d, tuned profiles, GRUB defaults, units and tmpfiles."""

from __future__ import annotations

import configparser
import os
import re

from . import grub
from .cmdline import cmdline_facts
from .tree import Tree, _reason

# The sysctls another tuner could set at boot behind our back.
SYSCTL_KEYS = (
    "vm.nr_hugepages",
    "vm.nr_hugepages_mempolicy",
    "vm.nr_overcommit_hugepages",
    "vm.hugetlb_shm_group",
    "vm.overcommit_memory",
    "vm.swappiness",
    "vm.zone_reclaim_mode",
    "vm.max_map_count",
    "vm.min_free_kbytes",
    "vm.compaction_proactiveness",
    "kernel.numa_balancing",
)

# Highest priority first: a file name in an earlier directory masks the same name in a later one
# (systemd-sysctl(8)); /etc/sysctl.conf is applied last (sysctl --system).
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"

TUNED_ACTIVE_PROFILE = "/etc/tuned/active_profile"
# User profiles first, then the shipped ones (tuned 2.23 moved both under profiles/).
TUNED_PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")

# Files that can write sysfs at boot besides sysctl.d; scanned for the knobs below.
BOOT_WRITER_GLOBS = (
    "/etc/rc.local",
    "/etc/sysfs.conf",
    "/etc/sysfs.d/*.conf",
    "/etc/tmpfiles.d/*.conf",
    "/run/tmpfiles.d/*.conf",
    "/usr/lib/tmpfiles.d/*.conf",
    "/etc/systemd/system/*.service",
    "/etc/systemd/system/*.service.d/*.conf",
    "/run/systemd/system/*.service",
    "/etc/cron.d/*",
)
BOOT_WRITER_PATTERNS = {"transparent_hugepage": "transparent_hugepage", "hugepages": "nr_hugepages"}

GRUB_DEFAULT = "/etc/default/grub"
GRUB_DEFAULT_DIR = "/etc/default/grub.d"
GRUB_CMDLINE_VARS = grub.CMDLINE_VARS


def _sysctl_files(tree: Tree) -> list[str]:
    """The sysctl files applied at boot, in the order they are applied."""
    chosen: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for path in tree.glob(f"{directory}/*.conf"):
            chosen.setdefault(os.path.basename(path), path)
    ordered = []
    seen = set()
    for name in sorted(chosen):
        path = chosen[name]
        identity = tree.identity(path)
        # A name linked to /dev/null masks the shipped file of the same name.
        if identity is None or tree.readlink(path) == "/dev/null":
            continue
        ordered.append(path)
        seen.add(identity)
    conf_identity = tree.identity(SYSCTL_CONF)
    if conf_identity is not None and conf_identity not in seen:
        ordered.append(SYSCTL_CONF)
    return ordered


def sysctl_facts(tree: Tree) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The files that set one of SYSCTL_KEYS at boot, per key, and the value that wins (the last applied)."""
    overrides: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for found in sysctl_assignments(tree):
        tree.keep(found["path"])
        overrides.setdefault(found["key"], []).append(found["path"])
        values[found["key"]] = found["value"]
    return overrides, values


def _tuned_profile_file(tree: Tree, name: str) -> str | None:
    for directory in TUNED_PROFILE_DIRS:
        path = f"{directory}/{name}/tuned.conf"
        if tree.exists(path):
            return path
    return None


def _apply_tuned_profile(tree: Tree, name: str, visiting: tuple[str, ...], problems: list[str], found: dict) -> None:
    """Merge one profile into ``found`` (settings, origins, files), its includes first, as tuned merges them."""
    if name in visiting:
        problems.append(f"tuned profile {name}: include loop through {' -> '.join(visiting)}")
        return
    path = _tuned_profile_file(tree, name)
    if path is None:
        problems.append(f"tuned profile {name}: no tuned.conf in {', '.join(TUNED_PROFILE_DIRS)}")
        return
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    parser.optionxform = str
    try:
        parser.read_string(tree.read(path) or "", source=path)
    except configparser.Error as exc:
        problems.append(f"{path}: {exc}")
        return
    if parser.has_option("main", "include"):
        for included in re.split(r"[\s,;]+", parser.get("main", "include").strip()):
            if included:
                _apply_tuned_profile(tree, included, visiting + (name,), problems, found)
    found["files"].append(path)
    for section in parser.sections():
        for key, value in parser.items(section):
            if (
                section == "vm"
                or (section == "sysctl" and key in SYSCTL_KEYS)
                or (section == "bootloader" and key.startswith("cmdline"))
            ):
                found["settings"][f"{section}.{key}"] = value.strip()
                found["origins"][f"{section}.{key}"] = path


def tuned_profile_settings(tree: Tree, name: str, problems: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """What one tuned profile sets that matters to us ('vm.transparent_hugepages': ...) and the file of each."""
    found: dict = {"settings": {}, "origins": {}, "files": []}
    _apply_tuned_profile(tree, name, (), problems, found)
    return found["settings"], found["origins"]


def tuned_facts(tree: Tree, problems: list[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """Active tuned profile(s) and what they set that matters to us (includes applied first)."""
    active_text = tree.read(TUNED_ACTIVE_PROFILE)
    active = active_text.strip() if active_text and active_text.strip() else None
    found: dict = {"settings": {}, "origins": {}, "files": []}
    for name in (active or "").split():
        _apply_tuned_profile(tree, name, (), problems, found)
    return active, found["settings"], found["files"]


def grub_facts(tree: Tree, problems: list[str] | None = None) -> tuple[dict[str, str | None] | None, list[str]]:
    """GRUB_CMDLINE_LINUX and _DEFAULT as grub-mkconfig sees them: /etc/default/grub, then grub.d/*.cfg, read as
    the shell reads them (core/grub.py, the same reading the roles edit with). A file that cannot be read with
    certainty is a problem (file, line, why) and its values are unknown (None)."""
    if not tree.exists(GRUB_DEFAULT):
        return None, []
    files = [GRUB_DEFAULT] + sorted(tree.glob(f"{GRUB_DEFAULT_DIR}/*.cfg"))
    try:
        values = grub.cmdline_values([(path, tree.read(path) or "") for path in files])
    except grub.GrubError as err:
        if problems is not None:
            problems.append(str(err))
        values = dict.fromkeys(GRUB_CMDLINE_VARS)
    return values, files


def boot_writer_facts(tree: Tree) -> dict[str, list[str]]:
    """Files other than sysctl.d that write THP or hugepage pools at boot (units, tmpfiles, sysfs.conf)."""
    writers: dict[str, list[str]] = {key: [] for key in BOOT_WRITER_PATTERNS}
    for pattern in BOOT_WRITER_GLOBS:
        for path in tree.glob(pattern):
            text = tree.read(path, record=False)
            if text is None:
                continue
            for key, needle in BOOT_WRITER_PATTERNS.items():
                if needle in text:
                    tree.keep(path)
                    writers[key].append(path)
    return writers


def tuner_facts(tree: Tree) -> dict:
    problems: list[str] = []
    active, tuned_settings, tuned_files = tuned_facts(tree, problems)
    overrides, values = sysctl_facts(tree)
    grub_cmdline, grub_files = grub_facts(tree, problems)
    grub_params = None
    if grub_cmdline is not None:
        joined = " ".join(v for v in (grub_cmdline[name] for name in GRUB_CMDLINE_VARS) if v)
        grub_params, _ = cmdline_facts(joined)
    return {
        "tuned_active_profile": active,
        "tuned_settings": tuned_settings,
        "tuned_files": tuned_files,
        "sysctl_overrides": overrides,
        "sysctl_values": values,
        "boot_writers": boot_writer_facts(tree),
        "bootloader": "grub" if grub_cmdline is not None else None,
        "bootloader_reason": None
        if grub_cmdline is not None
        else f"no {GRUB_DEFAULT}: no bootloader configuration found that could persist the kernel command line",
        "grub_files": grub_files,
        "grub_cmdline": grub_cmdline,
        "grub_cmdline_params": grub_params,
        "reason": _reason(problems),
    }




def sysctl_assignments(tree: Tree, keys: tuple[str, ...] = SYSCTL_KEYS) -> list[dict]:
    """Every assignment of one of ``keys`` in the sysctl files applied at boot, in the order they are applied:
    [{"path", "key", "value"}] (a role that owns one of these files reports the others as conflicts)."""
    found = []
    for path in _sysctl_files(tree):
        for line in (tree.read(path, record=False) or "").splitlines():
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip().lstrip("-").replace("/", ".")
            if key in keys:
                found.append({"path": path, "key": key, "value": value.strip()})
    return found
