#!/usr/bin/python
"""Ansible module: run one Preflight probe (python -m probes <probe> --json) in the host's probe runtime."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slm_probe
short_description: Run one Preflight probe in the host's probe runtime and return its JSON result
description:
  - Runs C(python -m probes <probe> <flags> --json) as an argument list (never through a shell) with the
    probe runtime's interpreter, C(runtime_dir) first on C(PYTHONPATH), and the environment given.
  - O(options) is a dictionary of probe options; each is checked against the probe's whitelist and its
    type before anything runs, and becomes the probe's flag (C(max_model_len=2048) becomes C(--max-model-len 2048)).
    An unknown option fails with its name and the options the probe allows.
  - The probe runs in its own process group; when it outlives O(timeout) the whole group is stopped
    (SIGTERM, then SIGKILL), a vLLM server it started included.
  - Returns the probe's envelope as RV(result); the playbooks record it as C(preflight_probe_results.<name>), so
    results of several probes merge into one dictionary per host. It is not returned as a fact, which the fact
    cache would keep, with every envelope of the run, for every task of every later run to read again.
  - A probe that fails returns its exit status, the tail of its stderr and the command, with its envelope
    when it printed one.
  - In check mode the command is built and returned, and nothing runs.
version_added: "0.1.0"
author: Preflight
options:
  probe:
    description: The probe to run.
    type: str
    required: true
    choices: [load, generate, ttft, kv, batching, suite]
  name:
    description:
      - The result's name (the key the playbooks record it under in C(preflight_probe_results)). Defaults to
        O(probe).
      - Lets one probe run twice in a plan (C(kv) at one length, C(kv_sweep) over several).
    type: str
  servers:
    description:
      - With O(probe=suite) - the vLLM probes that share servers (a plan item of
        C(module_utils/preflight/core/plan_servers.py)). A list of servers, each a list of members
        C({name, probe, options}); the members of one server share one start and measure it in turn, several
        servers (one per GPU) run side by side.
      - Each member's options, over O(options), are checked as when the probe runs alone. Each member's envelope
        comes back under RV(members), by member name; RV(ran) and RV(failures) say
        how each went. The task fails only when the run printed no result at all.
    type: list
    elements: list
  options:
    description:
      - Probe options, by name; see C(module_utils/preflight/core/probe_options.py) C(PROBE_OPTIONS) for each
        probe's list.
      - Switches take C(true)/C(false); lists (for example O(options.concurrency)) take YAML lists; C(null) leaves
        the probe's default.
    type: dict
    default: {}
  log_dir:
    description:
      - The directory on the node where the probe's progress log goes (C(<name>.log), its stderr as written, framed
        by a start and an end line); C(tail -f) it while the probe runs. C(slm_probe_wait) reads it.
    type: path
    default: /var/log/preflight
  heartbeat:
    description:
      - The probe is stopped (and a THP arm put back) when nobody has touched the log's heartbeat file for
        C(PROBE_HEARTBEAT_S) seconds (C(module_utils/preflight/core/catalog.py)) - C(slm_probe_wait) touches it
        while the controller polls - so a controller that was interrupted or lost the host leaves nothing running.
      - Only for a probe started with C(async) and C(poll - 0) and waited for with C(slm_probe_wait).
    type: bool
    default: false
  thp_mode:
    description:
      - One arm of a THP A/B - set C(/sys/kernel/mm/transparent_hugepage/enabled) to this mode for the probe and
        put the original back when it ends, all on the node (C(module_utils/preflight/core/thp_arm.py)) - on a
        normal end, on SIGTERM/SIGINT/SIGHUP, and, when this module is killed outright, by a guard process that
        outlives it. A marker in C(/run/preflight) names the owner meanwhile; a second arm, or the thp role's
        record, is refused while it lives. Ignored in check mode.
      - A global mode (always, madvise, never) and/or per-size settings C(<size>=<value>) for
        C(hugepages-<size>/enabled) (always, inherit, madvise, never), joined by C(+) - C(never+64kB=always).
        Each is checked against the sizes and values the kernel offers before anything is written; only the
        knobs named are set and put back.
    type: str
  python:
    description: The probe runtime's interpreter (a path, or a name found on C(PATH)).
    type: str
    default: python3
  runtime_dir:
    description: The directory that holds the C(probes) package (the role C(probe_runtime) puts it there).
    type: path
    default: /opt/preflight
  env:
    description:
      - Extra environment for the probe, for example C(PYTHONPATH=/tmp/site) and C(VLLM_USE_FLASHINFER_SAMPLER=0)
        for the GPU box's vLLM.
      - O(runtime_dir) is always put first on C(PYTHONPATH). C(HF_HUB_OFFLINE=1) unless set here.
    type: dict
    default: {}
  timeout:
    description: Seconds the probe may run before it (and every process it started) is stopped.
    type: int
    default: 1800
attributes:
  check_mode:
    support: full
    details: Returns the command in RV(cmd) and runs nothing.
  diff_mode:
    support: none
notes:
  - The module reports C(changed=false) because a probe measures and leaves the node as it found it
    (a cache drop is opt-in, via the load probe's C(drop_caches) option, and is reported in the probe's params).
  - Long probes are best run with C(async) and C(poll) so the operator sees that the host is still working.
"""

