"""roles/jemalloc's rollback record and what its rollback does (see undo.py for the rules).

/etc/ld.so.preload is read as the loader reads it: entries separated by whitespace or colons. The record
keeps whether the library was listed before and the lines that listed it; rollback takes out the line
Preflight added (or puts back the one it removed) and leaves every other byte as it is now. Preflight's
drop-ins are owned entries. The package is removed only when Preflight installed it and nothing installed
depends on it (asked of the package manager: `apt-get -s remove`, `rpm -e --test`).
"""

from __future__ import annotations

import json
import posixpath
import re

from .jemalloc import MANAGED_BY
from .paths import state_dir_errors
from .undo import RECORD_VERSION, RecordError, owned_entry, owned_undo, restore_tail, unterminated_tail

PRELOAD_ROLE = "ld_so_preload"


def preload_entries(text: str | None) -> list[str]:
    """The libraries ld.so preloads from the file: separated by whitespace or colons (ld.so(8))."""
    return [entry for entry in re.split(r"[\s:]+", text or "") if entry]


def preload_entry(recorded: dict | None, text: str | None, library: str, mode: str) -> dict:
    """The ld.so.preload record: kept from the first run that touched the file."""
    if recorded:
        return recorded
    lines = (text or "").splitlines(keepends=True)
    return {
        "kind": PRELOAD_ROLE,
        "role": PRELOAD_ROLE,
        "existed": text is not None,
        "mode": mode,
        "library": library,
        "listed_before": library in preload_entries(text),
        "lines": [[i, line] for i, line in enumerate(lines) if line.strip() == library],
        "tail": unterminated_tail(text),
    }


def preload_undo(path: str, entry: dict, text: str | None) -> tuple[dict | None, str | None]:
    """(action, error) for ld.so.preload; action as undo.owned_undo's, None when nothing is to be done."""
    library = entry["library"]
    if text is None:
        if entry["existed"] and entry["listed_before"]:
            return None, f"{path} has been removed since Preflight edited it; it listed {library} before"
        return None, None
    lines = text.splitlines(keepends=True)
    if entry["listed_before"]:
        if library in preload_entries(text):
            return None, None
        out = list(lines)
        for index, line in sorted(entry["lines"]):
            position = min(index, len(out))
            if position == len(out) and out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out.insert(position, line if line.endswith("\n") or position == len(out) else line + "\n")
        new = restore_tail("".join(out), entry["tail"])
    else:
        ours = [line for line in lines if line.strip() == library]
        if not ours and library in preload_entries(text):
            mixed = next(line for line in lines if library in preload_entries(line))
            return None, (
                f"{path}: the line Preflight added ({library}) is now part of {mixed.rstrip()!r}: take {library} "
                "out of that line by hand (or put it back on a line of its own), then run the rollback again"
            )
        new = restore_tail("".join(line for line in lines if line.strip() != library), entry["tail"])
    if new == text:
        return None, None
    if not entry["existed"] and new == "":
        return {"path": path, "kind": "file", "state": "absent"}, None
    return {"path": path, "kind": "file", "state": "present", "content": new, "mode": None}, None


# ---------------------------------------------------------------------------------------------- package


def dependents(package: str, command: list[str], rc: int, out: str, err: str) -> tuple[list[str] | None, str]:
    """The installed packages that removing `package` would take with it, from a dry run of the removal
    (`apt-get -s remove P`: 'Remv NAME [...]' lines; `rpm -e --test P`: 'is needed by (installed) NAME').
    (None, why) when the answer could not be read: then nothing is removed."""
    tool = posixpath.basename(command[0]) if command else ""
    if tool == "apt-get":
        if rc != 0:
            return None, f"{' '.join(command)} failed (rc {rc}): {(err or out).strip()}"
        names = re.findall(r"^Remv (\S+)", out, re.M)
        return sorted({n.split(":")[0] for n in names} - {package}), ""
    if tool == "rpm":
        names = re.findall(r"is needed by \(installed\) (\S+)", out + err)
        if rc != 0 and not names:
            return None, f"{' '.join(command)} failed (rc {rc}): {(err or out).strip()}"
        return sorted(set(names)), ""
    return None, f"no way known to ask {tool or 'this package manager'} what depends on {package}"


def package_decision(entry: dict | None, found: list[str] | None, why: str) -> dict:
    """Whether rollback removes the package, and why (for the report): only what Preflight installed, never
    with installed dependents."""
    if not entry:
        return {"remove": False, "name": None, "detail": "no package recorded"}
    name = entry["name"]
    if not entry.get("installed_by_preflight"):
        detail = f"{name} kept: Preflight did not install it"
        if entry.get("migrated"):
            detail = f"{name} kept: the record predates Preflight's note of what it installed; remove it by hand"
        return {"remove": False, "name": name, "detail": detail}
    if found is None:
        return {"remove": False, "name": name, "detail": f"{name} kept: {why}"}
    if found:
        detail = f"{name} kept: installed packages depend on it: {', '.join(found)}"
        return {"remove": False, "name": name, "detail": detail}
    return {"remove": True, "name": name, "detail": f"{name} removed: Preflight installed it and nothing depends on it"}


