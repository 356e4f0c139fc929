"""The vLLM server's API key never reaches a command line (ps and /proc/PID/cmdline are world-readable): it goes
in the server's environment as VLLM_API_KEY, which vLLM reads, while the client keeps its Authorization header.
And a server that never becomes ready fails the probe after its ready timeout, with the reason, and is stopped.

The never-ready server is a fake vLLM (a `sleep` put where the Python that runs vLLM goes): a real process that
never listens, which a real vLLM cannot be made to be on purpose."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from probes.procgroup import group_members
from probes.server import ServerSpec, ServerStartError, VllmServer


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


def test_the_server_argv_never_holds_the_key():
    spec = ServerSpec(model="/m", max_model_len=1024, extra_args=["--dtype", "float32"], python="py")
    argv = spec.argv(8000)
    assert "--api-key" not in argv and not any("pf-" in a for a in argv)
    assert spec.key_environment("s3cret") == {"VLLM_API_KEY": "s3cret"}


@pytest.fixture
def never_ready_python(tmp_path) -> str:
    """A fake vLLM: takes the server's arguments and sleeps, never listening on its port."""
    fake = tmp_path / "fake-vllm-python"
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    return str(fake)


def test_a_server_that_never_becomes_ready_fails_with_the_reason_and_is_stopped(never_ready_python, tmp_path):
    srv = VllmServer(ServerSpec(model="/m", python=never_ready_python, ready_timeout_s=2.0,
                                log_path=tmp_path / "vllm.log"), api_key="pf-s3cret-key")
    srv.start()
    try:
        pid = srv.proc.pid
        # What ps shows: no key. What vLLM reads: VLLM_API_KEY in its environment.
        assert b"s3cret" not in _cmdline(pid)
        assert b"VLLM_API_KEY=pf-s3cret-key" in _environ(pid)
        started = time.monotonic()
        with pytest.raises(ServerStartError, match=r"^vLLM was not ready within 2 s \(no 200 from /health\); "
                                                   r"raise --ready-timeout-s if the machine is slow \(log: "):
            srv.wait_ready()
        assert time.monotonic() - started < 10
    finally:
        report = srv.stop()
    assert report.confirmed_gone and report.survivors == []
    assert group_members(srv.pgid) == []
    assert not Path(f"/proc/{pid}").exists()


def test_the_context_manager_stops_a_never_ready_server_on_the_way_out(never_ready_python, tmp_path):
    srv = VllmServer(ServerSpec(model="/m", python=never_ready_python, ready_timeout_s=1.0,
                                log_path=tmp_path / "vllm.log"))
    with pytest.raises(ServerStartError, match="not ready within 1 s"), srv:
        pass
    assert srv.stop_report.confirmed_gone
    assert group_members(srv.pgid) == []


@pytest.mark.slow
def test_a_real_vllm_takes_the_key_from_its_environment_only(vllm_server):
    import httpx

    for pid in vllm_server.pids():
        assert vllm_server.api_key.encode() not in _cmdline(pid), pid
    assert "--api-key" not in vllm_server.describe()["argv"]
    url = f"{vllm_server.base_url}/v1/models"
    assert httpx.get(url, headers=vllm_server.headers(), timeout=30).status_code == 200
    assert httpx.get(url, timeout=30).status_code == 401  # the key is enforced: vLLM read it
    log = vllm_server.log_path.read_text()
    assert vllm_server.api_key not in log
