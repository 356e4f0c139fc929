"""Node facts: what a GPU inference node's kernel, memory, allocator and GPUs look like right now.

Plain Python (stdlib; pynvml only when present) so it runs on any managed node and can be tested
without Ansible. Every path is read under ``root``: "/" on a live node, a recorded copy of /proc,
/sys and /etc in tests. Nothing here writes anything.

A file that is absent or unreadable gives ``None`` for the values it holds and a ``reason`` that
names the file, never an exception: a node missing a feature is a fact worth reporting.
"""

from __future__ import annotations

import os
import re

from .catalog import FACTS_SCHEMA_VERSION, THP_DIR
from .cmdline import cmdline_facts
from .gpus import gpu_facts
from .sysfs import parse_choices
from .tree import Tree, _int, _reason, parse_cpulist, parse_meminfo
from .tuners import tuner_facts

HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"
NODE_DIR = "/sys/devices/system/node"
CPU_POSSIBLE = "/sys/devices/system/cpu/possible"
NODE_POSSIBLE = "/sys/devices/system/node/possible"
PCI_DEVICES_DIR = "/sys/bus/pci/devices"

# HugePages_* are page counts, not kB; every other key is in kB, as /proc/meminfo prints them.
MEMINFO_KEYS = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Cached",
    "AnonHugePages",
    "ShmemHugePages",
    "FileHugePages",
    "Hugetlb",
    "HugePages_Total",
    "HugePages_Free",
    "HugePages_Rsvd",
    "HugePages_Surp",
    "Hugepagesize",
)

LD_SO_PRELOAD = "/etc/ld.so.preload"
LIB_DIRS = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
ALLOCATOR_GLOBS = {"jemalloc_paths": "libjemalloc.so*", "tcmalloc_paths": "libtcmalloc*.so*"}

CPU_FLAGS = (
    "pse",
    "pdpe1gb",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "bf16",
)


def thp_facts(tree: Tree) -> dict:
    if not tree.isdir(THP_DIR):
        return {
            "supported": False,
            "reason": f"{THP_DIR} is absent: this kernel was built without transparent hugepage support",
            "enabled": None,
            "enabled_choices": [],
            "defrag": None,
            "defrag_choices": [],
            "khugepaged_defrag": None,
            "shmem_enabled": None,
            "shmem_enabled_choices": [],
            "hpage_pmd_size_kb": None,
            "sizes": {},
        }
    problems: list[str] = []
    enabled, enabled_choices = parse_choices(tree.read(f"{THP_DIR}/enabled", problems))
    defrag, defrag_choices = parse_choices(tree.read(f"{THP_DIR}/defrag", problems))
    shmem, shmem_choices = parse_choices(tree.read(f"{THP_DIR}/shmem_enabled", problems))
    pmd_bytes = _int(tree.read(f"{THP_DIR}/hpage_pmd_size", problems))
    khugepaged_defrag = _int(tree.read(f"{THP_DIR}/khugepaged/defrag", problems))
    sizes = {}
    # Multi-size THP (Linux 6.8+): one directory per size; sizes offered to shmem only have no 'enabled'.
    size_dirs = [name for name in tree.listdir(THP_DIR) or () if re.fullmatch(r"hugepages-\d+kB", name)]
    for name in sorted(size_dirs, key=lambda n: int(n[len("hugepages-") : -len("kB")])):
        base = f"{THP_DIR}/{name}"
        size_enabled, size_choices = parse_choices(tree.read(f"{base}/enabled"))
        size_shmem, size_shmem_choices = parse_choices(tree.read(f"{base}/shmem_enabled"))
        sizes[name[len("hugepages-") :]] = {
            "size_kb": int(name[len("hugepages-") : -len("kB")]),
            "enabled": size_enabled,
            "choices": size_choices,
            "shmem_enabled": size_shmem,
            "shmem_choices": size_shmem_choices,
        }
    return {
        "supported": True,
        "reason": _reason(problems),
        "enabled": enabled,
        "enabled_choices": enabled_choices,
        "defrag": defrag,
        "defrag_choices": defrag_choices,
        "khugepaged_defrag": khugepaged_defrag,
        "shmem_enabled": shmem,
        "shmem_enabled_choices": shmem_choices,
        "hpage_pmd_size_kb": pmd_bytes // 1024 if pmd_bytes is not None else None,
        "sizes": sizes,
    }


def _node_ids(tree: Tree) -> list[int]:
    names = tree.listdir(NODE_DIR) or []
    return sorted(int(name[4:]) for name in names if re.fullmatch(r"node\d+", name))


def hugepage_facts(tree: Tree, meminfo: dict[str, int]) -> dict:
    facts: dict = {"default_size_kb": meminfo.get("Hugepagesize"), "sizes": {}, "reason": None}
    names = tree.listdir(HUGEPAGES_DIR)
    if names is None:
        facts["reason"] = f"{HUGEPAGES_DIR} is absent: this kernel has no hugetlbfs support"
        return facts
    problems: list[str] = []
    nodes = _node_ids(tree)
    sized = [name for name in names if re.fullmatch(r"hugepages-\d+kB", name)]
    for name in sorted(sized, key=lambda n: int(n[len("hugepages-") : -len("kB")])):
        base = f"{HUGEPAGES_DIR}/{name}"
        size = {
            "size_kb": int(name[len("hugepages-") : -len("kB")]),
            "total": _int(tree.read(f"{base}/nr_hugepages", problems)),
            "free": _int(tree.read(f"{base}/free_hugepages", problems)),
            "rsvd": _int(tree.read(f"{base}/resv_hugepages", problems)),
            "surp": _int(tree.read(f"{base}/surplus_hugepages", problems)),
            "overcommit": _int(tree.read(f"{base}/nr_overcommit_hugepages", problems)),
            "nodes": {},
        }
        for node in nodes:
            node_base = f"{NODE_DIR}/node{node}/hugepages/{name}"
            if not tree.isdir(node_base):
                continue
            size["nodes"][str(node)] = {
                "total": _int(tree.read(f"{node_base}/nr_hugepages", problems)),
                "free": _int(tree.read(f"{node_base}/free_hugepages", problems)),
                "surp": _int(tree.read(f"{node_base}/surplus_hugepages", problems)),
            }
        facts["sizes"][name[len("hugepages-") :]] = size
    facts["reason"] = _reason(problems)
    return facts


