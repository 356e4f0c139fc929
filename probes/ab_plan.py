"""The A/B's plan and its arithmetic: the rotated schedule of starts, what one start recorded, the per-arm
summaries and comparisons (probes.stats), the verdicts, and pooling the starts of an earlier run. Pure
functions: nothing here touches the host or a server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from probes import stats

# name -> (unit, lower is better, compared between arms)
METRICS: dict[str, tuple[str, bool, bool]] = {
    "ready_s": ("s", True, True),
    "weights_load_s": ("s", True, True),
    "weights_load_gib": ("GiB", True, False),  # the same model in every arm: shown, not compared
    "first_ttft_ms": ("ms", True, True),
    "ttft_ms": ("ms", True, True),
    "output_tok_per_s": ("tok/s", False, True),
}


class AbError(Exception):
    """A start that cannot count as a sample (the setting did not take, the allocator was not mapped)."""


@dataclass(frozen=True)
class PlannedStart:
    order: int  # position in the whole run, from 0
    round: int  # each round runs every arm once
    arm: str


def schedule(arms: list[str], repeats: int, *, first_round: int = 0, first_order: int = 0) -> list[PlannedStart]:
    """Round r runs the arms rotated left by r: A B, B A, A B ... (two arms), A B C, B C A, C A B (three).
    Each arm then sits in each position equally often over len(arms) rounds, so neither a drift across the
    run nor 'the start right after another start' favours one arm. A run that continues an earlier one
    starts at the round after the earlier run's last."""
    out, k = [], len(arms)
    for r in range(first_round, first_round + repeats):
        for arm in arms[r % k:] + arms[: r % k]:
            out.append(PlannedStart(first_order + len(out), r, arm))
    return out


@dataclass
class StartRecord:
    """One server start. A start with `error` set is not a sample; a metric that was not measured is None."""

    arm: str
    round: int
    order: int
    setup: dict = field(default_factory=dict)  # what was done to the host before this start
    thp_enabled_at_start: str | None = None
    thp_enabled_after_ready: str | None = None
    thp_sizes_at_start: dict | None = None  # size -> setting, for the sizes a THP arm sets
    page_cache_bytes_at_start: int | None = None  # /proc/meminfo Cached just before spawn
    ready_s: float | None = None  # process spawn -> /health 200
    weights_load_s: float | None = None  # vLLM's "Loading weights took"
    weights_load_gib: float | None = None  # vLLM's "Model loading took N GiB" (GPU builds)
    model_load_s: float | None = None
    phases_s: dict = field(default_factory=dict)
    anon_huge_pages_bytes: int | None = None  # AnonHugePages over the server's processes at ready
    preload_check: dict | None = None
    first_ttft_ms: float | None = None  # first request after ready
    ttft_ms: float | None = None  # median of the warm requests of this start
    ttft_n: int = 0
    output_tok_per_s: float | None = None
    throughput_concurrency: int | None = None
    request_errors: list[str] = field(default_factory=list)
    pid: int | None = None
    log_path: str | None = None
    stop: dict | None = None
    error: str | None = None
    source: str | None = None  # None: this run; else the earlier result file it was read from (--continue-from)

    @property
    def is_sample(self) -> bool:
        return self.error is None and self.ready_s is not None


def metric_samples(starts: list[StartRecord], arm: str, metric: str) -> list[float]:
    """The arm's values of one metric, in run order, from the starts that count as samples."""
    return [getattr(s, metric) for s in starts if s.arm == arm and s.is_sample and getattr(s, metric) is not None]


def measured_metrics(starts: list[StartRecord]) -> list[str]:
    """Metrics with at least one value in some start; the others were not measured and are left out."""
    return [m for m in METRICS if any(getattr(s, m) is not None for s in starts if s.is_sample)]


def arm_summaries(starts: list[StartRecord], arms: list[str]) -> dict[str, dict[str, dict]]:
    """arm -> metric -> stats.summarize (unit in the metric's name and in the summary)."""
    metrics = measured_metrics(starts)
    return {arm: {m: stats.summarize(metric_samples(starts, arm, m), METRICS[m][0]) for m in metrics}
            for arm in arms}


