"""Markdown for people: the per-host report and the fleet summary. What to do comes first."""

from __future__ import annotations

import json

from ..core import thresholds as thr
from . import charts, fleet, fleet_charts, headline, metrics

ICON = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def cell(value) -> str:
    """A table cell: nulls shown as a dash (never 0), pipes and newlines escaped."""
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or "-"


def table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def expectation(c: dict) -> str:
    if c["threshold"]:
        return thr.describe(c["threshold"], c["unit"])
    return cell(c["expected"])


def recommendation_line(r: dict) -> str:
    evidence = "; ".join(
        f"{e['what']}: {cell(e['value'])}{(' ' + e['unit']) if e.get('unit') else ''}" for e in r["evidence"]
    )
    return (
        f"Set `{r['variable']}: {json.dumps(r['value'])}` (now {json.dumps(r['current'])}). "
        f"{r['reason']} Evidence: {evidence}."
    )


def host_report(doc: dict) -> str:
    host = doc["host"]
    lines = [
        f"# Preflight: {host} — {ICON[doc['verdict']]}",
        "",
        f"Run `{doc['run_id']}` at {doc['time']} · level **{doc['level']}** · class `{doc['gpu_class']}` · "
        f"status **{doc['status']}**",
        "",
    ]
    if doc["error"]:
        task = doc["error"].get("task") or "unknown task"
        lines += [f"> **{doc['status'].upper()}** at `{task}`: {doc['error']['msg']}", ""]

    lines += headline_section(doc) + todo_section(doc)

    if doc["checks"]:
        c = fleet.counts(doc["checks"])
        lines += [f"## Checks ({c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip)", ""]
        lines += table(
            ["status", "check", "measured", "expected / threshold", "reason"],
            [
                [ICON[c["status"]], c["id"], _with_unit(c["measured"], c["unit"]), expectation(c), c["reason"]]
                for c in doc["checks"]
            ],
        )

    lines += run_section(doc)
    lines += settings_section(doc)
    lines += probes_section(doc)
    lines += history_section(doc)
    lines += facts_section(doc)
    return "\n".join(lines).rstrip() + "\n"


def headline_section(doc: dict) -> list[str]:
    """The verdict in one line, then the key figures beside their previous run: before any table."""
    out = [f"**{headline.verdict_line(doc)}**", ""]
    for f in headline.key_figures(doc):
        against = f" {f['against']}" if f.get("against") else ""
        change = f"; {f['change']}" if f.get("change") else ("; no previous run" if not doc["history"] else "")
        status = f" ({f['status'].upper()})" if f.get("status") in ("warn", "fail") else ""
        out.append(f"- **{f['label']}**: {headline.show(f['value'], f['unit'])}{against}{status}{change}")
    return out + ([""] if out[-1] else [])


def todo_section(doc: dict) -> list[str]:
    """What to do, ranked by consequence; measurement notes get one pointing line at the end."""
    items = headline.todo(doc)
    lines = ["## What to do", ""]
    lines += [f"- **FAIL** `{c['id']}` — {c['reason']}" for c in items["failures"]]
    lines += [f"- **CHANGE** {recommendation_line(r)}" for r in items["changes"]]
    lines += [f"- **WARN** `{c['id']}` — {c['reason']}" for c in items["look_at"]]
    lines += [f"- **REGRESSION** {r['what']}: {cell(r['before'])} -> {cell(r['after'])}. {r['reason']}"
              for r in items["regressions"]]
    lines += [f"- **OUTLIER** {fleet.describe_outlier(o)}: compare this node's hardware and settings with its class."
              for o in items["outliers"]]
    if len(lines) == 2:
        lines.append("- Nothing: no check fails, no change is recommended and nothing stands out.")
    note = headline.notes_line(items["notes"])
    if note:
        lines.append(f"- NOTE {note}")
    return lines + [""]


def _with_unit(value, unit):
    if value is None or not unit or isinstance(value, (dict, list, bool)):
        return value
    return f"{cell(value)} {unit}"


