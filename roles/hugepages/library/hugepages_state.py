#!/usr/bin/python
"""Ansible module (roles/hugepages): read the hugepage state of a host and plan the requested change."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hugepages_state
short_description: Read hugepage pools, mounts and their persistence, and plan a requested change
description:
  - Reads the host (pools per page size and NUMA node, C(/proc/meminfo), C(/proc/buddyinfo), hugetlbfs mounts,
    C(fstab), sysctl configuration, the kernel command line, the bootloader, systemd) and never changes anything.
  - Validates the requested pool and mounts against that host and returns every error at once.
  - Returns the plan the role executes with ordinary modules (kernel files, persistence files, mounts),
    the conflicts with other tuners, the snapshot to record for rollback, and, after the change,
    the shortfall (asked, got, why) when the kernel kept fewer pages than asked.
  - Given O(verify) (after the change), it also decides what this read proves against the plan made before
    (C(module_utils/preflight/core/hugepages_verify.py)) and returns RV(result) and RV(problems).
version_added: "0.1.0"
author: Preflight
options:
  count:
    description: Total pages of O(size); null leaves the pool alone.
    type: int
  per_node:
    description: Pages of O(size) per NUMA node (node number to count); null leaves the pool alone.
    type: dict
  size:
    description: Page size.
    type: str
    choices: [2M, 1G]
    default: 2M
  max_percent:
    description: Refuse a request that would put more than this share of MemTotal in hugepages.
    type: int
    default: 50
  mounts:
    description: hugetlbfs mounts (path, mode, owner, group, pagesize, state).
    type: list
    elements: dict
    default: []
  fstab:
    description: The fstab file to plan mount entries in.
    type: path
    default: /etc/fstab
  sysctl_file:
    description: The sysctl.d file that persists vm.nr_hugepages.
    type: path
    required: true
  unit_dir:
    description: Where the boot-time unit goes.
    type: path
    default: /etc/systemd/system
  grub_default:
    description: The GRUB defaults file, for 1 GiB pages on the kernel command line.
    type: path
    default: /etc/default/grub
  state_dir:
    description: Where the previous state is recorded; its C(state.json) is read to merge the snapshot.
      Checked like every state directory (absolute, not a system directory, not shared with another role).
    type: raw
    required: true
  state_dirs:
    description: The state directories of the roles (thp_state_dir, hugepages_state_dir, jemalloc_state_dir; null
      for a role default), so that O(state_dir) is checked to be a directory of its own.
    type: dict
    default: {}
  verify:
    description:
      - After the change, C(plan) (this module's RV(plan) before it), C(task_results) (the loop results of the
        tasks that wrote, linked or removed persistence files) and C(pool_results) (sysfs_tunable's results for
        the pool files). In check mode nothing was applied, so the read is not held against the plan.
    type: dict
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Plan 64 pages of 2 MiB and a hugetlbfs mount
  hugepages_state:
    count: 64
    mounts: [{path: /dev/hugepages, mode: "1770", group: root}]
    sysctl_file: /etc/sysctl.d/80-preflight-hugepages.conf
    state_dir: /var/lib/preflight/hugepages
  register: hugepages_plan
"""

RETURN = r"""
errors:
  description: Every reason the request cannot be applied on this host; empty when it can.
  returned: always
  type: list
  elements: str
plan:
  description: Settings (name, path, desired, before), files (path, state, content or target, changed),
    persistence, mounts, to_mount, to_unmount, reboot_required, pending, conflicts, pool.
  returned: when errors is empty
  type: dict
snapshot:
  description: The previous state to record (settings, files, mounts), merged with what is already recorded.
  returned: when errors is empty
  type: dict
backups:
  description: Files to copy into the state directory now (path, backup name relative to the state directory).
  returned: when errors is empty
  type: list
  elements: dict
record_needed:
  description: Whether the snapshot differs from what is recorded and a change is pending.
  returned: when errors is empty
  type: bool
shortfall:
  description: Null when every pool file holds the desired count, else asked, got, why and the settings short.
  returned: when errors is empty
  type: dict
host:
  description: What was read (MemTotal, default size, sizes, pools, nodes, mounts, bootloader, systemd_running).
  returned: always
  type: dict
result:
  description: The role's result for the report (C(preflight_role_results.hugepages)) - settings rows,
    persistence states, verified, verify_detail, shortfall, pool.
  returned: when O(verify) is given
  type: dict
problems:
  description: What the host does not hold that was applied, one sentence each; verification fails on any.
  returned: when O(verify) is given
  type: list
  elements: str
"""

