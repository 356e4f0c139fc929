"""Checks are a pure function of the host document: known documents in, known verdicts and reasons out."""

from __future__ import annotations

import pytest

from tests.unit import report_samples as s

checks = s.module_util("preflight.report.checks")
document = s.module_util("preflight.core.document")
thresholds = s.module_util("preflight.core.thresholds")

THP = "/sys/kernel/mm/transparent_hugepage"


def test_tuned_host_passes_thp_and_warns_on_the_unavailable_bootloader(tmp_path):
    doc = s.one(s.host("node1"), tmp_path)
    got = s.by_id(doc)
    assert [got[k]["status"] for k in ("thp.enabled", "thp.defrag", "thp.khugepaged_defrag")] == ["pass"] * 3
    assert got["thp.enabled"]["reason"] == f"{THP}/enabled reads madvise, as thp_enabled asks."
    assert got["thp.khugepaged_defrag"]["measured"] == "1"
    persisted = got["thp.persisted"]
    assert persisted["status"] == "warn"
    assert persisted["measured"] == {"systemd": "installed", "kernel_cmdline": "unavailable"}
    assert "kernel_cmdline unavailable at /etc/default/grub: no bootloader config found" in persisted["reason"]
    assert doc["verdict"] == "warn"


def test_thp_mismatch_fails_and_names_the_file_the_variable_and_what_to_do(tmp_path):
    doc = s.one(s.host("node1", facts=s.facts(enabled="always")), tmp_path)
    c = s.by_id(doc)["thp.enabled"]
    assert (c["status"], c["measured"], c["expected"]) == ("fail", "always", "madvise")
    assert c["reason"].startswith(f"{THP}/enabled reads always but thp_enabled is madvise. The value did not take")
    assert "--limit node1" in c["reason"]
    assert doc["verdict"] == "fail"


def test_thp_mismatch_in_check_mode_says_nothing_was_changed(tmp_path):
    item = s.host("node1", facts=s.facts(defrag="madvise"), role_results={"thp": s.thp_result(check_mode=True)})
    c = s.by_id(s.one(item, tmp_path))["thp.defrag"]
    assert c["status"] == "fail"
    assert "This was a check-mode run, so nothing was changed" in c["reason"]


def test_null_desired_value_is_skipped_not_judged(tmp_path):
    item = s.host("node1", desired=s.desired(defrag=None))
    c = s.by_id(s.one(item, tmp_path))["thp.defrag"]
    assert (c["status"], c["reason"]) == ("skip", f"thp_defrag is null: Preflight leaves {THP}/defrag as it is.")


def test_kernel_without_thp_fails_with_the_reason_node_facts_gave(tmp_path):
    facts = s.facts()
    facts["thp"] = {"supported": False, "reason": "no /sys/kernel/mm/transparent_hugepage"}
    c = s.by_id(s.one(s.host("node1", facts=facts), tmp_path))["thp.enabled"]
    assert c["status"] == "fail"
    assert "This kernel has no THP (no /sys/kernel/mm/transparent_hugepage)" in c["reason"]


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ({"systemd": "installed"}, "pass"),
        ({"systemd": "unchanged", "kernel_cmdline": "unchanged"}, "pass"),
        ({"systemd": "installed", "kernel_cmdline": "unavailable"}, "warn"),
        ({"systemd": "failed", "kernel_cmdline": "unavailable"}, "fail"),
    ],
)
def test_persisted_is_the_worst_method(tmp_path, states, status):
    persistence = [{"method": m, "state": st, "path": None, "detail": f"{m} detail"} for m, st in states.items()]
    item = s.host("node1", role_results={"thp": s.thp_result(persistence=persistence)})
    assert s.by_id(s.one(item, tmp_path))["thp.persisted"]["status"] == status


def test_nothing_persisted_is_a_warning_that_says_the_values_are_lost_at_reboot(tmp_path):
    item = s.host("node1", role_results={"thp": s.thp_result(persistence=[])})
    c = s.by_id(s.one(item, tmp_path))["thp.persisted"]
    assert c["status"] == "warn"
    assert c["reason"] == (
        "Nothing persists the thp settings (thp_persist is empty): the live values are lost at the next reboot."
    )


def test_reboot_required_turns_a_persisted_pass_into_a_warning(tmp_path):
    persistence = [{"method": "kernel_cmdline", "state": "installed", "path": "/etc/default/grub", "detail": None}]
    item = s.host("node1", role_results={"thp": s.thp_result(persistence=persistence, reboot_required=True)})
    c = s.by_id(s.one(item, tmp_path))["thp.persisted"]
    assert c["status"] == "warn"
    assert "a reboot is needed" in c["reason"]


