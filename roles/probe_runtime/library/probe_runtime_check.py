#!/usr/bin/python
"""Ansible module (role-local): import what the probes need in the probe runtime, for real. Changes nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_runtime_check
short_description: Import the probes package and the modules the probes need in the probe runtime
description:
  - Runs O(interpreter) with O(script) in O(env), importing C(probes) (unless check mode has only planned its
    copy), O(required) and, with O(vllm), vLLM and its HTTP client, and reads each module's version or error.
  - Fails, naming each module and its error, when C(probes) or a module of O(required) does not import.
    A vLLM that does not import is reported, not a failure.
  - A missing interpreter (a fresh host in check mode has no venv yet) is not checked, and RV(check) is null.
  - Runs in check mode too, since importing changes nothing.
version_added: "0.1.0"
author: Preflight
options:
  host:
    description: The inventory name, first word of the failure message.
    type: str
    required: true
  interpreter:
    description: The probe runtime's interpreter.
    type: path
    required: true
  env:
    description: The probes' environment.
    type: dict
    default: {}
  script:
    description: The check program (the role's files/runtime_check.py), passed as C(python -c).
    type: str
    required: true
  pending_copies:
    description: Files of the probes package still to be copied; in check mode, C(probes) is then not imported.
    type: list
    elements: str
    default: []
  required:
    description: Modules the runtime must import.
    type: list
    elements: str
    default: []
  vllm:
    description: Whether to import vLLM and its HTTP client too.
    type: bool
    default: false
  given_python:
    description: Whether the interpreter is the operator's (C(probe_runtime_python)); chooses the advice on failure.
    type: bool
    default: false
  venv:
    description: The venv, named in the advice when it is the role's own.
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Import what the probes need in the probe runtime
  probe_runtime_check:
    host: "{{ inventory_hostname }}"
    interpreter: /usr/bin/python3
    env: {PYTHONPATH: /opt/preflight}
    script: "{{ lookup('ansible.builtin.file', 'runtime_check.py') }}"
    required: [torch, transformers]
    given_python: true
  register: __probe_runtime_check
"""

RETURN = r"""
imports:
  description: The modules imported (or that would be, when the interpreter is missing).
  returned: always
  type: list
  elements: str
check:
  description:
    - C(python) (version), C(executable) and C(modules) (per module C(version), C(error), C(import_s));
      null when the interpreter does not exist.
  returned: always
  type: dict
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import probe_runtime as core  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "interpreter": {"type": "path", "required": True},
            "env": {"type": "dict", "default": {}},
            "script": {"type": "str", "required": True},
            "pending_copies": {"type": "list", "elements": "str", "default": []},
            "required": {"type": "list", "elements": "str", "default": []},
            "vllm": {"type": "bool", "default": False},
            "given_python": {"type": "bool", "default": False},
            "venv": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    imports = core.imports_to_check(module.check_mode, params["pending_copies"], params["required"], params["vllm"])
    interpreter = params["interpreter"]
    if not os.path.exists(interpreter):
        module.exit_json(changed=False, imports=imports, check=None)
    env = {str(key): str(value) for key, value in params["env"].items()}
    rc, stdout, stderr = module.run_command([interpreter, "-c", params["script"]] + imports, environ_update=env)
    check = core.parse_check(stdout) if rc == 0 else None
    if check is None:
        module.fail_json(msg=f"{params['host']}: the probe runtime {interpreter} did not run the import check "
                         f"(exit {rc}): {stderr.strip()[-500:]}", rc=rc, stdout=stdout, stderr=stderr)
    must = core.must_import(module.check_mode, params["pending_copies"], params["required"])
    broken = core.broken_imports(check, must)
    if broken:
        module.fail_json(msg=core.import_failure(params["host"], interpreter, check, broken, params["given_python"],
                                                 params["venv"]), imports=imports, check=check)
    module.exit_json(changed=False, imports=imports, check=check)


if __name__ == "__main__":
    main()
