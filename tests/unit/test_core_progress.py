"""core/progress.py (a probe's node log, what the console shows of it) and core/gpus.py server_cpus (where a
per-GPU server's threads are pinned): plain files in a temporary directory, no playbook."""

from __future__ import annotations

import time

from tests.moduleutils import module_util

progress = module_util("preflight.core.progress")
gpus = module_util("preflight.core.gpus")


def test_a_log_name_is_safe_for_any_planned_name():
    assert progress.log_path("/var/log/preflight", "kv_sweep") == "/var/log/preflight/kv_sweep.log"
    assert progress.log_path("/l", "ttft_per_gpu_0+kv_per_gpu_0 (side by side on GPUs 0, 1)") == \
        "/l/ttft_per_gpu_0+kv_per_gpu_0_side_by_side_on_GPUs_0_1.log"
    assert progress.log_path("/l", "../../etc/passwd").startswith("/l/")


def test_the_log_frames_the_probe_s_lines_and_says_when_it_ended(tmp_path):
    log = str(tmp_path / "logs" / "kv.log")
    handle = progress.open_log(log, "kv")
    assert progress.read(log) == {"started": progress.read(log)["started"], "done": False, "step": "", "probe": "kv"}
    handle.write("probes kv: [1/5] max-model-len 4096, 0.5\nprobes kv: [2/5] max-model-len 16384, 0.5\n")
    handle.close()
    state = progress.read(log)
    assert (state["done"], state["step"]) == (False, "probes kv: [2/5] max-model-len 16384, 0.5")
    stderr = progress.close_log(log, 0, None)
    assert stderr == "probes kv: [1/5] max-model-len 4096, 0.5\nprobes kv: [2/5] max-model-len 16384, 0.5\n"
    assert progress.read(log)["done"] is True


def test_the_heartbeat_is_armed_by_the_first_wait_not_by_the_start(tmp_path):
    log = str(tmp_path / "t.log")
    progress.open_log(log, "t").close()
    assert progress.heartbeat_age(log) is None  # a host still queued for a fork is never stopped
    state = progress.wait(log, 0.1, poll_s=0.05)
    assert state["done"] is False and progress.heartbeat_age(log) < 5
    progress.close_log(log, 0, None)
    assert progress.wait(log, 30)["done"] is True  # returns at once when the probe ended


def test_the_console_line_names_host_probe_step_elapsed_budget_and_log():
    now = float(int(time.time()))
    state = {"started": now - 45, "done": False, "step": "probes kv: [2/5] max-model-len 16384, 0.5", "probe": "kv"}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 212))
    line = progress.line("node1", "kv_sweep", state, "/var/log/preflight/kv_sweep.log", started, 3600, now=now)
    assert line == ("node1 · probe kv_sweep · probes kv: [2/5] max-model-len 16384, 0.5 · 45 s · "
                    "run 212 s of the level's 3600 s budget · log node1:/var/log/preflight/kv_sweep.log")
    bare = progress.line("n", "x", {"started": None, "step": ""}, "/l/x.log")
    assert bare == "n · probe x · starting · log n:/l/x.log"


def test_per_gpu_servers_are_pinned_to_their_gpu_s_numa_node_only_where_there_are_several():
    two = {"nodes": [{"id": 0, "cpus": [0, 1, 2, 3]}, {"id": 1, "cpus": [4, 5, 6, 7]}]}
    listed = [{"index": 0, "numa_node": 1}, {"index": 1, "numa_node": 0}, {"index": 2, "numa_node": None}]
    assert gpus.server_cpus(two, listed) == {0: [4, 5, 6, 7], 1: [0, 1, 2, 3], 2: None}
    assert gpus.server_cpus({"nodes": [{"id": 0, "cpus": [0, 1]}]}, listed) == {0: None, 1: None, 2: None}
    assert gpus.server_cpus({"nodes": []}, []) == {}
