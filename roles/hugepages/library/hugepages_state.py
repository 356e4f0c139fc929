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
    type: path
    required: true
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
"""

import glob  # noqa: E402
import grp  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight_hugepages import (  # noqa: E402
    Host,
    backups,
    parse_buddyinfo,
    parse_hugetlbfs_mounts,
    parse_meminfo,
    plan,
    shortfall,
    snapshot,
    validate,
)

SYSCTL_GLOBS = (
    "/etc/sysctl.d/*.conf",
    "/run/sysctl.d/*.conf",
    "/usr/local/lib/sysctl.d/*.conf",
    "/usr/lib/sysctl.d/*.conf",
    "/lib/sysctl.d/*.conf",
    "/etc/sysctl.conf",
)


def read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return default


def read_int(path: str) -> int:
    text = read(path, "0") or "0"
    return int(text.strip() or 0)


def read_pools(nodes: list[int]) -> tuple[list[int], dict[int, dict]]:
    sizes, pools = [], {}
    for directory in sorted(glob.glob("/sys/kernel/mm/hugepages/hugepages-*kB")):
        kb = int(directory.rsplit("-", 1)[1][:-2])
        sizes.append(kb)
        per_node = {}
        for node in nodes:
            node_file = f"/sys/devices/system/node/node{node}/hugepages/hugepages-{kb}kB/nr_hugepages"
            if os.path.exists(node_file):
                per_node[node] = read_int(node_file)
        pools[kb] = {
            "total": read_int(f"{directory}/nr_hugepages"),
            "free": read_int(f"{directory}/free_hugepages"),
            "reserved": read_int(f"{directory}/resv_hugepages"),
            "surplus": read_int(f"{directory}/surplus_hugepages"),
            "nodes": per_node,
        }
    return sizes, pools


def read_nodes() -> list[int]:
    nodes = []
    for directory in glob.glob("/sys/devices/system/node/node[0-9]*"):
        nodes.append(int(directory.rsplit("node", 1)[1]))
    return sorted(nodes)


def cpu_flags() -> set[str]:
    for line in (read("/proc/cpuinfo", "") or "").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bootloader(grub_default: str) -> dict:
    """The bootloader configuration this role can manage, or why there is none."""
    if not os.path.exists(grub_default):
        return {"kind": "none", "detail": f"no bootloader configuration found ({grub_default} does not exist)"}
    if shutil.which("update-grub"):
        return {"kind": "grub", "path": grub_default, "regenerate": ["update-grub"]}
    for tool, output in (("grub2-mkconfig", "/boot/grub2/grub.cfg"), ("grub-mkconfig", "/boot/grub/grub.cfg")):
        if shutil.which(tool) and os.path.exists(output):
            return {"kind": "grub", "path": grub_default, "regenerate": [tool, "-o", output]}
    return {
        "kind": "none",
        "detail": f"{grub_default} exists but neither update-grub nor grub2-mkconfig/grub-mkconfig with a grub.cfg "
        "was found to regenerate the boot configuration",
    }


def file_state(path: str) -> dict:
    if os.path.islink(path):
        return {"exists": True, "link": os.readlink(path)}
    if os.path.isfile(path):
        return {"exists": True, "content": read(path, ""), "mode": f"{os.stat(path).st_mode & 0o7777:04o}"}
    return {"exists": False}


def tuned_state() -> dict:
    profile = (read("/etc/tuned/active_profile", "") or "").strip()
    if not profile:
        return {}
    for base in ("/etc/tuned", "/usr/lib/tuned"):
        path = f"{base}/{profile}/tuned.conf"
        text = read(path)
        if text is not None:
            return {"profile": profile, "path": path, "text": text}
    return {"profile": profile}


def read_host(params: dict, paths: dict) -> Host:
    nodes = read_nodes()
    sizes, pools = read_pools(nodes)
    meminfo = parse_meminfo(read("/proc/meminfo", "") or "")
    node_free = {
        n: parse_meminfo(read(f"/sys/devices/system/node/node{n}/meminfo", "") or "").get("MemFree", 0) for n in nodes
    }
    if not nodes:
        node_free = {0: meminfo.get("MemFree", 0)}
    users, groups = {}, {}
    mounts_asked = [m for m in params["mounts"] or [] if isinstance(m, dict)]
    for mount in mounts_asked:
        for key, table, lookup, attr in (
            ("owner", users, pwd.getpwnam, "pw_uid"),
            ("group", groups, grp.getgrnam, "gr_gid"),
        ):
            name = str(mount.get(key, "root"))
            try:
                table[name] = getattr(lookup(name), attr)
            except KeyError:
                pass
    boot = bootloader(paths["grub_default"])
    managed = [paths["sysctl_file"], paths["fstab"]]
    for kb in sizes:
        managed += [
            f"{paths['unit_dir']}/preflight-hugepages-{kb}kB.service",
            f"{paths['unit_dir']}/sysinit.target.wants/preflight-hugepages-{kb}kB.service",
        ]
    if boot.get("path"):
        managed.append(boot["path"])
    sysctl_sources = {}
    for pattern in SYSCTL_GLOBS:
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if real not in {os.path.realpath(p) for p in sysctl_sources} or path == paths["sysctl_file"]:
                sysctl_sources[path] = read(path, "") or ""
    return Host(
        meminfo_kb=meminfo,
        default_size_kb=meminfo.get("Hugepagesize", 2048),
        sizes_kb=sizes,
        pools=pools,
        nodes=nodes or [0],
        node_memfree_kb=node_free,
        buddyinfo=parse_buddyinfo(read("/proc/buddyinfo", "") or ""),
        cpu_flags=cpu_flags(),
        mounts=parse_hugetlbfs_mounts(read("/proc/mounts", "") or ""),
        cmdline=(read("/proc/cmdline", "") or "").strip(),
        fstab_text=read(paths["fstab"]),
        files={path: file_state(path) for path in managed},
        users=users,
        groups=groups,
        bootloader=boot,
        systemd_running=os.path.isdir("/run/systemd/system"),
        sysctl_sources=sysctl_sources,
        tuned=tuned_state(),
        dirs={m["path"].rstrip("/"): os.path.isdir(m["path"]) for m in mounts_asked if isinstance(m.get("path"), str)},
    )


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
            "state_dir": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
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
    }
    # `-e hugepages_count=64` arrives as a string; a word, a float or a boolean stays what it is and is refused.
    for key in ("count", "max_percent"):
        params[key] = as_number(params[key])
    if isinstance(params["per_node"], dict):
        params["per_node"] = {k: as_number(v) for k, v in params["per_node"].items()}
    if params["mounts"] is None:
        params["mounts"] = []
    if not isinstance(params["mounts"], list):
        module.exit_json(changed=False, errors=[f"hugepages_mounts={params['mounts']!r} must be a list of maps"])
    host = read_host(params, paths)
    errors = validate(params, host)
    result = {"changed": False, "errors": errors, "host": host_summary(host)}
    if errors:
        module.exit_json(**result)

    planned = plan(params, host)
    state_file = os.path.join(p["state_dir"], "state.json")
    recorded = None
    if os.path.exists(state_file):
        try:
            recorded = json.loads(read(state_file, "{}") or "{}")
        except ValueError:
            module.fail_json(
                msg=f"{state_file} is not valid JSON: move it away or restore it, then run again", **result
            )
    snap = snapshot(planned, host, recorded)
    result.update(
        plan=planned,
        snapshot=snap,
        backups=backups(snap, recorded),
        record_needed=planned["pending"] and snap != recorded,
        recorded=recorded is not None,
        shortfall=shortfall(planned, host),
    )
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
