#!/usr/bin/python
"""Ansible module: wait a while for a running probe, and say how far it got (retried until the probe ends)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: slm_probe_wait
short_description: Wait up to O(wait_s) for a probe started by slm_probe, and report its progress
description:
  - Reads the progress log that C(slm_probe) writes on the node for the probe O(name) and returns when the probe
    has ended or after O(wait_s) seconds, with RV(done) and one line for the console - host, probe, the probe's
    current step, its elapsed time, the run's time against the level's budget and the log's path.
  - Meant to be retried (C(until - result.done)) after C(slm_probe) was started with C(async) and C(poll - 0); each
    retry is an event with RV(preflight_progress) (printed by C(callback_plugins/preflight_progress.py), and in
    ansible-runner's event stream).
  - While it waits it touches the log's heartbeat file; C(slm_probe) with C(heartbeat_s) stops the probe when the
    heartbeat goes stale, that is when the controller stopped polling.
  - In check mode it reports done at once.
version_added: "0.2.0"
author: Preflight
options:
  name:
    description: The probe's result name, as given to C(slm_probe).
    type: str
    required: true
  log_dir:
    description: C(slm_probe)'s O(log_dir).
    type: path
    default: /var/log/preflight
  wait_s:
    description: The longest one call waits.
    type: int
    default: 15
  host:
    description: The host's name as the console shows it.
    type: str
    default: this host
  run_started:
    description: When the run began (C(preflight_run.started_at), ISO 8601), for the run's elapsed time.
    type: str
  budget_s:
    description: The level's budget in seconds (C(preflight_run.budget_s)).
    type: float
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Wait for the ttft probe, its progress every 15 s
  slm_probe_wait:
    name: ttft
    host: "{{ inventory_hostname }}"
  register: waited
  until: waited.done
  retries: 80
  delay: 0
"""

RETURN = r"""
done:
  description: Whether the probe has ended.
  returned: always
  type: bool
step:
  description: The probe's last progress line.
  returned: always
  type: str
log:
  description: The progress log's path on the node.
  returned: always
  type: str
preflight_progress:
  description: The console line.
  returned: always
  type: str
  sample: "node1 · probe kv_sweep · probes kv: [2/5] max-model-len 16384, 0.5 · 45 s · run 212 s of the level's 3600 s
    budget · log node1:/var/log/preflight/kv_sweep.log"
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import progress  # noqa: E402
from ansible.module_utils.preflight.core.catalog import PROBE_LOG_DIR  # noqa: E402


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "log_dir": {"type": "path", "default": PROBE_LOG_DIR},
            "wait_s": {"type": "int", "default": 15},
            "host": {"type": "str", "default": "this host"},
            "run_started": {"type": "str"},
            "budget_s": {"type": "float"},
        },
        supports_check_mode=True,
    )
    p = module.params
    log = progress.log_path(p["log_dir"], p["name"])
    if module.check_mode:
        module.exit_json(changed=False, done=True, step="", log=log, preflight_progress="")
    state = progress.wait(log, max(1, p["wait_s"]))
    line = progress.line(p["host"], p["name"], state, log, p["run_started"], p["budget_s"])
    module.exit_json(changed=False, done=state["done"], step=state["step"], log=log, preflight_progress=line)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