def test_conflicting_tuner_is_a_warning_that_names_it(tmp_path):
    conflict = {
        "source": "tuned profile throughput-performance sets transparent_hugepage=always",
        "path": "/usr/lib/tuned/throughput-performance/tuned.conf",
    }
    item = s.host("node1", role_results={"thp": s.thp_result(conflicts=[conflict])})
    c = s.by_id(s.one(item, tmp_path))["thp.conflicts"]
    assert c["status"] == "warn"
    assert "tuned profile throughput-performance sets transparent_hugepage=always" in c["reason"]


@pytest.mark.parametrize(("policy", "status"), [("fail", "fail"), ("warn", "warn")])
def test_hugepage_shortfall_follows_the_roles_policy(tmp_path, policy, status):
    item = s.host(
        "node1",
        facts=s.facts(hugepages_2m=300),
        desired=s.desired(hugepages_count=512, shortfall=policy),
        role_results={"thp": s.thp_result(), "hugepages": s.hugepages_result(asked=512, got=300)},
    )
    c = s.by_id(s.one(item, tmp_path))["hugepages.total"]
    assert (c["status"], c["measured"], c["expected"]) == (status, 300, 512)
    assert c["reason"].startswith("Asked for 512 pages, the kernel reserved 300: memory too fragmented")


def test_hugepages_reserved_as_asked_pass_and_nothing_asked_is_skipped(tmp_path):
    asked = s.host(
        "node1",
        facts=s.facts(hugepages_2m=512),
        desired=s.desired(hugepages_count=512),
        role_results={"thp": s.thp_result(), "hugepages": s.hugepages_result(asked=512, got=512)},
    )
    got = s.by_id(s.one(asked, tmp_path))
    assert got["hugepages.total"]["status"] == "pass"
    assert got["hugepages.persisted"]["status"] == "pass"
    alone = s.host("node2", role_results={"thp": s.thp_result(), "hugepages": s.hugepages_result()})
    got = s.by_id(s.one(alone, tmp_path))
    assert got["hugepages.total"]["status"] == "skip"
    assert got["hugepages.persisted"]["status"] == "skip"


def jemalloc_result(verified: dict[str, bool | None], enabled=True, scope="service") -> dict:
    details = {
        True: "main process 4242 maps /usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        False: "main process 4242 does not map /usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        None: "verification skipped: systemd is not running",
    }
    services = [
        {
            "name": n,
            "unit": f"{n}.service",
            "dropin_path": f"/etc/systemd/system/{n}.service.d/preflight.conf",
            "changed": True,
            "verified": v,
            "verify_detail": details[v],
        }
        for n, v in verified.items()
    ]
    return {
        "role": "jemalloc",
        "enabled": enabled,
        "package": "libjemalloc2",
        "library_path": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        "scope": scope,
        "services": services,
        "settings": [],
        "conflicts": [],
        "verified": all(verified.values()),
        "reboot_required": False,
        "persistence": [
            {
                "method": "systemd_dropin",
                "path": svc["dropin_path"],
                "state": "installed",
                "detail": f"LD_PRELOAD and MALLOC_CONF for {svc['unit']}",
            }
            for svc in services
        ],
    }


def test_jemalloc_drop_in_present_and_mapped_pass_unmapped_fails_unverifiable_is_skipped(tmp_path):
    result = jemalloc_result({"preflight-vllm": True, "tgi": False, "sglang": None})
    got = s.by_id(s.one(s.host("node1", role_results={"thp": s.thp_result(), "jemalloc": result}), tmp_path))
    assert got["jemalloc.library"]["status"] == "pass"
    assert [got[f"jemalloc.dropin.{n}_service"]["status"] for n in ("preflight-vllm", "tgi", "sglang")] == ["pass"] * 3
    assert got["jemalloc.mapped.preflight-vllm_service"]["status"] == "pass"
    bad = got["jemalloc.mapped.tgi_service"]
    assert bad["status"] == "fail"
    assert bad["reason"] == (
        "main process 4242 does not map /usr/lib/x86_64-linux-gnu/libjemalloc.so.2. tgi.service "
        "still runs with glibc malloc: restart it so it picks the drop-in up, then rerun."
    )
    assert got["jemalloc.mapped.sglang_service"]["status"] == "skip"
    unverified = got["jemalloc.mapped.sglang_service"]["reason"]
    assert unverified == "Not verified: verification skipped: systemd is not running."


