#!/usr/bin/python
"""Ansible module (roles/jemalloc): read the allocator wiring of a host and plan the requested change."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jemalloc_inspect
short_description: Read jemalloc's package, library path, service drop-ins and ld.so.preload; plan a change
description:
  - Reads the package's file list (C(dpkg-query -L) or C(rpm -ql)) to find the library, the drop-ins of the
    services, the units' own environment and C(/etc/ld.so.preload). Never changes anything.
  - Validates MALLOC_CONF against jemalloc's option names and the service names, returning every error.
  - Returns the planned drop-in and ld.so.preload contents, the conflicts, and the snapshot to record for rollback.
version_added: "0.1.0"
author: Preflight
options:
  package:
    description: The OS package that ships the library.
    type: str
    required: true
  file_list_command:
    description: Command (argument list) that prints the package's files, one a line.
    type: list
    elements: str
    required: true
  malloc_conf:
    description: MALLOC_CONF for the services.
    type: raw
  services:
    description: Services to preload jemalloc into.
    type: raw
    default: []
  scope:
    description: service (drop-ins only) or system (also /etc/ld.so.preload).
    type: str
    choices: [service, system]
    default: service
  enabled:
    description: Wire jemalloc in (true) or take Preflight's wiring out (false).
    type: bool
    default: true
  unit_dir:
    description: Where the drop-in directories go.
    type: path
    default: /etc/systemd/system
  ld_so_preload:
    description: The loader's preload file.
    type: path
    default: /etc/ld.so.preload
  state_dir:
    description: Where the previous state is recorded (state.json is read to merge the snapshot).
    type: path
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan jemalloc for the vLLM service
  jemalloc_inspect:
    package: libjemalloc2
    file_list_command: [dpkg-query, -L, libjemalloc2]
    malloc_conf: background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:10000
    services: [preflight-vllm]
    state_dir: /var/lib/preflight/jemalloc
  register: jemalloc_plan
"""

RETURN = r"""
errors:
  description: Every problem with the request; empty when it can be applied.
  returned: always
  type: list
  elements: str
package:
  description: name, installed, library_path (null until installed), library_realpath, files.
  returned: always
  type: dict
services:
  description: Per service, unit, dropin_dir, dropin_dir_exists, dropin_path, current, desired, changed,
    before_env, unit_found, other_env (what the unit and other drop-ins set).
  returned: always
  type: list
  elements: dict
ld_so_preload:
  description: path, exists, content, managed, desired, changed, lines.
  returned: always
  type: dict
systemd_running:
  description: Whether systemd is PID 1 (/run/systemd/system exists).
  returned: always
  type: bool
conflicts:
  description: Other settings of LD_PRELOAD or MALLOC_CONF that affect the services (source, setting, value, effect).
  returned: always
  type: list
  elements: dict
pending:
  description: Whether anything would change.
  returned: always
  type: bool
snapshot:
  description: Previous state to record (package, files, dirs), merged with what is already recorded.
  returned: always
  type: dict
backups:
  description: Files to copy into the state directory now (path, backup).
  returned: always
  type: list
  elements: dict
record_needed:
  description: Whether the snapshot must be written now.
  returned: always
  type: bool
"""

import json  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight_jemalloc import (  # noqa: E402
    DROPIN_NAME,
    dropin_content,
    parse_environment,
    pick_library,
    preload_content,
    unit_name,
    validate_malloc_conf,
    validate_services,
)

UNIT_PATHS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def backup_name(path: str) -> str:
    return "files/" + path.strip("/").replace("/", "__")


def unit_sources(unit: str, unit_dir: str, ours: str) -> tuple[bool, list[dict]]:
    """Whether the unit exists, and the LD_PRELOAD/MALLOC_CONF its file and other drop-ins set."""
    found, sources = False, []
    for base in dict.fromkeys((unit_dir, *UNIT_PATHS)):
        path = os.path.join(base, unit)
        text = read(path)
        if text is not None:
            found = True
            sources.append((path, text))
        dropins = os.path.join(base, unit + ".d")
        if os.path.isdir(dropins):
            for name in sorted(os.listdir(dropins)):
                full = os.path.join(dropins, name)
                if name.endswith(".conf") and full != ours:
                    sources.append((full, read(full) or ""))
    env_sources = []
    for path, text in sources:
        env = parse_environment(text)
        picked = {k: v for k, v in env.items() if k in ("LD_PRELOAD", "MALLOC_CONF")}
        if picked:
            env_sources.append(
                {
                    "source": path,
                    "env": picked,
                    "after_ours": os.path.basename(path) > DROPIN_NAME and path.endswith(".conf"),
                }
            )
        elif "EnvironmentFile=" in text:
            env_sources.append({"source": path, "env": {}, "environment_file": True, "after_ours": False})
    return found, env_sources


