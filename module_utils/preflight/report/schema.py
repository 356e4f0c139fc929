"""The host document's JSON Schema, kept in Python so AnsiballZ ships it with the module.

host_document.schema.json beside this file is an export of HOST_DOCUMENT_SCHEMA for readers and other
tools; `python3 module_utils/preflight/report/schema.py` rewrites it, and a unit test fails when the two drift.
"""

from __future__ import annotations

import json

SCHEMA_VERSION = 1
LEVELS = ["quick", "standard", "full"]
HOST_STATUSES = ["ok", "failed", "unreachable"]
CHECK_STATUSES = ["pass", "warn", "fail", "skip"]
PERSISTENCE_STATES = ["installed", "unchanged", "unavailable", "failed", "removed", "absent"]

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_BOOL = {"type": ["boolean", "null"]}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
_ANY = {}

_STAT_SUMMARY = {
    "description": "A statistic over repeated samples. Missing figures are null, never 0.",
    "type": "object",
    "required": ["n", "median"],
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "unit": _NULLABLE_STR,
        "median": _NULLABLE_NUM,
        "p5": _NULLABLE_NUM,
        "p95": _NULLABLE_NUM,
        "mean": _NULLABLE_NUM,
        "stdev": _NULLABLE_NUM,
        "cv": _NULLABLE_NUM,
        "iqr": _NULLABLE_NUM,
        "ci_low": _NULLABLE_NUM,
        "ci_high": _NULLABLE_NUM,
        "ci_level": _NULLABLE_NUM,
        "min": _NULLABLE_NUM,
        "max": _NULLABLE_NUM,
        "samples": {"type": "array", "items": {"type": ["number", "null"]}},
        "spread_warning": {"type": ["boolean", "string", "null"]},
    },
}

_FACTS = {
    "description": "ansible_facts.preflight as library/node_facts.py returned it after tuning; null when it never ran.",
    "type": ["object", "null"],
    "properties": {
        "schema_version": {"type": ["integer", "string"]},
        "thp": {
            "type": "object",
            "properties": {
                "supported": {"type": "boolean"},
                "reason": _NULLABLE_STR,
                "enabled": _NULLABLE_STR,
                "enabled_choices": _STR_LIST,
                "defrag": _NULLABLE_STR,
                "defrag_choices": _STR_LIST,
                "khugepaged_defrag": {"type": ["string", "integer", "null"]},
            },
        },
        "hugepages": {
            "type": "object",
            "properties": {
                "default_size_kb": _NULLABLE_INT,
                "sizes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {k: _NULLABLE_INT for k in ("total", "free", "rsvd", "surp")},
                    },
                },
            },
        },
        "meminfo_kb": {"type": "object", "additionalProperties": _NULLABLE_INT},
        "kernel": {"type": "object", "properties": {"release": _NULLABLE_STR, "cmdline": _NULLABLE_STR}},
        "allocator": {"type": "object"},
        "cpu": {"type": "object"},
        "numa": {"type": "object"},
        "gpus": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index"],
                "properties": {
                    "index": {"type": "integer"},
                    "name": _NULLABLE_STR,
                    "uuid": _NULLABLE_STR,
                    "pci_bus_id": _NULLABLE_STR,
                    "numa_node": _NULLABLE_INT,
                    "memory_total_mib": _NULLABLE_NUM,
                    "memory_used_mib": _NULLABLE_NUM,
                    "persistence_mode": {"type": ["boolean", "string", "null"]},
                    "pcie": {"type": ["object", "null"]},
                    "ecc": {"type": ["object", "null"]},
                },
            },
        },
        "gpus_reason": _NULLABLE_STR,
    },
}

_ROLE_SETTING = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "path": _NULLABLE_STR,
        "desired": _ANY,
        "before": _ANY,
        "after": _ANY,
        "changed": _NULLABLE_BOOL,
    },
}

_PERSISTENCE = {
    "type": "object",
    "required": ["method", "state"],
    "properties": {
        "method": {"type": "string"},
        "state": {"enum": PERSISTENCE_STATES},
        "path": _NULLABLE_STR,
        "detail": _NULLABLE_STR,
    },
}

_ROLE_RESULT = {
    "description": "hostvars[host].preflight_role_results[role]: what the role found, changed, persisted and verified.",
    "type": "object",
    "properties": {
        "role": {"type": "string"},
        "settings": {"type": "array", "items": _ROLE_SETTING},
        "persistence": {"type": "array", "items": _PERSISTENCE},
        "conflicts": {"type": "array"},
        "verified": _NULLABLE_BOOL,
        "reboot_required": _NULLABLE_BOOL,
        "shortfall": {
            "type": ["object", "null"],
            "properties": {"asked": _NULLABLE_NUM, "got": _NULLABLE_NUM, "why": _NULLABLE_STR},
        },
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "dropin_path": _NULLABLE_STR,
                    "changed": _NULLABLE_BOOL,
                    "verified": _NULLABLE_BOOL,
                    "verify_detail": _NULLABLE_STR,
                },
            },
        },
    },
}