def test_jemalloc_disabled_is_skipped(tmp_path):
    result = jemalloc_result({}, enabled=False)
    got = s.by_id(s.one(s.host("node1", role_results={"thp": s.thp_result(), "jemalloc": result}), tmp_path))
    assert got["jemalloc.library"]["status"] == "skip"


def test_gpu_checks_catch_a_narrow_link_ecc_errors_busy_memory_and_pending_remaps(tmp_path):
    gpus = [s.gpu(0), s.gpu(1, width=8, used_mib=40000, persistence=False, uncorrected=2, remap_pending=1)]
    item = s.host("node1", facts=s.facts(gpus=gpus), thresholds={"gpu_count": 2})
    got = s.by_id(s.one(item, tmp_path))
    assert got["gpu.count"]["status"] == "pass"
    assert {k: got[k]["status"] for k in got if k.startswith("gpu.0.")} == {
        "gpu.0.pcie_width": "pass",
        "gpu.0.memory_free": "pass",
        "gpu.0.persistence_mode": "pass",
        "gpu.0.ecc": "pass",
        "gpu.0.row_remapping": "pass",
        "gpu.0.link_vs_siblings": "pass",  # both GPUs can do x16: the narrow link is a training problem
    }
    assert got["gpu.1.pcie_width"]["status"] == "fail"
    assert got["gpu.1.pcie_width"]["reason"].startswith("Link trained at x8 of x16")
    assert got["gpu.1.memory_free"]["status"] == "warn"  # 49 % used: above warn 5 %, below fail 50 %
    assert got["gpu.1.memory_free"]["measured"] == pytest.approx(49.04, abs=0.01)
    assert got["gpu.1.persistence_mode"]["status"] == "warn"
    assert got["gpu.1.ecc"]["measured"] == 2  # volatile only; the aggregate counter is history
    assert got["gpu.1.ecc"]["status"] == "fail"
    assert got["gpu.1.row_remapping"]["status"] == "warn"


def test_missing_gpu_fails_against_the_class_count_and_says_where_to_look(tmp_path):
    item = s.host("node1", facts=s.facts(gpus=[s.gpu(0)]), thresholds={"gpu_count": 8})
    c = s.by_id(s.one(item, tmp_path))["gpu.count"]
    assert (c["status"], c["measured"], c["expected"]) == ("fail", 1, 8)
    assert "nvidia-smi" in c["reason"]


def test_probe_figures_are_judged_with_value_threshold_and_reason(tmp_path):
    item = s.host("node1", probes={"ttft": s.ttft_probe(cold_ms=1500.0, warm_ms=30.0)})
    got = s.by_id(s.one(item, tmp_path))
    cold = got["probe.ttft.cold_ms"]
    assert cold["status"] == "warn"  # default warn 1000 ms, fail 5000 ms
    assert (cold["measured"], cold["unit"]) == (1500.0, "ms")
    assert cold["threshold"] == {"direction": "max", "warn": 1000, "fail": 5000}
    assert cold["reason"].startswith(
        "Time to first token of the first request: 1500 ms; should stay at or below "
        "1000 ms; fails above 5000 ms. The first request pays for compilation"
    )
    warm = got["probe.ttft.warm_ms"]
    assert warm["status"] == "pass"
    assert "(median of 9)" in warm["reason"]


def test_class_thresholds_override_defaults(tmp_path):
    item = s.host(
        "node1", probes={"ttft": s.ttft_probe(warm_ms=30.0)}, thresholds={"ttft_warm_ms": {"warn": 10, "fail": 25}}
    )
    c = s.by_id(s.one(item, tmp_path))["probe.ttft.warm_ms"]
    assert c["status"] == "fail"
    assert c["threshold"] == {"direction": "max", "warn": 10, "fail": 25}


def test_noisy_probe_is_flagged_by_its_spread(tmp_path):
    item = s.host("node1", probes={"ttft": s.ttft_probe(warm_ms=30.0, spread=0.6)})
    c = s.by_id(s.one(item, tmp_path))["probe.ttft.warm_ms.spread"]
    assert c["status"] == "warn"
    assert c["measured"] > 0.1
    assert "differences smaller than that are noise" in c["reason"]


