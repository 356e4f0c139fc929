"""Checks: a pure function of the host document (no Ansible, no I/O), so each is testable alone.

Every check says what was measured, what was expected (or the threshold), and in `reason` what that
means and what to do, written for the operator who reads it at 3 a.m.
"""

from __future__ import annotations

from . import metrics
from .checks_common import check, num, slug
from .checks_gpu import gpu_checks
from .checks_probe import probe_checks
from .checks_tuning import hugepages_checks, jemalloc_checks, thp_checks

__all__ = ["check", "run_checks"]


def run_checks(doc: dict) -> list[dict]:
    """All checks for one host document, in report order."""
    out = _host_checks(doc)
    if doc["status"] == "unreachable":
        return out
    out += _run_checks(doc)
    out += thp_checks(doc)
    out += hugepages_checks(doc)
    out += jemalloc_checks(doc)
    out += gpu_checks(doc)
    out += probe_checks(doc)
    return out


# --- the run itself ------------------------------------------------------------------------------


def _host_checks(doc: dict) -> list[dict]:
    host, error = doc["host"], doc["error"] or {}
    if doc["status"] == "unreachable":
        return [
            check(
                "host.reachable",
                "Host answered over SSH",
                "host",
                "fail",
                f"Ansible could not reach {host}: {error.get('msg')}. Check that the node is up, that sshd "
                f"listens on the inventory's address and port, and that the key is accepted; then rerun "
                f"with --limit {host}.",
                measured=False,
                expected=True,
            )
        ]
    out = [check("host.reachable", "Host answered over SSH", "host", "pass", f"{host} answered.", True, True)]
    if doc["status"] == "failed":
        task = error.get("task") or "an unnamed task"
        out.append(
            check(
                "host.run_completed",
                "Tuning and fact gathering completed",
                "host",
                "fail",
                f"The run stopped on {host} at '{task}': {error.get('msg')}. Nothing after that task ran "
                f"on this host; fix the cause above and rerun with --limit {host}.",
                measured=False,
                expected=True,
            )
        )
    else:
        out.append(
            check(
                "host.run_completed",
                "Tuning and fact gathering completed",
                "host",
                "pass",
                "Every tuning role and node_facts finished.",
                True,
                True,
            )
        )
    return out


def _run_checks(doc: dict) -> list[dict]:
    run = doc["run"] or {}
    out = []
    for failed in run.get("failed") or []:
        name = failed.get("probe") or "?"
        how = (
            " (timed out)"
            if failed.get("timed_out")
            else (f" (exit status {failed['rc']})" if failed.get("rc") else "")
        )
        tail = (failed.get("stderr_tail") or "").strip()
        reason = f"The {name} probe failed{how}: {failed.get('msg') or 'no message'}."
        if tail:
            reason += f" End of its stderr: {tail[-400:]}"
        reason += f" Fix the cause and rerun it alone with --tags {metrics.kind(doc, name)} --limit {doc['host']}."
        out.append(check(f"run.probe.{slug(name)}", f"Probe {name} completed", "host", "fail", reason, False, True))
    if run.get("over_budget"):
        out.append(
            check(
                "run.budget",
                f"Level {doc['level']} finished within its time budget",
                "host",
                "warn",
                f"Certifying took {run.get('certify_s')} s, over the {run.get('budget_s')} s budget of level "
                f"{doc['level']} (the phase table shows where the time went). Raise preflight_level_budget_s for this "
                "class if that is normal for its model, or find the slow phase.",
                run.get("certify_s"),
                None,
                {"direction": "max", "warn": num(run.get("budget_s")), "fail": None},
                "s",
            )
        )
    return out
