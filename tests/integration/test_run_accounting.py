"""What AWX, ARA and an operator read after a run: PLAY RECAP, and each node's metrics file for node_exporter.

Real ansible-playbook over the SSH test fleet (tests/sshfleet.py): node1 and node2 are sshd hosts on this
machine, dead1 an address where nothing listens. Each node writes its metrics into its own textfile directory
(preflight_textfile_dir per host in the inventory), as separate machines would. The fleet is rolled back after.
"""

from __future__ import annotations

import re
import stat
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.sshfleet import run_playbook

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from the PLAY RECAP block."""
    block = stdout.split("PLAY RECAP", 1)[1]
    return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(block)}


@pytest.fixture(scope="module")
def runs(ssh_fleet, tmp_path_factory):
    """site.yml over node1, node2 and dead1; again on node1 (converged); then in check mode on node1."""
    from tests.conftest import read_tunables

    before = read_tunables()
    work = tmp_path_factory.mktemp("accounting")
    inventory = ssh_fleet.inventory(work / "hosts.yml")
    doc = yaml.safe_load(inventory.read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    doc["all"]["children"]["fleet"]["hosts"] = {name: hosts[name] for name in ("node1", "node2", "dead1")}
    for name in ("node1", "node2"):
        hosts[name]["preflight_textfile_dir"] = str(work / name / "textfile")
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    reports = ["-e", f"preflight_report_dir={work / 'reports'}"]
    out = {"work": work}
    try:
        out["first"] = run_playbook("playbooks/site.yml", inventory, *reports, timeout=600)
        out["node2_prom_after_first"] = (work / "node2" / "textfile" / "preflight.prom").read_text()
        out["second"] = run_playbook("playbooks/site.yml", inventory, "--limit", "node1", *reports, timeout=600)
        out["check"] = run_playbook("playbooks/site.yml", inventory, "--limit", "node1", "--check", *reports,
                                    timeout=600)
        out["metrics"] = {host: metrics_file(work / host / "textfile") for host in ("node1", "node2")}
    finally:
        for name in ("first", "second", "check"):  # kept for reading a failure
            if name in out:
                (work / f"{name}.log").write_text(out[name].stdout + out[name].stderr)
        rollback = run_playbook("playbooks/rollback.yml", inventory, "--limit", "node1", timeout=600)
        for path, text in before.items():
            path.write_text(text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip())
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    out["after_rollback"] = {h: (work / h / "textfile" / "preflight.prom").exists() for h in ("node1", "node2")}
    return out


def metrics_file(directory) -> dict:
    """The metrics file as node_exporter would find it: mode, text, and anything else in the directory."""
    path = directory / "preflight.prom"
    return {"mode": stat.S_IMODE(path.stat().st_mode), "text": path.read_text(),
            "others": sorted(p.name for p in directory.iterdir() if p.name != "preflight.prom")}


def test_unreachable_host_is_unreachable_in_the_recap_and_nothing_else_fails(runs):
    proc = runs["first"]
    counts = recap(proc.stdout)
    assert counts["dead1"]["unreachable"] == 1, proc.stdout[-3000:]
    assert counts["dead1"]["failed"] == counts["dead1"]["ignored"] == 0
    for host in ("node1", "node2"):
        assert (counts[host]["unreachable"], counts[host]["failed"], counts[host]["ignored"]) == (0, 0, 0), host
    assert counts.get("localhost", {}).get("failed", 0) == 0
    assert proc.returncode == 4, "ansible-playbook's exit status for an unreachable host"
    assert "dead1: UNREACHABLE at ''ping''" in proc.stdout  # the outcome line, YAML-quoted


def test_second_run_on_a_converged_node_changes_nothing(runs):
    proc = runs["second"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc.stdout)["node1"]["changed"] == 0, proc.stdout[-6000:]


def test_check_mode_on_a_converged_node_changes_nothing(runs):
    proc = runs["check"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc.stdout)["node1"]["changed"] == 0, proc.stdout[-6000:]


def test_each_node_gets_its_own_metrics_file_readable_by_node_exporter(runs):
    for host in ("node1", "node2"):
        found = runs["metrics"][host]
        assert found["mode"] == 0o644
        assert found["others"] == [], "a temp file was left next to the metrics"
        names = {f.name for f in text_string_to_metric_families(found["text"])}
        assert {"preflight_last_run_timestamp_seconds", "preflight_run_status", "preflight_thp_info"} <= names
        assert 'host="' not in found["text"] and "run_id" not in found["text"]


def test_a_limited_run_rewrites_only_its_nodes_metrics(runs):
    assert runs["metrics"]["node2"]["text"] == runs["node2_prom_after_first"]
    stamps = {}
    for host in ("node1", "node2"):
        text = runs["metrics"][host]["text"]
        stamps[host] = float(re.search(r"^preflight_last_run_timestamp_seconds (\S+)$", text, re.M)[1])
    assert stamps["node1"] > stamps["node2"]  # node1 was written again by the --limit run


def test_rollback_removes_the_metrics_of_the_nodes_it_ran_on(runs):
    assert runs["after_rollback"] == {"node1": False, "node2": True}  # rollback ran with --limit node1


def test_promtool_accepts_the_metrics_files(runs):
    for host in ("node1", "node2"):
        proc = subprocess.run(["promtool", "check", "metrics"], input=runs["metrics"][host]["text"],
                              capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), host
