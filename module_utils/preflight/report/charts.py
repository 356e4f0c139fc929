"""Which charts a host page shows for each probe: whichever results are present, "not run" otherwise.

Every probe gets its statistic summaries as bars (median with the p5-p95 whisker, grouped by unit) and its
A/B comparisons as sample strips; the known probes add the chart that answers their question.
"""

from __future__ import annotations

from ansible.module_utils.preflight.report import metrics, svg

SECTIONS = [
    ("load", "Model load: cold vs warm"),
    ("generate", "Generation latency and allocators"),
    ("ttft", "Time to first token: cold vs warm"),
    ("kv", "KV cache: max concurrency vs max-model-len"),
    ("batching", "Throughput and TTFT vs concurrency"),
]


def sections(doc: dict) -> list[dict]:
    known = [p for p, _ in SECTIONS]
    extra = sorted(p for p in doc["probes"] if p not in known)
    out = []
    for probe, title in SECTIONS + [(p, p) for p in extra]:
        envelope = doc["probes"].get(probe)
        if envelope is None:
            out.append({"probe": probe, "title": title, "ran": False, "charts": [], "rows": [], "notes": []})
            continue
        figures = [f for f in metrics.figures(doc) if f["probe"] == probe]
        comparisons = [c for c in metrics.comparisons(doc) if c["probe"] == probe]
        charts = _specific(probe, envelope, figures) + _generic(probe, figures, comparisons)
        rows = [
            [
                f["label"].split(": ", 1)[-1],
                f["value"],
                None if f["ci_low"] is None else f"{f['ci_low']:.4g} - {f['ci_high']:.4g}",
                f["p5"],
                f["p95"],
                f["n"],
                f["unit"],
                f["spread_warning"],
            ]
            for f in figures
        ]
        notes = [f"A/B {c['metric']}: {c.get('verdict')}" for c in comparisons]
        notes += [
            f"{str(v.get('status')).upper()} {v['name']}: {v.get('text')}" for v in envelope.get("verdicts") or []
        ]
        notes += [f"ERROR {err}" for err in envelope.get("errors") or []]
        took = f" ({envelope['duration_s']:g} s)" if envelope.get("duration_s") is not None else ""
        out.append({"probe": probe, "title": title + took, "ran": True, "charts": charts, "rows": rows, "notes": notes})
    return out


def _generic(probe: str, figures: list[dict], comparisons: list[dict]) -> list[str]:
    charts = []
    by_unit: dict[str, list[dict]] = {}
    for f in figures:
        by_unit.setdefault(f["unit"] or "", []).append(f)
    for unit, figs in sorted(by_unit.items()):
        bars = [
            {"label": f["label"].split(": ", 1)[-1], "value": f["value"], "low": f["p5"], "high": f["p95"]}
            for f in figs
        ]
        charts.append(svg.bar_chart(f"{probe}: medians, whiskers p5-p95", bars, unit))
    for c in comparisons:
        groups = []
        for side, name in (("a", c.get("name_a") or "a"), ("b", c.get("name_b") or "b")):
            s = c.get(side) or {}
            groups.append(
                {
                    "label": str(name),
                    "samples": s.get("samples") or [],
                    "median": s.get("median"),
                    "ci_low": s.get("ci_low"),
                    "ci_high": s.get("ci_high"),
                }
            )
        unit = (c.get("a") or {}).get("unit") or c.get("unit")
        charts.append(svg.strip_chart(f"{c['metric']}: every sample, median and 95 % CI", groups, unit))
    return charts


def _specific(probe: str, envelope: dict, figures: list[dict]) -> list[str]:
    return []
