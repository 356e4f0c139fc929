"""THP persisted through tuned where tuned is active (never two tuners on one knob): the real thp role over real
SSH to node1 of the test fleet, this machine's kernel, and a real tuned daemon (Debian's tuned 2.20).

How tuned runs here: this VM has no systemd as PID 1 and no D-Bus system bus, so `tuned --daemon` stops at once
(it cannot attach to D-Bus) and tuned-adm cannot reach a daemon; `tuned --daemon --no-dbus` runs, loads the
active profile from /etc/tuned/active_profile and applies it, and reloads it on SIGHUP, which is how the role
tells a running daemon (with or without D-Bus). So the test runs the real daemon and reads what it applied from
its log, and reads the profile as tuned merges it with tuned's own loader (what `tuned-adm verify` compares).

Everything is put back whatever happens: the daemon the test started is stopped, tuned's files under /etc/tuned
are restored byte for byte, the test profile and Preflight's are removed, THP and Preflight's unit as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import THP_UNIT as UNIT
from tests.conftest import THP_UNIT_LINK as UNIT_LINK
from tests.integration.test_thp_sizes import node1_playbook, thp_result

TUNED_DIR = Path("/etc/tuned")
ACTIVE, MODE = TUNED_DIR / "active_profile", TUNED_DIR / "profile_mode"
POST_LOADED = TUNED_DIR / "post_loaded_profile"
BEFORE = "preflight-test-before"
BEFORE_DIR, OURS_DIR = TUNED_DIR / BEFORE, TUNED_DIR / "preflight"
PID_FILE = Path("/run/tuned/tuned.pid")
THP = Path("/sys/kernel/mm/transparent_hugepage")
APPLY, ROLLBACK = "roles/thp/tests/apply.yml", "playbooks/rollback.yml"
# tuned's own profile loader (Debian's python3-tuned, outside the project's virtualenv): the merged profile.
MERGED = (
    "import json, tuned.profiles as p, tuned.utils.global_config as g, tuned.consts as c;"
    "loader = p.Loader(p.Locator(c.LOAD_DIRECTORIES), p.Factory(), p.Merger(), g.GlobalConfig(),"
    " p.variables.Variables());"
    "print(json.dumps({n: dict(u.options) for n, u in loader.load(['preflight']).units.items()}))"
)

pytestmark = pytest.mark.skipif(not shutil.which("tuned") or not Path("/usr/bin/python3").exists(),
                                reason="tuned is not installed (apt-get install --no-install-recommends tuned)")


def selected(path: Path) -> str:
    return path.read_text().split("[", 1)[1].split("]", 1)[0]


def snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def put_back(path: Path, content: bytes | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    elif snapshot(path) != content:
        path.write_bytes(content)


@pytest.fixture
def tuned_daemon(restore_kernel_tunables, tmp_path):
    """A tuned daemon running the test's profile, which sets THP itself (enabled=always), as on a node tuned
    manages; afterwards the daemon is stopped and tuned's files, Preflight's unit and THP are as they were."""
    assert not PID_FILE.exists(), f"a tuned daemon already runs here ({PID_FILE}); not touching it"
    assert not OURS_DIR.exists() and not BEFORE_DIR.exists(), "tuned profiles from an earlier run are left over"
    files = {path: snapshot(path) for path in (ACTIVE, MODE, POST_LOADED, UNIT)}
    had_link = UNIT_LINK.is_symlink()
    log = tmp_path / "tuned.log"
    BEFORE_DIR.mkdir()
    (BEFORE_DIR / "tuned.conf").write_text("[main]\nsummary=Preflight test: a profile that sets THP\n\n"
                                           "[vm]\ntransparent_hugepages=always\n")
    ACTIVE.write_text(BEFORE + "\n")
    MODE.write_text("manual\n")
    # Knobs the test's profile leaves alone, at values unlike what the test asks for: tuned must give these back.
    (THP / "defrag").write_text("defer")
    (THP / "khugepaged" / "defrag").write_text("0")
    pid = None
    try:
        subprocess.run(["tuned", "--daemon", "--no-dbus", "--log", str(log)], check=True, timeout=30)
        pid = wait_for(lambda: PID_FILE.exists() and int(PID_FILE.read_text()), "the tuned pid file")
        wait_for(lambda: f"static tuning from profile '{BEFORE}' applied" in log.read_text(), "tuned's start")
        assert selected(THP / "enabled") == "always"
        yield {"pid": pid, "log": log, "active": ACTIVE.read_bytes(), "mode": MODE.read_bytes()}
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), "the tuned daemon to stop")
        PID_FILE.unlink(missing_ok=True)
        shutil.rmtree(BEFORE_DIR, ignore_errors=True)
        shutil.rmtree(OURS_DIR, ignore_errors=True)
        for path, content in files.items():
            put_back(path, content)
        if had_link and not UNIT_LINK.is_symlink():
            UNIT_LINK.symlink_to(UNIT)
        elif not had_link:
            UNIT_LINK.unlink(missing_ok=True)


def wait_for(condition, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition()
        except (OSError, ValueError):
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def play(ssh_fleet, tmp_path):
    """test_thp_sizes' node1 runs; here every run must reach node1's recap: (proc, changed, failed)."""
    with node1_playbook(ssh_fleet, tmp_path) as sizes_run:
        def run(playbook: str, *args: str, **variables):
            proc, recap = sizes_run(playbook, *args, **variables)
            assert recap, proc.stdout + proc.stderr
            return proc, *recap

        yield run


def merged_profile() -> dict:
    proc = subprocess.run(["/usr/bin/python3", "-c", MERGED], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def live() -> dict:
    return {"enabled": selected(THP / "enabled"), "defrag": selected(THP / "defrag"),
            "khugepaged_defrag": (THP / "khugepaged" / "defrag").read_text().strip()}


def test_where_tuned_is_active_thp_persists_in_a_profile_on_top_of_it_and_rollback_gives_tuned_back(
        play, tmp_path, tuned_daemon):
    wanted = {"thp_persist": ["auto"], "thp_enabled": "madvise", "thp_defrag": "never", "thp_khugepaged_defrag": 1}
    before = live()
    assert before == {"enabled": "always", "defrag": "defer", "khugepaged_defrag": "0"}

    proc, changed, failed = play(APPLY, "--check", "--diff", **wanted)
    assert (proc.returncode, failed) == (0, 0), proc.stdout + proc.stderr
    assert (ACTIVE.read_bytes(), MODE.read_bytes()) == (tuned_daemon["active"], tuned_daemon["mode"])
    assert not OURS_DIR.exists() and selected(THP / "enabled") == "always"  # check mode wrote nothing
    assert f"+include={BEFORE}" in proc.stdout and "+transparent_hugepages=madvise" in proc.stdout  # the diff
    assert "would be profile /etc/tuned/preflight/tuned.conf" in proc.stdout

    proc, changed, failed = play(APPLY, **wanted)
    assert (proc.returncode, failed) == (0, 0), proc.stdout + proc.stderr
    assert (ACTIVE.read_text(), MODE.read_text()) == ("preflight\n", "manual\n")
    profile = (OURS_DIR / "tuned.conf").read_text()
    assert f"include={BEFORE}\n" in profile and "[vm]\ntransparent_hugepages=madvise\n" in profile
    assert f"{THP}/defrag=never\n{THP}/khugepaged/defrag=1\n" in profile
    assert not UNIT.exists() and not UNIT_LINK.is_symlink()
    assert selected(THP / "enabled") == "madvise" and selected(THP / "defrag") == "never"
    merged = merged_profile()  # as tuned merges it: the included profile's THP overridden by Preflight's
    assert merged["vm"]["transparent_hugepages"] == "madvise"
    assert merged["sysfs"][f"{THP}/defrag"] == "never"
    wait_for(lambda: "static tuning from profile 'preflight' applied" in tuned_daemon["log"].read_text(),
             "the daemon to apply Preflight's profile after SIGHUP")
    assert selected(THP / "enabled") == "madvise"  # what the reloaded daemon applied
    result = thp_result(proc.stdout)
    assert [(e["method"], e["state"]) for e in result["persistence"]] == [("tuned", "installed")]
    assert [c for c in result["conflicts"] if "tuned" in c] == []  # tuned's THP is Preflight's now, no fight

    proc, changed, failed = play(APPLY, **wanted)
    assert (proc.returncode, changed, failed) == (0, 0, 0), proc.stdout

    proc, changed, failed = play(ROLLBACK, "--tags", "thp")
    assert (proc.returncode, failed) == (0, 0), proc.stdout + proc.stderr
    assert (ACTIVE.read_bytes(), MODE.read_bytes()) == (tuned_daemon["active"], tuned_daemon["mode"])
    assert not OURS_DIR.exists() and not (tmp_path / "thp-state" / "state.json").exists()
    assert live() == before  # rollback waited for the daemon to unapply Preflight's profile
    # tuned writes back, when it unapplies a profile, the values it kept when it applied it; the role let the
    # daemon apply Preflight's profile before its own writes, so those are the node's values, not Preflight's.
    wait_for(lambda: tuned_daemon["log"].read_text().count(f"static tuning from profile '{BEFORE}' applied") >= 2,
             "the daemon to apply the restored profile after SIGHUP")
    time.sleep(1)
    assert live() == before
