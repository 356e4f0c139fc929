"""Each node's Prometheus textfile (module_utils/preflight/report/node_metrics.py), as playbooks/report.yml copies it
to the node. Checked two ways: prometheus_client's text parser (always), and `promtool check metrics`, Prometheus's
own linter (Debian's `prometheus` package ships it; the test is skipped, saying so, where it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.moduleutils import module_util
from tests.unit import report_samples as s

node_metrics = module_util("preflight.report.node_metrics")
metrics = module_util("preflight.report.metrics")

RUN = {
    "level": "standard",
    "budget_s": 900,
    "planned": ["load", "ttft", "kv", "batching"],
    "ran": ["load", "ttft", "kv", "batching"],
    "failed": [],
    "skipped": [],
    "phases": [
        {"name": "tune", "duration_s": 4.2, "status": "ok"},
        {"name": "facts", "duration_s": 1.3, "status": "ok"},
    ],
    "total_s": 300.5,
    "certify_s": 296.3,
    "over_budget": False,
}
RUN_TIME = s.NOW.timestamp()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    probes = {
        "ttft": s.ttft_probe(warm_ms=20.0, seed=1),
        "load": s.load_probe(),
        "kv": s.kv_probe([(2048, "1GiB", 32768, 16.0), (4096, "1GiB", 32768, 8.0)]),
        "batching": s.batching_probe({1: 100.0, 2: 190.0}, {1: 20.0, 2: 24.0}),
    }
    items = [s.host("node1", probes=probes, run=RUN), s.failed("node3"), s.unreachable("dead1")]
    return s.build(items, tmp_path_factory.mktemp("reports"), run_id="run-under-test", compare_history=False)


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_every_reached_node_gets_its_own_file_and_the_unreachable_one_none(run):
    assert sorted(run["node_metrics"]) == ["node1", "node3"]


def test_a_login_without_root_gets_no_file_though_its_host_was_reached(tmp_path):
    """playbooks/tasks/privilege.yml: the host stopped before any change and Preflight cannot write there."""
    denied = s.host("node2", failure={"task": "Ensure Preflight runs as root on the node", "node_writable": False,
                                      "msg": "Preflight on node2: runs as 'op' (uid 1000), not root"})
    built = s.build([s.host("node1"), denied, s.failed("node3")], tmp_path, run_id="run-under-test",
                    compare_history=False)
    assert {d["host"]: d["status"] for d in built["docs"]} == {"node1": "ok", "node2": "failed", "node3": "failed"}
    assert sorted(built["node_metrics"]) == ["node1", "node3"]


def test_the_run_time_is_a_value_and_no_label_names_the_host_or_the_run(run):
    for text in run["node_metrics"].values():
        found = samples(text)
        assert found[("preflight_last_run_timestamp_seconds", ())] == RUN_TIME
        names = {label for _name, labels in found for label, _value in labels}
        assert not names & {"host", "instance", "run_id", "unit"}, names
        assert "run-under-test" not in text


def test_figures_are_one_metric_each_in_base_units(run):
    found = samples(run["node_metrics"]["node1"])
    doc = next(d for d in run["docs"] if d["host"] == "node1")
    figures = {f["metric"]: f["value"] for f in metrics.headline(doc)}
    assert found[("preflight_ttft_warm_seconds", ())] == pytest.approx(figures["ttft.warm_ms"] / 1000)
    assert found[("preflight_ttft_cold_seconds", ())] == pytest.approx(figures["ttft.cold_ms"] / 1000)
    assert found[("preflight_load_cold_seconds", ())] == pytest.approx(figures["load.cold_total_s"])
    assert found[("preflight_load_weights_disk_ratio", ())] == pytest.approx(figures["load.weights_fraction_of_disk"])
    assert found[("preflight_batching_speedup_ratio", ())] == pytest.approx(figures["batching.speedup"])
    assert found[("preflight_kv_max_concurrency", (("kv_budget", "1GiB"), ("max_model_len", "4096")))] == 8.0
    assert found[("preflight_phase_duration_seconds", (("phase", "tune"),))] == 4.2
    assert found[("preflight_level_budget_seconds", ())] == 900
    assert found[("preflight_run_status", (("status", "ok"),))] == 1
    assert found[("preflight_check_status", (("check", "thp.enabled"), ("status", "pass")))] == 1
    for name, _labels in found:
        assert re.fullmatch(r"preflight_[a-z0-9_]+", name), name
        assert not re.search(r"_(ms|s|x|gb_per_s)$", name), f"{name}: not a base unit"


def test_a_failed_node_has_no_figures_and_says_it_failed(run):
    found = samples(run["node_metrics"]["node3"])
    assert found[("preflight_run_status", (("status", "failed"),))] == 1
    assert found[("preflight_verdict", (("verdict", "fail"),))] == 1
    assert not [name for name, _ in found if name.startswith(("preflight_ttft", "preflight_load_"))]


def test_an_incomplete_node_says_so_in_exactly_one_status_series(tmp_path):
    """A planned probe without an outcome makes the host incomplete: its status series is 1, every other 0."""
    probes = {"ttft": s.ttft_probe(warm_ms=20.0, seed=1), "load": s.load_probe()}
    items = [s.host("node2", probes=probes, run={**RUN, "ran": ["load", "ttft"]})]
    built = s.build(items, tmp_path, run_id="run-incomplete", compare_history=False)
    found = samples(built["node_metrics"]["node2"])
    status = {dict(labels)["status"]: value for (name, labels), value in found.items()
              if name == "preflight_run_status"}
    assert status == {"ok": 0, "incomplete": 1, "failed": 0}


def test_every_headline_quantity_has_a_metric():
    """A new headline figure must get a metric name and unit here, or it would silently not be exported."""
    keys = set()
    for extract in metrics.HEADLINES.values():
        keys |= {threshold for _metric, threshold, *_ in extract({})}
    keys |= {"kv_max_concurrency"}  # one figure per KV configuration: none for empty results
    assert keys == set(node_metrics.QUANTITIES)


def test_a_figure_in_an_unexpected_unit_is_refused():
    figure = {"threshold": "ttft_warm_ms", "metric": "ttft.warm_ms", "value": 20.0, "unit": "s"}
    with pytest.raises(ValueError, match="ttft.warm_ms: unit 's', preflight_ttft_warm_seconds expects 'ms'"):
        node_metrics.headline_sample(figure)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_metrics_finds_no_problem(run):
    for host, text in run["node_metrics"].items():
        proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), host
