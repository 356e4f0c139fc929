"""The host document schema: the .json file in the repo is the Python schema, and documents really obey it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.unit import report_samples as s

schema = s.module_util("preflight.report.schema")
SCHEMA_FILE = Path(schema.__file__).with_name("host_document.schema.json")


def test_schema_file_is_the_python_schema():
    assert SCHEMA_FILE.read_text() == schema.schema_json(), (
        "host_document.schema.json drifted from schema.py: run `cd module_utils && python3 -m preflight.report.schema`"
    )


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def test_documents_of_every_kind_validate_against_the_file(tmp_path):
    items = [
        s.host(
            "node1",
            facts=s.facts(gpus=[s.gpu(0)]),
            probes={"ttft": s.ttft_probe(), "generate": s.allocator_probe(1.5, 1.2)},
        ),
        s.host("node2"),
        s.failed("node3"),
        s.unreachable("dead1"),
    ]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for doc in s.build(items, tmp_path)["docs"]:
        assert list(validator.iter_errors(doc)) == [], doc["host"]


def test_a_broken_document_is_rejected_with_where_and_why(tmp_path):
    doc = s.one(s.host("node1"), tmp_path)
    doc["status"] = "fine"
    doc["checks"][0]["status"] = "ok"
    del doc["run_id"]
    errors = schema.validation_errors(doc)
    assert "(document): 'run_id' is a required property" in errors
    assert "status: 'fine' is not one of ['ok', 'incomplete', 'failed', 'unreachable']" in errors
    assert "checks/0/status: 'ok' is not one of ['pass', 'warn', 'fail', 'skip']" in errors


def test_a_check_without_a_reason_is_invalid(tmp_path):
    doc = s.one(s.host("node1"), tmp_path)
    doc["checks"][0]["reason"] = ""
    assert schema.validation_errors(doc) == ["checks/0/reason: '' should be non-empty"]


@pytest.mark.parametrize(
    "envelope",
    [
        s.ttft_probe(),
        s.load_probe(),
        s.kv_probe([(2048, "256MiB", 4096, 2.0), (4096, "256MiB", None, None)]),
        s.batching_probe({1: 100.0, 4: 300.0}, {1: 20.0, 4: 40.0}),
        s.allocator_probe(1.5, 1.2),
    ],
    ids=lambda e: e["probe"],
)
def test_the_samples_the_report_tests_use_are_shaped_like_the_probe_envelope_schema(envelope):
    """The report reads results by the paths probes/schema/envelope.schema.json describes ($defs/<probe>_results)."""
    from probes import result as probe_result

    probe_result.validate(envelope)

