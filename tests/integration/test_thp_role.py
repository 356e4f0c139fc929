"""roles/thp applied by the real ansible-playbook over real SSH to the test hosts, on this machine's kernel.

All SSH hosts share this kernel and filesystem, so tests that compare state run against node1 only;
the fleet test runs against all of them and expects one kernel. Every test puts THP back
(restore_kernel_tunables) and removes the unit it may have installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import THP_UNIT as UNIT
from tests.conftest import THP_UNIT_LINK as UNIT_LINK
from tests.fake_bootloader import fake_update_grub
from tests.sshfleet import ansible_env, run_playbook

THP = Path("/sys/kernel/mm/transparent_hugepage")
ENABLED, DEFRAG, KHUGEPAGED_DEFRAG = THP / "enabled", THP / "defrag", THP / "khugepaged" / "defrag"
TUNABLES = (ENABLED, DEFRAG, KHUGEPAGED_DEFRAG)
APPLY = "roles/thp/tests/apply.yml"
ROLLBACK = "playbooks/rollback.yml"
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)
SYSTEMD_DETAIL_NOT_PID1 = (
    "systemd is not PID 1 here (no /run/systemd/system), so the unit could not be started now: the live values "
    "were written directly and the unit applies them at the next boot"
)
NO_SYSTEMD_PID1 = not os.path.isdir("/run/systemd/system")
NO_GRUB = not os.path.exists("/etc/default/grub")


class Run:
    """One ansible-playbook run: exit code, recap per host, THP results and failure messages per host."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.proc = proc
        self.output = proc.stdout + proc.stderr
        self.recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(proc.stdout)
        }
        self.results: dict[str, dict] = {}
        self.failures: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            match = re.match(r"^(ok|fatal): \[(\S+)\]:?(?: FAILED!)? => (\{.*\})$", line)
            if not match:
                continue
            payload = json.loads(match[3])
            if match[1] == "fatal":
                self.failures[match[2]] = payload["msg"]
            elif str(payload.get("msg", "")).startswith("THP_RESULT "):
                self.results[match[2]] = json.loads(payload["msg"][len("THP_RESULT ") :])


@pytest.fixture
def thp_run(ssh_fleet, tmp_path):
    """Run a playbook against the SSH fleet with THP variables as JSON extra vars."""
    # One SSH connection per host for the whole run (the fleet's default opens one per task): the role has
    # about fifteen remote steps, and on a 2-core CI machine the handshakes dominate its runtime.
    control_dir = Path(tempfile.mkdtemp(prefix="thp-ssh-", dir="/tmp"))
    common_args = (
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "
        f"-o ControlMaster=auto -o ControlPersist=15s -o ControlPath={control_dir}/%C"
    )
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml", extra_vars={"ansible_ssh_common_args": common_args})
    state_dir = tmp_path / "thp-state"
    env = ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CALLBACK_FORMAT_PRETTY="false")

    def run(playbook: str = APPLY, *args: str, limit: str = "node1", **thp_vars) -> Run:
        extra = {"thp_state_dir": str(state_dir), **thp_vars}
        limit_args = ("--limit", limit) if limit else ()
        return Run(run_playbook(playbook, inventory, "-e", json.dumps(extra), *limit_args, *args, env=env))

    run.state_file = state_dir / "state.json"
    yield run
    for socket in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "unused"], capture_output=True, timeout=30)
    shutil.rmtree(control_dir, ignore_errors=True)


def selected(path: Path) -> str:
    text = path.read_text().strip()
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text


def set_thp(enabled: str, defrag: str, khugepaged_defrag: str) -> dict[Path, bytes]:
    for path, value in zip(TUNABLES, (enabled, defrag, khugepaged_defrag), strict=True):
        path.write_text(value)
    return {path: path.read_bytes() for path in TUNABLES}


def snapshot() -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in TUNABLES}


