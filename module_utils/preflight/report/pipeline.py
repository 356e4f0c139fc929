"""One run's reports: build every host document, judge it, compare it, render it, and write it atomically.

build_run() computes everything in memory (check mode stops there); write_run() writes the files, each
through a temp file and a rename, and only then moves `latest` to the new run.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from ..core import document
from ..core import thresholds as thr
from . import (
    checks,
    fleet,
    history,
    junit,
    node_metrics,
    prometheus,
    recommendations,
    render_html,
    render_markdown,
    slices,
)
from .files import (
    HOST_FILE_KINDS,
    LATEST,
    PROM_FILE,
    PUBLIC_FILE_MODE,
    REPORT_DIR_MODE,
    check_run_id,
    host_file_stem,
    new_run_id,
    point_symlink_atomic,
    write_atomic,
)
from .schema import validation_errors


class ReportError(Exception):
    pass


def file_stem(host: str) -> str:
    """A host's report file names without extension (files.host_file_stem: never a run file's name)."""
    return host_file_stem(host)


def build_run(
    items: list[dict],
    report_dir: str,
    run_id: str | None = None,
    now: datetime | None = None,
    outlier_score: float | None = None,
    outlier_min_relative: float | None = None,
    compare_history: bool = True,
) -> dict:
    now = now or datetime.now(UTC)
    run_id = check_run_id(run_id) if run_id else new_run_id(now)
    time = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = [item.get("host") for item in items]
    if not names or any(not n for n in names):
        raise ReportError("every host entry needs a 'host' name, and there must be at least one host")
    stems = {}
    for name in names:
        other = stems.setdefault(file_stem(name), name)
        if other != name or names.count(name) > 1:
            raise ReportError(f"hosts {other!r} and {name!r} would write the same report files")

    problems = []
    docs = []
    for item in sorted(items, key=lambda i: i["host"]):
        try:
            docs.append(document.build(item, run_id, time))
        except ValueError as exc:  # bad thresholds or level: every host's problem is listed at once
            problems.append(f"{item['host']}: {exc}")
    if problems:
        raise ReportError("cannot build the reports: " + " | ".join(problems))

    for doc in docs:
        doc["checks"] = checks.run_checks(doc)
    score = thr.OUTLIER_SCORE if outlier_score is None else outlier_score
    min_relative = thr.OUTLIER_MIN_RELATIVE if outlier_min_relative is None else outlier_min_relative
    for host, found in fleet.outliers(docs, score, min_relative).items():
        next(d for d in docs if d["host"] == host)["outliers"] = found
    for doc in docs:
        doc["recommendations"] = recommendations.recommend(doc)
        doc["verdict"] = document.verdict(doc)
    if compare_history:
        previous = history.previous_documents(report_dir, run_id, time, [d["host"] for d in docs])
        for doc in docs:
            if doc["host"] in previous and doc["status"] != "unreachable":
                doc["history"] = history.compare(previous[doc["host"]], doc)

    invalid = []
    for doc in docs:
        invalid += [f"{doc['host']}: {err}" for err in validation_errors(doc)]
    if invalid:
        raise ReportError(
            "a host document does not match the schema (a bug in Preflight, please report it): "
            + " | ".join(invalid[:20])
        )

    summary, outputs = render_run(docs, run_id, time, now.timestamp())
    # Each reached node's own textfile: copied to the node (playbooks/report.yml), not kept in the run directory.
    unwritable = {item["host"] for item in items if (item.get("failure") or {}).get("node_writable") is False}
    textfiles = node_metrics.node_textfiles(docs, now.timestamp(), unwritable)
    return {"run_id": run_id, "time": time, "docs": docs, "summary": summary, "outputs": outputs,
            "node_metrics": textfiles, "outlier_limits": (score, min_relative), "timestamp": now.timestamp()}


def render_run(docs: list[dict], run_id: str, time: str, timestamp: float,
               hosts: set[str] | None = None) -> tuple[dict, dict[str, str]]:
    """The summary and every file of the run: host files (of `hosts` only, when given) and the run's own files."""
    files = {d["host"]: {kind: f"{file_stem(d['host'])}.{kind}" for kind in HOST_FILE_KINDS} for d in docs}
    summary = fleet.summary(docs, run_id, time, files)
    outputs: dict[str, str] = {}
    for doc in docs:
        if hosts is not None and doc["host"] not in hosts:
            continue
        names = files[doc["host"]]
        outputs[names["json"]] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        outputs[names["md"]] = render_markdown.host_report(doc)
        outputs[names["html"]] = render_html.host_page(doc)
    outputs["summary.json"] = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    outputs["summary.md"] = render_markdown.summary_report(summary)
    outputs["summary.html"] = render_html.fleet_page(summary)
    outputs[PROM_FILE] = prometheus.textfile(docs, run_id, timestamp)
    outputs["junit.xml"] = junit.junit_xml(docs, run_id, time)
    return summary, outputs


