"""The audit playbook under ansible-runner, the way AWX-style tooling runs it: a private data directory with
env/extravars, the project directory pointing at this checkout, the inventory passed by path. The fleet has
THP drift on every live host and one unreachable host: the audit changes nothing, shows the drift, and its
non-zero exit reaches the runner's artifacts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_bootstrap import fleet_inventory, host_documents, read_sysfs
from tests.sshfleet import REPO, ansible_env

RUNNER = Path(sys.executable).parent / "ansible-runner"


def test_audit_under_ansible_runner_changes_nothing_and_reports_the_drift(ssh_fleet, tmp_path,
                                                                          restore_kernel_tunables, hugepage_pools):
    live = re.search(r"\[(\w+)\]", Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()).group(1)
    other = "never" if live != "never" else "madvise"
    # The level is forced to quick by audit.yml's play vars, whatever the inventory says; -e would win over those.
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, None, thp_enabled=other)
    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    # The same variables as the playbook tests pass with -e, in the file ansible-runner reads them from.
    (private / "env" / "extravars").write_text(Path(extra[1].removeprefix("@")).read_text())
    # ansible-runner runs ansible-playbook in the project directory; the config is named, not guessed.
    (private / "env" / "envvars").write_text(json.dumps({"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}))
    before = read_sysfs()
    proc = subprocess.run(
        [str(RUNNER), "run", str(private), "-p", "playbooks/audit.yml", "--project-dir", str(REPO),
         "--inventory", str(inventory), "--cmdline", "--check --diff", "--ident", "audit"],
        env=ansible_env(), capture_output=True, text=True, timeout=900,
    )
    assert read_sysfs() == before, "the audit changed a kernel tunable"
    artifacts = private / "artifacts" / "audit"
    # An unreachable host makes the audit exit non-zero, and the runner reports it as the job's status.
    rc = int((artifacts / "rc").read_text())
    assert rc != 0 and proc.returncode == rc, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (artifacts / "status").read_text() == "failed"
    assert f"-{live}\n+{other}" in proc.stdout.replace("\r", ""), "the audit did not show the drift it found"

    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    plays = {e["event_data"].get("play") for e in events if e["event"] == "playbook_on_play_start"}
    assert plays == {"Refuse to audit without --check", "Find the hosts that answer over SSH",
                     "Audit every node (check mode; nothing on a node changes)",
                     "Write the Preflight reports on the controller"}
    stats = next(e for e in events if e["event"] == "playbook_on_stats")["event_data"]
    assert set(stats["ok"]) >= {*ssh_fleet.hostnames(), "localhost"} and not stats["failures"]
    assert set(stats["dark"]) == {"dead1"}

    docs = host_documents(tmp_path)
    assert docs["dead1"]["status"] == "unreachable"
    for host in ssh_fleet.hostnames():
        doc = docs[host]
        assert doc["status"] == "ok", doc["error"]
        assert doc["level"] == "quick" and doc["run"]["level"] == "quick" and doc["probes"] == {}
        assert [p["name"] for p in doc["run"]["phases"]] == ["tune", "facts"]
        assert doc["settings"]["thp"]["check_mode"] is True
