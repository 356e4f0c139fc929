"""Fresh-process measurements: run one probe worker in a new interpreter and collect its JSON result.

Used by probes.load and probes.generate. Every repeat runs in its own process so that import time, the
allocator, and first-call costs are those of a cold service start, not of a warm benchmark loop.
Standard library only at import time; torch is imported inside the functions the worker calls.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "PREFLIGHT_WORKER_RESULT "
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


@dataclass
class WorkerRun:
    result: dict | None  # the worker's JSON, None when it failed
    error: str | None  # why there is no result: exit status and stderr tail
    spawn_time: float  # time.time() just before the process was started
    wall_s: float  # process start to exit, as the parent saw it
    returncode: int | None


# NVLink multicast off in NCCL, PyTorch and NVSHMEM for every process a probe starts: a probe never needs it,
# and a program that uses it can put a host's shared GPUs out of service. Set whatever the caller's
# environment says.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def worker_env(extra: dict | None = None, *, drop: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, **MULTICAST_OFF}
    for key in drop:
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # torch's GPU N is NVML's (the node facts') GPU N
    env.update(extra or {})
    return env


def run_worker(args: list[str], *, env: dict, timeout_s: float) -> WorkerRun:
    """`python -m probes ARGS` in its own session; the whole process group is killed on timeout or interrupt."""
    spawn = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "probes", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return WorkerRun(None, f"worker timed out after {timeout_s:g} s: {' '.join(args)}\n{_tail(err)}",
                         spawn, time.perf_counter() - t0, None)
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    payload = None
    for line in out.splitlines():
        if line.startswith(MARKER):
            payload = json.loads(line[len(MARKER):])
    if proc.returncode != 0 or payload is None:
        reason = payload.get("error") if isinstance(payload, dict) and payload.get("error") else None
        text = reason or f"worker exited with status {proc.returncode} and no result"
        return WorkerRun(None, f"{text}\n{_tail(err)}".rstrip(), spawn, wall, proc.returncode)
    return WorkerRun(payload, None, spawn, wall, proc.returncode)


def exit_on_sigterm() -> None:
    """In a probe's parent: SIGTERM (Ansible timeout, systemd stop) unwinds like Ctrl-C, so run_worker kills the
    worker's process group on its way out instead of leaving it running."""

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(text: str | None, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def emit_result(payload: dict, *, failed: bool = False) -> int:
    """Worker side: one marked line on stdout (libraries may print other lines there)."""
    sys.stdout.write(MARKER + json.dumps(payload) + "\n")
    sys.stdout.flush()
    return 3 if failed else 0


def drop_page_cache() -> None:
    """Write back dirty pages, then drop clean page cache, dentries and inodes (root only; opt-in by the caller)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        raise PermissionError(
            f"cannot write {DROP_CACHES} ({exc.strerror}): --drop-caches needs root and a writable /proc/sys"
        ) from exc


def can_drop_caches() -> str | None:
    """None when drop_caches is writable, else the reason."""
    if not DROP_CACHES.exists():
        return f"{DROP_CACHES} does not exist"
    if not os.access(DROP_CACHES, os.W_OK):
        return f"{DROP_CACHES} is not writable by uid {os.getuid()} (run as root)"
    return None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def mapped_paths() -> set[str]:
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                paths.add(parts[5].strip())
    return paths


def mapping_of_address(address: int) -> str | None:
    """The file mapped at an address of this process (/proc/self/maps), or None for anonymous memory."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= address < hi:
                return parts[5].strip() if len(parts) == 6 else None
    return None


# ---- torch-side helpers (called inside workers) ---------------------------------------------------------


def torch_device(name: str):
    """'auto' -> cuda when torch sees one, else cpu; 'cuda' -> cuda:0. Raises when CUDA is asked for and absent."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: torch {torch.__version__} sees no CUDA device")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def synchronize(dev) -> None:
    """Wait for queued GPU work before reading the clock (a no-op on CPU)."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def pci_bus_id(dev) -> str | None:
    import torch

    try:
        p = torch.cuda.get_device_properties(dev)
        return f"{p.pci_domain_id:04X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
    except (AttributeError, RuntimeError):
        return None


def _nvml():
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no library: a host without an NVIDIA GPU
        return None
    return pynvml


def nvml_used_by_bus() -> dict[str, int]:
    """Device memory in use per GPU (PCI bus id -> bytes), read without touching CUDA: the baseline before init."""
    pynvml = _nvml()
    if pynvml is None:
        return {}
    try:
        out = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            bus = pynvml.nvmlDeviceGetPciInfo(h).busId
            out[_norm_bus(bus)] = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        return out
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()


def _norm_bus(bus) -> str:
    """'00000000:1A:00.0', '0000:1a:00.0' -> '0000:1A:00.0' (NVML and CUDA pad the domain differently)."""
    text = bus.decode() if isinstance(bus, bytes) else str(bus)
    domain, _, rest = text.partition(":")
    return f"{int(domain, 16):04X}:{rest.upper()}"


def nvml_cpu_affinity(dev) -> list[int] | None:
    """CPUs NVML calls local to dev's GPU (its NUMA node), or None when unknown."""
    pynvml = _nvml()
    if pynvml is None:
        return None
    try:
        handle = _nvml_handle(pynvml, dev)
        words = (os.cpu_count() + 63) // 64
        mask = pynvml.nvmlDeviceGetCpuAffinity(handle, words)
        cpus = [w * 64 + b for w, word in enumerate(mask) for b in range(64) if (int(word) >> b) & 1]
        return cpus or None
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def _nvml_handle(pynvml, dev):
    bus = pci_bus_id(dev)
    if bus:
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0)


def nvml_used_bytes(dev) -> int | None:
    """Device memory in use on dev's GPU as NVML reports it (all processes, includes CUDA contexts)."""
    if dev.type != "cuda":
        return None
    pynvml = _nvml()
    if pynvml is None:
        return None
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle(pynvml, dev)).used)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def torch_memory(dev) -> dict:
    import torch

    if dev.type != "cuda":
        return {"device_allocated_bytes": None, "device_max_allocated_bytes": None, "device_reserved_bytes": None}
    return {
        "device_allocated_bytes": int(torch.cuda.memory_allocated(dev)),
        "device_max_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
        "device_reserved_bytes": int(torch.cuda.memory_reserved(dev)),
    }