import json  # noqa: E402
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.grub import GrubError  # noqa: E402
from ansible.module_utils.preflight.core.hugepages import Host, validate  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_plan import backups, plan, shortfall, snapshot  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_read import read_host  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_undo import migrate  # noqa: E402
from ansible.module_utils.preflight.core.hugepages_verify import role_result  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402
from ansible.module_utils.preflight.core.undo import RecordError  # noqa: E402


def host_summary(host: Host) -> dict:
    return {
        "mem_total_kb": host.meminfo_kb.get("MemTotal"),
        "mem_free_kb": host.meminfo_kb.get("MemFree"),
        "default_size_kb": host.default_size_kb,
        "sizes_kb": host.sizes_kb,
        "pools": {
            str(kb): {**pool, "nodes": {str(n): c for n, c in pool["nodes"].items()}} for kb, pool in host.pools.items()
        },
        "nodes": host.nodes,
        "mounts": host.mounts,
        "bootloader": host.bootloader,
        "systemd_running": host.systemd_running,
        "cmdline": host.cmdline,
    }


def as_number(value):
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "count": {"type": "raw"},
            "per_node": {"type": "raw"},
            "size": {"type": "str", "default": "2M"},
            "max_percent": {"type": "raw", "default": 50},
            "mounts": {"type": "raw", "default": []},
            "fstab": {"type": "path", "default": "/etc/fstab"},
            "sysctl_file": {"type": "path", "required": True},
            "unit_dir": {"type": "path", "default": "/etc/systemd/system"},
            "grub_default": {"type": "path", "default": "/etc/default/grub"},
            "state_dir": {"type": "raw", "required": True},
            "state_dirs": {"type": "dict", "default": {}},
            "verify": {"type": "dict"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = read_and_plan(module, p)
    verify = p["verify"]
    if verify is not None:
        role, problems = role_result(verify["plan"], {} if module.check_mode else result,
                                     verify.get("task_results") or [], verify.get("pool_results") or [], p["size"],
                                     p["fstab"], module.check_mode)
        result.update(result=role, problems=problems)
    module.exit_json(**result)


def read_and_plan(module: AnsibleModule, p: dict) -> dict:
    """What was read, the errors of the request, and (when it is valid) the plan, snapshot and shortfall."""
    paths = {
        "fstab": p["fstab"],
        "sysctl_file": p["sysctl_file"],
        "unit_dir": p["unit_dir"].rstrip("/"),
        "grub_default": p["grub_default"],
    }
    params = {
        "count": p["count"],
        "per_node": p["per_node"],
        "size": p["size"],
        "max_percent": p["max_percent"],
        "mounts": p["mounts"],
        "paths": paths,
        "state_dirs": {**p["state_dirs"], "hugepages_state_dir": p["state_dir"]},
    }
    # `-e hugepages_count=64` arrives as a string; a word, a float or a boolean stays what it is and is refused.
    for key in ("count", "max_percent"):
        params[key] = as_number(params[key])
    if isinstance(params["per_node"], dict):
        params["per_node"] = {k: as_number(v) for k, v in params["per_node"].items()}
    if params["mounts"] is None:
        params["mounts"] = []
    if not isinstance(params["mounts"], list):
        return {"changed": False, "errors": [f"hugepages_mounts={params['mounts']!r} must be a list of maps"]}
    host = read_host(Tree("/"), params, paths)
    errors = validate(params, host)
    result = {"changed": False, "errors": errors, "host": host_summary(host)}
    if errors:
        return result

    try:
        planned = plan(params, host)
    except GrubError as err:  # a GRUB defaults file core/grub.py cannot read with certainty: refused, nothing written
        return {**result, "errors": [f"hugepages_size=1G on the kernel command line: {err}"]}
    tree = Tree("/")
    state_file = os.path.join(p["state_dir"], "state.json")
    recorded = None
    if os.path.exists(state_file):
        try:
            recorded = migrate(
                json.loads(tree.read(state_file) or "{}"), lambda name: tree.read(os.path.join(p["state_dir"], name))
            )
        except ValueError as exc:  # RecordError is a ValueError
            why = str(exc) if isinstance(exc, RecordError) else "it is not valid JSON"
            module.fail_json(msg=f"{state_file} cannot be used: {why}; move it away or restore it, then run again",
                             **result)
    snap = snapshot(planned, host, recorded, tree.isdir(p["state_dir"]))
    result.update(
        plan=planned,
        snapshot=snap,
        backups=backups(snap, recorded),
        record_needed=planned["pending"] and snap != recorded,
        recorded=recorded is not None,
        shortfall=shortfall(planned, host),
    )
    return result


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
