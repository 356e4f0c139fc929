"""Fleet outliers (median absolute deviation), recommendations and history, on documents with known answers."""

from __future__ import annotations

import json

import pytest

from tests.unit import report_samples as s

fleet = s.module_util("preflight.report.fleet")
history = s.module_util("preflight.report.history")
recommendations = s.module_util("preflight.report.recommendations")


def ttft_fleet(warm_ms: dict[str, float], groups=("h100",)) -> list[dict]:
    return [
        s.host(name, groups, probes={"ttft": s.ttft_probe(warm_ms=ms, seed=i)})
        for i, (name, ms) in enumerate(sorted(warm_ms.items()))
    ]


def outliers_of(run: dict) -> dict[str, list[dict]]:
    return {d["host"]: d["outliers"] for d in run["docs"]}


def test_slow_host_is_an_outlier_even_though_it_passes_its_threshold(tmp_path):
    run = s.build(ttft_fleet({"node1": 20.0, "node2": 21.0, "node3": 19.5, "node4": 20.5, "slow5": 60.0}), tmp_path)
    found = outliers_of(run)
    assert [o["metric"] for o in found["slow5"]] == ["ttft.warm_ms"]
    o = found["slow5"][0]
    assert (o["direction"], o["worse"], o["group"], o["hosts"]) == ("high", True, "h100", 5)
    assert o["fleet_median"] == pytest.approx(20.5, rel=0.05)
    assert o["score"] > 3.5
    assert all(not found[h] for h in ("node1", "node2", "node3", "node4"))
    slow = next(d for d in run["docs"] if d["host"] == "slow5")
    assert s.by_id(slow)["probe.ttft.warm_ms"]["status"] == "pass"  # 60 ms is under the 200 ms warn


def test_no_outlier_inside_the_spread_of_the_fleet(tmp_path):
    run = s.build(ttft_fleet({"node1": 20.0, "node2": 24.0, "node3": 17.0, "node4": 22.0, "node5": 19.0}), tmp_path)
    assert not any(outliers_of(run).values())


def test_two_hosts_are_not_enough_to_call_an_outlier(tmp_path):
    run = s.build(ttft_fleet({"node1": 20.0, "node2": 80.0}), tmp_path)
    assert not any(outliers_of(run).values())


def test_hosts_are_compared_within_their_gpu_class_only(tmp_path):
    items = ttft_fleet({"h1": 20.0, "h2": 20.5, "h3": 19.8}) + ttft_fleet(
        {"l1": 60.0, "l2": 61.0, "l3": 59.0}, groups=("l40s",)
    )
    assert not any(outliers_of(s.build(items, tmp_path)).values())


def test_identical_fleet_flags_the_one_that_differs_beyond_the_minimum(tmp_path):
    docs = [
        {
            "host": h,
            "status": "ok",
            "gpu_class": "all",
            "probes": {},
            "facts": {"gpus": [{"index": 0, "pcie": {"width_current": w}}]},
        }
        for h, w in [("a", 16), ("b", 16), ("c", 16), ("d", 8)]
    ]
    found = fleet.outliers(docs)
    assert [o["metric"] for o in found["d"]] == ["gpu.0.pcie_width"]
    assert found["d"][0]["score"] is None and found["d"][0]["worse"] is True
    assert "the rest of the class is identical" in fleet.describe_outlier(found["d"][0])


def test_failed_and_unreachable_hosts_are_left_out_of_the_fleet_median(tmp_path):
    items = ttft_fleet({"node1": 20.0, "node2": 21.0, "node4": 60.0}) + [s.failed("node3"), s.unreachable("dead1")]
    found = outliers_of(s.build(items, tmp_path))
    assert found["node3"] == [] and found["dead1"] == []


# --- recommendations ------------------------------------------------------------------------------------


