"""module_utils/preflight/core/thp.py: the thp role's decisions, called directly (they were Jinja in the
role's tasks). The messages are the ones tests/integration/test_thp_role.py asserts over SSH."""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

thp = module_util("preflight.core.thp")
catalog = module_util("preflight.core.catalog")

BASE = "/sys/kernel/mm/transparent_hugepage"
SETTINGS = {
    "thp_enabled": {"path": f"{BASE}/enabled", "current": "always", "choices": ["always", "madvise", "never"]},
    "thp_defrag": {"path": f"{BASE}/defrag", "current": "defer",
                   "choices": ["always", "defer", "defer+madvise", "madvise", "never"]},
    "thp_khugepaged_defrag": {"path": f"{BASE}/khugepaged/defrag", "current": "0", "choices": ["0", "1"]},
}
GOOD = dict(catalog.THP_DEFAULTS)
NO_GRUB = {"kind": None, "reason": "no bootloader config found: /etc/default/grub does not exist; only GRUB is managed",
           "error": None, "defaults_file": "/etc/default/grub", "regenerate": None, "mode": None, "content": None,
           "changed": False, "edit": None, "option": None}
# What core/grub.py apply records for 'GRUB_CMDLINE_LINUX=""' -> '"transparent_hugepage=madvise"'.
EDIT = {"file": "/etc/default/grub", "variable": "GRUB_CMDLINE_LINUX", "line": 1,
        "added": ["transparent_hugepage=madvise"], "replaced": [], "requoted_from": None, "appended_line": None}
GRUB = {"kind": "grub", "reason": None, "error": None, "defaults_file": "/etc/default/grub",
        "regenerate": ["/usr/sbin/update-grub"], "mode": "0644",
        "content": 'GRUB_CMDLINE_LINUX="transparent_hugepage=madvise"\n', "changed": True, "edit": EDIT, "option": None}
SKIPPED = {"changed": False, "skipped": True}


def test_the_defaults_are_valid():
    assert thp.validate(GOOD, SETTINGS) == []


def test_every_invalid_variable_is_reported_in_one_list_with_the_role_s_messages():
    bad = {**GOOD, "thp_khugepaged_defrag": True, "thp_persist": "kernel_cmdline", "thp_state_dir": "state"}
    assert thp.validate(bad, SETTINGS) == [
        "thp_khugepaged_defrag: 'True' is a YAML boolean, not a number; allowed: 0, 1",
        "thp_persist: 'kernel_cmdline' is not a list; write a list of systemd, kernel_cmdline, tuned, auto, "
        "e.g. [systemd]",
        "thp_state_dir: 'state' is not an absolute path",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"thp_enabled": "sometimes"}, "thp_enabled: 'sometimes' is not offered by this kernel "
         f"({BASE}/enabled); allowed: always, madvise, never"),
        ({"thp_khugepaged_defrag": 2}, "thp_khugepaged_defrag: '2' is not allowed; allowed: 0, 1"),
        ({"thp_persist": ["systemd", "grub"]},
         "thp_persist: 'grub' is not a persistence method; allowed items: systemd, kernel_cmdline, tuned, auto"),
        ({"thp_persist": None},
         "thp_persist: 'None' is not a list; write a list of systemd, kernel_cmdline, tuned, auto, e.g. [systemd]"),
        ({"thp_state_dir": 5}, "thp_state_dir: '5' is not an absolute path"),
    ],
)
def test_one_invalid_variable_gives_its_message(change, message):
    assert thp.validate({**GOOD, **change}, SETTINGS) == [message]


def test_a_word_this_kernel_does_not_list_is_rejected_even_when_the_role_knows_it():
    settings = {**SETTINGS, "thp_defrag": {**SETTINGS["thp_defrag"], "choices": ["always", "madvise", "never"]}}
    assert thp.validate({**GOOD, "thp_defrag": "defer+madvise"}, settings) == [
        f"thp_defrag: 'defer+madvise' is not offered by this kernel ({BASE}/defrag); allowed: always, madvise, never"
    ]


def test_plan_is_three_strings_in_order():
    planned = thp.plan({**GOOD, "thp_khugepaged_defrag": "1"}, SETTINGS)
    assert [(p["name"], p["desired"], p["current"]) for p in planned] == [
        ("thp_enabled", "madvise", "always"),
        ("thp_defrag", "never", "defer"),
        ("thp_khugepaged_defrag", "1", "0"),
    ]


