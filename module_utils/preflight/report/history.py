"""History: each host compared with its own previous run (an earlier reports/<run-id>/<host>.json).

A probe figure is a regression only when the confidence intervals of the two medians do not overlap
and it moved the wrong way; a move inside noise is not reported as a change at all.
"""

from __future__ import annotations

import json
import os

from ..core.catalog import HOST_DOCUMENT_SCHEMA_VERSION
from . import headline, metrics
from .files import LATEST, host_file_stem

RANK = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


def previous_documents(report_dir: str, run_id: str, time: str, hosts: list[str]) -> dict[str, dict]:
    """{host: its newest earlier document with status ok}.

    Run directories are visited newest name first (generated run ids sort by time); a document counts only
    when its own time is before `time`, so a hand-named run directory cannot pose as the previous run.
    """
    found: dict[str, dict] = {}
    try:
        runs = sorted(
            (e for e in os.listdir(report_dir) if e not in (LATEST, run_id) and not e.startswith(".")), reverse=True
        )
    except FileNotFoundError:
        return found
    wanted = set(hosts)
    for run in runs:
        if not wanted - set(found):
            break
        for host in wanted - set(found):
            path = os.path.join(report_dir, run, f"{host_file_stem(host)}.json")
            try:
                with open(path, encoding="utf-8") as handle:
                    doc = json.load(handle)
            except (OSError, ValueError):
                continue
            if (
                doc.get("schema_version") == HOST_DOCUMENT_SCHEMA_VERSION
                and doc.get("status") == "ok"
                and doc.get("host") == host
                and str(doc.get("time", "")) < time
            ):
                found[host] = doc
    return found


def _change(what, before, after, reason, unit=None) -> dict:
    return {"what": what, "before": before, "after": after, "unit": unit, "reason": reason}


def compare(previous: dict, current: dict) -> dict:
    regressions, improvements, changes = [], [], []

    if previous.get("verdict") != current["verdict"]:
        changes.append(_change("verdict", previous.get("verdict"), current["verdict"], "the host's overall verdict"))
    for path, label in (
        (("thp", "enabled"), "THP enabled"),
        (("thp", "defrag"), "THP defrag"),
        (("thp", "khugepaged_defrag"), "khugepaged defrag"),
        (("kernel", "release"), "kernel"),
    ):
        before, after = _get(previous.get("facts"), path), _get(current.get("facts"), path)
        if before != after and current.get("facts") is not None:
            changes.append(_change(label, before, after, f"{label} differs from the previous run"))
    before_gpus = len((previous.get("facts") or {}).get("gpus") or [])
    after_gpus = len((current.get("facts") or {}).get("gpus") or [])
    if current.get("facts") is not None and before_gpus != after_gpus:
        regressions.append(
            _change(
                "GPU count",
                before_gpus,
                after_gpus,
                "GPUs seen by NVML changed since the previous run: check nvidia-smi and dmesg",
            )
            if after_gpus < before_gpus
            else _change("GPU count", before_gpus, after_gpus, "more GPUs than the previous run")
        )

    old_checks = {c["id"]: c for c in previous.get("checks") or []}
    for check in current["checks"]:
        old = old_checks.get(check["id"])
        if old is None or old["status"] == check["status"] or "skip" in (old["status"], check["status"]):
            continue
        item = _change(f"check {check['id']}", old["status"], check["status"], check["reason"])
        (regressions if RANK[check["status"]] > RANK[old["status"]] else improvements).append(item)

    old_figs = {f["metric"]: f for f in metrics.figures(previous)}
    for fig in metrics.figures(current):
        old = old_figs.get(fig["metric"])
        if old is None or fig["value"] is None or old["value"] is None:
            continue
        if None in (fig["ci_low"], fig["ci_high"], old["ci_low"], old["ci_high"]):
            continue  # no interval, no claim: one sample cannot tell a regression from noise
        if fig["ci_low"] <= old["ci_high"] and old["ci_low"] <= fig["ci_high"]:
            continue
        went_up = fig["value"] > old["value"]
        worse = went_up != fig["higher_is_better"]
        pct = 100.0 * (fig["value"] - old["value"]) / abs(old["value"]) if old["value"] else None
        how = f"{pct:+.1f} %" if pct is not None else "from 0"
        reason = (
            f"{fig['label']} moved {how} (median {old['value']:g} -> {fig['value']:g} {fig['unit'] or ''}); "
            f"the confidence intervals do not overlap "
            f"({old['ci_low']:g}-{old['ci_high']:g} vs {fig['ci_low']:g}-{fig['ci_high']:g})"
        )
        (regressions if worse else improvements).append(
            _change(fig["metric"], old["value"], fig["value"], reason.strip(), fig["unit"])
        )

    return {
        "previous_run_id": previous.get("run_id"),
        "previous_time": previous.get("time"),
        "regressions": regressions,
        "improvements": improvements,
        "changes": changes,
        "key_figures": headline.key_values(previous),
    }


def _get(node, path):
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
