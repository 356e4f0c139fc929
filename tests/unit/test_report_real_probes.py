"""The reports read real probe output: envelopes recorded from `python -m probes ... --json` on this kind of
machine (tests/fixtures/report_probes/README.md says how). If a probe changes its format, the first test
fails and says to record them again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probes import result as probe_result
from tests.unit import report_samples as s

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "report_probes"
PROBES = ("load", "ttft", "kv", "batching")


@pytest.fixture(scope="module")
def envelopes() -> dict[str, dict]:
    return {name: json.loads((FIXTURES / f"{name}.json").read_text()) for name in PROBES}


@pytest.fixture(scope="module")
def run(envelopes, tmp_path_factory) -> dict:
    return s.build([s.host("node1", probes=envelopes)], tmp_path_factory.mktemp("reports"))


@pytest.mark.parametrize("name", PROBES)
def test_recorded_envelopes_are_valid_for_the_current_probes(envelopes, name):
    try:
        probe_result.validate(envelopes[name])
    except Exception as exc:  # jsonschema.ValidationError: the probe's format moved on
        pytest.fail(
            f"{name}.json no longer matches probes/schema: record it again "
            f"(tests/fixtures/report_probes/README.md): {exc}"
        )


def test_headline_figures_come_from_where_each_probe_puts_them(run, envelopes):
    checks = s.by_id(run["docs"][0])
    load, ttft, kv, batching = (envelopes[n]["results"] for n in PROBES)
    assert checks["probe.load.warm_total_s"]["measured"] == load["warm"]["phases"]["total_s"]["median"]
    if load["cold"] is None:  # recorded without --drop-caches: the report says why, never 0
        assert checks["probe.load.cold_total_s"]["status"] == "skip"
        assert f"not measured ({load['cold_not_measured']})" in checks["probe.load.cold_total_s"]["reason"]
    api = ttft["apis"][0]
    assert checks["probe.ttft.warm_ms"]["measured"] == ttft["warm"][api]["ttft_ms"]["median"]
    assert checks["probe.ttft.cold_ms"]["measured"] == ttft["cold_start"]["first_request_ttft_ms"]
    config = kv["configs"][0]
    prefix = f"probe.kv.max_concurrency.{config['max_model_len']}."
    kv_checks = [c for cid, c in checks.items() if cid.startswith(prefix)]
    assert [c["measured"] for c in kv_checks] == [config["max_concurrency"]]
    top = batching["levels"][-1]
    assert checks["probe.batching.speedup"]["measured"] == top["speedup_vs_sequential"]
    assert checks["probe.batching.ttft_p95_ms"]["measured"] == top["ttft_p95_ms"]


def test_host_page_draws_every_recorded_probe(run):
    html = run["outputs"]["node1.html"]
    for title in (
        "load: seconds per phase, cold vs warm",
        "load: weights GB/s against the measured limits",
        "ttft: time to first token",
        "kv: max concurrency vs max-model-len",
        "batching: output throughput vs concurrency",
        "batching: TTFT vs concurrency",
    ):
        assert f"<title>{title}" in html, title
    assert html.count("Not run (level quick).") == 1  # generate, the only probe not recorded


def test_documents_with_real_probe_output_validate(run):
    schema = s.module_util("preflight.report.schema")
    assert schema.validation_errors(run["docs"][0]) == []
