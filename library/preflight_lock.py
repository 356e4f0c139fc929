#!/usr/bin/python
"""Ansible module: take or give back the host's run lock (one Preflight run at a time per host)."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core import lock

DOCUMENTATION = r"""
---
module: preflight_lock
short_description: Take or give back the host's Preflight run lock
description:
  - One Preflight run at a time per host. Two runs on one host (site, bootstrap, probe, rollback in any pair)
    would each rebuild the roles' records from their own snapshot, and the last writer would drop the other's.
  - With O(state=acquired) it takes an flock on O(path) (waiting up to O(wait_s) seconds for another run to
    let go) and hands it to a small detached holder process on the node, which keeps it until
    O(state=released) or until O(expire_s) seconds have passed, whichever is first; a controller that dies
    mid-run cannot leave the node locked for longer than that. The lock file holds the holder's record (its
    PID on the node, token, host, playbook, controller, start and expiry time).
  - When another run holds the lock past the wait, the module fails with a message naming that holder.
  - With O(state=released) it stops the holder of O(token) and gives the lock back. A hold that expired, or
    that another run holds now, is reported (RV(expired)) and left alone.
  - A probe on the node takes the same lock in-process (C(probes.core.lock.acquire)); a process started by
    the run passes its token (RV(token)) as C(PREFLIGHT_LOCK_TOKEN) and is covered by the run's hold.
  - Check mode takes nothing and stops nothing (a check-mode run changes nothing, so it must not block a
    real one); it reports whether another run holds the lock now (RV(holder)), with a warning when it does,
    because what check mode reads may then be mid-change.
  - The logic lives in C(module_utils/preflight/core/lock.py); this module only marshals.
version_added: "0.1.0"
author: Preflight
options:
  state:
    description: Take the lock (C(acquired)) or give it back (C(released)).
    type: str
    choices: [acquired, released]
    required: true
  path:
    description:
      - The lock file on the node, absolute and in normal form, not under C(/proc), C(/sys) or C(/dev).
      - Default C(/var/lib/preflight/run.lock) (C(LOCK_FILE) in core/lock.py), beside the roles' state dirs.
      - Created (mode 0600, its directory 0755) when missing, and never removed.
    type: str
  wait_s:
    description: Seconds to wait for another run to let go before failing. Default 60 (C(LOCK_WAIT_S)).
    type: float
  expire_s:
    description:
      - The longest the holder keeps the lock when it is not released, in seconds.
      - Default O(budget_s) plus C(LOCK_MARGIN_S) (900 s; tuning and the probe runtime are outside the budget).
    type: float
  budget_s:
    description: The run's budget (preflight_run.budget_s), the base of the default O(expire_s).
    type: float
  token:
    description: The token RV(token) of the acquiring task; required with O(state=released) outside check mode.
    type: str
  host:
    description: The inventory name, recorded for whoever has to wait.
    type: str
  playbook:
    description: The playbook that runs, recorded for whoever has to wait.
    type: str
  controller:
    description: The controller's user@host, recorded for whoever has to wait.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Never reports C(changed): the lock is bookkeeping, not a change of the host, so a second run stays at changed=0.
"""

EXAMPLES = r"""
- name: Take this host's run lock before the first change
  preflight_lock:
    state: acquired
    host: "{{ inventory_hostname }}"
    playbook: site.yml
  register: preflight_lock_held

- name: Give this host's run lock back after the last change
  preflight_lock:
    state: released
    token: "{{ preflight_lock_held.token }}"
"""

RETURN = r"""
token:
  description: The hold's token (give it to O(state=released), and as C(PREFLIGHT_LOCK_TOKEN) to processes of the run).
  returned: state=acquired, not in check mode
  type: str
holder:
  description: >-
    The holder's record (pid, token, host, playbook, controller, started_at, expires_at): ours after acquiring,
    the one given back after releasing, another run's in check mode (null when none holds it).
  returned: always
  type: dict
waited_s:
  description: Seconds spent waiting for another run to let go.
  returned: state=acquired, not in check mode
  type: float
expired:
  description: With O(state=released), true when the hold had already ended (expired, killed, or taken over).
  returned: state=released
  type: bool
path:
  description: The lock file.
  returned: always
  type: str
"""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["acquired", "released"], required=True),
            path=dict(type="str", default=lock.LOCK_FILE),
            wait_s=dict(type="float", default=lock.LOCK_WAIT_S),
            expire_s=dict(type="float"),
            budget_s=dict(type="float"),
            token=dict(type="str", no_log=False),
            host=dict(type="str"),
            playbook=dict(type="str"),
            controller=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    errors = lock.path_errors(path)
    if p["wait_s"] < 0:
        errors.append(f"preflight_lock_wait_s must be 0 or more seconds; got {p['wait_s']:g}")
    if p["expire_s"] is not None and p["expire_s"] <= 0:
        errors.append(f"preflight_lock_expire_s must be more than 0 seconds; got {p['expire_s']:g}")
    if p["state"] == "released" and not p["token"] and not module.check_mode:
        errors.append("state=released needs the token that state=acquired returned")
    if errors:
        module.fail_json(msg="; ".join(errors), path=path)
    try:
        if module.check_mode:
            found = lock.status(path) if os.path.exists(path) else {"held": False, "holder": None}
            if found["held"]:
                module.warn(f"{lock.describe(found['holder'])} holds {path}: what check mode reads may be mid-change")
            module.exit_json(changed=False, holder=found["holder"], path=path)
        if p["state"] == "released":
            out = lock.release_detached(path, p["token"])
            if out["expired"]:
                module.warn(
                    f"this run's hold on {path} had ended before the run did (it expired or its holder was "
                    f"killed{'; ' + lock.describe(out['holder']) + ' holds it now' if out['holder'] else ''}): "
                    "another run may have changed the host meanwhile; raise preflight_lock_expire_s"
                )
            module.exit_json(changed=False, path=path, **out)
        expire_s = p["expire_s"] or lock.expire_after_s(p["budget_s"])
        token = lock.new_token()
        info = lock.holder_info(token, p["host"], p["playbook"], p["controller"], expire_s)
        record = lock.acquire_detached(path, p["wait_s"], expire_s, info)
    except lock.LockBusy as exc:
        module.fail_json(msg=f"{p['host'] or 'this host'}: {exc}", holder=exc.holder, path=path,
                         waited_s=exc.waited_s)
    except lock.LockError as exc:
        module.fail_json(msg=str(exc), path=path)
    waited = record.pop("waited_s")
    module.exit_json(changed=False, token=token, holder=record, waited_s=waited, path=path)


if __name__ == "__main__":
    main()