# ---------------------------------------------------------------------------------------------- record


def file_entries(recorded_files: dict, services: list[dict], preload: dict, library: str | None) -> dict:
    """The files part of the record after this run: each drop-in (owned), and ld.so.preload when managed."""
    files = dict(recorded_files)
    for service in services:
        path = service["dropin_path"]
        if service["desired_known"]:
            files[path] = owned_entry(files.get(path), "file", "dropin", service["current"], "0644", service["desired"])
        elif path not in files:  # the package is not installed yet: install.yml records the content once it is
            files[path] = owned_entry(None, "file", "dropin", service["current"], "0644", None)
            files[path]["written"] = []
    if preload["managed"] and library:
        files[preload["path"]] = preload_entry(files.get(preload["path"]), preload["content"], library, preload["mode"])
    return files


def migrate(recorded: dict | None, read_backup, library: str | None) -> dict | None:
    """A record of any version as version 2 (read_backup(name): <state_dir>/<name> or None; library: the
    installed libjemalloc, the entry version 1 added to ld.so.preload). Version 1 kept whole copies: a drop-in
    Preflight created is known by its header, ld.so.preload's replaced state by its copy."""
    if not recorded or recorded.get("version") == RECORD_VERSION:
        return recorded
    if recorded.get("version") not in (None, 1):
        raise RecordError(f"record version {recorded.get('version')!r} is newer than this Preflight understands")
    files = {}
    for path, old in (recorded.get("files") or {}).items():
        before = read_backup(old["backup"]) if old.get("existed") else None
        if old.get("existed") and before is None:
            raise RecordError(
                f"the version 1 record lists a copy of {path} ({old.get('backup')}) that is missing: restore it "
                "from your own backup, then remove the state directory by hand"
            )
        if old.get("role") == PRELOAD_ROLE:
            if not library:
                raise RecordError(
                    f"the version 1 record of {path} cannot be migrated while the jemalloc package is not installed "
                    "(its library is the entry to take out): install it or edit the file by hand"
                )
            entry = preload_entry(None, before, library, "0644")
        else:
            entry = {"kind": "file", "role": old.get("role", "dropin"), "before": before, "mode": "0644",
                     "written": [None], "marker": MANAGED_BY}
        files[path] = {**entry, "legacy_backup": old.get("backup")} if old.get("backup") else entry
    package = dict(recorded.get("package") or {})
    if package:
        package.update(installed_by_preflight=False, migrated=True)
    return {**recorded, "version": RECORD_VERSION, "files": files, "package": package or None,
            "state_dir_created": True}


def files_undo(recorded: dict, read) -> dict:
    """What rollback writes ({'write': [...], 'errors': [...]}); read(path): what is there now, None if absent."""
    actions, errors = [], []
    for path, entry in sorted((recorded.get("files") or {}).items()):
        if entry["kind"] == PRELOAD_ROLE:
            action, error = preload_undo(path, entry, read(path))
        else:
            action, error = owned_undo(path, entry, read(path))
        if error:
            errors.append(error)
        elif action:
            actions.append(action)
    return {"write": actions, "errors": errors}


# ---------------------------------------------------------------------------------------------- rollback


def read_record(tree, state_dir: str, state_dirs: dict | None, library: str | None) -> tuple[dict, bool, list[str]]:
    """(the record as version 2, whether there is one, errors) for roles/jemalloc's rollback."""
    errors = state_dir_errors({**(state_dirs or {}), "jemalloc_state_dir": state_dir}, "jemalloc_state_dir")
    if errors:
        return {}, False, errors
    state_file = posixpath.join(state_dir, "state.json")
    text = tree.read(state_file)
    if text is None:
        return {}, False, []
    try:
        return migrate(json.loads(text), lambda name: tree.read(posixpath.join(state_dir, name)), library), True, []
    except ValueError as exc:  # RecordError is a ValueError
        why = str(exc) if isinstance(exc, RecordError) else "it is not valid JSON"
        return {}, True, [f"{state_file} cannot be used: {why}; move it away or restore it, then run again"]


def rollback_plan(tree, state_dir: str, recorded: dict, exists: bool, errors: list[str], package: dict) -> dict:
    """What roles/jemalloc's rollback does: files to write back, drop-in directories and the record's own files
    and directories to remove when empty, the package decision (package: package_decision's answer)."""
    files = files_undo(recorded, tree.read) if recorded else {"write": [], "errors": []}
    names = ["state.json"] + [e[k] for e in (recorded.get("files") or {}).values() for k in ("backup", "legacy_backup")
                              if e.get(k)]
    dirs = [posixpath.join(state_dir, "files")] + ([state_dir] if recorded.get("state_dir_created") else [])
    return {
        "exists": exists,
        "errors": errors + files["errors"],
        "write": files["write"],
        "rmdir_dropin_dirs": sorted(d for d, existed in (recorded.get("dirs") or {}).items() if not existed),
        "services": recorded.get("services", []),
        "package": package,
        "cleanup": {
            "files": [posixpath.join(state_dir, n) for n in dict.fromkeys(names)] if exists else [],
            "dirs": dirs if exists else [],
        },
    }
