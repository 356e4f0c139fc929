#!/usr/bin/python
"""Ansible module (role-local): read everything the thp role decides on, change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: thp_inspect
short_description: Read THP settings, boot-time persistence options and other tuners that would override THP
description:
  - Reads the live Transparent Huge Pages settings and the choices this kernel offers for each.
  - Says whether systemd is running as PID 1 and whether a GRUB defaults file and a command to
    regenerate the GRUB configuration exist, and computes the defaults file as it is with the wanted
    C(transparent_hugepage=) option in C(GRUB_CMDLINE_LINUX) (C(module_utils/preflight/core/grub.py) - the file
    is read as the shell reads it, only that option changes, a line it cannot read with certainty is refused).
  - Lists what would override THP at boot or now, each as a sentence for the operator
    (a tuned profile, the kernel command line, the GRUB defaults, other units or tmpfiles.d and
    sysfs.d entries that write THP, a per-size knob that does not inherit).
  - With O(variables), also validates the role's variables against what this kernel offers and returns the
    plan (RV(plan)) and the rollback record after this run (RV(record)); with O(rollback), what rollback restores.
  - Never changes anything. The reading and the decisions are in C(module_utils/preflight/core/thp_node.py)
    and C(thp.py); this module only marshals.
version_added: "0.1.0"
author: Preflight
options:
  enabled:
    description:
      - The wanted value of C(enabled), used to tell a conflicting value from an agreeing one.
      - Without it, RV(conflicts) is not computed (empty).
    type: str
  defrag:
    description: The wanted value of C(defrag), named in conflict messages.
    type: str
    default: ""
  cmdline_thp:
    description:
      - The C(transparent_hugepage=) value the GRUB command line should carry; empty to carry none.
      - Only used to compute RV(bootloader.content).
    type: str
    default: ""
  own_unit:
    description: File name of the role's own unit, left out of the search for other writers.
    type: str
    default: preflight-thp.service
  grub_defaults_file:
    description: The GRUB defaults file.
    type: path
    default: /etc/default/grub
  state_file:
    description: The role's record of replaced values; read into RV(recorded) when it exists.
    type: path
  wants_dir:
    description: The C(.wants) directory that enables the role's unit; RV(systemd.wants_dir_exists) says if it exists.
    type: path
    default: /etc/systemd/system/sysinit.target.wants
  variables:
    description:
      - The role's variables (C(thp_enabled), C(thp_defrag), C(thp_khugepaged_defrag), C(thp_persist),
        C(thp_state_dir), C(thp_sizes)) as the play has them, types kept. Gives RV(errors), RV(plan) and RV(record).
      - O(enabled), O(defrag) and O(cmdline_thp) default to them.
    type: dict
  rollback:
    description: Also work out what rollback restores from the record in O(state_file) (RV(rollback)).
    type: bool
    default: false
  root:
    description:
      - The directory every node path is read under; C(/) on a live node, a copy of C(/sys) and C(/proc) to
        inspect a recorded tree (e.g. one from a kernel without per-size THP knobs).
    type: path
    default: /
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Read THP state and what could override it
  thp_inspect:
    enabled: madvise
    defrag: never
    cmdline_thp: madvise
  register: __thp_inspect
"""

