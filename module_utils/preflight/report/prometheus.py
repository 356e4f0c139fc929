"""Prometheus textfile (node_exporter's textfile collector): preflight_* metrics with a host label.

Written on the controller as reports/<run-id>/preflight.prom: the record of one run, every host of it with a
host label. node_exporter reads each node's own file instead (node_metrics.py, written on the node into
preflight_textfile_dir), which a --limit run does not empty of the other hosts. Missing measurements are left
out, never written as 0.
"""

from __future__ import annotations

import re

from ..core.document import HOST_STATUSES
from . import fleet, metrics

STATUSES = HOST_STATUSES
CHECK_STATUSES = ("pass", "warn", "fail", "skip")


def escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**kv) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in kv.items() if v is not None) + "}"


def _num(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        if not re.match(r"^preflight_[a-z0-9_]+$", name):
            raise ValueError(f"bad metric name {name}")
        self.name, self.kind, self.help, self.samples = name, kind, help_text, []

    def add(self, value, **kv) -> None:
        if value is None:
            return
        self.samples.append(f"{self.name}{labels(**kv)} {_num(value)}")

    def text(self) -> str:
        if not self.samples:
            return ""
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n" + "\n".join(self.samples) + "\n"


def textfile(docs: list[dict], run_id: str, run_timestamp: float) -> str:
    fam = {
        name: _Family(name, kind, text)
        for name, kind, text in [
            ("preflight_run_timestamp_seconds", "gauge", "When this Preflight run built its reports (Unix time)."),
            ("preflight_host_up", "gauge", "1 when Ansible reached the host in this run."),
            ("preflight_host_status", "gauge", "1 for the host's run status (" + ", ".join(HOST_STATUSES) + ")."),
            ("preflight_host_verdict", "gauge", "1 for the host's verdict (pass, warn, fail)."),
            ("preflight_check_status", "gauge", "1 for each check's status (pass, warn, fail, skip)."),
            ("preflight_checks", "gauge", "Number of checks per status."),
            ("preflight_thp_info", "gauge", "THP settings read back after tuning (always 1; the values are labels)."),
            ("preflight_hugepages_total", "gauge", "Hugepages reserved per page size."),
            ("preflight_gpus", "gauge", "GPUs NVML reported."),
            ("preflight_probe_value", "gauge", "A probe's headline figure (judged against thresholds; see unit)."),
            ("preflight_probe_median", "gauge", "Median of a probe figure (see the unit label)."),
            ("preflight_probe_p95", "gauge", "95th percentile of a probe figure."),
            ("preflight_outlier", "gauge", "1 when a figure is an outlier against its GPU class (robust z-score)."),
            ("preflight_recommendations", "gauge", "Number of recommendations for the host."),
            ("preflight_regressions", "gauge", "Number of regressions beyond noise since the host's previous run."),
            ("preflight_phase_seconds", "gauge", "How long each phase of the run took on the host."),
        ]
    }
    fam["preflight_run_timestamp_seconds"].add(float(run_timestamp), run_id=run_id)
    for doc in sorted(docs, key=lambda d: d["host"]):
        host = doc["host"]
        fam["preflight_host_up"].add(doc["status"] != "unreachable", host=host)
        for status in STATUSES:
            fam["preflight_host_status"].add(doc["status"] == status, host=host, status=status)
        for verdict in ("pass", "warn", "fail"):
            fam["preflight_host_verdict"].add(doc["verdict"] == verdict, host=host, verdict=verdict)
        for c in doc["checks"]:
            for status in CHECK_STATUSES:
                fam["preflight_check_status"].add(c["status"] == status, host=host, check=c["id"], status=status)
        for status, n in fleet.counts(doc["checks"]).items():
            fam["preflight_checks"].add(n, host=host, status=status)
        facts = doc["facts"]
        if facts:
            thp = facts.get("thp") or {}
            if thp.get("supported"):
                fam["preflight_thp_info"].add(
                    1,
                    host=host,
                    enabled=thp.get("enabled"),
                    defrag=thp.get("defrag"),
                    khugepaged_defrag=thp.get("khugepaged_defrag"),
                )
            for size, pool in sorted(((facts.get("hugepages") or {}).get("sizes") or {}).items()):
                fam["preflight_hugepages_total"].add(pool.get("total"), host=host, size=size)
            fam["preflight_gpus"].add(len(facts.get("gpus") or []), host=host)
        for f in metrics.headline(doc):
            fam["preflight_probe_value"].add(
                f["value"], host=host, probe=f["probe"], metric=f["metric"], unit=f["unit"]
            )
        for f in metrics.figures(doc):
            fam["preflight_probe_median"].add(
                f["value"], host=host, probe=f["probe"], metric=f["metric"], unit=f["unit"]
            )
            fam["preflight_probe_p95"].add(f["p95"], host=host, probe=f["probe"], metric=f["metric"], unit=f["unit"])
        for o in doc["outliers"]:
            fam["preflight_outlier"].add(1, host=host, metric=o["metric"], group=o["group"], direction=o["direction"])
        for phase in (doc["run"] or {}).get("phases") or []:
            fam["preflight_phase_seconds"].add(phase.get("duration_s"), host=host, phase=phase.get("name"))
        if doc["status"] != "unreachable":
            fam["preflight_recommendations"].add(len(doc["recommendations"]), host=host)
            if doc["history"] is not None:
                fam["preflight_regressions"].add(len(doc["history"]["regressions"]), host=host)
    return "".join(f.text() for f in fam.values())
