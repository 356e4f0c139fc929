"""node_facts run for real by ansible on this machine, compared with /proc and /sys read by the test.

Other tests (and other people's tests) may flip THP or hugepage pools on this shared kernel while
these run, so each comparison reads the kernel before and after the module and retries when the
two reads differ; values the kernel changes on its own (free memory, page cache) are compared
within a window instead of exactly.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshfleet import REPO, ansible_env

ANSIBLE = Path(sys.executable).parent / "ansible"
THP = Path("/sys/kernel/mm/transparent_hugepage")
HUGEPAGES = Path("/sys/kernel/mm/hugepages")
NODES = Path("/sys/devices/system/node")
STABLE_MEMINFO = ("MemTotal", "Hugetlb", "HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")
MOVING_MEMINFO = ("MemFree", "MemAvailable")


def _selected(path: Path) -> str | None:
    match = re.search(r"\[([^\]]+)\]", path.read_text()) if path.exists() else None
    return match.group(1) if match else None


def _words(path: Path) -> list[str]:
    return path.read_text().replace("[", "").replace("]", "").split() if path.exists() else []


def _meminfo(path: Path) -> dict[str, int]:
    pairs = (line.split(":", 1) for line in path.read_text().splitlines())
    return {key.split()[-1]: int(value.split()[0]) for key, value in pairs}


def _cpus(cpulist: str) -> list[int]:
    cpus: list[int] = []
    for part in cpulist.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def kernel_now() -> dict:
    """What the facts must say about the values that only change when someone changes them."""
    sizes = {}
    for size_dir in sorted(HUGEPAGES.glob("hugepages-*kB")):
        counts = {name: int((size_dir / f"{name}_hugepages").read_text()) for name in ("nr", "free", "resv", "surplus")}
        nodes = {}
        for node_dir in sorted(NODES.glob(f"node*/hugepages/{size_dir.name}")):
            node = node_dir.parent.parent.name[len("node") :]
            nodes[node] = {
                "total": int((node_dir / "nr_hugepages").read_text()),
                "free": int((node_dir / "free_hugepages").read_text()),
                "surp": int((node_dir / "surplus_hugepages").read_text()),
            }
        sizes[size_dir.name.split("-", 1)[1]] = {
            "total": counts["nr"],
            "free": counts["free"],
            "rsvd": counts["resv"],
            "surp": counts["surplus"],
            "nodes": nodes,
        }
    meminfo = _meminfo(Path("/proc/meminfo"))
    return {
        "thp.enabled": _selected(THP / "enabled"),
        "thp.enabled_choices": _words(THP / "enabled"),
        "thp.defrag": _selected(THP / "defrag"),
        "thp.defrag_choices": _words(THP / "defrag"),
        "thp.khugepaged_defrag": int((THP / "khugepaged/defrag").read_text()),
        "thp.shmem_enabled": _selected(THP / "shmem_enabled"),
        "thp.sizes": {
            d.name.split("-", 1)[1]: _selected(d / "enabled") for d in THP.glob("hugepages-*kB") if d.is_dir()
        },
        "hugepages.sizes": sizes,
        "hugepages.default_size_kb": meminfo["Hugepagesize"],
        "meminfo": {key: meminfo[key] for key in STABLE_MEMINFO},
        "numa": [
            {
                "id": int(node.name[len("node") :]),
                "cpulist": (node / "cpulist").read_text().strip(),
                "cpus": _cpus((node / "cpulist").read_text().strip()),
                "distances": [int(d) for d in (node / "distance").read_text().split()],
            }
            for node in sorted(NODES.glob("node[0-9]*"), key=lambda p: int(p.name[4:]))
        ],
        "kernel.release": platform.release(),
        "kernel.version": os.uname().version,
        "kernel.cmdline": Path("/proc/cmdline").read_text().strip(),
        "cpu.count": os.cpu_count(),
        "jemalloc": sorted(
            p
            for d in (*glob.glob("/usr/lib/*-linux-gnu"), "/usr/lib64", "/usr/lib", "/usr/local/lib")
            for p in glob.glob(f"{d}/libjemalloc.so*")
        ),
        "bootloader": "grub" if Path("/etc/default/grub").exists() else None,
    }


def same_shape(facts: dict) -> dict:
    """The facts module's answer in kernel_now()'s shape."""
    return {
        "thp.enabled": facts["thp"]["enabled"],
        "thp.enabled_choices": facts["thp"]["enabled_choices"],
        "thp.defrag": facts["thp"]["defrag"],
        "thp.defrag_choices": facts["thp"]["defrag_choices"],
        "thp.khugepaged_defrag": facts["thp"]["khugepaged_defrag"],
        "thp.shmem_enabled": facts["thp"]["shmem_enabled"],
        "thp.sizes": {size: entry["enabled"] for size, entry in facts["thp"]["sizes"].items()},
        "hugepages.sizes": {
            size: {key: entry[key] for key in ("total", "free", "rsvd", "surp", "nodes")}
            for size, entry in facts["hugepages"]["sizes"].items()
        },
        "hugepages.default_size_kb": facts["hugepages"]["default_size_kb"],
        "meminfo": {key: facts["meminfo_kb"][key] for key in STABLE_MEMINFO},
        "numa": [{key: node[key] for key in ("id", "cpulist", "cpus", "distances")} for node in facts["numa"]["nodes"]],
        "kernel.release": facts["kernel"]["release"],
        "kernel.version": facts["kernel"]["version"],
        "kernel.cmdline": facts["kernel"]["cmdline"],
        "cpu.count": facts["cpu"]["count"],
        "jemalloc": sorted(facts["allocator"]["jemalloc_paths"]),
        "bootloader": facts["tuners"]["bootloader"],
    }


def run_node_facts(tmp_path: Path, *args: str, inventory: Path | None = None, host: str = "localhost") -> dict:
    """`ansible HOST -m node_facts ARGS` for real; returns the host's result (JSON)."""
    env = ansible_env(
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        # Keep these runs (one reads a recorded tree) out of the project's fact cache.
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "fact-cache"),
    )
    command = [str(ANSIBLE), host, "-m", "node_facts", *args]
    if inventory is not None:
        command[1:1] = ["-i", str(inventory)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    match = re.search(rf"^{re.escape(host)} \| (\w+!?) => (\{{.*?^\}})", proc.stdout, re.M | re.S)
    assert match, f"no result for {host}:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(match.group(2))
    result["_status"] = match.group(1)
    return result


def compare_with_kernel(tmp_path: Path, *args: str, **kwargs) -> tuple[dict, dict]:
    """Run the module between two reads of the kernel; retry while someone else is changing it."""
    for _ in range(4):
        before = kernel_now()
        result = run_node_facts(tmp_path, *args, **kwargs)
        after = kernel_now()
        if before == after:
            return result, after
    pytest.fail("the kernel's THP/hugepage state kept changing during every run; is a tuning test running?")


def assert_moving_values_in_window(facts: dict) -> None:
    """Free memory moves by itself: the module's figure must sit near what /proc says now."""
    meminfo = _meminfo(Path("/proc/meminfo"))
    slack = meminfo["MemTotal"] // 10
    for key in MOVING_MEMINFO:
        assert abs(facts["meminfo_kb"][key] - meminfo[key]) <= slack, (key, facts["meminfo_kb"][key], meminfo[key])
    for node in facts["numa"]["nodes"]:
        node_meminfo = _meminfo(NODES / f"node{node['id']}" / "meminfo")
        assert abs(node["mem_free_kb"] - node_meminfo["MemFree"]) <= slack
        assert 0 < node["mem_total_kb"] <= meminfo["MemTotal"]


def nvml_reason() -> str | None:
    """Why NVML cannot start here, asked of pynvml directly, or None when it can."""
    try:
        import pynvml
    except ImportError:
        return "no pynvml"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML not available: {exc}"
    pynvml.nvmlShutdown()
    return None


def test_module_reports_what_proc_and_sys_say(tmp_path):
    result, kernel = compare_with_kernel(tmp_path)
    assert result["_status"] == "SUCCESS"
    assert result["changed"] is False
    facts = result["ansible_facts"]["preflight"]
    assert facts["schema_version"] == 1
    assert same_shape(facts) == kernel
    assert_moving_values_in_window(facts)
    reason = nvml_reason()
    if reason is not None:
        assert (facts["gpus"], facts["gpus_reason"]) == ([], reason)


def test_check_mode_returns_the_same_facts_and_reports_no_change(tmp_path):
    result, kernel = compare_with_kernel(tmp_path, "--check")
    assert (result["_status"], result["changed"]) == ("SUCCESS", False)
    assert same_shape(result["ansible_facts"]["preflight"]) == kernel


def test_module_reads_a_recorded_tree_given_as_root(tmp_path):
    tree = REPO / "tests/fixtures/facts/two-numa"
    facts = run_node_facts(tmp_path, "-a", f"root={tree} gpus=false")["ansible_facts"]["preflight"]
    assert [node["cpulist"] for node in facts["numa"]["nodes"]] == ["0-3,8-11", "4-7,12-15"]
    assert facts["hugepages"]["sizes"]["2048kB"]["nodes"] == {
        "0": {"total": 1024, "free": 1000, "surp": 0},
        "1": {"total": 1024, "free": 1024, "surp": 0},
    }
    assert facts["gpus_reason"] == "GPU facts not requested (gpus=false)"


def test_root_that_is_not_a_directory_fails_with_the_path_in_the_message(tmp_path):
    result = run_node_facts(tmp_path, "-a", "root=/nonexistent/tree")
    assert result["_status"] == "FAILED!"
    assert result["msg"] == "root '/nonexistent/tree' is not a directory: give the tree to read /proc and /sys under"


def test_facts_over_ssh_describe_the_same_kernel(ssh_fleet, tmp_path):
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml")
    result, kernel = compare_with_kernel(tmp_path, inventory=inventory, host="node1")
    assert (result["_status"], result["changed"]) == ("SUCCESS", False)
    assert same_shape(result["ansible_facts"]["preflight"]) == kernel


@pytest.mark.skipif(nvml_reason() is not None or shutil.which("nvidia-smi") is None, reason="no NVIDIA GPU here")
def test_gpu_facts_match_nvidia_smi(tmp_path):
    query = "index,name,uuid,pci.bus_id,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max"
    smi = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query},persistence_mode,ecc.mode.current", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    )
    facts = run_node_facts(tmp_path)["ansible_facts"]["preflight"]
    rows = [[cell.strip() for cell in line.split(",")] for line in smi.stdout.strip().splitlines()]
    assert len(facts["gpus"]) == len(rows)
    for gpu, row in zip(facts["gpus"], rows, strict=True):
        index, name, uuid, bus_id, memory_mib, driver, gen_max, width_max, persistence, ecc = row
        domain, _, rest = bus_id.lower().partition(":")
        assert gpu["index"] == int(index)
        assert (gpu["name"], gpu["uuid"], gpu["driver_version"]) == (name, uuid, driver)
        assert gpu["pci_bus_id"] == f"{int(domain, 16):04x}:{rest}"
        assert gpu["memory_total_mib"] == int(memory_mib)
        assert (gpu["pcie"]["gen_max"], gpu["pcie"]["width_max"]) == (int(gen_max), int(width_max))
        assert gpu["persistence_mode"] == (persistence == "Enabled")
        assert gpu["ecc"]["mode"] == {"Enabled": "enabled", "Disabled": "disabled"}.get(ecc)
        sysfs_node = Path(f"/sys/bus/pci/devices/{gpu['pci_bus_id']}/numa_node")
        if sysfs_node.exists() and int(sysfs_node.read_text()) >= 0:
            assert gpu["numa_node"] == int(sysfs_node.read_text())
