"""THP persisted through tuned (core/thp_tuned.py): when tuned counts as active, what auto picks, the profile as
tuned reads it with only Preflight's keys changed, the record, and a rollback that restores tuned's files byte
for byte or refuses, naming the file. Node files are written under a temporary root (core/tree.py)."""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

tuned = module_util("preflight.core.thp_tuned")
thp = module_util("preflight.core.thp")
Tree = module_util("preflight.core.tree").Tree

THP = "/sys/kernel/mm/transparent_hugepage"
PLANNED = [
    {"name": "thp_enabled", "path": f"{THP}/enabled", "desired": "madvise", "current": "always"},
    {"name": "thp_defrag", "path": f"{THP}/defrag", "desired": "never", "current": "madvise"},
    {"name": "thp_khugepaged_defrag", "path": f"{THP}/khugepaged/defrag", "desired": "1", "current": "1"},
    {"name": "thp_sizes[64kB]", "path": f"{THP}/hugepages-64kB/enabled", "desired": "always", "current": "never"},
]


def node(tmp_path, files: dict[str, str], links: dict[str, str] | None = None):
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, newline="")
    for path, to in (links or {}).items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(to)
    return Tree(str(tmp_path))


RUNNING = {"/etc/tuned/tuned-main.conf": "daemon = 1\n", "/run/tuned/tuned.pid": "4242\n",
           "/proc/4242/cmdline": "/usr/bin/python3\0-Es\0/usr/sbin/tuned\0--daemon\0"}
ENABLED = {"/etc/systemd/system/multi-user.target.wants/tuned.service": "/lib/systemd/system/tuned.service"}


@pytest.mark.parametrize(("files", "links", "active", "reason"), [
    ({**RUNNING, "/etc/tuned/active_profile": "virtual-guest\n"}, {}, True,
     "tuned is active: the daemon runs (pid 4242) with profile 'virtual-guest' (/etc/tuned/active_profile)"),
    ({"/etc/tuned/tuned-main.conf": "", "/etc/tuned/active_profile": "throughput-performance\n"}, ENABLED, True,
     "tuned is active: tuned.service is enabled at boot with profile 'throughput-performance' "
     "(/etc/tuned/active_profile)"),
    ({"/etc/tuned/tuned-main.conf": "", "/etc/tuned/active_profile": ""}, ENABLED, False,
     "tuned is installed but has no active profile (/etc/tuned/active_profile is empty or missing)"),
    ({"/etc/tuned/tuned-main.conf": "", "/etc/tuned/active_profile": "balanced\n", "/run/tuned/tuned.pid": "99\n",
      "/proc/99/cmdline": "sleep\0"}, {}, False,
     "tuned is installed but neither runs (no live pid in /run/tuned/tuned.pid) nor is enabled at boot"),
    ({}, {}, False, "tuned is not installed here (no /etc/tuned/tuned-main.conf)"),
])
def test_tuned_is_active_when_it_runs_or_starts_at_boot_with_a_profile(tmp_path, files, links, active, reason):
    found = tuned.state(node(tmp_path, files, links))
    assert (found["active"], found["reason"]) == (active, reason)


def test_auto_picks_tuned_where_tuned_is_active_and_the_unit_otherwise():
    assert tuned.resolve(["auto"], {"active": True}) == ["tuned"]
    assert tuned.resolve(["auto", "kernel_cmdline"], {"active": False}) == ["systemd", "kernel_cmdline"]
    assert tuned.resolve(["systemd", "auto"], {"active": False}) == ["systemd"]
    assert tuned.resolve("auto", {"active": True}) == []  # not a list: thp.validate names it


