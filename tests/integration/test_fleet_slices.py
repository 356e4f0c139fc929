"""Two --limit slices of one run (preflight_run_id shared, as AWX job slicing runs them), written at the same
time over the real SSH test fleet, merge into the summary one unsliced run gives (report/slices.py).

The cheapest real run that writes host documents: playbooks/reach.yml (one ping per host over SSH) and then
playbooks/report.yml, the report play every entry playbook imports; nothing on a node changes."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.sshfleet import REPO, ansible_env

pytestmark = pytest.mark.node_untouched

RUN_ID = "fleet-slices-under-test"


def playbook(tmp_path):
    path = tmp_path / "reach_report.yml"
    path.write_text(
        f"- name: Reach the hosts\n  ansible.builtin.import_playbook: {REPO}/playbooks/reach.yml\n"
        f"- name: Write the reports\n  ansible.builtin.import_playbook: {REPO}/playbooks/report.yml\n"
        "  vars:\n    preflight_report_level: quick\n"
    )
    return path


def start(book, inventory, reports, run_id, limit=None):
    cmd = [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(book),
           "-e", f"preflight_report_dir={reports}", "-e", f"preflight_run_id={run_id}"]
    if limit:
        cmd += ["--limit", limit]
    return subprocess.Popen(cmd, cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    # dead1 is unreachable: the run reports it and exits non-zero, by design.
    assert "PLAY RECAP" in out and "Write the Preflight reports" in out, out[-3000:]
    return out


def view(reports, run_id):
    summary = json.loads((reports / run_id / "summary.json").read_text())
    rows = {r["host"]: (r["status"], r["verdict"], r["checks"], r["outliers"]) for r in summary["hosts"]}
    totals = {k: v for k, v in summary["totals"].items()}
    return {"totals": totals, "rows": rows, "not_ok": summary["not_ok"]}


def test_two_slices_at_once_merge_into_the_unsliced_summary(ssh_fleet, tmp_path):
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml")
    book = playbook(tmp_path)
    slices = [start(book, inventory, tmp_path / "sliced", RUN_ID, limit)
              for limit in ("node1,dead1", "node2,node3")]
    whole = start(book, inventory, tmp_path / "whole", RUN_ID)
    for proc in [*slices, whole]:
        finish(proc)
    sliced, unsliced = view(tmp_path / "sliced", RUN_ID), view(tmp_path / "whole", RUN_ID)
    assert sorted(sliced["rows"]) == ["dead1", "node1", "node2", "node3"]
    assert sliced == unsliced
    # Reached and pinged only (no facts read): each live host is a row too, and dead1 the unreachable one.
    assert sliced["totals"]["hosts"] == 4 and sliced["totals"]["unreachable"] == 1
    assert sliced["rows"]["dead1"][0] == "unreachable"
    # Every slice's host files are in the one run directory.
    names = {p.name for p in (tmp_path / "sliced" / RUN_ID).iterdir()}
    assert {f"{h}.json" for h in sliced["rows"]} <= names
