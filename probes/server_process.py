"""The vLLM server process a probe starts, owns and always stops (VllmServer), and a server someone else runs
(ExternalEndpoint). See probes.server for the lifecycle's guarantees.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from probes import vllm_metrics
from probes.procgroup import alive, descendants, die_with_parent, free_port, group_members, proc_stat
from probes.server_spec import (
    MILESTONES,
    MemorySnapshot,
    ProbeTerminated,
    ServerError,
    ServerSpec,
    ServerStartError,
    StartTimeline,
    StopReport,
    memory_snapshot,
)


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
            "argv": self.spec.argv(self.port or 0),
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
        env = {**os.environ, **self.spec.environment(), **self.spec.key_environment(self.api_key)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self.timeline = StartTimeline(spawned_at=time.time())
        self.proc = subprocess.Popen(
            self.spec.argv(self.port),
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
