"""Running as an operator would: an unprivileged SSH login with become, and rolling batches.

Real ansible-playbook over the real SSH test fleet (tests/sshfleet.py). The become runs log in as
tests.sshfleet.OPERATOR_USER, a system user with the test key and a NOPASSWD sudo rule (the ssh_operator
fixture creates it and removes it at the end of the session). All test hosts share this machine's kernel.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.sshfleet import run_playbook

THP = Path("/sys/kernel/mm/transparent_hugepage")
REPO = Path(__file__).resolve().parents[2]
THP_DEFAULTS = yaml.safe_load((REPO / "roles/thp/defaults/main.yml").read_text())
THP_UNIT = Path("/etc/systemd/system/preflight-thp.service")
# The Python an unprivileged login can run (the venv's interpreter lives under /root, 0700).
SYSTEM_PYTHON = "/usr/bin/python3"
PRIVILEGE_MESSAGE = re.compile(
    r"Preflight on (node\d): runs as 'preflight-op' \(uid \d+\), not root, and would fail halfway with permission "
    r"errors \(it writes sysfs, /etc and systemd units\)\. Nothing was changed\. Escalate with become"
)


def selected(name: str) -> str:
    text = (THP / name).read_text()
    return text.split("[", 1)[1].split("]", 1)[0]


def fleet_doc(ssh_fleet, path: Path, hosts: list[str]) -> dict:
    """The test fleet's inventory (live hosts only: no unreachable one), as a dict to adjust. The test hosts
    are one machine: each gets its own run lock file, as separate nodes would have."""
    doc = yaml.safe_load(ssh_fleet.inventory(path).read_text())
    fleet = doc["all"]["children"]["fleet"]
    fleet["hosts"] = {name: {**fleet["hosts"][name], "preflight_lock_file": str(path.parent / f"run-{name}.lock")}
                      for name in hosts}
    return doc


def write(doc: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def become_wrapper(ssh_operator) -> tuple[str, Path]:
    """A sudo that logs who called it: over SSH (a node) or not (the controller), then runs the real sudo."""
    log = ssh_operator.home / "become.log"
    log.write_text("")
    subprocess.run(["chown", f"{ssh_operator.name}:", str(log)], check=True)
    wrapper = ssh_operator.home / "logging-sudo"
    wrapper.write_text(f'#!/bin/sh\necho "${{SSH_CONNECTION:-controller}}" >> {log}\nexec /usr/bin/sudo "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture
def thp_not_at_target(restore_kernel_tunables):
    """THP enabled set away from the role's target, so a run that tunes must change it."""
    other = "never" if THP_DEFAULTS["thp_enabled"] != "never" else "always"
    (THP / "enabled").write_text(other)
    return other


def test_unprivileged_login_with_become_tunes_reports_and_rolls_back(
    ssh_fleet, ssh_operator, tmp_path, thp_not_at_target
):
    wrapper, log = become_wrapper(ssh_operator)
    doc = fleet_doc(ssh_fleet, tmp_path / "hosts.yml", ["node1"])
    # As the example inventory shows: become on the nodes' group. The logging sudo is set for every host,
    # the controller included, so an escalation there would show in the log.
    doc["all"]["vars"]["ansible_become_exe"] = wrapper
    doc["all"]["children"]["fleet"]["vars"] = ssh_operator.inventory_vars(become=True)
    inventory = write(doc, tmp_path / "hosts.yml")
    reports = tmp_path / "reports"

    site = run_playbook("playbooks/site.yml", inventory, "-e", f"preflight_report_dir={reports}", timeout=600)
    tuned = selected("enabled")
    unit_after_site = THP_UNIT.exists()
    rollback = run_playbook("playbooks/rollback.yml", inventory, timeout=600)

    assert site.returncode == 0, output_of(site)[-4000:]
    assert tuned == THP_DEFAULTS["thp_enabled"]
    assert unit_after_site
    host_doc = yaml.safe_load((reports / "latest" / "node1.json").read_text())
    assert (host_doc["status"], host_doc["facts"]["thp"]["enabled"]) == ("ok", THP_DEFAULTS["thp_enabled"])
    assert rollback.returncode == 0, output_of(rollback)[-4000:]
    assert selected("enabled") == thp_not_at_target
    assert not THP_UNIT.exists()
    callers = log.read_text().split()
    assert callers, "nothing escalated: become was not used"
    assert "controller" not in callers, "a task on the controller escalated"


def test_unprivileged_login_without_become_stops_before_any_change(
    ssh_fleet, ssh_operator, tmp_path, thp_not_at_target
):
    doc = fleet_doc(ssh_fleet, tmp_path / "hosts.yml", ["node1"])
    doc["all"]["children"]["fleet"]["vars"] = {
        **ssh_operator.inventory_vars(become=False), "ansible_python_interpreter": SYSTEM_PYTHON}
    inventory = write(doc, tmp_path / "hosts.yml")

    for playbook in ("playbooks/site.yml", "playbooks/rollback.yml"):
        proc = run_playbook(playbook, inventory, "-e", f"preflight_report_dir={tmp_path / 'reports'}", timeout=300)
        output = output_of(proc)
        assert proc.returncode != 0
        assert PRIVILEGE_MESSAGE.search(output), output[-4000:]
        assert "Traceback" not in output and "Permission denied" not in output, output[-6000:]
        assert selected("enabled") == thp_not_at_target
        # The privilege check is the first task that runs a module on the node.
        assert not re.search(r"TASK \[(thp|hugepages|jemalloc) :", output)