@pytest.mark.skipif(not NO_SYSTEMD_PID1 or not NO_GRUB, reason="pins the messages of a machine without systemd/grub")
def test_apply_writes_thp_reports_before_after_and_a_second_run_changes_nothing(thp_run, clean_thp):
    set_thp("always", "defer", "0")

    first = thp_run(APPLY, "--diff", thp_persist=["systemd", "kernel_cmdline"])

    assert first.proc.returncode == 0, first.output
    assert (selected(ENABLED), selected(DEFRAG), selected(KHUGEPAGED_DEFRAG)) == ("madvise", "never", "1")
    assert first.recap["node1"]["failed"] == 0 and first.recap["node1"]["changed"] > 0
    assert f"--- before: {ENABLED}\n+++ after: {ENABLED}\n@@ -1 +1 @@\n-always\n+madvise\n" in first.output
    result = first.results["node1"]
    assert result["settings"] == [
        {
            "name": "thp_enabled",
            "path": str(ENABLED),
            "desired": "madvise",
            "before": "always",
            "after": "madvise",
            "changed": True,
        },
        {
            "name": "thp_defrag",
            "path": str(DEFRAG),
            "desired": "never",
            "before": "defer",
            "after": "never",
            "changed": True,
        },
        {
            "name": "thp_khugepaged_defrag",
            "path": str(KHUGEPAGED_DEFRAG),
            "desired": "1",
            "before": "0",
            "after": "1",
            "changed": True,
        },
    ]
    assert result["persistence"] == [
        {
            "method": "systemd",
            "state": "installed",
            "path": str(UNIT),
            "detail": "unit written and enabled by the sysinit.target.wants symlink; " + SYSTEMD_DETAIL_NOT_PID1,
        },
        {
            "method": "kernel_cmdline",
            "state": "unavailable",
            "path": "/etc/default/grub",
            "detail": "no bootloader config found: /etc/default/grub does not exist; only GRUB is managed",
        },
    ]
    assert "kernel_cmdline: unavailable (no bootloader config found: /etc/default/grub does not exist; " in first.output
    assert (result["verified"], result["reboot_required"], result["problems"]) == (True, False, [])
    assert UNIT_LINK.is_symlink() and os.readlink(UNIT_LINK) == str(UNIT)
    unit = UNIT.read_text()
    assert f"ExecStart=/bin/sh -c 'echo madvise > {ENABLED}'\n" in unit
    assert f"ExecStart=/bin/sh -c 'echo never > {DEFRAG}'\n" in unit
    assert f"ExecStart=/bin/sh -c 'echo 1 > {KHUGEPAGED_DEFRAG}'\n" in unit
    analyze = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    assert analyze.returncode == 0, analyze.stderr

    second = thp_run(APPLY, thp_persist=["systemd", "kernel_cmdline"])

    assert second.proc.returncode == 0, second.output
    assert second.recap["node1"]["changed"] == 0, second.output
    assert [s["changed"] for s in second.results["node1"]["settings"]] == [False, False, False]
    assert second.results["node1"]["persistence"][0]["state"] == "unchanged"


def test_check_mode_reports_the_change_and_leaves_sysfs_byte_identical(thp_run, clean_thp):
    before = set_thp("always", "defer", "0")

    run = thp_run(APPLY, "--check", "--diff")

    assert run.proc.returncode == 0, run.output
    assert snapshot() == before
    assert not UNIT.exists() and not UNIT_LINK.exists() and not thp_run.state_file.exists()
    result = run.results["node1"]
    assert [(s["name"], s["before"], s["after"], s["changed"]) for s in result["settings"]] == [
        ("thp_enabled", "always", "madvise", True),
        ("thp_defrag", "defer", "never", True),
        ("thp_khugepaged_defrag", "0", "1", True),
    ]
    assert result["persistence"] == [
        {
            "method": "systemd",
            "state": "installed",
            "path": str(UNIT),
            "detail": "unit would be written and enabled by the sysinit.target.wants symlink "
            "(check mode: nothing was written)",
        },
    ]
    assert (result["verified"], result["check_mode"]) == (False, True)
    assert "-always\n+madvise\n" in run.output
    assert run.recap["node1"]["changed"] > 0


