"""node_facts' GPU facts: NVML answers replayed (a stand-in for pynvml, named as one) on a recorded tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pynvml
import pytest

from tests.moduleutils import module_util

facts_module = module_util("preflight.core.facts")
gather = facts_module.gather
cmdline_facts = module_util("preflight.core.cmdline").cmdline_facts
split_cmdline = module_util("preflight.core.cmdline").split_cmdline
parse_cpulist = module_util("preflight.core.tree").parse_cpulist
parse_size_kb = module_util("preflight.core.tree").parse_size_kb
format_cpulist = module_util("preflight.core.gpus").format_cpulist

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"


# ---- GPUs -----------------------------------------------------------------------------------------
# No GPU here: a stand-in with pynvml's own error classes drives the marshalling. The real NVML is
# compared with nvidia-smi by tests/integration/test_node_facts_live.py on a GPU node.


class _Pci:
    def __init__(self, bus_id: bytes):
        self.busId = bus_id


class _Memory:
    total = 85520809984
    used = 553779200


class StandInNvml:
    """Two H100s as NVML reports them; GPU 1's driver refuses some queries, as older drivers do."""

    NVMLError = pynvml.NVMLError
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = pynvml.NVML_AGGREGATE_ECC

    def __init__(self):
        self.calls: list[tuple] = []
        self.shut_down = False

    def _refuse_on_gpu1(self, handle):
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-0000000{handle}-1111-2222-3333-444444444444"

    def nvmlDeviceGetPciInfo(self, handle):
        return _Pci([b"00000000:17:00.0", b"00000000:CA:00.0"][handle])

    def nvmlDeviceGetNumaNodeId(self, handle):
        # PCIe GPUs are not NUMA nodes themselves; only coherent ones (Grace Hopper) answer this.
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMemoryAffinity(self, handle, words, scope):
        self.calls.append(("nvmlDeviceGetMemoryAffinity", handle, words, scope))
        return [0b01] if handle == 0 else [0b10]

    def nvmlDeviceGetCpuAffinity(self, handle, words):
        self.calls.append(("nvmlDeviceGetCpuAffinity", handle, words))
        return [0x0F0F, 0] if handle == 0 else [0xF0F0, 0x1]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return _Memory()

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return (9, 0)

    def nvmlDeviceGetPersistenceMode(self, handle):
        return 1

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle):
        return 1 if handle == 0 else 5  # an idle GPU drops its link to gen 1

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle):
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle):
        return 16

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle):
        return 16

    def nvmlDeviceGetEccMode(self, handle):
        self._refuse_on_gpu1(handle)
        return [1, 1]

    def nvmlDeviceGetTotalEccErrors(self, handle, error_type, counter):
        return {(1, 0): 0, (1, 1): 2, (0, 0): 7, (0, 1): 31}[(error_type, counter)]

    def nvmlDeviceGetRemappedRows(self, handle):
        self._refuse_on_gpu1(handle)
        return (0, 2, 0, 0)