def test_record_keeps_the_first_replaced_value_and_carries_the_catalog_schema_version():
    planned = thp.plan(GOOD, SETTINGS)
    first = thp.record({}, planned, ["systemd"], NO_GRUB, "T1")
    assert first["changes"] == 3
    assert first["state"]["schema_version"] == catalog.ROLLBACK_RECORD_SCHEMA_VERSION
    assert first["state"]["settings"]["thp_enabled"] == {"path": f"{BASE}/enabled", "value": "always",
                                                         "recorded_at": "T1"}
    # A later run replaces Preflight's own values: nothing new is recorded.
    later = [{**p, "current": p["desired"], "desired": "never"} for p in planned]
    assert thp.record(first["state"], later, ["systemd"], NO_GRUB, "T2") == {"state": first["state"], "changes": 0}


def test_record_keeps_exactly_what_the_grub_edit_adds_and_replaces_only_when_the_file_changes():
    planned = [{**p, "current": p["desired"]} for p in thp.plan(GOOD, SETTINGS)]
    made = thp.record({}, planned, ["kernel_cmdline"], GRUB, "T")
    assert made["changes"] == 1
    assert made["state"]["kernel_cmdline"] == {**EDIT, "recorded_at": "T"}
    assert thp.record(made["state"], planned, ["kernel_cmdline"], GRUB, "T2")["changes"] == 0
    assert thp.record({}, planned, ["systemd"], GRUB, "T")["changes"] == 0
    unchanged = {**GRUB, "changed": False, "edit": None}
    assert thp.record({}, planned, ["kernel_cmdline"], unchanged, "T")["changes"] == 0


def test_a_later_run_with_another_value_keeps_what_preflight_replaced_first():
    planned = [{**p, "current": p["desired"]} for p in thp.plan(GOOD, SETTINGS)]
    first = {**EDIT, "added": ["transparent_hugepage=madvise"], "replaced": ["transparent_hugepage=always"]}
    state = thp.record({}, planned, ["kernel_cmdline"], {**GRUB, "edit": first}, "T")["state"]
    later = {**EDIT, "added": ["transparent_hugepage=never"], "replaced": ["transparent_hugepage=madvise"]}
    made = thp.record(state, planned, ["kernel_cmdline"], {**GRUB, "edit": later}, "T2")
    assert made["changes"] == 1
    assert made["state"]["kernel_cmdline"] == {**first, "added": ["transparent_hugepage=never"], "recorded_at": "T"}


def unit(written=SKIPPED, link=SKIPPED, start=SKIPPED):
    return {"name": "preflight-thp.service", "path": "/etc/systemd/system/preflight-thp.service",
            "wanted_by": "sysinit.target", "written": written, "link": link, "start": start}


def inspected(running=False, installed=True, boot=NO_GRUB, booted=None):
    return {"systemd": {"running": running, "installed": installed}, "bootloader": boot, "booted_option": booted,
            "conflicts": []}


def test_systemd_without_pid1_is_installed_and_says_why_it_was_not_started():
    out = thp.persistence(["systemd", "kernel_cmdline"], inspected(), "madvise", unit(written={"changed": True}),
                          {"edit": SKIPPED, "regenerate": SKIPPED}, check_mode=False)
    assert out["persistence"] == [
        {"method": "systemd", "path": "/etc/systemd/system/preflight-thp.service", "state": "installed",
         "detail": "unit written and enabled by the sysinit.target.wants symlink" + thp.NOT_PID1},
        {"method": "kernel_cmdline", "path": "/etc/default/grub", "state": "unavailable", "detail": NO_GRUB["reason"]},
    ]
    assert out["reboot_required"] is False
    assert out["lines"][1].startswith("kernel_cmdline: unavailable (no bootloader config found")


def test_check_mode_says_nothing_was_written_and_running_systemd_counts_a_start_as_a_change():
    check = thp.systemd_outcome({"running": True, "installed": True}, unit(link={"changed": True}), check_mode=True)
    assert check == {"state": "installed", "detail": "unit would be written and enabled by the sysinit.target.wants "
                     "symlink (check mode: nothing was written)"}
    started = thp.systemd_outcome({"running": True, "installed": True}, unit(start={"changed": True}), False)
    assert started == {"state": "installed", "detail": "unit in place, enabled and started: it writes the values at "
                       "every boot"}
    failed = thp.systemd_outcome({"running": True, "installed": True}, unit(start={"failed": True, "msg": "boom"}),
                                 False)
    assert failed == {"state": "failed", "detail": "preflight-thp.service was written and enabled but did not start: "
                      "boom"}
    assert thp.systemd_outcome({"running": False, "installed": False}, unit(), False)["state"] == "unavailable"


