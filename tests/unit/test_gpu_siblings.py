"""The GPUs of one node against each other, from NVML as a real H200 node answered it.

tests/fixtures/nvml/h200x1.json is NVML recorded on the one-GPU H200 box (tests/fixtures/nvml/record.py).
The several-GPU nodes below are built from that one GPU by tests/unit/nvml_replay.py's `several()`: each GPU
answers as the recorded one did, except what a test changes. They stand in for a multi-GPU recording.
"""

from __future__ import annotations

import copy

from tests.unit import nvml_replay
from tests.unit import report_samples as s

gpus_mod = s.module_util("preflight.core.gpus")
metrics = s.module_util("preflight.report.metrics")

H200 = nvml_replay.load("h200x1")


def facts_of(recording: dict) -> list[dict]:
    gpus, reason = gpus_mod.gpu_facts(
        nvml_replay.RecordedNvml(recording),
        pci_numa_node=recording["pci_numa_node"].get,
        cpu_words=recording["cpu_words"],
        node_words=recording["node_words"],
    )
    assert reason is None
    return gpus


def test_the_recorded_h200_replays_to_the_facts_it_gave_on_the_box():
    gpus = facts_of(H200)
    assert gpus == H200["gpus"]
    (gpu,) = gpus
    # What nvidia-smi printed on the box beside the recording (h200x1.nvidia-smi.csv).
    assert gpu["name"] == "NVIDIA H200" and gpu["memory_total_mib"] == 143771
    assert gpu["pcie"]["gen_max"] == 5 and gpu["pcie"]["width_max"] == 16
    assert gpu["persistence_mode"] is True and gpu["ecc"]["mode"] == "enabled"
    # The firmware gave the PCI device no NUMA node (-1): the node comes from NVML's memory affinity.
    assert H200["pci_numa_node"] == {"0000:00:06.0": -1}
    assert (gpu["numa_node"], gpu["numa_node_source"], gpu["cpu_affinity"]) == (0, "nvml", "0-15")
    assert gpu["errors"] == {}  # NumaNodeId is "not supported" on a discrete GPU, which is normal


def test_a_card_whose_slot_trains_at_x8_passes_its_own_maximum_but_not_its_siblings(tmp_path):
    # Stand-in: four copies of the recorded H200; GPU 2's slot allows x8 only (NVML then reports max 8 too).
    node = nvml_replay.several(H200, 4, change={2: {"nvmlDeviceGetMaxPcieLinkWidth": 8,
                                                     "nvmlDeviceGetCurrPcieLinkWidth": 8}})
    gpus = facts_of(node)
    assert [g["pci_bus_id"] for g in gpus] == ["0000:17:00.0", "0000:37:00.0", "0000:57:00.0", "0000:77:00.0"]
    got = s.by_id(s.one(s.host("node1", facts=s.facts(gpus=gpus)), tmp_path))
    assert got["gpu.2.pcie_width"]["status"] == "pass"  # x8 of a maximum of x8: alone, nothing is wrong
    assert [got[f"gpu.{i}.link_vs_siblings"]["status"] for i in range(4)] == ["pass", "pass", "fail", "pass"]
    link = got["gpu.2.link_vs_siblings"]
    assert (link["measured"], link["threshold"]["fail"]) == (0.5, 0.4)
    assert link["reason"].startswith(
        "GPU 2 (0000:57:00.0): PCIe link at most 31.51 GB/s, its siblings' median 63.02 GB/s (50 % below): "
    )
    assert "nvidia-smi -q -d PCIE" in link["reason"]


def test_one_gpu_has_no_siblings_to_be_compared_with(tmp_path):
    got = s.by_id(s.one(s.host("node1", facts=s.facts(gpus=facts_of(H200))), tmp_path))
    assert not [k for k in got if k.endswith("_vs_siblings")]


def per_gpu_ttft(index: int, warm_ms: float) -> dict:
    probe = s.ttft_probe(warm_ms=warm_ms, spread=0.03, seed=index)
    probe["params"] = {**probe["params"], "gpu": index}
    return probe


def per_gpu_kv(index: int, tokens: int) -> dict:
    probe = s.kv_probe([(4096, "1GiB", tokens, tokens / 4096)])
    probe["params"] = {**probe["params"], "gpu": index}
    return probe


