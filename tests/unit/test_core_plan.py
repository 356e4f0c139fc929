"""core/plan.py: the probe plan's validation, what runs and what is skipped and why, per-GPU expansion and
the skips later in the run. The messages are the ones playbooks/tasks/plan.yml gave in Jinja, word for word."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.moduleutils import module_util

plan = module_util("preflight.core.plan")
catalog = module_util("preflight.core.catalog")

REPO = Path(__file__).resolve().parents[2]
BUDGETS = {"quick": 60, "standard": 900, "full": 3600}
PLAN = {
    "load": {"levels": ["standard", "full"], "timeout_s": 900, "options": {"repeats": 3}},
    "ttft": {"levels": ["standard", "full"]},
    "kv_sweep": {"probe": "kv", "levels": ["full"], "timeout_s": "2400"},
    "gen_ab": {"probe": "generate", "levels": ["full"], "thp_modes": ["always", "never"]},
    "ttft_per_gpu": {"probe": "ttft", "levels": ["full"], "per_gpu": True},
}


def item(name, probe, **over):
    out = {"name": name, "entry": name, "probe": probe, "timeout_s": 1800, "thp_mode": None, "per_gpu": False,
           "gpu": None, "vllm": probe in catalog.VLLM_PROBES}
    return out | over


# --- validation -------------------------------------------------------------------------------------------
def test_a_valid_plan_has_no_errors():
    assert plan.plan_errors("full", BUDGETS, "tiny", PLAN) == []


def _templated(value, variables: dict):
    """The value as Ansible hands it to the module: every Jinja string rendered to its native type."""
    from jinja2.nativetypes import NativeEnvironment

    if isinstance(value, dict):
        return {k: _templated(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_templated(v, variables) for v in value]
    while isinstance(value, str) and "{{" in value:
        value = NativeEnvironment().from_string(value).render(variables)
    return value


@pytest.mark.parametrize("gpu_host", [True, False])
def test_the_project_s_own_probe_plan_is_valid_at_every_level(gpu_host):
    group = yaml.safe_load((REPO / "roles" / "preflight_defaults" / "defaults" / "main.yml").read_text())
    for level in catalog.LEVELS:
        variables = dict(group, probe_gpu_host=gpu_host, preflight_level=level)
        probe_plan = _templated(group["probe_plan"], variables)
        assert plan.plan_errors(level, group["preflight_level_budget_s"], "tiny", probe_plan) == []


@pytest.mark.parametrize(("level", "message"), [
    ("thorough", "preflight_level: 'thorough' is not a level; allowed: quick, standard, full"),
    (False, "preflight_level: 'False' is a YAML boolean; allowed: quick, standard, full"),
    (3, "preflight_level: '3' is not a level; allowed: quick, standard, full"),
    (None, "preflight_level: 'None' is not a level; allowed: quick, standard, full"),
])
def test_a_bad_level_is_named_with_what_is_allowed(level, message):
    assert plan.plan_errors(level, BUDGETS, "tiny", {}) == [message]


def test_every_bad_budget_is_named():
    assert plan.plan_errors("quick", {"quick": True, "standard": 0, "full": "soon"}, None, {}) == [
        "preflight_level_budget_s.quick: must be a positive number of seconds",
        "preflight_level_budget_s.standard: must be a positive number of seconds",
        "preflight_level_budget_s.full: must be a positive number of seconds",
    ]
    assert plan.plan_errors("quick", {"quick": "60", "standard": 900.5, "full": 1}, None, {}) == []
    assert plan.plan_errors("quick", [60], None, {}) == [
        "preflight_level_budget_s: must map each level (quick, standard, full) to seconds"]
    assert plan.plan_errors("quick", {"quick": 60}, None, {}) == [
        "preflight_level_budget_s.standard: must be a positive number of seconds",
        "preflight_level_budget_s.full: must be a positive number of seconds",
    ]


@pytest.mark.parametrize("model", [None, "", False])
def test_a_level_that_probes_needs_a_model(model):
    assert plan.plan_errors("standard", BUDGETS, model, {}) == [
        "probe_model: the standard level loads a model; give a model directory on the host or a shape "
        "(tiny, qwen2.5-1.5b, phi-3-mini, smollm2-135m)"]
    assert plan.plan_errors("quick", BUDGETS, model, {}) == []


def test_a_probe_plan_that_is_no_mapping_is_rejected():
    assert plan.plan_errors("quick", BUDGETS, None, ["load"]) == [
        "probe_plan: must be a mapping of result name to {probe, levels, timeout_s, thp_modes, per_gpu, options}"]


ARMS_ALLOWED = ("allowed: always, madvise, never (THP enabled, every size that inherits it), or <size>=<value> "
                "with a page size such as 64kB and a value of always, inherit, madvise, never; several joined by "
                "'+', each knob once (e.g. never+64kB=always)")


def test_every_invalid_variable_is_named_at_once_in_the_order_written():
    bad_plan = {
        "Load": {"levels": ["standard"]},
        "gen": "generate",
        "kv2": {"probe": "kvcache", "levels": "full", "timeout_s": True, "options": [1], "color": "red"},
        "ttft": {"levels": ["quick", "nightly"], "timeout_s": "0.5", "thp_modes": "never"},
        "batch": {"probe": "batching", "levels": [], "thp_modes": ["always", "sometimes"], "per_gpu": True},
        "load_each": {"probe": "load", "levels": ["full"], "per_gpu": "yes"},
        "load_all": {"probe": "load", "levels": ["full"], "per_gpu": True},
    }
    assert plan.plan_errors(True, {"quick": 60}, None, bad_plan) == [
        "preflight_level: 'True' is a YAML boolean; allowed: quick, standard, full",
        "preflight_level_budget_s.standard: must be a positive number of seconds",
        "preflight_level_budget_s.full: must be a positive number of seconds",
        "probe_plan: 'Load' is not a name of lower-case letters, digits and _",
        "probe_plan.Load.probe: 'Load' is not a probe; allowed: load, generate, ttft, kv, batching",
        "probe_plan.gen: must be a mapping with keys probe, levels, timeout_s, thp_modes, per_gpu, options",
        "probe_plan.kv2.color: unknown key; allowed: probe, levels, timeout_s, thp_modes, per_gpu, options",
        "probe_plan.kv2.probe: 'kvcache' is not a probe; allowed: load, generate, ttft, kv, batching",
        "probe_plan.kv2.levels: must be a list of standard, full",
        "probe_plan.kv2.timeout_s: 'True' is not a positive number of seconds",
        "probe_plan.kv2.options: must be a mapping of option name to value",
        "probe_plan.ttft.levels: 'quick' is not allowed; allowed: standard, full (quick runs no probes)",
        "probe_plan.ttft.levels: 'nightly' is not allowed; allowed: standard, full",
        "probe_plan.ttft.timeout_s: '0.5' is not a positive number of seconds",
        "probe_plan.ttft.thp_modes: must be a list of THP arms; " + ARMS_ALLOWED,
        "probe_plan.batch.levels: must be a list of standard, full",
        "probe_plan.batch: per_gpu and thp_modes together are not supported; give two entries",
        "probe_plan.batch.thp_modes: 'sometimes' is not allowed; " + ARMS_ALLOWED,
        "probe_plan.load_each.per_gpu: 'yes' is not allowed; allowed: true, false",
        "probe_plan.load_all.per_gpu: only the vLLM probes (ttft, kv, batching) run per GPU; "
        "load measures every GPU itself",
    ]


def test_the_rejection_names_the_host_and_joins_the_errors():
    assert plan.rejection_message("node1", ["a", "b"]) == (
        "node1: preflight_level / probe_plan rejected, nothing was changed: a; b")


def test_a_rejected_run_keeps_the_level_only_when_it_is_one():
    empty = {"planned": [], "ran": [], "failed": [], "skipped": [], "phases": []}
    assert plan.rejected_run("thorough") == empty
    assert plan.rejected_run(True) == empty
    assert plan.rejected_run("full") == empty | {"level": "full"}


# --- the plan ---------------------------------------------------------------------------------------------
def test_the_plan_runs_in_catalog_probe_order_and_expands_thp_modes():
    got = plan.plan_probes("full", PLAN)
    assert got["run"] == [
        item("load", "load", timeout_s=900),
        item("gen_ab_always", "generate", entry="gen_ab", thp_mode="always"),
        item("gen_ab_never", "generate", entry="gen_ab", thp_mode="never"),
        item("ttft", "ttft"),
        item("ttft_per_gpu", "ttft", per_gpu=True),
        item("kv_sweep", "kv", timeout_s=2400),
    ]
    assert got["skipped"] == []
    assert got["by_probe"] == {
        "load": got["run"][:1], "generate": got["run"][1:3], "ttft": got["run"][3:5], "kv": got["run"][5:],
        "batching": [], "suite": []}


def test_a_level_that_does_not_include_an_entry_skips_it_with_the_reason():
    got = plan.plan_probes("standard", PLAN)
    assert [i["name"] for i in got["run"]] == ["load", "ttft"]
    assert got["skipped"] == [
        {"probe": "gen_ab_always", "reason": "level standard does not include it (it runs at full)"},
        {"probe": "gen_ab_never", "reason": "level standard does not include it (it runs at full)"},
        {"probe": "ttft_per_gpu", "reason": "level standard does not include it (it runs at full)"},
        {"probe": "kv_sweep", "reason": "level standard does not include it (it runs at full)"},
    ]
    assert {s["reason"] for s in plan.plan_probes("quick", PLAN)["skipped"]} == {"level quick runs no probes"}


def test_tags_select_and_deselect_probes_with_the_reason():
    got = plan.plan_probes("standard", {"load": PLAN["load"], "ttft": PLAN["ttft"]}, ["load", "tune"], [])
    assert [i["name"] for i in got["run"]] == ["load"]
    assert got["skipped"] == [{"probe": "ttft", "reason": "not selected by --tags load,tune"}]
    got = plan.plan_probes("standard", {"load": PLAN["load"], "ttft": PLAN["ttft"]}, ["probes"], ["ttft", "x"])
    assert [i["name"] for i in got["run"]] == ["load"]
    assert got["skipped"] == [{"probe": "ttft", "reason": "deselected by --skip-tags ttft,x"}]
    assert plan.plan_probes("standard", {"load": PLAN["load"]}, ["all"], ["probes"])["run"] == []


def test_an_empty_thp_modes_list_plans_nothing():
    got = plan.plan_probes("full", {"generate": {"levels": ["full"], "thp_modes": []}})
    assert got["run"] == [] and got["skipped"] == []


def test_the_run_record_lists_the_planned_names_and_the_level_s_budget():
    got = plan.plan_probes("standard", PLAN)
    assert plan.run_record(got, "standard", BUDGETS, "2026-01-01T00:00:00Z") == {
        "level": "standard", "started_at": "2026-01-01T00:00:00Z", "budget_s": 900, "planned": ["load", "ttft"],
        "ran": [], "failed": [], "skipped": got["skipped"], "phases": []}


# --- later changes ----------------------------------------------------------------------------------------
def per_gpu_plan():
    return plan.plan_probes("full", {"ttft": PLAN["ttft"], "ttft_per_gpu": PLAN["ttft_per_gpu"]})


def test_a_per_gpu_item_runs_once_on_each_gpu():
    before = per_gpu_plan()
    run = {"planned": ["ttft", "ttft_per_gpu"], "skipped": [{"probe": "kv", "reason": "level"}]}
    got, record = plan.expand_per_gpu(before, run, [0, 1], None)
    assert [(i["name"], i["gpu"]) for i in got["run"]] == [("ttft", None), ("ttft_per_gpu_0", 0), ("ttft_per_gpu_1", 1)]
    assert got["by_probe"]["ttft"] == got["run"]
    assert record == {"planned": ["ttft", "ttft_per_gpu_0", "ttft_per_gpu_1"],
                      "skipped": [{"probe": "kv", "reason": "level"}]}


@pytest.mark.parametrize(("reason", "shown"), [("NVML not available", "NVML not available"), (None, "none"),
                                               ("", "none")])
def test_a_node_without_gpus_skips_the_per_gpu_item_and_says_why(reason, shown):
    got, record = plan.expand_per_gpu(per_gpu_plan(), {"planned": ["ttft", "ttft_per_gpu"], "skipped": []}, [],
                                      reason)
    assert [i["name"] for i in got["run"]] == ["ttft"]
    assert record["planned"] == ["ttft"]
    assert record["skipped"] == [{"probe": "ttft_per_gpu", "reason": f"per GPU: node_facts lists no GPUs ({shown})"}]


def test_a_plan_without_per_gpu_items_is_left_as_it_was():
    before = plan.plan_probes("standard", PLAN)
    run = {"planned": ["load", "ttft"], "skipped": []}
    assert plan.expand_per_gpu(before, run, [], "none") == (before, run)


def test_gpus_and_their_reason_come_from_the_node_facts():
    assert plan.node_gpus({"gpus": [{"index": 0}, {"index": 3}], "gpus_reason": None}) == ([0, 3], None)
    assert plan.node_gpus({}) == ([], "no facts")
    assert plan.node_gpus(None) == ([], "no facts")


def test_a_failed_task_skips_every_planned_probe_and_names_the_task():
    before = plan.plan_probes("standard", PLAN)
    got, record = plan.skip(before, {"skipped": []}, "failed_task", "Set THP")
    assert got["run"] == [] and got["by_probe"]["load"] == []
    assert record["skipped"] == [{"probe": "load", "reason": "not run: Set THP failed on this host"},
                                 {"probe": "ttft", "reason": "not run: Set THP failed on this host"}]
    _, record = plan.skip(before, {"skipped": []}, "failed_task", "")
    assert record["skipped"][0]["reason"] == "not run: an earlier task failed on this host"


def test_a_failed_probe_runtime_skips_every_planned_probe_with_its_message():
    _, record = plan.skip(plan.plan_probes("standard", PLAN), {"skipped": []}, "probe_runtime", "pip failed")
    assert {s["reason"] for s in record["skipped"]} == {"not run: the probe runtime failed: pip failed"}


def test_vllm_that_does_not_import_skips_only_the_vllm_probes():
    before = plan.plan_probes("standard", PLAN)
    got, record = plan.skip(before, {"skipped": [{"probe": "x", "reason": "y"}]}, "vllm", "vllm not importable")
    assert [i["name"] for i in got["run"]] == ["load"]
    assert record["skipped"] == [{"probe": "x", "reason": "y"},
                                 {"probe": "ttft", "reason": "skipped: vllm not importable"}]


# --- the module's documentation says what its argument spec checks ----------------------------------------
def test_preflight_plan_documents_every_option_with_the_spec_s_type_and_choices():
    import importlib.util

    spec = importlib.util.spec_from_file_location("preflight_plan_module", REPO / "library" / "preflight_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert set(documented) == set(module.ARGUMENT_SPEC)
    for name, arg in module.ARGUMENT_SPEC.items():
        assert documented[name]["type"] == arg["type"], name
        assert documented[name].get("choices") == arg.get("choices"), name
        assert documented[name].get("default") == arg.get("default"), name
    assert module.ARGUMENT_SPEC["skip"]["choices"] == list(plan.SKIPS)
