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
    description: Where the previous state is recorded (state.json is read to merge the snapshot). Checked like
      every state directory (absolute, not a system directory, not shared with another role).
    type: raw
    required: true
  state_dirs:
    description: The roles' state directories (null for a role default), to check O(state_dir) against.
    type: dict
    default: {}
  installed_now:
    description: The package task has just installed the package, so the record notes that Preflight installed it.
    type: bool
    default: false
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
from ansible.module_utils.preflight.core.jemalloc import (  # noqa: E402
    pick_library,
    validate_malloc_conf,
    validate_services,
)
from ansible.module_utils.preflight.core.jemalloc_plan import plan  # noqa: E402
from ansible.module_utils.preflight.core.jemalloc_undo import migrate  # noqa: E402
from ansible.module_utils.preflight.core.paths import state_dir_errors  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402
from ansible.module_utils.preflight.core.undo import RecordError  # noqa: E402

ARGUMENT_SPEC = {
    "package": {"type": "str", "required": True},
    "file_list_command": {"type": "list", "elements": "str", "required": True},
    "malloc_conf": {"type": "raw"},
    "services": {"type": "raw", "default": []},
    "scope": {"type": "str", "choices": ["service", "system"], "default": "service"},
    "enabled": {"type": "bool", "default": True},
    "unit_dir": {"type": "path", "default": "/etc/systemd/system"},
    "ld_so_preload": {"type": "path", "default": "/etc/ld.so.preload"},
    "state_dir": {"type": "raw", "required": True},
    "state_dirs": {"type": "dict", "default": {}},
    "installed_now": {"type": "bool", "default": False},
}


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


def package_facts(module: AnsibleModule) -> dict:
    """The package's library, from its own file list (null until it is installed)."""
    rc, out, _err = module.run_command(module.params["file_list_command"], environ_update={"LANG": "C", "LC_ALL": "C"})
    files = out.splitlines() if rc == 0 else []
    library = pick_library(files)
    return {
        "name": module.params["package"],
        "installed": library is not None,
        "library_path": library,
        "library_realpath": os.path.realpath(library) if library else None,
        "library_exists": bool(library and os.path.exists(library)),
        "files": [f for f in files if "libjemalloc" in f],
    }


def read_recorded(module: AnsibleModule, tree: Tree, result: dict, library: str | None) -> dict | None:
    """The record, migrated to version 2 (core/jemalloc_undo.py migrate)."""
    state_dir = module.params["state_dir"]
    state_file = os.path.join(state_dir, "state.json")
    text = tree.read(state_file)
    if text is None:
        return None
    try:
        return migrate(json.loads(text or "{}"), lambda name: tree.read(os.path.join(state_dir, name)), library)
    except ValueError as exc:  # RecordError is a ValueError
        why = str(exc) if isinstance(exc, RecordError) else "it is not valid JSON"
        module.fail_json(msg=f"{state_file} cannot be used: {why}; move it away or restore it, then run again",
                         **result)


def run_module() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    conf = p["malloc_conf"] if p["malloc_conf"] is not None else ""
    errors = validate_malloc_conf(conf) + validate_services(p["services"])
    errors += state_dir_errors({**p["state_dirs"], "jemalloc_state_dir": p["state_dir"]}, "jemalloc_state_dir")
    package = package_facts(module)
    library = package["library_path"]
    if not errors and library and conf and p["enabled"] and package["library_exists"]:
        errors += installed_library_errors(module, library, conf)
    tree = Tree("/")
    result = {
        "changed": False,
        "errors": errors,
        "package": package,
        "systemd_running": tree.isdir("/run/systemd/system"),
    }
    if errors:
        module.exit_json(**result)
    recorded = read_recorded(module, tree, result, library)
    request = {**p, "malloc_conf": conf, "state_dir_existed": tree.isdir(p["state_dir"])}
    result.update(plan(tree, request, library, recorded))
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
