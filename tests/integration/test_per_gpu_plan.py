"""playbooks/tasks/per_gpu.yml, run by the real ansible-playbook: the plan made for a node passes the node facts
and probe_plan to the module and comes back as the plan the probe loops read.

The node facts are given to the play (this machine has no GPU). The decisions themselves (per-GPU expansion,
skips, shared servers, validation) are unit-tested in tests/unit/test_core_plan.py and test_core_plan_servers.py;
what runs the suite afterwards is covered by the bootstrap tests and the probes' own tests.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.sshfleet import REPO, ansible_env, run_playbook

pytestmark = pytest.mark.node_untouched


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
            "probe_plan": {"ttft": {"levels": ["full"], "options": {"warm": 10}},
                           "ttft_per_gpu": {"probe": "ttft", "levels": ["full"], "per_gpu": True,
                                            "options": {"warm": 20}}},
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


def test_per_gpu_servers_run_side_by_side_and_the_record_names_each_gpu_s_run(tmp_path):
    got = expand(tmp_path, [0, 1])
    side_by_side = "ttft_per_gpu_0+ttft_per_gpu_1 (side by side on GPUs 0, 1)"
    assert [r["name"] for r in got["plan"]["run"]] == ["ttft", side_by_side]
    suite = got["plan"]["by_probe"]["suite"][0]
    assert [[(m["name"], m["options"]) for m in server] for server in suite["servers"]] == [
        [("ttft_per_gpu_0", {"warm": 20, "gpu": 0})], [("ttft_per_gpu_1", {"warm": 20, "gpu": 1})]]
    assert got["plan"]["by_probe"]["ttft"][0]["name"] == "ttft"
    assert got["run"]["planned"] == ["ttft", "ttft_per_gpu_0", "ttft_per_gpu_1"]
    assert got["run"]["skipped"] == [{"probe": "kv", "reason": "level"}]
