"""probes.batching: per-level figures and the knee from raw runs (known answers), then a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from probes import batching, result
from probes.batching import LevelRun
from probes.vllm_client import RequestRecord
from tests.probes.vllm_fixtures import probe_env


def _req(ttft_s: float, e2e_s: float, tokens: int = 10, ok: bool = True) -> RequestRecord:
    return RequestRecord(api="completions", sent_at_s=0.0, ok=ok, ttft_s=ttft_s if ok else None, e2e_s=e2e_s,
                         chunk_times_s=[ttft_s], output_tokens=tokens if ok else None,
                         error=None if ok else "HTTP 503: overloaded")


def _level(concurrency: int, walls: list[float], ttft_s: float, n: int = 8, tokens: int = 10) -> list[LevelRun]:
    return [LevelRun(concurrency, i, w, [_req(ttft_s + 0.001 * j, ttft_s + 0.1, tokens) for j in range(n)])
            for i, w in enumerate(walls)]


def test_levels_double_up_to_the_limit_and_include_it():
    assert batching.levels_up_to(64, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert batching.levels_up_to(64, 20) == [1, 2, 4, 8, 16, 20]
    assert batching.levels_up_to(6, 100) == [1, 2, 4, 6]
    assert batching.levels_up_to(1, 8) == [1]


def test_level_result_throughput_is_batch_tokens_over_wall_time():
    lr = batching.level_result(_level(4, [2.0, 4.0], 0.05), sequential_tok_per_s=20.0)
    assert lr.output_tok_per_s["samples"] == [40.0, 20.0]  # 8 requests x 10 tokens / wall
    assert lr.request_per_s["samples"] == [4.0, 2.0]
    assert lr.speedup_vs_sequential == pytest.approx(30.0 / 20.0)
    assert lr.ttft_ms["n"] == 16 and lr.ttft_p50_ms == pytest.approx(53.5)
    assert lr.e2e_p50_ms == pytest.approx(150.0)


def test_a_repeat_with_a_failed_request_gives_no_throughput_sample():
    runs = _level(2, [1.0, 1.0], 0.05)
    runs[1].records[0] = _req(0.05, 0.2, ok=False)
    lr = batching.level_result(runs)
    assert lr.output_tok_per_s["samples"] == [80.0]
    assert (lr.n_requests, lr.n_ok, lr.errors) == (16, 15, ["HTTP 503: overloaded"])


def _levels(spec: dict[int, tuple[list[float], float]]) -> list[batching.LevelResult]:
    return [batching.level_result(_level(c, walls, ttft)) for c, (walls, ttft) in spec.items()]


def test_knee_where_throughput_goes_flat_and_ttft_keeps_rising():
    levels = _levels({
        1: ([8.0, 8.1, 7.9, 8.05], 0.010),
        2: ([4.0, 4.1, 3.9, 4.05], 0.012),
        4: ([2.0, 2.05, 1.95, 2.02], 0.020),
        8: ([2.0, 1.9, 2.1, 2.04], 0.060),  # same wall as 4: no more throughput, TTFT x3
    })
    knee = batching.find_knee(levels)
    assert (knee.concurrency, knee.determined) == (4, True)
    assert knee.text.startswith("knee at concurrency 4: going to 8 left throughput flat (39.8 -> 39.6 tok/s;")
    assert [s["from"] for s in knee.steps] == [1, 2, 4]


def test_no_knee_while_throughput_still_rises():
    levels = _levels({1: ([8.0, 8.1, 7.9, 8.05], 0.010), 2: ([4.0, 4.1, 3.9, 4.05], 0.012),
                      4: ([2.0, 2.05, 1.95, 2.02], 0.020)})
    knee = batching.find_knee(levels)
    assert (knee.concurrency, knee.determined) == (None, True)
    assert knee.text.startswith("no knee up to concurrency 4")


def test_a_large_gain_inside_noise_is_unclear_not_a_knee():
    """The CPU run here: 44.8 -> 66.2 tok/s with overlapping intervals is not 'throughput stopped rising'."""
    levels = _levels({
        1: ([8.0, 9.5, 6.8, 8.3], 0.010),
        2: ([5.0, 8.0, 4.4, 5.9], 0.030),  # +51 % median, intervals overlap
        4: ([2.6, 2.5, 2.7, 2.55], 0.040),
        8: ([2.6, 2.5, 2.7, 2.62], 0.120),  # flat, TTFT x3
    })
    knee = batching.find_knee(levels)
    assert [s["throughput_step"] for s in knee.steps] == ["unclear", "rose", "flat"]
    assert (knee.concurrency, knee.determined) == (4, True)
    assert knee.text.endswith("earlier steps c=1->c=2 gained over 10 % but inside noise, so throughput may have "
                              "levelled off before this")
    only_noise = batching.find_knee(levels[:2])
    assert (only_noise.concurrency, only_noise.determined) == (None, False)
    assert only_noise.text.startswith("not determined up to concurrency 2: steps c=1->c=2 gained over 10 %")


def test_knee_is_not_named_from_too_few_repeats():
    levels = _levels({1: ([8.0], 0.010), 2: ([8.0], 0.050)})
    knee = batching.find_knee(levels)
    assert (knee.concurrency, knee.determined) == (None, False)
    assert knee.text.startswith(f"not determined: throughput at c=1 or c=2 has fewer than {batching.MIN_COMPARE_N}")


def test_table_prints_a_dash_for_what_was_not_measured():
    runs = _level(1, [1.0], 0.05)
    runs[0].records = [_req(0.05, 0.1, ok=False)]
    table = batching.format_table([batching.level_result(runs)])
    assert table[1].split()[:4] == ["1", "1", "0/1", "1.00"]
    assert table[1].split()[4] == "-"  # no throughput, not 0


# ---- a real vLLM ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batching_against_the_session_server(vllm_server):
    run = asyncio.run(batching.run_batching(
        vllm_server, levels=[1, 2, 4], n_prompts=8, repeats=batching.MIN_COMPARE_N, max_tokens=16, prompt_words=64,
        warmup=1, time_budget_s=600, request_timeout_s=300))
    res = batching.compute(run)
    assert run.skipped_levels == [] and run.stopped_by is None
    assert [lv.concurrency for lv in res.levels] == [1, 2, 4]
    for lv in res.levels:
        assert (lv.n_requests, lv.n_ok) == (8 * batching.MIN_COMPARE_N, 8 * batching.MIN_COMPARE_N)
        assert lv.output_tok_per_s["n"] == batching.MIN_COMPARE_N
        assert lv.ttft_p95_ms >= lv.ttft_p50_ms > 0 and lv.e2e_p50_ms > lv.ttft_p50_ms
    assert res.levels[0].speedup_vs_sequential == 1.0
    # Concurrent batches finish sooner than one-at-a-time on continuous batching.
    assert res.levels[-1].wall_s["median"] < res.levels[0].wall_s["median"]
    # Whether a knee shows depends on this machine's noise; what is said must match what was found.
    knee = res.knee
    assert 1 <= len(knee.steps) <= 2  # it stops at the knee
    assert all(s["throughput_step"] in ("rose", "fell", "flat", "unclear") for s in knee.steps)
    if knee.concurrency is not None:
        assert knee.determined and knee.text.startswith(f"knee at concurrency {knee.concurrency}: ")
    elif knee.determined:
        assert knee.text.startswith("no knee up to concurrency 4")
    else:
        assert knee.text.startswith("not determined up to concurrency 4")
    assert len(res.table) == 4


@pytest.mark.slow
def test_batching_cli_is_bounded_by_its_time_budget(vllm_server):
    proc = subprocess.run(
        [sys.executable, "-m", "probes", "batching", "--endpoint", vllm_server.base_url, "--api-key",
         vllm_server.api_key, "-N", "4", "--max-concurrency", "4", "--repeats", "1", "--max-tokens", "8",
         "--warmup", "0", "--time-budget-s", "0.001", "--json"],
        capture_output=True, text=True, timeout=600, env=probe_env(),
    )
    doc = json.loads(proc.stdout)
    result.validate(doc)
    res = doc["results"]
    assert res["levels_planned"] == [1, 2, 4]
    assert res["skipped_levels"] == [1, 2, 4] and res["stopped_by"] == "time budget 0.001 s used up"
    statuses = {v["name"]: v["status"] for v in doc["verdicts"]}
    assert statuses["levels_skipped"] == "warn" and statuses["knee"] == "warn"


@pytest.mark.slow
def test_batching_cli_json_against_an_endpoint(vllm_server):
    proc = subprocess.run(
        [sys.executable, "-m", "probes", "batching", "--endpoint", vllm_server.base_url, "--api-key",
         vllm_server.api_key, "-N", "4", "--max-concurrency", "4", "--repeats", "1", "--max-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=600, env=probe_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    levels = doc["results"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2, 4]
    assert all(lv["n_ok"] == 4 for lv in levels)
    assert doc["results"]["knee"]["determined"] is False  # one repeat cannot tell flat from noise
    raw = doc["results"]["raw"]
    assert [r["concurrency"] for r in raw] == [1, 2, 4]
    assert all(q["output_tokens"] == 8 and q["ttft_s"] > 0 for r in raw for q in r["requests"])
    assert raw[0]["requests"][0]["sent_at_s"] >= 0