def meminfo_facts(tree: Tree) -> tuple[dict[str, int | None], dict[str, int], str | None]:
    problems: list[str] = []
    parsed = parse_meminfo(tree.read("/proc/meminfo", problems))
    chosen = {key: parsed.get(key) for key in MEMINFO_KEYS}
    if not problems:
        absent = [key for key in MEMINFO_KEYS if key not in parsed]
        if absent:
            problems.append("/proc/meminfo has no line for " + ", ".join(absent))
    return chosen, parsed, _reason(problems)


def numa_facts(tree: Tree) -> dict:
    if not tree.isdir(NODE_DIR):
        return {"nodes": [], "reason": f"{NODE_DIR} is absent: this kernel was built without NUMA support"}
    problems: list[str] = []
    nodes = []
    for node in _node_ids(tree):
        base = f"{NODE_DIR}/node{node}"
        cpulist_text = tree.read(f"{base}/cpulist", problems)
        meminfo = parse_meminfo(tree.read(f"{base}/meminfo", problems))
        distance = tree.read(f"{base}/distance", problems)
        nodes.append(
            {
                "id": node,
                "cpulist": cpulist_text.strip() if cpulist_text is not None else None,
                "cpus": parse_cpulist(cpulist_text),
                "mem_total_kb": meminfo.get("MemTotal"),
                "mem_free_kb": meminfo.get("MemFree"),
                "distances": [int(d) for d in distance.split()] if distance is not None else None,
            }
        )
    return {"nodes": nodes, "reason": _reason(problems)}


def kernel_facts(tree: Tree) -> dict:
    problems: list[str] = []
    release = tree.read("/proc/sys/kernel/osrelease", problems)
    version = tree.read("/proc/sys/kernel/version", problems)
    cmdline = tree.read("/proc/cmdline", problems)
    params, pools = cmdline_facts(cmdline)
    return {
        "release": release.strip() if release is not None else None,
        "version": version.strip() if version is not None else None,
        "cmdline": cmdline.strip() if cmdline is not None else None,
        "cmdline_params": params,
        "cmdline_hugepage_pools": pools,
        "reason": _reason(problems),
    }


def allocator_facts(tree: Tree) -> dict:
    preload = tree.read(LD_SO_PRELOAD)
    lines = []
    for line in (preload or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    facts: dict = {"ld_so_preload": lines}
    lib_dirs = []
    for pattern in LIB_DIRS:
        lib_dirs.extend(d for d in tree.glob(pattern) if tree.isdir(d) and d not in lib_dirs)
    for key, pattern in ALLOCATOR_GLOBS.items():
        paths = []
        for lib_dir in lib_dirs:
            for path in tree.glob(f"{lib_dir}/{pattern}"):
                tree.found(path)
                paths.append(path)
        facts[key] = paths
    return facts


def cpu_facts(tree: Tree) -> dict:
    problems: list[str] = []
    text = tree.read("/proc/cpuinfo", problems)
    model = None
    count = 0
    flags: set[str] | None = None
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return {
        "model": model,
        "count": count if text is not None else None,
        "flags": {flag: (flag in flags) if flags is not None else None for flag in CPU_FLAGS},
        "reason": _reason(problems),
    }



def gather(root: str = "/", gpus: bool = True, nvml=None, trace=None) -> dict:
    """All facts about the node under ``root``; ``nvml`` replaces the pynvml module (tests)."""
    tree = Tree(root, trace)
    meminfo, meminfo_all, meminfo_reason = meminfo_facts(tree)
    if gpus:
        cpus = parse_cpulist(tree.read(CPU_POSSIBLE)) or list(range(os.cpu_count() or 1))
        nodes = parse_cpulist(tree.read(NODE_POSSIBLE)) or [0]
        gpu_list, gpus_reason = gpu_facts(
            nvml,
            pci_numa_node=lambda bus_id: _int(tree.read(f"{PCI_DEVICES_DIR}/{bus_id}/numa_node")),
            cpu_words=max(cpus) // 64 + 1,
            node_words=max(nodes) // 64 + 1,
        )
    else:
        gpu_list, gpus_reason = [], "GPU facts not requested (gpus=false)"
    return {
        "schema_version": FACTS_SCHEMA_VERSION,
        "thp": thp_facts(tree),
        "hugepages": hugepage_facts(tree, meminfo_all),
        "meminfo_kb": meminfo,
        "meminfo_reason": meminfo_reason,
        "numa": numa_facts(tree),
        "kernel": kernel_facts(tree),
        "allocator": allocator_facts(tree),
        "cpu": cpu_facts(tree),
        "tuners": tuner_facts(tree),
        "gpus": gpu_list,
        "gpus_reason": gpus_reason,
    }