def test_tuned_asked_for_where_tuned_is_not_active_is_refused_with_the_allowed_methods():
    state = {"active": False, "reason": "tuned is not installed here (no /etc/tuned/tuned-main.conf)"}
    assert tuned.validate(["tuned"], state) == [
        "thp_persist: tuned cannot persist THP on this host, tuned is not installed here (no "
        "/etc/tuned/tuned-main.conf); allowed here: systemd, kernel_cmdline, auto (auto picks tuned where tuned "
        "is active, the systemd unit otherwise)"]
    assert tuned.validate(["auto"], state) == [] and tuned.validate(["tuned"], {"active": True}) == []
    variables = {"thp_enabled": "madvise", "thp_defrag": "never", "thp_khugepaged_defrag": 1,
                 "thp_persist": ["tuned", "auto"], "thp_state_dir": "/var/lib/preflight/thp"}
    settings = {name: {"path": "", "choices": ["always", "madvise", "never"], "current": "never"}
                for name in ("thp_enabled", "thp_defrag")}
    assert thp.validate(variables, settings) == []  # both are methods of the catalog


def test_a_new_profile_includes_the_previous_one_and_sets_enabled_by_vm_and_the_rest_by_sysfs():
    assert tuned.render(None, ["virtual-guest"], PLANNED) == (
        tuned.HEADER
        + "\n[main]\nsummary=Preflight: Transparent Huge Pages on top of virtual-guest\ninclude=virtual-guest\n\n"
        "[vm]\ntransparent_hugepages=madvise\n\n"
        f"[sysfs]\n{THP}/defrag=never\n{THP}/khugepaged/defrag=1\n{THP}/hugepages-64kB/enabled=always\n"
    )


def test_an_edited_profile_keeps_every_key_but_preflight_s_and_drops_knobs_no_longer_planned():
    first = tuned.render(None, ["balanced"], PLANNED)
    edited = first.replace("[vm]\n", "[vm]\n# the operator's\ndirty_ratio = 10\n") + "\n[cpu]\ngovernor=performance\n"
    again = tuned.render(edited, ["balanced"], PLANNED[:3] + [{**PLANNED[0], "desired": "never"}][:0])
    assert "# the operator's\ndirty_ratio = 10\n" in again and "[cpu]\ngovernor=performance\n" in again
    assert "hugepages-64kB" not in again  # Preflight's knob of the earlier run, not planned now
    assert tuned.render(again, ["balanced"], PLANNED[:3]) == again  # a second run changes nothing


@pytest.mark.parametrize(("text", "message"), [
    ("dirty_ratio=10\n", "/etc/tuned/preflight/tuned.conf line 1: 'dirty_ratio=10' is not a '[section]' or "
                         "'key = value' line Preflight can read"),
    ("[vm]\na=1\n[vm]\n", "/etc/tuned/preflight/tuned.conf line 3: section [vm] appears twice; tuned would merge "
                          "it, Preflight refuses"),
    ("[vm]\na=1\na=2\n", "/etc/tuned/preflight/tuned.conf line 3: a is set twice in [vm]"),
    ("[vm]\na=1\n  b=2\n", "/etc/tuned/preflight/tuned.conf line 3: '  b=2' is indented, so tuned reads it as "
                           "part of the value above; Preflight refuses"),
    ("[main]\nsummary='''two\n", "/etc/tuned/preflight/tuned.conf line 2: 'summary=\'\'\'two' is not a '[section]' "
                                 "or 'key = value' line Preflight can read"),
])
def test_a_profile_preflight_cannot_read_with_certainty_is_refused_naming_file_and_line(text, message):
    with pytest.raises(tuned.TunedError) as err:
        tuned.render(text, [], PLANNED)
    assert str(err.value) == message