def settings_section(doc: dict) -> list[str]:
    if not doc["settings"]:
        if doc["status"] == "unreachable":
            return []
        return ["## Settings (before -> after)", "", "No tuning role reported on this host.", ""]
    rows, persist = [], []
    for role, result in sorted(doc["settings"].items()):
        for s in result.get("settings") or []:
            rows.append(
                [
                    role,
                    s.get("name"),
                    s.get("before"),
                    s.get("after"),
                    s.get("desired"),
                    "yes" if s.get("changed") else "no",
                ]
            )
        for p in result.get("persistence") or []:
            persist.append([role, p.get("method"), p.get("state"), p.get("path"), p.get("detail")])
    out = ["## Settings (before -> after)", ""]
    out += table(["role", "setting", "before", "after", "desired", "changed"], rows)
    if persist:
        out += ["### Persistence", ""] + table(["role", "method", "state", "where", "detail"], persist)
    return out


def probes_section(doc: dict) -> list[str]:
    if doc["status"] == "unreachable":
        return []
    out = ["## Probes", ""]
    for section in charts.sections(doc):
        out += [f"### {section['title']}", ""]
        if not section["ran"]:
            out += [not_run_text(doc, section), ""]
            continue
        if section["rows"]:
            out += table(["figure", "median", "95 % CI", "p5", "p95", "n", "unit", "note"], section["rows"])
        out += [f"- {line}" for line in section["notes"]] + [""]
    return out


def not_run_text(doc: dict, section: dict) -> str:
    return f"Not run ({section['reason']})." if section.get("reason") else f"Not run (level {doc['level']})."


def run_section(doc: dict) -> list[str]:
    run = doc["run"]
    if not run:
        return []
    out = ["## Run", ""]
    budget = f" of the {run.get('budget_s')} s budget" if run.get("budget_s") is not None else ""
    line = f"Level **{doc['level']}**"
    if run.get("certify_s") is not None:
        line += f": certifying took {run['certify_s']} s{budget}"
        if run.get("total_s") is not None:
            line += f" ({run['total_s']} s with tuning)"
    out += [line + ("; **OVER BUDGET**." if run.get("over_budget") else "."), ""]
    out.append(f"- Ran: {', '.join(run.get('ran') or []) or 'no probes'}")
    for failed in run.get("failed") or []:
        out.append(f"- Failed: {failed.get('probe')}: {failed.get('msg')}")
    for skipped in run.get("skipped") or []:
        out.append(f"- Skipped: {skipped.get('probe')}: {skipped.get('reason')}")
    out.append("")
    if run.get("phases"):
        out += table(
            ["phase", "seconds", "status"],
            [[p.get("name"), p.get("duration_s"), p.get("status")] for p in run["phases"]],
        )
    return out


def _interval(f: dict) -> str | None:
    if f["ci_low"] is None or f["ci_high"] is None:
        return None
    return f"{f['ci_low']:.4g} - {f['ci_high']:.4g}"


def history_section(doc: dict) -> list[str]:
    hist = doc["history"]
    if doc["status"] == "unreachable":
        return []
    if not hist:
        return ["## Compared with the previous run", "", "No earlier report of this host to compare with.", ""]
    out = [
        "## Compared with the previous run",
        "",
        f"Previous run `{hist['previous_run_id']}` at {hist['previous_time']}.",
        "",
    ]
    rows = (
        [["regression", r["what"], r["before"], r["after"], r["reason"]] for r in hist["regressions"]]
        + [["improvement", r["what"], r["before"], r["after"], r["reason"]] for r in hist["improvements"]]
        + [["change", r["what"], r["before"], r["after"], r["reason"]] for r in hist["changes"]]
    )
    if rows:
        out += table(["kind", "what", "before", "after", "why"], rows)
    else:
        out += ["Nothing changed beyond noise.", ""]
    return out


