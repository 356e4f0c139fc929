"""Reading a host for roles/hugepages into a `Host`: pools per size and node, meminfo, buddyinfo, hugetlbfs
mounts, fstab, the files the role manages, the bootloader, the sysctl files and tuned profile that set pools
at boot. Every node file is read through `Tree` and the core's readers (facts.py, tuners.py)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil

from .facts import cpu_facts, hugepage_facts
from .hugepages import Host, parse_buddyinfo, parse_hugetlbfs_mounts
from .hugepages_persist import POOL_SYSCTLS
from .paths import normal_path
from .tree import Tree, parse_meminfo
from .tuners import sysctl_assignments, tuned_facts

NODE_GLOB = "/sys/devices/system/node/node[0-9]*"


def read_nodes(tree: Tree) -> list[int]:
    return sorted(int(path.rsplit("node", 1)[1]) for path in tree.glob(NODE_GLOB))


def read_pools(tree: Tree, meminfo: dict[str, int]) -> tuple[list[int], dict[int, dict]]:
    """Page sizes the kernel offers and each pool (total, free, reserved, surplus, per node), as facts.py reads them."""
    sizes, pools = [], {}
    for size in hugepage_facts(tree, meminfo)["sizes"].values():
        kb = size["size_kb"]
        sizes.append(kb)
        pools[kb] = {
            "total": size["total"] or 0,
            "free": size["free"] or 0,
            "reserved": size["rsvd"] or 0,
            "surplus": size["surp"] or 0,
            "nodes": {int(node): counts["total"] or 0 for node, counts in size["nodes"].items()},
        }
    return sizes, pools


def bootloader(tree: Tree, grub_default: str) -> dict:
    """The bootloader configuration this role can manage, or why there is none."""
    if not tree.exists(grub_default):
        return {"kind": "none", "detail": f"no bootloader configuration found ({grub_default} does not exist)"}
    if shutil.which("update-grub"):
        return {"kind": "grub", "path": grub_default, "regenerate": ["update-grub"]}
    for tool, output in (("grub2-mkconfig", "/boot/grub2/grub.cfg"), ("grub-mkconfig", "/boot/grub/grub.cfg")):
        if shutil.which(tool) and tree.exists(output):
            return {"kind": "grub", "path": grub_default, "regenerate": [tool, "-o", output]}
    return {
        "kind": "none",
        "detail": f"{grub_default} exists but neither update-grub nor grub2-mkconfig/grub-mkconfig with a grub.cfg "
        "was found to regenerate the boot configuration",
    }


def file_state(tree: Tree, path: str) -> dict:
    real = tree.real(path)
    if os.path.islink(real):
        return {"exists": True, "link": tree.readlink(path)}
    if os.path.isfile(real):
        return {"exists": True, "content": tree.read(path) or "", "mode": f"{os.stat(real).st_mode & 0o7777:04o}"}
    return {"exists": False}


def tuned_state(tree: Tree) -> dict:
    """The active tuned profile, its own tuned.conf and what it (with its includes) sets; {} without one."""
    profile, settings, files = tuned_facts(tree, [])
    if not profile:
        return {}
    state = {"profile": profile, "settings": settings}
    if files:
        state["path"] = files[-1]
    return state


def owners(mounts: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """uid and gid of the owners and groups the mounts name (those that exist on this host)."""
    users, groups = {}, {}
    for mount in mounts:
        for key, table, lookup, attr in (
            ("owner", users, pwd.getpwnam, "pw_uid"),
            ("group", groups, grp.getgrnam, "gr_gid"),
        ):
            name = str(mount.get(key, "root"))
            try:
                table[name] = getattr(lookup(name), attr)
            except KeyError:
                pass
    return users, groups


def managed_paths(paths: dict, sizes: list[int], boot: dict) -> list[str]:
    managed = [paths["sysctl_file"], paths["fstab"]]
    for kb in sizes:
        managed += [
            f"{paths['unit_dir']}/preflight-hugepages-{kb}kB.service",
            f"{paths['unit_dir']}/sysinit.target.wants/preflight-hugepages-{kb}kB.service",
        ]
    if boot.get("path"):
        managed.append(boot["path"])
    return managed


def read_host(tree: Tree, params: dict, paths: dict) -> Host:
    nodes = read_nodes(tree)
    meminfo = parse_meminfo(tree.read("/proc/meminfo"))
    sizes, pools = read_pools(tree, meminfo)
    node_free = {
        n: parse_meminfo(tree.read(f"/sys/devices/system/node/node{n}/meminfo")).get("MemFree", 0) for n in nodes
    }
    if not nodes:
        node_free = {0: meminfo.get("MemFree", 0)}
    mounts_asked = [m for m in params["mounts"] or [] if isinstance(m, dict)]
    users, groups = owners(mounts_asked)
    boot = bootloader(tree, paths["grub_default"])
    flags = cpu_facts(tree)["flags"]
    return Host(
        meminfo_kb=meminfo,
        default_size_kb=meminfo.get("Hugepagesize", 2048),
        sizes_kb=sizes,
        pools=pools,
        nodes=nodes or [0],
        node_memfree_kb=node_free,
        buddyinfo=parse_buddyinfo(tree.read("/proc/buddyinfo")),
        cpu_flags={flag for flag, present in flags.items() if present},
        mounts=parse_hugetlbfs_mounts(tree.read("/proc/mounts")),
        cmdline=(tree.read("/proc/cmdline") or "").strip(),
        fstab_text=tree.read(paths["fstab"]),
        files={path: file_state(tree, path) for path in managed_paths(paths, sizes, boot)},
        users=users,
        groups=groups,
        bootloader=boot,
        systemd_running=tree.isdir("/run/systemd/system"),
        sysctl_settings=sysctl_assignments(tree, POOL_SYSCTLS),
        tuned=tuned_state(tree),
        dirs={normal_path(m["path"]): tree.isdir(m["path"]) for m in mounts_asked if isinstance(m.get("path"), str)},
    )
