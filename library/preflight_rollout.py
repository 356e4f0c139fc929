#!/usr/bin/python
"""Ansible module: decide whether a rolling play's next batch may start (module_utils/preflight/core/rollout.py)."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core import rollout

DOCUMENTATION = r"""
---
module: preflight_rollout
short_description: Decide whether the next batch of a rolling Preflight play may start
description:
  - Runs once per batch on the controller (C(run_once), C(delegate_to=localhost)), as the first task of
    the rolling plays of C(site.yml), C(bootstrap.yml) and C(probe.yml) (C(playbooks/tasks/rollout_gate.yml)).
  - Counts the hosts of earlier batches that did not finish (could not start, or stopped answering) and stops
    the batch when their share is above O(max_fail_percentage). The hosts of a stopped batch then end with
    RV(msg) as their recorded failure, so the reports are still written; Ansible's own C(max_fail_percentage)
    would end the whole playbook, the report play included.
  - Never changes anything.
version_added: "0.1.0"
author:
  - Preflight
options:
  max_fail_percentage:
    description:
      - C(preflight_max_fail_percentage), 0 to 100; null or omitted is 0 (the first host that does not finish
        stops later batches).
    type: raw
  earlier:
    description:
      - The rollout state of each host of earlier batches, C({host, state}), state one of C(started),
        C(done) or C(stopped) (C(ROLLOUT_STATES) in C(module_utils/preflight/core/rollout.py)).
    type: list
    elements: dict
    default: []
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only computes.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Decide whether this batch may start
  preflight_rollout:
    max_fail_percentage: "{{ preflight_max_fail_percentage | default(omit) }}"
    earlier:
      - {host: node1, state: done}
      - {host: node2, state: started}
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
stop:
  description: Whether this batch must not start.
  returned: success
  type: bool
  sample: true
msg:
  description: The reason recorded for each host of a stopped batch; null when the batch starts.
  returned: success
  type: str
unfinished:
  description: The hosts of earlier batches that did not finish.
  returned: success
  type: list
  elements: str
  sample: [node2]
ran:
  description: How many hosts of earlier batches ran (the gate's stopped hosts are not counted).
  returned: success
  type: int
  sample: 2
max_fail_percentage:
  description: The limit applied, in percent.
  returned: success
  type: float
  sample: 0.0
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "max_fail_percentage": {"type": "raw"},
            "earlier": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    try:
        decision = rollout.gate(module.params["earlier"], module.params["max_fail_percentage"])
    except ValueError as err:
        module.fail_json(msg=str(err))
    module.exit_json(changed=False, **decision)


if __name__ == "__main__":
    main()
