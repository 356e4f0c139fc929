"""probes.server: the vLLM server the probe owns, its start-up log, and that it is always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probes import result, vllm_metrics
from probes.procgroup import alive, descendants, group_members, preloaded_in
from probes.server import (
    KvBudget,
    ServerSpec,
    ServerStartError,
    StartTimeline,
    VllmServer,
    parse_kv_budget,
    phase_split,
    preload_libraries,
)
from tests.probes.vllm_fixtures import READY_TIMEOUT_S, probe_env, require_vllm, start_probe, wait_for_stderr_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


# ---- pure functions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("0.5", "fraction", 0.5),
        ("1", "fraction", 1.0),
        ("1GiB", "bytes", 1024**3),
        ("512MiB", "bytes", 512 * 1024**2),
        ("2M", "bytes", 2 * 1024**2),
        ("1073741824", "bytes", 1024**3),
    ],
)
def test_kv_budget_is_a_fraction_up_to_one_and_bytes_above(text, kind, value):
    budget = parse_kv_budget(text)
    assert (budget.kind, budget.value) == (kind, value)


def test_kv_budget_flags_follow_the_kind():
    assert KvBudget("fraction", 0.3).flags() == ["--gpu-memory-utilization", "0.3"]
    assert KvBudget("bytes", 2 * 1024**2).flags() == ["--kv-cache-memory-bytes", "2097152"]


def test_kv_budget_rejects_words_with_the_allowed_forms():
    with pytest.raises(ValueError, match=r"give a fraction of device memory \(0.5\) or a size"):
        parse_kv_budget("lots")


def test_server_argv_binds_loopback_with_the_budget_and_never_the_key():
    spec = ServerSpec(model="/m", max_model_len=4096, kv_budget=KvBudget("fraction", 0.5), enforce_eager=True,
                      extra_args=["--dtype", "bfloat16"], python="py")
    assert spec.argv(8001) == [
        "py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--host", "127.0.0.1", "--port", "8001",
        "--max-model-len", "4096", "--gpu-memory-utilization", "0.5", "--enforce-eager",
        "--dtype", "bfloat16",
    ]


def test_phase_split_cuts_spawn_to_ready_at_the_milestones():
    tl = StartTimeline(spawned_at=0.0, ready_s=40.0, milestones_s={
        "engine_config": 10.0, "model_load_start": 20.0, "weights_loaded": 22.5, "kv_cache_sized": 30.0,
        "engine_ready": 35.0, "api_listening": 38.0})
    assert phase_split(tl) == {
        "imports_and_config_s": 10.0, "engine_and_worker_start_s": 10.0, "weights_load_wall_s": 2.5,
        "profile_and_compile_s": 7.5, "kv_alloc_graphs_warmup_s": 5.0, "api_server_start_s": 3.0,
        "until_health_ok_s": 2.0,
    }
    tl.milestones_s.pop("kv_cache_sized")
    split = phase_split(tl)
    assert split["profile_and_compile_s"] is None and split["kv_alloc_graphs_warmup_s"] is None


def test_startup_log_of_vllm_cpu_is_read_into_phases():
    log = vllm_metrics.parse_startup_log((FIXTURES / "vllm_startup_cpu_0.32.0.log").read_text())
    assert log.kv_device == "CPU"
    assert log.dtype == "bfloat16"  # the float32 checkpoint is served in bf16
    assert log.weights_load_s == 0.02
    assert log.kv_cache_tokens == 2_097_152  # 1 GiB / 512 B per token
    assert (log.max_concurrency_len, log.max_concurrency) == (32768, 64.0)
    assert log.init_engine_s == 1.22
    assert log.graph_capture_s is None and log.available_kv_cache_gib is None  # GPU-only lines


def test_startup_log_of_a_gpu_build_gives_load_compile_graphs_and_kv():
    # Lines in the wording of vLLM's GPU model runner and worker (vllm/v1/worker/gpu_model_runner.py etc.).
    text = "\n".join([
        "(EngineCore pid=1) INFO [default_loader.py:291] Loading weights took 2.21 seconds",
        "(EngineCore pid=1) INFO [gpu_model_runner.py:2602] Model loading took 2.9815 GiB memory and 2.437 seconds",
        "(EngineCore pid=1) INFO [backends.py:559] Dynamo bytecode transform time: 6.13 s",
        "(EngineCore pid=1) INFO [monitor.py:34] torch.compile takes 27.45 s in total",
        "(EngineCore pid=1) INFO [gpu_worker.py:298] Available KV cache memory: 35.46 GiB",
        "(EngineCore pid=1) INFO [kv_cache_utils.py:1087] GPU KV cache size: 1,327,840 tokens",
        "(EngineCore pid=1) INFO [kv_cache_utils.py:1091] Maximum concurrency for 4,096 tokens per request: 324.18x",
        "(EngineCore pid=1) INFO [gpu_model_runner.py:3480] Graph capturing finished in 7 secs, took 0.52 GiB",
        "(EngineCore pid=1) INFO [core.py:210] init engine (profile, create kv cache, warmup model) took 45.31 "
        "seconds",
    ])
    log = vllm_metrics.parse_startup_log(text)
    assert log.kv_device == "GPU"
    assert (log.weights_load_s, log.model_load_gib, log.model_load_s) == (2.21, 2.9815, 2.437)
    assert (log.dynamo_transform_s, log.torch_compile_s) == (6.13, 27.45)
    assert (log.graph_capture_s, log.graph_capture_gib) == (7.0, 0.52)
    assert (log.available_kv_cache_gib, log.kv_cache_tokens) == (35.46, 1_327_840)
    assert (log.max_concurrency_len, log.max_concurrency) == (4096, 324.18)
    assert log.init_engine_s == 45.31


def test_preloaded_in_reads_the_maps_of_each_process():
    me = os.getpid()
    libc = next(line.split()[-1] for line in Path(f"/proc/{me}/maps").read_text().splitlines()
                if "/libc.so" in line or "/libc-" in line)
    check = preloaded_in([me], [libc, "libc.so.6", "/nonexistent/libnothing.so"])
    assert check[libc] == {str(me): True}
    assert check["libc.so.6"] == {str(me): True}
    assert check["/nonexistent/libnothing.so"] == {str(me): False}
    assert preload_libraries({"LD_PRELOAD": "/a/x.so:/b/y.so /c/z.so"}) == ["/a/x.so", "/b/y.so", "/c/z.so"]


def test_group_members_and_descendants_see_a_whole_process_group():
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(group_members(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_members(proc.pid)) == 3
        assert len(descendants(proc.pid)) == 2
        start = int(Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        assert alive(proc.pid, start) and not alive(proc.pid, start + 1)  # a reused pid is not ours
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # SIGKILL reaches the other members asynchronously: they are gone within moments, not at once.
    deadline = time.monotonic() + 5
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(proc.pid) == []


# ---- a real vLLM ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_server_environment_pins_one_gpu_and_keeps_nvlink_multicast_off():
    env = ServerSpec(model="/m", gpu=1, env={"LD_PRELOAD": "/lib/j.so"}).environment()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["LD_PRELOAD"] == "/lib/j.so"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # GPU 1 is NVML's GPU 1, the one the node facts list
    assert {k: env[k] for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")} == {
        "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    assert "CUDA_VISIBLE_DEVICES" not in ServerSpec(model="/m").environment()  # no --gpu: vLLM picks
    from probes import worker  # the load and generate probes' worker processes

    assert {k: worker.worker_env()[k] for k in worker.MULTICAST_OFF} == worker.MULTICAST_OFF


def test_session_server_is_ready_and_reports_its_start(vllm_server):
    srv = vllm_server
    assert srv.base_url.startswith("http://127.0.0.1:")
    assert srv.timeline.ready_s > 0
    assert {"engine_config", "kv_cache_sized", "engine_ready"} <= set(srv.timeline.milestones_s)
    log = srv.startup()
    assert log.kv_cache_tokens == 256 * 1024**2 // 512  # 2 layers x 2 KV heads x 32 x bf16 = 512 B/token
    assert log.max_concurrency_len == 2048
    assert [m.label for m in srv.memory[:2]] == ["before_start", "after_ready"]
    assert srv.memory[1].server_pss_bytes > 100 * 1024**2
    assert srv.log_path.exists() and "KV cache size" in srv.log_path.read_text()
    pids = srv.pids()
    assert srv.proc.pid in pids and len(pids) >= 3  # API server, engine core, worker
    assert all(int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[2]) == srv.pgid for p in pids)
    environ = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"NCCL_NVLS_ENABLE=0" in environ and b"NVSHMEM_DISABLE_NVLS=1" in environ


@pytest.mark.slow
def test_group_is_gone_after_an_exception_inside_the_with_block(tiny_model, tmp_path):
    require_vllm()
    srv = VllmServer(ServerSpec(model=str(tiny_model), max_model_len=1024, kv_budget=parse_kv_budget("64MiB"),
                                enforce_eager=True, ready_timeout_s=READY_TIMEOUT_S, log_path=tmp_path / "vllm.log"))
    with pytest.raises(RuntimeError, match="boom"), srv:
        pgid = srv.pgid
        assert len(group_members(pgid)) >= 3
        raise RuntimeError("boom")
    assert srv.stop_report.confirmed_gone and srv.stop_report.signal_sent == "SIGTERM"
    assert group_members(pgid) == []


@pytest.mark.slow
def test_group_is_gone_when_the_ready_deadline_passes(tiny_model, tmp_path):
    require_vllm()
    srv = VllmServer(ServerSpec(model=str(tiny_model), kv_budget=parse_kv_budget("64MiB"), ready_timeout_s=3.0,
                                log_path=tmp_path / "vllm.log"))
    with pytest.raises(ServerStartError, match=r"not ready within 3 s .*raise --ready-timeout-s"), srv:
        pass
    assert srv.stop_report.confirmed_gone
    assert group_members(srv.pgid) == []


@pytest.mark.slow
def test_sigterm_to_the_probe_while_vllm_starts_stops_the_group(tiny_model, tmp_path):
    require_vllm()
    probe = start_probe("server", "--model", str(tiny_model), "--kv-budget", "64MiB", "--enforce-eager",
                        "--log-dir", str(tmp_path), "--json")
    # Wait for the server process of the probe to exist, then terminate the probe mid-start.
    deadline = time.monotonic() + 120
    kids: list[int] = []
    while time.monotonic() < deadline and not kids:
        kids = [p for p in descendants(probe.pid) if "api_server" in Path(f"/proc/{p}/cmdline").read_text()]
        time.sleep(0.2)
    assert kids, "the probe never spawned vLLM"
    pgid = kids[0]
    time.sleep(3)
    probe.send_signal(signal.SIGTERM)
    out, err = probe.communicate(timeout=120)
    assert probe.returncode == 128 + signal.SIGTERM, err
    assert group_members(pgid) == []
    doc = json.loads(out)
    result.validate(doc)
    assert doc["errors"] == ["interrupted by SIGTERM: stopped the server and gave up the measurement"]
    assert doc["results"]["server"]["stop"]["confirmed_gone"] is True


@pytest.mark.slow
def test_sigterm_to_a_running_server_probe_stops_the_group_and_reports(tiny_model, tmp_path):
    """`python -m probes server --hold-s`: ready, LD_PRELOAD checked in every server process, then SIGTERM."""
    require_vllm()
    env_args = ["--server-env", f"LD_PRELOAD={JEMALLOC}"] if JEMALLOC.exists() else []
    probe = start_probe("server", "--model", str(tiny_model), "--kv-budget", "64MiB", "--max-model-len", "1024",
                        "--enforce-eager", "--hold-s", "900", *env_args, "--log-dir", str(tmp_path), "--json")
    line = wait_for_stderr_line(probe, "vLLM ready at", READY_TIMEOUT_S)
    pgid = int(line.split("process group ")[1].split(",")[0])
    assert len(group_members(pgid)) >= 3
    wait_for_stderr_line(probe, "holding the server", 300)  # after the first request and the preload check
    probe.send_signal(signal.SIGTERM)
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 128 + signal.SIGTERM
    assert group_members(pgid) == []
    doc = json.loads(out)
    result.validate(doc)
    res = doc["results"]
    assert res["server"]["stop"] == {**res["server"]["stop"], "confirmed_gone": True, "survivors": []}
    assert res["first_request"]["completion_tokens"] == 8
    labels = [m["label"] for m in res["server"]["memory"]]
    assert labels == ["before_start", "after_ready", "after_first_request"]
    assert res["start_phases_s"]["weights_load_wall_s"] is not None
    statuses = {v["name"]: v["status"] for v in doc["verdicts"]}
    assert statuses["server_ready"] == statuses["server_stopped"] == "pass"
    if env_args:
        assert statuses["preload_mapped"] == "pass", doc["verdicts"]
        assert all(res["preload_check"][str(JEMALLOC)].values())
        assert len(res["preload_check"][str(JEMALLOC)]) >= 3


@pytest.mark.slow
def test_endpoint_mode_never_starts_or_stops_anything(vllm_server):
    before = vllm_server.pids()
    probe = subprocess.run(
        [sys.executable, "-m", "probes", "server", "--endpoint", vllm_server.base_url, "--api-key",
         vllm_server.api_key, "--json"],
        capture_output=True, text=True, timeout=300, env=probe_env(),
    )
    assert probe.returncode == 0, probe.stderr
    doc = json.loads(probe.stdout)
    result.validate(doc)
    assert doc["results"]["server"]["started_by_probe"] is False
    assert "stop" not in doc["results"]["server"]
    assert vllm_server.pids() == before  # still running, same processes
