"""core/plan_servers.py and core/plan.py for_node: which vLLM probes share a server start, which servers run
side by side, and what a node without a prerequisite skips before anything runs. Plain values, no playbook."""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

from tests.moduleutils import module_util

plan = module_util("preflight.core.plan")
servers = module_util("preflight.core.plan_servers")
probe_options = module_util("preflight.core.probe_options")
envelope = module_util("preflight.core.envelope")

REPO = Path(__file__).resolve().parents[2]
SERVER = {"max_model_len": 2048, "kv_budget": "1GiB", "enforce_eager": True}
PROBE_PLAN = {
    "load": {"levels": ["standard"], "options": {"repeats": 3}},
    "ttft": {"levels": ["standard", "full"], "timeout_s": 900, "options": dict(SERVER, warm=10)},
    "kv": {"levels": ["standard", "full"], "timeout_s": 600,
           "options": dict(SERVER, max_model_len=[2048], kv_budget=["1GiB"])},
    "batching": {"levels": ["standard", "full"], "timeout_s": 300, "options": dict(SERVER, prompts=8)},
    "kv_sweep": {"probe": "kv", "levels": ["full"], "options": dict(SERVER, max_model_len=[2048, 4096])},
    "ttft_per_gpu": {"probe": "ttft", "levels": ["full"], "per_gpu": True, "timeout_s": 900,
                     "options": dict(SERVER, warm=10)},
    "kv_per_gpu": {"probe": "kv", "levels": ["full"], "per_gpu": True, "timeout_s": 900,
                   "options": dict(SERVER, max_model_len=[2048], kv_budget=["1GiB"])},
    "allocator_ab": {"probe": "generate", "levels": ["full"], "options": {"allocators": ["glibc", "jemalloc"]}},
}
GPUS = {"gpus": [{"index": 0}, {"index": 1}], "allocator": {"jemalloc_paths": ["/usr/lib/libjemalloc.so.2"]}}


def node_plan(level: str, facts: dict, probe_plan: dict = PROBE_PLAN):
    planned = plan.plan_probes(level, probe_plan)
    run = plan.run_record(planned, level, {"quick": 60, "standard": 900, "full": 3600}, "t")
    return plan.for_node(planned, run, facts, probe_plan)


def names(items):
    return [i["name"] for i in items]


def test_standard_runs_ttft_kv_and_batching_on_one_server_start_in_that_order():
    planned, run = node_plan("standard", {})
    assert names(planned["run"]) == ["load", "ttft+kv+batching"]
    suite = planned["by_probe"]["suite"][0]
    assert [[m["name"] for m in s] for s in suite["servers"]] == [["ttft", "kv", "batching"]]
    assert suite["timeout_s"] == 900 + 600 + 300
    assert suite["servers"][0][1]["options"]["kv_budget"] == ["1GiB"]
    assert planned["by_probe"]["ttft"] == planned["by_probe"]["kv"] == []
    assert run["planned"] == ["load", "ttft", "kv", "batching"]  # the run record names members, never the suite


def test_a_different_server_setting_keeps_a_server_of_its_own():
    changed = dict(PROBE_PLAN, batching=dict(PROBE_PLAN["batching"], options=dict(SERVER, enforce_eager=False)))
    planned, _ = node_plan("standard", {}, changed)
    assert names(planned["run"]) == ["load", "ttft+kv", "batching"]
    with_endpoint = dict(PROBE_PLAN, ttft=dict(PROBE_PLAN["ttft"], options=dict(SERVER, endpoint="http://x:8000")))
    assert names(node_plan("standard", {}, with_endpoint)[0]["run"]) == ["load", "ttft", "kv+batching"]


def test_a_kv_sweep_and_thp_arms_start_their_own_servers():
    assert servers.server_key({"probe": "kv", "thp_mode": None, "gpu": None},
                              {"max_model_len": [2048, 4096], "kv_budget": ["1GiB"]}) is None
    assert servers.server_key({"probe": "kv", "thp_mode": None, "gpu": None}, {"max_model_len": [2048]}) is None
    assert servers.server_key({"probe": "ttft", "thp_mode": "never", "gpu": None}, SERVER) is None
    assert servers.server_key({"probe": "load", "thp_mode": None, "gpu": None}, SERVER) is None
    # Values that mean the same server compare equal whatever YAML made of them.
    a = servers.server_key({"probe": "ttft", "thp_mode": None, "gpu": None}, {"max_model_len": "2048"})
    assert a == servers.server_key({"probe": "kv", "thp_mode": None, "gpu": None},
                                   {"max_model_len": [2048], "kv_budget": None}) or a is not None


def test_full_on_two_gpus_runs_each_gpus_server_side_by_side_with_both_per_gpu_probes_on_it():
    planned, run = node_plan("full", GPUS)
    suites = planned["by_probe"]["suite"]
    side = [s for s in suites if s["per_gpu"]]
    assert len(side) == 1
    assert [[m["name"] for m in s] for s in side[0]["servers"]] == [["ttft_per_gpu_0", "kv_per_gpu_0"],
                                                                    ["ttft_per_gpu_1", "kv_per_gpu_1"]]
    assert [s[0]["options"]["gpu"] for s in side[0]["servers"]] == [0, 1]
    assert side[0]["timeout_s"] == 1800  # the slowest server's members, one after the other
    assert "kv_sweep" in names(planned["run"])
    assert {"ttft_per_gpu_0", "kv_per_gpu_1"} <= set(run["planned"])