# One kind of bad input per host, all in one run: each host's failure names its own variables, and nothing changes.
BAD_INPUT = {
    # Refused by the role's argument_specs, every bad value named in the one message.
    "node1": {"thp_enabled": "sometimes", "thp_defrag": "compact", "thp_khugepaged_defrag": 2,
              "thp_persist": ["systemd", "grub"]},
    # Refused by the role's own check (what argument_specs cannot see), every variable in the one failure.
    "node2": {"thp_khugepaged_defrag": True, "thp_persist": "kernel_cmdline", "thp_state_dir": "state"},
}
# YAML 1.1's `no`, as an operator writes it in host_vars: a boolean, not the word "never".
NODE3_HOST_VARS = "thp_enabled: no\n"


def test_bad_input_is_refused_per_host_naming_every_variable_before_anything_changes(ssh_fleet, clean_thp, tmp_path):
    before = set_thp("always", "defer", "0")
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml")
    doc = yaml.safe_load(inventory.read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    for name in ("node1", "node2", "node3"):
        hosts[name].update({"thp_state_dir": str(tmp_path / "thp-state" / name), **BAD_INPUT.get(name, {})})
    del hosts["dead1"]
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "node3.yml").write_text(NODE3_HOST_VARS)

    run = Run(run_playbook(APPLY, inventory, env=ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json",
                                                             ANSIBLE_CALLBACK_FORMAT_PRETTY="false")))

    assert run.proc.returncode == 2, run.output
    assert sorted(run.failures) == ["node1", "node2", "node3"], run.output
    for message in ("value of thp_enabled must be one of: always, madvise, never, got: sometimes",
                    "value of thp_defrag must be one of: always, defer, defer+madvise, madvise, never, got: compact",
                    "value of thp_khugepaged_defrag must be one of: 0, 1, got: 2",
                    "value of thp_persist must be one or more of: systemd, kernel_cmdline, tuned, auto. "
                    "Got no match for: grub"):
        assert message in run.failures["node1"], run.failures["node1"]
    assert run.failures["node2"] == (
        "node2: THP variables rejected, nothing was changed: "
        "thp_khugepaged_defrag: 'True' is a YAML boolean, not a number; allowed: 0, 1; "
        "thp_persist: 'kernel_cmdline' is not a list; write a list of systemd, kernel_cmdline, tuned, auto, "
        "e.g. [systemd]; "
        "thp_state_dir: 'state' is not an absolute path"
    )
    assert "value of thp_enabled must be one of: always, madvise, never, got: False" in run.failures["node3"]
    assert snapshot() == before
    assert not UNIT.exists() and not (tmp_path / "thp-state").exists()


def test_record_keeps_the_first_replaced_values_and_rollback_restores_exact_bytes(thp_run, clean_thp):
    original = set_thp("always", "defer", "0")

    assert thp_run(APPLY).proc.returncode == 0
    recorded = json.loads(thp_run.state_file.read_text())
    assert {name: entry["value"] for name, entry in recorded["settings"].items()} == {
        "thp_enabled": "always",
        "thp_defrag": "defer",
        "thp_khugepaged_defrag": "0",
    }

    # A later run with other values must not record Preflight's own madvise/never as "the original".
    later = thp_run(APPLY, thp_enabled="never", thp_defrag="defer+madvise")
    assert later.proc.returncode == 0, later.output
    assert (selected(ENABLED), selected(DEFRAG)) == ("never", "defer+madvise")
    assert json.loads(thp_run.state_file.read_text()) == recorded

    rollback = thp_run(ROLLBACK, "--tags", "thp", "--diff")

    assert rollback.proc.returncode == 0, rollback.output
    assert snapshot() == original
    assert not UNIT.exists() and not UNIT_LINK.is_symlink() and not thp_run.state_file.exists()
    assert '"thp_enabled: never -> always"' in rollback.output

    again = thp_run(ROLLBACK, "--tags", "thp")
    assert again.proc.returncode == 0 and again.recap["node1"]["changed"] == 0, again.output
    assert f"nothing recorded at {thp_run.state_file}: no THP values to restore" in again.output
    assert snapshot() == original


