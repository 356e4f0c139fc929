"""playbooks/site.yml run by the real ansible-playbook over real SSH: 3 live hosts, one with an invalid THP value,
and one unreachable. Every host is a report row; the run still fails (non-zero) after the reports are written.
Then what AWX, ARA and an operator read after a run: PLAY RECAP, a converged node's second run (normal and
check mode), and each node's metrics file for node_exporter.

All SSH hosts share this machine's kernel, so "tuned" means this kernel took the desired values; the THP values
are put back afterwards.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _selected, read_tunables
from tests.moduleutils import module_util
from tests.sshfleet import ansible_env, run_playbook

THP = Path("/sys/kernel/mm/transparent_hugepage")
# What the fleet asked for: the project's defaults (role defaults, the lowest precedence), no inventory override.
GROUP_VARS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/thp/defaults/main.yml").read_text())
# One result per line, so messages can be matched whole.
JSON_OUTPUT = ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json")
SCHEMA = json.loads(Path(module_util("preflight.report.schema").export_path()).read_text())


def selected(path: Path) -> str:
    return _selected(path.read_text())


RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from the PLAY RECAP block."""
    block = stdout.split("PLAY RECAP", 1)[1]
    return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(block)}


def fleet_inventory(ssh_fleet, work: Path) -> Path:
    """The test fleet, with an invalid thp_enabled for node3 only, and each node's own textfile directory
    (preflight_textfile_dir), as separate machines would have."""
    path = ssh_fleet.inventory(work / "hosts.yml")
    doc = yaml.safe_load(path.read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    hosts["node3"]["thp_enabled"] = "sometimes"
    for name in ssh_fleet.hostnames():
        hosts[name]["preflight_textfile_dir"] = str(work / name / "textfile")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def metrics_file(directory: Path) -> dict:
    """The metrics file as node_exporter would find it: mode, text, and anything else in the directory."""
    path = directory / "preflight.prom"
    return {"mode": stat.S_IMODE(path.stat().st_mode), "text": path.read_text(),
            "others": sorted(p.name for p in directory.iterdir() if p.name != "preflight.prom")}


@pytest.fixture(scope="module")
def site_run(ssh_fleet, tmp_path_factory):
    """site.yml over the fleet; again on node1 (converged); then in check mode on node1; then
    playbooks/rollback.yml on node1 (the fleet's live hosts are this machine: one rollback takes back the units,
    drop-ins and records that site.yml leaves at their default places). The THP values are put back afterwards."""
    before = read_tunables()
    work = tmp_path_factory.mktemp("site")
    reports = work / "reports"
    report_dir = ["-e", f"preflight_report_dir={reports}"]
    # The THP values before the run, as the kernel held them: the role must report these as "before".
    thp_before = {"thp_enabled": selected(THP / "enabled"), "thp_defrag": selected(THP / "defrag")}
    inventory = fleet_inventory(ssh_fleet, work)
    out = {"reports": reports, "work": work, "thp_before": thp_before}
    try:
        out["proc"] = run_playbook("playbooks/site.yml", inventory, *report_dir, env=JSON_OUTPUT, timeout=600)
        out["first"] = (reports / "latest").resolve()
        out["node2_prom_after_first"] = (work / "node2" / "textfile" / "preflight.prom").read_text()
        out["second"] = run_playbook("playbooks/site.yml", inventory, "--limit", "node1", *report_dir, timeout=600)
        out["second_dir"] = (reports / "latest").resolve()
        out["check"] = run_playbook("playbooks/site.yml", inventory, "--limit", "node1", "--check", *report_dir,
                                    timeout=600)
        out["metrics"] = {host: metrics_file(work / host / "textfile") for host in ("node1", "node2")}
    finally:
        for name in ("proc", "second", "check"):  # kept for reading a failure
            if name in out:
                (work / f"{name}.log").write_text(out[name].stdout + out[name].stderr)
        rollback = run_playbook("playbooks/rollback.yml", inventory, "--limit", "node1", timeout=600)
        for path, text in before.items():
            if _selected(path.read_text()) != _selected(text):
                path.write_text(_selected(text))
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    out["after_rollback"] = {h: (work / h / "textfile" / "preflight.prom").exists() for h in ("node1", "node2")}
    return out


def docs_of(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in run_dir.glob("*.json") if p.name != "summary.json"}


def test_run_completes_writes_reports_then_exits_non_zero(site_run):
    proc = site_run["proc"]
    output = proc.stdout + proc.stderr
    # dead1 is unreachable=1 in PLAY RECAP (playbooks/reach.yml), so ansible-playbook exits 4, Ansible's code for it.
    assert proc.returncode == 4, output[-4000:]
    assert "Preflight: 2 host(s) did not finish (dead1, node3)" in output
    run_dir = site_run["first"]
    assert (site_run["reports"] / "latest").is_symlink()
    assert run_dir.parent == site_run["reports"]
    assert f"Reports: {run_dir}/summary.html" in output
    # the failure comes after the reports: every file is there
    assert {p.name for p in run_dir.iterdir()} >= {
        "summary.md",
        "summary.html",
        "summary.json",
        "preflight.prom",
        "junit.xml",
        "node1.json",
        "node1.md",
        "node1.html",
        "dead1.md",
    }


def test_live_hosts_are_tuned_and_reported_with_before_and_after(site_run):
    docs = docs_of(site_run["first"])
    for host in ("node1", "node2"):
        doc = docs[host]
        assert (doc["status"], doc["error"]) == ("ok", None), doc["error"]
        rows = {s["name"]: s for s in doc["settings"]["thp"]["settings"]}
        assert rows["thp_enabled"]["after"] == GROUP_VARS["thp_enabled"]
        assert rows["thp_defrag"]["after"] == GROUP_VARS["thp_defrag"]
        # One kernel under three hosts: the first host to tune saw the original value, the others Preflight's.
        assert rows["thp_defrag"]["before"] in (site_run["thp_before"]["thp_defrag"], GROUP_VARS["thp_defrag"])
        checks = {c["id"]: c for c in doc["checks"]}
        assert checks["thp.enabled"]["status"] == checks["thp.defrag"]["status"] == "pass"
        assert checks["thp.enabled"]["measured"] == GROUP_VARS["thp_enabled"]
        # node_facts read the kernel after tuning (reading sysfs here instead would race other tests' writes)
        assert doc["facts"]["thp"]["enabled"] == GROUP_VARS["thp_enabled"]
        assert doc["facts"]["thp"]["defrag"] == GROUP_VARS["thp_defrag"]
        assert doc["facts"]["kernel"]["release"] == os.uname().release
        # The unit is installed and enabled for boot; only a kernel_cmdline method needs a bootloader.
        no_grub = not os.path.exists("/etc/default/grub")
        expected_persist = "warn" if "kernel_cmdline" in GROUP_VARS["thp_persist"] and no_grub else "pass"
        assert checks["thp.persisted"]["status"] == expected_persist
        md = (site_run["first"] / f"{host}.md").read_text()
        assert f"| thp | thp_defrag | {rows['thp_defrag']['before']} | {GROUP_VARS['thp_defrag']} |" in md


def test_unreachable_host_is_a_row_with_its_error(site_run):
    run_dir = site_run["first"]
    dead = docs_of(run_dir)["dead1"]
    assert dead["status"] == "unreachable"
    assert dead["error"]["task"] == "ping"
    assert "127.0.0.254" in dead["error"]["msg"] and "Connection refused" in dead["error"]["msg"]
    assert dead["facts"] is None
    assert dead["level"] == "quick"  # site.yml's level, though the host recorded no run
    summary = json.loads((run_dir / "summary.json").read_text())
    row = next(r for r in summary["hosts"] if r["host"] == "dead1")
    assert (row["status"], row["verdict"]) == ("unreachable", "fail")
    assert "- **dead1** UNREACHABLE at `ping`: " in (run_dir / "summary.md").read_text()


def test_failing_host_is_a_failed_row_and_did_not_stop_the_others(site_run):
    run_dir = site_run["first"]
    docs = docs_of(run_dir)
    node3 = docs["node3"]
    assert node3["status"] == "failed"
    assert "thp_enabled" in node3["error"]["msg"] and "sometimes" in node3["error"]["msg"]
    assert node3["error"]["task"]
    assert node3["facts"] is not None, "facts are read even after a failed role"
    assert "thp" not in node3["settings"]  # rejected before any change
    assert docs["node1"]["status"] == docs["node2"]["status"] == "ok"
    assert sorted(docs) == ["dead1", "node1", "node2", "node3"]


def test_documents_validate_and_machine_outputs_agree(site_run):
    run_dir = site_run["first"]
    for doc in docs_of(run_dir).values():
        jsonschema.validate(doc, SCHEMA)
    import xml.etree.ElementTree as ET

    junit = ET.parse(run_dir / "junit.xml").getroot()
    assert sorted(s.get("name") for s in junit.findall("testsuite")) == ["dead1", "node1", "node2", "node3"]
    prom = (run_dir / "preflight.prom").read_text()
    assert 'preflight_host_up{host="dead1"} 0' in prom
    assert 'preflight_host_status{host="node3",status="failed"} 1' in prom


def test_second_run_compares_each_host_with_its_previous_report(site_run):
    proc, first, second = site_run["second"], site_run["first"], site_run["second_dir"]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert second != first
    docs = docs_of(second)
    assert sorted(docs) == ["node1"]  # --limit: only the hosts that took part
    assert docs["node1"]["history"]["previous_run_id"] == first.name
    assert docs["node1"]["history"]["regressions"] == []


def test_unreachable_host_is_unreachable_in_the_recap_and_nothing_else_fails(site_run):
    proc = site_run["proc"]
    counts = recap(proc.stdout)
    assert counts["dead1"]["unreachable"] == 1, proc.stdout[-3000:]
    assert counts["dead1"]["failed"] == counts["dead1"]["ignored"] == 0
    assert (counts["node3"]["failed"], counts["node3"]["unreachable"]) == (1, 0)
    for host in ("node1", "node2"):
        assert (counts[host]["unreachable"], counts[host]["failed"], counts[host]["ignored"]) == (0, 0, 0), host
    assert counts.get("localhost", {}).get("failed", 0) == 0
    assert "dead1: UNREACHABLE at 'ping'" in proc.stdout  # the outcome line


def test_second_run_on_a_converged_node_changes_nothing_in_normal_and_check_mode(site_run):
    for name in ("second", "check"):
        proc = site_run[name]
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert recap(proc.stdout)["node1"]["changed"] == 0, (name, proc.stdout[-6000:])


def test_each_node_gets_its_own_metrics_file_readable_by_node_exporter(site_run):
    for host in ("node1", "node2"):
        found = site_run["metrics"][host]
        assert found["mode"] == 0o644
        assert found["others"] == [], "a temp file was left next to the metrics"
        names = {f.name for f in text_string_to_metric_families(found["text"])}
        assert {"preflight_last_run_timestamp_seconds", "preflight_run_status", "preflight_thp_info"} <= names
        assert 'host="' not in found["text"] and "run_id" not in found["text"]


def test_a_limited_run_rewrites_only_its_nodes_metrics(site_run):
    assert site_run["metrics"]["node2"]["text"] == site_run["node2_prom_after_first"]
    stamps = {}
    for host in ("node1", "node2"):
        text = site_run["metrics"][host]["text"]
        stamps[host] = float(re.search(r"^preflight_last_run_timestamp_seconds (\S+)$", text, re.M)[1])
    assert stamps["node1"] > stamps["node2"]  # node1 was written again by the --limit run


def test_rollback_removes_the_metrics_of_the_nodes_it_ran_on(site_run):
    assert site_run["after_rollback"] == {"node1": False, "node2": True}  # rollback ran with --limit node1


def test_promtool_accepts_the_metrics_files(site_run):
    for host in ("node1", "node2"):
        proc = subprocess.run(["promtool", "check", "metrics"], input=site_run["metrics"][host]["text"],
                              capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), host


def test_report_module_in_check_mode_computes_but_writes_nothing(tmp_path):
    args = {
        "report_dir": str(tmp_path / "reports"),
        "hosts": [{"host": "dead1", "ping": {"unreachable": True, "msg": "Failed to connect to the host via ssh"}}],
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "-m",
            "preflight_report",
            "--check",
            "-a",
            json.dumps(args),
            "-o",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["changed"] is True and result["files"] == []
    assert str(tmp_path / "reports" / result["run_id"] / "dead1.md") in result["would_write"]
    assert result["not_ok_hosts"] == {"dead1": "unreachable: Failed to connect to the host via ssh"}
    assert result["msg"].startswith("Reports: (check mode, nothing written) ")
    assert not (tmp_path / "reports").exists()


def test_a_run_where_no_host_answers_still_writes_its_report(ssh_fleet, tmp_path):
    inventory = ssh_fleet.inventory(tmp_path / "dead.yml")
    doc = yaml.safe_load(inventory.read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    doc["all"]["children"]["fleet"]["hosts"] = {"dead1": hosts["dead1"]}
    inventory.write_text(yaml.safe_dump(doc))
    proc = run_playbook(
        "playbooks/site.yml",
        inventory,
        "-e",
        f"preflight_report_dir={tmp_path / 'reports'}",
        env=JSON_OUTPUT,
        timeout=300,
    )
    # ansible-playbook's status for an unreachable host (PLAY RECAP: unreachable=1 on dead1, nothing failed).
    assert proc.returncode == 4, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    assert [(r["host"], r["status"]) for r in summary["hosts"]] == [("dead1", "unreachable")]