_PROBE_RESULT = {
    "description": "The envelope `python -m probes <probe> --json` prints.",
    "type": "object",
    "required": ["probe", "results"],
    "properties": {
        "schema_version": {"type": ["integer", "string"]},
        "probe": {"type": "string"},
        "host": _NULLABLE_STR,
        "started_at": _NULLABLE_STR,
        "duration_s": _NULLABLE_NUM,
        "params": {"type": ["object", "null"]},
        "results": {"type": ["object", "null"]},
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "status"],
                "properties": {"name": {"type": "string"}, "status": {"type": "string"}, "text": _NULLABLE_STR},
            },
        },
        "environment": {"type": ["object", "null"]},
    },
}

_RUN = {
    "description": "preflight_run: the level, what was planned, ran, failed and skipped (with why), and phase times",
    "type": ["object", "null"],
    "properties": {
        "level": {"enum": LEVELS},
        "budget_s": {"type": ["number", "string", "null"]},
        "planned": _STR_LIST,
        "ran": _STR_LIST,
        "failed": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["probe"],
                "properties": {
                    "probe": {"type": "string"},
                    "msg": _NULLABLE_STR,
                    "rc": _NULLABLE_INT,
                    "timed_out": _NULLABLE_BOOL,
                    "stderr_tail": _NULLABLE_STR,
                },
            },
        },
        "skipped": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["probe", "reason"],
                "properties": {"probe": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "phases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "duration_s"],
                "properties": {"name": {"type": "string"}, "duration_s": _NULLABLE_NUM, "status": _NULLABLE_STR},
            },
        },
        "total_s": _NULLABLE_NUM,
        "certify_s": _NULLABLE_NUM,
        "over_budget": _NULLABLE_BOOL,
    },
}

_THRESHOLD = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["direction"],
    "properties": {
        "direction": {"enum": ["max", "min"], "description": "max: the measured value must stay at or below"},
        "warn": _NULLABLE_NUM,
        "fail": _NULLABLE_NUM,
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
        "measured": _ANY,
        "expected": _ANY,
        "threshold": _THRESHOLD,
        "unit": _NULLABLE_STR,
        "reason": {"type": "string", "minLength": 1},
    },
}

_EVIDENCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["what", "value"],
    "properties": {"what": {"type": "string"}, "value": _ANY, "unit": _NULLABLE_STR},
}

_RECOMMENDATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "variable", "value", "current", "reason", "evidence"],
    "properties": {
        "id": {"type": "string"},
        "variable": {"type": "string", "minLength": 1, "description": "The exact Ansible variable to change"},
        "value": _ANY,
        "current": _ANY,
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
        "unit": _NULLABLE_STR,
        "group": {"type": "string"},
        "fleet_median": {"type": "number"},
        "mad": {"type": "number", "minimum": 0},
        "score": {
            "type": ["number", "null"],
            "description": "robust z: 0.6745 (value - median) / MAD; null when MAD is 0",
        },
        "direction": {"enum": ["high", "low"]},
        "worse": _NULLABLE_BOOL,
        "hosts": {"type": "integer", "minimum": 3},
    },
}

_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["what", "before", "after", "reason"],
    "properties": {
        "what": {"type": "string"},
        "before": _ANY,
        "after": _ANY,
        "unit": _NULLABLE_STR,
        "reason": {"type": "string"},
    },
}

_HISTORY = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "required": ["previous_run_id", "previous_time", "regressions", "improvements", "changes"],
    "properties": {
        "previous_run_id": {"type": "string"},
        "previous_time": _NULLABLE_STR,
        "regressions": {"type": "array", "items": _CHANGE},
        "improvements": {"type": "array", "items": _CHANGE},
        "changes": {"type": "array", "items": _CHANGE},
    },
}

HOST_DOCUMENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:preflight:host-document:1",
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
        "schema_version": {"const": SCHEMA_VERSION},
        "host": {"type": "string", "minLength": 1},
        "run_id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "time": {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
            "description": "When the report was built (UTC, RFC 3339)",
        },
        "status": {"enum": HOST_STATUSES, "description": "ok: the run reached the end on this host"},
        "error": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["task", "msg"],
            "properties": {"task": _NULLABLE_STR, "msg": {"type": "string", "minLength": 1}},
        },
        "level": {"enum": LEVELS},
        "groups": _STR_LIST,
        "gpu_class": {"type": "string", "minLength": 1, "description": "Hosts are compared within their class"},
        "verdict": {
            "enum": ["pass", "warn", "fail"],
            "description": "The worst check; fail for failed or unreachable hosts",
        },
        "facts": _FACTS,
        "desired": {
            "type": "object",
            "description": "The desired state this host was tuned to (its resolved variables)",
        },
        "settings": {"type": "object", "additionalProperties": _ROLE_RESULT},
        "probes": {"type": "object", "additionalProperties": _PROBE_RESULT},
        "run": _RUN,
        "checks": {"type": "array", "items": _CHECK},
        "recommendations": {"type": "array", "items": _RECOMMENDATION},
        "outliers": {"type": "array", "items": _OUTLIER},
        "history": _HISTORY,
        "thresholds": {"type": "object", "description": "The thresholds the checks were judged against"},
        "timings": {"type": "object", "additionalProperties": _NULLABLE_NUM, "description": "Seconds per phase"},
    },
    "$defs": {"stat_summary": _STAT_SUMMARY},
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
