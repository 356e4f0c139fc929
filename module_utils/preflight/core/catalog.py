"""The facts Preflight is built on, once each: choices, levels and budgets, probe names, schema versions.

Role defaults, argument specs, group_vars comments, the probes and the reports read these or are checked
against them by tests/unit/test_catalog_drift.py.
"""

from __future__ import annotations

# --- Transparent Huge Pages -------------------------------------------------------------------------------
THP_DIR = "/sys/kernel/mm/transparent_hugepage"
THP_ENABLED_CHOICES = ("always", "madvise", "never")
THP_DEFRAG_CHOICES = ("always", "defer", "defer+madvise", "madvise", "never")
THP_KHUGEPAGED_DEFRAG_CHOICES = (0, 1)
# Per-size (multi-size) THP, kernels since 6.8: <THP_DIR>/hugepages-<N>kB/enabled.
THP_SIZE_CHOICES = ("always", "inherit", "madvise", "never")
THP_SIZE_KNOB = THP_DIR + "/hugepages-{size}/enabled"
# The role variable that sets them ({"64kB": "always", ...}) and how a size is written in it.
THP_SIZES_VARIABLE = "thp_sizes"
THP_SIZE_NAME = r"\d+kB"
# The boot option that sets them (mm: override mTHP "enabled" defaults at kernel cmdline, Linux 6.12).
THP_ANON_OPTION = "thp_anon"
THP_ANON_MIN_KERNEL = (6, 12)
# auto: tuned where tuned is active on the node (core/thp_tuned.py), the systemd unit otherwise.
THP_PERSIST_CHOICES = ("systemd", "kernel_cmdline", "tuned", "auto")

# The role defaults (roles/thp/defaults/main.yml must say the same; roles/preflight_defaults may not differ).
THP_DEFAULTS = {
    "thp_enabled": "madvise",
    "thp_defrag": "never",
    "thp_khugepaged_defrag": 1,
    "thp_persist": ["systemd"],
    "thp_sizes": {},
    "thp_state_dir": "/var/lib/preflight/thp",
}

# --- Certification levels ---------------------------------------------------------------------------------
LEVELS = ("quick", "standard", "full")
# Levels that run probes (quick reads the tuning back only).
PROBE_LEVELS = ("standard", "full")
LEVEL_BUDGET_S = {"quick": 60, "standard": 900, "full": 3600}

# --- Probes -----------------------------------------------------------------------------------------------
# In the order a plan runs them.
PROBES = ("load", "generate", "ttft", "kv", "batching")
# The probes that start a vLLM server.
VLLM_PROBES = ("ttft", "kv", "batching")
# The probe that runs several of them on one server start, and servers on several GPUs side by side
# (probes/suite.py); core/plan_servers.py decides which planned items share a server.
SUITE_PROBE = "suite"
# Where a probe's progress log is written on the node (library/slm_probe.py, core/progress.py), and how long a
# probe runs on without the controller polling it before it is stopped and the node put back.
PROBE_LOG_DIR = "/var/log/preflight"
PROBE_HEARTBEAT_S = 15
# Offline model shapes probes.model can build (probes/model.py SHAPES has one entry for each).
MODEL_SHAPES = ("tiny", "qwen2.5-1.5b", "phi-3-mini", "smollm2-135m")

# --- Schema versions --------------------------------------------------------------------------------------
FACTS_SCHEMA_VERSION = 1  # node_facts' ansible_facts.preflight
ENVELOPE_SCHEMA_VERSION = 1  # a probe's JSON envelope (probes/schema/envelope.schema.json)
HOST_DOCUMENT_SCHEMA_VERSION = 1  # reports' <host>.json (report/host_document.schema.json)
SUMMARY_SCHEMA_VERSION = 1  # reports' summary.json
ROLLBACK_RECORD_SCHEMA_VERSION = 1  # what a role records under <role>_state_dir for rollback