RETURN = r"""
supported:
  description: Whether this kernel has C(/sys/kernel/mm/transparent_hugepage).
  returned: always
  type: bool
settings:
  description:
    - Per role variable, the tunable's C(path), C(current) value and C(choices); each per-size knob
      as C(thp_sizes[<N>kB]).
  returned: always
  type: dict
  sample:
    thp_enabled:
      path: /sys/kernel/mm/transparent_hugepage/enabled
      current: madvise
      choices: [always, madvise, never]
sizes:
  description:
    - Every page size this kernel offers for anonymous THP (C(hugepages-<N>kB/enabled), Linux 6.8+), smallest
      first, with C(path), C(current) and C(choices); empty on an older kernel.
  returned: always
  type: dict
  sample:
    64kB:
      path: /sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled
      current: never
      choices: [always, inherit, madvise, never]
systemd:
  description:
    - C(running) (systemd is PID 1), C(installed) (C(/etc/systemd/system) exists),
      C(wants_dir_exists) (O(wants_dir) exists), C(unit_exists) (O(own_unit) is in C(/etc/systemd/system)).
  returned: always
  type: dict
recorded:
  description: The content of O(state_file), or an empty dict when it does not exist or O(state_file) is not given.
  returned: always
  type: dict
bootloader:
  description:
    - C(kind) (C(grub) or null), C(reason) when null, C(error) (the file cannot be read with certainty - file,
      line and why), C(defaults_file), C(regenerate) (argument list), C(content) (the file with the wanted
      option), C(changed), C(edit) (what the edit adds and replaces, for the record), C(option) and
      C(default_option) (the value of C(transparent_hugepage=) in C(GRUB_CMDLINE_LINUX) and its C(_DEFAULT)).
  returned: always
  type: dict
booted_option:
  description: The C(transparent_hugepage=) value the running kernel was booted with, or null.
  returned: always
  type: str
conflicts:
  description: One sentence per thing that overrides or would override the wanted THP settings.
  returned: always
  type: list
  elements: str
tuned:
  description:
    - What tuned does here (C(module_utils/preflight/core/thp_tuned.py)) - C(installed), C(pid) (the running
      daemon's, or null), C(enabled) (at boot), C(active) (it runs or is enabled, with a profile), C(reason),
      C(active_profile) and C(profile_mode) (the files' text, null when absent), C(names), C(profile)
      (Preflight's profile's text, or null), C(cmdline_sets_thp) (the running kernel got transparent_hugepage=,
      so tuned leaves C(enabled) alone).
  returned: always
  type: dict
persist:
  description: thp_persist with C(auto) made a method (C(tuned) where tuned is active, C(systemd) otherwise).
  returned: always
  type: list
  elements: str
tuned_plan:
  description:
    - With C(tuned) in RV(persist), what the tuned method writes - C(profile_dir), C(profile_file), C(content),
      C(includes), C(active_profile) and C(profile_mode) (C(path), C(content)), C(changed), C(pid), C(reload),
      C(wait) (after a reload, each knob the daemon must have set - C(name), C(path), C(value), C(pattern)).
  returned: always (null unless the tuned method is used and the variables are valid)
  type: dict
errors:
  description: One sentence per invalid variable, naming it, its value and what is allowed.
  returned: when O(variables) is given
  type: list
  elements: str
plan:
  description:
    - The tunables to set, in order, each with C(name), C(path), C(desired) and C(current).
    - Empty when RV(errors) is not.
  returned: when O(variables) is given
  type: list
  elements: dict
record:
  description: C(state), the rollback record after this run, and C(changes), how many entries this run adds.
  returned: when O(variables) is given and RV(errors) is empty
  type: dict
rollback:
  description:
    - C(settings) (name, path, value to restore), C(cmdline) (the GRUB defaults file as rollback leaves it -
      C(content), C(changed), C(regenerate); null without a recorded GRUB edit),
      C(restore_cmdline) and C(remove_record) (whether the record can be removed afterwards), C(tuned) (what
      to do for a recorded tuned profile, nothing without one - C(files) to put back byte for byte, each
      C(path), C(content), C(absent), C(changed); C(profile_dir), C(remove_profile), C(pid), C(reload),
      C(wait), the recorded values the daemon puts back when it unapplies Preflight's profile).
  returned: when O(rollback) is true
  type: dict
"""

import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core import thp, thp_arm, thp_node, thp_sizes, thp_tuned  # noqa: E402
from ansible.module_utils.preflight.core.tree import Tree  # noqa: E402

ARGUMENT_SPEC = {
    "enabled": {"type": "str"},
    "defrag": {"type": "str"},
    "cmdline_thp": {"type": "str"},
    "own_unit": {"type": "str", "default": "preflight-thp.service"},
    "grub_defaults_file": {"type": "path", "default": "/etc/default/grub"},
    "state_file": {"type": "path"},
    "wants_dir": {"type": "path", "default": "/etc/systemd/system/sysinit.target.wants"},
    "variables": {"type": "dict"},
    "rollback": {"type": "bool", "default": False},
    "root": {"type": "path", "default": "/"},
}


