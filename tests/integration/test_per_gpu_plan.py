"""playbooks/tasks/per_gpu.yml, run by the real ansible-playbook: a per_gpu plan entry becomes one run per GPU.

The node facts are given to the play (this machine has no GPU): two GPUs, and none. What runs the probes
afterwards (run_probe.yml passing --gpu) is covered by the probes' own tests and the bootstrap tests.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.sshfleet import REPO, ansible_env, run_playbook


def item(name, probe, per_gpu):
    return {"name": name, "entry": name, "probe": probe, "timeout_s": 900, "thp_mode": None,
            "per_gpu": per_gpu, "gpu": None, "vllm": True}


def run_play(tmp_path, play):
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    return run_playbook(playbook, inventory, env=ansible_env())


def expand(tmp_path, gpus):
    out = tmp_path / "plan.json"
    play = [{
        "name": "Expand",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "preflight_node_facts": {"ansible_facts": {"preflight": {
                "gpus": [{"index": i} for i in gpus], "gpus_reason": None if gpus else "NVML not available"}}},
            "__preflight_plan": {"run": [item("ttft", "ttft", False), item("ttft_per_gpu", "ttft", True)],
                                 "skipped": []},
            "preflight_run": {"planned": ["ttft", "ttft_per_gpu"], "skipped": [{"probe": "kv", "reason": "level"}]},
        },
        "tasks": [
            {"name": "Expand", "ansible.builtin.import_tasks": str(REPO / "playbooks/tasks/per_gpu.yml")},
            {"name": "Write", "ansible.builtin.copy": {
                "content": "{{ {'plan': __preflight_plan, 'run': preflight_run} | to_json }}",
                "dest": str(out), "mode": "0600"}},
        ],
    }]
    proc = run_play(tmp_path, play)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("gpus", [[0, 1], [0, 1, 2, 3]])
def test_a_per_gpu_entry_runs_once_on_each_gpu_and_the_certificate_run_once(tmp_path, gpus):
    got = expand(tmp_path, gpus)
    runs = [(r["name"], r["gpu"]) for r in got["plan"]["run"]]
    assert runs == [("ttft", None)] + [(f"ttft_per_gpu_{i}", i) for i in gpus]
    assert got["run"]["planned"] == ["ttft"] + [f"ttft_per_gpu_{i}" for i in gpus]
    assert got["run"]["skipped"] == [{"probe": "kv", "reason": "level"}]


def test_a_node_without_gpus_skips_the_per_gpu_entry_and_says_why(tmp_path):
    got = expand(tmp_path, [])
    assert [(r["name"], r["gpu"]) for r in got["plan"]["run"]] == [("ttft", None)]
    assert got["run"]["planned"] == ["ttft"]
    assert got["run"]["skipped"][-1] == {"probe": "ttft_per_gpu",
                                         "reason": "per GPU: node_facts lists no GPUs (NVML not available)"}


def test_per_gpu_is_validated_with_the_plan_before_anything_changes(tmp_path):
    play = [{
        "name": "Plan",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "preflight_level": "full",
            "preflight_level_budget_s": {"quick": 60, "standard": 900, "full": 3600},
            "probe_model": "tiny",
            "probe_plan": {
                "ttft_each": {"probe": "ttft", "levels": ["full"], "per_gpu": "yes"},
                "load_each": {"probe": "load", "levels": ["full"], "per_gpu": True},
            },
        },
        "tasks": [{"name": "Plan", "ansible.builtin.import_tasks": str(REPO / "playbooks/tasks/plan.yml")}],
    }]
    proc = run_play(tmp_path, play)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert "probe_plan.ttft_each.per_gpu: 'yes' is not allowed; allowed: true, false" in text
    assert ("probe_plan.load_each.per_gpu: only the vLLM probes (ttft, kv, batching) run per GPU; "
            "load measures every GPU itself") in text
