"""Build one host's document from what site.yml collected for it.

The input per host (made by playbooks/report.yml from hostvars) is:
  host, groups, level, ping (the registered ping result), failure ({task, msg} from the rescue),
  facts (ansible_facts.preflight as node_facts returned it this run), role_results (preflight_role_results),
  desired (the host's resolved tuning variables), thresholds (preflight_thresholds overrides),
  probes ({result name: envelope}), run (preflight_run: level, budget, planned, ran, failed, skipped and
  phases, as playbooks/tasks/ record them), timings ({phase: seconds}).
"""

from __future__ import annotations

import json

from ansible.module_utils.preflight.report import thresholds as thresholds_mod
from ansible.module_utils.preflight.report.schema import LEVELS, SCHEMA_VERSION

STATUS_ORDER = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}


def _status_and_error(item: dict) -> tuple[str, dict | None]:
    ping = item.get("ping") or {}
    if ping.get("unreachable"):
        return "unreachable", {"task": "ping", "msg": _clean(ping.get("msg")) or "unreachable (no message)"}
    failure = item.get("failure")
    if failure:
        return "failed", {
            "task": _clean(failure.get("task")) or None,
            "msg": _clean(failure.get("msg")) or "failed (the task gave no message)",
        }
    if not ping:
        return "failed", {"task": None, "msg": "the host never ran the tuning play (no ping result was recorded)"}
    if not item.get("facts"):
        return "failed", {
            "task": None,
            "msg": "no facts came back: the host stopped answering or was interrupted after tuning began",
        }
    return "ok", None


def _clean(text) -> str:
    """One line: messages end up in list items, table cells and JUnit attributes."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, default=str)
    return " ".join(text.split())


def _plain(value):
    """Round-trip through JSON so Ansible's wrapped strings and tuples become plain JSON types."""
    return json.loads(json.dumps(value, default=str))


def build(item: dict, run_id: str, time: str) -> dict:
    """The document before checks, fleet outliers and history are added (see pipeline)."""
    status, error = _status_and_error(item)
    level = item.get("level") or "quick"
    groups = sorted(g for g in (item.get("groups") or []) if g not in ("all", "ungrouped"))
    # An unreachable host ran nothing now: whatever its variables hold (the fact cache) is from an earlier run.
    fresh = status != "unreachable"
    run = item.get("run") if fresh else None
    if run and run.get("level"):
        level = run["level"]
    # A bad report variable fails this host's row, not the whole run's report.
    problems = []
    if level not in LEVELS:
        problems.append(f"preflight_level is {level!r}; use one of {', '.join(LEVELS)}")
        level = "quick"
    if run:
        run = dict(run, level=level)
    try:
        thresholds = thresholds_mod.resolve(item.get("thresholds"))
    except thresholds_mod.ThresholdError as exc:
        problems.append(str(exc))
        thresholds = thresholds_mod.resolve(None)
    if problems and fresh:
        text = "; ".join(problems) + ". Fix it in the inventory or group_vars: this host cannot be judged until then."
        if status == "ok":
            status, error = "failed", {"task": "report: validate this host's report variables", "msg": text}
        else:
            error = dict(error, msg=f"{error['msg']} Also: {text}")
    facts = item.get("facts") or None
    return _plain(
        {
            "schema_version": SCHEMA_VERSION,
            "host": item["host"],
            "run_id": run_id,
            "time": time,
            "status": status,
            "error": error,
            "level": level,
            "groups": groups,
            "gpu_class": item.get("gpu_class") or (groups[0] if groups else "all"),
            "verdict": "fail",
            "facts": facts if fresh else None,
            "desired": item.get("desired") or {},
            "settings": item.get("role_results") or {},
            "probes": {k: v for k, v in (item.get("probes") or {}).items() if v} if fresh else {},
            "run": run or None,
            "checks": [],
            "recommendations": [],
            "outliers": [],
            "history": None,
            "thresholds": thresholds,
            "timings": (item.get("timings") or {}) if fresh else {},
        }
    )


def verdict(document: dict) -> str:
    """The worst check; a host that did not finish (failed, unreachable) cannot pass."""
    if document["status"] != "ok":
        return "fail"
    worst = max((STATUS_ORDER[c["status"]] for c in document["checks"]), default=1)
    return {0: "pass", 1: "pass", 2: "warn", 3: "fail"}[worst]


def comparison_group(document: dict) -> str:
    """Hosts are compared with their own GPU class (preflight_gpu_class, else the first inventory group)."""
    return document["gpu_class"]
