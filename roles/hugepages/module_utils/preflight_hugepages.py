"""Hugepage pool planning for roles/hugepages: plain Python, no Ansible needed to test it.

The role's module (library/hugepages_state.py) reads the host into a `Host`, and `plan()` turns the
requested settings into: the errors that make the request impossible on that host (every one of them,
before anything changes), the kernel files to write, the files that persist them, the hugetlbfs mounts,
the conflicts with other tuners, and a snapshot of what would be replaced (for rollback).
`shortfall()` explains a pool the kernel filled only in part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
    sysctl_sources: dict[str, str] = field(default_factory=dict)  # path -> text, every sysctl config file
    tuned: dict = field(default_factory=dict)  # {"profile", "path", "text"} when tuned has an active profile
    dirs: dict[str, bool] = field(default_factory=dict)  # mount point -> is an existing directory


# ---------------------------------------------------------------------------------------------- parsing


def parse_meminfo(text: str) -> dict[str, int]:
    """'/proc/meminfo' or a node's meminfo -> {'MemTotal': kB, 'HugePages_Total': pages, ...}."""
    values = {}
    for line in text.splitlines():
        line = re.sub(r"^Node \d+ ", "", line.strip())
        if ":" not in line:
            continue
        key, rest = line.split(":", 1)
        words = rest.split()
        if words and words[0].isdigit():
            values[key.strip()] = int(words[0])
    return values


def parse_buddyinfo(text: str) -> dict[int, dict[str, list[int]]]:
    """'Node 0, zone Normal 2 3 0 ...' -> {0: {'Normal': [2, 3, 0, ...]}} (free blocks per order)."""
    nodes: dict[int, dict[str, list[int]]] = {}
    for line in text.splitlines():
        match = re.match(r"Node\s+(\d+),\s+zone\s+(\S+)\s+(.*)$", line.strip())
        if match:
            nodes.setdefault(int(match.group(1)), {})[match.group(2)] = [int(n) for n in match.group(3).split()]
    return nodes


def parse_hugetlbfs_mounts(text: str) -> list[dict]:
    """hugetlbfs lines of /proc/mounts -> [{'path': '/dev/hugepages', 'options': {'pagesize': '2M', ...}}]."""
    mounts = []
    for line in text.splitlines():
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


# ---------------------------------------------------------------------------------------------- planning


def pool_paths(size_kb: int, default_size_kb: int) -> dict:
    """Where a size's total lives: vm.nr_hugepages for the default size, sysfs otherwise."""
    if size_kb == default_size_kb:
        return {"name": "vm.nr_hugepages", "path": NR_HUGEPAGES}
    label = f"hugepages-{size_kb}kB"
    return {"name": f"{label}/nr_hugepages", "path": SIZE_DIR.format(kb=size_kb) + "/nr_hugepages"}


def desired_settings(params: dict, host: Host) -> list[dict]:
    """The kernel files to write: [{name, path, desired, before}] (empty when the pool is left alone)."""
    size_kb = SIZES_KB[params["size"]]
    pool = host.pools.get(size_kb, {"total": 0, "nodes": {}})
    if params.get("count") is not None:
        where = pool_paths(size_kb, host.default_size_kb)
        return [{**where, "desired": params["count"], "before": pool.get("total", 0)}]
    settings = []
    for key, value in sorted((params.get("per_node") or {}).items(), key=lambda kv: _node_number(kv[0])):
        node = _node_number(key)
        settings.append(
            {
                "name": f"node{node} hugepages-{size_kb}kB/nr_hugepages",
                "path": NODE_DIR.format(node=node, kb=size_kb) + "/nr_hugepages",
                "desired": value,
                "before": pool.get("nodes", {}).get(node, 0),
            }
        )
    return settings


def mount_options(mount: dict, size: str, host: Host) -> dict[str, str]:
    """The options a managed hugetlbfs mount gets, in fstab order."""
    kb = pagesize_kb(mount.get("pagesize") or size)
    return {
        "pagesize": size_label(kb),
        "mode": mount.get("mode", "0755"),
        "uid": str(host.users.get(str(mount.get("owner", "root")), 0)),
        "gid": str(host.groups.get(str(mount.get("group", "root")), 0)),
    }