def test_a_missing_measurement_is_skipped_never_zero(tmp_path):
    env = s.envelope("ttft", {"warm": {"completions": {"ttft_ms": s.stats.summarize([], "ms")}}})
    got = s.by_id(s.one(s.host("node1", probes={"ttft": env}), tmp_path))
    for cid in ("probe.ttft.warm_ms", "probe.ttft.cold_ms"):
        assert got[cid]["status"] == "skip"
        assert got[cid]["measured"] is None
        assert "not measured" in got[cid]["reason"]


def test_load_times_and_weight_speed_are_judged_against_the_class(tmp_path):
    item = s.host("node1", probes={"load": s.load_probe(cold_s=(200.0, 150.0), warm_s=(20.0, 0.6))})
    got = s.by_id(s.one(item, tmp_path))
    assert got["probe.load.cold_total_s"]["status"] == "fail"  # 200 s > fail 180 s
    assert got["probe.load.warm_total_s"]["status"] == "pass"
    fraction = got["probe.load.weights_fraction_of_disk"]
    # 3.09 GB in 150 s is 0.02 GB/s against a 1.7 GB/s disk: about 1 % of it
    assert fraction["measured"] == pytest.approx(0.0121, rel=0.1)
    assert fraction["status"] == "fail" and fraction["threshold"]["direction"] == "min"


def test_kv_concurrency_below_target_fails_and_recommends_the_length_that_fits(tmp_path):
    kv = s.kv_probe([(4096, "1GiB", 8192, 2.0), (8192, "1GiB", None, None)])
    doc = s.one(s.host("node1", probes={"kv": kv}), tmp_path)
    got = s.by_id(doc)
    c = got["probe.kv.max_concurrency.4096.1GiB"]
    assert (c["status"], c["measured"]) == ("warn", 2.0)  # warn below 8, fail below 1
    assert got["probe.kv.max_concurrency.8192.1GiB"]["status"] == "skip"
    assert "max-model-len 8192 does not fit" in got["probe.kv.max_concurrency.8192.1GiB"]["reason"]
    rec = next(r for r in doc["recommendations"] if r["variable"] == "probe_max_model_len")
    assert (rec["value"], rec["current"]) == (1024, 4096)  # 8192 tokens / 8 requests, in 16-token blocks


def test_batching_that_barely_scales_warns(tmp_path):
    flat = s.batching_probe({1: 100.0, 4: 140.0, 8: 150.0}, {1: 20.0, 4: 60.0, 8: 120.0})
    got = s.by_id(s.one(s.host("node1", probes={"batching": flat}), tmp_path))
    assert got["probe.batching.speedup"]["measured"] == pytest.approx(1.5, rel=0.1)
    assert got["probe.batching.speedup"]["status"] == "warn"  # below warn 2x, above fail 1x
    assert got["probe.batching.speedup"]["title"] == "Throughput speed-up at concurrency 8 over sequential"
    assert got["probe.batching.ttft_p95_ms"]["status"] == "pass"


def test_gpu_much_slower_than_its_siblings_is_flagged(tmp_path):
    load = s.load_probe()
    load["results"]["limits"]["h2d"] = [
        {
            "gpu_index": i,
            "name": "H100",
            "pci_bus_id": f"0000:{i}",
            "copy_bytes": 1 << 30,
            "pinned_gb_per_s": s.stats.summarize(s.samples(gbs, 0.02, 5, i), "GB/s"),
            "pageable_gb_per_s": s.stats.summarize(s.samples(gbs / 5, 0.02, 5, i), "GB/s"),
        }
        for i, gbs in enumerate([55.0, 54.0, 55.5, 27.0])
    ]
    got = s.by_id(s.one(s.host("node1", probes={"load": load}), tmp_path))
    assert [got[f"gpu.{i}.h2d_vs_siblings"]["status"] for i in range(4)] == ["pass", "pass", "pass", "fail"]
    assert got["gpu.3.h2d_vs_siblings"]["reason"].startswith(
        "GPU 3 (0000:3): host-to-device copy (pinned) 27.05 GB/s, its siblings' median 55.02 GB/s (51 % below): "
    )


