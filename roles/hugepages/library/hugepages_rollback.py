#!/usr/bin/python
"""Ansible module (roles/hugepages): read what the role recorded and decide what its rollback restores."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hugepages_rollback
short_description: Read roles/hugepages' rollback record and the live hugetlbfs mounts; plan the rollback
description:
  - Reads the record (C(state.json)) and C(/proc/mounts); never changes anything.
  - Returns the record and the hugetlbfs mounts to take down (Preflight added or changed them) and to bring
    back as they were recorded.
version_added: "0.1.0"
author: Preflight
options:
  state_file:
    description: The record roles/hugepages wrote before its first change.
    type: path
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Load the recorded hugepage state
  hugepages_rollback:
    state_file: /var/lib/preflight/hugepages/state.json
  register: __hugepages_rollback
"""

RETURN = r"""
exists:
  description: Whether there is a record (nothing to roll back without one).
  returned: always
  type: bool
recorded:
  description: The record (settings, files, mounts, regenerate); empty without one.
  returned: always
  type: dict
unmount:
  description: Mount points to unmount.
  returned: always
  type: list
  elements: str
remount:
  description: Mounts to bring back (path, options).
  returned: always
  type: list
  elements: dict
regenerate:
  description: The command that regenerates the boot configuration after the GRUB defaults are restored.
  returned: always
  type: list
  elements: str
systemd_running:
  description: Whether systemd is PID 1 (/run/systemd/system exists).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_verify import rollback_plan  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402


def main() -> None:
    module = AnsibleModule(argument_spec={"state_file": {"type": "path", "required": True}}, supports_check_mode=True)
    state_file = module.params["state_file"]
    try:
        planned = rollback_plan(Tree("/"), state_file)
    except ValueError:
        module.fail_json(msg=f"{state_file} is not valid JSON: move it away or restore it, then run again")
    module.exit_json(changed=False, **planned)


if __name__ == "__main__":
    main()