@pytest.fixture
def gpu_node(tmp_path):
    """The two-NUMA tree plus what a 128-CPU GPU node has in sysfs for its second GPU."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "two-numa", root, symlinks=True)
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/possible").write_text("0-127\n")
    (root / "sys/bus/pci/devices/0000:ca:00.0").mkdir(parents=True)
    (root / "sys/bus/pci/devices/0000:ca:00.0/numa_node").write_text("1\n")
    return root


def test_each_gpu_is_reported_with_its_pci_numa_and_link(gpu_node):
    nvml = StandInNvml()
    facts = gather(root=str(gpu_node), nvml=nvml)
    assert facts["gpus_reason"] is None
    assert nvml.shut_down
    first, second = facts["gpus"]
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-00000000-1111-2222-3333-444444444444",
        "pci_bus_id": "0000:17:00.0",
        "numa_node": 0,
        "numa_node_source": "nvml",
        "gpu_memory_numa_node": None,
        "cpu_affinity": "0-3,8-11",
        "memory_total_mib": 81559,
        "memory_used_mib": 528,
        "compute_capability": "9.0",
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "pcie": {
            "gen_current": 1,
            "gen_max": 5,
            "width_current": 16,
            "width_max": 16,
            "bandwidth_gbs_current": 4.0,
            "bandwidth_gbs_max": 63.02,
        },
        "persistence_mode": True,
        "ecc": {
            "mode": "enabled",
            "pending_mode": "enabled",
            "volatile_uncorrected": 0,
            "aggregate_uncorrected": 2,
            "volatile_corrected": 7,
            "aggregate_corrected": 31,
        },
        "remapped_rows": {"correctable": 0, "uncorrectable": 2, "pending": 0, "failure": 0},
        "errors": {},
    }
    assert (second["pci_bus_id"], second["cpu_affinity"]) == ("0000:ca:00.0", "4-7,12-15,64")
    # GPU 0 has no numa_node in this tree's sysfs, so NVML's nearest node is asked (one word for nodes
    # 0-1); 0-127 possible CPUs need two 64-bit words in the CPU mask.
    assert nvml.calls == [
        ("nvmlDeviceGetMemoryAffinity", 0, 1, 0),
        ("nvmlDeviceGetCpuAffinity", 0, 2),
        ("nvmlDeviceGetCpuAffinity", 1, 2),
    ]


def test_gpu_fields_the_driver_refuses_are_null_with_the_reason(gpu_node):
    second = gather(root=str(gpu_node), nvml=StandInNvml())["gpus"][1]
    # From /sys/bus/pci/devices/0000:ca:00.0/numa_node, ahead of NVML's answer (node 1 too).
    assert (second["numa_node"], second["numa_node_source"]) == (1, "sysfs")
    assert second["ecc"] == {
        "mode": None,
        "pending_mode": None,
        "volatile_uncorrected": None,
        "aggregate_uncorrected": None,
        "volatile_corrected": None,
        "aggregate_corrected": None,
    }
    assert second["remapped_rows"] is None
    assert second["errors"] == {
        "ecc.mode": "nvmlDeviceGetEccMode: Not Supported",
        "remapped_rows": "nvmlDeviceGetRemappedRows: Not Supported",
    }


def test_gpu_query_missing_from_an_old_pynvml_is_a_reason_not_a_crash(gpu_node):
    class OldNvml(StandInNvml):
        nvmlDeviceGetMemoryAffinity = None  # bindings older than the call

    first = gather(root=str(gpu_node), nvml=OldNvml())["gpus"][0]
    # No NUMA node in this tree's sysfs for 0000:17:00.0 and none from NVML.
    assert (first["numa_node"], first["numa_node_source"]) == (None, None)
    assert first["errors"] == {"numa_node": "nvmlDeviceGetMemoryAffinity is not in this pynvml"}


def test_gpu_that_fell_off_the_bus_is_still_a_row_with_the_reason(gpu_node):
    class LostGpu(StandInNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            if index == 1:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            return index

    first, second = gather(root=str(gpu_node), nvml=LostGpu())["gpus"]
    assert first["name"] == "NVIDIA H100 80GB HBM3"
    assert (second["index"], second["name"], second["pci_bus_id"], second["memory_total_mib"]) == (1, None, None, None)
    assert second["pcie"]["gen_max"] is None
    assert second["errors"] == {"handle": "nvmlDeviceGetHandleByIndex: GPU is lost"}


def test_nvml_that_cannot_start_gives_no_gpus_and_its_message():
    class NoDriver(StandInNvml):
        def nvmlInit(self):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    facts = gather(root=str(FIXTURES / "vm-1node"), nvml=NoDriver())
    assert facts["gpus"] == []
    assert facts["gpus_reason"] == "NVML not available: Driver Not Loaded"
