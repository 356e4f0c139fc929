"""core/document.py: the host's variables become the report's input (what report.yml's Jinja did), and a
host's run is closed with totals, budget and one line (what playbooks/tasks/summary.yml's Jinja did)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.moduleutils import module_util

document = module_util("preflight.core.document")
REPO = Path(__file__).resolve().parents[2]


def hostvars(**over) -> dict:
    """What report.yml passes: only the variables the host defines."""
    return {"inventory_hostname": "node1", **over}


def test_undefined_variables_take_the_report_defaults():
    item = document.report_input(hostvars(preflight_ping={"ping": "pong"}))
    assert item == {
        "host": "node1",
        "groups": [],
        "gpu_class": None,
        "level": "quick",
        "ping": {"ping": "pong"},
        "failure": None,
        "facts": None,
        "role_results": {},
        "desired": {
            "thp": {"enabled": "madvise", "defrag": "never", "khugepaged_defrag": 1, "persist": ["systemd"]},
            "hugepages": {"count": None, "per_node": None, "size": "2M", "shortfall": "fail"},
            "jemalloc": {"enabled": None, "scope": None},
        },
        "thresholds": {},
        "probes": {},
        "timings": {},
        "run": None,
    }


def test_facts_come_from_the_node_facts_result_and_desired_state_from_the_tuning_variables():
    item = document.report_input(hostvars(
        group_names=["h100"],
        preflight_node_facts={"changed": False, "ansible_facts": {"preflight": {"thp": {"enabled": "never"}}}},
        thp_enabled="madvise", thp_khugepaged_defrag=1, hugepages_size="1G", jemalloc_scope="system",
    ))
    assert item["facts"] == {"thp": {"enabled": "never"}}
    assert item["groups"] == ["h100"]
    assert item["desired"]["thp"]["enabled"] == "madvise" and item["desired"]["thp"]["khugepaged_defrag"] == 1
    assert item["desired"]["hugepages"]["size"] == "1G"
    assert item["desired"]["jemalloc"] == {"enabled": None, "scope": "system"}


def test_an_undefined_tuning_variable_takes_its_roles_default_and_null_stays_null():
    desired = document.report_input(hostvars(thp_defrag=None, hugepages_size=None))["desired"]
    assert desired["thp"]["enabled"] == "madvise" and desired["thp"]["defrag"] is None
    assert desired["hugepages"]["size"] is None and desired["hugepages"]["shortfall"] == "fail"


def test_an_unknown_variable_or_a_missing_name_is_refused_naming_it():
    with pytest.raises(ValueError) as exc:
        document.report_input(hostvars(thp_enable="never"))
    assert str(exc.value).endswith("; got thp_enable")
    with pytest.raises(ValueError) as exc:
        document.report_input({"thp_enabled": "never"})
    assert str(exc.value).endswith("; got no inventory_hostname")


def test_an_entry_already_assembled_is_taken_as_it_is_with_the_old_defaults():
    item = document.report_input({"host": "node1", "ping": {"ping": "pong"}, "level": None})
    assert item["host"] == "node1" and item["level"] == "quick" and item["desired"] == {} and item["groups"] == []
    with pytest.raises(ValueError) as exc:
        document.report_input({"host": "node1", "thp_enabled": "never"})
    assert str(exc.value).endswith("; got thp_enabled")


def test_a_skipped_node_facts_result_means_no_facts():
    assert document.report_input(hostvars(preflight_node_facts={"skipped": True}))["facts"] is None


def test_the_report_level_of_the_playbook_wins_over_the_hosts_level():
    assert document.report_input(hostvars(preflight_level="full"))["level"] == "full"
    assert document.report_input(hostvars(preflight_level="full"), report_level="quick")["level"] == "quick"


def test_the_run_level_wins_and_a_bad_level_fails_the_row_naming_the_variable():
    item = document.report_input(hostvars(
        preflight_ping={"ping": "pong"}, preflight_level="turbo",
        preflight_node_facts={"ansible_facts": {"preflight": {"thp": {}}}},
    ))
    doc = document.build(item, "r1", "2026-11-23T15:17:00Z")
    assert doc["status"] == "failed" and doc["level"] == "quick"
    assert doc["error"]["msg"].startswith("preflight_level is 'turbo'; use one of quick, standard, full.")
    item["run"] = {"level": "standard", "phases": []}
    assert document.build(item, "r1", "2026-11-23T15:17:00Z")["level"] == "standard"


def test_the_report_play_passes_exactly_the_variables_the_core_reads():
    play = yaml.safe_load((REPO / "playbooks" / "report.yml").read_text())[0]
    collect = next(t for t in play["tasks"] if "__preflight_report_hosts" in t.get("ansible.builtin.set_fact", {}))
    passed = collect["vars"]["__host"]
    assert set(passed) == {"inventory_hostname", *document.REPORT_HOSTVARS}
    for name, value in passed.items():
        if name != "inventory_hostname":
            assert value == f"{{{{ hostvars[item].{name} | default(omit) }}}}", name


def test_the_stand_in_defaults_are_the_roles_defaults():
    for name, value in document.DESIRED_DEFAULTS.items():
        role = name.split("_")[0]
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
        assert defaults[name] == value, name


RUN = {
    "level": "standard",
    "budget_s": 900,
    "planned": ["load", "ttft"],
    "ran": ["load"],
    "failed": [{"probe": "ttft", "msg": "boom"}],
    "skipped": [
        {"probe": "kv", "reason": "not selected by --tags load"},
        {"probe": "thp_ab", "reason": "level standard does not include it (it runs at full)"},
        {"probe": "batching", "reason": "not selected by --tags load"},
    ],
    "phases": [
        {"name": "tune", "duration_s": 10.25, "status": "ok"},
        {"name": "facts", "duration_s": 1.5, "status": "ok"},
        {"name": "probe load", "duration_s": 30.0, "status": "ok"},
        {"name": "probe ttft", "duration_s": 2.0, "status": "failed"},
    ],
}


def test_closing_a_run_totals_the_phases_and_leaves_tuning_out_of_the_budget():
    closed = document.close_run(RUN)
    assert closed["total_s"] == 43.8 and closed["certify_s"] == 33.5 and closed["over_budget"] is False
    assert document.close_run(dict(RUN, budget_s="30"))["over_budget"] is True
    assert document.close_run({k: v for k, v in RUN.items() if k != "budget_s"})["over_budget"] is False
    assert document.timings(closed) == {"tune": 10.25, "facts": 1.5, "probe load": 30.0, "probe ttft": 2.0}


def test_the_run_line_names_what_ran_failed_and_was_skipped_grouped_by_reason():
    line = document.run_line("node1", document.close_run(RUN))
    assert line == (
        "node1: level standard; ran load; FAILED ttft; "
        "skipped thp_ab (level standard does not include it (it runs at full)); "
        "skipped kv, batching (not selected by --tags load); "
        "phases: tune 10.25 s, facts 1.5 s, probe load 30.0 s, probe ttft 2.0 s (failed); "
        "33.5 s of the 900 s budget of level standard (total with tuning 43.8 s)"
    )


def test_a_quick_run_over_budget_says_so():
    run = {"level": "quick", "budget_s": 1, "ran": [], "failed": [], "skipped": [],
           "phases": [{"name": "tune", "duration_s": 1.0, "status": "ok"},
                      {"name": "facts", "duration_s": 2.0, "status": "ok"}]}
    line = document.run_line("n", document.close_run(run))
    assert line == ("n: level quick; ran no probes; phases: tune 1.0 s, facts 2.0 s; "
                    "2.0 s of the 1 s budget of level quick - OVER BUDGET (total with tuning 3.0 s)")
