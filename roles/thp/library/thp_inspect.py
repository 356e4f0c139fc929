#!/usr/bin/python
"""Ansible module (role-local): read everything the thp role decides on, change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: thp_inspect
short_description: Read THP settings, boot-time persistence options and other tuners that would override THP
description:
  - Reads the live Transparent Huge Pages settings and the choices this kernel offers for each.
  - Says whether systemd is running as PID 1 and whether a GRUB defaults file and a command to
    regenerate the GRUB configuration exist, and computes the C(GRUB_CMDLINE_LINUX) line that carries
    the wanted C(transparent_hugepage=) option.
  - Lists what would override THP at boot or now, each as a sentence for the operator
    (a tuned profile, the kernel command line, the GRUB defaults, other units or tmpfiles.d and
    sysfs.d entries that write THP, a per-size knob that does not inherit).
  - Never changes anything.
version_added: "0.1.0"
author: Preflight
options:
  enabled:
    description:
      - The wanted value of C(enabled), used to tell a conflicting value from an agreeing one.
      - Without it, RV(conflicts) is not computed (empty).
    type: str
  defrag:
    description: The wanted value of C(defrag), named in conflict messages.
    type: str
    default: ""
  cmdline_thp:
    description:
      - The C(transparent_hugepage=) value the GRUB command line should carry; empty to carry none.
      - Only used to compute RV(bootloader.wanted_line).
    type: str
    default: ""
  own_unit:
    description: File name of the role's own unit, left out of the search for other writers.
    type: str
    default: preflight-thp.service
  grub_defaults_file:
    description: The GRUB defaults file.
    type: path
    default: /etc/default/grub
  state_file:
    description: The role's record of replaced values; read into RV(recorded) when it exists.
    type: path
  wants_dir:
    description: The C(.wants) directory that enables the role's unit; RV(systemd.wants_dir_exists) says if it exists.
    type: path
    default: /etc/systemd/system/sysinit.target.wants
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read THP state and what could override it
  thp_inspect:
    enabled: madvise
    defrag: never
    cmdline_thp: madvise
  register: __thp_inspect
"""

RETURN = r"""
supported:
  description: Whether this kernel has C(/sys/kernel/mm/transparent_hugepage).
  returned: always
  type: bool
settings:
  description: Per role variable, the tunable's C(path), C(current) value and C(choices).
  returned: always
  type: dict
  sample:
    thp_enabled:
      path: /sys/kernel/mm/transparent_hugepage/enabled
      current: madvise
      choices: [always, madvise, never]
systemd:
  description:
    - C(running) (systemd is PID 1), C(installed) (C(/etc/systemd/system) exists),
      C(wants_dir_exists) (O(wants_dir) exists), C(unit_exists) (O(own_unit) is in C(/etc/systemd/system)).
  returned: always
  type: dict
recorded:
  description: The content of O(state_file), or an empty dict when it does not exist or O(state_file) is not given.
  returned: always
  type: dict
bootloader:
  description:
    - C(kind) (C(grub) or null), C(reason) when null, C(defaults_file), C(regenerate) (argument list),
      C(current_line), C(wanted_line), C(option) (the value of C(transparent_hugepage=) in C(GRUB_CMDLINE_LINUX)).
  returned: always
  type: dict
booted_option:
  description: The C(transparent_hugepage=) value the running kernel was booted with, or null.
  returned: always
  type: str
conflicts:
  description: One sentence per thing that overrides or would override the wanted THP settings.
  returned: always
  type: list
  elements: str
"""

import configparser  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
SETTINGS = {
    "thp_enabled": f"{THP_DIR}/enabled",
    "thp_defrag": f"{THP_DIR}/defrag",
    "thp_khugepaged_defrag": f"{THP_DIR}/khugepaged/defrag",
}
TUNED_PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")
GRUB_REGENERATORS = (
    ("update-grub", []),
    ("grub2-mkconfig", ["-o", "/boot/grub2/grub.cfg"]),
    ("grub-mkconfig", ["-o", "/boot/grub/grub.cfg"]),
)
CMDLINE_VARIABLE = "GRUB_CMDLINE_LINUX"


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_tunable(text: str) -> tuple[str, list[str]]:
    """'always [madvise] never' -> ('madvise', [always, madvise, never]); '1' -> ('1', [])."""
    words = text.split()
    selected = [w for w in words if w.startswith("[") and w.endswith("]")]
    if selected:
        return selected[0][1:-1], [w.strip("[]") for w in words]
    return " ".join(words), []


def cmdline_option(args: list[str], name: str = "transparent_hugepage") -> str | None:
    """The last value of name= in a list of kernel arguments (the kernel honours the last one)."""
    value = None
    for arg in args:
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def read_settings() -> dict:
    settings = {}
    for name, path in SETTINGS.items():
        text = read(path)
        current, choices = parse_tunable(text) if text is not None else (None, [])
        if name == "thp_khugepaged_defrag":
            choices = ["0", "1"]
        settings[name] = {"path": path, "current": current, "choices": choices}
    return settings


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
    args = [a for a in value.split() if not a.startswith("transparent_hugepage=")]
    if thp:
        args.append(f"transparent_hugepage={thp}")
    return f"{CMDLINE_VARIABLE}={quote}{' '.join(args)}{quote}"


def find_tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def inspect_bootloader(defaults_file: str, cmdline_thp: str) -> dict:
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
    text = read(defaults_file)
    if text is None:
        info["reason"] = f"no bootloader config found: {defaults_file} does not exist; only GRUB is managed"
        return info
    for tool, args in GRUB_REGENERATORS:
        found = find_tool(tool)
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
        option=cmdline_option(value.split()),
        default_option=cmdline_option(default_value.split()),
    )
    return info


