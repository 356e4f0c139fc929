"""One host's document, assembled from the host's variables: status and error, level, desired state, inputs.

The report play (playbooks/report.yml) passes, per host of the run, the raw variables named in
REPORT_HOSTVARS (undefined ones as null); report_input() turns them into the report's input and build()
into the document before checks, fleet outliers and history are added (report/pipeline.py does that).
close_run() and run_line() close a host's run (playbooks/tasks/summary.yml): totals, budget and one line.
"""

from __future__ import annotations

import itertools
import json

from . import thresholds as thresholds_mod
from .catalog import HOST_DOCUMENT_SCHEMA_VERSION, LEVELS, THP_DEFAULTS
from .redact import redact

STATUS_ORDER = {"skip": 0, "pass": 1, "warn": 2, "fail": 3}
# A host's run status. incomplete: the run reached the host and read its facts, but a planned probe has no
# outcome (it did not run, fail, or get skipped with a reason): the host dropped out or the run was cut short.
HOST_STATUSES = ("ok", "incomplete", "failed", "unreachable")

# The desired state the report compares with, per role: {role: {key in the document: host variable}}.
DESIRED_VARIABLES = {
    "thp": {
        "enabled": "thp_enabled",
        "defrag": "thp_defrag",
        "khugepaged_defrag": "thp_khugepaged_defrag",
        "persist": "thp_persist",
    },
    "hugepages": {
        "count": "hugepages_count",
        "per_node": "hugepages_per_node",
        "size": "hugepages_size",
        "shortfall": "hugepages_shortfall",
    },
    "jemalloc": {"enabled": "jemalloc_enabled", "scope": "jemalloc_scope"},
}
# Role defaults are not host variables, so the report play cannot see them: these stand in for a variable
# the host does not define (a variable set to null stays null: "leave it alone"). THP's are the catalog's;
# hugepages' say what roles/hugepages/defaults/main.yml says (tests/unit/test_core_document.py checks it).
DESIRED_DEFAULTS = {
    **{name: THP_DEFAULTS[name] for name in DESIRED_VARIABLES["thp"].values()},
    "hugepages_size": "2M",
    "hugepages_shortfall": "fail",
}

# Every host variable the report reads: playbooks/report.yml passes those the host defines, as they are.
REPORT_HOSTVARS = (
    "group_names",
    "preflight_gpu_class",
    "preflight_level",
    "preflight_ping",
    "preflight_failure",
    "preflight_node_facts",
    "preflight_role_results",
    "preflight_probe_results",
    "preflight_run",
    "preflight_timings",
    "preflight_thresholds",
) + tuple(var for role in DESIRED_VARIABLES.values() for var in role.values())


def report_input(hostvars: dict, report_level: str | None = None) -> dict:
    """The report's input for one host from the variables it defines (REPORT_HOSTVARS and inventory_hostname).

    `report_level` (preflight_report_level, a var of the importing playbook) wins over the host's
    preflight_level; preflight_run.level wins over both (see build()). Unknown names are a ValueError.
    """
    if "host" in hostvars and "inventory_hostname" not in hostvars:
        return _assembled_input(hostvars, report_level)
    unknown = sorted(set(hostvars) - set(REPORT_HOSTVARS) - {"inventory_hostname"})
    if unknown or not hostvars.get("inventory_hostname"):
        raise ValueError(
            f"a host entry needs inventory_hostname and takes only {', '.join(REPORT_HOSTVARS)}; "
            f"got {', '.join(unknown) or 'no inventory_hostname'}"
        )

    def var(name, default=None):
        value = hostvars.get(name)
        return default if value is None else value

    desired = {
        role: {key: hostvars.get(name, DESIRED_DEFAULTS.get(name)) for key, name in names.items()}
        for role, names in DESIRED_VARIABLES.items()
    }
    node_facts = var("preflight_node_facts", {})
    level = report_level or var("preflight_level", "quick")
    return {
        "host": str(hostvars["inventory_hostname"]),
        "groups": [str(g) for g in var("group_names", [])],
        "gpu_class": var("preflight_gpu_class"),
        "level": level if isinstance(level, str) else str(level),
        "ping": var("preflight_ping"),
        "failure": var("preflight_failure"),
        "facts": (node_facts.get("ansible_facts") or {}).get("preflight") if isinstance(node_facts, dict) else None,
        "role_results": var("preflight_role_results", {}),
        "desired": desired,
        "thresholds": var("preflight_thresholds", {}),
        "probes": var("preflight_probe_results", {}),
        "timings": var("preflight_timings", {}),
        "run": var("preflight_run"),
    }


# The input already assembled (host, groups, ping, facts, ...), as callers before REPORT_HOSTVARS passed it.
ASSEMBLED_KEYS = ("host", "groups", "gpu_class", "level", "ping", "failure", "facts", "role_results", "desired",
                  "thresholds", "probes", "timings", "run")


def _assembled_input(item: dict, report_level: str | None) -> dict:
    unknown = sorted(set(item) - set(ASSEMBLED_KEYS))
    if unknown:
        raise ValueError(f"a host entry with 'host' takes only {', '.join(ASSEMBLED_KEYS)}; got {', '.join(unknown)}")
    out = {key: item.get(key) for key in ASSEMBLED_KEYS}
    for key, default in (("groups", []), ("level", "quick"), ("role_results", {}), ("desired", {}),
                         ("thresholds", {}), ("probes", {}), ("timings", {})):
        if out[key] is None:
            out[key] = default
    out["level"] = report_level or str(out["level"])
    return out


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
    missing = missing_probes(item.get("run"))
    if missing:
        return "incomplete", {
            "task": f"probe {missing[0]}",
            "msg": f"planned probe(s) {', '.join(missing)} recorded no result, no failure and no skip reason: "
            "the host stopped answering or the run was interrupted before they ended. Run the probes again "
            "(playbooks/probe.yml) once the host answers.",
        }
    return "ok", None


