"""Inline SVG charts (no JavaScript, no network): bars with whiskers and limit lines, sample strips, lines.

A missing value is drawn as the words "not measured", never as a zero-length bar.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#3366cc", "#dc7633", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b"]
FONT = 'font-family="system-ui,sans-serif" font-size="12"'
OFF_SCALE = 4.0


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT}><title>{escape(title)}</title>'
        f'<text x="4" y="14" font-weight="bold">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def bar_chart(
    title: str, bars: list[dict], unit: str | None, refs: list[dict] | None = None, squash: bool = False
) -> str:
    """Horizontal bars: {label, value, low?, high?, color?}; refs: [{value, label}] drawn as dashed limits.

    A limit far beyond the bars is named under the chart instead of drawn, unless `squash`: when the distance
    to the limit is the point (GB/s against the disk and the PCIe link), the bars may shrink to slivers.
    """
    refs = [r for r in (refs or []) if r.get("value") is not None]
    data_max = max([b.get("high") or b.get("value") or 0 for b in bars] + [0])
    off_scale = [r for r in refs if data_max and r["value"] > OFF_SCALE * data_max and not squash]
    refs = [r for r in refs if r not in off_scale]
    label_w, plot_w, row_h = 230, 380, 24
    top = 28 + 13 * len(refs)  # one line of label per limit, under the title
    height = top + row_h * len(bars) + 34 + (14 if off_scale else 0)
    width = label_w + plot_w + 90
    highs = [data_max] + [r["value"] for r in refs]
    ticks = nice_ticks(0, max(highs + [0]) or 1.0)
    vmax = ticks[-1]

    def x(v):
        return label_w + plot_w * (v / vmax)

    body = []
    axis_y = top + row_h * len(bars)
    for t in ticks:
        body.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{axis_y}" stroke="#e5e5e5"/>')
        body.append(f'<text x="{x(t):.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">{fmt(t)}</text>')
    body.append(
        f'<text x="{label_w + plot_w / 2:.0f}" y="{axis_y + 28}" text-anchor="middle" fill="#555">'
        f"{escape(unit or '')}</text>"
    )
    for i, bar in enumerate(bars):
        y = top + i * row_h
        color = bar.get("color") or PALETTE[i % len(PALETTE)]
        body.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(bar["label"])}</text>')
        value = bar.get("value")
        if value is None:
            body.append(f'<text x="{label_w + 4}" y="{y + 15}" fill="#999" font-style="italic">not measured</text>')
            continue
        body.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{max(x(value) - label_w, 1):.1f}" height="{row_h - 8}" '
            f'fill="{color}" opacity="0.85"><title>{escape(bar["label"])}: {fmt(value)} '
            f"{escape(unit or '')}</title></rect>"
        )
        if bar.get("low") is not None and bar.get("high") is not None:
            ym = y + row_h / 2
            body.append(
                f'<line x1="{x(bar["low"]):.1f}" y1="{ym}" x2="{x(bar["high"]):.1f}" y2="{ym}" '
                f'stroke="#222" stroke-width="1.5"/>'
            )
            for end in (bar["low"], bar["high"]):
                body.append(f'<line x1="{x(end):.1f}" y1="{ym - 5}" x2="{x(end):.1f}" y2="{ym + 5}" stroke="#222"/>')
        body.append(f'<text x="{x(max(value, bar.get("high") or value)) + 6:.1f}" y="{y + 15}">{fmt(value)}</text>')
    for j, ref in enumerate(refs):
        rx = x(ref["value"])
        ly = 32 + 13 * j
        body.append(
            f'<line x1="{rx:.1f}" y1="{ly - 4}" x2="{rx:.1f}" y2="{axis_y}" stroke="#c0392b" '
            f'stroke-dasharray="5,3" stroke-width="1.5"/>'
        )
        # Right of its line, or left of it in the right part of the plot, so no label runs off the edge.
        anchor, lx = ("end", rx - 4) if rx > label_w + plot_w * 0.55 else ("start", rx + 4)
        body.append(f'<text x="{lx:.1f}" y="{ly}" fill="#c0392b" text-anchor="{anchor}">{escape(ref["label"])}</text>')
    if off_scale:
        names = ", ".join(f"{r['label']} {escape(unit or '')}".strip() for r in off_scale)
        body.append(f'<text x="4" y="{height - 4}" fill="#c0392b">off scale: {escape(names)}</text>')
    return _svg(width, height, title, body)


def strip_chart(title: str, groups: list[dict], unit: str | None) -> str:
    """Every sample as a dot per group ({label, samples, median?, ci_low?, ci_high?}): distributions side by side."""
    label_w, plot_w, row_h, top = 160, 420, 34, 28
    samples = [s for g in groups for s in g.get("samples") or []]
    height = top + row_h * len(groups) + 34
    width = label_w + plot_w + 40
    if not samples:
        return _svg(width, 60, title, ['<text x="4" y="40" fill="#999" font-style="italic">no samples</text>'])
    lo, hi = min(samples), max(samples)  # zoomed on the data: the ticks show where the axis starts
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    lo, hi = (max(lo - pad, 0.0) if lo >= 0 else lo - pad), hi + pad
    ticks = nice_ticks(lo, hi)
    t0, t1 = ticks[0], ticks[-1]

    def x(v):
        return label_w + plot_w * (v - t0) / ((t1 - t0) or 1)

    axis_y = top + row_h * len(groups)
    body = []
    for t in ticks:
        body.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{axis_y}" stroke="#e5e5e5"/>')
        body.append(f'<text x="{x(t):.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">{fmt(t)}</text>')
    body.append(
        f'<text x="{label_w + plot_w / 2:.0f}" y="{axis_y + 28}" text-anchor="middle" fill="#555">'
        f"{escape(unit or '')}</text>"
    )
    for i, group in enumerate(groups):
        y = top + i * row_h
        color = PALETTE[i % len(PALETTE)]
        body.append(
            f'<text x="{label_w - 6}" y="{y + row_h / 2 + 4}" text-anchor="end">{escape(group["label"])} '
            f"(n={len(group.get('samples') or [])})</text>"
        )
        for k, s in enumerate(group.get("samples") or []):
            jitter = ((k * 7919) % 13 - 6) * 1.6  # deterministic spread so equal samples stay visible
            body.append(
                f'<circle cx="{x(s):.1f}" cy="{y + row_h / 2 + jitter:.1f}" r="3" fill="{color}" '
                f'opacity="0.6"><title>{fmt(s)}</title></circle>'
            )
        if group.get("ci_low") is not None and group.get("ci_high") is not None:
            body.append(
                f'<rect x="{x(group["ci_low"]):.1f}" y="{y + 4}" '
                f'width="{max(x(group["ci_high"]) - x(group["ci_low"]), 1):.1f}" height="{row_h - 8}" '
                f'fill="{color}" opacity="0.15"/>'
            )
        if group.get("median") is not None:
            mx = x(group["median"])
            body.append(
                f'<line x1="{mx:.1f}" y1="{y + 3}" x2="{mx:.1f}" y2="{y + row_h - 3}" stroke="#111" '
                f'stroke-width="2"><title>median {fmt(group["median"])}</title></line>'
            )
    return _svg(width, height, title, body)


def line_chart(title: str, series: list[dict], x_label: str, unit: str | None, refs: list[dict] | None = None) -> str:
    """series: [{label, points: [(x, y, low|None, high|None)]}]; y None points are left out."""
    left, plot_w, plot_h, top = 60, 440, 200, 30
    width, height = left + plot_w + 150, top + plot_h + 50
    pts = [p for s in series for p in s["points"] if p[1] is not None]
    refs = [r for r in (refs or []) if r.get("value") is not None]
    if not pts:
        return _svg(width, 60, title, ['<text x="4" y="40" fill="#999" font-style="italic">not measured</text>'])
    xs = [p[0] for p in pts]
    ys = [p[3] if len(p) > 3 and p[3] is not None else p[1] for p in pts]
    off_scale = [r for r in refs if max(ys) and r["value"] > OFF_SCALE * max(ys)]
    refs = [r for r in refs if r not in off_scale]
    ys += [r["value"] for r in refs]
    if off_scale:
        height += 14
    xt = nice_ticks(min(xs + [0]), max(xs))
    yt = nice_ticks(0, max(ys) or 1)

    def px(v):
        return left + plot_w * (v - xt[0]) / ((xt[-1] - xt[0]) or 1)

    def py(v):
        return top + plot_h - plot_h * (v - yt[0]) / ((yt[-1] - yt[0]) or 1)

    body = []
    for t in yt:
        body.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + plot_w}" y2="{py(t):.1f}" stroke="#e5e5e5"/>')
        body.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#555">{fmt(t)}</text>')
    for t in xt:
        body.append(f'<text x="{px(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#555">{fmt(t)}</text>')
    body.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 30}" text-anchor="middle" fill="#555">'
        f"{escape(x_label)}</text>"
    )
    body.append(
        f'<text x="12" y="{top + plot_h / 2:.0f}" fill="#555" transform="rotate(-90 12 {top + plot_h / 2:.0f})" '
        f'text-anchor="middle">{escape(unit or "")}</text>'
    )
    for r in refs:
        body.append(
            f'<line x1="{left}" y1="{py(r["value"]):.1f}" x2="{left + plot_w}" y2="{py(r["value"]):.1f}" '
            f'stroke="#c0392b" stroke-dasharray="5,3"/>'
        )
        body.append(f'<text x="{left + 4}" y="{py(r["value"]) - 4:.1f}" fill="#c0392b">{escape(r["label"])}</text>')
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        good = sorted((p for p in s["points"] if p[1] is not None), key=lambda p: p[0])
        if len(good) > 1:
            path = " ".join(f"{px(p[0]):.1f},{py(p[1]):.1f}" for p in good)
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in good:
            if len(p) > 3 and p[2] is not None and p[3] is not None:
                body.append(
                    f'<line x1="{px(p[0]):.1f}" y1="{py(p[2]):.1f}" x2="{px(p[0]):.1f}" y2="{py(p[3]):.1f}" '
                    f'stroke="{color}"/>'
                )
            body.append(
                f'<circle cx="{px(p[0]):.1f}" cy="{py(p[1]):.1f}" r="3.5" fill="{color}">'
                f"<title>{escape(s['label'])}: {fmt(p[0])} -> {fmt(p[1])} {escape(unit or '')}</title></circle>"
            )
        body.append(f'<rect x="{left + plot_w + 10}" y="{top + 16 * i}" width="10" height="10" fill="{color}"/>')
        body.append(f'<text x="{left + plot_w + 24}" y="{top + 9 + 16 * i}">{escape(s["label"])}</text>')
    if off_scale:
        names = ", ".join(f"{r['label']} {unit or ''}".strip() for r in off_scale)
        body.append(f'<text x="4" y="{height - 4}" fill="#c0392b">off scale: {escape(names)}</text>')
    return _svg(width, height, title, body)