def test_failed_probe_and_an_overrun_budget_are_checks(tmp_path):
    run = {
        "level": "standard",
        "budget_s": 900,
        "planned": ["load", "ttft"],
        "ran": ["load"],
        "failed": [
            {
                "probe": "ttft",
                "msg": "vLLM did not become ready within 900 s",
                "rc": None,
                "timed_out": True,
                "stderr_tail": "RuntimeError: not enough memory for the KV cache",
            }
        ],
        "skipped": [],
        "phases": [{"name": "facts", "duration_s": 3.1, "status": "ok"}],
        "total_s": 1250.0,
        "certify_s": 1200.0,
        "over_budget": True,
    }
    doc = s.one(s.host("node1", run=run, level="quick"), tmp_path)
    got = s.by_id(doc)
    assert doc["level"] == "standard"  # the run's level, not the variable's
    failed = got["run.probe.ttft"]
    assert failed["status"] == "fail"
    assert failed["reason"] == (
        "The ttft probe failed (timed out): vLLM did not become ready within 900 s. End of its stderr: "
        "RuntimeError: not enough memory for the KV cache Fix the cause and rerun it alone with --tags ttft "
        "--limit node1."
    )
    assert got["run.budget"]["status"] == "warn"
    assert got["run.budget"]["threshold"] == {"direction": "max", "warn": 900.0, "fail": None}


def test_bad_thresholds_are_all_reported_at_once():
    with pytest.raises(thresholds.ThresholdError) as err:
        thresholds.resolve({"ttft_warm_ms": {"warn": "fast"}, "ttft_hot_ms": {"warn": 1}, "gpu_count": True})
    text = str(err.value)
    assert "preflight_thresholds.ttft_warm_ms.warn must be a number or null, got 'fast'" in text
    assert "preflight_thresholds.ttft_hot_ms is not a known threshold" in text
    assert "preflight_thresholds.gpu_count must be a whole number or null, got True" in text


def test_unreachable_host_has_one_failing_check_with_the_ssh_error(tmp_path):
    doc = s.one(s.unreachable("dead1"), tmp_path)
    assert doc["status"] == "unreachable" and doc["verdict"] == "fail"
    assert [c["id"] for c in doc["checks"]] == ["host.reachable"]
    c = doc["checks"][0]
    assert c["status"] == "fail"
    assert c["reason"].startswith(f"Ansible could not reach dead1: {s.UNREACHABLE_MSG}.")
    assert doc["error"] == {"task": "ping", "msg": s.UNREACHABLE_MSG}


def test_failed_host_names_the_task_and_still_reports_the_state_it_was_left_in(tmp_path):
    doc = s.one(s.failed("node3"), tmp_path)
    got = s.by_id(doc)
    assert doc["status"] == "failed" and doc["verdict"] == "fail"
    run = got["host.run_completed"]
    assert run["status"] == "fail"
    assert run["reason"].startswith(
        f"The run stopped on node3 at 'thp : Ensure every THP variable is valid for this kernel': {s.INVALID_THP_MSG}."
    )
    c = got["thp.enabled"]
    assert c["status"] == "fail"
    assert (
        "the run stopped at 'thp : Ensure every THP variable is valid for this kernel' before the thp role"
        in (c["reason"])
    )


def test_host_that_stopped_answering_mid_run_is_failed_not_ok(tmp_path):
    doc = s.one(s.host("node1", facts=None, role_results={}), tmp_path)
    assert doc["status"] == "failed"
    assert doc["error"]["msg"].startswith("no facts came back")


def test_checks_are_pure(tmp_path):
    doc = s.one(s.host("node1"), tmp_path)
    before = repr(doc)
    assert checks.run_checks(doc) == checks.run_checks(doc) == doc["checks"]
    assert repr(doc) == before


def test_a_multi_line_error_becomes_one_line(tmp_path):
    failure = {
        "task": "Validating arguments against arg spec 'main'",
        "msg": "Validation of arguments failed:\nvalue of thp_enabled must be one of: always, madvise, never",
    }
    doc = s.one(s.host("node3", failure=failure), tmp_path)
    assert doc["error"]["msg"] == (
        "Validation of arguments failed: value of thp_enabled must be one of: always, madvise, never"
    )


def test_bad_report_variables_fail_that_host_only(tmp_path):
    items = [
        s.host("node1", thresholds={"ttft_warm_ms": {"warn": "fast"}}),
        s.host("node2", level="thorough"),
        s.host("node3"),
    ]
    docs = {d["host"]: d for d in s.build(items, tmp_path)["docs"]}
    assert docs["node1"]["status"] == "failed"
    assert docs["node1"]["error"]["msg"].startswith(
        "preflight_thresholds.ttft_warm_ms.warn must be a number or null, got 'fast'. Fix it in the inventory"
    )
    assert docs["node2"]["status"] == "failed" and docs["node2"]["level"] == "quick"
    assert "preflight_level is 'thorough'; use one of quick, standard, full" in docs["node2"]["error"]["msg"]
    assert docs["node3"]["status"] == "ok"
