#!/usr/bin/python
"""Ansible module (roles/jemalloc): read back what the role wired and build the result for the report."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jemalloc_verify
short_description: Read back what roles/jemalloc wired and build its result for the report
description:
  - Makes the read-backs C(module_utils/preflight/core/jemalloc_verify.py)'s C(reads) asks for, and changes
    nothing. A fresh C(cat /proc/self/maps) started with the drop-in's C(LD_PRELOAD) and C(MALLOC_CONF) must map
    the library with no complaint from jemalloc about C(MALLOC_CONF) on stderr (with or without systemd). Where
    systemd runs, C(systemctl show) of each service and its main process's C(/proc/PID/maps). With
    O(scope=system) and the real C(/etc/ld.so.preload), a C(cat /proc/self/maps) started with no environment.
  - The decisions live in the core, where unit tests call them directly. Returns the result published as
    C(preflight_role_results.jemalloc) (services, settings rows, persistence states, verified, verify_detail)
    and the reasons that make verification fail.
version_added: "0.1.0"
author: Preflight
options:
  plan:
    description: The jemalloc_inspect result the role wired from.
    type: dict
    required: true
  installed_before:
    description: Whether the package was installed before the role ran.
    type: bool
    required: true
  package_changed:
    description: Whether the role installed the package (or would, in check mode).
    type: bool
    default: false
  restart_units:
    description: The units whose drop-in changed.
    type: list
    elements: str
    default: []
  enabled:
    description: jemalloc_enabled.
    type: bool
    required: true
  package:
    description: The OS package.
    type: str
    required: true
  malloc_conf:
    description: jemalloc_malloc_conf.
    type: raw
  scope:
    description: jemalloc_scope.
    type: str
    required: true
  restart_services:
    description: jemalloc_restart_services.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Build the jemalloc result for the report
  jemalloc_verify:
    plan: "{{ __jemalloc_plan }}"
    installed_before: "{{ __jemalloc_inspect.package.installed }}"
    package_changed: "{{ __jemalloc_package_result is changed }}"
    enabled: true
    package: libjemalloc2
    malloc_conf: background_thread:true
    scope: service
  register: __jemalloc_verify
"""

RETURN = r"""
result:
  description: role, enabled, package, library_path, scope, malloc_conf, services, settings, persistence,
    conflicts, verified, verify_detail, reboot_required, check_mode.
  returned: always
  type: dict
failures:
  description: Why verification failed; empty when it did not fail.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.jemalloc_verify import main_pid, reads, role_result  # noqa: E402

ARGUMENT_SPEC = {
    "plan": {"type": "dict", "required": True},
    "installed_before": {"type": "bool", "required": True},
    "package_changed": {"type": "bool", "default": False},
    "restart_units": {"type": "list", "elements": "str", "default": []},
    "enabled": {"type": "bool", "required": True},
    "package": {"type": "str", "required": True},
    "malloc_conf": {"type": "raw"},
    "scope": {"type": "str", "required": True},
    "restart_services": {"type": "bool", "default": True},
}


SKIPPED = {"skipped": True}


def maps_of(module: AnsibleModule, environ: dict) -> dict:
    """stdout and stderr of a fresh `cat /proc/self/maps` started with this environment added."""
    _, out, err = module.run_command(["cat", "/proc/self/maps"], environ_update={"LANG": "C", **environ})
    return {"stdout": out, "stderr": err}


def read_service(module: AnsibleModule, unit: str) -> dict:
    """What systemd says of the unit, and its main process's memory map (None without one, or once it is gone)."""
    _, show, _ = module.run_command(
        ["systemctl", "show", "--property=LoadState", "--property=ActiveState", "--property=MainPID", unit],
        environ_update={"LANG": "C"},
    )
    pid = main_pid(show)
    if pid == "0":
        return {"show": show, "maps": None}
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            return {"show": show, "maps": handle.read()}
    except OSError:  # the process ended in between
        return {"show": show, "maps": None}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run = dict(module.params, check_mode=module.check_mode)
    wanted = reads(run)
    preload = {"LD_PRELOAD": run["plan"]["package"]["library_path"],
               "MALLOC_CONF": "" if run["malloc_conf"] is None else str(run["malloc_conf"])}
    run["preload_check"] = maps_of(module, preload) if wanted["preload"] else SKIPPED
    run["system_check"] = maps_of(module, {}) if wanted["system"] else SKIPPED
    services = run["plan"]["services"] if wanted["services"] else []
    run["services_read"] = {s["unit"]: read_service(module, s["unit"]) for s in services}
    result, failures = role_result(run)
    module.exit_json(changed=False, result=result, failures=failures)


if __name__ == "__main__":
    main()