def test_tuned_profile_and_other_boot_writers_of_thp_are_reported_as_conflicts(thp_run, clean_thp, tmp_path):
    # Real files where tuned and systemd-tmpfiles look (no tuned daemon runs: persisting through a running tuned is
    # tests/integration/test_thp_tuned.py). The machine's own /etc/tuned and tuned.service link are put back after.
    tmpfiles = Path("/etc/tmpfiles.d/zz-preflight-test-thp.conf")
    tuned_link = Path("/etc/systemd/system/multi-user.target.wants/tuned.service")
    link_was = os.readlink(tuned_link) if tuned_link.is_symlink() else None
    tuned, saved = Path("/etc/tuned"), tmp_path / "etc-tuned"
    if tuned.exists():
        shutil.copytree(tuned, saved, symlinks=True)
        shutil.rmtree(tuned)
    try:
        tmpfiles.write_text(f"w {ENABLED} - - - - always\n")
        (tuned / "preflight-test-base").mkdir(parents=True)
        (tuned / "preflight-test-base" / "tuned.conf").write_text("[vm]\ntransparent_hugepages=always\n")
        (tuned / "preflight-test").mkdir()
        (tuned / "preflight-test" / "tuned.conf").write_text("[main]\ninclude=preflight-test-base\n[cpu]\n")
        (tuned / "active_profile").write_text("preflight-test\n")
        tuned_link.parent.mkdir(parents=True, exist_ok=True)
        tuned_link.unlink(missing_ok=True)
        tuned_link.symlink_to("/lib/systemd/system/tuned.service")

        run = thp_run(APPLY, "--check")
    finally:
        tmpfiles.unlink(missing_ok=True)
        tuned_link.unlink(missing_ok=True)
        if link_was is not None:
            tuned_link.symlink_to(link_was)
        shutil.rmtree(tuned, ignore_errors=True)
        if saved.exists():
            shutil.copytree(saved, tuned, symlinks=True)

    assert run.proc.returncode == 0, run.output
    assert run.results["node1"]["conflicts"] == [
        "tuned profile 'preflight-test' sets transparent_hugepages=always (/etc/tuned/preflight-test-base/tuned.conf) "
        "and tuned is enabled: it applies that at every start and overrides thp_enabled=madvise; set it in a custom "
        "tuned profile or disable tuned",
        f"{tmpfiles} writes Transparent Huge Pages settings too: at boot it may override thp_enabled=madvise "
        "and thp_defrag=never; remove it or make it agree",
    ]


def test_role_tunes_every_live_host_of_the_fleet_and_marks_the_dead_one_unreachable(thp_run, clean_thp, ssh_fleet):
    set_thp("always", "defer", "0")

    run = thp_run(APPLY, limit="")

    for host in ssh_fleet.hostnames():
        assert run.recap[host]["failed"] == 0 and run.recap[host]["unreachable"] == 0, run.output
        assert run.results[host]["verified"] is True
    assert run.recap["dead1"]["unreachable"] == 1
    assert (selected(ENABLED), selected(DEFRAG), selected(KHUGEPAGED_DEFRAG)) == ("madvise", "never", "1")


# --- GRUB: a fake bootloader (there is none on this machine) ------------------------------------------------
GRUB_DEFAULTS = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
export GRUB_CMDLINE_LINUX='console=ttyS0 transparent_hugepage=never' # serial console
"""


@pytest.fixture
def fake_bootloader(tmp_path):
    """A GRUB defaults file in the test's tmp dir and the FAKE update-grub of tests/fake_bootloader.py."""
    with fake_update_grub(tmp_path) as calls:
        defaults = tmp_path / "grub"
        defaults.write_text(GRUB_DEFAULTS)
        defaults.chmod(0o600)
        yield defaults, calls


def sourced_words(path: Path, variable: str = "GRUB_CMDLINE_LINUX") -> list[str]:
    subprocess.run(["bash", "-n", str(path)], check=True)
    out = subprocess.run(["bash", "-c", f'. "{path}"; printf "%s" "${variable}"'], capture_output=True, text=True)
    return out.stdout.split()


