"""The probe plan: validate preflight_level, its budgets, probe_model and probe_plan; decide what a host runs
and what it skips, and why; expand per-GPU entries; skip what cannot run later in the run.

Pure functions over plain values (what the playbooks pass to library/preflight_plan.py). A plan is
``{"run": [item, ...], "skipped": [{"probe": name, "reason": why}, ...], "by_probe": {probe: [item, ...]}}``
(by_probe: the run items of each catalog probe, what playbooks/tasks/probes.yml loops over); an item is
``{name, entry, probe, timeout_s, thp_mode, per_gpu, gpu, vllm}`` (playbooks/tasks/run_probe.yml runs one).
The run record (the fact ``preflight_run`` the report reads) holds level, started_at, budget_s, planned,
ran, failed, skipped and phases.

Messages are the ones the playbooks have always given (tests assert them word for word); values are shown
as Jinja's ``~`` showed them, with ``str()``.
"""

from __future__ import annotations

import re

from . import plan_servers, probe_options, thp_arm
from .catalog import LEVELS, MODEL_SHAPES, PROBE_LEVELS, PROBES, SUITE_PROBE, VLLM_PROBES

ENTRY_KEYS = ("probe", "levels", "timeout_s", "thp_modes", "per_gpu", "options")
DEFAULT_TIMEOUT_S = 1800
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# --- Jinja's int and float filters, which the checks were written with ------------------------------------
def _jinja_int(value, default: int = 0) -> int:
    """``value | int(default)``: "42.7" is 42, anything that is no number is the default."""
    try:
        return int(value, 10) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return default


