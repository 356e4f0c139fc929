"""Faults (issue 15's fault table): what fails leaves the node as it was and says what happened.

Each test calls one module or the core directly on this machine (the node): a sysfs write the kernel refuses, a
probe that crashes mid-way with a THP A/B arm set, a full disk under the A/B marker, the run lock and the report
writer. A full disk is a real tmpfs of 64 KiB (this machine runs the tests as root), always unmounted after.
The THP tests write the real knob and put it back (restore_kernel_tunables), in make test's THP lane.
The other faults are tested where they live: a probe that hangs (test_probe_node_safety.py), a vLLM that never
becomes ready (tests/probes/test_server_key_and_never_ready.py), a hugepage shortfall
(tests/unit/test_core_hugepages_verify.py), two runs at once (test_run_lock.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_sysfs_tunable import run_tunable
from tests.moduleutils import module_util

thp_arm = module_util("preflight.core.thp_arm")
lock = module_util("preflight.core.lock")
runner = module_util("preflight.probe_runner")
files = module_util("preflight.report.files")

KNOB = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "64k"):
    """A real, tiny filesystem at `where`; unmounted whatever happens."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "preflight-fault", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> None:
    """Fill the filesystem to the last byte (the writes that follow get ENOSPC)."""
    with open(where / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    with pytest.raises(OSError) as err:
        (where / "probe-space").write_bytes(b"x" * 8192)
    assert err.value.errno == errno.ENOSPC
    with contextlib.suppress(FileNotFoundError):
        (where / "probe-space").unlink()


def mode() -> str:
    return KNOB.read_text().split("[", 1)[1].split("]", 1)[0]


def other_than(current: str) -> str:
    return "never" if current != "never" else "madvise"


def listing(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir())


# --- a sysfs write that is refused ----------------------------------------------------------------------
def test_a_tunable_write_refused_fails_with_the_reason_and_leaves_the_file_as_it_was(tmp_path):
    """A read-only filesystem refuses the write as a kernel refuses a value (test_sysfs_tunable.py has the real
    kernel's EINVAL): the module fails naming the file and the reason; the file is byte-identical."""
    with tmpfs(tmp_path / "ro") as root:
        knob = root / "enabled"
        knob.write_text("always [madvise] never\n")
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        status, result, output = run_tunable(path=str(knob), value="never")
        assert status == "FAILED!", output
        assert result["msg"] == f"the kernel refused 'never' for {knob}: Read-only file system"
        assert knob.read_text() == "always [madvise] never\n"


# --- a probe that crashes mid-way, inside a THP A/B arm ------------------------------------------------
CRASHING_PROBE = textwrap.dedent("""
    import subprocess, sys, time
    print("probes crash: [1/3] warming up", file=sys.stderr, flush=True)
    # A helper of the probe's own (as a server would be), that the crash leaves behind in the probe's group.
    helper = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(helper.pid, flush=True)
    time.sleep(0.5)
    print("probes crash: [2/3] measuring", file=sys.stderr, flush=True)
    raise SystemExit(3)
""")


def test_a_probe_that_crashes_mid_arm_is_its_own_failure_and_the_node_is_put_back(tmp_path,
                                                                                  restore_kernel_tunables):
    original = mode()
    log = str(tmp_path / "logs" / "crash.log")
    with thp_arm.ThpArm(other_than(original), probe="crash_test", marker=str(tmp_path / "thp-ab.json")) as arm:
        assert mode() == other_than(original)
        run = runner.run([sys.executable, "-c", CRASHING_PROBE], "crash", dict(os.environ), str(tmp_path),
                         timeout_s=60, log=log)
    assert mode() == original and arm.restored == {"mode": original, "ok": True}
    assert not (tmp_path / "thp-ab.json").exists()
    assert (run.rc, run.timed_out, run.ok) == (3, False, False)
    assert run.problem == "the probe exited with status 3"
    assert "probes crash: [2/3] measuring" in run.stderr  # how far it got, for the report
    helper = int(run.stdout.split()[0])
    assert not Path(f"/proc/{helper}").exists() or "zombie" in Path(f"/proc/{helper}/status").read_text().lower(), \
        "the crashed probe's helper is still running"


# --- a full disk -----------------------------------------------------------------------------------------
def test_an_a_b_arm_whose_marker_cannot_be_written_leaves_thp_untouched(tmp_path, restore_kernel_tunables):
    original = mode()
    with tmpfs(tmp_path / "full") as root:
        fill(root)
        before = listing(root)
        marker = root / "thp-ab.json"
        with pytest.raises(thp_arm.ThpArmError) as err, thp_arm.ThpArm(other_than(original), probe="full_disk",
                                                                      marker=str(marker)):
            pytest.fail("the arm must not start without its marker")
        assert str(err.value) == f"cannot write the A/B marker {marker}: No space left on device; THP was not changed"
        assert mode() == original  # never changed: the marker is written before the knob
        assert listing(root) == before, "a partial marker was left behind"


def test_the_run_lock_on_a_full_disk_fails_naming_the_file_and_holds_nothing(tmp_path):
    with tmpfs(tmp_path / "full") as root:
        path = str(root / "run.lock")
        Path(path).touch()
        fill(root)
        with pytest.raises(lock.LockError) as err:
            lock.acquire_detached(path, 0, 30, lock.holder_info("tok", host="node1", playbook="site.yml"))
        assert str(err.value) == f"cannot write the holder record to {path}: No space left on device"
        assert lock.status(path) == {"held": False, "holder": None}


def test_the_report_writer_on_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    with tmpfs(tmp_path / "reports") as root:
        report = root / "node1.json"
        files.write_atomic(str(report), '{"status": "ok"}\n')
        fill(root)
        before = listing(root)
        with pytest.raises(OSError) as err:
            files.write_atomic(str(report), "x" * 200_000)
        assert err.value.errno == errno.ENOSPC
        assert report.read_text() == '{"status": "ok"}\n'
        assert listing(root) == before
