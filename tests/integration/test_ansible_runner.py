"""The audit playbook under ansible-runner, the way AWX-style tooling runs it: a private data directory with
env/extravars, the project directory pointing at this checkout, the inventory passed by path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_bootstrap import fleet_inventory, host_documents, read_sysfs
from tests.sshfleet import REPO, ansible_env

RUNNER = Path(sys.executable).parent / "ansible-runner"


def test_audit_runs_under_ansible_runner_and_changes_nothing(ssh_fleet, tmp_path, restore_kernel_tunables):
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1", "node2"], thp_enabled="never",
                                       thp_defrag="always")
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
    artifacts = private / "artifacts" / "audit"
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (artifacts / "status").read_text() == "successful"
    assert (artifacts / "rc").read_text() == "0"
    assert read_sysfs() == before
    events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
    plays = {e["event_data"].get("play") for e in events if e["event"] == "playbook_on_play_start"}
    assert plays == {"Refuse to audit without --check", "Find the hosts that answer over SSH",
                     "Audit every node (check mode; nothing on a node changes)",
                     "Write the Preflight reports on the controller"}
    stats = next(e for e in events if e["event"] == "playbook_on_stats")["event_data"]
    assert set(stats["ok"]) >= {"node1", "node2", "localhost"} and not stats["failures"]
    docs = host_documents(tmp_path)
    assert set(docs) == {"node1", "node2"}
    assert all(d["status"] == "ok" and d["run"]["level"] == "quick" for d in docs.values())