def _jinja_float(value, default: float = 0.0) -> float:
    """``value | float(default)``."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _is_list(value) -> bool:
    """A YAML list (Jinja's 'iterable, not a string, not a mapping')."""
    return isinstance(value, list | tuple)


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


# --- validation -------------------------------------------------------------------------------------------
def level_errors(level) -> list[str]:
    if isinstance(level, str) and level in LEVELS:
        return []
    why = " is a YAML boolean" if isinstance(level, bool) else " is not a level"
    return [f"preflight_level: '{level}'{why}; allowed: {_join(LEVELS)}"]


def budget_errors(budgets) -> list[str]:
    if not isinstance(budgets, dict):
        return [f"preflight_level_budget_s: must map each level ({_join(LEVELS)}) to seconds"]
    return [
        f"preflight_level_budget_s.{level}: must be a positive number of seconds"
        for level in LEVELS
        if level not in budgets or isinstance(budgets[level], bool) or _jinja_float(budgets[level]) <= 0
    ]


def model_errors(level, probe_model) -> list[str]:
    if level in PROBE_LEVELS and not probe_model:
        return [f"probe_model: the {level} level loads a model; give a model directory on the host"
                f" or a shape ({_join(MODEL_SHAPES)})"]
    return []


def _list_errors(where: str, values, allowed: tuple, note=lambda value: "") -> list[str]:
    """A list whose every item is one of allowed (an empty list passes: the caller decides whether it may)."""
    if not _is_list(values):
        return [f"{where}: must be a list of {_join(allowed)}"]
    return [f"{where}: '{v}' is not allowed; allowed: {_join(allowed)}{note(v)}" for v in values if v not in allowed]


def entry_errors(name, entry) -> list[str]:
    """Every problem of one probe_plan entry."""
    where = f"probe_plan.{name}"
    errors = []
    if not _NAME.match(str(name)):
        errors.append(f"probe_plan: '{name}' is not a name of lower-case letters, digits and _")
    if not isinstance(entry, dict):
        return errors + [f"{where}: must be a mapping with keys {_join(ENTRY_KEYS)}"]
    errors += [f"{where}.{key}: unknown key; allowed: {_join(ENTRY_KEYS)}" for key in entry if key not in ENTRY_KEYS]
    probe = entry.get("probe", name)
    if probe not in PROBES:
        errors.append(f"{where}.probe: '{probe}' is not a probe; allowed: {_join(PROBES)}")
    levels = entry.get("levels")
    if _is_list(levels) and not levels:
        levels = None
    errors += _list_errors(f"{where}.levels", levels, PROBE_LEVELS,
                           lambda level: " (quick runs no probes)" if level == "quick" else "")
    if "timeout_s" in entry and (isinstance(entry["timeout_s"], bool) or _jinja_int(entry["timeout_s"]) <= 0):
        errors.append(f"{where}.timeout_s: '{entry['timeout_s']}' is not a positive number of seconds")
    if "options" in entry and not isinstance(entry["options"], dict):
        errors.append(f"{where}.options: must be a mapping of option name to value")
    elif probe in PROBES:
        errors += option_errors(where, probe, entry.get("options"))
    errors += _per_gpu_errors(where, entry, probe)
    if "thp_modes" in entry:
        errors += thp_arm_errors(f"{where}.thp_modes", entry["thp_modes"])
    return errors


def thp_arm_errors(where: str, arms) -> list[str]:
    """Every THP A/B arm of an entry checked for its form (core/thp_arm.py; the node checks the kernel's sizes
    again before it writes), each arm once."""
    if not _is_list(arms):
        return [f"{where}: must be a list of THP arms; {thp_arm.allowed_arms()}"]
    errors, seen = [], {}
    for arm in arms:
        settings, problems = thp_arm.parse_arm(arm, where)
        errors += problems
        slug = thp_arm.arm_slug(settings) if settings else None
        if slug in seen:
            errors.append(f"{where}: '{arm}' sets what '{seen[slug]}' sets; give each arm once")
        elif slug:
            seen[slug] = arm
    return errors


def thp_arms(entry: dict) -> list[tuple[str, str] | tuple[None, None]]:
    """(arm as written in its one order, its part of the result name) for each arm of a valid entry; one
    (None, None) for an entry without THP arms."""
    if "thp_modes" not in entry:
        return [(None, None)]
    settings = [thp_arm.parse_arm(arm)[0] for arm in entry["thp_modes"]]
    return [(thp_arm.arm_text(arm), thp_arm.arm_slug(arm)) for arm in settings]


def option_errors(where: str, probe: str, options) -> list[str]:
    """Every option of the entry that is not the probe's, or whose value is not of its kind and range (checked
    on the controller, so that `warm: -5` or `ready_timeout_s: nan` never reach a tuned node)."""
    try:
        probe_options.option_args(probe, options)
    except probe_options.ProbeArgumentError as err:
        return [f"{where}.{error}" for error in err.errors]
    return []


def _per_gpu_errors(where: str, entry: dict, probe) -> list[str]:
    per_gpu = entry.get("per_gpu", False)
    if not isinstance(per_gpu, bool):
        return [f"{where}.per_gpu: '{per_gpu}' is not allowed; allowed: true, false"]
    if not per_gpu:
        return []
    errors = []
    if probe not in VLLM_PROBES:
        errors.append(f"{where}.per_gpu: only the vLLM probes ({_join(VLLM_PROBES)}) run per GPU; "
                      "load measures every GPU itself")
    if "thp_modes" in entry:
        errors.append(f"{where}: per_gpu and thp_modes together are not supported; give two entries")
    return errors


def plan_errors(level, budgets, probe_model, probe_plan) -> list[str]:
    """Every invalid level, budget, model or probe plan variable, in the order an operator reads them."""
    errors = level_errors(level) + budget_errors(budgets) + model_errors(level, probe_model)
    if not isinstance(probe_plan, dict):
        return errors + [f"probe_plan: must be a mapping of result name to {{{_join(ENTRY_KEYS)}}}"]
    for name, entry in probe_plan.items():
        errors += entry_errors(name, entry)
    return errors


def rejection_message(host: str, errors: list[str]) -> str:
    return f"{host}: preflight_level / probe_plan rejected, nothing was changed: {'; '.join(errors)}"


# --- the plan ---------------------------------------------------------------------------------------------
def skip_reason(level: str, levels: list, probe: str, run_tags: list, skip_tags: list) -> str | None:
    """Why an entry does not run at this level under these --tags / --skip-tags (None: it runs)."""
    tags = {probe, "probes"}
    if level not in levels:
        if level == "quick":
            return "level quick runs no probes"
        return f"level {level} does not include it (it runs at {_join(levels)})"
    if "all" not in run_tags and not tags.intersection(run_tags):
        return f"not selected by --tags {','.join(run_tags)}"
    if tags.intersection(skip_tags):
        return f"deselected by --skip-tags {','.join(skip_tags)}"
    return None


def plan_probes(level: str, probe_plan: dict, run_tags=("all",), skip_tags=()) -> dict:
    """The validated plan -> {"run": items in catalog probe order, "skipped": [{probe, reason}]}."""
    out: dict = {"run": [], "skipped": []}
    for probe in PROBES:
        for name, entry in probe_plan.items():
            if entry.get("probe", name) != probe:
                continue
            reason = skip_reason(level, entry["levels"], probe, list(run_tags), list(skip_tags))
            for mode, slug in thp_arms(entry):
                item = {
                    "name": f"{name}_{slug}" if mode else name,
                    "entry": name,
                    "probe": probe,
                    "timeout_s": _jinja_int(entry.get("timeout_s", DEFAULT_TIMEOUT_S)),
                    "thp_mode": mode,
                    "per_gpu": entry.get("per_gpu", False),
                    "gpu": None,
                    "vllm": probe in VLLM_PROBES,
                }
                if reason:
                    out["skipped"].append({"probe": item["name"], "reason": reason})
                else:
                    out["run"].append(item)
    return with_groups(out)


def with_groups(plan: dict) -> dict:
    """The plan with by_probe made again from its run list (the suite's shared servers among them)."""
    return dict(plan, by_probe={probe: [item for item in plan["run"] if item["probe"] == probe]
                                for probe in (*PROBES, SUITE_PROBE)})


def run_record(plan: dict, level: str, budgets: dict, started_at: str) -> dict:
    """The fact preflight_run as the plan leaves it: nothing ran yet."""
    return {
        "level": level,
        "started_at": started_at,
        "budget_s": budgets[level],
        "planned": [item["name"] for item in plan["run"]],
        "ran": [],
        "failed": [],
        "skipped": list(plan["skipped"]),
        "phases": [],
    }


def rejected_run(level) -> dict:
    """preflight_run of a host whose plan was rejected; no level when the level itself was the problem."""
    record: dict = {"planned": [], "ran": [], "failed": [], "skipped": [], "phases": []}
    if isinstance(level, str) and level in LEVELS:
        record["level"] = level
    return record


# --- changes to the plan later in the run -----------------------------------------------------------------
def node_gpus(facts) -> tuple[list, object]:
    """(GPU indices, why there are none) from node_facts' ansible_facts.preflight ({} when facts failed)."""
    facts = facts or {}
    return [gpu["index"] for gpu in facts.get("gpus") or []], facts.get("gpus_reason", "no facts")


def expand_per_gpu(plan: dict, run: dict, gpus: list, gpus_reason) -> tuple[dict, dict]:
    """A per_gpu item becomes one item per GPU (<name>_<index>, gpu=<index>); without GPUs it is skipped."""
    per_gpu = {item["name"] for item in plan["run"] if item.get("per_gpu")}
    if not per_gpu:
        return with_groups(plan), run
    items = []
    for item in plan["run"]:
        if item.get("per_gpu"):
            items += [dict(item, name=f"{item['name']}_{gpu}", gpu=gpu) for gpu in gpus]
        else:
            items.append(item)
    planned, skipped = [], list(run["skipped"])
    for name in run["planned"]:
        if name not in per_gpu:
            planned.append(name)
            continue
        planned += [f"{name}_{gpu}" for gpu in gpus]
        if not gpus:
            skipped.append({"probe": name, "reason": f"per GPU: node_facts lists no GPUs ({gpus_reason or 'none'})"})
    return with_groups(dict(plan, run=items)), dict(run, planned=planned, skipped=skipped)


def skip_planned(plan: dict, run: dict, reason: str, only_vllm: bool = False) -> tuple[dict, dict]:
    """Move the items still to run (only the vLLM ones, with only_vllm) to the record's skipped, with reason."""
    kept, gone = [], []
    for item in plan["run"]:
        (gone if item.get("vllm") or not only_vllm else kept).append(item)
    skipped = list(run["skipped"]) + [{"probe": member["name"], "reason": reason}
                                      for item in gone for member in plan_servers.members(item)]
    return with_groups(dict(plan, run=kept)), dict(run, skipped=skipped)


# What an allocator arm of the generate probe needs on the node: node_facts' allocator key and the probe
# option that names the library instead.
ALLOCATOR_NEEDS = {"jemalloc": ("jemalloc_paths", "jemalloc_path"), "tcmalloc": ("tcmalloc_paths", "tcmalloc_path")}


def missing_prerequisite(item: dict, options: dict, facts: dict) -> str | None:
    """Why this node cannot run the item at all (decided before anything runs), or None. Facts that did not
    come back decide nothing: the probe then says for itself."""
    if (why := thp_arm_missing(item, facts)) is not None:
        return why
    allocator = facts.get("allocator") if facts else None
    if item["probe"] != "generate" or not allocator:
        return None
    for name in options.get("allocators") or []:
        facts_key, option = ALLOCATOR_NEEDS.get(name, (None, None))
        if facts_key and not options.get(option) and not allocator.get(facts_key):
            return (f"skipped: the {name} arm needs lib{name}, and node_facts found none on this node "
                    f"(install it, e.g. with jemalloc_enabled: true, or give options.{option})")
    return None


def thp_arm_missing(item: dict, facts: dict) -> str | None:
    """Why the node cannot take the item's THP arm (a size or value its kernel does not offer), or None; facts
    without THP decide nothing (the arm's owner on the node checks the kernel again before it writes)."""
    arm, thp = item.get("thp_mode"), (facts or {}).get("thp") or {}
    if not arm or not thp.get("supported") or set(thp_arm.parse_arm(arm)[0]) <= {thp_arm.GLOBAL}:
        return None
    errors = thp_arm.parse_arm(arm, f"probe_plan.{item['entry']}.thp_modes", thp.get("sizes") or {})[1]
    return f"skipped: {'; '.join(errors)}" if errors else None


def for_node(plan: dict, run: dict, facts, probe_plan: dict) -> tuple[dict, dict]:
    """The plan made for this node from its facts: per-GPU entries expanded (or skipped without GPUs), entries
    whose prerequisite the node lacks skipped with the reason, and shared servers grouped."""
    gpus, gpus_reason = node_gpus(facts)
    plan, run = expand_per_gpu(plan, run, gpus, gpus_reason)
    kept, skipped = [], list(run["skipped"])
    for item in plan["run"]:
        why = missing_prerequisite(item, (probe_plan.get(item["entry"]) or {}).get("options") or {}, facts or {})
        if why:
            skipped.append({"probe": item["name"], "reason": why})
        else:
            kept.append(item)
    grouped = plan_servers.group(kept, probe_plan)
    return with_groups(dict(plan, run=grouped)), dict(run, skipped=skipped)


def failed_task_reason(task) -> str:
    return f"not run: {task or 'an earlier task'} failed on this host"


def probe_runtime_reason(msg) -> str:
    return f"not run: the probe runtime failed: {msg}"


def vllm_reason(reason) -> str:
    return f"skipped: {reason}"


# What library/preflight_plan.py's `skip` chooses: the reason each kind of skip gives, and whom it skips.
SKIPS = {
    "failed_task": (failed_task_reason, False),
    "probe_runtime": (probe_runtime_reason, False),
    "vllm": (vllm_reason, True),
}


def skip(plan: dict, run: dict, kind: str, detail) -> tuple[dict, dict]:
    reason, only_vllm = SKIPS[kind]
    return skip_planned(plan, run, reason(detail), only_vllm)
