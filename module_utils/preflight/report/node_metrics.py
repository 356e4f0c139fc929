"""One node's Prometheus textfile: what the node's last Preflight run found, in Prometheus naming.

playbooks/report.yml copies the text to the node itself, into node_exporter's textfile directory
(preflight_textfile_dir), so every node keeps its own series: a --limit run rewrites only the nodes it ran
on, and node_exporter's `instance` label says which node a series is. So there is no host label here, and no
run id (a label that changes every run makes a new series every run): the run's time is a value,
preflight_last_run_timestamp_seconds. Each quantity is its own metric in base units (seconds, ratio); every
label takes values from a fixed set (statuses, check ids, THP choices, the probe plan's entries).
A figure that was not measured is left out, never written as 0.
"""

from __future__ import annotations

from ..core.document import HOST_STATUSES
from . import fleet, metrics
from .prometheus import CHECK_STATUSES, labels

# A node gets its own file only when the run reached it: every host status but unreachable.
RUN_STATUSES = tuple(status for status in HOST_STATUSES if status != "unreachable")
VERDICTS = ("pass", "warn", "fail")
FILE_NAME = "preflight.prom"

# The probe unit a figure comes in -> the factor to the Prometheus base unit of its metric.
TO_BASE = {"ms": 1e-3, "s": 1.0, "ratio": 1.0, "x": 1.0}

# Each headline figure (metrics.headline, keyed by its threshold) -> (metric, the unit it must come in, help).
QUANTITIES = {
    "load_cold_s": (
        "preflight_load_cold_seconds",
        "s",
        "Cold model load, page cache dropped: process start to model loaded.",
    ),
    "load_warm_s": ("preflight_load_warm_seconds", "s", "Warm model load: process start to model loaded."),
    "load_weights_fraction_of_disk": (
        "preflight_load_weights_disk_ratio",
        "ratio",
        "Cold weights read speed over the disk's own sequential read of the same files.",
    ),
    "ttft_cold_ms": ("preflight_ttft_cold_seconds", "ms", "Time to first token of the first request after start."),
    "ttft_warm_ms": ("preflight_ttft_warm_seconds", "ms", "Median time to first token, warm server."),
    "kv_max_concurrency": (
        "preflight_kv_max_concurrency",
        "x",
        "Requests of max-model-len tokens that fit in the KV cache at once.",
    ),
    "batching_speedup": (
        "preflight_batching_speedup_ratio",
        "x",
        "Output throughput at the highest concurrency over sequential.",
    ),
    "batching_ttft_p95_ms": ("preflight_batching_ttft_p95_seconds", "ms", "TTFT p95 at the highest concurrency."),
}


def _num(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value))


class Families:
    """Metric families in the order first added; a family without samples is not written."""

    def __init__(self):
        self._families: dict[str, dict] = {}

    def add(self, name: str, help_text: str, value, **kv) -> None:
        family = self._families.setdefault(name, {"help": help_text, "samples": []})
        if value is not None:
            family["samples"].append(f"{name}{labels(**kv) if kv else ''} {_num(value)}")

    def text(self) -> str:
        out = []
        for name, family in self._families.items():
            if family["samples"]:
                out += [f"# HELP {name} {family['help']}", f"# TYPE {name} gauge", *family["samples"]]
        return "\n".join(out) + "\n" if out else ""


def headline_sample(figure: dict) -> tuple[str, str, float, dict] | None:
    """(metric, help, value in base units, labels) for one headline figure; None when it has no value or is
    not a quantity Preflight exports. A figure in another unit than its quantity's is a bug: ValueError."""
    quantity = QUANTITIES.get(figure.get("threshold"))
    if quantity is None or figure.get("value") is None:
        return None
    name, unit, help_text = quantity
    if figure.get("unit") != unit:
        raise ValueError(f"{figure['metric']}: unit {figure.get('unit')!r}, {name} expects {unit!r}")
    kv = {}
    if figure["threshold"] == "kv_max_concurrency":  # kv.max_concurrency.<max_model_len>.<budget>
        _kv, _what, max_model_len, budget = figure["metric"].split(".", 3)
        kv = {"max_model_len": max_model_len, "kv_budget": budget}
    return name, help_text, float(figure["value"]) * TO_BASE[unit], kv


