#!/usr/bin/python
"""Ansible module (roles/jemalloc): read what the role recorded and decide what its rollback restores."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: jemalloc_rollback
short_description: Read roles/jemalloc's rollback record and the host; plan the rollback
description:
  - Reads the record (C(state.json), a version 1 record is migrated), the drop-ins and C(ld.so.preload) it names,
    and asks the package manager, with a dry run, what removing the package would take with it. Never changes
    anything.
  - Returns every reason to stop before anything changes (RV(errors)), what to write back, the drop-in
    directories and record files to remove, and whether the package goes (only when Preflight installed it
    and nothing installed depends on it).
version_added: "0.1.0"
author: Preflight
options:
  state_dir:
    description: Where roles/jemalloc recorded what it replaced (jemalloc_state_dir).
    type: raw
    required: true
  state_dirs:
    description: The roles' state directories (null for a role default), to check O(state_dir) against.
    type: dict
    default: {}
  file_list_command:
    description: Command (argument list) that prints the package's files (to find the library of a version 1 record).
    type: list
    elements: str
    required: true
  dependents_command:
    description: Dry run of the package's removal (C(apt-get -s remove P) or C(rpm -e --test P)).
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read what to roll back
  jemalloc_rollback:
    state_dir: /var/lib/preflight/jemalloc
    file_list_command: [dpkg-query, --listfiles, libjemalloc2]
    dependents_command: [apt-get, -s, remove, libjemalloc2]
  register: __jemalloc_rollback
"""

RETURN = r"""
exists:
  description: Whether there is a record.
  returned: always
  type: bool
errors:
  description: Why the rollback must stop before changing anything (the record is kept).
  returned: always
  type: list
  elements: str
write:
  description: What to write back (path, state present/absent, content, mode).
  returned: always
  type: list
  elements: dict
rmdir_dropin_dirs:
  description: Drop-in directories Preflight created, removed when empty.
  returned: always
  type: list
  elements: str
services:
  description: The units whose drop-ins the record names (restarted when systemd runs).
  returned: always
  type: list
  elements: str
package:
  description: remove (bool), name, detail (why it goes or stays).
  returned: always
  type: dict
cleanup:
  description: The record's own files to remove, and its directories to remove when empty.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.jemalloc import pick_library  # noqa: E402
from ansible.module_utils.preflight.core.jemalloc_undo import (  # noqa: E402
    dependents,
    package_decision,
    read_record,
    rollback_plan,
)
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state_dir": {"type": "raw", "required": True},
            "state_dirs": {"type": "dict", "default": {}},
            "file_list_command": {"type": "list", "elements": "str", "required": True},
            "dependents_command": {"type": "list", "elements": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    env = {"LANG": "C", "LC_ALL": "C"}
    rc, out, _err = module.run_command(p["file_list_command"], environ_update=env)
    library = pick_library(out.splitlines()) if rc == 0 else None
    tree = Tree("/")
    recorded, exists, errors = read_record(tree, p["state_dir"], p["state_dirs"], library)
    entry = recorded.get("package")
    found, why = None, ""
    if entry and entry.get("installed_by_preflight"):
        command = p["dependents_command"]
        rc, out, err = module.run_command(command, environ_update=env)
        found, why = dependents(entry["name"], command, rc, out, err)
    planned = rollback_plan(tree, str(p["state_dir"]), recorded, exists, errors, package_decision(entry, found, why))
    module.exit_json(changed=False, **planned)


if __name__ == "__main__":
    main()
