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


def run(cmd: list[str], probe: str, env: dict[str, str], cwd: str, timeout_s: float) -> ProbeRun:
    """Run the probe in its own process group; on timeout SIGTERM the group, then SIGKILL what is left."""
    started = time.monotonic()
    out = ProbeRun(cmd=cmd)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        out.problem = f"cannot start {cmd[0]}: {exc.strerror or exc}"
        out.duration_s = round(time.monotonic() - started, 3)
        return out
    try:
        out.stdout, out.stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out.timed_out = True
        _stop_group(proc)
        out.stdout, out.stderr = proc.communicate()
    out.rc = proc.returncode
    out.duration_s = round(time.monotonic() - started, 3)
    if out.timed_out:
        out.problem = f"the probe ran past its timeout of {timeout_s:g} s and was stopped"
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
