#!/usr/bin/python
"""Ansible module (role-local): the thp role's outcome from what its tasks registered and the kernel's values read
back; changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: thp_outcome
short_description: Describe how THP persisted and whether it verified, or what a THP rollback did
description:
  - Takes what the thp role's tasks registered and returns the description the role publishes, computed by
    C(module_utils/preflight/core/thp.py) so that no decision is made in Jinja.
  - O(what=result) reads the THP settings back from the kernel (C(thp_node.read_settings) and every per-size
    knob) and gives RV(persistence), RV(reboot_required), RV(lines), RV(result) (C(preflight_role_results.thp))
    and RV(problems); O(what=rollback) gives RV(lines) and reads nothing.
  - Never changes anything.
version_added: "0.1.0"
author: Preflight
options:
  what:
    description: Which description to compute.
    type: str
    required: true
    choices: [result, rollback]
  persist:
    description: thp_persist with C(auto) resolved, thp_inspect's RV(thp_inspect#module:persist) (O(what=result)).
    type: list
    elements: str
    default: []
  inspected:
    description: The registered result of thp_inspect before the change (O(what=result)).
    type: dict
    default: {}
  enabled:
    description: thp_enabled (O(what=result)).
    type: str
    default: ""
  unit:
    description:
      - O(what=result) - C(name), C(path), C(wanted_by) and the registered results C(written), C(link), C(start).
      - O(what=rollback) - C(path), C(link_path) and the registered results C(file), C(link) of removing them.
    type: dict
    default: {}
  grub:
    description:
      - O(what=result) - the registered results C(edit) and C(regenerate).
      - O(what=rollback) - the registered result of restoring the GRUB line.
    type: dict
    default: {}
  tuned:
    description:
      - O(what=result) - the registered results C(profile), C(active_profile), C(profile_mode) of writing
        Preflight's tuned profile and making it active, and C(reload) of telling the running daemon.
      - O(what=rollback) - the registered results C(files) (restoring active_profile and profile_mode, a loop)
        and C(profile) (removing Preflight's profile).
    type: dict
    default: {}
  plan:
    description: thp_inspect's RV(thp_inspect#module:plan) (O(what=result)).
    type: list
    elements: dict
    default: []
  applied:
    description: The loop results of sysfs_tunable applying the plan (O(what=result)); the restored ones for rollback.
    type: list
    elements: dict
    default: []
  rollback:
    description: The registered result of thp_inspect with O(thp_inspect#module:rollback=true) (O(what=rollback)).
    type: dict
    default: {}
  state_file:
    description: The rollback record's path (O(what=rollback)).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the THP settings back and compare them with the wanted ones
  thp_outcome:
    what: result
    persist: "{{ __thp_inspect.persist }}"
    inspected: "{{ __thp_inspect }}"
    enabled: "{{ thp_enabled | string }}"
    plan: "{{ __thp_inspect.plan }}"
    applied: "{{ __thp_apply.results }}"
    unit: {name: preflight-thp.service, path: /etc/systemd/system/preflight-thp.service, wanted_by: sysinit.target,
           written: "{{ __thp_unit }}", link: "{{ __thp_unit_link_result }}", start: "{{ __thp_unit_start }}"}
    grub: {edit: "{{ __thp_grub_edit }}", regenerate: "{{ __thp_grub_regenerate }}"}
  register: __thp_outcome
"""

RETURN = r"""
persistence:
  description:
    - Per method in thp_persist (C(auto) resolved), C(method), C(path), C(detail) and C(state)
      (installed, unchanged, unavailable or failed).
  returned: O(what=result)
  type: list
  elements: dict
reboot_required:
  description: Whether the kernel command line changed and needs a reboot to take effect.
  returned: O(what=result)
  type: bool
lines:
  description: What to print for the operator, one line each (how THP persists, or what the rollback did).
  returned: always
  type: list
  elements: str
result:
  description: The role's result for the report (role, settings, persistence, conflicts, verified, problems, ...).
  returned: O(what=result)
  type: dict
problems:
  description: Every setting the kernel did not take and every failed persistence method, one sentence each.
  returned: O(what=result)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import thp, thp_node, thp_sizes  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402

ARGUMENT_SPEC = {
    "what": {"type": "str", "required": True, "choices": ["result", "rollback"]},
    "persist": {"type": "list", "elements": "str", "default": []},
    "inspected": {"type": "dict", "default": {}},
    "enabled": {"type": "str", "default": ""},
    "unit": {"type": "dict", "default": {}},
    "grub": {"type": "dict", "default": {}},
    "tuned": {"type": "dict", "default": {}},
    "plan": {"type": "list", "elements": "dict", "default": []},
    "applied": {"type": "list", "elements": "dict", "default": []},
    "rollback": {"type": "dict", "default": {}},
    "state_file": {"type": "str", "default": ""},
}


def readback(tree: Tree) -> dict:
    """The THP settings as the kernel reports them now, keyed as thp_inspect's plan names them."""
    settings = thp_node.read_settings(tree)
    settings.update(thp_sizes.settings(thp_sizes.read_sizes(tree)))
    return settings


def run_module() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    if p["what"] == "result":
        described = thp.persistence(p["persist"], p["inspected"], p["enabled"], p["unit"], p["grub"], module.check_mode,
                                    p["tuned"])
        result = thp.result(p["plan"], p["applied"], readback(Tree("/")), described,
                            p["inspected"]["conflicts"], module.check_mode)
        described.update(result=result, problems=result["problems"])
    else:
        read = p["rollback"]
        boot = read["rollback"]["cmdline"]
        lines = thp.rollback_lines(read["recorded"], p["state_file"], p["applied"], p["unit"], p["grub"], boot,
                                   p["tuned"])
        described = {"lines": lines}
    module.exit_json(changed=False, **described)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