def _facts(fam: Families, facts: dict) -> None:
    thp = facts.get("thp") or {}
    if thp.get("supported"):
        fam.add(
            "preflight_thp_info",
            "THP settings read back after tuning (always 1; the values are labels).",
            1,
            enabled=thp.get("enabled"),
            defrag=thp.get("defrag"),
            khugepaged_defrag=thp.get("khugepaged_defrag"),
        )
    for size, pool in sorted(((facts.get("hugepages") or {}).get("sizes") or {}).items()):
        fam.add("preflight_hugepages_reserved", "Hugepages reserved, per page size.", pool.get("total"), size=size)
    fam.add("preflight_gpus", "GPUs NVML reported.", len(facts.get("gpus") or []))


def _run(fam: Families, run: dict) -> None:
    fam.add("preflight_run_duration_seconds", "The whole run on the node, tuning included.", run.get("total_s"))
    fam.add(
        "preflight_certify_duration_seconds",
        "What certifies the node (facts, probe runtime, probes), against the level's budget.",
        run.get("certify_s"),
    )
    fam.add("preflight_level_budget_seconds", "The level's time budget for certifying.", run.get("budget_s"))
    for phase in run.get("phases") or []:
        fam.add(
            "preflight_phase_duration_seconds",
            "How long each phase of the run took.",
            phase.get("duration_s"),
            phase=phase.get("name"),
        )


def node_textfile(doc: dict, run_timestamp: float) -> str:
    """The textfile for the node of `doc` (a judged host document of a host that was reached)."""
    fam = Families()
    fam.add("preflight_last_run_timestamp_seconds", "When Preflight's last run on this node ended (Unix time).",
            float(run_timestamp))
    for status in RUN_STATUSES:
        fam.add("preflight_run_status", f"1 for the run's status on this node ({', '.join(RUN_STATUSES)}).",
                doc["status"] == status, status=status)
    for verdict in VERDICTS:
        fam.add("preflight_verdict", "1 for the node's verdict (pass, warn, fail).", doc["verdict"] == verdict,
                verdict=verdict)
    if doc.get("level") is not None:
        fam.add("preflight_level_info", "The certification level of the run (always 1; the level is a label).",
                1, level=doc["level"])
    for c in doc["checks"]:
        for status in CHECK_STATUSES:
            fam.add("preflight_check_status", "1 for each check's status (pass, warn, fail, skip).",
                    c["status"] == status, check=c["id"], status=status)
    for status, n in fleet.counts(doc["checks"]).items():
        fam.add("preflight_checks", "Checks per status.", n, status=status)
    if doc.get("facts"):
        _facts(fam, doc["facts"])
    for figure in metrics.headline(doc):
        sample = headline_sample(figure)
        if sample:
            name, help_text, value, kv = sample
            fam.add(name, help_text, value, **kv)
    for o in doc.get("outliers") or []:
        fam.add("preflight_outlier", "1 when a figure is an outlier against its GPU class (robust z-score).", 1,
                figure=o["metric"], direction=o["direction"])
    if doc.get("run"):
        _run(fam, doc["run"])
    fam.add("preflight_recommendations", "Recommendations for the node.", len(doc.get("recommendations") or []))
    if doc.get("history") is not None:
        fam.add("preflight_regressions", "Regressions beyond noise since the node's previous run.",
                len(doc["history"]["regressions"]))
    return fam.text()


def node_textfiles(docs: list[dict], run_timestamp: float, unwritable=()) -> dict[str, str]:
    """{host: textfile} for every host Preflight may write to: reached, and not among `unwritable` (a login
    without root, stopped before any change: playbooks/tasks/privilege.yml)."""
    return {d["host"]: node_textfile(d, run_timestamp) for d in docs
            if d["status"] != "unreachable" and d["host"] not in unwritable}
