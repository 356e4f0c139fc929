"""The plan of roles/hugepages for one host, computed before anything is touched: the kernel files to write,
the files that persist them, the hugetlbfs mounts, the snapshot to record for rollback, and the shortfall
(asked, got, why) when the kernel kept fewer pages than asked."""

from __future__ import annotations

import re

from .hugepages import NODE_DIR, NR_HUGEPAGES, PAGE_KB, SIZE_DIR, SIZES_KB, Host, _node_number, mib, size_label
from .hugepages_persist import (
    cmdline_has,
    cmdline_tokens,
    conflicts,
    edit_fstab,
    edit_grub_cmdline,
    fstab_line,
    mount_options,
    mounted_as_wanted,
    options_text,
    sysctl_content,
    unit_content,
)
from .hugepages_undo import file_entries
from .paths import normal_path
from .undo import RECORD_VERSION


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


def _pool_files(params: dict, host: Host, settings: list[dict]) -> tuple[list[dict], list[dict], bool]:
    """The persistence files of a managed pool, what persists it (for the report), and whether a reboot is due."""
    paths = params["paths"]
    size_kb = SIZES_KB[params["size"]]
    files: list[dict] = []
    persistence: list[dict] = []
    reboot_required = False
    unit_path = f"{paths['unit_dir']}/preflight-hugepages-{size_kb}kB.service"
    wants_path = f"{paths['unit_dir']}/sysinit.target.wants/preflight-hugepages-{size_kb}kB.service"
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
            # core/grub.py: only the hugepagesz=1G/hugepages= pair changes; GrubError for a file it cannot read.
            edit = edit_grub_cmdline(grub_text, bootloader["path"], "1G", tokens)
            files.append({**_file(host, "grub", bootloader["path"], edit["text"]), "cmdline": edit["record"]})
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
    return files, persistence, reboot_required


def _mount_plan(params: dict, host: Host) -> tuple[list[dict], list[str], list[str], dict[str, str | None]]:
    """The requested mounts (as the report shows them), what to mount and unmount, and their fstab lines."""
    mounts, to_mount, to_unmount = [], [], []
    fstab_wanted: dict[str, str | None] = {}
    for mount in params.get("mounts") or []:
        path = normal_path(mount["path"])
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
    return mounts, to_mount, to_unmount, fstab_wanted


def plan(params: dict, host: Host) -> dict:
    """Everything the role will do on this host, computed before anything is touched."""
    paths = params["paths"]
    size_kb = SIZES_KB[params["size"]]
    manage_pool = params.get("count") is not None or params.get("per_node") is not None
    settings = desired_settings(params, host) if manage_pool else []
    files, persistence, reboot_required = _pool_files(params, host, settings) if manage_pool else ([], [], False)
    mounts, to_mount, to_unmount, fstab_wanted = _mount_plan(params, host)
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
        "fstab_wanted": fstab_wanted,
        "fstab_path": paths["fstab"],
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


def snapshot(plan_: dict, host: Host, recorded: dict | None, state_dir_existed: bool = True) -> dict:
    """The rollback record after this run (hugepages_undo.py): an item already recorded keeps its first value,
    and what Preflight writes to each file is added to what it wrote before."""
    recorded = recorded or {}
    settings = dict(recorded.get("settings", {}))
    for setting in plan_["settings"]:
        settings.setdefault(setting["path"], {"name": setting["name"], "value": setting["before"]})
    files = file_entries(plan_, host, recorded.get("files", {}), plan_["fstab_wanted"], plan_["fstab_path"])
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
        "version": RECORD_VERSION,
        "settings": settings,
        "files": files,
        "mounts": mounts,
        "regenerate": (host.bootloader or {}).get("regenerate", []),
        "state_dir_created": recorded.get("state_dir_created", not state_dir_existed),
    }


def backups(snap: dict, recorded: dict | None) -> list[dict]:
    """Files to copy into the state directory now: the GRUB defaults file, recorded for the first time."""
    old = (recorded or {}).get("files", {})
    return [
        {"path": path, "backup": entry["backup"]}
        for path, entry in snap["files"].items()
        if entry.get("role") == "grub" and entry.get("backup") and path not in old
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
