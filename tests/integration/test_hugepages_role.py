"""roles/hugepages on this machine's real kernel, through real ansible-playbook over real SSH (node1 of the fleet).

All fleet hosts share this kernel, so the tests drive one host and read the kernel directly: /proc/meminfo,
/proc/mounts, /proc/sys/vm/nr_hugepages and the per-node sysfs files. The fstab, the hugetlbfs mount point
and the rollback record live in the test's tmp dir (hugepages_fstab_path, hugepages_state_dir), so the
machine's /etc/fstab is never touched; the sysctl.d file and the boot unit are the real ones and the
rollback (or, when a test fails half-way, the fixture) removes them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NR_HUGEPAGES
from tests.fake_bootloader import fake_update_grub
from tests.sshfleet import REPO, ansible_env, run_playbook

NODE0_2M = Path("/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages")
POOL_1G = Path("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages")
SYSCTL_FILE = Path("/etc/sysctl.d/80-preflight-hugepages.conf")
UNIT_2M = Path("/etc/systemd/system/preflight-hugepages-2048kB.service")
WANTS_2M = Path("/etc/systemd/system/sysinit.target.wants/preflight-hugepages-2048kB.service")
UNIT_1G = Path("/etc/systemd/system/preflight-hugepages-1048576kB.service")
WANTS_1G = Path("/etc/systemd/system/sysinit.target.wants/preflight-hugepages-1048576kB.service")
ROLE_FILES = [SYSCTL_FILE, UNIT_2M, WANTS_2M, UNIT_1G, WANTS_1G]
# An fstab of this machine's shape plus a root entry, without a final newline: every byte must survive.
FSTAB = "# UNCONFIGURED FSTAB FOR BASE SYSTEM\nUUID=0a1b2c3d / ext4 errors=remount-ro 0 1"

APPLY = """\
- name: Apply roles/hugepages and save its result
  hosts: all
  gather_facts: false
  roles:
    - role: hugepages
  post_tasks:
    - name: Save preflight_role_results where the test reads it
      ansible.builtin.copy:
        content: "{{ preflight_role_results | to_nice_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
      check_mode: false
      changed_when: false  # the test's own bookkeeping, not part of the role's changes
"""


def meminfo(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def hugetlbfs_mounts() -> dict[str, str]:
    mounts = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "hugetlbfs":
            mounts[fields[1]] = fields[3]
    return mounts


def recap(stdout: str, host: str = "node1") -> dict[str, int]:
    match = re.search(rf"^{host}\s+:\s+(.*)$", stdout, re.M)
    assert match, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def flat(text: str) -> str:
    """Output with YAML's line folding undone, for exact-message assertions."""
    return " ".join(text.replace("''", "'").split())


class Sandbox:
    """A tmp fstab, mount point and state dir, an inventory of node1, and playbooks that use them."""

    def __init__(self, ssh_fleet, tmp_path: Path):
        self.tmp = tmp_path
        self.fstab = tmp_path / "fstab"
        self.fstab.write_text(FSTAB)
        self.mount = tmp_path / "hugetlbfs"
        self.state = tmp_path / "hugepages-state"
        self.result_file = tmp_path / "result.json"
        self.inventory = ssh_fleet.inventory(
            tmp_path / "hosts.yml",
            extra_vars={
                "hugepages_fstab_path": str(self.fstab),
                "hugepages_state_dir": str(self.state),
                "result_file": str(self.result_file),
            },
        )
        (tmp_path / "apply.yml").write_text(APPLY)

    def run(self, variables: dict | None = None, *args: str):
        if self.result_file.exists():
            self.result_file.unlink()
        extra = ["-e", json.dumps(variables)] if variables else []
        return run_playbook(self.tmp / "apply.yml", self.inventory, "--limit", "node1", *extra, *args)

    def rollback(self):
        """The project's playbooks/rollback.yml, this role's part of it."""
        return run_playbook("playbooks/rollback.yml", self.inventory, "--limit", "node1", "--tags", "hugepages")

    def result(self) -> dict:
        return json.loads(self.result_file.read_text())["hugepages"]

    def mounts_var(self, mode: str = "1770") -> list[dict]:
        return [{"path": str(self.mount), "mode": mode}]