def facts_section(doc: dict) -> list[str]:
    facts = doc["facts"]
    if not facts:
        return []
    thp = facts.get("thp") or {}
    kernel = facts.get("kernel") or {}
    cpu = facts.get("cpu") or {}
    mem = facts.get("meminfo_kb") or {}
    alloc = facts.get("allocator") or {}
    rows = [
        ["kernel", kernel.get("release")],
        ["kernel command line", kernel.get("cmdline")],
        ["CPU", f"{cpu.get('model')} x {cpu.get('count')}" if cpu else None],
        ["memory total", _kib(mem.get("MemTotal"))],
        ["memory available", _kib(mem.get("MemAvailable"))],
        [
            "THP enabled / defrag / khugepaged defrag",
            f"{thp.get('enabled')} / {thp.get('defrag')} / {thp.get('khugepaged_defrag')}"
            if thp.get("supported")
            else f"not supported ({thp.get('reason')})",
        ],
        # Per-size THP (Linux 6.8+), smallest first as node_facts lists them; sizes without 'enabled' are shmem's.
        ["THP per size", ", ".join(f"{size} {s['enabled']}" for size, s in (thp.get("sizes") or {}).items()
                                   if s.get("enabled")) or None],
        ["NUMA nodes", len((facts.get("numa") or {}).get("nodes") or [])],
        ["/etc/ld.so.preload", alloc.get("ld_so_preload")],
        ["jemalloc found", alloc.get("jemalloc_paths")],
    ]
    for size, pool in sorted(((facts.get("hugepages") or {}).get("sizes") or {}).items()):
        rows.append(
            [
                f"hugepages {size}",
                f"total {pool.get('total')}, free {pool.get('free')}, "
                f"reserved {pool.get('rsvd')}, surplus {pool.get('surp')}",
            ]
        )
    out = ["## Facts", ""] + table(["what", "value"], rows)
    gpus = facts.get("gpus") or []
    if gpus:
        out += ["### GPUs", ""]
        out += table(
            [
                "index",
                "name",
                "PCI bus",
                "NUMA",
                "memory used / total MiB",
                "PCIe gen (max)",
                "width (max)",
                "persistence",
                "driver",
            ],
            [
                [
                    g.get("index"),
                    g.get("name"),
                    g.get("pci_bus_id"),
                    g.get("numa_node"),
                    f"{cell(g.get('memory_used_mib'))} / {cell(g.get('memory_total_mib'))}",
                    f"{cell((g.get('pcie') or {}).get('gen_current'))} ({cell((g.get('pcie') or {}).get('gen_max'))})",
                    _width(g.get("pcie") or {}),
                    g.get("persistence_mode"),
                    g.get("driver_version"),
                ]
                for g in gpus
            ],
        )
        out += gpus_side_by_side(doc)
    else:
        out += [f"No GPUs: {facts.get('gpus_reason') or 'none reported'}.", ""]
    return out


def gpus_side_by_side(doc: dict) -> list[str]:
    """The figures measured on each GPU of the node, one row per GPU, for a node of two GPUs or more."""
    gpus = (doc["facts"] or {}).get("gpus") or []
    if len(gpus) < 2:
        return []
    copies = {g["gpu_index"]: g["pinned_gb_per_s"] for g in metrics.h2d(doc)}
    runs = metrics.per_gpu(doc)
    head = ["GPU", "PCI bus", "NUMA (CPUs)", "PCIe max GB/s", "host-to-device pinned GB/s"]
    columns = []
    for name, group in sorted(runs.items()):
        by_gpu = {r["gpu_index"]: r for r in group}
        field, what = ("ttft_warm_ms", "warm TTFT ms") if any(r["ttft_warm_ms"] is not None for r in group) \
            else ("kv_tokens", "KV tokens")
        head.append(f"{what} ({name})")
        columns.append((by_gpu, field))
    rows = []
    for g in gpus:
        idx = g.get("index")
        rows.append([idx, g.get("pci_bus_id"), f"{cell(g.get('numa_node'))} ({cell(g.get('cpu_affinity'))})",
                     (g.get("pcie") or {}).get("bandwidth_gbs_max"), copies.get(idx)]
                    + [(by_gpu.get(idx) or {}).get(field) for by_gpu, field in columns])
    return ["### GPUs side by side", "",
            "Each GPU against its siblings: the `gpu.N.*_vs_siblings` checks flag one that stands out.", ""] \
        + table(head, rows)