def test_one_gpu_with_one_per_gpu_probe_is_a_plain_item():
    one = {k: v for k, v in PROBE_PLAN.items() if k != "kv_per_gpu"}
    planned, _ = node_plan("full", {"gpus": [{"index": 0}], "allocator": GPUS["allocator"]}, one)
    assert "ttft_per_gpu_0" in names(planned["by_probe"]["ttft"])


def test_an_allocator_arm_without_its_library_is_skipped_when_the_plan_is_made():
    planned, run = node_plan("full", {"gpus": [], "allocator": {"jemalloc_paths": []}})
    assert "allocator_ab" not in names(planned["run"])
    reason = next(s["reason"] for s in run["skipped"] if s["probe"] == "allocator_ab")
    assert "jemalloc arm needs libjemalloc" in reason and "jemalloc_enabled: true" in reason
    # Given the library path, or facts that did not come back: it runs (the probe says for itself).
    given = dict(PROBE_PLAN, allocator_ab={"probe": "generate", "levels": ["full"],
                                           "options": {"allocators": ["jemalloc"], "jemalloc_path": "/x.so"}})
    assert "allocator_ab" in names(node_plan("full", {"allocator": {"jemalloc_paths": []}}, given)[0]["run"])
    assert "allocator_ab" in names(node_plan("full", {})[0]["run"])


def test_skipping_a_suite_skips_each_member_by_name():
    planned, run = node_plan("standard", {})
    before = len(run["skipped"])
    _, run = plan.skip(planned, run, "vllm", "no vllm")
    assert [s["probe"] for s in run["skipped"][before:]] == ["ttft", "kv", "batching"]


def test_the_group_defaults_put_ttft_kv_and_batching_on_one_server_at_standard():
    """The shipped probe_plan (the defaults role) shares at standard: the three entries agree on their server."""
    shipped = yaml.safe_load((REPO / "roles/preflight_defaults/defaults/main.yml").read_text())["probe_plan"]
    settings = {"probe_max_model_len": 2048, "probe_kv_budget": "1GiB", "probe_vllm_enforce_eager": True,
                "probe_gpu_host": False, "preflight_level": "standard"}
    resolved = {name: dict(entry, options={k: _resolve(v, settings) for k, v in (entry.get("options") or {}).items()})
                for name, entry in shipped.items() if "standard" in entry["levels"]}
    planned, _ = node_plan("standard", {}, resolved)
    assert [[m["name"] for m in s] for s in planned["by_probe"]["suite"][0]["servers"]] == [["ttft", "kv", "batching"]]


def _resolve(value, settings):
    """A default as Ansible templates it (Jinja, then the native type of what it rendered)."""
    if isinstance(value, list):
        return [_resolve(v, settings) for v in value]
    if isinstance(value, str) and "{{" in value:
        return yaml.safe_load(jinja2.Environment().from_string(value).render(**settings))
    return value


def test_suite_plan_checks_every_members_options_and_names_the_member():
    ok, errors = probe_options.suite_plan([[{"name": "ttft", "probe": "ttft", "options": {"warm": 10}}]],
                                          {"model": "/m"})
    assert errors == [] and ok == [[{"name": "ttft", "probe": "ttft", "argv": ["--model", "/m", "--warm", "10"]}]]
    _, errors = probe_options.suite_plan([[{"name": "kv", "probe": "kv", "options": {"warm": 10}}]])
    assert errors and errors[0].startswith("kv: options.warm is not an option of the kv probe")
    cmd = probe_options.suite_command("py", [[{"name": "t", "probe": "ttft", "argv": ["--api-key", "s3cret"]}]],
                                      shown=True)
    assert "s3cret" not in " ".join(cmd) and cmd[:5] == ["py", "-m", "probes", "suite", "--plan"]


def test_suite_outcome_records_each_member_on_its_own():
    good = {"probe": "ttft", "duration_s": 31.26, "verdicts": [{"name": "x", "status": "pass"}]}
    bad = {"probe": "kv", "duration_s": 0.5, "verdicts": [{"name": "fits", "status": "fail", "text": "too small"}]}
    suite = {"results": {"members": {"ttft": good, "kv": bad}}}
    out = envelope.suite_outcome(suite, ["ttft", "kv", "batching"], {"rc": 1, "msg": "exit 1"})
    assert out["ran"] == ["ttft"] and set(out["members"]) == {"ttft", "kv"}
    assert [(f["probe"], f["rc"]) for f in out["failures"]] == [("kv", 1), ("batching", 1)]
    assert "fits: too small" in out["failures"][0]["msg"] and "exit 1" in out["failures"][1]["msg"]
    assert out["phases"] == [{"name": "probe ttft", "duration_s": 31.26, "status": "ok"},
                             {"name": "probe kv", "duration_s": 0.5, "status": "failed"},
                             {"name": "probe batching", "duration_s": 0.0, "status": "failed"}]
    none = envelope.suite_outcome(None, ["ttft"], {"msg": "timed out"})
    assert none["failures"][0]["msg"] == "probe ttft: no result (timed out)"
