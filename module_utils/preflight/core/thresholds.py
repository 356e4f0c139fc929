"""Thresholds the report's checks judge against, and the fleet outlier score: defaults once, here.

`preflight_thresholds` in roles/preflight_defaults/defaults/main.yml documents every key with the same values
(a unit test, tests/unit/test_core_thresholds.py, fails when they differ); an inventory group file
(inventory/group_vars/h100.yml) overrides only what differs for that class. Each numeric threshold has a `warn`
and a `fail` level; null switches a level off. The direction (is lower better?) belongs to the figure, not to
the operator, so it is fixed here.
"""

from __future__ import annotations

import copy

# key: (direction, unit, what it limits). "max": the figure must stay at or below; "min": at or above.
NUMERIC = {
    "gpu_memory_used_idle_pct": ("max", "%", "GPU memory already in use before Preflight starts anything"),
    "load_cold_s": ("max", "s", "cold model load (page cache dropped, new process), import plus weights"),
    "load_warm_s": ("max", "s", "warm model load (weights in page cache), import plus weights"),
    "load_weights_fraction_of_disk": ("min", "", "weights read speed as a fraction of the disk's measured read speed"),
    "ttft_cold_ms": ("max", "ms", "time to first token of the first request after the server is ready"),
    "ttft_warm_ms": ("max", "ms", "median time to first token once warm"),
    "kv_max_concurrency": ("min", "x", "requests of max-model-len tokens that fit in the KV cache at once"),
    "batching_speedup": ("min", "x", "throughput at the highest concurrency over sequential throughput"),
    "batching_ttft_p95_ms": ("max", "ms", "p95 time to first token at the highest concurrency"),
    "spread_iqr_fraction": ("max", "", "interquartile range of repeated samples over their median (noisy node)"),
    "gpu_h2d_below_siblings_fraction": ("max", "", "how far a GPU's pinned copy GB/s is below its siblings' median"),
    "gpu_link_below_siblings_fraction": ("max", "", "how far a GPU's maximum PCIe link GB/s is below its siblings'"),
    "gpu_ttft_above_siblings_fraction": ("max", "", "how far a GPU's warm TTFT median is above its siblings' median"),
    "gpu_kv_below_siblings_fraction": ("max", "", "how far a GPU's KV cache tokens are below its siblings' median"),
}

DEFAULTS = {
    # Expected GPUs on the node; null: no expectation (CPU test hosts).
    "gpu_count": None,
    "gpu_memory_used_idle_pct": {"warn": 5, "fail": 50},
    "load_cold_s": {"warn": 60, "fail": 180},
    "load_warm_s": {"warn": 30, "fail": 90},
    "load_weights_fraction_of_disk": {"warn": 0.5, "fail": 0.1},
    "ttft_cold_ms": {"warn": 1000, "fail": 5000},
    "ttft_warm_ms": {"warn": 200, "fail": 1000},
    "kv_max_concurrency": {"warn": 8, "fail": 1},
    "batching_speedup": {"warn": 2.0, "fail": 1.0},
    "batching_ttft_p95_ms": {"warn": 1000, "fail": 5000},
    "spread_iqr_fraction": {"warn": 0.10, "fail": None},
    "gpu_h2d_below_siblings_fraction": {"warn": 0.15, "fail": 0.5},
    "gpu_link_below_siblings_fraction": {"warn": 0.01, "fail": 0.4},
    "gpu_ttft_above_siblings_fraction": {"warn": 0.15, "fail": 0.5},
    "gpu_kv_below_siblings_fraction": {"warn": 0.05, "fail": 0.25},
}

