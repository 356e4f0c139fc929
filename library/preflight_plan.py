#!/usr/bin/python
"""Ansible module: validate the level and the probe plan, plan a host's probes, and change the plan later in
the run (per-GPU expansion, probes that cannot run). The decisions are module_utils/preflight/core/plan.py's."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: preflight_plan
short_description: Validate preflight_level and probe_plan, and plan which probes a host runs and skips
description:
  - With O(step=plan), checks O(level), O(budgets), O(probe_model) and O(probe_plan) and fails with one message
    that names every invalid variable, its value and what is allowed, before anything on the node changes.
    A valid plan comes back as RV(plan) (the entries to run, in probe order, and those skipped with the
    reason - the level, C(--tags), C(--skip-tags)) and as RV(run), the run record the report reads.
  - With O(step=per_gpu), the plan is made for the node O(node_facts) describe - each O(plan) entry with
    C(per_gpu) becomes one entry per GPU listed (C(<name>_<index>), C(gpu=<index>)), and a node without GPUs
    skips it with the reason; an entry whose prerequisite the node lacks (an allocator arm without its library)
    is skipped with the reason; vLLM probes that ask for the same server become the members of one shared
    server (probe C(suite), see C(module_utils/preflight/core/plan_servers.py)), and per-GPU servers run side by
    side. O(probe_plan) gives the entries' options.
  - With O(step=skip), the entries still to run (only the vLLM ones for O(skip=vllm)) move to the run record's
    skipped list, with the reason O(skip) and O(reason) give.
  - Computes only: reads nothing on the host and changes nothing, so it is best delegated to C(localhost).
version_added: "0.1.0"
author: Preflight
options:
  step:
    description: What to do.
    type: str
    choices: [plan, per_gpu, skip]
    default: plan
  host:
    description: The host the plan is for, named in the rejection message (O(step=plan)).
    type: str
    default: this host
  level:
    description: The certification level, one of quick, standard, full (C(preflight_level)).
    type: raw
  budgets:
    description: Seconds each level may take (C(preflight_level_budget_s)), every level mapped to seconds.
    type: raw
  probe_model:
    description: The model the standard and full levels load (C(probe_model)), a directory or a shape.
    type: raw
  probe_plan:
    description:
      - C(probe_plan), result name -> entry with keys probe, levels, timeout_s, thp_modes, per_gpu, options.
      - O(step=plan) validates it; O(step=per_gpu) reads the entries' options.
    type: raw
  run_tags:
    description: C(ansible_run_tags); an entry runs only when its probe or C(probes) is among them (or C(all)).
    type: list
    elements: str
    default: [all]
  skip_tags:
    description: C(ansible_skip_tags); an entry whose probe or C(probes) is among them is skipped.
    type: list
    elements: str
    default: []
  plan:
    description: The plan an earlier O(step=plan) returned, as changed since (O(step=per_gpu) and O(step=skip)).
    type: dict
  run:
    description: The run record that goes with O(plan) (C(preflight_run)).
    type: dict
  node_facts:
    description: node_facts' C(ansible_facts.preflight) (O(step=per_gpu)); omitted or empty when they failed.
    type: dict
  skip:
    description:
      - Why the entries are skipped (O(step=skip)). C(failed_task) - O(reason) names a task that failed on the
        host; C(probe_runtime) - O(reason) is the probe runtime's error; C(vllm) - O(reason) says why vLLM does not
        import, and only the vLLM probes are skipped.
    type: str
    choices: [failed_task, probe_runtime, vllm]
  reason:
    description: The detail of O(skip).
    type: raw
attributes:
  check_mode:
    support: full
    details: Computes the same in check mode; it never changes anything.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Ensure the level and the probe plan are valid before changing anything, and plan the probes
  preflight_plan:
    host: "{{ inventory_hostname }}"
    level: "{{ preflight_level }}"
    budgets: "{{ preflight_level_budget_s }}"
    probe_model: "{{ probe_model | default(none) }}"
    probe_plan: "{{ probe_plan }}"
    run_tags: "{{ ansible_run_tags }}"
    skip_tags: "{{ ansible_skip_tags }}"
  delegate_to: localhost
  register: planned

- name: Skip the vLLM probes when vLLM does not import
  preflight_plan:
    step: skip
    skip: vllm
    reason: vllm not importable in the probe runtime
    plan: "{{ planned.plan }}"
    run: "{{ planned.run }}"
  delegate_to: localhost
"""

RETURN = r"""
plan:
  description: The entries to run (name, entry, probe, timeout_s, thp_mode, per_gpu, gpu, vllm) and those skipped.
  returned: success
  type: dict
  sample: {run: [{name: load, entry: load, probe: load, timeout_s: 1800, thp_mode: null, per_gpu: false,
           gpu: null, vllm: false}], skipped: [{probe: kv_sweep, reason: "level standard does not include it
           (it runs at full)"}]}
run:
  description:
    - The run record C(preflight_run) - level, started_at, budget_s, planned, ran, failed, skipped, phases.
    - O(step=per_gpu) and O(step=skip) return O(run) with planned and skipped changed.
  returned: success
  type: dict
rejected_run:
  description: The run record of a host whose plan is rejected (empty lists; the level only when it is valid).
  returned: always, with O(step=plan)
  type: dict
errors:
  description: Every problem found, one string each; the failure message joins them.
  returned: always, with O(step=plan)
  type: list
  elements: str
"""

import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import plan as core  # noqa: E402

ARGUMENT_SPEC = {
    "step": {"type": "str", "choices": ["plan", "per_gpu", "skip"], "default": "plan"},
    "host": {"type": "str", "default": "this host"},
    "level": {"type": "raw"},
    "budgets": {"type": "raw"},
    "probe_model": {"type": "raw"},
    "probe_plan": {"type": "raw"},
    "run_tags": {"type": "list", "elements": "str", "default": ["all"]},
    "skip_tags": {"type": "list", "elements": "str", "default": []},
    "plan": {"type": "dict"},
    "run": {"type": "dict"},
    "node_facts": {"type": "dict"},
    "skip": {"type": "str", "choices": list(core.SKIPS)},
    "reason": {"type": "raw"},
}


def plan_step(module: AnsibleModule) -> None:
    p = module.params
    errors = core.plan_errors(p["level"], p["budgets"], p["probe_model"], p["probe_plan"])
    result = {"changed": False, "errors": errors, "rejected_run": core.rejected_run(p["level"])}
    if errors:
        module.fail_json(msg=core.rejection_message(p["host"], errors), **result)
    plan = core.plan_probes(p["level"], p["probe_plan"], p["run_tags"], p["skip_tags"])
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    module.exit_json(plan=plan, run=core.run_record(plan, p["level"], p["budgets"], started_at), **result)


def run_module() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("step", "per_gpu", ("plan", "run")), ("step", "skip", ("plan", "run", "skip"))],
        supports_check_mode=True,
    )
    p = module.params
    if p["step"] == "plan":
        plan_step(module)
    elif p["step"] == "per_gpu":
        plan, run = core.for_node(p["plan"], p["run"], p["node_facts"], p["probe_plan"] or {})
        module.exit_json(changed=False, plan=plan, run=run)
    else:
        plan, run = core.skip(p["plan"], p["run"], p["skip"], p["reason"])
        module.exit_json(changed=False, plan=plan, run=run)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
