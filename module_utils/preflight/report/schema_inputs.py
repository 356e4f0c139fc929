"""The parts of the host document schema that carry what the node side produced, as it produced it.

facts (node_facts), settings (the roles' preflight_role_results), probes (probe envelopes), run
(preflight_run) and the statistic summaries inside probe results; schema.py puts them into the document.
"""

from __future__ import annotations

from ..core.catalog import LEVELS

PERSISTENCE_STATES = ["installed", "unchanged", "unavailable", "failed", "removed", "absent"]

NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_BOOL = {"type": ["boolean", "null"]}
STR_LIST = {"type": "array", "items": {"type": "string"}}
ANY = {}

STAT_SUMMARY = {
    "description": "A statistic over repeated samples. Missing figures are null, never 0.",
    "type": "object",
    "required": ["n", "median"],
    "properties": {
        "n": {"type": "integer", "minimum": 0},
        "unit": NULLABLE_STR,
        "median": NULLABLE_NUM,
        "p5": NULLABLE_NUM,
        "p95": NULLABLE_NUM,
        "mean": NULLABLE_NUM,
        "stdev": NULLABLE_NUM,
        "cv": NULLABLE_NUM,
        "iqr": NULLABLE_NUM,
        "ci_low": NULLABLE_NUM,
        "ci_high": NULLABLE_NUM,
        "ci_level": NULLABLE_NUM,
        "min": NULLABLE_NUM,
        "max": NULLABLE_NUM,
        "samples": {"type": "array", "items": {"type": ["number", "null"]}},
        "spread_warning": {"type": ["boolean", "string", "null"]},
    },
}

FACTS = {
    "description": "ansible_facts.preflight as library/node_facts.py returned it after tuning; null when it never ran.",
    "type": ["object", "null"],
    "properties": {
        "schema_version": {"type": ["integer", "string"]},
        "thp": {
            "type": "object",
            "properties": {
                "supported": {"type": "boolean"},
                "reason": NULLABLE_STR,
                "enabled": NULLABLE_STR,
                "enabled_choices": STR_LIST,
                "defrag": NULLABLE_STR,
                "defrag_choices": STR_LIST,
                "khugepaged_defrag": {"type": ["string", "integer", "null"]},
            },
        },
        "hugepages": {
            "type": "object",
            "properties": {
                "default_size_kb": NULLABLE_INT,
                "sizes": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {k: NULLABLE_INT for k in ("total", "free", "rsvd", "surp")},
                    },
                },
            },
        },
        "meminfo_kb": {"type": "object", "additionalProperties": NULLABLE_INT},
        "kernel": {"type": "object", "properties": {"release": NULLABLE_STR, "cmdline": NULLABLE_STR}},
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
                    "name": NULLABLE_STR,
                    "uuid": NULLABLE_STR,
                    "pci_bus_id": NULLABLE_STR,
                    "numa_node": NULLABLE_INT,
                    "memory_total_mib": NULLABLE_NUM,
                    "memory_used_mib": NULLABLE_NUM,
                    "persistence_mode": {"type": ["boolean", "string", "null"]},
                    "pcie": {"type": ["object", "null"]},
                    "ecc": {"type": ["object", "null"]},
                },
            },
        },
        "gpus_reason": NULLABLE_STR,
    },
}

ROLE_SETTING = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "path": NULLABLE_STR,
        "desired": ANY,
        "before": ANY,
        "after": ANY,
        "changed": NULLABLE_BOOL,
    },
}

PERSISTENCE = {
    "type": "object",
    "required": ["method", "state"],
    "properties": {
        "method": {"type": "string"},
        "state": {"enum": PERSISTENCE_STATES},
        "path": NULLABLE_STR,
        "detail": NULLABLE_STR,
    },
}

ROLE_RESULT = {
    "description": "hostvars[host].preflight_role_results[role]: what the role found, changed, persisted and verified.",
    "type": "object",
    "properties": {
        "role": {"type": "string"},
        "settings": {"type": "array", "items": ROLE_SETTING},
        "persistence": {"type": "array", "items": PERSISTENCE},
        "conflicts": {"type": "array"},
        "verified": NULLABLE_BOOL,
        "reboot_required": NULLABLE_BOOL,
        "shortfall": {
            "type": ["object", "null"],
            "properties": {"asked": NULLABLE_NUM, "got": NULLABLE_NUM, "why": NULLABLE_STR},
        },
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "dropin_path": NULLABLE_STR,
                    "changed": NULLABLE_BOOL,
                    "verified": NULLABLE_BOOL,
                    "verify_detail": NULLABLE_STR,
                },
            },
        },
    },
}

PROBE_RESULT = {
    "description": "The envelope `python -m probes <probe> --json` prints.",
    "type": "object",
    "required": ["probe", "results"],
    "properties": {
        "schema_version": {"type": ["integer", "string"]},
        "probe": {"type": "string"},
        "host": NULLABLE_STR,
        "started_at": NULLABLE_STR,
        "duration_s": NULLABLE_NUM,
        "params": {"type": ["object", "null"]},
        "results": {"type": ["object", "null"]},
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "status"],
                "properties": {"name": {"type": "string"}, "status": {"type": "string"}, "text": NULLABLE_STR},
            },
        },
        "environment": {"type": ["object", "null"]},
    },
}

RUN = {
    "description": "preflight_run: the level, what was planned, ran, failed and skipped (with why), and phase times",
    "type": ["object", "null"],
    "properties": {
        "level": {"enum": list(LEVELS)},
        "budget_s": {"type": ["number", "string", "null"]},
        "planned": STR_LIST,
        "ran": STR_LIST,
        "failed": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["probe"],
                "properties": {
                    "probe": {"type": "string"},
                    "msg": NULLABLE_STR,
                    "rc": NULLABLE_INT,
                    "timed_out": NULLABLE_BOOL,
                    "stderr_tail": NULLABLE_STR,
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
                "properties": {"name": {"type": "string"}, "duration_s": NULLABLE_NUM, "status": NULLABLE_STR},
            },
        },
        "total_s": NULLABLE_NUM,
        "certify_s": NULLABLE_NUM,
        "over_budget": NULLABLE_BOOL,
    },
}