def test_grub_edit_needs_a_reboot_when_the_kernel_was_booted_otherwise_and_a_failed_regenerate_fails():
    grub = {"edit": {"changed": True}, "regenerate": {"changed": True, "rc": 0}}
    out = thp.cmdline_outcome(GRUB, "never", "madvise", grub, check_mode=False)
    assert out == {"state": "installed", "reboot_required": True, "detail":
                   "transparent_hugepage=madvise put in GRUB_CMDLINE_LINUX of /etc/default/grub and the GRUB "
                   "configuration regenerated with /usr/sbin/update-grub; the running kernel was booted with "
                   "transparent_hugepage=never: reboot required for the command line to take effect"
                   + thp.CMDLINE_SCOPE}
    failed = thp.cmdline_outcome(GRUB, None, "madvise", {**grub, "regenerate": {"rc": 1, "stderr": " no disk \n"}},
                                 False)
    assert failed == {"state": "failed", "reboot_required": False, "detail":
                      "/etc/default/grub was edited but /usr/sbin/update-grub failed (rc 1): no disk"}
    same = thp.cmdline_outcome(GRUB, "madvise", "madvise", {"edit": {"changed": False}, "regenerate": SKIPPED}, False)
    assert same["state"] == "unchanged" and same["reboot_required"] is False


def test_no_persistence_method_is_said_in_one_line():
    out = thp.persistence([], inspected(), "madvise", unit(), {"edit": SKIPPED, "regenerate": SKIPPED}, False)
    assert out == {"persistence": [], "reboot_required": False, "lines": [thp.NO_PERSISTENCE]}


def test_result_names_every_value_the_kernel_did_not_take_and_every_failed_method():
    planned = thp.plan(GOOD, SETTINGS)
    applied = [{"item": p, "before": p["current"], "after": p["desired"], "changed": True} for p in planned]
    readback = {p["name"]: {"current": p["desired"]} for p in planned}
    readback["thp_defrag"] = {"current": "defer"}
    outcome = {"persistence": [{"method": "systemd", "path": "/x", "state": "failed", "detail": "did not start"}],
               "reboot_required": False}
    result = thp.result(planned, applied, readback, outcome, ["a conflict"], check_mode=False)
    assert result["problems"] == [f"thp_defrag: wanted never, the kernel reads back defer ({BASE}/defrag)",
                                  "systemd: did not start"]
    assert (result["role"], result["verified"], result["conflicts"]) == ("thp", False, ["a conflict"])
    assert result["settings"][0] == {"name": "thp_enabled", "path": f"{BASE}/enabled", "desired": "madvise",
                                     "before": "always", "after": "madvise", "changed": True}


def test_rollback_keeps_the_record_while_the_command_line_cannot_be_restored():
    recorded = {"settings": {"thp_enabled": {"path": f"{BASE}/enabled", "value": "always"}},
                "kernel_cmdline": {"file": "/etc/default/grub", "original_option": None}}
    plan = thp.rollback_plan(recorded, NO_GRUB)
    assert plan["settings"] == [{"name": "thp_enabled", "path": f"{BASE}/enabled", "value": "always"}]
    assert (plan["restore_cmdline"], plan["remove_record"]) == (False, False)
    assert thp.rollback_plan(recorded, GRUB)["remove_record"] is True
    assert thp.rollback_plan({}, None)["remove_record"] is False
    lines = thp.rollback_lines(recorded, "/s.json", [{"item": {"name": "thp_enabled"}, "before": "never",
                               "after": "always"}], {"file": {"changed": True}, "link": SKIPPED, "path": "/u",
                               "link_path": "/l"}, SKIPPED, NO_GRUB)
    assert lines == ["thp_enabled: never -> always", "systemd: removed /u and /l",
                     "kernel_cmdline: not restored, " + NO_GRUB["reason"]]
    assert thp.rollback_lines({}, "/s.json", [], {"file": SKIPPED, "link": SKIPPED}, SKIPPED, None) == [
        "nothing recorded at /s.json: no THP values to restore"]