@pytest.fixture
def sandbox(ssh_fleet, tmp_path, hugepage_pools):
    """A sandbox whose teardown puts the kernel and the role's files back even when a test fails half-way; the
    hugepage pools are this test's alone meanwhile (conftest.hugepage_pools)."""
    existed = {p: p.exists() or p.is_symlink() for p in ROLE_FILES}
    pools = {p: p.read_text() for p in (NODE0_2M, POOL_1G) if p.exists()}
    box = Sandbox(ssh_fleet, tmp_path)
    yield box
    if box.state.exists():
        box.rollback()
    for path in hugetlbfs_mounts():
        if path.startswith(str(tmp_path)):
            subprocess.run(["umount", path], check=False)
    for path, text in pools.items():
        if path.read_text() != text:
            path.write_text(text.strip())
    for path, was_there in existed.items():
        if not was_there and (path.exists() or path.is_symlink()):
            path.unlink()


@pytest.mark.thp_untouched
def test_reserve_mount_persist_idempotent_check_mode_and_rollback(sandbox):
    """The whole life of a 2 MiB pool: check mode first, apply, apply again, check again, roll back."""
    assert NR_HUGEPAGES.read_text().strip() == "0", "the test needs a machine with no 2 MiB pages reserved"
    assert not SYSCTL_FILE.exists()
    wanted = {"hugepages_count": 64, "hugepages_mounts": sandbox.mounts_var()}

    # check mode predicts the change and leaves the kernel, the fstab and the disk untouched
    proc = sandbox.run(wanted, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] > 0
    assert "-0\n+64" in proc.stdout  # sysfs_tunable's diff of vm.nr_hugepages
    assert NR_HUGEPAGES.read_text().strip() == "0"
    assert sandbox.fstab.read_text() == FSTAB
    assert not SYSCTL_FILE.exists() and not sandbox.mount.exists() and not sandbox.state.exists()
    assert sandbox.result()["settings"][0] | {"changed": True} == sandbox.result()["settings"][0]

    # apply: 64 pages in the kernel, hugetlbfs mounted now and in fstab, vm.nr_hugepages in sysctl.d
    proc = sandbox.run(wanted)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert meminfo("HugePages_Total") == 64
    assert NR_HUGEPAGES.read_text().strip() == "64"
    options = hugetlbfs_mounts()[str(sandbox.mount)]
    assert "pagesize=2M" in options.split(",") and "mode=1770" in options.split(",")
    fstab_line = f"hugetlbfs {sandbox.mount} hugetlbfs pagesize=2M,mode=1770,uid=0,gid=0 0 0\n"
    assert sandbox.fstab.read_text() == FSTAB + "\n" + fstab_line
    assert "\nvm.nr_hugepages = 64\n" in SYSCTL_FILE.read_text()
    result = sandbox.result()
    assert result["role"] == "hugepages" and result["verified"] is True and result["shortfall"] is None
    assert result["reboot_required"] is False
    assert result["settings"][0] == {
        "name": "vm.nr_hugepages",
        "path": "/proc/sys/vm/nr_hugepages",
        "desired": 64,
        "before": 0,
        "after": 64,
        "changed": True,
    }
    assert result["settings"][1]["name"] == f"hugetlbfs mount {sandbox.mount}"
    assert result["settings"][1]["changed"] is True
    methods = {p["method"]: p for p in result["persistence"]}
    assert methods["sysctl"]["state"] == "installed" and methods["sysctl"]["path"] == str(SYSCTL_FILE)
    assert methods["fstab"]["state"] == "installed" and methods["fstab"]["path"] == str(sandbox.fstab)
    assert result["pool"]["total"] == 64

    # idempotence: the second run changes nothing and still verifies
    proc = sandbox.run(wanted)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0, proc.stdout[-4000:]
    assert sandbox.result()["verified"] is True
    assert {p["state"] for p in sandbox.result()["persistence"]} == {"unchanged"}

    # check mode on a converged host: nothing to change
    proc = sandbox.run(wanted, "--check")
    assert proc.returncode == 0 and recap(proc.stdout)["changed"] == 0, proc.stdout[-4000:]

    # rollback: 0 pages, unmounted, mount point gone, fstab byte for byte, sysctl.d file gone, record gone
    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert NR_HUGEPAGES.read_text().strip() == "0" and meminfo("HugePages_Total") == 0
    assert str(sandbox.mount) not in hugetlbfs_mounts()
    assert not sandbox.mount.exists()
    assert sandbox.fstab.read_bytes() == FSTAB.encode()
    assert not SYSCTL_FILE.exists()
    assert not sandbox.state.exists()