EXAMPLES = r"""
- name: Measure cold and warm model load on the probe model
  slm_probe:
    probe: load
    python: /opt/preflight/venv/bin/python
    options:
      model: /opt/preflight/models/tiny
      repeats: 3

- name: TTFT on the GPU box's existing interpreter, with vLLM from /tmp/site
  slm_probe:
    probe: ttft
    python: /usr/bin/python3
    env:
      PYTHONPATH: /tmp/site
      VLLM_USE_FLASHINFER_SAMPLER: "0"
    options:
      model: /opt/preflight/models/qwen2.5-1.5b
      max_model_len: 4096
      gpu_memory_utilization: 0.5
    timeout: 900
  async: 960
  poll: 15
"""

RETURN = r"""
cmd:
  description: The command, as the argument list that ran (or would run, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/opt/preflight/venv/bin/python, -m, probes, load, --model, /opt/preflight/models/tiny, --json]
rc:
  description: The probe's exit status; absent in check mode and when it could not start.
  returned: when the probe ran
  type: int
  sample: 0
duration_s:
  description: Wall-clock seconds the probe ran.
  returned: when the probe ran
  type: float
  sample: 12.4
timed_out:
  description: Whether the probe was stopped at O(timeout).
  returned: when the probe ran
  type: bool
log:
  description: The probe's progress log on the node (its stderr as it was written).
  returned: when the probe ran
  type: str
  sample: /var/log/preflight/ttft.log
thp:
  description:
    - With O(thp_mode) - the arm (C(mode)) and its C(settings) by knob (C(enabled) or a size), the values it found
      (C(original)), and whether they were put back (C(put_back)).
  returned: with O(thp_mode), when the arm started
  type: dict
stderr_tail:
  description: The last lines of the probe's stderr (at most 40 lines, 4000 characters).
  returned: when the probe ran
  type: str
result:
  description:
    - The probe's envelope, as C(probes/result.py) builds it (schema_version, probe, host, started_at,
      duration_s, params, results, verdicts, environment, and errors when a measurement failed).
  returned: when the probe printed one
  type: dict
members:
  description: With O(probe=suite), each member's envelope by its name.
  returned: with O(probe=suite), when the run printed its result
  type: dict
ran:
  description: With O(probe=suite), the members whose measurements were all taken.
  returned: with O(probe=suite)
  type: list
  elements: str
failures:
  description:
    - With O(probe=suite), the members that failed, as the run record's C(failed) entries (probe, task, rc,
      timed_out, msg, stderr_tail, cmd).
  returned: with O(probe=suite)
  type: list
  elements: dict
phases:
  description: With O(probe=suite), one phase per member (C(probe <name>)), as the run record's C(phases) entries.
  returned: with O(probe=suite), when the run printed its result
  type: list
  elements: dict
skipped:
  description: With O(probe=suite) in check mode, each member with the command that would run.
  returned: with O(probe=suite)
  type: list
  elements: dict
"""

import os  # noqa: E402
import shutil  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight import probe_runner  # noqa: E402
from ansible.module_utils.preflight.core import envelope, probe_options, progress, thp_arm  # noqa: E402
from ansible.module_utils.preflight.core.catalog import (  # noqa: E402
    PROBE_HEARTBEAT_S,
    PROBE_LOG_DIR,
    PROBES,
    SUITE_PROBE,
)


def _python_problem(python: str) -> str | None:
    if os.sep in python:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            return f"python {python} is not an executable file on this host"
        return None
    if shutil.which(python) is None:
        return f"python {python!r} is not on this host's PATH; give the probe runtime's interpreter as a path"
    return None


def _run(module, cmd: list[str], probe: str, env: dict, log: str):
    p = module.params
    heartbeat_s = PROBE_HEARTBEAT_S if p["heartbeat"] else 0
    return probe_runner.run(cmd, probe, env, p["runtime_dir"], p["timeout"], log=log, heartbeat_s=heartbeat_s)


def _run_thp_arm(module, result: dict, cmd: list[str], probe: str, env: dict, name: str):
    """The probe with THP set to this arm's mode, and the original put back on the node on every way out."""
    p = module.params
    try:
        arm = thp_arm.ThpArm(p["thp_mode"], probe=name)
    except thp_arm.ThpArmError as err:
        module.fail_json(msg=f"probe {name}: THP A/B arm {p['thp_mode']}: {err}", **result)
    try:
        with arm:
            run = _run(module, cmd, probe, env, result["log"])
    except thp_arm.ThpArmError as err:
        module.fail_json(msg=f"probe {name}: THP A/B arm {p['thp_mode']}: {err}", thp=_arm_record(arm), **result)
    except thp_arm.Interrupted as sig:
        module.fail_json(msg=f"probe {name}: stopped by signal {sig.signum}; THP put back to {arm.original}",
                         thp=_arm_record(arm), **result)
    result["thp"] = _arm_record(arm)
    if not arm.restored["ok"]:
        module.fail_json(msg=f"probe {name}: THP could not be put back to {arm.original}: "
                         f"{arm.restored.get('error', 'read back differs')}", **result)
    return run