def write_run(run: dict, report_dir: str, prometheus_dir: str | None = None) -> list[str]:
    """Write every output of `run`; returns the paths written, `latest` last."""
    run_dir = os.path.join(report_dir, run["run_id"])
    os.makedirs(run_dir, mode=REPORT_DIR_MODE, exist_ok=True)
    # Slices of one run (AWX job slicing, --limit partitions with one preflight_run_id) write into the same
    # directory: each folds in the documents the others wrote, one slice at a time, so the slice that
    # writes last leaves the summary of the whole run, whether the slices finished together or apart.
    with slices.run_dir_lock(run_dir):
        return _write_locked(slices.merge(run, run_dir, render_run), report_dir, run_dir, prometheus_dir)


def _write_locked(run: dict, report_dir: str, run_dir: str, prometheus_dir: str | None) -> list[str]:
    written = []
    # Host files first and summary last, so a summary never lists a host file that is not there yet.
    order = sorted(run["outputs"], key=lambda n: (n.startswith("summary.") or n in (PROM_FILE, "junit.xml"), n))
    for name in order:
        path = os.path.join(run_dir, name)
        write_atomic(path, run["outputs"][name])
        written.append(path)
    if prometheus_dir:
        path = os.path.join(prometheus_dir, PROM_FILE)
        write_atomic(path, run["outputs"][PROM_FILE], mode=PUBLIC_FILE_MODE)
        written.append(path)
    latest = os.path.join(report_dir, LATEST)
    point_symlink_atomic(latest, run["run_id"])
    written.append(latest)
    return written


def outcome(summary: dict, run_dir: str, check_mode: bool) -> dict:
    """What the module returns about the hosts: per host status, the hosts that did not finish, and a few
    lines for the operator (one per host, then where the reports are)."""
    rows = summary["hosts"]
    hosts = {r["host"]: {"status": r["status"], "verdict": r["verdict"], "checks": r["checks"], "error": r["error"]}
             for r in rows}
    not_ok = {r["host"]: f"{r['status']}: {(r['error'] or {}).get('msg')}" for r in rows if r["status"] != "ok"}
    lines = []
    for r in rows:
        if r["status"] != "ok":
            err = r["error"] or {}
            lines.append(f"{r['host']}: {r['status'].upper()} at '{err.get('task') or '?'}': {err.get('msg')}")
        elif r["failing"]:
            lines.append(f"{r['host']}: FAIL {len(r['failing'])} check(s): " + " | ".join(r["failing"]))
        else:  # the host page's headline: measurement notes (spread, repeats) are not called warnings here
            lines.append(f"{r['host']}: {r['headline']}")
    where = run_dir if not check_mode else f"(check mode, nothing written) {run_dir}"
    lines.append(f"Reports: {where}/summary.html (Markdown: summary.md, per host <host>.html/.md/.json)")
    return {"hosts": hosts, "not_ok_hosts": not_ok, "lines": lines}