@pytest.mark.thp_untouched
def test_request_over_the_memory_cap_is_refused_before_any_change(sandbox):
    mem_total_kb = meminfo("MemTotal")
    others_kb = int(POOL_1G.read_text()) * 1048576 if POOL_1G.exists() else 0
    limit_kb = mem_total_kb * 50 // 100
    max_pages = (limit_kb - others_kb) // 2048
    count = max_pages + 1
    share = 100.0 * (count * 2048 + others_kb) / mem_total_kb
    expected = (
        f"hugepages_count={count} asks for {count * 2048 // 1024} MiB of 2M pages; with {others_kb // 1024} MiB "
        f"already reserved in other page sizes that is {share:.1f}% of this host's MemTotal of "
        f"{mem_total_kb // 1024} MiB, above hugepages_max_percent_of_memory=50 (at most {max_pages} pages of 2M). "
        "Lower hugepages_count or raise hugepages_max_percent_of_memory."
    )
    before = NR_HUGEPAGES.read_text()

    proc = sandbox.run({"hugepages_count": count, "hugepages_mounts": sandbox.mounts_var()})

    assert proc.returncode != 0
    assert f"- {expected}" in proc.stdout, proc.stdout[-3000:]
    assert "1 problem(s) with the requested settings on node1; nothing was changed" in proc.stdout
    assert recap(proc.stdout) | {"changed": 0, "failed": 1} == recap(proc.stdout)
    assert NR_HUGEPAGES.read_text() == before
    assert sandbox.fstab.read_text() == FSTAB and not sandbox.mount.exists()
    assert not SYSCTL_FILE.exists() and not sandbox.state.exists()


@pytest.mark.thp_untouched
def test_every_bad_value_is_named_in_one_failure(sandbox):
    bad = {
        "hugepages_count": 16,
        "hugepages_per_node": {"0": 8, "7": 8},
        "hugepages_max_percent_of_memory": 0,
        "hugepages_mounts": [{"path": "relative/dir", "mode": 755, "owner": "no-such-user-preflight"}],
    }
    proc = sandbox.run(bad)
    out = proc.stdout
    assert proc.returncode != 0
    assert "6 problem(s) with the requested settings on node1; nothing was changed. Fix them and run again:" in out
    for line in [
        "- hugepages_max_percent_of_memory=0 must be a whole number from 1 to 100",
        "- hugepages_count=16 and hugepages_per_node={'0': 8, '7': 8} are both set: give one of them "
        "(a total, or pages per NUMA node), and null for the other",
        "- hugepages_per_node names node 7, but this host's NUMA nodes are: 0",
        "- hugepages_mounts[0].path='relative/dir' must be an absolute directory path without spaces (not /)",
        "- hugepages_mounts[0].mode=755 must be an octal mode string like '0755' or '1770' "
        "(quote it, e.g. '0755': unquoted YAML reads it as a number)",
        "- hugepages_mounts[0].owner='no-such-user-preflight': no such user on this host",
    ]:
        assert line in out, out[-3000:]
    assert recap(out)["changed"] == 0
    assert not sandbox.state.exists()

    # Types and choices are refused by meta/argument_specs.yml before any task, all at once; a YAML
    # boolean is not a word.
    proc = sandbox.run({"hugepages_size": "3M", "hugepages_shortfall": False, "hugepages_count": "many"})
    out = flat(proc.stdout)
    assert proc.returncode != 0
    assert "value of hugepages_size must be one of: 2M, 1G, got: 3M" in out
    assert "value of hugepages_shortfall must be one of: fail, warn, got: False" in out
    assert "argument 'hugepages_count' is of type str and we were unable to convert to int" in out
    assert recap(proc.stdout)["changed"] == 0


