"""A probe leaves the node as it found it by itself, whatever the controller does (issue 15, defect 3).

Real kernel: THP's mode is written for real (this VM's kernel) and put back by the fixture whatever happens.
core/thp_arm.py is driven directly (owner killed with SIGKILL, stopped with SIGTERM, a second owner refused),
the runner's heartbeat is checked on a real child process, and the whole path is driven from a real
ansible-playbook over SSH that is interrupted with SIGINT during a THP arm: the node puts THP back itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.test_bootstrap import fleet_inventory
from tests.moduleutils import module_util
from tests.sshfleet import REPO, ansible_env, run_playbook

thp_arm = module_util("preflight.core.thp_arm")
progress = module_util("preflight.core.progress")

KNOB = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def mode() -> str:
    return KNOB.read_text().split("[", 1)[1].split("]", 1)[0]


def other_than(current: str) -> str:
    return "never" if current != "never" else "madvise"


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


OWNER = textwrap.dedent("""
    import time
    from ansible.module_utils.preflight.core import thp_arm
    with thp_arm.ThpArm({mode!r}, probe="test_arm", marker={marker!r}):
        print("set", flush=True)
        time.sleep(300)
""")


def start_owner(tmp_path: Path, arm_mode: str) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "thp-ab.json"
    code = OWNER.format(mode=arm_mode, marker=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", _with_module_utils(code)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "set"
    return proc, marker


def _with_module_utils(code: str) -> str:
    """The owner imports core as the modules do, through ansible.module_utils and the project's module_utils."""
    return ("import ansible.module_utils, sys\n"
            f"ansible.module_utils.__path__.append({str(REPO / 'module_utils')!r})\n" + code)


def test_an_arm_sets_the_mode_names_its_owner_and_puts_the_mode_back(tmp_path, restore_kernel_tunables):
    original = mode()
    marker = tmp_path / "thp-ab.json"
    with thp_arm.ThpArm(other_than(original), probe="load_never", marker=str(marker)) as arm:
        assert mode() == other_than(original)
        held = json.loads(marker.read_text())
        assert (held["pid"], held["original"], held["probe"]) == (os.getpid(), original, "load_never")
        with pytest.raises(thp_arm.ThpArmError, match=f"THP is held for an A/B arm by pid {os.getpid()}"):
            with thp_arm.ThpArm(original, marker=str(marker)):
                pass
    assert mode() == original and arm.restored == {"mode": original, "ok": True}
    assert not marker.exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_node_puts_thp_back_when_the_owner_is_killed_or_stopped(tmp_path, restore_kernel_tunables, sig):
    original = mode()
    proc, marker = start_owner(tmp_path, other_than(original))
    assert mode() == other_than(original) and marker.exists()
    started = time.monotonic()
    proc.send_signal(sig)
    proc.wait(10)
    wait_for(lambda: mode() == original and not marker.exists(), 5, "THP put back and the marker removed")
    print(f"{sig.name}: THP back in {time.monotonic() - started:.2f} s")


