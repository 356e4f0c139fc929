"""probes.load: figures computed from raw runs, and real cold/warm loads of the tiny model in fresh processes."""

from __future__ import annotations

import json

import pytest

from probes import load, result
from tests.probes.conftest import run_probe


def _run(condition, order, *, import_s=2.0, from_pretrained_s=1.0, to_device_s=None, device="cpu", total_s=4.0):
    return load.LoadRun(
        condition=condition, order=order, total_s=total_s, interpreter_start_s=0.1,
        import_torch_s=import_s / 2, import_transformers_s=import_s / 2,
        cuda_init_s=0.5 if device.startswith("cuda") else None,
        from_pretrained_s=from_pretrained_s, to_device_s=to_device_s, device=device, placement="cpu-then-move",
        param_bytes=1_000_000_000, rss_after_import_bytes=100, rss_after_load_bytes=200, peak_rss_bytes=300,
        device_allocated_bytes=1_000_000_000 if device.startswith("cuda") else None,
        nvml_used_before_bytes=500 if device.startswith("cuda") else None,
        nvml_used_after_bytes=1_500 if device.startswith("cuda") else None,
    )


def _analyze(runs, **kw):
    args = dict(weight_bytes=2_000_000_000, model={"name": "synthetic"}, disk_read_gb_per_s=None,
                page_cache_read_gb_per_s=[8.0, 8.0, 8.0], h2d=None, h2d_not_measured="no GPU",
                cold_not_measured="--drop-caches not given")
    args.update(kw)
    return load.analyze(runs, **args)


def test_gb_per_s_and_import_share_come_from_the_raw_runs():
    runs = [_run("warm", i, from_pretrained_s=fp, total_s=4.0) for i, fp in enumerate([1.0, 2.0, 1.0, 0.5])]
    res = _analyze(runs)
    assert res.cold is None and res.cold_not_measured == "--drop-caches not given"
    assert res.warm.from_pretrained_gb_per_s["samples"] == [2.0, 1.0, 2.0, 4.0]  # 2e9 bytes / s
    assert res.warm.phases["import_s"]["median"] == 2.0
    assert res.warm.phases["load_s"]["samples"] == [1.0, 2.0, 1.0, 0.5]
    assert res.warm.phases["cuda_init_s"] is None and res.warm.phases["to_device_s"] is None  # not zero
    assert res.warm.import_share_of_total["median"] == 0.5
    assert res.achieved_vs_limit["warm_from_pretrained_vs_page_cache_read"]["median_ratio"] == 0.25
    texts = {v["name"]: v["text"] for v in load.verdicts(res)}
    assert texts["cold_load"] == "cold not measured: --drop-caches not given"
    assert "dominated by Python imports" not in texts["warm_load_breakdown"]  # 50 % is not "dominated"


def test_imports_are_called_dominant_only_when_every_run_says_so():
    runs = [_run("warm", i, import_s=3.0, total_s=4.0) for i in range(4)]
    texts = {v["name"]: v["text"] for v in load.verdicts(_analyze(runs))}
    assert "imports are 75 % (range 75 %-75 %) of the total: the warm start is dominated by Python imports" in (
        texts["warm_load_breakdown"])


def test_cold_vs_warm_and_gpu_limits_on_synthetic_cuda_runs():
    runs = []
    for i in range(5):
        runs.append(_run("cold", 2 * i, from_pretrained_s=2.0 + 0.01 * i, to_device_s=0.1, device="cuda:0"))
        runs.append(_run("warm", 2 * i + 1, from_pretrained_s=1.0 + 0.01 * i, to_device_s=0.1, device="cuda:0"))
    h2d = [{"gpu_index": 0, "name": "H100", "pci_bus_id": None, "copy_bytes": 1 << 30,
            "pinned_gb_per_s": {"samples": [50.0] * 5}, "pageable_gb_per_s": {"samples": [20.0] * 5}}]
    res = _analyze(runs, disk_read_gb_per_s=[2.0, 2.0, 2.0], h2d=h2d, h2d_not_measured=None, cold_not_measured=None)
    assert res.cold_vs_warm["from_pretrained_s"]["faster"] == "warm"
    assert res.cold.nvml_used_delta_bytes["median"] == 1000
    # cold from_pretrained: 2e9 B / ~2 s = ~1 GB/s against a 2 GB/s disk read
    assert res.achieved_vs_limit["cold_from_pretrained_vs_disk_read"]["median_ratio"] == pytest.approx(0.5 / 1.01)
    # to(device): 1e9 B / 0.1 s = 10 GB/s against 20 GB/s pageable and 50 GB/s pinned copies
    assert res.achieved_vs_limit["to_device_vs_h2d_pageable"]["median_ratio"] == pytest.approx(0.5)
    assert res.achieved_vs_limit["to_device_vs_h2d_pinned"]["median_ratio"] == pytest.approx(0.2)
    names = {v["name"] for v in load.verdicts(res)}
    assert {"cold_vs_warm_weights", "to_device_vs_h2d_pageable", "cold_from_pretrained_vs_disk_read"} <= names


