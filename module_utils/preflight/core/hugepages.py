"""Hugepages for roles/hugepages: what a host offers (`Host`), the kernel's spellings of sizes and mounts,
and every reason a request cannot be applied on that host (`validate`), before anything changes.

The role's module (roles/hugepages/library/hugepages_state.py) reads the host with hugepages_read.py;
hugepages_plan.py turns a valid request into the files, mounts and snapshot; hugepages_persist.py writes
the contents of the persistence files; hugepages_verify.py decides what the read-back proves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .paths import normal_path, refused_dir, state_dir_errors

SIZES_KB = {"2M": 2048, "1G": 1048576}
PAGE_KB = 4
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"
SIZE_DIR = "/sys/kernel/mm/hugepages/hugepages-{kb}kB"
NODE_DIR = "/sys/devices/system/node/node{node}/hugepages/hugepages-{kb}kB"
MANAGED_BY = "# Managed by Preflight (roles/hugepages). Undo with: ansible-playbook playbooks/rollback.yml"
MODE_RE = re.compile(r"^[0-7]{3,4}$")
CMDLINE_KEYS = ("hugepagesz", "hugepages", "default_hugepagesz")


@dataclass
class Host:
    """What the planner needs to know about a host, read by the module (or written by a test)."""

    meminfo_kb: dict[str, int]
    default_size_kb: int
    sizes_kb: list[int]
    pools: dict[int, dict]  # size_kb -> {"total": n, "free": n, "nodes": {node: n}}
    nodes: list[int]
    node_memfree_kb: dict[int, int]
    buddyinfo: dict[int, dict[str, list[int]]]
    cpu_flags: set[str]
    mounts: list[dict]  # hugetlbfs entries of /proc/mounts: {"path", "options": {...}}
    cmdline: str
    fstab_text: str | None
    files: dict[str, dict]  # path -> {"exists", "content" (text) or "link" (symlink target)}
    users: dict[str, int] = field(default_factory=dict)  # owner name -> uid (only those asked about)
    groups: dict[str, int] = field(default_factory=dict)
    bootloader: dict = field(default_factory=dict)  # {"kind": "grub"|"none", "path", "regenerate", "detail"}
    systemd_running: bool = False
    # Every hugepage sysctl applied at boot: [{"path", "key", "value"}] (core/tuners.py sysctl_assignments).
    sysctl_settings: list[dict] = field(default_factory=list)
    # The active tuned profile: {"profile", "path", "settings"} (core/tuners.py tuned_facts), {} without one.
    tuned: dict = field(default_factory=dict)
    dirs: dict[str, bool] = field(default_factory=dict)  # mount point -> is an existing directory


# ---------------------------------------------------------------------------------------------- parsing


def parse_buddyinfo(text: str | None) -> dict[int, dict[str, list[int]]]:
    """'Node 0, zone Normal 2 3 0 ...' -> {0: {'Normal': [2, 3, 0, ...]}} (free blocks per order)."""
    nodes: dict[int, dict[str, list[int]]] = {}
    for line in (text or "").splitlines():
        match = re.match(r"Node\s+(\d+),\s+zone\s+(\S+)\s+(.*)$", line.strip())
        if match:
            nodes.setdefault(int(match.group(1)), {})[match.group(2)] = [int(n) for n in match.group(3).split()]
    return nodes


def parse_hugetlbfs_mounts(text: str | None) -> list[dict]:
    """hugetlbfs lines of /proc/mounts -> [{'path': '/dev/hugepages', 'options': {'pagesize': '2M', ...}}]."""
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "hugetlbfs":
            mounts.append(
                {"path": unescape_mount_path(fields[1]), "options": parse_options(fields[3]), "raw": fields[3]}
            )
    return mounts


def unescape_mount_path(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        options[key] = value
    return options


def size_label(size_kb: int) -> str:
    for label, kb in SIZES_KB.items():
        if kb == size_kb:
            return label
    if size_kb % 1048576 == 0:
        return f"{size_kb // 1048576}G"
    if size_kb % 1024 == 0:
        return f"{size_kb // 1024}M"
    return f"{size_kb}K"


def pagesize_kb(text: str) -> int | None:
    """'2M', '2048k', '1G', '1073741824' (bytes) -> size in kB; None when unreadable."""
    match = re.fullmatch(r"(\d+)([KkMmGg]?)[Bb]?", str(text).strip())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2).upper()
    return {"K": number, "M": number * 1024, "G": number * 1048576, "": number // 1024}[unit]


def mib(kb: int) -> int:
    return kb // 1024


# ---------------------------------------------------------------------------------------------- validation


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _node_number(key) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    text = str(key).strip()
    text = text[4:] if text.startswith("node") else text
    return int(text) if text.isdigit() else None


def validate(params: dict, host: Host) -> list[str]:
    """Every reason the request cannot be applied on this host, as operator-readable sentences."""
    errors: list[str] = []
    count, per_node, size = params.get("count"), params.get("per_node"), params.get("size")
    size_kb = SIZES_KB.get(size)
    offered = ", ".join(size_label(kb) for kb in sorted(host.sizes_kb)) or "none"
    if size_kb is None:
        errors.append(f"hugepages_size={size!r} is not a page size the role manages; allowed: 2M, 1G")
    elif size_kb not in host.sizes_kb:
        errors.append(f"hugepages_size={size}: this kernel offers no {size} pool (page sizes offered: {offered})")
    elif size == "1G" and "pdpe1gb" not in host.cpu_flags:
        errors.append("hugepages_size=1G: this CPU lacks the pdpe1gb flag, so it has no 1 GiB pages; use 2M")

    percent = params.get("max_percent")
    if not (_is_count(percent) and 1 <= percent <= 100):
        errors.append(f"hugepages_max_percent_of_memory={percent!r} must be a whole number from 1 to 100")
        percent = None

    nodes_text = ", ".join(str(n) for n in host.nodes) or "none"
    wanted_nodes: dict[int, int] = {}
    if count is not None and per_node is not None:
        errors.append(
            f"hugepages_count={count!r} and hugepages_per_node={per_node!r} are both set: give one of them "
            "(a total, or pages per NUMA node), and null for the other"
        )
    if count is not None and not _is_count(count):
        errors.append(f"hugepages_count={count!r} must be a whole number >= 0, or null to leave hugepages alone")
    if per_node is not None:
        if not isinstance(per_node, dict) or not per_node:
            errors.append(
                f"hugepages_per_node={per_node!r} must be a map of NUMA node number to page count, e.g. {{0: 512}}"
            )
        else:
            for key, value in per_node.items():
                node = _node_number(key)
                if node is None:
                    errors.append(
                        f"hugepages_per_node key {key!r} is not a NUMA node number; this host's nodes: {nodes_text}"
                    )
                elif node not in host.nodes:
                    errors.append(f"hugepages_per_node names node {node}, but this host's NUMA nodes are: {nodes_text}")
                if not _is_count(value):
                    errors.append(f"hugepages_per_node[{key}]={value!r} must be a whole number >= 0")
                if node is not None and _is_count(value):
                    wanted_nodes[node] = value

    if size_kb in host.sizes_kb and percent is not None and not errors:
        errors.extend(_cap_errors(params, host, size_kb, percent, wanted_nodes))
    errors.extend(_mount_errors(params, host))
    if "state_dirs" in params:
        errors.extend(state_dir_errors(params["state_dirs"], "hugepages_state_dir"))
    return errors


def _cap_errors(params: dict, host: Host, size_kb: int, percent: int, wanted_nodes: dict[int, int]) -> list[str]:
    count = params.get("count")
    if count is not None:
        pages, variable, value = count, "hugepages_count", str(count)
    elif wanted_nodes:
        current = host.pools.get(size_kb, {}).get("nodes", {})
        pages = sum(wanted_nodes.get(n, current.get(n, 0)) for n in host.nodes)
        variable, value = "hugepages_per_node", str(params.get("per_node"))
        value = "{" + ", ".join(f"{n}: {c}" for n, c in sorted(wanted_nodes.items())) + "}"
    else:
        return []
    mem_total_kb = host.meminfo_kb.get("MemTotal", 0)
    others_kb = sum(pool.get("total", 0) * kb for kb, pool in host.pools.items() if kb != size_kb)
    asked_kb = pages * size_kb
    if mem_total_kb <= 0:
        return ["cannot read MemTotal from /proc/meminfo, so the hugepages cap cannot be checked"]
    share = 100.0 * (asked_kb + others_kb) / mem_total_kb
    limit_kb = mem_total_kb * percent // 100
    if asked_kb + others_kb <= limit_kb:
        return []
    max_pages = max(0, (limit_kb - others_kb) // size_kb)
    label = size_label(size_kb)
    return [
        f"{variable}={value} asks for {mib(asked_kb)} MiB of {label} pages; with {mib(others_kb)} MiB already "
        f"reserved in other page sizes that is {share:.1f}% of this host's MemTotal of {mib(mem_total_kb)} MiB, "
        f"above hugepages_max_percent_of_memory={percent} (at most {max_pages} pages of {label}). "
        f"Lower {variable} or raise hugepages_max_percent_of_memory."
    ]


def _mount_errors(params: dict, host: Host) -> list[str]:
    errors = []
    for index, mount in enumerate(params.get("mounts") or []):
        where = f"hugepages_mounts[{index}]"
        if not isinstance(mount, dict):
            errors.append(f"{where}={mount!r} must be a map with at least 'path'")
            continue
        path = mount.get("path")
        if not isinstance(path, str) or not path.startswith("/") or re.search(r"\s", path) or path == "/":
            errors.append(f"{where}.path={path!r} must be an absolute directory path without spaces (not /)")
        elif refused_dir(normal_path(path)):
            errors.append(
                f"{where}.path={path!r} is {normal_path(path)} once normalised, {refused_dir(normal_path(path))}: "
                "hugetlbfs mounted there would hide what it holds, now and (through fstab) at every boot; "
                "give it a directory of its own, e.g. /dev/hugepages or /mnt/hugepages"
            )
        mode = mount.get("mode")
        if not isinstance(mode, str) or not MODE_RE.match(mode):
            hint = " (quote it, e.g. '0755': unquoted YAML reads it as a number)" if isinstance(mode, int) else ""
            errors.append(f"{where}.mode={mode!r} must be an octal mode string like '0755' or '1770'{hint}")
        pagesize = mount.get("pagesize") or params.get("size")
        kb = pagesize_kb(pagesize) if pagesize else None
        if kb is None or kb not in host.sizes_kb:
            offered = ", ".join(size_label(k) for k in sorted(host.sizes_kb))
            errors.append(f"{where}.pagesize={pagesize!r} is not a page size this kernel offers ({offered})")
        for key, table in (("owner", host.users), ("group", host.groups)):
            name = mount.get(key)
            if name is not None and str(name) not in table:
                errors.append(f"{where}.{key}={name!r}: no such {'user' if key == 'owner' else 'group'} on this host")
        if mount.get("state", "mounted") not in ("mounted", "absent"):
            errors.append(f"{where}.state={mount.get('state')!r} must be one of: mounted, absent")
    return errors