def test_the_plan_includes_what_was_active_before_preflight_and_reloads_only_a_running_daemon(tmp_path):
    state = tuned.state(node(tmp_path, {**RUNNING, "/etc/tuned/active_profile": "virtual-guest\n",
                                        "/etc/tuned/profile_mode": "auto\n"}))
    planned = tuned.plan(state, None, PLANNED)
    assert planned["includes"] == ["virtual-guest"] and planned["reload"] and planned["pid"] == 4242
    assert planned["changed"] == {"profile": True, "active_profile": True, "profile_mode": True}
    # Second run: tuned's files say 'preflight', the record says what was active before.
    recorded = tuned.record(None, state, planned, "2026-01-01T00:00:00Z")
    assert (recorded["active_profile"], recorded["profile_mode"]) == ("virtual-guest\n", "auto\n")
    state = {**state, "active_profile": "preflight\n", "profile_mode": "manual\n", "profile": planned["content"],
             "pid": None}
    again = tuned.plan(state, recorded, PLANNED)
    assert again["includes"] == ["virtual-guest"] and not any(again["changed"].values()) and not again["reload"]
    assert tuned.record(recorded, state, again, "later") == recorded  # nothing new to record


def test_rollback_restores_tuned_s_files_byte_for_byte_and_removes_a_file_that_was_not_there(tmp_path):
    kept = {"active_profile": "virtual-guest\n", "profile_mode": None, "written": "[main]\n"}
    tree = node(tmp_path, {"/etc/tuned/active_profile": "preflight\n", "/etc/tuned/profile_mode": "manual\n",
                           "/etc/tuned/preflight/tuned.conf": "[main]\n"})
    planned = tuned.rollback_plan(tree, kept, RECORDED)
    assert planned["files"] == [
        {"path": "/etc/tuned/active_profile", "content": "virtual-guest\n", "absent": False, "changed": True},
        {"path": "/etc/tuned/profile_mode", "content": None, "absent": True, "changed": True}]
    assert planned["remove_profile"] and not planned["reload"]
    assert tuned.rollback_plan(tree, None, RECORDED)["files"] == []


def test_rollback_refuses_naming_the_file_when_it_no_longer_holds_what_preflight_wrote(tmp_path):
    kept = {"active_profile": "virtual-guest\n", "profile_mode": "manual\n", "written": "[main]\n"}
    edited = node(tmp_path / "a", {"/etc/tuned/active_profile": "preflight\n",
                                   "/etc/tuned/preflight/tuned.conf": "[main]\n[vm]\nx=1\n"})
    with pytest.raises(tuned.TunedError, match=r"^/etc/tuned/preflight/tuned.conf no longer holds what Preflight "
                                               r"wrote \(it was edited since\)"):
        tuned.rollback_plan(edited, kept, RECORDED)
    switched = node(tmp_path / "b", {"/etc/tuned/active_profile": "powersave\n",
                                     "/etc/tuned/preflight/tuned.conf": "[main]\n"})
    with pytest.raises(tuned.TunedError) as err:
        tuned.rollback_plan(switched, kept, RECORDED)
    assert str(err.value).startswith("/etc/tuned/active_profile no longer holds what Preflight wrote "
                                     "('preflight\\n') nor what was there before ('virtual-guest\\n') but "
                                     "'powersave\\n'")


def test_the_outcome_says_where_the_values_live_and_that_check_mode_wrote_nothing():
    planned = {"includes": ["virtual-guest"], "pid": 7}
    written = {"profile": {"changed": True}, "active": {"changed": True}}
    assert tuned.outcome(planned, written, {"changed": True, "rc": 0}, False) == {
        "state": "installed", "detail": "profile /etc/tuned/preflight/tuned.conf (includes virtual-guest) active in "
        "/etc/tuned/active_profile; the running daemon (pid 7) reloaded it"}
    assert tuned.outcome(planned, {"profile": {"changed": True}}, {}, True) == {
        "state": "installed", "detail": "would be profile /etc/tuned/preflight/tuned.conf (includes virtual-guest) "
        "active in /etc/tuned/active_profile (check mode: nothing was written)"}
    failed = tuned.outcome(planned, written, {"rc": 1, "stderr": "no such process"}, False)
    assert failed["state"] == "failed" and failed["detail"].endswith("(rc 1): no such process")


# What rollback restores (thp.rollback_plan's settings): the values before Preflight.
RECORDED = [{"name": "enabled", "path": "/sys/kernel/mm/transparent_hugepage/enabled", "value": "madvise"},
            {"name": "khugepaged_defrag", "path": "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
             "value": "1"}]


