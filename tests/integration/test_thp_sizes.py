"""Per-size THP (thp_sizes) through the real thp role: real ansible-playbook over real SSH to node1 of the test
fleet, this machine's kernel (6.18: hugepages-16kB .. 2048kB/enabled), real sysfs. Every test gives back the
per-size knobs, the global THP values and Preflight's unit as they were, whatever happens."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import THP_UNIT as UNIT
from tests.sshfleet import REPO, ansible_env, run_playbook

THP = Path("/sys/kernel/mm/transparent_hugepage")
KNOB_64K, KNOB_2M = THP / "hugepages-64kB" / "enabled", THP / "hugepages-2048kB" / "enabled"
APPLY, ROLLBACK = "roles/thp/tests/apply.yml", "playbooks/rollback.yml"
RECAP = re.compile(r"^node1\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", re.M)

pytestmark = pytest.mark.skipif(not KNOB_64K.exists() or not KNOB_2M.exists(),
                                reason="this kernel has no per-size THP knobs for 64kB and 2048kB")


def selected(path: Path) -> str:
    return path.read_text().split("[", 1)[1].split("]", 1)[0]


def size_knobs() -> dict[Path, str]:
    return {knob: selected(knob) for knob in sorted(THP.glob("hugepages-*kB/enabled"))}


@pytest.fixture
def per_size_guard(clean_thp):
    """Per-size knobs as they were before the test, put back after it in any case (the global THP values and
    Preflight's unit are clean_thp's: the test starts without the unit, and it is put back as it was)."""
    before = size_knobs()
    try:
        yield before
    finally:
        for knob, value in before.items():
            if selected(knob) != value:
                knob.write_text(value)


@contextlib.contextmanager
def node1_playbook(ssh_fleet, tmp_path: Path):
    """ansible-playbook against node1 with the role's variables as JSON extra vars; one SSH connection.
    run(playbook, *args, **variables) -> (proc, (changed, failed) from node1's recap, or None)."""
    control = Path(tempfile.mkdtemp(prefix="thp-ssh-", dir="/tmp"))
    args = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "
            f"-o ControlMaster=auto -o ControlPersist=15s -o ControlPath={control}/%C")
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml", extra_vars={"ansible_ssh_common_args": args})
    env = ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CALLBACK_FORMAT_PRETTY="false")
    state = tmp_path / "thp-state"

    def run(playbook: str, *args: str, **variables):
        extra = {"thp_state_dir": str(state), **variables}
        proc = run_playbook(playbook, inventory, "-e", json.dumps(extra), "--limit", "node1", *args, env=env)
        recap = RECAP.search(proc.stdout)
        return proc, (int(recap[1]), int(recap[2])) if recap else None

    run.state_file = state / "state.json"
    run.inventory = inventory
    run.env = env
    try:
        yield run
    finally:
        for socket in control.iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "unused"], capture_output=True,
                           timeout=30)
        shutil.rmtree(control, ignore_errors=True)


@pytest.fixture
def play(ssh_fleet, tmp_path):
    with node1_playbook(ssh_fleet, tmp_path) as run:
        yield run


def thp_result(stdout: str) -> dict:
    line = next(line for line in stdout.splitlines() if '"msg": "THP_RESULT ' in line)
    return json.loads(json.loads(line.split(" => ", 1)[1])["msg"][len("THP_RESULT "):])


