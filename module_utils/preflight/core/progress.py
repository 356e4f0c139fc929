"""A probe's progress on the node, and what the controller shows of it while the probe runs.

library/slm_probe.py sends the probe's stderr (its progress lines, such as ``probes kv: [2/5] max-model-len 16384,
0.5``) to a log on the node, between a start line and an end line; an operator can ``tail -f`` it. While the probe
runs, library/slm_probe_wait.py (a task retried until the probe ends) reads the last progress line, touches the
log's heartbeat file - the probe is stopped and the node put back when nobody has touched it for a while, that is
when the controller is gone - and returns one line for the console: host, probe, step, elapsed time, the level's
budget, and the log's path (callback_plugins/preflight_progress.py prints it; ansible-runner's event stream carries
it in each retry event).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import time

from . import lock

START = "PREFLIGHT_PROBE_START"
END = "PREFLIGHT_PROBE_END"
HEARTBEAT_SUFFIX = ".heartbeat"


def log_path(log_dir: str, name: str) -> str:
    """The node log of one planned probe (a shared-server run's name holds '+', spaces and commas)."""
    return os.path.join(log_dir, re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") + ".log")


def heartbeat_path(log: str) -> str:
    return log + HEARTBEAT_SUFFIX


def touch(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o640)
    os.close(fd)
    os.utime(path, None)


def open_log(log: str, probe: str):
    """The log, created private (no symlink followed) and started. An earlier run's heartbeat is removed: the
    heartbeat is armed by the first wait, so that a host still queued for a free fork is never stopped."""
    os.makedirs(os.path.dirname(log) or ".", mode=0o755, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    handle = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    handle.write(f"{START} {time.time():.3f} {probe}\n")
    handle.flush()
    try:
        os.unlink(heartbeat_path(log))
    except FileNotFoundError:
        pass
    return handle


def close_log(log: str, rc, problem) -> str:
    """Ends the log; returns what the probe wrote to stderr (the lines between start and end)."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"{END} rc={rc}{' ' + problem if problem else ''}\n")
    with open(log, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    return "\n".join(line for line in lines if not line.startswith((START, END))) + "\n"


def heartbeat_age(log: str) -> float | None:
    try:
        return time.time() - os.stat(heartbeat_path(log)).st_mtime
    except OSError:
        return None


def read(log: str) -> dict:
    """{started (epoch or None), done, step (the last progress line, or ''), probe}."""
    try:
        with open(log, encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip("\n") for line in handle if line.strip()]
    except OSError:
        return {"started": None, "done": False, "step": "", "probe": None}
    started, probe = None, None
    if lines and lines[0].startswith(START):
        parts = lines[0].split(maxsplit=2)
        started = float(parts[1]) if len(parts) > 1 else None
        probe = parts[2] if len(parts) > 2 else None
    done = bool(lines) and lines[-1].startswith(END)
    steps = [line for line in lines if not line.startswith((START, END))]
    return {"started": started, "done": done, "step": steps[-1].strip() if steps else "", "probe": probe}


def _epoch(iso) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def line(host: str, name: str, state: dict, log: str, run_started=None, budget_s=None, now: float | None = None) -> str:
    """``node1 · probe ttft · probes kv: [2/5] max-model-len 16384 · 45 s · run 212 s of 900 s · log node1:/path``."""
    now = time.time() if now is None else now
    parts = [host, f"probe {name}", state["step"] or "starting"]
    if state["started"] is not None:
        parts.append(f"{now - state['started']:.0f} s")
    begun = _epoch(run_started) if run_started else None
    if begun is not None:
        budget = f" of the level's {float(budget_s):.0f} s budget" if budget_s else ""
        parts.append(f"run {now - begun:.0f} s{budget}")
    parts.append(f"log {host}:{log}")
    return " · ".join(parts)


def wait(log: str, wait_s: float, poll_s: float = 1.0) -> dict:
    """Up to wait_s, touching the heartbeat every poll_s, until the log says the probe ended; its state. (A wait
    whose controller is gone runs out its wait_s: the probe is stopped at most wait_s + PROBE_HEARTBEAT_S later.
    Whether sshd still reads our stdout cannot be told reliably through a multiplexed connection.)"""
    deadline = time.monotonic() + wait_s
    os.makedirs(os.path.dirname(log) or ".", mode=0o755, exist_ok=True)
    while True:
        touch(heartbeat_path(log))
        lock.touch_heartbeat()  # the run's lock, too: a holder whose controller stopped polling lets go
        state = read(log)
        if state["done"]:
            lock.disarm_heartbeat()  # nothing polls until the next probe's wait: its age means nothing then
            return state
        if time.monotonic() >= deadline:
            return state
        time.sleep(poll_s)
