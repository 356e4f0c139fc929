"""THP persisted through tuned where tuned runs (never two tuners on one knob), the way linux-system-roles
kernel_settings does it: a Preflight profile that includes the previously active profile and sets the THP
knobs ([vm] transparent_hugepages for the global 'enabled', the [sysfs] plugin for defrag, khugepaged defrag and
the per-size knobs [vm] does not cover), made the active profile; rollback puts /etc/tuned/active_profile and
profile_mode back byte for byte and removes the profile. Reads and decides only; the role's tasks write.

The profile is read and edited as tuned reads it (tuned/profiles/loader.py: Python's configparser with '='
as the only delimiter, '#' and ';' comment lines, keys kept as written, values raw), and only Preflight's own
keys change; a line that cannot be read with certainty (a key outside a section, an indented continuation, a
key or section given twice) is refused.
"""

from __future__ import annotations

import re

from . import sysfs
from .catalog import THP_DIR
from .cmdline import cmdline_facts
from .tree import Tree

PROFILE_NAME = "preflight"
# tuned 2.x loads profiles from /usr/lib/tuned and /etc/tuned (the later wins): ours is a user profile.
PROFILE_DIR = f"/etc/tuned/{PROFILE_NAME}"
PROFILE_FILE = f"{PROFILE_DIR}/tuned.conf"
ACTIVE_PROFILE = "/etc/tuned/active_profile"
PROFILE_MODE = "/etc/tuned/profile_mode"
PID_FILE = "/run/tuned/tuned.pid"
ENABLED_GLOB = "/etc/systemd/system/*.wants/tuned.service"
MAIN_CONF = "/etc/tuned/tuned-main.conf"
# What tuned itself writes when a profile is chosen by hand (tuned/utils/commands.py save_active_profile).
ACTIVE_CONTENT = PROFILE_NAME + "\n"
MODE_CONTENT = "manual\n"
HEADER = (
    "# Written by Preflight's thp role; `ansible-playbook playbooks/rollback.yml` removes it and makes the\n"
    "# profile it includes active again. Keys other than Preflight's are kept when the role runs again.\n"
)
# tuned's profile 'include' is split on commas or semicolons (tuned/profiles/loader.py).
INCLUDE_SEPARATOR = ","
SECTION = re.compile(r"^\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
KEY = re.compile(r"^([^=#\[\]]+?)\s*=\s*(.*)$")


class TunedError(ValueError):
    """A tuned file Preflight cannot read with certainty, or that no longer holds what Preflight wrote."""


# --- Reading the node --------------------------------------------------------------------------------------
def read_exact(tree: Tree, path: str) -> str | None:
    """A file's text as it is on disk (no newline translation), None when it does not exist."""
    try:
        with open(tree.real(path), encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def daemon_pid(tree: Tree) -> int | None:
    """The pid of a tuned daemon running now (its pid file names a live process whose command is tuned)."""
    text = (tree.read(PID_FILE) or "").strip()
    if not text.isdigit():
        return None
    command = tree.read(f"/proc/{text}/cmdline") or ""
    return int(text) if "tuned" in command else None


def cmdline_sets_thp(tree: Tree) -> bool:
    """Whether the running kernel got transparent_hugepage= (tuned's vm plugin then leaves `enabled` alone)."""
    return cmdline_facts(tree.read("/proc/cmdline"))[0]["transparent_hugepage"] is not None


def state(tree: Tree) -> dict:
    """What tuned does on this node: installed, running (pid), enabled at boot, the active profile and mode as
    they are on disk, Preflight's profile, and whether tuned is active (it runs now or is enabled at boot, and
    has a profile): then it owns the THP knobs at its every start and Preflight persists through it."""
    active_text = read_exact(tree, ACTIVE_PROFILE)
    names = (active_text or "").split()
    pid = daemon_pid(tree)
    enabled = bool(tree.glob(ENABLED_GLOB))
    installed = tree.exists(MAIN_CONF) or active_text is not None
    active = bool(names) and (pid is not None or enabled)
    if active:
        how = f"the daemon runs (pid {pid})" if pid is not None else "tuned.service is enabled at boot"
        reason = f"tuned is active: {how} with profile '{' '.join(names)}' ({ACTIVE_PROFILE})"
    elif not installed:
        reason = f"tuned is not installed here (no {MAIN_CONF})"
    elif not names:
        reason = f"tuned is installed but has no active profile ({ACTIVE_PROFILE} is empty or missing)"
    else:
        reason = f"tuned is installed but neither runs (no live pid in {PID_FILE}) nor is enabled at boot"
    return {
        "installed": installed,
        "pid": pid,
        "enabled": enabled,
        "active": active,
        "reason": reason,
        "active_profile": active_text,
        "profile_mode": read_exact(tree, PROFILE_MODE),
        "names": names,
        "profile": read_exact(tree, PROFILE_FILE),
        "cmdline_sets_thp": cmdline_sets_thp(tree),
    }


# --- Choosing the method -----------------------------------------------------------------------------------
def resolve(persist, tuned: dict) -> list:
    """thp_persist with 'auto' made a method: tuned where tuned is active, the systemd unit otherwise."""
    if not isinstance(persist, (list, tuple)):
        return []
    chosen = []
    for method in persist:
        if method == "auto":
            method = "tuned" if tuned["active"] else "systemd"
        if method not in chosen:
            chosen.append(method)
    return chosen


def validate(persist, tuned: dict) -> list[str]:
    """'tuned' asked for by name where tuned is not active: refused before anything changes."""
    if isinstance(persist, (list, tuple)) and "tuned" in persist and not tuned["active"]:
        return [f"thp_persist: tuned cannot persist THP on this host, {tuned['reason']}; allowed here: "
                "systemd, kernel_cmdline, auto (auto picks tuned where tuned is active, the systemd unit otherwise)"]
    return []


# --- The profile, read and edited as tuned reads it ---------------------------------------------------------
def parse(text: str, path: str = PROFILE_FILE) -> list[dict]:
    """The profile as sections of lines: [{"name": None|section, "lines": [{"raw", "key"}]}]. Refuses what
    tuned's configparser would read differently from a plain 'key = value' (a key outside a section, a repeated
    section or key, which tuned merges, an indented line, which continues the value above, a multi-line quote,
    a line that is none of these)."""
    sections = [{"name": None, "lines": []}]
    seen: dict[str, set] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path} line {number}"
        if raw[:1].isspace() and line:
            raise TunedError(f"{where}: '{raw}' is indented, so tuned reads it as part of the value above; "
                             "Preflight refuses")
        if not line or line[0] in "#;":
            sections[-1]["lines"].append({"raw": raw, "key": None})
            continue
        section = SECTION.match(line)
        if section:
            name = section[1]
            if name in seen:
                raise TunedError(f"{where}: section [{name}] appears twice; tuned would merge it, Preflight refuses")
            seen[name] = set()
            sections.append({"name": name, "lines": [{"raw": raw, "key": None}]})
            continue
        key = KEY.match(line)
        if not key or sections[-1]["name"] is None or '"""' in line or "'''" in line:
            raise TunedError(f"{where}: '{line}' is not a '[section]' or 'key = value' line Preflight can read")
        name = key[1].strip()
        if name in seen[sections[-1]["name"]]:
            raise TunedError(f"{where}: {name} is set twice in [{sections[-1]['name']}]")
        seen[sections[-1]["name"]].add(name)
        sections[-1]["lines"].append({"raw": raw, "key": name})
    return sections


def _set(sections: list[dict], section: str, key: str, value: str | None) -> None:
    """Set (or, with None, remove) one key of one section, every other line as it was."""
    found = next((s for s in sections if s["name"] == section), None)
    if found is None:
        if value is None:
            return
        found = {"name": section, "lines": [{"raw": f"[{section}]", "key": None}]}
        if sections[-1]["lines"] and sections[-1]["lines"][-1]["raw"].strip():
            sections[-1]["lines"].append({"raw": "", "key": None})
        sections.append(found)
    lines = found["lines"]
    index = next((i for i, line in enumerate(lines) if line["key"] == key), None)
    if value is None:
        if index is not None:
            del lines[index]
        return
    entry = {"raw": f"{key}={value}", "key": key}
    if index is not None:
        lines[index] = entry
        return
    last = max((i for i, line in enumerate(lines) if line["key"] is not None or i == 0), default=0)
    lines.insert(last + 1, entry)


def own_keys(planned: list[dict], includes: list[str]) -> list[tuple[str, str, str | None]]:
    """Preflight's keys in the profile, (section, key, value): the include and summary, 'enabled' through the
    vm plugin, every other planned knob (defrag, khugepaged defrag, per-size) through the sysfs plugin."""
    keys = [
        ("main", "summary", "Preflight: Transparent Huge Pages on top of " + (" ".join(includes) or "no profile")),
        ("main", "include", INCLUDE_SEPARATOR.join(includes) or None),
    ]
    for entry in planned:
        if entry["name"] == "thp_enabled":
            keys.append(("vm", "transparent_hugepages", entry["desired"]))
        else:
            keys.append(("sysfs", entry["path"], entry["desired"]))
    return keys


def render(existing: str | None, includes: list[str], planned: list[dict]) -> str:
    """The profile with Preflight's keys set: a new file, or ``existing`` with only Preflight's keys changed
    (THP knobs of an earlier run that this one no longer plans are Preflight's too, and go)."""
    sections = parse(existing) if existing is not None else [
        {"name": None, "lines": [{"raw": line, "key": None} for line in HEADER.splitlines()]}]
    keys = own_keys(planned, includes)
    wanted = {key for section, key, _ in keys if section == "sysfs"}
    for section in sections:
        if section["name"] == "sysfs":
            for line in list(section["lines"]):
                if line["key"] and line["key"].startswith(THP_DIR + "/") and line["key"] not in wanted:
                    _set(sections, "sysfs", line["key"], None)
    for section, key, value in keys:
        _set(sections, section, key, value)
    return "\n".join(line["raw"] for section in sections for line in section["lines"]) + "\n"


def previous_names(tuned: dict, recorded: dict | None) -> list[str]:
    """The profiles Preflight's includes: those active before Preflight's first change (its record), else those
    active now, Preflight's own left out."""
    text = recorded["active_profile"] if recorded else tuned["active_profile"]
    return [name for name in (text or "").split() if name != PROFILE_NAME]


# --- Apply, record, roll back ------------------------------------------------------------------------------
def plan(tuned: dict, recorded: dict | None, planned: list[dict]) -> dict:
    """What the tuned method writes: Preflight's profile (content and whether it changes), the active profile
    and mode tuned reads at its start, and whether the running daemon is told to reload (SIGHUP: tuned
    re-reads active_profile and applies it, with or without D-Bus). TunedError when the profile cannot be read."""
    includes = previous_names(tuned, recorded)
    content = render(tuned["profile"], includes, planned)
    changed = {
        "profile": content != tuned["profile"],
        "active_profile": tuned["active_profile"] != ACTIVE_CONTENT,
        "profile_mode": tuned["profile_mode"] != MODE_CONTENT,
    }
    reload = tuned["pid"] is not None and any(changed.values())
    return {
        "profile_dir": PROFILE_DIR,
        "profile_file": PROFILE_FILE,
        "content": content,
        "includes": includes,
        "active_profile": {"path": ACTIVE_PROFILE, "content": ACTIVE_CONTENT},
        "profile_mode": {"path": PROFILE_MODE, "content": MODE_CONTENT},
        "changed": changed,
        "pid": tuned["pid"],
        "reload": reload,
        "wait": wait_for(planned, "desired", tuned["cmdline_sets_thp"]) if reload else [],
    }


def wait_for(settings: list[dict], key: str, cmdline_thp: bool) -> list[dict]:
    """What to wait for after telling the running daemon to reload: each knob tuned writes holding its ``key``
    value (path, name, value and the pattern of sysfs.holds_pattern). All knobs but `enabled` where the running
    kernel's command line sets transparent_hugepage= (``cmdline_thp``): tuned's vm plugin then leaves it alone.

    tuned keeps the value each knob had when it applies a profile and writes it back when it unapplies the
    profile (its sysfs and vm plugins). So the daemon must apply Preflight's profile before any live write of
    Preflight's, and rollback must let it unapply the profile before checking the values it restores."""
    return [{"name": s["name"], "path": s["path"], "value": s[key], "pattern": sysfs.holds_pattern(s[key])}
            for s in settings if not (cmdline_thp and s["path"] == f"{THP_DIR}/enabled")]


def record(kept: dict | None, tuned: dict, planned_tuned: dict, now: str) -> dict:
    """The rollback record of the tuned method: the active profile and mode as they were before Preflight's
    first change (never overwritten), and the profile as this run writes it (what rollback expects to find)."""
    if kept:
        return {**kept, "written": planned_tuned["content"]}
    return {
        "active_profile": tuned["active_profile"],
        "profile_mode": tuned["profile_mode"],
        "profile": PROFILE_FILE,
        "written": planned_tuned["content"],
        "recorded_at": now,
    }


def _restore(path: str, now: str | None, ours: str, before: str | None) -> dict:
    """One of active_profile/profile_mode: put back (content None: remove) when it still holds what Preflight
    wrote, nothing to do when it already holds what was there before; TunedError otherwise."""
    if now == ours:
        return {"path": path, "content": before, "absent": before is None, "changed": True}
    if now == before:
        return {"path": path, "content": before, "absent": before is None, "changed": False}
    raise TunedError(
        f"{path} no longer holds what Preflight wrote ({ours!r}) nor what was there before ({before!r}) but "
        f"{now!r}: tuned was given another profile since; make '{PROFILE_NAME}' active again or remove the "
        "record's 'tuned' entry by hand"
    )


def rollback_plan(tree: Tree, kept: dict | None, settings: list[dict]) -> dict:
    """What rollback does for the tuned method (nothing when nothing was recorded): the files to restore byte
    for byte, the profile to remove, whether to tell the running daemon, and then the recorded ``settings``
    (name, path, value) to wait for. TunedError, naming the file, when a file no longer holds what Preflight
    wrote: then nothing is changed and the record is kept."""
    if not kept:
        return {"files": [], "profile_dir": PROFILE_DIR, "remove_profile": False, "pid": None, "reload": False,
                "wait": []}
    profile = read_exact(tree, PROFILE_FILE)
    if profile is not None and profile != kept["written"]:
        raise TunedError(
            f"{PROFILE_FILE} no longer holds what Preflight wrote (it was edited since): keep your edits in a "
            f"profile of your own, then remove {PROFILE_DIR} by hand, or put back Preflight's content"
        )
    files = [
        _restore(ACTIVE_PROFILE, read_exact(tree, ACTIVE_PROFILE), ACTIVE_CONTENT, kept["active_profile"]),
        _restore(PROFILE_MODE, read_exact(tree, PROFILE_MODE), MODE_CONTENT, kept["profile_mode"]),
    ]
    pid = daemon_pid(tree)
    return {
        "files": files,
        "profile_dir": PROFILE_DIR,
        "remove_profile": profile is not None,
        "pid": pid,
        "reload": (reload := pid is not None and any(entry["changed"] for entry in files)),
        "wait": wait_for(settings, "value", cmdline_sets_thp(tree)) if reload else [],
    }


def outcome(planned_tuned: dict, written: dict, reload: dict, check_mode: bool) -> dict:
    """State and detail of the tuned method. ``written``: the registered results of writing the profile
    (profile) and active_profile with profile_mode (active, a loop); ``reload``: the result of signalling the
    daemon."""
    changed = bool((written.get("profile") or {}).get("changed") or (written.get("active") or {}).get("changed"))
    on_top = ", ".join(planned_tuned["includes"]) or "no other profile"
    what = f"profile {PROFILE_FILE} (includes {on_top}) active in {ACTIVE_PROFILE}"
    if reload.get("rc", 0) != 0:
        error = (reload.get("stderr") or "").strip() or "no error output"
        return {"state": "failed", "detail": f"{what}, but the tuned daemon (pid {planned_tuned['pid']}) could "
                f"not be told to reload (rc {reload['rc']}): {error}"}
    if planned_tuned["pid"] is None:
        note = "; tuned applies it at its next start"
    elif reload.get("changed"):
        note = f"; the running daemon (pid {planned_tuned['pid']}) reloaded it"
    else:
        note = f"; the running daemon (pid {planned_tuned['pid']}) has it"
    if check_mode:
        return {"state": "installed" if changed else "unchanged",
                "detail": ("would be " if changed else "") + what + " (check mode: nothing was written)"}
    return {"state": "installed" if changed else "unchanged", "detail": what + note}