def test_per_size_map_is_applied_read_back_persisted_idempotent_and_rolled_back_exactly(play, per_size_guard):
    KNOB_64K.write_text("never")
    KNOB_2M.write_text("inherit")
    before = size_knobs()
    wanted = {"64kB": "always", "2048kB": "never"}

    proc, (changed, failed) = play(APPLY, thp_sizes=wanted)
    assert (proc.returncode, failed) == (0, 0), proc.stdout + proc.stderr
    assert (selected(KNOB_64K), selected(KNOB_2M)) == ("always", "never")
    assert {k: v for k, v in size_knobs().items() if k not in (KNOB_64K, KNOB_2M)} == {
        k: v for k, v in before.items() if k not in (KNOB_64K, KNOB_2M)}  # sizes left out are left alone
    rows = {row["name"]: row for row in thp_result(proc.stdout)["settings"]}
    assert (rows["thp_sizes[64kB]"]["before"], rows["thp_sizes[64kB]"]["after"]) == ("never", "always")
    assert (rows["thp_sizes[2048kB]"]["before"], rows["thp_sizes[2048kB]"]["after"]) == ("inherit", "never")
    assert thp_result(proc.stdout)["verified"] is True
    assert f"ExecStart=/bin/sh -c 'echo always > {KNOB_64K}'" in UNIT.read_text()
    recorded = json.loads(play.state_file.read_text())["settings"]
    assert (recorded["thp_sizes[64kB]"]["value"], recorded["thp_sizes[2048kB]"]["value"]) == ("never", "inherit")

    proc, (changed, failed) = play(APPLY, thp_sizes=wanted)
    assert (proc.returncode, changed, failed) == (0, 0, 0), proc.stdout

    proc, (changed, failed) = play(ROLLBACK, "--tags", "thp")
    assert (proc.returncode, failed) == (0, 0), proc.stdout + proc.stderr
    assert size_knobs() == before
    assert not UNIT.exists() and not play.state_file.exists()
    assert '"thp_sizes[64kB]: always -> never"' in proc.stdout


def test_a_size_the_kernel_does_not_offer_is_refused_with_the_allowed_ones_before_any_change(play, per_size_guard):
    before = size_knobs()
    offered = ", ".join(knob.parent.name[len("hugepages-"):] for knob in sorted(
        THP.glob("hugepages-*kB/enabled"), key=lambda k: int(k.parent.name[len("hugepages-"):-2])))

    proc, (changed, failed) = play(APPLY, thp_sizes={"4096kB": "always", "64kB": "sometimes"})

    assert (proc.returncode != 0, changed, failed) == (True, 0, 1)
    assert ("node1: THP variables rejected, nothing was changed: "
            f"thp_sizes: size '4096kB' is not offered by this kernel; allowed sizes: {offered}; "
            f"thp_sizes[64kB]: 'sometimes' is not offered by this kernel ({KNOB_64K}); "
            "allowed: always, inherit, madvise, never") in proc.stdout
    assert size_knobs() == before and not play.state_file.exists()


def test_the_module_pointed_at_a_copied_sysfs_tree_without_per_size_knobs_refuses_a_map_and_takes_an_empty_one(
        play, tmp_path):
    # The fleet's hosts are this machine, so the copy is on the node where thp_inspect runs (root=...).
    copy = tmp_path / "node" / str(THP).lstrip("/")
    shutil.copytree(THP, copy, ignore=shutil.ignore_patterns("hugepages-*", "stats"),
                    copy_function=lambda src, dst: Path(dst).write_text(Path(src).read_text()))
    variables = {"thp_enabled": "madvise", "thp_defrag": "never", "thp_khugepaged_defrag": 1,
                 "thp_persist": ["systemd"], "thp_state_dir": str(tmp_path / "state")}

    def inspect(sizes: dict) -> dict:
        args = json.dumps({"root": str(tmp_path / "node"), "variables": {**variables, "thp_sizes": sizes}})
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "ansible"), "node1", "-i", str(play.inventory), "-m", "thp_inspect",
             "-a", args, "--one-line"], cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**play.env, "ANSIBLE_LIBRARY": str(REPO / "roles" / "thp" / "library")})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.split(" => ", 1)[1])

    refused = inspect({"64kB": "always"})
    assert (refused["sizes"], refused["plan"]) == ({}, [])
    assert refused["errors"] == [
        f"thp_sizes: this kernel has no per-size THP knobs ({THP}/hugepages-<N>kB/enabled, Linux 6.8 and later), "
        "so 64kB cannot be set; set thp_sizes: {} for this host or boot a newer kernel"
    ]
    taken = inspect({})
    assert taken["errors"] == [] and [p["name"] for p in taken["plan"]] == [
        "thp_enabled", "thp_defrag", "thp_khugepaged_defrag"]