def test_warm_load_of_tiny_model_in_fresh_processes(tiny_model):
    proc = run_probe("load", "--model", str(tiny_model), "--repeats", "2", "--read-repeats", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    res = doc["results"]
    assert doc["params"]["drop_caches"] is False
    assert res["cold"] is None and res["cold_not_measured"] == "--drop-caches not given"
    assert res["limits"]["disk_read_gb_per_s"] is None and res["limits"]["disk_read_not_measured"]
    assert res["limits"]["page_cache_read_gb_per_s"]["n"] == 2
    assert res["limits"]["h2d"] is None and "no GPU" in res["limits"]["h2d_not_measured"]
    assert len(res["priming_runs"]) == 1 and len(res["runs"]) == 2
    # Its steps, as the node's log and the controller's progress line show them.
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("probes load: [")] == [
        "probes load: [1/3] priming load (fills the page cache, not a sample), fresh process",
        "probes load: [2/3] warm load, fresh process", "probes load: [3/3] warm load, fresh process"]
    warm = res["warm"]
    assert warm["n"] == 2
    for run in res["runs"]:
        assert run["device"] == "cpu" and run["to_device_s"] is None
        assert 0 < run["from_pretrained_s"] < run["total_s"]
        assert run["import_s"] == pytest.approx(run["import_torch_s"] + run["import_transformers_s"])
        assert run["rss_after_load_bytes"] > run["rss_after_import_bytes"] > 50e6  # torch alone is more than that
        assert run["param_bytes"] == 4 * 1_016_960  # tiny model, float32
    expected = sorted(res["model"]["weight_bytes"] / 1e9 / r["from_pretrained_s"] for r in res["runs"])
    assert sorted(warm["from_pretrained_gb_per_s"]["samples"]) == pytest.approx(expected)
    texts = {v["name"]: v["text"] for v in doc["verdicts"]}
    assert texts["cold_load"] == "cold not measured: --drop-caches not given"


def test_unknown_model_is_a_clear_usage_error(tmp_path):
    proc = run_probe("load", "--model", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "not a shape" in proc.stderr and "not a directory" in proc.stderr


@pytest.mark.slow
def test_cold_load_after_dropping_the_page_cache(tiny_model):
    proc = run_probe("load", "--model", str(tiny_model), "--repeats", "1", "--read-repeats", "2",
                     "--drop-caches", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    res = doc["results"]
    assert doc["params"]["drop_caches"] is True
    assert [r["condition"] for r in res["runs"]] == ["cold", "warm"]
    assert res["cold"]["n"] == 1 and res["cold_not_measured"] is None
    assert res["limits"]["disk_read_gb_per_s"]["n"] == 2
    assert res["achieved_vs_limit"]["cold_from_pretrained_vs_disk_read"]["median_ratio"] > 0
    assert "cold_vs_warm_start" in {v["name"] for v in doc["verdicts"]}


@pytest.mark.slow
def test_cuda_asked_for_on_a_cpu_host_is_an_error_not_a_sample(tiny_model):
    proc = run_probe("load", "--model", str(tiny_model), "--repeats", "1", "--device", "cuda", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    result.validate(doc)
    assert doc["results"]["warm"] is None
    assert any("sees no CUDA device" in e for e in doc["errors"])
    assert "sees no CUDA device" in doc["results"]["limits"]["h2d_not_measured"]
    assert {"name": "measurement", "status": "fail", "text": "2 run(s) failed; see errors"} in doc["verdicts"]


def test_pci_bus_ids_from_nvml_and_cuda_compare_equal():
    from probes import worker

    assert worker._norm_bus(b"00000000:1A:00.0") == worker._norm_bus("0000:1a:00.0") == "0000:1A:00.0"