def test_per_gpu_vllm_runs_flag_the_slow_card_and_the_one_with_less_kv_room(tmp_path):
    gpus = facts_of(nvml_replay.several(H200, 4))
    probes = {f"ttft_per_gpu_{i}": per_gpu_ttft(i, ms) for i, ms in enumerate([20.0, 20.4, 27.0, 19.8])}
    probes |= {f"kv_per_gpu_{i}": per_gpu_kv(i, t) for i, t in enumerate([65536, 65536, 65536, 52000])}
    probes["ttft"] = copy.deepcopy(probes["ttft_per_gpu_0"])  # the certificate run: not a per-GPU result
    probes["ttft"]["params"].pop("gpu")
    doc = s.host("node1", facts=s.facts(gpus=gpus), probes=probes)
    runs = metrics.per_gpu(doc)
    assert sorted(runs) == ["kv_per_gpu", "ttft_per_gpu"]
    assert [r["gpu_index"] for r in runs["ttft_per_gpu"]] == [0, 1, 2, 3]
    got = s.by_id(s.one(doc, tmp_path))
    assert [got[f"gpu.{i}.ttft_per_gpu_vs_siblings"]["status"] for i in range(4)] == ["pass", "pass", "warn", "pass"]
    slow = got["gpu.2.ttft_per_gpu_vs_siblings"]
    assert 0.15 < slow["measured"] < 0.5
    assert slow["reason"].startswith("GPU 2 (0000:57:00.0): warm TTFT median (ttft_per_gpu) ")
    assert "% above): the same server and requests are slower on this GPU" in slow["reason"]
    assert [got[f"gpu.{i}.kv_per_gpu_vs_siblings"]["status"] for i in range(4)] == ["pass", "pass", "pass", "warn"]
    assert "(21 % below)" in got["gpu.3.kv_per_gpu_vs_siblings"]["reason"]



def test_the_host_report_puts_the_gpus_side_by_side(tmp_path):
    gpus = facts_of(nvml_replay.several(H200, 2))
    probes = {f"ttft_per_gpu_{i}": per_gpu_ttft(i, ms) for i, ms in enumerate([20.0, 27.0])}
    doc = s.one(s.host("node1", facts=s.facts(gpus=gpus), probes=probes), tmp_path)
    text = s.module_util("preflight.report.render_markdown").host_report(doc)
    table = text.split("### GPUs side by side", 1)[1].split("\n\n", 2)[2].splitlines()
    assert table[0] == ("| GPU | PCI bus | NUMA (CPUs) | PCIe max GB/s | host-to-device pinned GB/s "
                        "| warm TTFT ms (ttft_per_gpu) |")
    runs = {r["gpu_index"]: r["ttft_warm_ms"] for r in metrics.per_gpu(doc)["ttft_per_gpu"]}
    assert table[2] == f"| 0 | 0000:17:00.0 | 0 (0-15) | 63.02 | - | {runs[0]:.4g} |"
    assert table[3] == f"| 1 | 0000:37:00.0 | 0 (0-15) | 63.02 | - | {runs[1]:.4g} |"
    assert 26 < runs[1] < 28
    page = s.module_util("preflight.report.render_html").host_page(doc)  # the HTML page carries the same table
    assert "GPUs side by side" in page and "warm TTFT ms (ttft_per_gpu)" in page


def test_a_slower_median_inside_the_noise_of_its_repeats_is_not_a_finding(tmp_path):
    gpus = facts_of(nvml_replay.several(H200, 3))
    # GPU 2's warm TTFT swings +-60 % over its 9 requests: its median is 24 % up, but its interval holds 20 ms.
    probes = {"ttft_per_gpu_0": per_gpu_ttft(0, 20.0), "ttft_per_gpu_1": per_gpu_ttft(1, 20.0)}
    noisy = s.ttft_probe(warm_ms=25.0, spread=0.6, seed=1)
    noisy["params"] = {**noisy["params"], "gpu": 2}
    probes["ttft_per_gpu_2"] = noisy
    ci = metrics.per_gpu(s.host("node1", probes=probes))["ttft_per_gpu"][2]["ttft_warm_ci_ms"]
    got = s.by_id(s.one(s.host("node1", facts=s.facts(gpus=gpus), probes=probes), tmp_path))
    check = got["gpu.2.ttft_per_gpu_vs_siblings"]
    assert check["measured"] > 0.15 and ci[0] < 20.1 < ci[1]
    assert check["status"] == "pass" and ", inside noise: this GPU's 95 % interval " in check["reason"]
