#!/usr/bin/python
"""Ansible module (role-local): validate the probe_runtime variables and say what they mean. Changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_runtime_plan
short_description: Validate the probe_runtime variables and plan the interpreter, environment, flavor and model
description:
  - Checks every C(probe_runtime_*) variable and fails once, naming each bad variable, its value and what is
    allowed, before anything on the host changes.
  - For valid variables, returns the interpreter to use, where it comes from, the probes' environment, the venv
    flavor and where the probe model comes from.
  - Reads only whether an NVIDIA driver is loaded (when the flavor is C(auto) and no GPU facts are given).
version_added: "0.1.0"
author: Preflight
options:
  host:
    description: The inventory name, first word of the failure message.
    type: str
    required: true
  variables:
    description:
      - The role's variables by name, as the operator gave them (not converted, so a wrong type is named).
      - C(probe_runtime_dir), C(probe_runtime_python), C(probe_runtime_env), C(probe_runtime_flavor),
        C(probe_runtime_packages), C(probe_runtime_vllm), C(probe_runtime_model), C(probe_runtime_required_imports),
        C(probe_runtime_model_timeout_s).
    type: dict
    required: true
  gpus:
    description: The node facts' GPU list (C(ansible_facts.preflight.gpus)); null when there are no node facts.
    type: raw
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Ensure every probe runtime variable is valid before changing anything
  probe_runtime_plan:
    host: "{{ inventory_hostname }}"
    variables:
      probe_runtime_dir: "{{ probe_runtime_dir }}"
      probe_runtime_python: "{{ probe_runtime_python }}"
      probe_runtime_model: tiny
    gpus: "{{ ansible_facts.preflight.gpus | default(none) }}"
  register: __probe_runtime_plan
"""

RETURN = r"""
errors:
  description: One sentence per invalid variable (empty when the module succeeds).
  returned: always
  type: list
  elements: str
dir:
  description: The probe runtime directory.
  returned: success
  type: str
venv:
  description: Where the venv lives (used only when RV(source) is C(venv)).
  returned: success
  type: str
interpreter:
  description: The interpreter the probes run with.
  returned: success
  type: str
  sample: /opt/preflight/venv/bin/python
source:
  description: C(existing) (the operator's interpreter) or C(venv).
  returned: success
  type: str
flavor:
  description: C(cpu) or C(gpu) builds for the venv; null with an existing interpreter.
  returned: success
  type: str
env:
  description: The probes' environment (offline, no bytecode, the runtime directory first on C(PYTHONPATH)).
  returned: success
  type: dict
model:
  description: C(requested), C(kind) (none, path, shape), C(path), C(models_dir), C(done_file), C(device), C(shapes).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import probe_runtime as core  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "variables": {"type": "dict", "required": True},
            "gpus": {"type": "raw"},
        },
        supports_check_mode=True,
    )
    variables = module.params["variables"]
    errors = core.validate(variables)
    if errors:
        module.fail_json(msg=core.rejection_message(module.params["host"], errors), errors=errors)
    plan = core.plan(variables)
    flavor = None
    if plan["source"] == "venv":
        wanted = variables["probe_runtime_flavor"]
        driver = wanted == "auto" and module.params["gpus"] is None and core.nvidia_driver_present()
        flavor = core.choose_flavor(wanted, module.params["gpus"], driver)
    module.exit_json(changed=False, errors=[], flavor=flavor, **plan)


if __name__ == "__main__":
    main()
