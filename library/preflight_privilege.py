#!/usr/bin/python
"""Ansible module: fail, before anything changes, when Preflight would run on a node without root."""

from __future__ import annotations

import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core.privilege import privilege_problem

DOCUMENTATION = r"""
---
module: preflight_privilege
short_description: Check that Preflight runs as root on the node, before it changes anything
description:
  - Reads the effective user the module runs as on the node. Root passes; anyone else fails with a message
    that names the host, the user and how to escalate (become), so a run without become stops before the
    first change instead of halfway through with a permission error.
  - Never changes anything.
version_added: "0.1.0"
author:
  - Preflight
options:
  host:
    description: The inventory name of the node, for the message.
    type: str
    required: true
  login_user:
    description: The user Ansible logged in as (C(ansible_user)), for the message.
    type: str
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Ensure Preflight runs as root on the node (become)
  preflight_privilege:
    host: "{{ inventory_hostname }}"
    login_user: "{{ ansible_user | default(omit) }}"
"""

RETURN = r"""
user:
  description: The user the module ran as on the node.
  returned: always
  type: str
  sample: root
euid:
  description: Its effective uid.
  returned: always
  type: int
  sample: 0
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={"host": {"type": "str", "required": True}, "login_user": {"type": "str"}},
        supports_check_mode=True,
    )
    euid = os.geteuid()
    try:
        user = pwd.getpwuid(euid).pw_name
    except KeyError:
        user = str(euid)
    problem = privilege_problem(module.params["host"], euid, user, module.params["login_user"])
    if problem:
        module.fail_json(msg=problem, user=user, euid=euid)
    module.exit_json(changed=False, user=user, euid=euid)


if __name__ == "__main__":
    main()