def _arm_record(arm) -> dict:
    return {"mode": arm.mode, "original": arm.original, "settings": arm.settings, "restored": arm.restored,
            "put_back": (arm.restored or {"ok": True})["ok"]}


def _suite_exit(module, result: dict, run, members: list[str], name: str, shown: list[str]) -> None:
    """Each member on its own: its envelope, ran or failed; the task fails only when none came back."""
    last = probe_runner.tail(run.stderr, lines=1, chars=300)
    common = {"task": f"probe {name}", "rc": run.rc, "timed_out": run.timed_out,
              "stderr_tail": result["stderr_tail"], "cmd": shown,
              "msg": (run.problem or "failed") + (f"; last stderr line: {last}" if last else "")}
    outcome = envelope.suite_outcome(run.envelope, members, common)
    result.update(outcome, skipped=[])
    if not outcome["members"]:
        module.fail_json(msg=f"probes {', '.join(members)} on shared servers ({' '.join(shown)}): {common['msg']}",
                         **result)
    module.exit_json(**result)


def _runtime_problem(runtime_dir: str) -> str | None:
    if os.path.isfile(os.path.join(runtime_dir, "probes", "__main__.py")):
        return None
    return f"runtime_dir {runtime_dir} holds no probes package (probes/__main__.py); run the probe_runtime role first"


def _command(module, result: dict) -> tuple[list[str], list[str], list[str]]:
    """(the command, the command as shown - secrets redacted, the suite's member names or [])."""
    p = module.params
    if p["probe"] == SUITE_PROBE:
        plan, errors = probe_options.suite_plan(p["servers"], p["options"])
        if errors:
            module.fail_json(msg="; ".join(errors), errors=errors, **result)
        return (probe_options.suite_command(p["python"], plan), probe_options.suite_command(p["python"], plan, True),
                [m["name"] for server in plan for m in server])
    try:
        cmd = probe_options.build_command(p["python"], p["probe"], p["options"])
    except probe_options.ProbeArgumentError as err:
        module.fail_json(msg=str(err), errors=err.errors, **result)
    return cmd, probe_options.redact(cmd), []


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "probe": {"type": "str", "required": True, "choices": [*PROBES, SUITE_PROBE]},
            "name": {"type": "str"},
            "servers": {"type": "list", "elements": "list"},
            "options": {"type": "dict", "default": {}},
            "python": {"type": "str", "default": "python3"},
            "runtime_dir": {"type": "path", "default": "/opt/preflight"},
            "env": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 1800},
            "thp_mode": {"type": "str"},
            "log_dir": {"type": "path", "default": PROBE_LOG_DIR},
            "heartbeat": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    # Secrets go to the probe in its environment, never on its command line, and are masked in what returns.
    p["options"], secret_env = probe_options.secrets_to_env(p["options"])
    module.no_log_values.update(secret_env.values())
    probe, name = p["probe"], p["name"] or p["probe"]
    result: dict = {"changed": False, "probe": probe, "name": name}

    if p["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be a positive number of seconds, got {p['timeout']}", **result)
    cmd, shown, members = _command(module, result)
    result["cmd"] = shown
    problems = [msg for msg in (_python_problem(p["python"]), _runtime_problem(p["runtime_dir"])) if msg]
    if module.check_mode:
        # The runtime may be one that the same check run would only have created: say so, run nothing.
        result["msg"] = "check mode: would run " + " ".join(shown)
        for problem in problems:
            module.warn(f"{problem} (ignored in check mode)")
        if members:
            result.update(ran=[], failures=[], phases=[],
                          skipped=[{"probe": m, "reason": result["msg"]} for m in members])
        module.exit_json(**result)
    if problems:
        module.fail_json(msg="; ".join(problems), **result)

    env = probe_runner.probe_env(p["runtime_dir"], {**p["env"], **secret_env})
    result["log"] = progress.log_path(p["log_dir"], name)
    if p["thp_mode"]:
        run = _run_thp_arm(module, result, cmd, probe, env, name)
    else:
        run = _run(module, cmd, probe, env, result["log"])
    result.update(
        rc=run.rc,
        duration_s=run.duration_s,
        timed_out=run.timed_out,
        stderr_tail=probe_runner.tail(run.stderr),
    )
    if members:
        _suite_exit(module, result, run, members, name, shown)
    if run.envelope is not None:
        result["result"] = run.envelope
    if not run.ok:
        where = f"probe {name} ({' '.join(shown)})"
        detail = run.problem or "failed"
        last = probe_runner.tail(run.stderr, lines=1, chars=300)
        msg = f"{where}: {detail}" + (f"; last stderr line: {last}" if last else "")
        if run.envelope is None and run.stdout.strip():
            result["stdout_tail"] = probe_runner.tail(run.stdout)
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