# What to do when a probe's headline figure misses its threshold (the GPU checks carry their own advice).
ADVICE = {
    "load_cold_s": "Slow storage or a slow page-cache fill: compare the weights' GB/s with the disk's read GB/s "
    "in this report.",
    "load_warm_s": "Weights are in page cache, so the time is Python imports and host-to-device copies: check CPU "
    "load, the CPU governor and the PCIe link.",
    "load_weights_fraction_of_disk": "Weights are read far below what the disk delivers: check the filesystem "
    "(network mount, small read-ahead) and that the probe model is on local disk.",
    "ttft_cold_ms": "The first request pays for compilation and allocation: warm the server before it takes traffic.",
    "ttft_warm_ms": "Prefill is slower than this class should be: check GPU clocks, other GPU processes, and THP and "
    "NUMA settings.",
    "kv_max_concurrency": "Too few requests of the full length fit in the KV cache: give vLLM more memory "
    "(gpu-memory-utilization) or lower max-model-len (see the recommendation).",
    "batching_speedup": "Concurrent requests do not raise throughput: the server is saturated at low concurrency "
    "(CPU-bound, tiny KV cache or a scheduler limit).",
    "batching_ttft_p95_ms": "Requests queue under load: lower max_num_seqs or max-model-len, or add capacity.",
}

# --- Fleet outliers (report/fleet.py), preflight_outlier_score and preflight_outlier_min_relative ----------
# 0.6745 makes the MAD of a normal sample comparable with its standard deviation (Iglewicz and Hoaglin);
# |score| > 3.5 is their suggested cut for "potential outlier".
MAD_SCALE = 0.6745
OUTLIER_SCORE = 3.5
# Deviations smaller than this fraction of the class median are not worth a page, whatever the score.
OUTLIER_MIN_RELATIVE = 0.10
# With two hosts neither is the odd one out.
OUTLIER_MIN_HOSTS = 3


class ThresholdError(ValueError):
    pass


def _numeric_problems(key: str, value, merged: dict) -> list[str]:
    if not isinstance(value, dict) or set(value) - {"warn", "fail"}:
        return [f"preflight_thresholds.{key} must be a mapping with 'warn' and/or 'fail', got {value!r}"]
    problems = []
    for level, limit in value.items():
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
            problems.append(f"preflight_thresholds.{key}.{level} must be a number or null, got {limit!r}")
        else:
            merged[key][level] = limit
    return problems


def resolve(overrides: dict | None) -> dict:
    """Defaults with the host's overrides on top; every problem reported at once, naming the key."""
    merged = copy.deepcopy(DEFAULTS)
    problems = []
    for key, value in (overrides or {}).items():
        if key == "gpu_count":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                problems.append(f"preflight_thresholds.gpu_count must be a whole number or null, got {value!r}")
            else:
                merged[key] = value
        elif key not in NUMERIC:
            problems.append(
                f"preflight_thresholds.{key} is not a known threshold (known: {', '.join(sorted(DEFAULTS))})"
            )
        else:
            problems += _numeric_problems(key, value, merged)
    if problems:
        raise ThresholdError("; ".join(problems))
    return merged


def judge(value: float | None, key: str, thresholds: dict) -> tuple[str, dict]:
    """('pass'|'warn'|'fail'|'skip', threshold record) for one figure against thresholds[key]."""
    direction = NUMERIC[key][0]
    limits = thresholds.get(key) or {}
    record = {"direction": direction, "warn": limits.get("warn"), "fail": limits.get("fail")}
    if value is None:
        return "skip", record

    def beyond(limit):
        if limit is None:
            return False
        return value > limit if direction == "max" else value < limit

    if beyond(record["fail"]):
        return "fail", record
    if beyond(record["warn"]):
        return "warn", record
    return "pass", record


def describe(record: dict, unit: str | None) -> str:
    """'must stay at or below 200 ms (fail above 1000 ms)' for people."""
    suffix = f" {unit}" if unit and unit not in ("", "x") else (unit or "")
    word, fail_word = ("at or below", "above") if record["direction"] == "max" else ("at or above", "below")
    parts = []
    if record.get("warn") is not None:
        parts.append(f"should stay {word} {record['warn']:g}{suffix}")
    if record.get("fail") is not None:
        parts.append(f"fails {fail_word} {record['fail']:g}{suffix}")
    return "; ".join(parts) or "no limit set"
