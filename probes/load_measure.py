"""The load probe's measurements: the code its worker processes run (`python -m probes load --worker load|h2d`,
one fresh process per run) and the read rate of the weight files. GB means 1e9 bytes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from probes import worker

READ_BLOCK_BYTES = 16 << 20
GB = 1e9


def read_files_gb_per_s(files: list[Path], *, min_s: float = 0.0) -> float:
    """Sequential read of the files in 16 MiB blocks; GB/s over the bytes read.

    With min_s the files are read again until that much time has passed (a few MB from the page cache take
    milliseconds, too short for a clock and a busy host); a cold read must use min_s=0 (one pass).
    """
    buf = bytearray(READ_BLOCK_BYTES)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    while True:
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    total += n
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return total / GB / elapsed


def load_worker(args) -> int:
    t_start_wall = time.time()
    t0 = time.perf_counter()
    import torch

    t1 = time.perf_counter()
    try:  # before importing transformers: a host without the asked-for device fails in seconds
        dev = worker.torch_device(args.device)
    except RuntimeError as exc:
        return worker.emit_result({"error": str(exc)}, failed=True)
    t2 = time.perf_counter()
    import transformers  # noqa: F401  (the import is what is timed)
    from transformers import AutoModelForCausalLM

    t3 = time.perf_counter()
    rss_import = worker.rss_bytes()
    cuda_init_s = None
    nvml_before = None
    if dev.type == "cuda":
        before = worker.nvml_used_by_bus()  # NVML only: reading it through torch would start CUDA first
        t = time.perf_counter()
        torch.cuda.init()
        torch.zeros(1, device=dev)
        worker.synchronize(dev)
        cuda_init_s = time.perf_counter() - t
        bus = worker.pci_bus_id(dev)
        nvml_before = before.get(worker._norm_bus(bus)) if bus else None

    if args.placement == "direct":
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype="auto", device_map=str(dev))
        worker.synchronize(dev)
        from_pretrained_s = time.perf_counter() - t
        to_device_s = None
    else:
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype="auto")
        from_pretrained_s = time.perf_counter() - t
        to_device_s = None
        if dev.type != "cpu":
            t = time.perf_counter()
            model = model.to(dev)
            worker.synchronize(dev)
            to_device_s = time.perf_counter() - t
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    payload = {
        "start_wall_time": t_start_wall,
        "end_wall_time": time.time(),
        "import_torch_s": t1 - t0,
        "import_transformers_s": t3 - t2,
        "cuda_init_s": cuda_init_s,
        "from_pretrained_s": from_pretrained_s,
        "to_device_s": to_device_s,
        "device": str(dev),
        "placement": args.placement,
        "param_bytes": param_bytes,
        "rss_after_import_bytes": rss_import,
        "rss_after_load_bytes": worker.rss_bytes(),
        "peak_rss_bytes": worker.peak_rss_bytes(),
        "nvml_used_before_bytes": nvml_before,
        "nvml_used_after_bytes": worker.nvml_used_bytes(dev),
        **worker.torch_memory(dev),
    }
    return worker.emit_result(payload)


def h2d_worker(args) -> int:
    """Host-to-device copy GB/s per GPU, pinned and pageable, after one warm-up copy of each."""
    import torch

    if not torch.cuda.is_available():
        return worker.emit_result({"gpus": [], "reason": f"torch {torch.__version__} sees no CUDA device"})
    size = args.copy_mib << 20
    indices = [int(i) for i in args.gpus.split(",")] if args.gpus else list(range(torch.cuda.device_count()))
    gpus = []
    all_cpus = os.sched_getaffinity(0)
    threads = torch.get_num_threads()
    for index in indices:
        dev = torch.device("cuda", index)
        # Host buffers on the GPU's own NUMA node: run on the CPUs NVML calls local, single-threaded so that
        # first touch (which places the pages) happens there, as a NUMA-aware server would allocate them.
        local = sorted(set(worker.nvml_cpu_affinity(dev) or []) & all_cpus)
        if local:
            os.sched_setaffinity(0, local)
        torch.set_num_threads(1)
        pageable = torch.ones(size, dtype=torch.uint8)  # ones: every page touched before timing
        pinned = torch.ones(size, dtype=torch.uint8).pin_memory()
        dst = torch.empty(size, dtype=torch.uint8, device=dev)
        rates = {"pinned": [], "pageable": []}
        for kind, src in (("pinned", pinned), ("pageable", pageable)):
            for i in range(args.copy_repeats + 1):
                worker.synchronize(dev)
                t = time.perf_counter()
                dst.copy_(src, non_blocking=(kind == "pinned"))
                worker.synchronize(dev)
                if i:  # the first copy is the warm-up
                    rates[kind].append(size / GB / (time.perf_counter() - t))
        gpus.append({
            "gpu_index": index,
            "name": torch.cuda.get_device_name(dev),
            "pci_bus_id": worker.pci_bus_id(dev),
            "copy_bytes": size,
            "host_cpus": local or None,  # None: NVML gave no affinity, buffers wherever the kernel put them
            "pinned": rates["pinned"],
            "pageable": rates["pageable"],
        })
        del pageable, pinned, dst
        torch.cuda.empty_cache()
        os.sched_setaffinity(0, all_cpus)
        torch.set_num_threads(threads)
    return worker.emit_result({"gpus": gpus, "reason": None})


def thp_state() -> dict:
    """THP as the loads run under it: the global mode, each size's setting (Linux 6.8+), and the A/B arm that
    holds THP for this run (the marker's owner, core/thp_arm.py: its settings by knob and the values it found;
    None when no arm is set)."""
    from probes.core import thp_arm

    held = thp_arm.owner()
    arm = None
    if held is not None:
        arm = {"mode": held.get("mode"), "settings": held.get("settings") or {thp_arm.GLOBAL: held.get("mode")},
               "original": held.get("original"), "probe": held.get("probe")}
    return {**thp_arm.live_settings(), "arm": arm}