def test_a_running_daemon_applies_the_profile_before_preflight_writes_and_unapplies_it_before_the_check(tmp_path):
    """tuned keeps the value a knob had when it applied a profile and writes it back when it unapplies it: the
    wait lists make the role let the daemon go first, so what it keeps is the node's own value, not Preflight's."""
    state = {**tuned.state(node(tmp_path / "n", {"/etc/tuned/active_profile": "virtual-guest\n"})), "pid": 7}
    planned = tuned.plan(state, None, PLANNED)
    assert planned["reload"]
    assert [(w["name"], w["value"]) for w in planned["wait"]] == [(p["name"], p["desired"]) for p in PLANNED]
    assert tuned.plan({**state, "pid": None}, None, PLANNED)["wait"] == []  # tuned applies it at its start

    kept = {"active_profile": "virtual-guest\n", "profile_mode": None, "written": "[main]\n"}
    running = node(tmp_path / "r", {"/etc/tuned/active_profile": "preflight\n", "/etc/tuned/profile_mode": "manual\n",
                                    "/etc/tuned/preflight/tuned.conf": "[main]\n", "/run/tuned/tuned.pid": "4242\n",
                                    "/proc/4242/cmdline": "/usr/bin/python3\0/usr/sbin/tuned\0"})
    back = tuned.rollback_plan(running, kept, RECORDED)
    assert back["pid"] == 4242 and back["reload"]
    assert [(w["name"], w["value"]) for w in back["wait"]] == [("enabled", "madvise"), ("khugepaged_defrag", "1")]
    assert tuned.rollback_plan(node(tmp_path / "s", {"/etc/tuned/active_profile": "preflight\n",
                                                     "/etc/tuned/preflight/tuned.conf": "[main]\n"}),
                               kept, RECORDED)["wait"] == []  # no daemon: the role's own writes are the last


def test_the_wait_pattern_matches_a_tunable_exactly_when_it_holds_the_value():
    import re

    from tests.moduleutils import module_util

    sysfs = module_util("preflight.core.sysfs")
    for value, text, holds in [("madvise", "always [madvise] never", True), ("never", "always [madvise] never", False),
                               ("defer+madvise", "always defer [defer+madvise] madvise never", True),
                               ("defer", "always defer [defer+madvise] madvise never", False),
                               ("1", "1\n", True), ("1", "10\n", False), ("0", "1\n", False)]:
        assert bool(re.search(sysfs.holds_pattern(value), text, re.MULTILINE)) is holds, (value, text)


def test_where_the_kernel_command_line_sets_thp_tuned_leaves_enabled_alone_and_nobody_waits_for_it(tmp_path):
    """tuned's vm plugin ignores its transparent_hugepages= when the running kernel got transparent_hugepage=: the
    role writes `enabled` itself, so the daemon is waited for only on the knobs it sets."""
    files = {"/etc/tuned/active_profile": "virtual-guest\n",
             "/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 transparent_hugepage=madvise quiet\n"}
    state = {**tuned.state(node(tmp_path / "n", files)), "pid": 7}
    assert state["cmdline_sets_thp"]
    assert [w["name"] for w in tuned.plan(state, None, PLANNED)["wait"]] == [p["name"] for p in PLANNED[1:]]

    kept = {"active_profile": "virtual-guest\n", "profile_mode": None, "written": "[main]\n"}
    running = node(tmp_path / "r", {"/etc/tuned/active_profile": "preflight\n",
                                    "/etc/tuned/preflight/tuned.conf": "[main]\n", "/run/tuned/tuned.pid": "4242\n",
                                    "/proc/4242/cmdline": "/usr/sbin/tuned\0", "/proc/cmdline": files["/proc/cmdline"]})
    assert [w["name"] for w in tuned.rollback_plan(running, kept, RECORDED)["wait"]] == ["khugepaged_defrag"]
