#!/usr/bin/python
"""Ansible module (roles/hugepages): read what the role recorded and decide what its rollback restores."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hugepages_rollback
short_description: Read roles/hugepages' rollback record and the host; plan the rollback, or judge its outcome
description:
  - Reads the record (C(state.json), a version 1 record is migrated), the files it names and C(/proc/mounts);
    never changes anything.
  - Returns every reason to stop before anything changes (RV(errors)), the file contents to write back, the
    hugetlbfs mounts to take down and to bring back, and the record's own files to remove afterwards.
  - With O(pool_results), says instead whether the record may go (RV(remove_record)) and what was not restored.
version_added: "0.1.0"
author: Preflight
options:
  state_dir:
    description: Where roles/hugepages recorded what it replaced (hugepages_state_dir).
    type: raw
    required: true
  state_dirs:
    description: The roles' state directories (null for a role default), to check O(state_dir) against.
    type: dict
    default: {}
  pool_results:
    description: The results of restoring the pools (sysfs_tunable); given, the module judges the outcome.
    type: list
    elements: dict
  rmdir_results:
    description: The results of removing the mount points Preflight created.
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Load the recorded hugepage state
  hugepages_rollback:
    state_dir: /var/lib/preflight/hugepages
  register: __hugepages_rollback
"""

RETURN = r"""
exists:
  description: Whether there is a record (nothing to roll back without one).
  returned: without pool_results
  type: bool
errors:
  description: Why the rollback must stop before changing anything (the record is kept).
  returned: without pool_results
  type: list
  elements: str
recorded:
  description: The record (settings, files, mounts, regenerate), as version 2; empty without one.
  returned: without pool_results
  type: dict
write:
  description: What to write back (path, kind, state present/link/absent, content or target, mode).
  returned: without pool_results
  type: list
  elements: dict
cleanup:
  description: The record's own files to remove and the directories to remove when empty.
  returned: without pool_results
  type: dict
grub:
  description:
    - Per GRUB defaults file Preflight edited, the file as rollback leaves it (path, content, changed), exactly the
      hugepages pair it added taken out and what it replaced put back, every later edit kept.
  returned: without pool_results
  type: list
  elements: dict
unmount:
  description: Mount points to unmount.
  returned: without pool_results
  type: list
  elements: str
remount:
  description: Mounts to bring back (path, options).
  returned: without pool_results
  type: list
  elements: dict
regenerate:
  description: The command that regenerates the boot configuration after the GRUB defaults are restored.
  returned: without pool_results
  type: list
  elements: str
systemd_running:
  description: Whether systemd is PID 1 (/run/systemd/system exists).
  returned: without pool_results
  type: bool
remove_record:
  description: Whether every pool took its recorded page count, so the record may go.
  returned: with pool_results
  type: bool
warnings_found:
  description: What the rollback could not restore.
  returned: with pool_results
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.grub import GrubError  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_persist import grub_rollback  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_verify import rollback_outcome, rollback_plan  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state_dir": {"type": "raw", "required": True},
            "state_dirs": {"type": "dict", "default": {}},
            "pool_results": {"type": "list", "elements": "dict"},
            "rmdir_results": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    if p["pool_results"] is not None:
        outcome = rollback_outcome(p["pool_results"], p["rmdir_results"])
        module.exit_json(changed=False, remove_record=outcome["remove_record"], warnings_found=outcome["warnings"])
    planned = rollback_plan(Tree("/"), p["state_dir"], p["state_dirs"])
    planned["grub"] = []
    if planned["recorded"] and not planned["errors"]:
        try:  # core/hugepages_persist.py: exactly the pair Preflight added out, what it replaced back
            planned["grub"] = grub_rollback(Tree("/"), planned["recorded"], str(p["state_dir"]))
        except GrubError as err:
            planned["errors"].append(str(err))
    module.exit_json(changed=False, **planned)


if __name__ == "__main__":
    main()
