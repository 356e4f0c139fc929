"""The host document's JSON Schema, kept in Python so AnsiballZ ships it with the module.

host_document.schema.json beside this file is an export of HOST_DOCUMENT_SCHEMA for readers and other
tools; `cd module_utils && python3 -m preflight.report.schema` rewrites it, and a unit test fails when the two drift.
"""

from __future__ import annotations

import json

from ..core import document
from ..core.catalog import HOST_DOCUMENT_SCHEMA_VERSION, LEVELS
from ..core.thresholds import MAD_SCALE, OUTLIER_MIN_HOSTS
from .schema_inputs import (
    ANY,
    FACTS,
    NULLABLE_BOOL,
    NULLABLE_NUM,
    NULLABLE_STR,
    PROBE_RESULT,
    ROLE_RESULT,
    RUN,
    STAT_SUMMARY,
    STR_LIST,
)

HOST_STATUSES = list(document.HOST_STATUSES)
CHECK_STATUSES = ["pass", "warn", "fail", "skip"]

_THRESHOLD = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["direction"],
    "properties": {
        "direction": {"enum": ["max", "min"], "description": "max: the measured value must stay at or below"},
        "warn": NULLABLE_NUM,
        "fail": NULLABLE_NUM,
    },
}

_CHECK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "title", "category", "status", "measured", "expected", "threshold", "unit", "reason"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z0-9_]+(\.[A-Za-z0-9_+-]+)*$"},
        "title": {"type": "string", "minLength": 1},
        "category": {"enum": ["tuning", "gpu", "probe", "host"]},
        "status": {"enum": CHECK_STATUSES},
        "measured": ANY,
        "expected": ANY,
        "threshold": _THRESHOLD,
        "unit": NULLABLE_STR,
        "reason": {"type": "string", "minLength": 1},
    },
}

_EVIDENCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["what", "value"],
    "properties": {"what": {"type": "string"}, "value": ANY, "unit": NULLABLE_STR},
}

_RECOMMENDATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "variable", "value", "current", "reason", "evidence"],
    "properties": {
        "id": {"type": "string"},
        "variable": {"type": "string", "minLength": 1, "description": "The exact Ansible variable to change"},
        "value": ANY,
        "current": ANY,
        "reason": {"type": "string", "minLength": 1},
        "evidence": {"type": "array", "minItems": 1, "items": _EVIDENCE},
    },
}

_OUTLIER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["metric", "value", "unit", "group", "fleet_median", "mad", "score", "direction", "worse", "hosts"],
    "properties": {
        "metric": {"type": "string"},
        "value": {"type": "number"},
        "unit": NULLABLE_STR,
        "group": {"type": "string"},
        "fleet_median": {"type": "number"},
        "mad": {"type": "number", "minimum": 0},
        "score": {
            "type": ["number", "null"],
            "description": f"robust z: {MAD_SCALE} (value - median) / MAD; null when MAD is 0",
        },
        "direction": {"enum": ["high", "low"]},
        "worse": NULLABLE_BOOL,
        "hosts": {"type": "integer", "minimum": OUTLIER_MIN_HOSTS},
    },
}

_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["what", "before", "after", "reason"],
    "properties": {
        "what": {"type": "string"},
        "before": ANY,
        "after": ANY,
        "unit": NULLABLE_STR,
        "reason": {"type": "string"},
    },
}

_HISTORY = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["previous_run_id", "previous_time", "regressions", "improvements", "changes"],
    "properties": {
        "previous_run_id": {"type": "string"},
        "previous_time": NULLABLE_STR,
        "regressions": {"type": "array", "items": _CHANGE},
        "improvements": {"type": "array", "items": _CHANGE},
        "changes": {"type": "array", "items": _CHANGE},
        "key_figures": {
            "type": "object",
            "additionalProperties": NULLABLE_NUM,
            "description": "The previous run's key figures (report/headline.py key_values), shown beside this run's",
        },
    },
}

HOST_DOCUMENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"urn:preflight:host-document:{HOST_DOCUMENT_SCHEMA_VERSION}",
    "title": "Preflight host document",
    "description": (
        "One host's result of one Preflight run: facts, settings applied with before/after, probe results, "
        "checks, recommendations, fleet outliers and the comparison with the host's previous run. "
        "Every report (Markdown, HTML, summary, Prometheus, JUnit) is built from these documents only."
    ),
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version",
        "host",
        "run_id",
        "time",
        "status",
        "error",
        "level",
        "groups",
        "gpu_class",
        "verdict",
        "facts",
        "desired",
        "settings",
        "probes",
        "checks",
        "recommendations",
        "outliers",
        "history",
        "thresholds",
        "timings",
    ],
    "properties": {
        "schema_version": {"const": HOST_DOCUMENT_SCHEMA_VERSION},
        "host": {"type": "string", "minLength": 1},
        "run_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "time": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
            "description": "When the report was built (UTC, RFC 3339)",
        },
        "status": {
            "enum": HOST_STATUSES,
            "description": "ok: the run reached the end on this host; incomplete: a planned probe has no "
            "outcome (the host dropped out mid-run)",
        },
        "error": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["task", "msg"],
            "properties": {"task": NULLABLE_STR, "msg": {"type": "string", "minLength": 1}},
        },
        "level": {"enum": list(LEVELS)},
        "groups": STR_LIST,
        "gpu_class": {"type": "string", "minLength": 1, "description": "Hosts are compared within their class"},
        "verdict": {
            "enum": ["pass", "warn", "fail"],
            "description": "The worst check; fail for failed or unreachable hosts",
        },
        "facts": FACTS,
        "desired": {
            "type": "object",
            "description": "The desired state this host was tuned to (its resolved variables)",
        },
        "settings": {"type": "object", "additionalProperties": ROLE_RESULT},
        "probes": {"type": "object", "additionalProperties": PROBE_RESULT},
        "run": RUN,
        "checks": {"type": "array", "items": _CHECK},
        "recommendations": {"type": "array", "items": _RECOMMENDATION},
        "outliers": {"type": "array", "items": _OUTLIER},
        "history": _HISTORY,
        "thresholds": {"type": "object", "description": "The thresholds the checks were judged against"},
        "timings": {"type": "object", "additionalProperties": NULLABLE_NUM, "description": "Seconds per phase"},
    },
    "$defs": {"stat_summary": STAT_SUMMARY},
}


def schema_json() -> str:
    """The exact text of host_document.schema.json."""
    return json.dumps(HOST_DOCUMENT_SCHEMA, indent=2, sort_keys=True) + "\n"


def validation_errors(document: dict) -> list[str]:
    """Every way `document` breaks the schema, each as 'path: message'; [] when it is valid."""
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise RuntimeError(
            "the Python package 'jsonschema' is missing on the controller: "
            "install requirements.txt into the Python that runs ansible-playbook"
        ) from exc
    validator = jsonschema.Draft202012Validator(HOST_DOCUMENT_SCHEMA)
    errors = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        errors.append(f"{where}: {error.message}")
    return errors


def export_path() -> str:
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_document.schema.json")


if __name__ == "__main__":
    with open(export_path(), "w", encoding="utf-8") as handle:
        handle.write(schema_json())
    print(export_path())
