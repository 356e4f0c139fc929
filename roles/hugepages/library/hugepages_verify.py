#!/usr/bin/python
"""Ansible module (roles/hugepages): decide what the read-back proved and build the result for the report."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hugepages_verify
short_description: Build roles/hugepages' result from the plan, the read-back and the tasks' results
description:
  - Pure, it reads nothing on the host and changes nothing. The decisions live in
    C(module_utils/preflight/core/hugepages_verify.py), where unit tests call them directly.
  - Returns the result published as C(preflight_role_results.hugepages) (settings rows, persistence states,
    verified, verify_detail, shortfall, pool) and the problems that make verification fail.
version_added: "0.1.0"
author: Preflight
options:
  plan:
    description: The plan hugepages_state made before applying.
    type: dict
    required: true
  readback:
    description: hugepages_state's registered result after applying (skipped in check mode).
    type: dict
    default: {}
  task_results:
    description: Loop results of the tasks that wrote, linked or removed persistence files (item.path, changed).
    type: list
    elements: dict
    default: []
  pool_results:
    description: sysfs_tunable's loop results for the pool files (item, before, after, changed).
    type: list
    elements: dict
    default: []
  size:
    description: The page size asked for (hugepages_size).
    type: str
    required: true
  fstab_path:
    description: The fstab the mounts are persisted in.
    type: str
    required: true
  check_mode:
    description: Whether the play runs in check mode (nothing was applied, nothing read back).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Build the hugepages result for the report
  hugepages_verify:
    plan: "{{ __hugepages_plan }}"
    readback: "{{ __hugepages_readback }}"
    pool_results: "{{ __hugepages_pool.results | default([]) }}"
    size: 2M
    fstab_path: /etc/fstab
    check_mode: "{{ ansible_check_mode }}"
  register: __hugepages_verify
"""

RETURN = r"""
result:
  description: role, size, settings, persistence, conflicts, verified, verify_detail, reboot_required, shortfall,
    pool, check_mode.
  returned: always
  type: dict
problems:
  description: Where the host does not hold what was applied; empty when it does (and in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_verify import role_result  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "plan": {"type": "dict", "required": True},
            "readback": {"type": "dict", "default": {}},
            "task_results": {"type": "list", "elements": "dict", "default": []},
            "pool_results": {"type": "list", "elements": "dict", "default": []},
            "size": {"type": "str", "required": True},
            "fstab_path": {"type": "str", "required": True},
            "check_mode": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    result, problems = role_result(
        p["plan"], p["readback"], p["task_results"], p["pool_results"], p["size"], p["fstab_path"], p["check_mode"]
    )
    module.exit_json(changed=False, result=result, problems=problems)


if __name__ == "__main__":
    main()
