"""The probe envelope: what every probe prints, and its schema."""

from __future__ import annotations

import io
import json
import time

import jsonschema
import pytest

from probes import result, stats


def _doc(**results):
    return result.envelope(
        "load",
        {"model": "tiny", "repeats": 3},
        results or {"warm_s": stats.summarize([1.0, 1.1, 0.9], "s")},
        [result.verdict("warm_load", "info", "warm load took 1 s")],
        time.time(),
        1.5,
    )


def test_envelope_has_the_contract_fields_and_validates():
    doc = _doc()
    assert doc["schema_version"] == 1
    assert doc["probe"] == "load"
    assert doc["started_at"][:4].isdigit() and "T" in doc["started_at"]
    for key in ("python", "torch", "transformers", "vllm", "cuda_device"):
        assert key in doc["environment"]
    result.validate(doc)
    json.dumps(doc)


def test_a_comparison_validates_and_a_summary_with_zero_for_missing_does_not():
    doc = _doc(cmp=stats.compare([1, 1.1, 1.2], [2, 2.1, 2.2], name_a="a", name_b="b", unit="s"))
    result.validate(doc)
    bad = _doc(x={**stats.summarize([], "s"), "median": 0})
    with pytest.raises(jsonschema.ValidationError, match=r"results.x"):
        result.validate(bad)


def test_bad_verdict_status_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        result.verdict("x", "ok", "text")
    doc = _doc()
    doc["verdicts"][0]["status"] = "ok"
    with pytest.raises(jsonschema.ValidationError):
        result.validate(doc)


def test_human_output_is_a_table_with_units_and_nulls_as_dashes():
    doc = _doc(warm_s=stats.summarize([1.0, 1.2, 0.8], "s"), cold_s=stats.summarize([], "s"))
    out = io.StringIO()
    result.emit(doc, False, out)
    text = out.getvalue()
    assert "measurement" in text and "IQR %" in text
    row = next(line for line in text.splitlines() if line.startswith("cold_s"))
    name, n, median, ci, p5, p95, iqr, unit = row.split()
    assert (n, median, ci, p5, p95, iqr, unit) == ("0", "-", "-", "-", "-", "-", "s")
    assert "[INFO] warm_load: warm load took 1 s" in text


def test_json_output_round_trips():
    out = io.StringIO()
    doc = _doc()
    result.emit(doc, True, out)
    assert json.loads(out.getvalue()) == doc


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        _doc(x=float("inf"))