def test_thp_always_with_noisy_latency_recommends_madvise_with_evidence(tmp_path):
    item = s.host(
        "node1",
        facts=s.facts(enabled="always"),
        desired=s.desired(enabled="always"),
        probes={"ttft": s.ttft_probe(warm_ms=30.0, spread=0.6)},
    )
    recs = {r["id"]: r for r in s.one(item, tmp_path)["recommendations"]}
    rec = recs["thp.madvise_for_latency_spread"]
    assert (rec["variable"], rec["value"], rec["current"]) == ("thp_enabled", "madvise", "always")
    assert rec["evidence"][0] == {"what": "THP enabled (live)", "value": "always", "unit": None}
    assert any("ttft" in e["what"] and e["value"] > 0.1 for e in rec["evidence"][1:])


def test_thp_always_with_steady_latency_recommends_nothing(tmp_path):
    item = s.host(
        "node1",
        facts=s.facts(enabled="always"),
        desired=s.desired(enabled="always"),
        probes={"ttft": s.ttft_probe(warm_ms=30.0, spread=0.02)},
    )
    assert [r["id"] for r in s.one(item, tmp_path)["recommendations"] if r["variable"] == "thp_enabled"] == []


def test_jemalloc_clearly_faster_recommends_enabling_it(tmp_path):
    item = s.host("node1", probes={"generate": s.allocator_probe(glibc_s=1.50, jemalloc_s=1.20)})
    recs = [r for r in s.one(item, tmp_path)["recommendations"] if r["id"] == "allocator.enable_jemalloc"]
    assert len(recs) == 1
    assert (recs[0]["variable"], recs[0]["value"]) == (recommendations.JEMALLOC_SWITCH, True)
    assert recs[0]["evidence"][0]["value"].startswith("jemalloc faster by")


def test_allocator_difference_inside_noise_recommends_nothing(tmp_path):
    item = s.host("node1", probes={"generate": s.allocator_probe(glibc_s=1.50, jemalloc_s=1.48, spread=0.2)})
    doc = s.one(item, tmp_path)
    comparison = doc["probes"]["generate"]["results"]["comparisons"]["jemalloc_vs_glibc"]["steady_state_s"]
    assert comparison["inside_noise"] is True  # the premise: the probe itself calls it noise
    assert not [r for r in doc["recommendations"] if r["id"].startswith("allocator.")]


def test_unavailable_persistence_method_recommends_dropping_it_for_this_host(tmp_path):
    recs = {r["id"]: r for r in s.one(s.host("node1"), tmp_path)["recommendations"]}
    rec = recs["thp.persist_only_available"]
    assert (rec["variable"], rec["value"], rec["current"]) == (
        "thp_persist",
        ["systemd"],
        ["systemd", "kernel_cmdline"],
    )
    assert "Set it in host_vars/<host>.yml (or group_vars/<class>.yml" in rec["reason"]
    assert {"what": "kernel_cmdline persistence", "value": "unavailable", "unit": None} in rec["evidence"]


def test_no_persistence_recommendation_when_nothing_else_persists(tmp_path):
    persistence = [{"method": "kernel_cmdline", "state": "unavailable", "path": None, "detail": "no GRUB"}]
    item = s.host("node1", role_results={"thp": s.thp_result(persistence=persistence)})
    assert not [r for r in s.one(item, tmp_path)["recommendations"] if r["variable"] == "thp_persist"]


def test_hugepage_shortfall_recommends_the_count_the_kernel_gave(tmp_path):
    item = s.host(
        "node1",
        desired=s.desired(hugepages_count=512, shortfall="warn"),
        role_results={"thp": s.thp_result(), "hugepages": s.hugepages_result(asked=512, got=300)},
    )
    rec = next(r for r in s.one(item, tmp_path)["recommendations"] if r["variable"] == "hugepages_count")
    assert (rec["value"], rec["current"]) == (300, 512)


def test_unreachable_host_gets_no_recommendations(tmp_path):
    assert s.one(s.unreachable("dead1"), tmp_path)["recommendations"] == []


def thp_ab(medians: dict[str, float], spread: float) -> dict:
    return {f"thp_ab_{mode}": s.load_probe(warm_s=(15.0, m), spread=spread) for mode, m in medians.items()}


