"""Run one probe of the `probes` package as a child process and hand back its envelope.

The process side of library/slm_probe.py, importable without Ansible: the child's environment, the child
process with a timeout that takes the whole process group down (a vLLM server included), and the parsing of
the probe's JSON from its stdout. The options and the argument list are core/probe_options.py's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .core import progress


def probe_env(runtime_dir: str, extra: dict | None, base: dict | None = None) -> dict[str, str]:
    """The child's environment: the caller's, then `extra`, with runtime_dir first on PYTHONPATH.

    Probes are offline by design (HF_HUB_OFFLINE=1 unless the operator says otherwise), unbuffered so a
    killed probe still leaves its last lines, and they write no bytecode into the runtime directory.
    """
    env = dict(os.environ if base is None else base)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    paths = [runtime_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != runtime_dir]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def tail(text: str, lines: int = 40, chars: int = 4000) -> str:
    """The end of a stream: what an operator needs to see why a probe stopped."""
    out = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return out[-chars:]


def parse_envelope(stdout: str) -> dict | None:
    """The probe's JSON document: all of stdout, else the last top-level object in it (a library may print)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else None
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for pos in reversed([p for p in starts if text.startswith("{", p)]):
        try:
            doc, end = decoder.raw_decode(text, pos)
        except ValueError:
            continue
        if isinstance(doc, dict) and not text[end:].strip():
            return doc
    return None


def envelope_problem(doc: dict | None, probe: str) -> str | None:
    """Why doc is not this probe's envelope (None when it is one)."""
    if doc is None:
        return "the probe printed no JSON document on stdout"
    missing = [k for k in ("schema_version", "probe", "results", "verdicts", "environment") if k not in doc]
    if missing:
        return f"the probe's JSON lacks {', '.join(missing)}: not a probe envelope"
    if doc["probe"] != probe:
        return f"the JSON is the envelope of probe {doc['probe']!r}, not of {probe!r}"
    return None


@dataclass
class ProbeRun:
    cmd: list[str]
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    envelope: dict | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and self.problem is None


def run(cmd: list[str], probe: str, env: dict[str, str], cwd: str, timeout_s: float,
        log: str | None = None, heartbeat_s: float = 0.0) -> ProbeRun:
    """Run the probe in its own process group; on timeout SIGTERM the group, then SIGKILL what is left.

    With ``log``, the probe's stderr (its progress lines) goes to that file on the node as it is written, framed by
    core/progress.py's start and end lines, so that an operator can ``tail -f`` it and slm_probe_wait can read it.
    With ``heartbeat_s``, the probe is stopped like at its timeout when nobody has touched the log's heartbeat
    file (slm_probe_wait does, while the controller polls) for that long: a controller that was interrupted or
    lost the host leaves no probe running, and no THP arm set, for long.
    """
    started = time.monotonic()
    out = ProbeRun(cmd=cmd)
    sink = progress.open_log(log, probe) if log else subprocess.PIPE
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        out.problem = f"cannot start {cmd[0]}: {exc.strerror or exc}"
        out.duration_s = round(time.monotonic() - started, 3)
        _close_log(sink, log, out)
        return out
    try:
        _wait(proc, out, started + timeout_s, log, heartbeat_s)
        _stop_leftovers(proc)  # a probe that crashed may leave helpers of its own in its group
    except BaseException:  # the module itself is being stopped (a signal): take the probe's group with it
        _stop_group(proc)
        raise
    finally:
        _close_log(sink, log, out)
    out.rc = proc.returncode
    out.duration_s = round(time.monotonic() - started, 3)
    if out.timed_out:
        out.problem = out.problem or f"the probe ran past its timeout of {timeout_s:g} s and was stopped"
        return out
    out.envelope = parse_envelope(out.stdout)
    problem = envelope_problem(out.envelope, probe)
    if problem and out.rc == 0:
        out.problem = problem
    elif out.rc != 0:
        out.problem = f"the probe exited with status {out.rc}"
        if problem:
            out.envelope = None
    return out


def _wait(proc: subprocess.Popen, out: ProbeRun, deadline: float, log: str | None, heartbeat_s: float) -> None:
    """Until the probe ends, its deadline passes, or (heartbeat_s) the controller stops polling."""
    while True:  # communicate() keeps what it read across timeouts and returns all of it at the end
        try:
            stdout, stderr = proc.communicate(timeout=max(0.05, min(2.0, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            stale = progress.heartbeat_age(log) if log and heartbeat_s > 0 else None
            if time.monotonic() >= deadline or (stale is not None and stale > heartbeat_s):
                out.timed_out = True
                if stale is not None and stale > heartbeat_s:
                    out.problem = (f"nobody polled the probe for {stale:.0f} s (the controller was interrupted or "
                                   f"lost this host): stopped it and put the node back")
                _stop_group(proc)
                stdout, stderr = proc.communicate()
                break
    out.stdout, out.stderr, out.rc = stdout or "", stderr or "", proc.returncode


def _close_log(sink, log: str | None, out: ProbeRun) -> None:
    if log and sink is not subprocess.PIPE:
        sink.close()
        out.stderr = progress.close_log(log, out.rc, out.problem)


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_leftovers(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """After the probe itself ended: SIGTERM what is left of its process group, SIGKILL it after grace_s."""
    deadline = time.monotonic() + grace_s
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        while time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                return
