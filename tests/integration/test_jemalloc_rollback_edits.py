"""roles/jemalloc's rollback keeps every edit made after Preflight's run and removes only the package Preflight
installed, never one that installed packages depend on (issue 15, defects 2 and 7), through real
ansible-playbook over real SSH (node1 of the fleet).

ld.so.preload is the test's own (see test_jemalloc_role.py). The package test installs a real Debian package
of its own, built here with dpkg-deb, that depends on libjemalloc2; "Preflight installed libjemalloc2" is
written into the record by the test (a fake of the install history: the package must stay on this shared
machine, so Preflight cannot be made to install it for real).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_jemalloc_role import (  # noqa: F401  (sandbox is a fixture)
    DROPIN,
    PRELOAD,
    library_from_dpkg,
    sandbox,
)

# The jemalloc role alone, on a service, drop-in directory and ld.so.preload of the test's own: make test runs
# these beside the THP tests.
pytestmark = pytest.mark.thp_untouched

DEPENDENT = "preflight-test-jemalloc-user"


def flat(text: str) -> str:
    return " ".join(text.replace("''", "'").split())


def test_site_then_another_library_then_rollback_keeps_it_byte_for_byte(sandbox):  # noqa: F811
    library = library_from_dpkg()
    sandbox.preload.write_text(PRELOAD)  # no final newline
    proc = sandbox.run({"jemalloc_scope": "system", "__jemalloc_ld_so_preload": str(sandbox.preload)})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.preload.read_text() == f"{PRELOAD}\n{library}\n"
    sandbox.preload.write_text(sandbox.preload.read_text() + "/usr/lib/libadded-later.so\n")

    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.preload.read_bytes() == f"{PRELOAD}\n/usr/lib/libadded-later.so\n".encode()
    assert not DROPIN.exists() and not sandbox.state.exists()
    assert "jemalloc on node1: libjemalloc2 kept: Preflight did not install it" in flat(proc.stdout)
    assert Path(library).exists()


def test_rollback_stops_when_the_dropin_was_edited_and_keeps_the_record(sandbox):  # noqa: F811
    proc = sandbox.run()
    assert proc.returncode == 0, proc.stdout[-4000:]
    DROPIN.write_text(DROPIN.read_text() + 'Environment="EXTRA=1"\n')
    edited = DROPIN.read_bytes()

    proc = sandbox.rollback()
    assert proc.returncode != 0
    out = flat(proc.stdout)
    assert "jemalloc rollback on node1: nothing was changed and the record is kept" in out, proc.stdout[-3000:]
    assert f"{DROPIN} no longer holds what Preflight wrote:" in out and '+Environment="EXTRA=1"' in out
    assert DROPIN.read_bytes() == edited and (sandbox.state / "state.json").exists()
    DROPIN.unlink()  # the operator decides; the fixture's rollback then has nothing of Preflight's to remove


def build_dependent(tmp: Path) -> Path:
    root = tmp / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {DEPENDENT}\nVersion: 1.0\nArchitecture: all\nMaintainer: Preflight tests <t@example.invalid>\n"
        "Depends: libjemalloc2\nDescription: test package that depends on libjemalloc2\n"
    )
    subprocess.run(["dpkg-deb", "--build", str(root), str(tmp / "dep.deb")], check=True, capture_output=True)
    return tmp / "dep.deb"


def test_package_preflight_installed_stays_while_an_installed_package_depends_on_it(sandbox):  # noqa: F811
    deb = build_dependent(sandbox.tmp)
    subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True)
    try:
        proc = sandbox.run()
        assert proc.returncode == 0, proc.stdout[-4000:]
        state_file = sandbox.state / "state.json"
        record = json.loads(state_file.read_text())
        record["package"]["installed_by_preflight"] = True  # the fake install history (see the module docstring)
        state_file.write_text(json.dumps(record))

        proc = sandbox.rollback()
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert (
            f"jemalloc on node1: libjemalloc2 kept: installed packages depend on it: {DEPENDENT}" in flat(proc.stdout)
        )
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "libjemalloc2"], capture_output=True, text=True)
        assert status.stdout == "install ok installed"
        assert not DROPIN.exists() and not sandbox.state.exists()
    finally:
        subprocess.run(["dpkg", "-r", DEPENDENT], check=False, capture_output=True)