def arm_comparisons(starts: list[StartRecord], arms: list[str]) -> dict[str, dict[str, dict]]:
    """Every arm after the first -> metric -> stats.compare(first arm, this arm)."""
    base = arms[0]
    out: dict[str, dict[str, dict]] = {}
    for arm in arms[1:]:
        out[arm] = {}
        for m in measured_metrics(starts):
            unit, lower_is_better, compared = METRICS[m]
            if compared:
                out[arm][m] = stats.compare(metric_samples(starts, base, m), metric_samples(starts, arm, m),
                                            name_a=base, name_b=arm, unit=unit, lower_is_better=lower_is_better)
    return out


def fmt_number(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def summary_line(arm: str, metric: str, s: dict) -> str:
    """'jemalloc ready_s: median 41.2 s, IQR 3.1 (7.5 %), n=4, CI 39.9-44.0' for people."""
    if not s["n"]:
        return f"{arm} {metric}: not measured (no start of this arm counted)"
    if s["n"] == 1:
        spread = "one start, no spread"
    elif s["iqr"] is not None and s["median"]:
        spread = f"IQR {fmt_number(s['iqr'])} ({100 * s['iqr'] / abs(s['median']):.1f} %)"
    else:
        spread = "IQR -"
    ci = "" if s["ci_low"] is None else f", CI of median {fmt_number(s['ci_low'])}-{fmt_number(s['ci_high'])}"
    return f"{arm} {metric}: median {fmt_number(s['median'])} {s['unit']}, {spread}, n={s['n']}{ci}"


def verdicts_for(starts: list[StartRecord], arms: list[str], summaries: dict, comparisons: dict, result_mod,
                 *, factor: str) -> list[dict]:
    v = []
    for arm in arms:
        lines = [summary_line(arm, m, s) for m, s in summaries[arm].items()] or [
            f"{arm}: nothing measured (no start of this arm counted)"]
        warned = [m for m, s in summaries[arm].items() if s["spread_warning"] and s["n"] > 1]
        v.append(result_mod.verdict(f"arm_{arm}", "warn" if warned else "info",
                                    "; ".join(lines) + (f" (large spread in {', '.join(warned)})" if warned else "")))
    for arm, by_metric in comparisons.items():
        for m, c in by_metric.items():
            v.append(result_mod.verdict(f"{arm}_vs_{arms[0]}_{m}", "info", f"{m}: {c['verdict']}"))
    thp_seen = {t for s in starts if s.is_sample for t in (s.thp_enabled_at_start, s.thp_enabled_after_ready) if t}
    if len(thp_seen) > 1 and factor != "thp":
        v.append(result_mod.verdict(
            "host_constant", "warn",
            f"THP enabled was not the same in every start ({', '.join(sorted(thp_seen))}): something else on this "
            "host wrote it during the A/B, so the arms may differ in more than the factor under test"))
    counted = [sum(1 for s in starts if s.arm == a and s.is_sample) for a in arms]
    if counted and min(counted) < stats.MIN_COMPARE_N:
        v.append(result_mod.verdict(
            "enough_repeats", "warn",
            f"{min(counted)} counted start(s) in the smallest arm: a difference can be told from noise only with "
            f"at least {stats.MIN_COMPARE_N} per arm (--repeats {stats.MIN_COMPARE_N} or more)"))
    return v


# Settings that must be equal for starts of an earlier run to be pooled with this run's.
POOLED_PARAMS = ("factor", "arms", "model", "enforce_eager", "max_model_len", "kv_budget", "server_arg", "server_env",
                 "jemalloc_path", "tcmalloc_path", "ttft_requests", "throughput_prompts", "concurrency", "max_tokens",
                 "prompt_words")


def earlier_starts(doc: dict, params: dict, source: str) -> tuple[list[StartRecord], list[str]]:
    """The starts of an earlier `ab` result made with the same settings; else [] and what differs."""
    if doc.get("probe") != "ab" or "starts" not in doc.get("results", {}):
        return [], [f"--continue-from {source}: not a result of `python -m probes ab` (probe {doc.get('probe')!r})"]
    differ = [f"{k} {doc['params'].get(k)!r} there, {params.get(k)!r} here" for k in POOLED_PARAMS
              if doc["params"].get(k) != params.get(k)]
    if differ:
        return [], [f"--continue-from {source}: its settings differ from this run's: {'; '.join(differ)}"]
    names = {f.name for f in dataclasses.fields(StartRecord)}
    starts = []
    for raw in doc["results"]["starts"]:
        rec = StartRecord(**{k: v for k, v in raw.items() if k in names})
        rec.source = rec.source or f"{source} (host {doc.get('host')}, {doc.get('started_at')})"
        starts.append(rec)
    return starts, []
