#!/usr/bin/python
"""Ansible module (role-local): assemble preflight_probe_runtime, what the probes and the report read."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_runtime_result
short_description: Describe the probe runtime for the probes and the report
description:
  - Assembles C(preflight_probe_runtime) from the role's plan, the import check, the venv flavor, the model build
    and the copied files, and says why the vLLM probes cannot run when they cannot.
  - Never changes anything.
version_added: "0.1.0"
author: Preflight
options:
  host:
    description: The inventory name, first word of RV(message).
    type: str
    required: true
  plan:
    description: The result of C(probe_runtime_plan) (C(dir), C(interpreter), C(source), C(env), C(model)).
    type: dict
    required: true
  check:
    description: The C(check) of C(probe_runtime_check); null when the runtime was not checked.
    type: dict
  flavor:
    description: The venv's builds (C(cpu) or C(gpu)); null with an existing interpreter.
    type: str
  vllm:
    description: Whether vLLM was wanted (C(probe_runtime_vllm)).
    type: bool
    required: true
  model_built:
    description: Whether this run built the probe model.
    type: bool
    default: false
  copied:
    description: The package's files this run wrote on the host (C(probe_runtime_code)'s RV(to_copy) when it changed).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Describe the probe runtime
  probe_runtime_result:
    host: "{{ inventory_hostname }}"
    plan: "{{ __probe_runtime_plan }}"
    check: "{{ __probe_runtime_check.check }}"
    vllm: false
  register: __probe_runtime_result
"""

RETURN = r"""
runtime:
  description:
    - C(dir), C(python), C(python_version), C(source), C(flavor), C(env), C(versions) (per imported module, C(probes)
      left out), C(imports), C(checked), C(vllm_wanted), C(vllm_importable), C(vllm_reason), C(model) (C(requested),
      C(kind), C(path), C(built)), C(changed_files), C(check_mode).
  returned: always
  type: dict
message:
  description: One line for the operator.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import probe_runtime as core  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "plan": {"type": "dict", "required": True},
            "check": {"type": "dict"},
            "flavor": {"type": "str"},
            "vllm": {"type": "bool", "required": True},
            "model_built": {"type": "bool", "default": False},
            "copied": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    runtime = core.runtime_result(params["plan"], params["check"], params["flavor"], params["vllm"],
                                  params["model_built"], params["copied"], module.check_mode)
    module.exit_json(changed=False, runtime=runtime, message=core.runtime_summary(params["host"], runtime))


if __name__ == "__main__":
    main()