def test_thp_mode_faster_beyond_noise_in_the_ab_is_recommended(tmp_path):
    item = s.host("node1", probes=thp_ab({"always": 0.60, "madvise": 0.90, "never": 0.95}, spread=0.02))
    rec = next(r for r in s.one(item, tmp_path)["recommendations"] if r["variable"] == "thp_enabled")
    assert (rec["id"], rec["value"], rec["current"]) == ("thp.policy_ab.always", "always", "madvise")
    assert rec["evidence"][0]["what"] == "warm load_s under THP always: median (95 % CI)"


def test_thp_ab_inside_noise_recommends_nothing(tmp_path):
    item = s.host("node1", probes=thp_ab({"always": 0.85, "madvise": 0.90, "never": 0.95}, spread=0.3))
    assert not [r for r in s.one(item, tmp_path)["recommendations"] if r["variable"] == "thp_enabled"]


# --- history ---------------------------------------------------------------------------------------------


def write_previous(tmp_path, item: dict, run_id: str, when) -> dict:
    run = s.build([item], tmp_path, run_id=run_id, now=when, compare_history=False)
    s.pipeline.write_run(run, str(tmp_path))
    return run["docs"][0]


def test_regression_beyond_noise_is_called_out_against_the_previous_run(tmp_path):
    from datetime import timedelta

    write_previous(
        tmp_path, s.host("node1", probes={"ttft": s.ttft_probe(warm_ms=20.0)}), "run-1", s.NOW - timedelta(days=1)
    )
    doc = s.build([s.host("node1", probes={"ttft": s.ttft_probe(warm_ms=45.0)})], tmp_path)["docs"][0]
    hist = doc["history"]
    assert hist["previous_run_id"] == "run-1"
    regressed = {r["what"]: r for r in hist["regressions"]}
    warm = regressed["ttft.warm.completions.ttft_ms"]
    assert "the confidence intervals do not overlap" in warm["reason"]
    assert warm["after"] > warm["before"] and warm["unit"] == "ms"


def test_change_inside_noise_is_not_a_regression(tmp_path):
    from datetime import timedelta

    write_previous(
        tmp_path,
        s.host("node1", probes={"ttft": s.ttft_probe(warm_ms=20.0, spread=0.3)}),
        "run-1",
        s.NOW - timedelta(days=1),
    )
    doc = s.build([s.host("node1", probes={"ttft": s.ttft_probe(warm_ms=21.0, spread=0.3, seed=7)})], tmp_path)["docs"][
        0
    ]
    assert doc["history"]["regressions"] == []
    assert doc["history"]["improvements"] == []


def test_check_that_went_from_pass_to_fail_is_a_regression_and_setting_changes_are_listed(tmp_path):
    from datetime import timedelta

    write_previous(tmp_path, s.host("node1"), "run-1", s.NOW - timedelta(hours=2))
    doc = s.build([s.host("node1", facts=s.facts(enabled="always"))], tmp_path)["docs"][0]
    hist = doc["history"]
    assert {"what": "check thp.enabled", "before": "pass", "after": "fail"}.items() <= hist["regressions"][0].items()
    assert {"what": "THP enabled", "before": "madvise", "after": "always"}.items() <= hist["changes"][1].items()


def test_previous_run_is_the_newest_earlier_ok_document_of_that_host(tmp_path):
    from datetime import timedelta

    write_previous(tmp_path, s.host("node1"), "20261120T000000Z-aaaa", s.NOW - timedelta(days=3))
    write_previous(tmp_path, s.host("node1"), "20261122T000000Z-bbbb", s.NOW - timedelta(days=1))
    write_previous(tmp_path, s.unreachable("node1"), "20261122T120000Z-cccc", s.NOW - timedelta(hours=12))
    (tmp_path / "20261122T130000Z-dddd").mkdir()
    (tmp_path / "20261122T130000Z-dddd" / "node1.json").write_text("{half a document")
    found = history.previous_documents(str(tmp_path), "now", "2026-11-23T15:00:00Z", ["node1", "node9"])
    assert list(found) == ["node1"]
    assert found["node1"]["run_id"] == "20261122T000000Z-bbbb"
    assert json.loads((tmp_path / "20261122T120000Z-cccc" / "node1.json").read_text())["status"] == "unreachable"