def missing_probes(run) -> list[str]:
    """The planned probes of a run with no outcome: not in ran, not in failed, not skipped with a reason."""
    if not isinstance(run, dict):
        return []
    done = {str(name) for name in run.get("ran") or []}
    done |= {str(f.get("probe")) for f in run.get("failed") or [] if isinstance(f, dict)}
    done |= {str(s.get("probe")) for s in run.get("skipped") or [] if isinstance(s, dict) and s.get("reason")}
    return [str(name) for name in run.get("planned") or [] if str(name) not in done]


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


def _level_and_thresholds(item: dict, run: dict | None) -> tuple[str, dict, list[str]]:
    """The level and thresholds to judge by, and what is wrong with the variables that name them."""
    level = item.get("level") or "quick"
    if run and run.get("level"):
        level = run["level"]
    problems = []
    if level not in LEVELS:
        problems.append(f"preflight_level is {level!r}; use one of {', '.join(LEVELS)}")
        level = "quick"
    try:
        thresholds = thresholds_mod.resolve(item.get("thresholds"))
    except thresholds_mod.ThresholdError as exc:
        problems.append(str(exc))
        thresholds = thresholds_mod.resolve(None)
    return level, thresholds, problems


def build(item: dict, run_id: str, time: str) -> dict:
    """The document before checks, fleet outliers and history are added (see report/pipeline.py)."""
    status, error = _status_and_error(item)
    groups = sorted(g for g in (item.get("groups") or []) if g not in ("all", "ungrouped"))
    # An unreachable host ran nothing now: whatever its variables hold (the fact cache) is from an earlier run.
    fresh = status != "unreachable"
    run = item.get("run") if fresh else None
    # A bad report variable fails this host's row, not the whole run's report.
    level, thresholds, problems = _level_and_thresholds(item, run)
    if run:
        run = dict(run, level=level)
    if problems and fresh:
        text = "; ".join(problems) + ". Fix it in the inventory or group_vars: this host cannot be judged until then."
        if status == "ok":
            status, error = "failed", {"task": "report: validate this host's report variables", "msg": text}
        else:
            error = dict(error, msg=f"{error['msg']} Also: {text}")
    facts = item.get("facts") or None
    # Secrets (server_env's HF_TOKEN, an --api-key on a failed probe's command line) never reach a report.
    return redact(_plain(
        {
            "schema_version": HOST_DOCUMENT_SCHEMA_VERSION,
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
    ))


def verdict(document: dict) -> str:
    """The worst check; a host that did not finish (incomplete, failed, unreachable) cannot pass."""
    if document["status"] != "ok":
        return "fail"
    worst = max((STATUS_ORDER[c["status"]] for c in document["checks"]), default=1)
    return {0: "pass", 1: "pass", 2: "warn", 3: "fail"}[worst]


def comparison_group(document: dict) -> str:
    """Hosts are compared with their own GPU class (preflight_gpu_class, else the first inventory group)."""
    return document["gpu_class"]


# --- closing a host's run (playbooks/tasks/summary.yml) -------------------------------------------------


def _float(value) -> float:
    """Like Jinja's float filter: 0.0 for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def close_run(run: dict) -> dict:
    """preflight_run with total_s, certify_s (every phase but tune: the level's budget covers what
    certifies the node, not the tuning) and over_budget added."""
    phases = run.get("phases") or []
    total = round(sum(p["duration_s"] for p in phases), 1)
    certify = round(sum(p["duration_s"] for p in phases if p.get("name") != "tune"), 1)
    over = "budget_s" in run and _float(certify) > _float(run["budget_s"])
    return dict(run, total_s=float(total), certify_s=float(certify), over_budget=over)


def timings(run: dict) -> dict:
    """{phase: seconds} for the report."""
    return {p["name"]: p["duration_s"] for p in run.get("phases") or []}


def run_line(host: str, run: dict) -> str:
    """One line for people: what ran, failed and was skipped (and why), phase times, the budget."""
    parts = [f"{host}: level {run.get('level')}", "ran " + (", ".join(run.get("ran") or []) or "no probes")]
    if run.get("failed"):
        parts.append("FAILED " + ", ".join(f["probe"] for f in run["failed"]))
    skipped = sorted(run.get("skipped") or [], key=lambda s: s["reason"])
    for reason, items in itertools.groupby(skipped, key=lambda s: s["reason"]):
        parts.append(f"skipped {', '.join(s['probe'] for s in items)} ({reason})")
    phases = [
        f"{p['name']} {p['duration_s']} s" + ("" if p.get("status", "ok") == "ok" else f" ({p['status']})")
        for p in run.get("phases") or []
    ]
    parts.append("phases: " + (", ".join(phases) or "none"))
    budget = run.get("budget_s", "?")
    parts.append(
        f"{run.get('certify_s')} s of the {budget} s budget of level {run.get('level')}"
        + (" - OVER BUDGET" if run.get("over_budget") else "")
        + f" (total with tuning {run.get('total_s')} s)"
    )
    return redact("; ".join(parts))
