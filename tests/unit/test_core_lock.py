"""core/lock.py: one run at a time per host, on real flocks, real processes and real signals (no mocks)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.moduleutils import REPO_MODULE_UTILS, module_util

lock = module_util("preflight.core.lock")

# A separate Python that holds the lock in-process as a probe would (probes.core.lock is this file).
HOLD_IN_PROCESS = """
import sys, time
sys.path.insert(0, {utils!r})
import ansible.module_utils  # noqa
from tests.moduleutils import module_util
lock = module_util("preflight.core.lock")
held = lock.acquire({path!r}, {wait}, lock.holder_info("tok-child", playbook="probe thp-ab", controller="probe"))
print("held", flush=True)
time.sleep(60)
"""


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def info(token="tok-a", playbook="site.yml"):
    return lock.holder_info(token, host="node1", playbook=playbook, controller="alice@ctl1", expire_s=60)


def test_a_second_holder_waits_then_fails_naming_the_first(tmp_path):
    path = str(tmp_path / "run.lock")
    with lock.acquire(path, 0, info()) as first:
        started = time.monotonic()
        with pytest.raises(lock.LockBusy) as caught:
            lock.acquire(path, 0.6, info("tok-b", "rollback.yml"), token="")
        assert time.monotonic() - started >= 0.6
        message = str(caught.value)
        assert message.startswith(f"another Preflight run holds this host's lock {path}: PID {os.getpid()} "
                                  "on the node, playbook site.yml, controller alice@ctl1, started ")
        assert f"started {first.info['started_at']}, expires {first.info['expires_at']} at the latest" in message
        assert "waited 0.6 s" in message and "raise preflight_lock_wait_s" in message
        assert caught.value.holder["token"] == "tok-a"
    # given back: the next one takes it at once and records itself
    with lock.acquire(path, 0, info("tok-b", "rollback.yml"), token=""):
        assert lock.read_holder(path)["playbook"] == "rollback.yml"


def test_a_waiting_run_gets_the_lock_when_the_holder_lets_go_within_the_wait(tmp_path):
    path = str(tmp_path / "run.lock")
    held = lock.acquire(path, 0, info())
    assert held.waited_s == 0.0
    letting_go = threading.Timer(0.5, held.release)
    letting_go.start()
    try:
        with lock.acquire(path, 5, info("tok-b"), token="") as second:
            assert second.fd is not None and not second.covered
            assert 0.4 <= second.waited_s < 5, second.waited_s  # the wait, and only the wait, is counted
    finally:
        letting_go.join()


def test_the_lock_file_is_private_and_never_removed(tmp_path):
    path = tmp_path / "state" / "run.lock"
    with lock.acquire(str(path), 0, info()):
        pass
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "tok-a"


def test_a_killed_in_process_holder_lets_go_with_its_process(tmp_path):
    path = str(tmp_path / "run.lock")
    code = HOLD_IN_PROCESS.format(utils=str(REPO_MODULE_UTILS.parent), path=path, wait=0)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=REPO_MODULE_UTILS.parent)
    try:
        assert proc.stdout.readline().strip() == "held"
        state = lock.status(path)
        assert state["held"] and state["holder"]["pid"] == proc.pid
        assert state["holder"]["playbook"] == "probe thp-ab"
    finally:
        proc.kill()
        proc.wait()
    assert lock.status(path) == {"held": False, "holder": None}


def test_a_process_inside_the_run_is_covered_by_the_runs_hold_and_others_are_not(tmp_path, monkeypatch):
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 30, info("run-token"))
    try:
        monkeypatch.setenv(lock.TOKEN_ENV, "run-token")
        covered = lock.acquire(path, 0, info("probe"))
        assert covered.covered and covered.fd is None and covered.info["pid"] == record["pid"]
        covered.release()  # gives back nothing: the run still holds it
        assert lock.status(path)["held"]
        monkeypatch.setenv(lock.TOKEN_ENV, "another-run")
        with pytest.raises(lock.LockBusy):
            lock.acquire(path, 0.2, info("probe"))
    finally:
        lock.release_detached(path, "run-token")


def test_a_detached_holder_keeps_the_lock_after_its_starter_returns_and_lets_go_on_release(tmp_path):
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 30, info())
    pid = record["pid"]
    assert record["waited_s"] == 0.0  # free at once: starting the holder is not waiting
    assert pid != os.getpid() and lock.pid_alive(pid)
    # Not our child and not in our session: a controller's SSH session ending does not end it.
    assert os.getsid(pid) != os.getsid(0)
    state = lock.status(path)
    assert state["held"] and state["holder"]["pid"] == pid and state["holder"]["token"] == "tok-a"
    assert lock.release_detached(path, "tok-a") == {"released": True, "expired": False, "holder": state["holder"]}
    assert wait_until(lambda: not lock.pid_alive(pid), 5)
    assert lock.status(path) == {"held": False, "holder": None}


def test_a_detached_holder_expires_by_itself(tmp_path):
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 1, info())
    assert lock.status(path)["held"]
    assert wait_until(lambda: not lock.status(path)["held"], 5)
    assert wait_until(lambda: not lock.pid_alive(record["pid"]), 5)
    # Giving back a hold that expired says so and takes nothing from anyone.
    assert lock.release_detached(path, "tok-a") == {"released": False, "expired": True, "holder": None}


def test_release_with_another_runs_token_leaves_that_run_holding(tmp_path):
    path = str(tmp_path / "run.lock")
    lock.acquire_detached(path, 0, 30, info("theirs"))
    try:
        out = lock.release_detached(path, "mine")
        assert out["released"] is False and out["expired"] is True and out["holder"]["token"] == "theirs"
        assert lock.status(path)["held"]
    finally:
        assert lock.release_detached(path, "theirs")["released"]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("run.lock", "preflight_lock_file must be an absolute file path; got 'run.lock'"),
        ("", "preflight_lock_file must be an absolute file path; got ''"),
        ("/", "preflight_lock_file must be an absolute file path; got '/'"),
        ("/var/lib/preflight/../run.lock", "preflight_lock_file '/var/lib/preflight/../run.lock' is not in normal "
                                           "form: write it as '/var/lib/run.lock'"),
        ("/proc/run.lock", "preflight_lock_file '/proc/run.lock' is under /proc, /sys, /dev: use a file under "
                           "/var/lib/preflight"),
        ("/tmp", "preflight_lock_file '/tmp' is a directory: name a file, e.g. /var/lib/preflight/run.lock"),
    ],
)
def test_a_bad_lock_path_is_refused_naming_the_variable(path, error):
    assert lock.path_errors(path) == [error]
    with pytest.raises(lock.LockError, match="preflight_lock_file"):
        lock.acquire(path, 0)


def test_the_default_lock_file_sits_beside_the_roles_state_dirs():
    catalog = module_util("preflight.core.catalog")
    assert lock.path_errors(lock.LOCK_FILE) == [] or Path(lock.LOCK_FILE).is_dir() is False
    assert os.path.dirname(catalog.THP_DEFAULTS["thp_state_dir"]) == os.path.dirname(lock.LOCK_FILE)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(None, lock.LOCK_MARGIN_S), (900, 900 + lock.LOCK_MARGIN_S), ("60", 60 + lock.LOCK_MARGIN_S),
     ("lots", lock.LOCK_MARGIN_S), (-5, lock.LOCK_MARGIN_S)],
)
def test_a_detached_holder_lives_at_most_the_budget_plus_the_margin(budget, expected):
    assert lock.expire_after_s(budget) == expected


def test_releasing_while_another_run_waits_hands_the_lock_over_and_reports_it_released(tmp_path):
    path = str(tmp_path / "run.lock")
    lock.acquire_detached(path, 0, 30, info("first"))
    code = HOLD_IN_PROCESS.format(utils=str(REPO_MODULE_UTILS.parent), path=path, wait=20)
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=REPO_MODULE_UTILS.parent)
    try:
        time.sleep(0.5)  # the waiter is polling the lock
        assert lock.release_detached(path, "first", wait_s=5)["released"] is True
        assert waiter.stdout.readline().strip() == "held"
        assert lock.read_holder(path)["pid"] == waiter.pid
    finally:
        waiter.kill()
        waiter.wait()


# --- a run whose controller is gone mid-probe lets go after the heartbeat's grace, not at its expiry -------
progress = module_util("preflight.core.progress")
GRACE_S = 1.5


def test_the_grace_is_three_probe_heartbeats():
    catalog = module_util("preflight.core.catalog")
    assert lock.HEARTBEAT_GRACE_S == 3 * catalog.PROBE_HEARTBEAT_S


def test_a_holder_whose_armed_heartbeat_goes_stale_lets_go_long_before_its_expiry(tmp_path):
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 300, info(), grace_s=GRACE_S)
    heartbeat = record["heartbeat"]
    assert heartbeat == path + ".heartbeat" and lock.status(path)["holder"]["heartbeat_grace_s"] == GRACE_S
    lock.touch_heartbeat(heartbeat)  # the controller polled a probe once, then was gone
    armed = time.monotonic()
    assert wait_until(lambda: not lock.status(path)["held"], 10)
    assert GRACE_S - 0.2 <= time.monotonic() - armed <= GRACE_S + 3
    assert wait_until(lambda: not lock.pid_alive(record["pid"]), 5)
    assert not os.path.exists(heartbeat)  # the next run's holder must not find it stale
    assert lock.release_detached(path, "tok-a") == {"released": False, "expired": True, "holder": None}


def test_without_a_heartbeat_the_holder_keeps_the_lock_past_the_grace(tmp_path):
    """Tuning and the gaps between probes poll nothing: only the expiry (or release) ends the hold then."""
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 300, info(), grace_s=0.5)
    try:
        time.sleep(1.5)
        assert lock.status(path)["held"] and lock.pid_alive(record["pid"])
    finally:
        assert lock.release_detached(path, "tok-a")["released"]


def test_a_probe_wait_keeps_the_heartbeat_fresh_and_disarms_it_when_the_probe_ends(tmp_path, monkeypatch):
    """core/progress.py wait, as library/slm_probe_wait.py runs it with the run's HEARTBEAT_ENV."""
    path = str(tmp_path / "run.lock")
    record = lock.acquire_detached(path, 0, 300, info(), grace_s=GRACE_S)
    monkeypatch.setenv(lock.HEARTBEAT_ENV, record["heartbeat"])
    log = str(tmp_path / "logs" / "ttft.log")
    progress.open_log(log, "ttft").close()
    try:
        state = progress.wait(log, wait_s=GRACE_S * 2, poll_s=0.2)  # a probe still running: polled throughout
        assert not state["done"] and lock.status(path)["held"] and os.path.exists(record["heartbeat"])
        progress.close_log(log, 0, None)
        assert progress.wait(log, wait_s=5, poll_s=0.2)["done"]
        assert not os.path.exists(record["heartbeat"])  # disarmed: the run goes on without polling
        time.sleep(GRACE_S + 1)
        assert lock.status(path)["held"] and lock.pid_alive(record["pid"])
    finally:
        assert lock.release_detached(path, "tok-a")["released"]


def test_a_new_run_disarms_a_heartbeat_a_dead_controller_left(tmp_path):
    path = str(tmp_path / "run.lock")
    lock.touch_heartbeat(path + ".heartbeat")
    os.utime(path + ".heartbeat", (time.time() - 3600, time.time() - 3600))
    record = lock.acquire_detached(path, 0, 300, info(), grace_s=GRACE_S)
    try:
        assert not os.path.exists(record["heartbeat"])
        time.sleep(GRACE_S + 1)
        assert lock.status(path)["held"]
    finally:
        assert lock.release_detached(path, "tok-a")["released"]


def test_the_holder_s_description_says_it_lets_go_when_its_controller_stops_polling():
    record = dict(info(), pid=42, heartbeat="/var/lib/preflight/run.lock.heartbeat", heartbeat_grace_s=45)
    assert lock.describe(record).endswith(", or 45 s after its controller stops polling a probe")
