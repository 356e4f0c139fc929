"""Probe option values are checked on the controller, against each option's range, before anything runs:
core/plan.py refuses a probe_plan whose options would only fail (or hang) on a node that is already tuned,
naming the entry, the option, the value and what is allowed, every problem at once."""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

plan = module_util("preflight.core.plan")
options = module_util("preflight.core.probe_options")

BUDGETS = {"quick": 60, "standard": 900, "full": 3600}


def _errors(entries: dict) -> list[str]:
    return plan.plan_errors("standard", BUDGETS, "tiny", entries)


@pytest.mark.parametrize(("probe", "name", "value", "allowed"), [
    ("kv", "kv_budget", ["1GiB", "lots"],
     "a list of fractions above 0 and at most 1, or sizes above 0 such as 1GiB"),
    ("kv", "kv_budget", ["0"], "a list of fractions above 0 and at most 1, or sizes above 0 such as 1GiB"),
    ("kv", "kv_budget", ["0GiB"], "a list of fractions above 0 and at most 1, or sizes above 0 such as 1GiB"),
    ("ttft", "kv_budget", "-0.5", "a fraction above 0 and at most 1, or a size above 0 such as 1GiB"),
    ("ttft", "kv_budget", float("nan"), "a fraction above 0 and at most 1, or a size above 0 such as 1GiB"),
    ("ttft", "warm", -5, "an integer of at least 10"),
    ("ttft", "warm", 3, "an integer of at least 10"),
    ("ttft", "ready_timeout_s", "nan", "a finite number above 0"),
    ("ttft", "ready_timeout_s", float("nan"), "a finite number above 0"),
    ("ttft", "ready_timeout_s", "inf", "a finite number above 0"),
    ("ttft", "ready_timeout_s", float("-inf"), "a finite number above 0"),
    ("ttft", "ready_timeout_s", 0, "a finite number above 0"),
    ("batching", "time_budget_s", -1.5, "a finite number above 0"),
    ("batching", "prompts", 0, "an integer of at least 1"),
    ("batching", "max_concurrency", -2, "an integer of at least 1"),
    ("batching", "warmup", -1, "an integer of at least 0"),
    ("batching", "repeats", "four", "an integer of at least 1"),
    ("load", "repeats", 0, "an integer of at least 1"),
    ("load", "gpus", [0, -1], "a list of integers of at least 0"),
    ("kv", "max_model_len", [4096, 0], "a list of integers of at least 1"),
    ("generate", "timeout_s", "soon", "a finite number above 0"),
    ("ttft", "gpu", -1, "an integer of at least 0"),
])
def test_a_value_out_of_its_range_is_refused_naming_entry_option_value_and_range(probe, name, value, allowed):
    assert _errors({"e": {"probe": probe, "levels": ["standard"], "options": {name: value}}}) == [
        f"probe_plan.e.options.{name} must be {allowed}, got {value!r}"]


@pytest.mark.parametrize(("probe", "name", "value"), [
    ("kv", "kv_budget", ["0.3", 0.5, 1, "512MiB", "1GiB", "2048"]),
    ("ttft", "warm", 10),
    ("ttft", "warm", "20"),
    ("ttft", "peer_rounds", 0),
    ("ttft", "ready_timeout_s", 0.5),
    ("ttft", "ready_timeout_s", "900"),
    ("batching", "warmup", 0),
    ("load", "gpus", [0, 1]),
    ("ttft", "gpu", 0),
])
def test_a_value_inside_its_range_passes(probe, name, value):
    assert _errors({"e": {"probe": probe, "levels": ["standard"], "options": {name: value}}}) == []


def test_every_bad_value_of_every_entry_is_reported_at_once():
    errors = _errors({
        "ttft": {"levels": ["standard"], "options": {"warm": -5, "ready_timeout_s": "nan"}},
        "kv": {"levels": ["full"], "options": {"kv_budget": ["lots"], "max_model_len": [0]}},
        "batching": {"levels": ["standard"], "options": {"prompts": "many", "repeats": 2}},
    })
    assert errors == [
        "probe_plan.ttft.options.warm must be an integer of at least 10, got -5",
        "probe_plan.ttft.options.ready_timeout_s must be a finite number above 0, got 'nan'",
        "probe_plan.kv.options.kv_budget must be a list of fractions above 0 and at most 1, or sizes above 0"
        " such as 1GiB, got ['lots']",
        "probe_plan.kv.options.max_model_len must be a list of integers of at least 1, got [0]",
        "probe_plan.batching.options.prompts must be an integer of at least 1, got 'many'",
    ]
    assert plan.rejection_message("node1", errors).startswith(
        "node1: preflight_level / probe_plan rejected, nothing was changed: probe_plan.ttft.options.warm")


def test_an_option_the_probe_does_not_have_is_named_with_the_entry():
    assert _errors({"t": {"probe": "ttft", "levels": ["standard"], "options": {"bogus": 1}}}) == [
        "probe_plan.t.options.bogus is not an option of the ttft probe; allowed: "
        + ", ".join(sorted(options.PROBE_OPTIONS["ttft"]))]


def test_a_secret_option_s_bad_value_stays_hidden():
    assert _errors({"t": {"probe": "ttft", "levels": ["standard"], "options": {"api_key": ""}}}) == [
        "probe_plan.t.options.api_key must be a non-empty string, got (hidden)"]


def test_the_budget_rule_is_the_one_the_probes_parse_with():
    assert options.kv_budget("0.5") == ("fraction", 0.5)
    assert options.kv_budget("1GiB") == ("bytes", float(1 << 30))
    assert options.kv_budget("2048") == ("bytes", 2048.0)
    for bad in ("lots", "0", "-1", "nan", "inf", "0MiB", "1,2"):
        with pytest.raises(ValueError):
            options.kv_budget(bad)
