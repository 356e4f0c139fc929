#!/usr/bin/python
"""Ansible module (roles/jemalloc): decide what the read-back proved and build the result for the report."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jemalloc_verify
short_description: Build roles/jemalloc's result from the plan and the read-back tasks' results
description:
  - Pure, it reads nothing on the host and changes nothing. The decisions live in
    C(module_utils/preflight/core/jemalloc_verify.py), where unit tests call them directly.
  - Returns the result published as C(preflight_role_results.jemalloc) (services, settings rows, persistence
    states, verified, verify_detail) and the reasons that make verification fail.
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
  preload_check:
    description: The registered process started with the drop-in's environment (stdout, stderr), or skipped.
    type: dict
    default: {}
  system_check:
    description: The registered process started with no environment (stdout), or skipped.
    type: dict
    default: {skipped: true}
  units:
    description: The loop results of C(systemctl show) per service.
    type: list
    elements: dict
    default: []
  service_maps:
    description: The loop results of reading each main process's maps.
    type: list
    elements: dict
    default: []
  restart_units:
    description: The units whose drop-in changed.
    type: list
    elements: str
    default: []
  enabled:
    description: jemalloc_enabled.
    type: bool
    required: true
  check_mode:
    description: Whether the play runs in check mode.
    type: bool
    default: false
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
    preload_check: "{{ __jemalloc_preload_check }}"
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
from ansible.module_utils.preflight.core.jemalloc_verify import role_result  # noqa: E402

ARGUMENT_SPEC = {
    "plan": {"type": "dict", "required": True},
    "installed_before": {"type": "bool", "required": True},
    "package_changed": {"type": "bool", "default": False},
    "preload_check": {"type": "dict", "default": {}},
    "system_check": {"type": "dict", "default": {"skipped": True}},
    "units": {"type": "list", "elements": "dict", "default": []},
    "service_maps": {"type": "list", "elements": "dict", "default": []},
    "restart_units": {"type": "list", "elements": "str", "default": []},
    "enabled": {"type": "bool", "required": True},
    "check_mode": {"type": "bool", "default": False},
    "package": {"type": "str", "required": True},
    "malloc_conf": {"type": "raw"},
    "scope": {"type": "str", "required": True},
    "restart_services": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result, failures = role_result(dict(module.params))
    module.exit_json(changed=False, result=result, failures=failures)


if __name__ == "__main__":
    main()
