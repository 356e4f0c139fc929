#!/usr/bin/python
"""Ansible module (role-local): ship the probes package to the host in one call, copying only what differs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_runtime_code
short_description: Read the probes package on the controller, or make the host's copy equal to it
description:
  - Without O(source_files), lists the files under O(path) with their SHA-1, following links (C(probes/core) links
    to the core, whose files the host gets as C(probes/core/*)), bytecode and C(__pycache__) left out; with
    O(read=true), also returns their contents.
  - With O(source_files) and O(source_contents), makes O(path) hold exactly those files in one call (one round trip
    for the whole package, not one per file) - writes the files whose SHA-1 differs (each to a temporary file
    renamed over the old one), creates the directories they need and removes files the source no longer has.
    In check mode it only says what it would do.
version_added: "0.1.0"
author: Preflight
options:
  path:
    description: The directory to list, or to make equal to the source; a missing one has no files.
    type: path
    required: true
  read:
    description: Also return the files' contents (base64), for a later call on the host.
    type: bool
    default: false
  source_files:
    description: The source's RV(files), relative path to SHA-1.
    type: dict
  source_contents:
    description: The source's RV(contents); required with O(source_files).
    type: dict
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read the probes package on the controller
  probe_runtime_code:
    path: "{{ playbook_dir }}/../probes"
    read: true
  delegate_to: localhost
  register: __probe_runtime_source

- name: Ensure the probes package on the host matches the controller's
  probe_runtime_code:
    path: /opt/preflight/probes
    source_files: "{{ __probe_runtime_source.files }}"
    source_contents: "{{ __probe_runtime_source.contents }}"
  register: __probe_runtime_synced
"""

RETURN = r"""
files:
  description: Relative path to SHA-1 of every file under O(path) (before any change).
  returned: always
  type: dict
  sample: {"__init__.py": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
contents:
  description: Relative path to the base64 of the file's bytes.
  returned: when O(read=true)
  type: dict
to_copy:
  description: Source files the host lacked or had with other content (written, or to be written in check mode).
  returned: when O(source_files) is given
  type: list
  elements: str
to_remove:
  description: Files under O(path) the source does not have (removed, or to be removed in check mode).
  returned: when O(source_files) is given
  type: list
  elements: str
dirs:
  description: Directories, relative to O(path), that the source's files need (C(.) first).
  returned: when O(source_files) is given
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import probe_runtime as core  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "read": {"type": "bool", "default": False},
            "source_files": {"type": "dict"},
            "source_contents": {"type": "dict"},
        },
        required_together=[("source_files", "source_contents")],
        supports_check_mode=True,
    )
    root = module.params["path"]
    files = core.list_tree(root)
    result = {"changed": False, "files": files}
    if module.params["read"]:
        result["contents"] = core.read_contents(root, files)
    source = module.params["source_files"]
    if source is not None:
        diff = core.code_diff(source, files)
        result.update(diff)
        result["changed"] = bool(diff["to_copy"] or diff["to_remove"]) or not files
        if result["changed"] and not module.check_mode:
            try:
                core.write_tree(root, diff, module.params["source_contents"])
            except (OSError, KeyError) as exc:
                module.fail_json(msg=f"could not write the probes package under {root}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
