"""Checks of the probes' headline figures against thresholds, their repeatability, and the probes' own verdicts."""

from __future__ import annotations

from ..core import thresholds as thr
from . import metrics
from .checks_common import check, show, slug
from .checks_gpu import gpu_sibling_checks

# Client minus server TTFT is what HTTP adds (about 3 ms a request on a real H200 box, the same with vllm bench
# serve): a property of HTTP, not of the node. Shown with its size under the TTFT probe, never a warning, even
# from an envelope written before probes/ttft.py made it "info".
INFO_ONLY = ("client_vs_server_",)


def _spread(figure: dict) -> float | None:
    """IQR over the median, the probes' own spread measure; the coefficient of variation when IQR is missing."""
    if figure.get("iqr") is not None and figure.get("value"):
        return abs(figure["iqr"] / figure["value"])
    return figure.get("cv")


def probe_checks(doc: dict) -> list[dict]:
    out = []
    th = doc["thresholds"]
    for figure in metrics.headline(doc):
        key = figure["threshold"]
        status, record = thr.judge(figure["value"], key, th)
        unit = figure["unit"]
        value = figure["value"]
        if status == "skip":
            reason = f"{figure['title']}: not measured ({figure['missing']})."
        else:
            reason = f"{figure['title']}: {show(value, unit)}"
            if figure["n"] and figure["n"] > 1:
                reason += f" (median of {figure['n']})"
            reason += f"; {thr.describe(record, unit)}."
            if status != "pass":
                reason += " " + figure["advice"]
        out.append(
            check(f"probe.{figure['metric']}", figure["title"], "probe", status, reason, value, None, record, unit)
        )
        spread = _spread(figure)
        if figure["spread_check"] and spread is not None:
            s_status, s_record = thr.judge(spread, "spread_iqr_fraction", th)
            out.append(
                check(
                    f"probe.{figure['metric']}.spread",
                    f"{figure['title']}: repeatable",
                    "probe",
                    s_status,
                    f"The middle half of the {figure['n']} samples spans {100 * spread:.1f} % of the median; "
                    + (
                        thr.describe(s_record, "") + "."
                        if s_status == "pass"
                        else "differences smaller than that are noise. Look for other load on the node, CPU frequency "
                        "scaling, or THP compaction stalls."
                    ),
                    round(spread, 4),
                    None,
                    s_record,
                    "",
                )
            )
    out += gpu_sibling_checks(doc)
    for probe, envelope in sorted(doc["probes"].items()):
        for verdict in envelope.get("verdicts") or []:
            status = verdict.get("status")
            if status not in ("pass", "warn", "fail") or str(verdict.get("name")).startswith(INFO_ONLY):
                continue  # "info" verdicts are statements, shown with the probe's results, not checks
            out.append(
                check(
                    f"probe.{slug(probe)}.verdict.{slug(verdict['name'])}",
                    f"{probe}: {verdict['name']}",
                    "probe",
                    status,
                    verdict.get("text") or f"the {probe} probe says {verdict.get('status')}",
                    verdict.get("status"),
                )
            )
    return out