def decide(tree: Tree, result: dict, variables: dict, marker: str = thp_arm.MARKER) -> None:
    """Validation, plan and record: the role's decisions on what was read. While a probe holds THP for an A/B
    arm (core/thp_arm.py's marker names a live owner), the node's mode is the arm's: nothing is recorded."""
    result["errors"] = thp.validate(variables, result["settings"], result["sizes"])
    result["errors"] += thp_tuned.validate(variables.get("thp_persist"), result["tuned"])
    persist = result["persist"]
    if not result["errors"] and "kernel_cmdline" in persist:
        wanted = variables.get("thp_sizes")
        tokens = thp_sizes.anon_tokens(wanted, result["sizes"]) if wanted else []
        result["bootloader"] = thp_sizes.with_anon(result["bootloader"], tokens, thp_sizes.anon_support(tree),
                                                   thp_sizes.booted_anon(tree))
    held = thp_arm.owner(marker)
    if held is not None:
        result["errors"].append(f"{thp_arm.owner_message(held)}; nothing was recorded or changed")
    boot = result["bootloader"]
    if "kernel_cmdline" in persist and boot["error"]:
        result["errors"].append(f"thp_persist: kernel_cmdline cannot edit {boot['defaults_file']}: {boot['error']}")
    result["plan"] = [] if result["errors"] else thp.plan(variables, result["settings"], result["sizes"])
    if not result["errors"]:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result["record"] = thp.record(result["recorded"], result["plan"], persist, result["bootloader"], now)
        if "tuned" in persist:
            tuned_plan(result, now)


def tuned_plan(result: dict, now: str) -> None:
    """The tuned method's profile and files (RV(tuned_plan)) and its entry in the rollback record."""
    kept = result["recorded"].get("tuned")
    try:
        result["tuned_plan"] = thp_tuned.plan(result["tuned"], kept, result["plan"])
    except thp_tuned.TunedError as err:
        result["errors"].append(f"thp_persist: tuned cannot edit {thp_tuned.PROFILE_FILE}: {err}")
        result["plan"], result["tuned_plan"] = [], None
        del result["record"]
        return
    entry = thp_tuned.record(kept, result["tuned"], result["tuned_plan"], now)
    if entry != kept:
        result["record"]["state"]["tuned"] = entry
        result["record"]["changes"] += 1


def run_module() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    variables = params["variables"]
    if variables is not None:
        for option, name in (("enabled", "thp_enabled"), ("defrag", "thp_defrag"), ("cmdline_thp", "thp_enabled")):
            if params[option] is None:
                params[option] = str(variables[name])
    tree = Tree(params["root"])
    wanted_sizes = (variables or {}).get("thp_sizes") or {}
    tuned = thp_tuned.state(tree)
    persist = thp_tuned.resolve((variables or {}).get("thp_persist"), tuned) if variables is not None else []
    result = thp_node.inspect(tree, params["enabled"], params["defrag"] or "", params["cmdline_thp"] or "",
                              params["own_unit"], params["grub_defaults_file"], params["wants_dir"],
                              wanted_sizes if isinstance(wanted_sizes, dict) else {}, "tuned" in persist)
    result.update(tuned=tuned, persist=persist, tuned_plan=None)
    result["sizes"] = thp_sizes.read_sizes(tree)
    result["settings"].update(thp_sizes.settings(result["sizes"]))
    try:
        result["recorded"] = thp_node.read_record(tree, params["state_file"])
    except (OSError, ValueError) as err:
        module.fail_json(
            msg=f"cannot read the THP rollback record {params['state_file']}: {err}; fix or remove it by hand "
            "(it holds the values to restore)"
        )
    if variables is not None:
        decide(tree, result, variables)
    if params["rollback"]:
        recorded = result["recorded"]
        cmdline, anon = recorded.get("kernel_cmdline"), recorded.get("kernel_cmdline_thp_anon")
        boot = thp_node.rollback_bootloader(tree, cmdline, after=anon) if cmdline or anon else None
        if boot and boot["error"]:
            module.fail_json(msg=f"THP rollback stopped before changing anything, the record {params['state_file']} "
                             f"is kept: {boot['error']}", **result)
        result["rollback"] = thp.rollback_plan(recorded, boot)
        try:
            result["rollback"]["tuned"] = thp_tuned.rollback_plan(tree, recorded.get("tuned"),
                                                                  result["rollback"]["settings"])
        except thp_tuned.TunedError as err:
            module.fail_json(msg=f"THP rollback stopped before changing anything, the record {params['state_file']} "
                             f"is kept: {err}", **result)
    module.exit_json(changed=False, **result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