def test_a_probe_nobody_polls_any_more_is_stopped_once_the_heartbeat_was_armed(tmp_path):
    runner = module_util("preflight.probe_runner")
    log = str(tmp_path / "logs" / "slow.log")
    cmd = [sys.executable, "-c", "import sys, time; print('probes slow: [1/2] waiting', file=sys.stderr); "
                                 "time.sleep(120)"]
    # Never polled: the heartbeat is not armed and the probe runs to its own timeout.
    run = runner.run(cmd, "slow", dict(os.environ), str(tmp_path), timeout_s=4, log=log, heartbeat_s=1)
    assert run.timed_out and "timeout of 4 s" in run.problem
    assert "probes slow: [1/2] waiting" in run.stderr
    # Polled once, then no more: stopped about heartbeat_s after the last touch, long before its timeout.
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(REPO)!r}]
        import tests.moduleutils as m
        progress = m.module_util("preflight.core.progress")
        time.sleep(1)
        progress.wait({log!r}, 1)
    """)], cwd=REPO)
    run = runner.run(cmd, "slow", dict(os.environ), str(tmp_path), timeout_s=60, log=log, heartbeat_s=3)
    proc.wait(10)
    assert run.timed_out and "nobody polled the probe" in run.problem
    assert time.monotonic() - started < 20
    state = progress.read(log)
    assert state["done"] and state["step"] == "probes slow: [1/2] waiting"


def test_sigint_to_ansible_playbook_during_a_thp_arm_leaves_the_node_to_put_thp_back(
        ssh_fleet, tmp_path, restore_kernel_tunables):
    original = mode()
    arm = other_than(original)
    plan = {"load_thp": {"probe": "load", "levels": ["standard"], "timeout_s": 900, "thp_modes": [arm],
                         "options": {"repeats": 200}}}
    # A run lock of its own: the interrupted run's lock holder lives on to its expiry (core/lock.py), and is
    # stopped at the end of the test.
    lock = tmp_path / "run.lock"
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], preflight_level="standard",
                                       probe_runtime_python=sys.executable, probe_runtime_dir=str(tmp_path / "opt"),
                                       probe_model="tiny", probe_plan=plan, preflight_lock_file=str(lock))
    log = Path(progress.log_path("/var/log/preflight", f"load_thp_{arm}"))
    # An earlier run's heartbeat of this probe would pass for this run's first wait: the arm is set before the
    # probe's log is opened (which removes it), so the SIGINT could come before any wait armed the heartbeat.
    Path(progress.heartbeat_path(str(log))).unlink(missing_ok=True)
    proc = subprocess.Popen([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), *extra,
                             str(REPO / "playbooks/probe.yml")], cwd=REPO, env=ansible_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: (mode() == arm and Path(thp_arm.MARKER).exists()) or proc.poll() is not None, 300,
                 "the THP arm set on the node")
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        # The controller's first wait can come a while after the arm when both cores are busy (make test's other
        # lane starting a vLLM server).
        wait_for(lambda: progress.heartbeat_age(str(log)) is not None, 300, "the first wait's heartbeat")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at the operator's terminal
        interrupted = time.monotonic()
        proc.wait(60)
        wait_for(lambda: mode() == original and not Path(thp_arm.MARKER).exists(), 60,
                 "THP put back on the node without the controller")
        back_s = time.monotonic() - interrupted
        assert back_s < 50, back_s  # the last wait runs out (15 s), then the heartbeat goes stale (15 s)
        wait_for(lambda: progress.read(str(log))["done"], 30, "the probe stopped and its log ended")
        assert "nobody polled the probe" in log.read_text()
        print(f"THP back {back_s:.1f} s after SIGINT to ansible-playbook")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _stop_lock_holder(lock)
        held = thp_arm.owner()
        if held is not None:  # a failed test must not leave the arm to the tests after it
            os.kill(held["pid"], signal.SIGTERM)
            wait_for(lambda: thp_arm.owner() is None, 30, "the arm's owner stopped")


def _stop_lock_holder(lock: Path) -> None:
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return
    if isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


def test_the_thp_role_records_nothing_while_a_probe_holds_thp_for_an_a_b_arm(ssh_fleet, tmp_path,
                                                                            restore_kernel_tunables):
    """The mode a probe set for an A/B arm is not the node's own: the role records nothing and changes nothing."""
    original = mode()
    arm = other_than(original)
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml")
    state = tmp_path / "thp"
    with thp_arm.ThpArm(arm, probe="load_thp_ab"):
        proc = run_playbook("roles/thp/tests/apply.yml", inventory, "-e", json.dumps({"thp_state_dir": str(state)}),
                            "--limit", "node1", env=ansible_env())
        assert proc.returncode != 0
        assert f"THP is held for an A/B arm by pid {os.getpid()} (load_thp_ab" in " ".join(proc.stdout.split())
        assert mode() == arm and not state.exists()
    assert mode() == original