@pytest.mark.thp_untouched
def test_per_node_pool_is_persisted_by_a_boot_unit_and_rolled_back(sandbox):
    proc = sandbox.run({"hugepages_per_node": {"0": 32}})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert NODE0_2M.read_text().strip() == "32" and meminfo("HugePages_Total") == 32
    unit = UNIT_2M.read_text()
    assert f"ExecStart=/bin/sh -c 'echo 32 > {NODE0_2M}'" in unit
    assert "WantedBy=sysinit.target" in unit
    assert WANTS_2M.is_symlink() and os.readlink(WANTS_2M) == str(UNIT_2M)
    assert not SYSCTL_FILE.exists()  # a per-node pool is not a vm.nr_hugepages total
    result = sandbox.result()
    assert result["settings"][0]["name"] == "node0 hugepages-2048kB/nr_hugepages"
    assert result["settings"][0]["after"] == 32 and result["verified"] is True
    assert [(p["method"], p["state"]) for p in result["persistence"]] == [("systemd", "installed")]

    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert NODE0_2M.read_text().strip() == "0"
    assert not UNIT_2M.exists() and not WANTS_2M.is_symlink()


@pytest.mark.thp_untouched
def test_one_gib_pages_say_plainly_that_no_bootloader_can_persist_them(sandbox):
    """This VM has no bootloader: the role says so, falls back to a boot unit, and reports the live pool."""
    if Path("/etc/default/grub").exists():
        pytest.skip("this machine has a GRUB configuration; the test is about hosts without one")
    proc = sandbox.run({"hugepages_size": "1G", "hugepages_count": 1, "hugepages_shortfall": "warn"})
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = sandbox.result()
    cmdline = next(p for p in result["persistence"] if p["method"] == "kernel_cmdline")
    assert cmdline["state"] == "unavailable"
    assert cmdline["detail"] == (
        "no bootloader configuration found (/etc/default/grub does not exist): 1 GiB pages cannot be reserved "
        "on the kernel command line of this host, which is where they are reliable"
    )
    unit = next(p for p in result["persistence"] if p["method"] == "systemd")
    assert unit["state"] == "installed" and UNIT_1G.exists()
    got = int(POOL_1G.read_text())
    # The kernel may or may not find a free contiguous GiB; either way the report must say what it got.
    if got == 1:
        assert result["shortfall"] is None and result["verified"] is True
    else:
        assert result["shortfall"]["asked"] == 1 and result["shortfall"]["got"] == got
        assert "contiguous" in result["shortfall"]["why"] and result["verified"] is False

    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert POOL_1G.read_text().strip() == "0" and not UNIT_1G.exists()


@pytest.mark.thp_untouched
def test_null_count_leaves_the_pool_alone_and_only_reports(sandbox):
    before = NR_HUGEPAGES.read_text()
    proc = sandbox.run({"hugepages_count": None})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] == 0
    result = sandbox.result()
    assert result["settings"] == [] and result["persistence"] == [] and result["shortfall"] is None
    assert result["pool"]["total"] == int(before)
    assert NR_HUGEPAGES.read_text() == before and not sandbox.state.exists()


