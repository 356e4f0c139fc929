"""GPU facts through NVML (nvidia-ml-py): one entry per GPU, every field guarded.

A field this GPU or driver does not support becomes None and its entry in ``errors`` says why;
no NVML at all gives no GPUs and a reason. Plain Python; pynvml is imported only when present.
"""

from __future__ import annotations

NVML_ERROR_NOT_SUPPORTED = 3  # pynvml's value, kept here so the module imports without pynvml
NVML_AFFINITY_SCOPE_NODE = 0

# Per direction, per lane, in GB/s after line encoding: 8b/10b up to gen 2, 128b/130b from gen 3.
PCIE_LANE_GBS = {1: 0.25, 2: 0.5, 3: 8 * 128 / 130 / 8, 4: 16 * 128 / 130 / 8, 5: 32 * 128 / 130 / 8, 6: 64 / 8}


def format_cpulist(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (the kernel's own notation)."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = prev = None
    for cpu in ordered + [None]:
        if start is not None and (cpu is None or cpu != prev + 1):
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if cpu is not None and start is None:
            start = cpu
        prev = cpu
    return ",".join(ranges)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _sysfs_pci_id(bus_id: str) -> str:
    """NVML '00000000:17:00.0' -> sysfs '0000:17:00.0'."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else bus_id.lower()


def _bits(words) -> list[int]:
    """NVML's masks of 64-bit words -> the numbers of the set bits (CPUs, NUMA nodes)."""
    return [64 * i + bit for i, word in enumerate(words) for bit in range(64) if int(word) >> bit & 1]


def _affinity_cpulist(words) -> str:
    return format_cpulist(_bits(words))


def _pcie_gbs(gen: int | None, width: int | None) -> float | None:
    if gen not in PCIE_LANE_GBS or not width:
        return None
    return round(PCIE_LANE_GBS[gen] * width, 2)


class _Gpu:
    """Calls NVML for one device; a call NVML refuses leaves its field None and says why."""

    def __init__(self, nvml, handle):
        self.nvml = nvml
        self.handle = handle
        self.errors: dict[str, str] = {}

    def call(self, field: str, function: str, *args, unsupported_is_normal: bool = False):
        if self.handle is None:
            return None
        fn = getattr(self.nvml, function, None)
        if fn is None:
            self.errors[field] = f"{function} is not in this pynvml"
            return None
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as exc:
            if not (unsupported_is_normal and getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED):
                self.errors[field] = f"{function}: {exc}"
            return None


def _numa_node(gpu, pci_bus_id, pci_numa_node, node_words: int) -> tuple[int | None, str | None]:
    """(node, where the answer came from): sysfs for the PCI device first, else NVML's nearest node."""
    from_sysfs = pci_numa_node(pci_bus_id) if pci_bus_id is not None else None
    if from_sysfs is not None and from_sysfs >= 0:
        return from_sysfs, "sysfs"
    nearest = gpu.call("numa_node", "nvmlDeviceGetMemoryAffinity", node_words, NVML_AFFINITY_SCOPE_NODE)
    nodes = _bits(nearest) if nearest is not None else []
    return (nodes[0], "nvml") if nodes else (None, None)


def _pcie(gpu) -> dict:
    gen_current = gpu.call("pcie.gen_current", "nvmlDeviceGetCurrPcieLinkGeneration")
    gen_max = gpu.call("pcie.gen_max", "nvmlDeviceGetMaxPcieLinkGeneration")
    width_current = gpu.call("pcie.width_current", "nvmlDeviceGetCurrPcieLinkWidth")
    width_max = gpu.call("pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth")
    return {
        "gen_current": gen_current,
        "gen_max": gen_max,
        "width_current": width_current,
        "width_max": width_max,
        "bandwidth_gbs_current": _pcie_gbs(gen_current, width_current),
        "bandwidth_gbs_max": _pcie_gbs(gen_max, width_max),
    }


def _ecc(nvml, gpu) -> dict:
    ecc_mode = gpu.call("ecc.mode", "nvmlDeviceGetEccMode")
    uncorrected = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    corrected = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0)
    volatile = getattr(nvml, "NVML_VOLATILE_ECC", 0)
    aggregate = getattr(nvml, "NVML_AGGREGATE_ECC", 1)
    ecc = {
        "mode": None if ecc_mode is None else ("enabled" if ecc_mode[0] else "disabled"),
        "pending_mode": None if ecc_mode is None else ("enabled" if ecc_mode[1] else "disabled"),
        "volatile_uncorrected": None,
        "aggregate_uncorrected": None,
        "volatile_corrected": None,
        "aggregate_corrected": None,
    }
    if ecc_mode is not None and ecc_mode[0]:
        for field, error_type, counter in (
            ("volatile_uncorrected", uncorrected, volatile),
            ("aggregate_uncorrected", uncorrected, aggregate),
            ("volatile_corrected", corrected, volatile),
            ("aggregate_corrected", corrected, aggregate),
        ):
            ecc[field] = gpu.call(f"ecc.{field}", "nvmlDeviceGetTotalEccErrors", error_type, counter)
    return ecc


def _gpu_facts(nvml, index: int, driver, cuda, pci_numa_node, cpu_words: int, node_words: int) -> dict:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        # A GPU that fell off the bus is still a row in the report, with every field null and why.
        handle = None
        lost = f"nvmlDeviceGetHandleByIndex: {exc}"
    gpu = _Gpu(nvml, handle)
    if handle is None:
        gpu.errors["handle"] = lost
    name = gpu.call("name", "nvmlDeviceGetName")
    uuid = gpu.call("uuid", "nvmlDeviceGetUUID")
    pci = gpu.call("pci_bus_id", "nvmlDeviceGetPciInfo")
    pci_bus_id = _sysfs_pci_id(_text(pci.busId)) if pci is not None else None
    # The node whose CPUs and memory sit next to the GPU's PCIe link: the kernel's own answer for the
    # PCI device first (-1 when firmware gave none), else the nearest node NVML reports.
    numa_node, numa_source = _numa_node(gpu, pci_bus_id, pci_numa_node, node_words)
    # Only where GPU memory is itself a NUMA node (Grace Hopper and the like); elsewhere NVML says unsupported.
    memory_node = gpu.call("gpu_memory_numa_node", "nvmlDeviceGetNumaNodeId", unsupported_is_normal=True)
    affinity = gpu.call("cpu_affinity", "nvmlDeviceGetCpuAffinity", cpu_words)
    memory = gpu.call("memory", "nvmlDeviceGetMemoryInfo")
    capability = gpu.call("compute_capability", "nvmlDeviceGetCudaComputeCapability")
    persistence = gpu.call("persistence_mode", "nvmlDeviceGetPersistenceMode")
    pcie = _pcie(gpu)
    ecc = _ecc(nvml, gpu)
    remapped = gpu.call("remapped_rows", "nvmlDeviceGetRemappedRows")
    return {
        "index": index,
        "name": _text(name) if name is not None else None,
        "uuid": _text(uuid) if uuid is not None else None,
        "pci_bus_id": pci_bus_id,
        "numa_node": numa_node,
        "numa_node_source": numa_source,
        "gpu_memory_numa_node": memory_node,
        "cpu_affinity": _affinity_cpulist(affinity) if affinity is not None else None,
        "memory_total_mib": memory.total // 1048576 if memory is not None else None,
        "memory_used_mib": memory.used // 1048576 if memory is not None else None,
        "compute_capability": f"{capability[0]}.{capability[1]}" if capability is not None else None,
        "driver_version": driver,
        "cuda_driver_version": cuda,
        # The current link generation drops while the GPU idles; compare the maximum, or measure under load.
        "pcie": pcie,
        "persistence_mode": None if persistence is None else bool(persistence),
        "ecc": ecc,
        "remapped_rows": None
        if remapped is None
        else {
            "correctable": int(remapped[0]),
            "uncorrectable": int(remapped[1]),
            "pending": int(remapped[2]),
            "failure": int(remapped[3]),
        },
        "errors": gpu.errors,
    }


def gpu_facts(
    nvml=None, pci_numa_node=lambda bus_id: None, cpu_words: int = 1, node_words: int = 1
) -> tuple[list[dict], str | None]:
    """Every GPU NVML sees, or [] and why there are none to report.

    ``nvml`` is the pynvml module (imported here when None); ``pci_numa_node(bus_id)`` reads the
    PCI device's NUMA node from sysfs; ``cpu_words`` and ``node_words`` are how many 64-bit words
    this node's CPU and NUMA-node masks need.
    """
    if nvml is None:
        try:
            import pynvml as nvml  # optional: nodes without GPUs lack it
        except ImportError as exc:
            return [], f"NVML not available: the Python package nvidia-ml-py (pynvml) is not installed ({exc})"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # any failure to start NVML means "no GPUs to report", never a crash
        return [], f"NVML not available: {_text(exc) or type(exc).__name__}"
    try:
        driver = cuda = None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
        except nvml.NVMLError:
            pass
        try:
            version = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{version // 1000}.{version % 1000 // 10}"
        except nvml.NVMLError:
            pass
        gpus = [
            _gpu_facts(nvml, i, driver, cuda, pci_numa_node, cpu_words, node_words)
            for i in range(nvml.nvmlDeviceGetCount())
        ]
    except nvml.NVMLError as exc:
        return [], f"NVML failed while listing GPUs: {_text(exc)}"
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass
    return gpus, None


def server_cpus(numa: dict, gpus: list[dict]) -> dict[int, list[int] | None]:
    """The CPUs a per-GPU server is pinned to: its GPU's NUMA node's, where the node has more than one NUMA
    node and the GPU's node is known; None (no pinning) otherwise. ``numa`` and ``gpus`` are node facts."""
    nodes = {node["id"]: node.get("cpus") for node in numa.get("nodes") or []}
    if len(nodes) < 2:
        return {gpu["index"]: None for gpu in gpus}
    return {gpu["index"]: nodes.get(gpu.get("numa_node")) or None for gpu in gpus}
