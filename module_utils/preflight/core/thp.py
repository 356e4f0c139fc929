"""The thp role's decisions, on what thp_node.py read: which variables are wrong, what to set, what to record
for rollback, how each persistence method came out, whether the kernel took the values, what rollback does.

Values are written into messages as Jinja's ``~`` wrote them (str()): the role's messages are unchanged.
"""

from __future__ import annotations

from . import grub, thp_sizes, thp_tuned
from .catalog import ROLLBACK_RECORD_SCHEMA_VERSION, THP_KHUGEPAGED_DEFRAG_CHOICES, THP_PERSIST_CHOICES

CHECK_NOTE = " (check mode: nothing was written)"
CMDLINE_SCOPE = "; covers thp_enabled only (thp_defrag and thp_khugepaged_defrag need the systemd method)"
NOT_PID1 = (
    "; systemd is not PID 1 here (no /run/systemd/system), so the unit could not be started now:"
    " the live values were written directly and the unit applies them at the next boot"
)
NO_PERSISTENCE = "none: thp_persist is empty, the values are live only and are lost at reboot"


def _is_list(value) -> bool:
    if isinstance(value, (str, bytes, dict)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


# --- Validation (before anything is touched) -----------------------------------------------------------------
def validate(variables: dict, settings: dict, sizes: dict | None = None) -> list[str]:
    """Every invalid THP variable, one sentence each (meta/argument_specs.yml has checked the words already;
    this checks them against what this kernel lists, and what an argument spec cannot). ``sizes``: the per-size
    knobs this kernel offers (thp_sizes.read_sizes), against which thp_sizes is checked."""
    errors = []
    for name in ("thp_enabled", "thp_defrag"):
        value, offered = variables[name], settings[name]["choices"]
        if str(value) not in offered:
            errors.append(
                f"{name}: '{value}' is not offered by this kernel ({settings[name]['path']}); "
                f"allowed: {', '.join(offered)}"
            )
    khugepaged = variables["thp_khugepaged_defrag"]
    allowed = [str(choice) for choice in THP_KHUGEPAGED_DEFRAG_CHOICES]
    if isinstance(khugepaged, bool) or str(khugepaged) not in allowed:
        why = "is a YAML boolean, not a number" if isinstance(khugepaged, bool) else "is not allowed"
        errors.append(f"thp_khugepaged_defrag: '{khugepaged}' {why}; allowed: {', '.join(allowed)}")
    persist = variables["thp_persist"]
    methods = ", ".join(THP_PERSIST_CHOICES)
    if not _is_list(persist):
        errors.append(f"thp_persist: '{persist}' is not a list; write a list of {methods}, e.g. [systemd]")
    else:
        for method in persist:
            if method not in THP_PERSIST_CHOICES:
                errors.append(f"thp_persist: '{method}' is not a persistence method; allowed items: {methods}")
    state_dir = variables["thp_state_dir"]
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        errors.append(f"thp_state_dir: '{state_dir}' is not an absolute path")
    return errors + thp_sizes.validate(variables.get("thp_sizes"), sizes or {})


def plan(variables: dict, settings: dict, sizes: dict | None = None) -> list[dict]:
    """The three tunables to set, in order, then the per-size knobs thp_sizes names (smallest first): name, path,
    desired and current value (strings)."""
    desired = {
        "thp_enabled": str(variables["thp_enabled"]),
        "thp_defrag": str(variables["thp_defrag"]),
        "thp_khugepaged_defrag": str(int(variables["thp_khugepaged_defrag"])),
    }
    return [
        {"name": name, "path": settings[name]["path"], "desired": value, "current": settings[name]["current"]}
        for name, value in desired.items()
    ] + thp_sizes.plan(variables.get("thp_sizes"), sizes or {})


def record(recorded: dict, planned: list[dict], persist: list, boot: dict, now: str) -> dict:
    """The rollback record after this run and how many entries it adds. The first value Preflight replaces is
    the one rollback restores: an entry, once written, is never overwritten."""
    settings = dict(recorded.get("settings") or {})
    new = {
        entry["name"]: {"path": entry["path"], "value": entry["current"], "recorded_at": now}
        for entry in planned
        # A knob this kernel lacks (current None: no khugepaged/defrag) has no value to give back.
        if entry["current"] is not None and entry["current"] != entry["desired"] and entry["name"] not in settings
    }
    new_cmdline = {}
    kept = recorded.get("kernel_cmdline")
    if "kernel_cmdline" in persist and boot["kind"] == "grub" and boot.get("edit") and (not kept or "added" in kept):
        # Exactly what the GRUB edit adds and replaces (core/grub.py); a later run keeps what was replaced first.
        merged = grub.merge(kept, {**boot["edit"], "recorded_at": now})
        if merged != kept:
            new_cmdline["kernel_cmdline"] = merged
    if "kernel_cmdline" in persist and boot["kind"] == "grub":
        kept_anon = recorded.get("kernel_cmdline_thp_anon")
        anon = thp_sizes.record_anon(kept_anon, boot, now)
        if anon != kept_anon:
            new_cmdline["kernel_cmdline_thp_anon"] = anon
    state = {**recorded, "schema_version": ROLLBACK_RECORD_SCHEMA_VERSION, "settings": {**settings, **new}}
    state.update(new_cmdline)
    return {"state": state, "changes": len(new) + len(new_cmdline)}


# --- Persistence ---------------------------------------------------------------------------------------------
def systemd_outcome(systemd: dict, unit: dict, check_mode: bool) -> dict:
    """State and detail of the systemd method. ``unit``: name, wanted_by, and the results of writing the unit
    (written), its .wants link (link) and starting it (start) as the tasks registered them."""
    changed = bool(unit["written"].get("changed") or unit["link"].get("changed"))
    start = unit["start"]
    wants = f"{unit['wanted_by']}.wants symlink"
    if not systemd["installed"]:
        return {"state": "unavailable", "detail": "systemd is not installed here (no /etc/systemd/system)"}
    if start.get("failed"):
        detail = f"{unit['name']} was written and enabled but did not start: {start.get('msg', 'unknown error')}"
        return {"state": "failed", "detail": detail}
    in_place = f"unit in place and enabled by the {wants}"
    if check_mode:
        detail = f"unit would be written and enabled by the {wants}" if changed else in_place
        return {"state": "installed" if changed else "unchanged", "detail": detail + CHECK_NOTE}
    if systemd["running"]:
        detail = "unit in place, enabled and started"
        if changed:
            detail = f"unit written, enabled ({unit['wanted_by']}) and started"
        state = "installed" if changed or start.get("changed") else "unchanged"
        return {"state": state, "detail": detail + ": it writes the values at every boot"}
    detail = f"unit written and enabled by the {wants}" if changed else in_place
    return {"state": "installed" if changed else "unchanged", "detail": detail + NOT_PID1}


def cmdline_outcome(boot: dict, booted: str | None, enabled: str, grub: dict, check_mode: bool) -> dict:
    """State, detail and reboot_required of the kernel_cmdline method. ``grub``: the results of editing the
    defaults file (edit) and regenerating the configuration (regenerate) as the tasks registered them."""
    if boot["kind"] != "grub":
        return {"state": "unavailable", "detail": boot["reason"] + thp_sizes.anon_note(boot), "reboot_required": False}
    regenerate = grub["regenerate"]
    command = " ".join(boot["regenerate"])
    if regenerate.get("rc", 0) != 0:
        error = (regenerate.get("stderr") or "").strip() or "no error output"
        detail = f"{boot['defaults_file']} was edited but {command} failed (rc {regenerate['rc']}): {error}"
        return {"state": "failed", "reboot_required": False, "detail": detail}
    reboot = booted != enabled
    note = ""
    if reboot:
        was = f"transparent_hugepage={booted}" if booted else "no transparent_hugepage= option"
        note = f"; the running kernel was booted with {was}: reboot required for the command line to take effect"
    elif thp_sizes.anon_reboot(boot):
        reboot = True
        note = "; the running kernel was booted with other thp_anon= options: reboot required for them to take effect"
    if grub["edit"].get("changed"):
        detail = (
            f"transparent_hugepage={enabled} put in GRUB_CMDLINE_LINUX of {boot['defaults_file']} and the GRUB "
            f"configuration regenerated with {command}{note}{CMDLINE_SCOPE}{thp_sizes.anon_note(boot)}"
            f"{CHECK_NOTE if check_mode else ''}"
        )
        return {"state": "installed", "reboot_required": reboot, "detail": detail}
    detail = f"GRUB_CMDLINE_LINUX of {boot['defaults_file']} already has transparent_hugepage={enabled}"
    detail += note + CMDLINE_SCOPE + thp_sizes.anon_note(boot)
    return {"state": "unchanged", "reboot_required": reboot, "detail": detail}


def persistence(persist: list, inspected: dict, enabled: str, unit: dict, grub: dict, check_mode: bool,
                tuned: dict | None = None) -> dict:
    """preflight_role_results.thp.persistence, whether a reboot is needed, and the lines the role prints.
    ``persist``: thp_persist with auto resolved (thp_inspect's persist); ``tuned``: the registered results of
    writing the tuned profile (profile), active_profile with profile_mode (active) and of the daemon's reload
    (reload). Entries come in the order of ``persist``."""
    entries = []
    reboot_required = False
    if "tuned" in persist:
        tuned = tuned or {}
        outcome = thp_tuned.outcome(inspected["tuned_plan"], tuned, tuned.get("reload") or {}, check_mode)
        entries.append({"method": "tuned", "path": thp_tuned.PROFILE_FILE, **outcome})
    if "systemd" in persist:
        outcome = systemd_outcome(inspected["systemd"], unit, check_mode)
        entries.append({"method": "systemd", "path": unit["path"], **outcome})
    if "kernel_cmdline" in persist:
        boot = inspected["bootloader"]
        outcome = cmdline_outcome(boot, inspected["booted_option"], str(enabled), grub, check_mode)
        reboot_required = outcome.pop("reboot_required")
        entries.append({"method": "kernel_cmdline", "path": boot["defaults_file"], **outcome})
    entries.sort(key=lambda entry: persist.index(entry["method"]))
    lines = [f"{e['method']}: {e['state']} ({e['detail']})" for e in entries] or [NO_PERSISTENCE]
    return {"persistence": entries, "reboot_required": reboot_required, "lines": lines}


# --- Verification and the role's result ----------------------------------------------------------------------
def result(planned: list[dict], applied: list[dict], readback: dict, outcome: dict, conflicts: list,
           check_mode: bool) -> dict:
    """preflight_role_results.thp: what was set, how it persists, and whether the kernel took every value.
    ``applied``: sysfs_tunable's loop results; ``readback``: thp_node.read_settings after applying;
    ``outcome``: persistence()."""
    problems = [
        f"{entry['name']}: wanted {entry['desired']}, the kernel reads back "
        f"{readback[entry['name']]['current']} ({entry['path']})"
        for entry in planned
        if readback[entry["name"]]["current"] != entry["desired"]
    ]
    problems += [f"{e['method']}: {e['detail']}" for e in outcome["persistence"] if e["state"] == "failed"]
    rows = [
        {
            "name": row["item"]["name"],
            "path": row["item"]["path"],
            "desired": row["item"]["desired"],
            "before": row.get("before"),
            "after": row.get("after"),
            "changed": row.get("changed", False),
        }
        for row in applied
    ]
    return {
        "role": "thp",
        "settings": rows,
        "persistence": outcome["persistence"],
        "conflicts": conflicts,
        "verified": not problems,
        "problems": problems,
        "reboot_required": bool(outcome["reboot_required"]),
        "check_mode": check_mode,
    }


# --- Rollback ------------------------------------------------------------------------------------------------
def _cmdline_recorded(recorded: dict) -> bool:
    return "kernel_cmdline" in recorded or "kernel_cmdline_thp_anon" in recorded


def rollback_plan(recorded: dict, boot: dict | None) -> dict:
    """What rollback restores: the recorded tunables, the GRUB file (``boot``: thp_node.rollback_bootloader,
    None when no GRUB edit was recorded), and whether the record can go (a command line that could not be
    restored keeps it, so a later rollback can finish the job)."""
    restore_cmdline = boot is not None and boot["kind"] == "grub"
    return {
        "settings": [
            {"name": name, "path": entry["path"], "value": entry["value"]}
            for name, entry in (recorded.get("settings") or {}).items()
            if entry.get("value") is not None  # recorded null by older runs on a kernel without the knob
        ],
        "cmdline": boot,
        "restore_cmdline": restore_cmdline,
        "remove_record": bool(recorded) and (not _cmdline_recorded(recorded) or restore_cmdline),
    }


def rollback_lines(recorded: dict, state_file: str, restored: list[dict], unit: dict, grub: dict,
                   boot: dict | None, tuned: dict | None = None) -> list[str]:
    """What the rollback did, one line per thing. ``unit``: the results of removing the unit file (file) and
    its .wants link (link) with their paths; ``grub``: the result of restoring the GRUB line; ``tuned``: the
    registered results of restoring tuned's files (files, a loop) and removing Preflight's profile (profile)."""
    lines = []
    if not recorded:
        lines.append(f"nothing recorded at {state_file}: no THP values to restore")
    lines += [f"{row['item']['name']}: {row.get('before')} -> {row.get('after')}" for row in restored]
    tuned = tuned or {}
    restored_files = [row["item"]["path"] for row in tuned.get("files", []) if row.get("changed")]
    if restored_files:
        lines.append(f"tuned: {' and '.join(restored_files)} restored as they were before Preflight")
    if (tuned.get("profile") or {}).get("changed"):
        lines.append(f"tuned: removed Preflight's profile {thp_tuned.PROFILE_DIR}")
    if unit["file"].get("changed") or unit["link"].get("changed"):
        lines.append(f"systemd: removed {unit['path']} and {unit['link_path']}")
    if grub.get("changed"):
        lines.append(
            f"kernel_cmdline: restored in {(boot or {}).get('defaults_file')} and GRUB regenerated; reboot required "
            "for the command line to take effect"
        )
    elif _cmdline_recorded(recorded) and (boot or {}).get("kind") != "grub":
        lines.append(f"kernel_cmdline: not restored, {(boot or {}).get('reason')}")
    return lines