def test_kernel_cmdline_changes_only_its_option_and_rollback_keeps_the_operator_s_later_edits(
    thp_run, clean_thp, fake_bootloader
):
    defaults, calls = fake_bootloader
    set_thp("always", "defer", "0")
    grub_vars = {"thp_persist": ["kernel_cmdline"], "__thp_grub_defaults_file": str(defaults)}

    check = thp_run(APPLY, "--check", "--diff", **grub_vars)
    assert check.proc.returncode == 0, check.output
    assert defaults.read_text() == GRUB_DEFAULTS and not calls.exists()
    assert "-export GRUB_CMDLINE_LINUX='console=ttyS0 transparent_hugepage=never' # serial console" in check.output
    assert "+export GRUB_CMDLINE_LINUX='console=ttyS0 transparent_hugepage=madvise' # serial console" in check.output

    first = thp_run(APPLY, **grub_vars)
    assert first.proc.returncode == 0, first.output
    assert defaults.read_text() == GRUB_DEFAULTS.replace("transparent_hugepage=never", "transparent_hugepage=madvise")
    assert sourced_words(defaults) == ["console=ttyS0", "transparent_hugepage=madvise"]
    assert oct(defaults.stat().st_mode & 0o777) == "0o600" and calls.read_text() == "run\n"
    assert json.loads(thp_run.state_file.read_text())["kernel_cmdline"]["replaced"] == ["transparent_hugepage=never"]
    again = thp_run(APPLY, **grub_vars)
    assert again.proc.returncode == 0 and again.recap["node1"]["changed"] == 0, again.output

    # The operator adds a kernel option on the same line and a comment line after Preflight's run.
    edited = defaults.read_text().replace("madvise'", "madvise nosmt'") + "# operator: nosmt for the audit\n"
    defaults.write_text(edited)
    rollback = thp_run(ROLLBACK, "--tags", "thp")
    assert rollback.proc.returncode == 0, rollback.output
    assert defaults.read_text() == GRUB_DEFAULTS.replace("never'", "never nosmt'") + "# operator: nosmt for the audit\n"
    assert not thp_run.state_file.exists() and calls.read_text() == "run\nrun\n"


def test_rollback_stops_and_keeps_the_record_when_the_file_no_longer_holds_preflight_s_option(
    thp_run, clean_thp, fake_bootloader
):
    defaults, _ = fake_bootloader
    grub_vars = {"thp_persist": ["kernel_cmdline"], "__thp_grub_defaults_file": str(defaults)}
    assert thp_run(APPLY, **grub_vars).proc.returncode == 0
    changed = defaults.read_text().replace("transparent_hugepage=madvise", "transparent_hugepage=always")
    defaults.write_text(changed)

    rollback = thp_run(ROLLBACK, "--tags", "thp")

    assert rollback.proc.returncode != 0
    assert rollback.failures["node1"] == (
        f"THP rollback stopped before changing anything, the record {thp_run.state_file} is kept: {defaults}: "
        "GRUB_CMDLINE_LINUX no longer holds what Preflight wrote (transparent_hugepage=madvise); it now has "
        "transparent_hugepage=always: the record is kept, put the options back as they were or edit the file by "
        "hand and remove the record"
    )
    assert defaults.read_text() == changed and thp_run.state_file.exists()


def test_a_grub_line_that_cannot_be_read_with_certainty_is_refused_before_anything_changes(
    thp_run, clean_thp, fake_bootloader
):
    defaults, calls = fake_bootloader
    unreadable = GRUB_DEFAULTS + 'GRUB_CMDLINE_LINUX="$(cat /etc/kernel/cmdline)"\n'
    defaults.write_text(unreadable)
    before = set_thp("always", "defer", "0")

    run = thp_run(APPLY, thp_persist=["kernel_cmdline"], __thp_grub_defaults_file=str(defaults))

    assert run.proc.returncode != 0
    assert run.failures["node1"] == (
        f"node1: THP variables rejected, nothing was changed: thp_persist: kernel_cmdline cannot edit {defaults}: "
        f"{defaults} line 6: command substitution $(...); Preflight does not edit a line it cannot read with "
        'certainty (nothing was written): rewrite it as NAME="words" or make the change by hand'
    )
    assert defaults.read_text() == unreadable and snapshot() == before and not calls.exists()