def play_starts(output: str, play: str) -> int:
    return len(re.findall(rf"^PLAY \[{re.escape(play)}\]", output, flags=re.MULTILINE))


def hosts_in_order(output: str) -> list[str]:
    """The host of every task result, in the order they were printed."""
    return re.findall(r"^(?:ok|changed|skipping|fatal|failed): \[(node\d)", output, flags=re.MULTILINE)


def test_by_default_a_rolling_play_runs_host_by_host_and_serial_in_inventory_is_not_seen(ssh_fleet, tmp_path):
    """25 % of 3 hosts rounds down to batches of one: the play starts once per host, each host finishes first.
    A preflight_serial of 3 in the inventory's group vars does not change that: ansible-core templates serial
    before it reads inventory variables, so only extra vars (-e, or ansible-runner's env/extravars) set the
    batch size. Pinned here because README says so."""
    doc = fleet_doc(ssh_fleet, tmp_path / "hosts.yml", ["node1", "node2", "node3"])
    doc["all"]["vars"]["preflight_serial"] = 3
    inventory = write(doc, tmp_path / "h.yml")
    proc = run_playbook("playbooks/rollback.yml", inventory, timeout=600, serial=None)
    output = output_of(proc)
    assert proc.returncode == 0, output[-4000:]
    assert play_starts(output, "Roll back Preflight's tuning") == 3
    order = hosts_in_order(output)
    assert order == sorted(order), order  # node1's results, then node2's, then node3's
    assert set(order) == {"node1", "node2", "node3"}

    whole = run_playbook("playbooks/rollback.yml", inventory, "-e", "preflight_serial=0", timeout=600)
    assert whole.returncode == 0, output_of(whole)[-4000:]
    assert play_starts(output_of(whole), "Roll back Preflight's tuning") == 1


def test_max_fail_percentage_stops_later_batches(ssh_fleet, ssh_operator, tmp_path):
    """Batches of two; node1 cannot run (an unprivileged login without become), node2 can: half the first
    batch failed. At the default 0 % node3, in the second batch, is never touched; at 50 % it is."""
    doc = fleet_doc(ssh_fleet, tmp_path / "hosts.yml", ["node1", "node2", "node3"])
    doc["all"]["children"]["fleet"]["hosts"]["node1"].update(
        ssh_operator.inventory_vars(become=False), ansible_python_interpreter=SYSTEM_PYTHON)
    inventory = write(doc, tmp_path / "hosts.yml")

    stopped = run_playbook("playbooks/rollback.yml", inventory, "-e", "preflight_serial=2", timeout=600)
    output = output_of(stopped)
    assert stopped.returncode != 0
    assert PRIVILEGE_MESSAGE.search(output).group(1) == "node1"
    assert play_starts(output, "Roll back Preflight's tuning") == 1
    assert "node3" not in hosts_in_order(output)

    tolerated = run_playbook("playbooks/rollback.yml", inventory, "-e", "preflight_serial=2",
                             "-e", "preflight_max_fail_percentage=50", timeout=600)
    output = output_of(tolerated)
    assert play_starts(output, "Roll back Preflight's tuning") == 2
    assert "node3" in hosts_in_order(output)
    assert re.search(r"^node3\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", output, flags=re.MULTILINE)


def test_a_host_that_cannot_start_stops_later_batches_and_every_host_is_a_report_row(
    ssh_fleet, ssh_operator, tmp_path
):
    """Batches of one (25 % of 3): node2 runs, node1 cannot start (no become), so Preflight's rollout gate stops
    node3's batch at the default preflight_max_fail_percentage 0. Ansible's own max_fail_percentage would end
    the playbook there, report play included; here every host is a row of the reports and the run exits non-zero."""
    doc = fleet_doc(ssh_fleet, tmp_path / "hosts.yml", ["node2", "node1", "node3"])
    doc["all"]["children"]["fleet"]["hosts"]["node1"].update(
        ssh_operator.inventory_vars(become=False), ansible_python_interpreter=SYSTEM_PYTHON)
    inventory = write(doc, tmp_path / "hosts.yml")
    reports = tmp_path / "reports"

    proc = run_playbook("playbooks/probe.yml", inventory, "-e", "preflight_level=quick",
                        "-e", f"preflight_report_dir={reports}", timeout=600, serial=None)
    output = output_of(proc)
    assert proc.returncode != 0
    assert play_starts(output, "Probe every node") == 3
    docs = {p.stem: json.loads(p.read_text()) for p in (reports / "latest").resolve().glob("node*.json")}
    assert sorted(docs) == ["node1", "node2", "node3"], output[-4000:]
    assert docs["node2"]["status"] == "ok", docs["node2"]["error"]
    assert docs["node1"]["status"] == "failed" and PRIVILEGE_MESSAGE.search(docs["node1"]["error"]["msg"])
    stopped = docs["node3"]
    assert stopped["status"] == "failed" and not stopped["facts"], stopped
    assert stopped["error"]["msg"].startswith("not run: the rollout stopped before this host's batch, because 1 of "
                                              "2 host(s) of earlier batches did not finish (node1)")
    assert "preflight_max_fail_percentage=0" in stopped["error"]["msg"]
    assert re.search(r"^node3\s+: .*failed=1", output, flags=re.MULTILINE)

    bad = run_playbook("playbooks/probe.yml", inventory, "-e", "preflight_level=quick",
                       "-e", "preflight_max_fail_percentage=most", "--limit", "node2", timeout=300)
    assert bad.returncode != 0
    assert "preflight_max_fail_percentage='most': give a number from 0 to 100" in output_of(bad)
