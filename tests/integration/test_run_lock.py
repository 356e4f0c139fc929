"""One run at a time per host, over real SSH with the real ansible-playbook: two runs started at once on one
host (the second waits, then fails naming the holder; or runs after the first when it may wait long enough),
a holder whose controller was SIGKILLed lets go by itself at its expiry, check mode takes no lock; and a
host whose planned probe recorded nothing is `incomplete` and makes the run exit non-zero.

Each test keeps its own lock file, tuning records and reports under tmp_path (the hosts share this machine's
disk), persists nothing into this machine's systemd or boot configuration, and runs at level quick.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.moduleutils import module_util
from tests.sshfleet import REPO, ansible_env, run_playbook

lock = module_util("preflight.core.lock")
JSON_OUTPUT = ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json")


def inventory(ssh_fleet, tmp_path: Path, **variables) -> tuple[Path, list[str], Path]:
    """node1 alone, with its records, reports and lock file under tmp_path; the -e arguments; the lock file."""
    lock_file = tmp_path / "state" / "run.lock"
    base = {
        "thp_persist": [],
        "jemalloc_services": [],
        "thp_state_dir": str(tmp_path / "state" / "thp"),
        "hugepages_state_dir": str(tmp_path / "state" / "hugepages"),
        "jemalloc_state_dir": str(tmp_path / "state" / "jemalloc"),
        "preflight_report_dir": str(tmp_path / "reports"),
        "preflight_textfile_dir": str(tmp_path / "textfile"),
        "preflight_fail_on_failed_checks": False,
        "preflight_level": "quick",
        "preflight_lock_file": str(lock_file),
    }
    path = ssh_fleet.inventory(tmp_path / "hosts.yml")
    doc = yaml.safe_load(path.read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    doc["all"]["children"]["fleet"]["hosts"] = {"node1": hosts["node1"]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    extra = tmp_path / "extra-vars.json"
    extra.write_text(json.dumps({**base, **variables}))
    return path, ["-e", f"@{extra}"], lock_file


def start_playbook(playbook: str, inventory_path: Path, *args: str) -> subprocess.Popen:
    """ansible-playbook in its own process group (so a test can kill the controller and all its workers)."""
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_path), str(REPO / playbook),
           *args]
    return subprocess.Popen(cmd, cwd=REPO, env=JSON_OUTPUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def host_documents(report_dir: Path) -> list[dict]:
    """Every host document of every run under report_dir."""
    runs = sorted(p for p in report_dir.iterdir() if p.is_dir() and not p.is_symlink())
    return [d for d in (json.loads(p.read_text()) for r in runs for p in r.glob("*.json"))
            if "status" in d and "host" in d]


def wait_until(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def waited_seconds(output: str) -> list[float]:
    return [float(x) for x in re.findall(r'"waited_s": ([0-9.]+)', output)]


def test_two_runs_at_once_the_second_waits_then_fails_naming_the_first(ssh_fleet, tmp_path, restore_kernel_tunables):
    path, extra, lock_file = inventory(ssh_fleet, tmp_path, preflight_lock_wait_s=2)
    first = start_playbook("playbooks/site.yml", path, *extra)
    second = start_playbook("playbooks/bootstrap.yml", path, *extra)
    outputs = {"site.yml": finish(first), "bootstrap.yml": finish(second)}
    codes = {"site.yml": first.returncode, "bootstrap.yml": second.returncode}
    losers = [name for name, out in outputs.items() if "another Preflight run holds this host's lock" in out]
    assert len(losers) == 1, outputs
    loser = losers[0]
    winner = next(name for name in outputs if name != loser)
    assert codes[winner] == 0, outputs[winner][-3000:]
    assert codes[loser] == 2, outputs[loser][-3000:]
    flat = " ".join(outputs[loser].split())
    pattern = (rf"node1: another Preflight run holds this host's lock {re.escape(str(lock_file))}: PID (\d+) on the "
               rf"node, playbook {re.escape(winner)}, controller [^@ ]+@{re.escape(os.uname().nodename)}, started "
               r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, expires \S+ at the latest, or 45 s after its controller stops "
               r"polling a probe; waited [0-9.]+ s.")
    assert re.search(pattern, flat), flat[-3000:]
    # The losing run is a failed row of its own report, naming the lock; nothing is left holding the lock.
    reports = tmp_path / "reports"
    docs = host_documents(reports)
    assert len(docs) == 2
    failed = [d for d in docs if d["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["task"] == "Take this host's run lock before the first change " \
                                                               "(a second run waits, then fails naming the holder)"
    assert lock.status(str(lock_file)) == {"held": False, "holder": None}


def test_a_second_run_that_may_wait_long_enough_runs_after_the_first_lets_go(ssh_fleet, tmp_path,
                                                                             restore_kernel_tunables):
    path, extra, lock_file = inventory(ssh_fleet, tmp_path, preflight_lock_wait_s=300)
    first = start_playbook("playbooks/site.yml", path, *extra, "-v")
    second = start_playbook("playbooks/site.yml", path, *extra, "-v")
    outputs = [finish(first), finish(second)]
    problems = [line for out in outputs for line in out.splitlines() if "fatal:" in line or "FAIL" in line]
    assert [first.returncode, second.returncode] == [0, 0], problems
    waits = sorted(w for out in outputs for w in waited_seconds(out))
    assert len(waits) == 2 and waits[0] < 2 <= waits[1], waits
    assert lock.status(str(lock_file)) == {"held": False, "holder": None}


def test_a_holder_whose_controller_was_killed_lets_go_at_its_expiry(ssh_fleet, tmp_path, restore_kernel_tunables):
    expire_s = 10
    path, extra, lock_file = inventory(ssh_fleet, tmp_path, preflight_lock_expire_s=expire_s)
    proc = start_playbook("playbooks/site.yml", path, *extra)
    try:
        assert wait_until(lambda: lock_file.exists() and lock.status(str(lock_file))["held"], 120), \
            "site.yml never took the lock"
        taken = time.monotonic()
        holder = lock.status(str(lock_file))["holder"]
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and every worker it forked, at once
    finally:
        proc.kill()
        proc.communicate()
    assert holder["playbook"] == "site.yml" and lock.pid_alive(holder["pid"])
    # Controller gone: the holder on the node keeps the lock (a restarted run must not tune over a half-done
    # one) ... until its expiry, and not much longer.
    time.sleep(2)
    assert lock.status(str(lock_file))["held"]
    assert wait_until(lambda: not lock.status(str(lock_file))["held"], expire_s + 15)
    held_for = time.monotonic() - taken
    assert expire_s - 3 <= held_for <= expire_s + 15, held_for
    assert wait_until(lambda: not lock.pid_alive(holder["pid"]), 5)
    # The next run takes the lock at once and converges.
    rerun = run_playbook("playbooks/site.yml", path, *extra, "-e", "preflight_lock_wait_s=0", "-v", env=JSON_OUTPUT)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert waited_seconds(rerun.stdout) == [0.0]


def test_check_mode_takes_no_lock_and_warns_while_another_run_holds_it(ssh_fleet, tmp_path):
    path, extra, lock_file = inventory(ssh_fleet, tmp_path, preflight_lock_wait_s=0)
    record = lock.holder_info("someone-else", host="node1", playbook="probe.yml", controller="bob@ctl2", expire_s=300)
    with lock.acquire(str(lock_file), 0, record, token=""):
        proc = run_playbook("playbooks/audit.yml", path, "--check", *extra, env=JSON_OUTPUT, timeout=600)
        assert lock.read_holder(str(lock_file))["token"] == "someone-else"
    flat = " ".join((proc.stdout + proc.stderr).split())
    assert f"PID {os.getpid()} on the node, playbook probe.yml, controller bob@ctl2" in flat
    assert f"holds {lock_file}: what check mode reads may be mid-change" in flat
    (doc,) = host_documents(tmp_path / "reports")
    assert doc["status"] == "ok", doc["error"]


def test_a_host_whose_planned_probe_recorded_nothing_is_incomplete_and_the_run_exits_non_zero(ssh_fleet, tmp_path):
    """The report play (playbooks/report.yml, the real module) given what a host leaves behind when it drops out
    mid-probe: a ping and facts of this run, `load` planned, and no result, failure or skip reason for it."""
    path, extra, _ = inventory(ssh_fleet, tmp_path)
    facts_mod = module_util("preflight.core.facts")
    dropped = {
        "preflight_ping": {"ping": "pong", "changed": False},
        "preflight_node_facts": {"ansible_facts": {"preflight": facts_mod.gather(gpus=False)}},
        "preflight_run": {"level": "standard", "planned": ["load"], "ran": [], "failed": [], "skipped": [],
                          "phases": [{"name": "facts", "duration_s": 1.0, "status": "ok"}]},
    }
    # Extra vars: they win over what the fact cache kept of earlier runs on node1.
    left = tmp_path / "left-behind.json"
    left.write_text(json.dumps(dropped))
    proc = run_playbook("playbooks/report.yml", path, *extra, "-e", f"@{left}", env=JSON_OUTPUT)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out[-3000:]
    assert "node1: INCOMPLETE at 'probe load': planned probe(s) load recorded no result" in out
    assert "Preflight: 1 host(s) did not finish (node1)" in out
    summary = json.loads(((tmp_path / "reports" / "latest").resolve() / "summary.json").read_text())
    assert summary["totals"]["incomplete"] == 1 and summary["not_ok"] == ["node1"]


def test_a_play_stopped_by_max_fail_percentage_gives_back_the_locks_its_hosts_took(ssh_fleet, tmp_path):
    """rollback.yml on node1 and node2, max_fail_percentage 0: node2's lock is held by another run, so node2
    fails at the lock task; node1, which took its lock in that same task, still gives it back (it is taken
    inside the block whose `always` releases it) instead of holding it until its expiry."""
    path, extra, _ = inventory(ssh_fleet, tmp_path, preflight_lock_wait_s=0, preflight_max_fail_percentage=0)
    doc = yaml.safe_load(ssh_fleet.inventory(tmp_path / "fleet.yml").read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    locks = {name: tmp_path / "locks" / f"{name}.lock" for name in ("node1", "node2")}
    for name in locks:
        hosts[name]["preflight_lock_file"] = str(locks[name])
    doc["all"]["children"]["fleet"]["hosts"] = {name: hosts[name] for name in locks}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    extra_file = Path(extra[1].removeprefix("@"))  # each host's own lock file, not one for both
    extra_file.write_text(json.dumps({k: v for k, v in json.loads(extra_file.read_text()).items()
                                      if k != "preflight_lock_file"}))
    other = lock.holder_info("someone-else", host="node2", playbook="site.yml", controller="bob@ctl2", expire_s=300)
    with lock.acquire(str(locks["node2"]), 0, other, token=""):
        proc = run_playbook("playbooks/rollback.yml", path, *extra, "-e", "preflight_serial=2", env=JSON_OUTPUT,
                            timeout=300)
        assert lock.read_holder(str(locks["node2"]))["token"] == "someone-else"
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out[-3000:]
    assert "node2: another Preflight run holds this host's lock" in out
    assert '"token": "' in out  # node1 took its lock ...
    assert lock.status(str(locks["node1"])) == {"held": False, "holder": None}, out[-3000:]  # ... and gave it back