def installed_library_errors(module: AnsibleModule, library: str, conf: str) -> list[str]:
    """Ask the installed jemalloc itself: some options exist only in builds with that feature (utrace, log...)."""
    rc, _out, err = module.run_command(
        ["/bin/true"], environ_update={"LD_PRELOAD": library, "MALLOC_CONF": conf, "LANG": "C"}
    )
    complaints = [line.strip() for line in err.splitlines() if line.startswith("<jemalloc>")]
    if rc != 0 and not complaints:
        complaints = [f"/bin/true exited {rc} with it: {err.strip()}"]
    return [
        f"jemalloc_malloc_conf: the installed jemalloc ({library}) refuses it: {line} "
        "(an option this build of jemalloc was compiled without, or a value out of its range)"
        for line in complaints
    ]


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "package": {"type": "str", "required": True},
            "file_list_command": {"type": "list", "elements": "str", "required": True},
            "malloc_conf": {"type": "raw"},
            "services": {"type": "raw", "default": []},
            "scope": {"type": "str", "choices": ["service", "system"], "default": "service"},
            "enabled": {"type": "bool", "default": True},
            "unit_dir": {"type": "path", "default": "/etc/systemd/system"},
            "ld_so_preload": {"type": "path", "default": "/etc/ld.so.preload"},
            "state_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    conf = p["malloc_conf"] if p["malloc_conf"] is not None else ""
    errors = validate_malloc_conf(conf) + validate_services(p["services"])
    rc, out, _err = module.run_command(p["file_list_command"], environ_update={"LANG": "C", "LC_ALL": "C"})
    files = out.splitlines() if rc == 0 else []
    library = pick_library(files)
    package = {
        "name": p["package"],
        "installed": library is not None,
        "library_path": library,
        "library_realpath": os.path.realpath(library) if library else None,
        "library_exists": bool(library and os.path.exists(library)),
        "files": [f for f in files if "libjemalloc" in f],
    }
    if not errors and library and conf and p["enabled"] and os.path.exists(library):
        errors += installed_library_errors(module, library, conf)
    result = {
        "changed": False,
        "errors": errors,
        "package": package,
        "systemd_running": os.path.isdir("/run/systemd/system"),
    }
    if errors:
        module.exit_json(**result)

    unit_dir = p["unit_dir"].rstrip("/")
    services, conflicts = [], []
    for service in p["services"]:
        unit = unit_name(service)
        dropin_dir = f"{unit_dir}/{unit}.d"
        dropin_path = f"{dropin_dir}/{DROPIN_NAME}"
        current = read(dropin_path)
        if not p["enabled"]:
            desired, known = None, True
        elif library:
            desired, known = dropin_content(library, conf), True
        else:
            desired, known = None, False  # the package is not installed yet (check mode): path unknown
        unit_found, others = unit_sources(unit, unit_dir, dropin_path)
        for other in others:
            if other.get("environment_file"):
                effect = "EnvironmentFile= may also set LD_PRELOAD or MALLOC_CONF; check it by hand"
            elif other["after_ours"]:
                effect = "a drop-in sorted after Preflight's: its value wins"
            else:
                effect = "Preflight's drop-in comes later and wins for the variables it sets"
            conflicts.append(
                {
                    "source": other["source"],
                    "setting": f"{unit} environment",
                    "value": " ".join(f"{k}={v}" for k, v in other["env"].items()),
                    "effect": effect,
                }
            )
        services.append(
            {
                "name": service,
                "unit": unit,
                "dropin_dir": dropin_dir,
                "dropin_dir_exists": os.path.isdir(dropin_dir),
                "dropin_path": dropin_path,
                "current": current,
                "desired": desired,
                "desired_known": known,
                "changed": (not known) or desired != current,
                "before_env": parse_environment(current or ""),
                "unit_found": unit_found,
            }
        )

    preload_path = p["ld_so_preload"]
    preload_text = read(preload_path)
    managed = p["scope"] == "system" and library is not None
    preload_desired = preload_content(preload_text, library, p["enabled"]) if managed else None
    if managed and not p["enabled"] and preload_text is None:
        preload_desired = None
    preload = {
        "path": preload_path,
        "exists": preload_text is not None,
        "content": preload_text,
        "managed": managed,
        "desired": preload_desired,
        "changed": managed and preload_desired is not None and preload_desired != preload_text,
        "lines": [line.strip() for line in (preload_text or "").splitlines() if line.strip()],
        "mode": f"{os.stat(preload_path).st_mode & 0o7777:04o}" if preload_text is not None else "0644",
    }
    if p["scope"] == "service" and preload["lines"]:
        conflicts.append(
            {
                "source": preload_path,
                "setting": "ld.so.preload",
                "value": " ".join(preload["lines"]),
                "effect": "preloaded into every process on the host, the services included",
            }
        )

    pending = (p["enabled"] and not library) or any(s["changed"] for s in services) or preload["changed"]
    state_file = os.path.join(p["state_dir"], "state.json")
    recorded = None
    if os.path.exists(state_file):
        try:
            recorded = json.loads(read(state_file) or "{}")
        except ValueError:
            module.fail_json(
                msg=f"{state_file} is not valid JSON: move it away or restore it, then run again", **result
            )
    snap = {
        "version": 1,
        "package": (recorded or {}).get("package") or {"name": p["package"], "installed_before": library is not None},
        "files": dict((recorded or {}).get("files", {})),
        "dirs": dict((recorded or {}).get("dirs", {})),
        "services": sorted(set((recorded or {}).get("services", [])) | {s["unit"] for s in services}),
    }
    touched = [(s["dropin_path"], s["current"] is not None, "dropin") for s in services]
    if managed:
        touched.append((preload_path, preload_text is not None, "ld_so_preload"))
    new_backups = []
    for path, existed, role in touched:
        if path in snap["files"]:
            continue
        entry = {"existed": existed, "role": role}
        if existed:
            entry["backup"] = backup_name(path)
            new_backups.append({"path": path, "backup": entry["backup"]})
        snap["files"][path] = entry
    for service in services:
        snap["dirs"].setdefault(service["dropin_dir"], service["dropin_dir_exists"])
    result.update(
        services=services,
        ld_so_preload=preload,
        conflicts=conflicts,
        pending=bool(pending),
        snapshot=snap,
        backups=new_backups,
        record_needed=bool(pending) and snap != recorded,
    )
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
