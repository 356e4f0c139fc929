"""Self-contained HTML (inline CSS and SVG; the fleet page adds a few lines of inline JS to sort its table)."""

from __future__ import annotations

from html import escape

from ..core.thresholds import OUTLIER_MIN_HOSTS
from . import charts, fleet, fleet_charts, headline
from . import render_markdown as md

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .meta{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;font-weight:bold;font-size:12px}
.pass,.ok{background:#2e7d32}.warn{background:#e69500}.fail,.failed,.unreachable{background:#c62828}
.skip{background:#8a8a8a} .rec{background:#1565c0} .outlier{background:#6a1b9a} .regression{background:#ad1457}
.error{background:#fdecea;border-left:5px solid #c62828;padding:.6em 1em}
ul.todo li{margin:.35em 0} .notrun{color:#888;font-style:italic}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}
.card b{font-size:22px;display:block} th.sortable{cursor:pointer} th.sortable:after{content:" \\2195";color:#aaa}
figure{margin:.6em 0} figcaption{color:#555;font-size:12px}
.headline{font-size:17px;padding:.5em .8em;border-radius:4px}
.pass-line{background:#e8f5e9}.fail-line{background:#fdecea}
.card span{color:#555;font-size:12px}.card small{display:block;color:#555;font-size:12px}.card small.prev{color:#777}
.warn-card{border-color:#e69500;border-width:2px}.fail-card{border-color:#c62828;border-width:2px}
p.notes{color:#555}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.classList.add('sortable');
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-dir') !== 'asc';
      table.querySelectorAll('th').forEach(function(h){ h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-sort') || a.cells[col].textContent;
        var y = b.cells[col].getAttribute('data-sort') || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? r : -r;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def e(value) -> str:
    return escape(md.cell(value).replace("\\|", "|"))


def badge(status: str, text: str | None = None) -> str:
    return f'<span class="badge {escape(status)}">{escape((text or status).upper())}</span>'


def page(title: str, body: list[str], script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n{js}</body></html>\n"
    )


def html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """rows hold already-escaped HTML cells."""
    out = [
        f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
    ]
    out += ["<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "".join(out) + "</tbody></table>"


def host_page(doc: dict) -> str:
    host = doc["host"]
    body = [
        f"<h1>Preflight: {escape(host)} {badge(doc['verdict'])}</h1>",
        f'<p class="meta">Run <code>{escape(doc["run_id"])}</code> at {escape(doc["time"])} · level '
        f"<b>{escape(doc['level'])}</b> · class <code>{escape(doc['gpu_class'])}</code> · status "
        f"{badge(doc['status'])}</p>",
    ]
    if doc["error"]:
        body.append(
            f'<div class="error"><b>{escape(doc["status"].upper())}</b> at '
            f"<code>{escape(doc['error'].get('task') or 'unknown task')}</code>: "
            f"{escape(doc['error']['msg'])}</div>"
        )
    body += _headline(doc) + _todo(doc)

    if doc["checks"]:
        c = fleet.counts(doc["checks"])
        body.append(f"<h2>Checks ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip)</h2>")
        body.append(
            html_table(
                ["status", "check", "measured", "expected / threshold", "reason"],
                [
                    [
                        badge(x["status"]),
                        f"<code>{escape(x['id'])}</code><br>{escape(x['title'])}",
                        e(md._with_unit(x["measured"], x["unit"])),
                        escape(md.expectation(x)),
                        _inline(x["reason"]),
                    ]
                    for x in doc["checks"]
                ],
            )
        )
    body += _markdown_block(md.run_section(doc))
    body += _settings(doc)
    body += _probes(doc)
    body += _history(doc)
    body += _facts(doc)
    return page(f"Preflight {host}: {doc['verdict']}", body)


def _headline(doc: dict) -> list[str]:
    """The verdict in one line and the key figures, each with its previous run, before any table."""
    fit = "pass" if doc["status"] == "ok" and not headline.todo(doc)["failures"] else "fail"
    out = [f'<p class="headline {fit}-line"><b>{escape(headline.verdict_line(doc))}</b></p>']
    cards = []
    for f in headline.key_figures(doc):
        status = f" {f['status']}-card" if f.get("status") in ("warn", "fail") else ""
        against = f"<small>{escape(f['against'])}</small>" if f.get("against") else ""
        change = f["change"] or ("no previous run" if not doc["history"] else "previous run: not measured")
        cards.append(f'<div class="card{status}"><span>{escape(f["label"])}</span>'
                     f"<b>{escape(headline.show(f['value'], f['unit']))}</b>{against}"
                     f'<small class="prev">{escape(change)}</small></div>')
    if cards:
        out.append('<div class="cards">' + "".join(cards) + "</div>")
    return out


def _todo(doc: dict) -> list[str]:
    """What to do, ranked by consequence; measurement notes get one pointing line at the end."""
    items = headline.todo(doc)
    body = ['<h2>What to do</h2><ol class="todo">']
    body += [f"<li>{badge('fail')} <code>{escape(c['id'])}</code> {_inline(c['reason'])}</li>"
             for c in items["failures"]]
    body += [f"<li>{badge('rec', 'change')} {_inline(md.recommendation_line(r))}</li>" for r in items["changes"]]
    body += [f"<li>{badge('warn')} <code>{escape(c['id'])}</code> {_inline(c['reason'])}</li>"
             for c in items["look_at"]]
    body += [f"<li>{badge('regression')} {escape(r['what'])}: {e(r['before'])} → {e(r['after'])}. "
             f"{escape(r['reason'])}</li>" for r in items["regressions"]]
    body += [f"<li>{badge('outlier')} {escape(fleet.describe_outlier(o))}</li>" for o in items["outliers"]]
    if len(body) == 1:
        body.append("<li>Nothing: no check fails, no change is recommended and nothing stands out.</li>")
    body.append("</ol>")
    note = headline.notes_line(items["notes"])
    if note:
        body.append(f'<p class="notes">{badge("skip", "note")} {escape(note)}</p>')
    return body


def _settings(doc: dict) -> list[str]:
    if doc["status"] == "unreachable":
        return []
    rows, persist = [], []
    for role, result in sorted(doc["settings"].items()):
        for s in result.get("settings") or []:
            rows.append(
                [
                    escape(role),
                    f"<code>{e(s.get('name'))}</code>",
                    e(s.get("before")),
                    e(s.get("after")),
                    e(s.get("desired")),
                    "yes" if s.get("changed") else "no",
                ]
            )
        for p in result.get("persistence") or []:
            persist.append(
                [
                    escape(role),
                    e(p.get("method")),
                    badge(_persist_class(p.get("state")), p.get("state")),
                    e(p.get("path")),
                    e(p.get("detail")),
                ]
            )
    out = ["<h2>Settings (before → after)</h2>"]
    if not rows:
        return out + ['<p class="notrun">No tuning role reported on this host.</p>']
    out.append(html_table(["role", "setting", "before", "after", "desired", "changed"], rows))
    if persist:
        out += ["<h3>Persistence</h3>", html_table(["role", "method", "state", "where", "detail"], persist)]
    return out


def _persist_class(state) -> str:
    return {"installed": "pass", "unchanged": "pass", "unavailable": "warn", "failed": "fail"}.get(state, "skip")


def _probes(doc: dict) -> list[str]:
    if doc["status"] == "unreachable":
        return []
    out = ["<h2>Probes</h2>"]
    for section in charts.sections(doc):
        out.append(f"<h3>{escape(section['title'])}</h3>")
        if not section["ran"]:
            out.append(f'<p class="notrun">{escape(md.not_run_text(doc, section))}</p>')
            continue
        for svg in section["charts"]:
            out.append(f"<figure>{svg}</figure>")
        if section["rows"]:
            out.append(
                html_table(
                    ["figure", "median", "95 % CI", "p5", "p95", "n", "unit", "note"],
                    [[e(v) for v in row] for row in section["rows"]],
                )
            )
        if section["notes"]:
            out.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in section["notes"]) + "</ul>")
    return out


def _history(doc: dict) -> list[str]:
    if doc["status"] == "unreachable":
        return []
    hist = doc["history"]
    out = ["<h2>Compared with the previous run</h2>"]
    if not hist:
        return out + ['<p class="notrun">No earlier report of this host to compare with.</p>']
    out.append(f"<p>Previous run <code>{escape(hist['previous_run_id'])}</code> at {e(hist['previous_time'])}.</p>")
    rows = (
        [
            [badge("regression"), e(r["what"]), e(r["before"]), e(r["after"]), escape(r["reason"])]
            for r in hist["regressions"]
        ]
        + [
            [badge("pass", "improvement"), e(r["what"]), e(r["before"]), e(r["after"]), escape(r["reason"])]
            for r in hist["improvements"]
        ]
        + [
            [badge("skip", "change"), e(r["what"]), e(r["before"]), e(r["after"]), escape(r["reason"])]
            for r in hist["changes"]
        ]
    )
    out.append(
        html_table(["kind", "what", "before", "after", "why"], rows) if rows else "<p>Nothing changed beyond noise.</p>"
    )
    return out


def _facts(doc: dict) -> list[str]:
    return _markdown_block(md.facts_section(doc))


def _markdown_block(lines: list[str]) -> list[str]:
    """The Markdown renderer's headings, tables, bullets and paragraphs as HTML (one source of what is shown)."""
    if not lines:
        return []
    out, rows, head = [], [], None
    for line in lines:
        if line.startswith("## ") or line.startswith("### "):
            if rows:
                out.append(html_table(head, rows))
                rows = []
            out.append(
                f"<h2>{escape(line.lstrip('# '))}</h2>"
                if line.startswith("## ")
                else f"<h3>{escape(line.lstrip('# '))}</h3>"
            )
            head = None
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
            if head is None:
                head = cells
            else:
                rows.append([escape(c) for c in cells])
        elif line.startswith("- "):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if rows:
        out.append(html_table(head, rows))
    return out


def _inline(text: str) -> str:
    """`code` and **bold** from the Markdown wording as <code> and <b>; everything else escaped."""
    out = []
    for i, part in enumerate(str(text).split("`")):
        if i % 2:
            out.append(f"<code>{escape(part)}</code>")
        else:
            out.append("".join(f"<b>{p}</b>" if j % 2 else p for j, p in enumerate(escape(part).split("**"))))
    return "".join(out)


def fleet_page(summary: dict) -> str:
    body = (_fleet_header(summary) + _fleet_attention(summary) + _fleet_recommendations(summary)
            + _fleet_charts(summary) + _fleet_table(summary) + _fleet_findings(summary))
    return page(f"Preflight fleet {summary['run_id']}", body, SORT_JS)


def _fleet_header(summary: dict) -> list[str]:
    t = summary["totals"]
    body = [
        f'<h1>Preflight fleet summary</h1><p class="meta">Run <code>{escape(summary["run_id"])}</code> at '
        f"{escape(summary['time'])}</p>",
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{t[k]}</b> {label}</div>'
            for k, label in [
                ("hosts", "hosts"),
                ("ok", "ok"),
                ("incomplete", "incomplete"),
                ("failed", "failed"),
                ("unreachable", "unreachable"),
                ("verdict_pass", "hosts pass"),
                ("verdict_warn", "hosts warn"),
                ("verdict_fail", "hosts fail"),
            ]
        )
        + "</div>",
        '<div class="cards">'
        + "".join(
            f'<div class="card{" fail-card" if k == "checks_fail" and t[k] else ""}"><b>{t[k]}</b> {label}</div>'
            for k, label in [("checks_fail", "checks fail"), ("checks_warn", "checks warn"),
                             ("checks_pass", "checks pass"), ("checks_skip", "checks skipped")]
        )
        + "</div>",
    ]
    fit = "pass" if not summary["not_ok"] and not summary["failing_checks"] else "fail"
    body.insert(1, f'<p class="headline {fit}-line"><b>{escape(headline.fleet_line(summary))}</b></p>')
    return body


def _fleet_recommendations(summary: dict) -> list[str]:
    """Changes to make, the one that helps most hosts first, each naming its hosts and the variable."""
    recs = md.grouped_recommendations(summary)
    if not recs:
        return []
    return [
        '<h2>Recommendations (most hosts first)</h2><ol class="todo">'
        + "".join(
            f"<li>{badge('rec', 'change')} <b>{escape(', '.join(hosts))}</b> {_inline(md.recommendation_line(x))}</li>"
            for hosts, x in recs
        )
        + "</ol>"
    ]


def _fleet_charts(summary: dict) -> list[str]:
    figures = fleet_charts.figure_table(summary)
    if not figures:
        return []
    return ["<h2>Key figures across hosts</h2>"] + [
        f"<figure>{fleet_charts.chart(f)}<figcaption>{escape(_figure_caption(f))}</figcaption></figure>"
        for f in figures
    ]


def _figure_caption(figure: dict) -> str:
    marked = [f"{h['host']}: {fleet.describe_outlier(h['outlier'])}" for h in figure["hosts"] if h["outlier"]]
    return "Outliers: " + "; ".join(marked) if marked else "No host stands out within its class."


def _fleet_attention(summary: dict) -> list[str]:
    """Hosts that did not finish, then failing checks: what to fix first."""
    body = []
    bad = [r for r in summary["hosts"] if r["status"] != "ok"]
    if bad:
        body.append('<h2>Hosts that did not finish</h2><ul class="todo">')
        for r in bad:
            err = r["error"] or {}
            body.append(
                f"<li>{badge(r['status'])} <b>{escape(r['host'])}</b> at "
                f"<code>{escape(err.get('task') or '?')}</code>: {escape(err.get('msg') or '')}</li>"
            )
        body.append("</ul>")
    failing = [(r["host"], f) for r in summary["hosts"] if r["status"] == "ok" for f in r["failing"]]
    if failing:
        body.append('<h2>Failing checks</h2><ul class="todo">')
        body += [f"<li>{badge('fail')} <b>{escape(h)}</b> {_inline(f)}</li>" for h, f in failing]
        body.append("</ul>")
    return body


def _fleet_table(summary: dict) -> list[str]:
    body = []
    body.append("<h2>Hosts</h2>")
    rows = []
    for r in summary["hosts"]:
        link = r["files"].get("html")
        name = f'<a href="{escape(link)}">{escape(r["host"])}</a>' if link else escape(r["host"])
        rank = {"pass": 0, "warn": 1, "fail": 2}[r["verdict"]]
        rows.append(
            [
                name,
                escape(r["gpu_class"]),
                badge(r["status"]),
                f'<td data-sort="{rank}">{badge(r["verdict"])}</td>',
                f'<td class="num">{r["checks"]["pass"]}</td>',
                f'<td class="num">{r["checks"]["warn"]}</td>',
                f'<td class="num">{r["checks"]["fail"]}</td>',
                f'<td class="num">{r["checks"]["skip"]}</td>',
                e(f"{r['thp_enabled']}/{r['thp_defrag']}" if r["thp_enabled"] else None),
                e(r["kernel"]),
                f'<td class="num">{e(r["gpus"])}</td>',
                f'<td class="num">{len(r["recommendations"])}</td>',
                f'<td class="num">{len(r["outliers"])}</td>',
                f'<td class="num">{len(r["regressions"])}</td>',
            ]
        )
    body.append(
        html_table(
            [
                "host",
                "class",
                "status",
                "verdict",
                "pass",
                "warn",
                "fail",
                "skip",
                "THP",
                "kernel",
                "GPUs",
                "recommendations",
                "outliers",
                "regressions",
            ],
            rows,
            "sortable",
        )
    )
    return body


def _fleet_findings(summary: dict) -> list[str]:
    """Outliers against the class, recommendations and regressions since the previous run."""
    body = []
    outliers = [(r["host"], o) for r in summary["hosts"] for o in r["outliers"]]
    body.append("<h2>Outliers against the fleet</h2>")
    if outliers:
        body.append(
            "<ul>"
            + "".join(
                f"<li>{badge('outlier')} <b>{escape(h)}</b> {escape(fleet.describe_outlier(o))}</li>"
                for h, o in outliers
            )
            + "</ul>"
        )
    else:
        body.append(
            f'<p class="notrun">None (a class needs {OUTLIER_MIN_HOSTS} hosts with the same figure to compare).</p>'
        )
    regs = [(r["host"], x) for r in summary["hosts"] for x in r["regressions"]]
    if regs:
        body.append(
            "<h2>Regressions since the previous run</h2><ul>"
            + "".join(
                f"<li><b>{escape(h)}</b> {escape(x['what'])}: {e(x['before'])} → {e(x['after'])}. "
                f"{escape(x['reason'])}</li>"
                for h, x in regs
            )
            + "</ul>"
        )
    return body
