"""The fleet page's charts: for each key figure, every host that measured it side by side, outliers marked.

A host is marked an outlier on a figure when the fleet's own outlier rule (fleet.outliers: robust z-score
within its GPU class) flagged it on that figure; the dashed line is the median of the hosts drawn.
"""

from __future__ import annotations

import statistics

from . import headline, svg

OUTLIER_COLOR = "#6a1b9a"
STATUS_COLOR = {"pass": "#2e7d32", "warn": "#e69500", "fail": "#c62828"}
PLAIN_COLOR = "#3366cc"


def _flagged(row: dict, metric: str | None) -> dict | None:
    """The row's outlier record on this figure (an exact metric, or a prefix ending in '.'), if any."""
    if not metric:
        return None
    for o in row.get("outliers") or []:
        if o["metric"] == metric or (metric.endswith(".") and o["metric"].startswith(metric)):
            return o
    return None


def figure_table(summary: dict) -> list[dict]:
    """[{key, label, unit, hosts: [{host, value, status, outlier}], median}] for figures measured on 2+ hosts."""
    out = []
    for key, label, unit, metric in headline.KEY_FIGURES:
        hosts = []
        for row in summary["hosts"]:
            fig = next((f for f in row.get("key_figures") or [] if f["key"] == key), None)
            if fig is None or fig["value"] is None:
                continue
            flagged = _flagged(row, metric)
            hosts.append({"host": row["host"], "value": fig["value"], "status": fig["status"],
                          "outlier": flagged, "gpu_class": row["gpu_class"]})
        if len(hosts) < 2:
            continue
        median = statistics.median(h["value"] for h in hosts)
        out.append({"key": key, "label": label, "unit": unit, "hosts": hosts, "median": median})
    return out


def outlier_text(o: dict) -> str:
    worse = {True: "worse than", False: "better than", None: "off"}[o.get("worse")]
    return f"outlier, {worse} its class"


def chart(figure: dict) -> str:
    bars = []
    for h in figure["hosts"]:
        mark = " ◆ outlier" if h["outlier"] else ""
        color = OUTLIER_COLOR if h["outlier"] else STATUS_COLOR.get(h["status"] or "", PLAIN_COLOR)
        bars.append({"label": f"{h['host']}{mark}", "value": h["value"], "color": color})
    refs = [{"value": figure["median"], "label": f"median {svg.fmt(figure['median'])}"}]
    title = f"{figure['label']} ({figure['unit']}) per host; ◆ marks an outlier within its class"
    return svg.bar_chart(title, bars, figure["unit"], refs)


def markdown(summary: dict) -> list[str]:
    """The same figures for the Markdown summary, one line per figure: every host's value, outliers marked."""
    figures = figure_table(summary)
    if not figures:
        return []
    out = ["## Key figures across hosts", ""]
    for figure in figures:
        values = []
        for h in figure["hosts"]:
            text = f"{h['host']} {headline.show(h['value'], figure['unit'])}"
            values.append(f"**{text} ({outlier_text(h['outlier'])})**" if h["outlier"] else text)
        out.append(f"- **{figure['label']}** (median {svg.fmt(figure['median'])} {figure['unit']}): "
                   + " · ".join(values))
    return out + [""]
