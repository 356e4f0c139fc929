"""A host whose sshd is killed mid-play (issue 15's fault table), over real SSH hosts this test starts itself
(the session fleet's sshd must live on): the other host finishes, the dropped host's report row says it stopped
answering (PLAY RECAP: unreachable=1), every report file is whole, a rerun once sshd is back converges, and
rollback gives the node back.

Both hosts are this machine, so each gets its own state directories; the kernel's THP values are put back
by restore_kernel_tunables whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.test_site_playbook import recap
from tests.moduleutils import module_util
from tests.sshfleet import REPO, SSHD, SshFleet, ansible_env, run_playbook

lock = module_util("preflight.core.lock")


def _sessions_of(listener: int) -> list[int]:
    """The per-connection sshd processes a listener forked (and so the modules they run)."""
    out = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def kill_sshd(listener: int) -> None:
    """What a crashed or OOM-killed sshd looks like to the controller: the listener and every session gone."""
    for pid in [*_sessions_of(listener), listener]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def two_hosts(tmp_path):
    fleet = SshFleet(tmp_path / "fleet", ["127.0.0.61", "127.0.0.62"]).start()
    inventory = fleet.inventory(tmp_path / "hosts.yml")
    doc = yaml.safe_load(inventory.read_text())
    state = str(tmp_path / "state" / "{{ inventory_hostname }}")
    doc["all"]["vars"].update({
        "thp_state_dir": f"{state}/thp", "hugepages_state_dir": f"{state}/hugepages",
        "jemalloc_state_dir": f"{state}/jemalloc", "preflight_textfile_dir": f"{state}/textfile",
        "jemalloc_services": [],
    })
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        yield fleet, inventory
    finally:
        for pid in fleet.pids:
            kill_sshd(pid)
        fleet.stop()


def reports_at(inventory: Path) -> list[str]:
    """The report play runs on the controller, outside the inventory's groups: its directory comes by -e; and
    both hosts in one batch (serial is a play keyword: -e only). With one host per batch, ansible-core ends
    the whole playbook when every host of a batch is lost, before the report play (see the closing note)."""
    return ["-e", f"preflight_report_dir={inventory.parent / 'reports'}", "-e", "preflight_serial=0"]


def site_killing_node2_at_the_tuning(fleet: SshFleet, inventory: Path) -> tuple[int, str]:
    """site.yml over both hosts; node2's sshd is killed when the tuning starts."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
           str(REPO / "playbooks/site.yml"), *reports_at(inventory)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines, killed = [], False
    for line in proc.stdout:
        lines.append(line)
        if not killed and line.startswith("TASK [thp : "):
            kill_sshd(fleet.pids[1])
            killed = True
    proc.wait(timeout=600)
    assert killed, "".join(lines)[-3000:]
    return proc.returncode, "".join(lines)


def test_a_host_whose_sshd_dies_mid_play_is_a_report_row_and_the_rest_finishes(two_hosts, restore_kernel_tunables):
    fleet, inventory = two_hosts
    reports = inventory.parent / "reports"

    rc, out = site_killing_node2_at_the_tuning(fleet, inventory)

    assert rc != 0, out[-3000:]
    counts = recap(out)
    assert (counts["node1"]["unreachable"], counts["node1"]["failed"]) == (0, 0), out[-3000:]
    assert counts["node2"]["unreachable"] == 1, out[-3000:]
    run_dir = (reports / "latest").resolve()
    docs = {p.stem: json.loads(p.read_text()) for p in run_dir.glob("node*.json")}
    assert set(docs) == {"node1", "node2"}, out[-4000:]
    assert docs["node1"]["status"] == "ok"
    # It answered the run's first ping (reach.yml), so it is a host that stopped answering mid-run.
    assert docs["node2"]["status"] == "failed", docs["node2"].get("error")
    assert "stopped answering" in docs["node2"]["error"]["msg"]
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["totals"]["failed"] == 1 and summary["totals"]["ok"] == 1

    # The dropped run's lock holder on node2 lives on (it cannot tell a lost connection from a slow one): its
    # record names that run, and the busy message tells the operator to kill it once the run is known gone.
    holder = lock.read_holder(str(fleet.workdir / "locks" / "node2.lock"))
    assert holder["playbook"] == "site.yml" and holder["expires_at"], holder
    os.kill(holder["pid"], signal.SIGTERM)

    # sshd comes back (as after a restart); a rerun converges on both hosts.
    config = fleet.workdir / "sshd-127.0.0.62.conf"
    subprocess.run([SSHD, "-f", str(config)], check=True)
    time.sleep(0.5)
    fleet.pids[1] = int((fleet.workdir / "sshd-127.0.0.62.pid").read_text())
    rerun = run_playbook("playbooks/site.yml", inventory, *reports_at(inventory), timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    docs = {p.stem: json.loads(p.read_text()) for p in (reports / "latest").resolve().glob("node*.json")}
    assert {host: doc["status"] for host, doc in docs.items()} == {"node1": "ok", "node2": "ok"}

    rollback = run_playbook("playbooks/rollback.yml", inventory, *reports_at(inventory), timeout=600)
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    for host in ("node1", "node2"):
        assert not list((inventory.parent / "state" / host).rglob("*.json")), host  # every record taken back