@pytest.mark.thp_untouched
def test_molecule_default_scenario(hugepage_pools, tmp_path):
    """roles/hugepages/molecule/default: prepare, converge, idempotence, verify, cleanup (rollback) on this machine."""
    bindir = Path(sys.executable).parent
    env = ansible_env(PATH=f"{bindir}:{os.environ.get('PATH', '')}")
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own configuration
    # A fresh scenario state each run: molecule keeps "prepared" in ~/.ansible/tmp and would skip prepare.
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")
    proc = subprocess.run(
        [str(bindir / "molecule"), "test"],
        cwd=REPO / "roles" / "hugepages",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert NR_HUGEPAGES.read_text().strip() == "0"
    assert not SYSCTL_FILE.exists()


# --- GRUB: a fake bootloader (there is none on this machine) ------------------------------------------------
GRUB_DEFAULTS = """\
GRUB_DEFAULT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX='console=ttyS0 rhgb' # serial console
"""
SITE_THP_THEN_HUGEPAGES = """\
- name: Site order, the two roles that edit the kernel command line
  hosts: all
  gather_facts: false
  roles:
    - role: thp
    - role: hugepages
"""


@pytest.fixture
def fake_bootloader(tmp_path):
    """A GRUB defaults file in the test's tmp dir and the FAKE update-grub of tests/fake_bootloader.py."""
    with fake_update_grub(tmp_path) as calls:
        defaults = tmp_path / "grub"
        defaults.write_text(GRUB_DEFAULTS)
        yield defaults, calls


def test_site_thp_then_1g_pages_on_grub_then_operator_edit_then_rollback_is_byte_exact(sandbox, fake_bootloader,
                                                                                            restore_kernel_tunables):
    """Issue 15 defect 2: the hugepages rollback used to copy back a whole-file backup taken after the thp role
    had added its option (and lost every later edit); now both rollbacks take out exactly what they added."""
    defaults, calls = fake_bootloader
    (sandbox.tmp / "site.yml").write_text(SITE_THP_THEN_HUGEPAGES)
    variables = {
        "thp_persist": ["kernel_cmdline"],
        "thp_state_dir": str(sandbox.tmp / "thp-state"),
        "__thp_grub_defaults_file": str(defaults),
        "__hugepages_grub_default": str(defaults),
        "hugepages_size": "1G",
        "hugepages_count": 0,
    }
    site = run_playbook(sandbox.tmp / "site.yml", sandbox.inventory, "--limit", "node1", "-e", json.dumps(variables))
    assert site.returncode == 0, site.stdout[-3000:]
    applied = GRUB_DEFAULTS.replace("rhgb'", "rhgb transparent_hugepage=madvise hugepagesz=1G hugepages=0'")
    assert defaults.read_text() == applied
    words = subprocess.run(["bash", "-c", f'. "{defaults}"; printf "%s" "$GRUB_CMDLINE_LINUX"'],
                           capture_output=True, text=True, check=True).stdout.split()
    assert words == ["console=ttyS0", "rhgb", "transparent_hugepage=madvise", "hugepagesz=1G", "hugepages=0"]
    assert "backup" not in json.dumps(json.loads((sandbox.state / "state.json").read_text()))

    operator = applied.replace("hugepages=0'", "hugepages=0 nosmt'") + "# operator: nosmt\n"
    defaults.write_text(operator)
    rollback = run_playbook("playbooks/rollback.yml", sandbox.inventory, "--limit", "node1", "--tags",
                            "thp,hugepages", "-e", json.dumps(variables))

    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert defaults.read_text() == GRUB_DEFAULTS.replace("rhgb'", "rhgb nosmt'") + "# operator: nosmt\n"
    assert calls.read_text().count("run") == 4  # thp and hugepages, at apply and at rollback


@pytest.mark.thp_untouched
def test_rollback_stops_before_any_change_when_the_pair_preflight_wrote_was_changed(sandbox, fake_bootloader):
    defaults, _ = fake_bootloader
    variables = {"__hugepages_grub_default": str(defaults), "hugepages_size": "1G", "hugepages_count": 0}
    assert sandbox.run(variables).returncode == 0
    changed = defaults.read_text().replace("hugepages=0", "hugepages=2")
    defaults.write_text(changed)

    rollback = run_playbook("playbooks/rollback.yml", sandbox.inventory, "--limit", "node1", "--tags", "hugepages",
                            "-e", json.dumps(variables))

    assert rollback.returncode != 0
    assert (
        f"{defaults}: GRUB_CMDLINE_LINUX no longer holds what Preflight wrote (hugepagesz=1G hugepages=0); it now "
        "has hugepagesz=1G hugepages=2: the record is kept" in flat(rollback.stdout)
    )
    assert defaults.read_text() == changed and (sandbox.state / "state.json").exists()
    defaults.write_text(changed.replace("hugepages=2", "hugepages=0"))  # lets the fixture's rollback finish
