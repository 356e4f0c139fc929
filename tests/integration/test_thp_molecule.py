"""roles/thp's molecule scenario (roles/thp/molecule/default), run by the real molecule on this machine: THP per
size, and persisted through a real tuned daemon the scenario starts (thp_persist auto). The machine must be exactly
as it was afterwards: THP, tuned's files and no daemon left (the scenario's cleanup; anything it left is put back
here, and the test fails)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import THP_UNIT as UNIT
from tests.conftest import THP_UNIT_LINK as UNIT_LINK
from tests.integration.test_thp_role import THP, TUNABLES
from tests.sshfleet import REPO, ansible_env


def machine_state() -> dict:
    """What the molecule scenario touches: THP (global and per-size), every file under /etc/tuned and /run/tuned
    byte for byte (a directory as None), and the tuned daemons running (pid -> command line)."""
    found = sorted(path for root in (Path("/etc/tuned"), Path("/run/tuned")) for path in root.rglob("*"))
    files = {path: None if path.is_dir() else path.read_bytes() for path in found}
    daemons = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if any(Path(arg.decode(errors="replace")).name == "tuned" for arg in argv[:2]):
                daemons[int(cmdline.parent.name)] = argv
    knobs = [*TUNABLES, *sorted(THP.glob("hugepages-*kB/enabled"))]
    return {"thp": {path: path.read_bytes() for path in knobs}, "tuned": files, "daemons": daemons}


def put_back(before: dict) -> None:
    """Stop the tuned daemons started since ``before`` (the scenario's: none ran before it), then give /etc/tuned
    and THP back as they were."""
    left = machine_state()
    for pid in left["daemons"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in left["daemons"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in reversed(left["tuned"]):
        if path not in before["tuned"]:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path, content in before["tuned"].items():
        if content is not None and left["tuned"].get(path) != content:
            path.write_bytes(content)
    for path, content in before["thp"].items():
        if path.read_bytes() != content:
            text = content.decode()
            path.write_text(text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip())


def test_molecule_scenario_converges_idempotently_and_verifies_sysfs(clean_thp, tmp_path):
    """One molecule run (roles/thp/molecule/default) covers THP per size and persisted through a real tuned
    daemon the scenario starts (thp_persist auto); the systemd unit is the tests above and test_thp_sizes'."""
    before = machine_state()
    assert not before["daemons"], f"a tuned daemon already runs here: {before['daemons']}; not touching it"
    env = ansible_env()
    env.pop("ANSIBLE_CONFIG")  # molecule writes its own
    # A fresh scenario state each run: molecule keeps "prepared" in ~/.ansible/tmp and would skip prepare.
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "molecule"), "test"],
            cwd=REPO / "roles" / "thp",
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        after = machine_state()
    finally:  # the scenario's cleanup should have done this; whatever it left is put back here, then reported
        put_back(before)
    # molecule runs cleanup again after a failure, so the first failure is far from the end of the output.
    errors = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("[ERROR]", "fatal:")))
    assert proc.returncode == 0, errors + "\n" + proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "static tuning from profile 'preflight' applied" in (tmp_path / "molecule" / "tuned.log").read_text()
    # The scenario's cleanup is the role's rollback and tuned's files kept by prepare: the machine is as it was.
    assert after == before
    assert not UNIT.exists() and not UNIT_LINK.is_symlink()