def tuned_profile_thp(name: str, seen: set[str] | None = None) -> tuple[str | None, str | None]:
    """(value, file) of transparent_hugepage(s)= in a tuned profile, following include= chains."""
    seen = seen if seen is not None else set()
    if name in seen:
        return None, None
    seen.add(name)
    for base in TUNED_PROFILE_DIRS:
        path = os.path.join(base, name, "tuned.conf")
        text = read(path)
        if text is None:
            continue
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(text)
        except configparser.Error:
            return None, None
        if parser.has_section("vm"):
            for key in ("transparent_hugepages", "transparent_hugepage"):
                if parser.has_option("vm", key):
                    return parser.get("vm", key).strip(), path
        value, where = None, None
        includes = parser.get("main", "include", fallback="") if parser.has_section("main") else ""
        # Later includes override earlier ones, as tuned merges them in order.
        for included in [p.strip() for p in includes.split(",") if p.strip()]:
            found, found_in = tuned_profile_thp(included, seen)
            if found is not None:
                value, where = found, found_in
        return value, where
    return None, None


def tuned_enabled() -> bool:
    return bool(glob.glob("/etc/systemd/system/*.wants/tuned.service"))


def other_writers(own_unit: str) -> list[str]:
    """Files other than ours that write THP at boot: units, rc.local, tmpfiles.d, sysfs.conf/sysfs.d."""
    candidates = [p for p in sorted(glob.glob("/etc/systemd/system/*.service")) if os.path.basename(p) != own_unit]
    candidates += ["/etc/rc.local", "/etc/sysfs.conf"]
    candidates += sorted(glob.glob("/etc/tmpfiles.d/*.conf")) + sorted(glob.glob("/etc/sysfs.d/*.conf"))
    writers = []
    for path in candidates:
        if os.path.islink(path) and os.path.basename(os.path.realpath(path)) == own_unit:
            continue
        text = read(path)
        if text and "transparent_hugepage" in text:
            writers.append(path)
    return writers


def find_conflicts(enabled: str, defrag: str, booted: str | None, boot: dict, own_unit: str) -> list[str]:
    conflicts = []
    if booted is not None and booted != enabled:
        conflicts.append(
            f"the running kernel was booted with transparent_hugepage={booted} (/proc/cmdline) but thp_enabled is "
            f"{enabled}: every boot starts from {booted} until Preflight's unit runs or the command line is changed"
        )
    default_option = boot.get("default_option")
    if default_option is not None and default_option != enabled:
        conflicts.append(
            f"{boot['defaults_file']} sets transparent_hugepage={default_option} in {CMDLINE_VARIABLE}_DEFAULT, "
            f"which comes after {CMDLINE_VARIABLE} on the command line and wins at boot over thp_enabled={enabled}: "
            f"remove it there"
        )
    profiles = (read("/etc/tuned/active_profile") or "").split()
    if profiles and tuned_enabled():
        for profile in profiles:
            value, where = tuned_profile_thp(profile)
            if value is not None and value != enabled:
                conflicts.append(
                    f"tuned profile '{profile}' sets transparent_hugepages={value} ({where}) and tuned is enabled: "
                    f"it applies that at every start and overrides thp_enabled={enabled}; set it in a custom tuned "
                    f"profile or disable tuned"
                )
    for path in other_writers(own_unit):
        conflicts.append(
            f"{path} writes Transparent Huge Pages settings too: at boot it may override thp_enabled={enabled} "
            f"and thp_defrag={defrag}; remove it or make it agree"
        )
    pmd_size = (read(f"{THP_DIR}/hpage_pmd_size") or "").strip()
    if pmd_size.isdigit():
        knob = f"{THP_DIR}/hugepages-{int(pmd_size) // 1024}kB/enabled"
        text = read(knob)
        if text is not None:
            current, _ = parse_tunable(text)
            if current != "inherit":
                conflicts.append(
                    f"{knob} is '{current}', not 'inherit': pages of that size follow it, not thp_enabled={enabled}"
                )
    return conflicts


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "enabled": {"type": "str"},
            "defrag": {"type": "str", "default": ""},
            "cmdline_thp": {"type": "str", "default": ""},
            "own_unit": {"type": "str", "default": "preflight-thp.service"},
            "grub_defaults_file": {"type": "path", "default": "/etc/default/grub"},
            "state_file": {"type": "path"},
            "wants_dir": {"type": "path", "default": "/etc/systemd/system/sysinit.target.wants"},
        },
        supports_check_mode=True,
    )
    params = module.params
    booted = cmdline_option((read("/proc/cmdline") or "").split())
    boot = inspect_bootloader(params["grub_defaults_file"], params["cmdline_thp"])
    recorded = {}
    if params["state_file"] and os.path.exists(params["state_file"]):
        try:
            with open(params["state_file"], encoding="utf-8") as handle:
                recorded = json.load(handle)
        except (OSError, ValueError) as err:
            module.fail_json(
                msg=f"cannot read the THP rollback record {params['state_file']}: {err}; fix or remove it by hand "
                "(it holds the values to restore)"
            )
    module.exit_json(
        changed=False,
        supported=os.path.isdir(THP_DIR),
        settings=read_settings(),
        systemd={
            "running": os.path.isdir("/run/systemd/system"),
            "installed": os.path.isdir("/etc/systemd/system"),
            "wants_dir_exists": os.path.isdir(params["wants_dir"]),
            "unit_exists": os.path.exists(os.path.join("/etc/systemd/system", params["own_unit"])),
        },
        recorded=recorded,
        bootloader=boot,
        booted_option=booted,
        conflicts=(
            find_conflicts(params["enabled"], params["defrag"], booted, boot, params["own_unit"])
            if params["enabled"]
            else []
        ),
    )


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