def options_text(options: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


def mounted_as_wanted(current: dict[str, str], wanted: dict[str, str]) -> bool:
    """/proc/mounts shows mode=770 and drops uid=0/gid=0; compare meanings, not spellings."""
    if pagesize_kb(current.get("pagesize", "")) != pagesize_kb(wanted["pagesize"]):
        return False
    if int(current.get("mode", "755"), 8) != int(wanted["mode"], 8):
        return False
    return current.get("uid", "0") == wanted["uid"] and current.get("gid", "0") == wanted["gid"]


def fstab_line(path: str, options: dict[str, str]) -> str:
    return f"hugetlbfs {path} hugetlbfs {options_text(options)} 0 0"


def edit_fstab(text: str, wanted: dict[str, str | None]) -> str:
    """Put one hugetlbfs line per managed mount point (None: remove it), leaving every other byte alone."""
    lines = text.splitlines(keepends=True)
    placed: set[str] = set()
    out = []
    for line in lines:
        fields = line.split()
        is_entry = len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "hugetlbfs"
        path = unescape_mount_path(fields[1]) if is_entry else None
        if path in wanted:
            if wanted[path] is not None and path not in placed:
                ending = "\n" if line.endswith("\n") else ""
                out.append(wanted[path] + ending)
            placed.add(path)
            continue
        out.append(line)
    missing = [line for path, line in wanted.items() if line is not None and path not in placed]
    if missing:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.extend(line + "\n" for line in missing)
    return "".join(out)


def sysctl_content(count: int) -> str:
    return (
        f"{MANAGED_BY}\n"
        "# Reserved 2 MiB hugepages, applied at boot by systemd-sysctl (or sysctl --system).\n"
        f"vm.nr_hugepages = {count}\n"
    )


def unit_content(settings: list[dict], size_kb: int) -> str:
    """A oneshot unit that writes the pool files early at boot, before memory fragments."""
    lines = [
        MANAGED_BY,
        "[Unit]",
        f"Description=Preflight: reserve {size_label(size_kb)} hugepages at boot",
        "DefaultDependencies=no",
        "After=systemd-sysctl.service",
        "Before=sysinit.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
    ]
    for setting in settings:
        lines.append(f"ExecStart=/bin/sh -c 'echo {setting['desired']} > {setting['path']}'")
    lines += ["", "[Install]", "WantedBy=sysinit.target", ""]
    return "\n".join(lines)


def cmdline_tokens(params: dict) -> list[str]:
    """Kernel command line for 1 GiB pages: 'hugepagesz=1G hugepages=N' (or N per node as '0:N,1:M')."""
    if params.get("count") is not None:
        amount = str(params["count"])
    else:
        pairs = sorted((_node_number(k), v) for k, v in params["per_node"].items())
        amount = ",".join(f"{node}:{value}" for node, value in pairs)
    return [f"hugepagesz={params['size']}", f"hugepages={amount}"]


def edit_grub_cmdline(text: str, size: str, tokens: list[str] | None) -> str:
    """Replace (or drop, tokens=None) the 'hugepagesz=SIZE hugepages=N' pair in GRUB_CMDLINE_LINUX."""
    pattern = re.compile(r'^(GRUB_CMDLINE_LINUX=)(["\']?)(.*?)\2[ \t]*$', re.M)
    match = pattern.search(text)
    if match is None:
        if tokens is None:
            return text
        prefix = "" if text.endswith("\n") or not text else "\n"
        return text + prefix + f'GRUB_CMDLINE_LINUX="{" ".join(tokens)}"\n'
    words = match.group(3).split()
    kept, index = [], 0
    wanted_size = pagesize_kb(size)
    while index < len(words):
        word = words[index]
        if word.startswith("hugepagesz=") and pagesize_kb(word.split("=", 1)[1]) == wanted_size:
            index += 1
            if index < len(words) and words[index].startswith("hugepages="):
                index += 1
            continue
        kept.append(word)
        index += 1
    new_words = kept + (tokens or [])
    quote = match.group(2) or '"'
    replacement = f"{match.group(1)}{quote}{' '.join(new_words)}{quote}"
    return text[: match.start()] + replacement + text[match.end() :]


def cmdline_has(cmdline: str, tokens: list[str]) -> bool:
    words = cmdline.split()
    return any(words[i : i + len(tokens)] == tokens for i in range(len(words)))


def conflicts(params: dict, host: Host, sysctl_file: str) -> list[dict]:
    """Other places that set hugepages at boot: reported, never fought."""
    found = []
    ours = sysctl_file.rsplit("/", 1)[-1]
    for path, text in sorted(host.sysctl_sources.items()):
        if path == sysctl_file:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip().replace("/", ".") in ("vm.nr_hugepages", "vm.nr_hugepages_mempolicy"):
                after = path.rsplit("/", 1)[-1] > ours or path.endswith("/sysctl.conf")
                effect = (
                    "applied after Preflight's file at boot: its value wins"
                    if after
                    else "applied before Preflight's file at boot: Preflight's value wins"
                )
                found.append({"source": path, "setting": key.strip(), "value": value.strip(), "effect": effect})
    words = [w for w in host.cmdline.split() if w.split("=", 1)[0] in CMDLINE_KEYS]
    if words:
        found.append(
            {
                "source": "/proc/cmdline",
                "setting": "kernel command line",
                "value": " ".join(words),
                "effect": "the kernel reserves these pages at boot; Preflight's sysctl or unit then resizes the pool",
            }
        )
    if host.tuned.get("text") and re.search(r"nr_hugepages|hugepages", host.tuned["text"]):
        found.append(
            {
                "source": host.tuned.get("path", "tuned"),
                "setting": f"tuned profile {host.tuned.get('profile')}",
                "value": "sets hugepages",
                "effect": "tuned re-applies its value when it starts; stop it managing hugepages or align the values",
            }
        )
    return found


def plan(params: dict, host: Host) -> dict:
    """Everything the role will do on this host, computed before anything is touched."""
    paths = params["paths"]
    size_kb = SIZES_KB[params["size"]]
    manage_pool = params.get("count") is not None or params.get("per_node") is not None
    settings = desired_settings(params, host) if manage_pool else []
    files: list[dict] = []
    persistence: list[dict] = []
    reboot_required = False
    unit_path = f"{paths['unit_dir']}/preflight-hugepages-{size_kb}kB.service"
    wants_path = f"{paths['unit_dir']}/sysinit.target.wants/preflight-hugepages-{size_kb}kB.service"

    if manage_pool:
        uses_sysctl = params.get("count") is not None and size_kb == host.default_size_kb
        bootloader = host.bootloader or {"kind": "none", "detail": "no bootloader configuration found"}
        uses_cmdline = size_kb == SIZES_KB["1G"] and bootloader.get("kind") == "grub"
        uses_unit = not uses_sysctl and not uses_cmdline
        if size_kb == host.default_size_kb:
            files.append(
                _file(host, "sysctl", paths["sysctl_file"], sysctl_content(params["count"]) if uses_sysctl else None)
            )
        files.append(_file(host, "unit", unit_path, unit_content(settings, size_kb) if uses_unit else None))
        files.append(_link(host, "unit_wants", wants_path, unit_path if uses_unit else None))
        if uses_sysctl:
            persistence.append({"method": "sysctl", "path": paths["sysctl_file"], "detail": "vm.nr_hugepages at boot"})
        if size_kb == SIZES_KB["1G"]:
            tokens = cmdline_tokens(params)
            if uses_cmdline:
                grub_text = host.files.get(bootloader["path"], {}).get("content") or ""
                files.append(_file(host, "grub", bootloader["path"], edit_grub_cmdline(grub_text, "1G", tokens)))
                reboot_required = not cmdline_has(host.cmdline, tokens)
                persistence.append(
                    {
                        "method": "kernel_cmdline",
                        "path": bootloader["path"],
                        "detail": f"{' '.join(tokens)} in GRUB_CMDLINE_LINUX, then {' '.join(bootloader['regenerate'])}"
                        + ("; takes effect at the next boot: reboot needed" if reboot_required else ""),
                    }
                )
            else:
                persistence.append(
                    {
                        "method": "kernel_cmdline",
                        "path": None,
                        "state": "unavailable",
                        "detail": f"{bootloader.get('detail')}: 1 GiB pages cannot be reserved on the kernel command "
                        "line of this host, which is where they are reliable",
                    }
                )
        if uses_unit:
            detail = "writes the pool files early at boot (after systemd-sysctl)"
            if size_kb == SIZES_KB["1G"]:
                detail += "; fallback for 1 GiB pages: at boot time memory may already be too fragmented"
            persistence.append({"method": "systemd", "path": unit_path, "detail": detail})

    mounts, to_mount, to_unmount = [], [], []
    fstab_wanted: dict[str, str | None] = {}
    for mount in params.get("mounts") or []:
        path = mount["path"].rstrip("/") or "/"
        current = next((m for m in host.mounts if m["path"] == path), None)
        if mount.get("state", "mounted") == "absent":
            fstab_wanted[path] = None
            if current:
                to_unmount.append(path)
            mounts.append({"path": path, "state": "absent", "options": None, "mounted": current is not None})
            continue
        options = mount_options(mount, params["size"], host)
        fstab_wanted[path] = fstab_line(path, options)
        entry = {
            "path": path,
            "state": "mounted",
            "options": options_text(options),
            "mode": options["mode"],
            "owner": str(mount.get("owner", "root")),
            "group": str(mount.get("group", "root")),
            "mounted": current is not None,
            "dir_exists": host.dirs.get(path, False),
        }
        if current is None:
            to_mount.append(path)
        elif not mounted_as_wanted(current["options"], options):
            to_unmount.append(path)
            to_mount.append(path)
        mounts.append(entry)
    if fstab_wanted:
        files.append(_file(host, "fstab", paths["fstab"], edit_fstab(host.fstab_text or "", fstab_wanted)))

    pool_changes = [s for s in settings if s["desired"] != s["before"]]
    file_changes = [f for f in files if f["changed"]]
    return {
        "manage_pool": manage_pool,
        "size_kb": size_kb,
        "settings": settings,
        "files": files,
        "persistence": persistence,
        "mounts": mounts,
        "to_mount": to_mount,
        "to_unmount": to_unmount,
        "reboot_required": reboot_required,
        "pending": bool(pool_changes or file_changes or to_mount or to_unmount),
        "conflicts": conflicts(params, host, paths["sysctl_file"]) if manage_pool else [],
        "pool": host.pools.get(size_kb, {}),
    }


def _file(host: Host, role: str, path: str, content: str | None) -> dict:
    current = host.files.get(path, {"exists": False})
    now = current.get("content") if current.get("exists") else None
    return {
        "role": role,
        "kind": "file",
        "path": path,
        "state": "present" if content is not None else "absent",
        "content": content,
        "existed": bool(current.get("exists")),
        "mode": current.get("mode") or "0644",
        "changed": content != now,
    }


def _link(host: Host, role: str, path: str, target: str | None) -> dict:
    current = host.files.get(path, {"exists": False})
    now = current.get("link") if current.get("exists") else None
    return {
        "role": role,
        "kind": "link",
        "path": path,
        "state": "link" if target is not None else "absent",
        "target": target,
        "existed": bool(current.get("exists")),
        "changed": target != now,
    }


# ---------------------------------------------------------------------------------------------- record


def snapshot(plan_: dict, host: Host, recorded: dict | None) -> dict:
    """The previous state to keep for rollback; an item already recorded keeps its first value."""
    recorded = recorded or {}
    settings = dict(recorded.get("settings", {}))
    for setting in plan_["settings"]:
        settings.setdefault(setting["path"], {"name": setting["name"], "value": setting["before"]})
    files = dict(recorded.get("files", {}))
    for item in plan_["files"]:
        if item["path"] in files:
            continue
        current = host.files.get(item["path"], {"exists": False})
        entry = {"kind": item["kind"], "existed": bool(current.get("exists")), "role": item["role"]}
        if item["kind"] == "link":
            entry["target"] = current.get("link")
        elif current.get("exists"):
            entry["backup"] = _backup_name(item["path"])
        files[item["path"]] = entry
    mounts = dict(recorded.get("mounts", {}))
    for mount in plan_["mounts"]:
        if mount["path"] in mounts:
            continue
        current = next((m for m in host.mounts if m["path"] == mount["path"]), None)
        mounts[mount["path"]] = {
            "was_mounted": current is not None,
            "options": current["raw"] if current else None,
            "dir_existed": host.dirs.get(mount["path"], False),
        }
    return {
        "version": 1,
        "settings": settings,
        "files": files,
        "mounts": mounts,
        "regenerate": (host.bootloader or {}).get("regenerate", []),
    }


def _backup_name(path: str) -> str:
    return "files/" + path.strip("/").replace("/", "__")


def backups(snap: dict, recorded: dict | None) -> list[dict]:
    """Files to copy into the state directory now: those recorded for the first time and still existing."""
    old = (recorded or {}).get("files", {})
    return [
        {"path": path, "backup": entry["backup"]}
        for path, entry in snap["files"].items()
        if entry.get("backup") and path not in old
    ]


# ---------------------------------------------------------------------------------------------- shortfall


def free_blocks(orders: list[int], order: int) -> int:
    """Free blocks of 2**order pages that the buddy allocator holds in blocks of that order or larger."""
    return sum(count << (o - order) for o, count in enumerate(orders) if o >= order)


def shortfall(plan_: dict, host: Host) -> dict | None:
    """asked/got/why when the kernel kept fewer pages than asked; None when it kept them all."""
    short = []
    for setting in plan_["settings"]:
        got = _current_value(setting, host, plan_["size_kb"])
        if got < setting["desired"]:
            short.append({**setting, "got": got})
    if not short:
        return None
    size_kb = plan_["size_kb"]
    order = (size_kb // PAGE_KB).bit_length() - 1
    asked = sum(s["desired"] for s in short)
    got = sum(s["got"] for s in short)
    reasons = []
    blocks_total: int | None = 0
    for node in host.nodes:
        zones = host.buddyinfo.get(node, {})
        max_order = max((len(orders) for orders in zones.values()), default=0) - 1
        free_kb = host.node_memfree_kb.get(node, 0)
        if order <= max_order:
            blocks = sum(free_blocks(orders, order) for orders in zones.values())
            blocks_total = None if blocks_total is None else blocks_total + blocks
            contiguous = f"{blocks} free {size_label(size_kb)} blocks"
        else:
            blocks_total = None
            largest = sum(orders[max_order] for orders in zones.values() if len(orders) > max_order)
            contiguous = (
                f"{size_label(size_kb)} pages need {mib(size_kb)} MiB of contiguous memory and buddyinfo only tracks "
                f"blocks up to {mib((1 << max_order) * PAGE_KB)} MiB ({largest} free)"
            )
        reasons.append(f"node{node}: {mib(free_kb)} MiB free, {contiguous}")
    missing = asked - got
    missing_kb = missing * size_kb
    free_total_kb = sum(host.node_memfree_kb.get(n, 0) for n in host.nodes) or host.meminfo_kb.get("MemFree", 0)
    if free_total_kb < missing_kb:
        cause = f"not enough free memory: {mib(missing_kb)} MiB more needed, {mib(free_total_kb)} MiB free"
        advice = "Reserve the pages at boot (the persisted setting does that on the next boot) or free memory"
    elif blocks_total is None:
        cause = "memory too fragmented: the kernel found no more free contiguous ranges of that size"
        advice = "Reserve them on the kernel command line, which allocates them before memory fragments"
    elif blocks_total < missing:
        cause = f"memory too fragmented: {missing} more pages needed, {blocks_total} free contiguous blocks"
        advice = "Reserve the pages at boot (the persisted setting does that on the next boot) or compact memory"
    else:
        cause = (
            f"neither free memory nor fragmentation explains it ({blocks_total} free contiguous blocks for "
            f"{missing} missing pages): another writer may have changed the pool since (a tuner, a boot unit, "
            "a concurrent run)"
        )
        advice = "Look for that writer"
    why = f"{cause} ({'; '.join(reasons)}, from /proc/buddyinfo). {advice}, then run again"
    return {
        "asked": asked,
        "got": got,
        "why": why,
        "settings": [{"name": s["name"], "path": s["path"], "asked": s["desired"], "got": s["got"]} for s in short],
    }


def _current_value(setting: dict, host: Host, size_kb: int) -> int:
    pool = host.pools.get(size_kb, {})
    match = re.search(r"/node(\d+)/", setting["path"])
    if match:
        return pool.get("nodes", {}).get(int(match.group(1)), 0)
    return pool.get("total", 0)