def _width(pcie: dict) -> str:
    return f"x{cell(pcie.get('width_current'))} (x{cell(pcie.get('width_max'))})"


def _kib(value):
    if value is None:
        return None
    return f"{value / 1048576:.1f} GiB"


def grouped_recommendations(summary: dict) -> list[tuple[list[str], dict]]:
    """The same change recommended on several hosts is one line naming them all (the first host's evidence)."""
    groups: dict[tuple, tuple[list[str], dict]] = {}
    for row in summary["hosts"]:
        for rec in row["recommendations"]:
            key = (rec["id"], rec["variable"], json.dumps(rec["value"], sort_keys=True))
            groups.setdefault(key, ([], rec))[0].append(row["host"])
    return sorted(groups.values(), key=lambda group: -len(group[0]))  # the change that helps most hosts first


def summary_report(summary: dict) -> str:
    t = summary["totals"]
    lines = [
        f"# Preflight fleet summary — run `{summary['run_id']}`",
        "",
        f"{summary['time']} · {t['hosts']} hosts: {t['ok']} ok, {t['incomplete']} incomplete, {t['failed']} failed, "
        f"{t['unreachable']} unreachable "
        f"· verdicts: {t['verdict_pass']} pass, {t['verdict_warn']} warn, {t['verdict_fail']} fail "
        f"· checks: {t['checks_pass']} pass, {t['checks_warn']} warn, {t['checks_fail']} fail, "
        f"{t['checks_skip']} skip",
        "",
        f"**{headline.fleet_line(summary)}**",
        "",
    ]
    bad = [r for r in summary["hosts"] if r["status"] != "ok"]
    if bad:
        lines += ["## Hosts that did not finish", ""]
        for r in bad:
            err = r["error"] or {}
            lines.append(f"- **{r['host']}** {r['status'].upper()} at `{err.get('task') or '?'}`: {err.get('msg')}")
        lines.append("")
    failing = [r for r in summary["hosts"] if r["status"] == "ok" and r["failing"]]
    if failing:
        lines += ["## Failing checks", ""]
        for r in failing:
            for f in r["failing"]:
                lines.append(f"- **{r['host']}** {f}")
        lines.append("")
    recs = grouped_recommendations(summary)
    if recs:
        lines += ["## Recommendations (most hosts first)", ""]
        lines += [f"- **{', '.join(hosts)}** {recommendation_line(x)}" for hosts, x in recs] + [""]
    lines += fleet_charts.markdown(summary)
    lines += _hosts_table(summary)
    outliers = [(r["host"], o) for r in summary["hosts"] for o in r["outliers"]]
    if outliers:
        lines += ["## Outliers against the fleet", ""]
        lines += [f"- **{h}** {fleet.describe_outlier(o)}" for h, o in outliers] + [""]
    regs = [(r["host"], x) for r in summary["hosts"] for x in r["regressions"]]
    if regs:
        lines += ["## Regressions since the previous run", ""]
        lines += [f"- **{h}** {x['what']}: {cell(x['before'])} -> {cell(x['after'])}. {x['reason']}" for h, x in regs]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _hosts_table(summary: dict) -> list[str]:
    return ["## Hosts", ""] + table(
        [
            "host",
            "class",
            "status",
            "verdict",
            "pass",
            "warn",
            "fail",
            "skip",
            "THP enabled/defrag",
            "kernel",
            "GPUs",
            "recommendations",
            "outliers",
            "regressions",
            "report",
        ],
        [
            [
                r["host"],
                r["gpu_class"],
                r["status"],
                r["verdict"],
                r["checks"]["pass"],
                r["checks"]["warn"],
                r["checks"]["fail"],
                r["checks"]["skip"],
                f"{r['thp_enabled']}/{r['thp_defrag']}" if r["thp_enabled"] else None,
                r["kernel"],
                r["gpus"],
                len(r["recommendations"]),
                len(r["outliers"]),
                len(r["regressions"]),
                r["files"].get("md"),
            ]
            for r in summary["hosts"]
        ],
    )
