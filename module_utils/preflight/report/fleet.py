"""Fleet view: robust outliers within a GPU class, and the summary document (one row per host)."""

from __future__ import annotations

import statistics

from ..core.catalog import SUMMARY_SCHEMA_VERSION
from ..core.document import HOST_STATUSES, comparison_group
from ..core.thresholds import MAD_SCALE, OUTLIER_MIN_HOSTS, OUTLIER_MIN_RELATIVE, OUTLIER_SCORE
from . import headline, metrics


def outliers(
    docs: list[dict],
    score_limit: float = OUTLIER_SCORE,
    min_relative: float = OUTLIER_MIN_RELATIVE,
) -> dict[str, list[dict]]:
    """{host: [outlier, ...]} comparing each figure with its GPU class's median.

    A host is flagged when its robust z-score passes `score_limit` AND it is more than `min_relative`
    away from the median (a very uniform fleet has a tiny MAD; 2 % off is not worth a page). With a MAD
    of 0 (most hosts identical) any host more than `min_relative` away is flagged. Needs OUTLIER_MIN_HOSTS
    hosts or more in the class: with two, neither is the odd one out. Passing hosts are flagged too: that is the point.
    """
    flagged: dict[str, list[dict]] = {d["host"]: [] for d in docs}
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        if doc["status"] == "ok":
            groups.setdefault(comparison_group(doc), []).append(doc)
    for group, members in sorted(groups.items()):
        per_host = {d["host"]: metrics.numeric_facts(d) for d in members}
        names = sorted({m for figs in per_host.values() for m in figs})
        for name in names:
            values = {h: figs[name] for h, figs in per_host.items() if name in figs}
            if len(values) < OUTLIER_MIN_HOSTS:
                continue
            numbers = [v[0] for v in values.values()]
            median = statistics.median(numbers)
            mad = statistics.median(abs(x - median) for x in numbers)
            for host, (value, unit, more_is_better) in sorted(values.items()):
                deviation = value - median
                if deviation == 0:
                    continue
                relative = abs(deviation) / abs(median) if median else float("inf")
                if relative <= min_relative:
                    continue
                score = MAD_SCALE * deviation / mad if mad > 0 else None
                if score is not None and abs(score) <= score_limit:
                    continue
                flagged[host].append(
                    {
                        "metric": name,
                        "value": value,
                        "unit": unit,
                        "group": group,
                        "fleet_median": median,
                        "mad": mad,
                        "score": None if score is None else round(score, 2),
                        "direction": "high" if deviation > 0 else "low",
                        "worse": (deviation < 0) if more_is_better else (deviation > 0),
                        "hosts": len(values),
                    }
                )
    return flagged


def describe_outlier(o: dict) -> str:
    unit = f" {o['unit']}" if o.get("unit") else ""
    score = f"robust z {o['score']:+.1f}" if o.get("score") is not None else "the rest of the class is identical"
    worse = {True: "worse than", False: "better than", None: "different from"}[o.get("worse")]
    return (
        f"{o['metric']} = {o['value']:g}{unit}, {worse} the {o['group']} median {o['fleet_median']:g}{unit} "
        f"of {o['hosts']} hosts ({score})"
    )


def counts(checks: list[dict]) -> dict[str, int]:
    out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
    for c in checks:
        out[c["status"]] += 1
    return out


def summary(docs: list[dict], run_id: str, time: str, files: dict[str, dict[str, str]]) -> dict:
    """summary.json: the run at a glance, with every host as a row (incomplete, failed and unreachable ones too)."""
    rows = []
    totals = {
        "hosts": len(docs),
        **{status: 0 for status in HOST_STATUSES},
        "verdict_pass": 0,
        "verdict_warn": 0,
        "verdict_fail": 0,
        "checks_pass": 0,
        "checks_warn": 0,
        "checks_fail": 0,
        "checks_skip": 0,
    }
    for doc in sorted(docs, key=lambda d: d["host"]):
        c = counts(doc["checks"])
        totals[doc["status"]] += 1
        totals[f"verdict_{doc['verdict']}"] += 1
        for k, v in c.items():
            totals[f"checks_{k}"] += v
        facts = doc["facts"] or {}
        thp = facts.get("thp") or {}
        rows.append(
            {
                "host": doc["host"],
                "gpu_class": doc["gpu_class"],
                "status": doc["status"],
                "verdict": doc["verdict"],
                "error": doc["error"],
                "checks": c,
                "failing": [f"{x['id']}: {x['reason']}" for x in doc["checks"] if x["status"] == "fail"],
                "warnings": [f"{x['id']}: {x['reason']}" for x in doc["checks"] if x["status"] == "warn"],
                "thp_enabled": thp.get("enabled"),
                "thp_defrag": thp.get("defrag"),
                "kernel": (facts.get("kernel") or {}).get("release"),
                "gpus": len(facts.get("gpus") or []) if facts else None,
                "probes": sorted(doc["probes"]),
                "recommendations": doc["recommendations"],
                "outliers": doc["outliers"],
                "regressions": (doc["history"] or {}).get("regressions", []),
                "previous_run_id": (doc["history"] or {}).get("previous_run_id"),
                "files": files.get(doc["host"], {}),
                "headline": headline.verdict_line(doc),
                "key_figures": headline.key_figures(doc),
            }
        )
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": run_id,
        "time": time,
        "totals": totals,
        "hosts": rows,
        "not_ok": [r["host"] for r in rows if r["status"] != "ok"],
        "failing_checks": {r["host"]: r["failing"] for r in rows if r["failing"] and r["status"] == "ok"},
    }
