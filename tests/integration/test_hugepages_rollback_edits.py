"""roles/hugepages' rollback keeps every edit made after Preflight's run (issue 15, defects 2, 5 and 7), through
real ansible-playbook over real SSH on this machine's kernel (node1 of the fleet).

The fstab and the state directory are the test's own (hugepages_fstab_path, hugepages_state_dir: see
test_hugepages_role.py's Sandbox); the sysctl.d file is the real one and the fixture removes it on failure.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_hugepages_role import (  # noqa: F401  (sandbox is a fixture)
    FSTAB,
    NR_HUGEPAGES,
    SYSCTL_FILE,
    flat,
    hugetlbfs_mounts,
    recap,
    sandbox,
)
from tests.sshfleet import run_playbook

# The hugepages role alone, on pools held through the sandbox fixture: make test runs these beside the THP tests.
pytestmark = pytest.mark.thp_untouched

NFS = "nas.example:/export /data nfs rw,hard,_netdev 0 0\n"


def test_site_then_an_nfs_line_then_rollback_keeps_the_nfs_line_byte_for_byte(sandbox):  # noqa: F811
    # The operator keeps a file of their own in the state directory: rollback removes only Preflight's files.
    sandbox.state.mkdir()
    (sandbox.state / "operator-notes.txt").write_text("mine\n")
    proc = sandbox.run({"hugepages_count": 16, "hugepages_mounts": sandbox.mounts_var()})
    assert proc.returncode == 0, proc.stdout[-4000:]
    ours = f"hugetlbfs {sandbox.mount} hugetlbfs pagesize=2M,mode=1770,uid=0,gid=0 0 0\n"
    assert sandbox.fstab.read_text() == FSTAB + "\n" + ours
    sandbox.fstab.write_text(sandbox.fstab.read_text() + NFS)  # the operator adds an NFS mount since

    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.fstab.read_bytes() == (FSTAB + "\n" + NFS).encode()
    assert NR_HUGEPAGES.read_text().strip() == "0" and not SYSCTL_FILE.exists()
    assert str(sandbox.mount) not in hugetlbfs_mounts() and not sandbox.mount.exists()
    assert sorted(p.name for p in sandbox.state.iterdir()) == ["operator-notes.txt"]


def test_rollback_stops_before_any_change_when_preflight_line_was_edited_and_keeps_the_record(sandbox):  # noqa: F811
    proc = sandbox.run({"hugepages_count": 16, "hugepages_mounts": sandbox.mounts_var()})
    assert proc.returncode == 0, proc.stdout[-4000:]
    ours = f"hugetlbfs {sandbox.mount} hugetlbfs pagesize=2M,mode=1770,uid=0,gid=0 0 0"
    theirs = ours.replace("mode=1770", "mode=0770")
    sandbox.fstab.write_text(sandbox.fstab.read_text().replace(ours, theirs))
    edited = sandbox.fstab.read_bytes()

    proc = sandbox.rollback()
    assert proc.returncode != 0
    out = flat(proc.stdout)
    assert (
        "hugepages rollback on node1: nothing was changed and the record is kept "
        f"({sandbox.state}/state.json). Fix this and run the rollback again:" in out
    ), proc.stdout[-3000:]
    assert (
        f"{sandbox.fstab}: the hugetlbfs line for {sandbox.mount} is now '{theirs}', not the one Preflight wrote "
        f"('{ours}'): restore Preflight's line or remove the record's mount by hand, then run again" in out
    )
    assert sandbox.fstab.read_bytes() == edited
    assert NR_HUGEPAGES.read_text().strip() == "16" and SYSCTL_FILE.exists()
    assert (sandbox.state / "state.json").exists()

    # Once the operator puts Preflight's line back, the rollback finishes the job.
    sandbox.fstab.write_bytes(edited.replace(theirs.encode(), ours.encode()))
    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.fstab.read_bytes() == FSTAB.encode() and NR_HUGEPAGES.read_text().strip() == "0"


def test_root_and_system_mount_paths_and_a_shared_state_dir_are_refused_before_any_change(sandbox):  # noqa: F811
    before = NR_HUGEPAGES.read_text()
    proc = sandbox.run(
        {
            "hugepages_count": 16,
            "hugepages_mounts": [{"path": p, "mode": "0755"} for p in ("//", "/usr/..", "/etc")],
            "hugepages_state_dir": "/var/lib/preflight",
        }
    )
    out = flat(proc.stdout)
    assert proc.returncode != 0
    # 3 paths, and the state directory both contains thp_state_dir and jemalloc_state_dir (role defaults)
    assert "5 problem(s) with the requested settings on node1; nothing was changed" in out, proc.stdout[-3000:]
    assert "- hugepages_mounts[0].path='//' is / once normalised, the root directory: hugetlbfs mounted there" in out
    assert "- hugepages_mounts[1].path='/usr/..' is / once normalised, the root directory" in out
    assert "- hugepages_mounts[2].path='/etc' is /etc once normalised, a system directory" in out
    assert (
        "- hugepages_state_dir: '/var/lib/preflight' contains thp_state_dir (/var/lib/preflight/thp): each role "
        "needs a state directory of its own, or the rollback of one touches the record of the other; "
        "e.g. /var/lib/preflight/hugepages" in out
    )
    assert recap(proc.stdout)["changed"] == 0
    assert NR_HUGEPAGES.read_text() == before and sandbox.fstab.read_text() == FSTAB
    assert "/" not in hugetlbfs_mounts()

    # The rollback refuses the same directory: it would otherwise clean up inside the THP record's parent.
    proc = run_playbook(
        "playbooks/rollback.yml", sandbox.inventory, "--limit", "node1", "--tags", "hugepages",
        "-e", json.dumps({"hugepages_state_dir": "/var/lib/preflight"}),
    )
    assert proc.returncode != 0
    assert "hugepages rollback on node1: nothing was changed and the record is kept" in flat(proc.stdout)
    assert "hugepages_state_dir: '/var/lib/preflight' contains thp_state_dir" in flat(proc.stdout)
