"""roles/hugepages' rollback record and what its rollback writes, file by file (see undo.py for the rules).

fstab is read by its fields: per mount point Preflight manages, the record keeps the hugetlbfs lines it
replaced (with their line numbers) and every line it wrote there; rollback swaps exactly those lines back and
leaves every other byte of the file as it is now. Its own files (sysctl.d, units, links) are owned entries.
The GRUB defaults file keeps its own record form (role 'grub'), handled by the GRUB parts of the role.
"""

from __future__ import annotations

import posixpath

from .hugepages import MANAGED_BY, unescape_mount_path
from .hugepages_persist import grub_entry
from .paths import normal_path
from .undo import RECORD_VERSION, RecordError, owned_entry, owned_undo, restore_tail, unterminated_tail

FSTAB_ROLE = "fstab"


def fstab_entries(text: str | None) -> list[tuple[int, str, str]]:
    """(line number, line, mount point) of each hugetlbfs entry, as mount(8) reads fstab: comments skipped."""
    found = []
    for index, line in enumerate((text or "").splitlines(keepends=True)):
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "hugetlbfs":
            found.append((index, line, normal_path(unescape_mount_path(fields[1]))))
    return found


def fstab_entry(recorded: dict | None, text: str | None, wanted: dict[str, str | None]) -> dict:
    """The fstab record: per managed mount point the lines replaced (first time only) and the lines written."""
    entry = dict(recorded) if recorded else {
        "kind": FSTAB_ROLE,
        "role": FSTAB_ROLE,
        "existed": text is not None,
        "tail": unterminated_tail(text),
        "mounts": {},
    }
    mounts = {path: dict(item) for path, item in entry["mounts"].items()}
    present = fstab_entries(text)
    for path, line in wanted.items():
        item = mounts.get(path) or {"replaced": [[i, raw] for i, raw, p in present if p == path], "written": []}
        if line not in item["written"]:
            item["written"] = [*item["written"], line]
        mounts[path] = item
    return {**entry, "mounts": mounts}


def _same_fields(line: str, wrote: str | None) -> bool:
    return wrote is not None and line.split() == wrote.split()


def _preflight_form(line: str, path: str) -> bool:
    """Migrated records: a line of the form Preflight writes (fstab_line) for this mount point."""
    fields = line.split()
    keys = [option.split("=", 1)[0] for option in fields[3].split(",")] if len(fields) == 6 else []
    return len(fields) == 6 and fields[0] == "hugetlbfs" and keys == ["pagesize", "mode", "uid", "gid"] and (
        fields[4:] == ["0", "0"] and normal_path(unescape_mount_path(fields[1])) == path
    )


def fstab_undo(fstab: str, entry: dict, text: str | None) -> tuple[str | None, bool, list[str]]:
    """(the fstab text after rollback, whether to remove the file, errors). Errors leave the file alone."""
    if text is None:
        if any(w is not None for item in entry["mounts"].values() for w in item["written"]):
            return None, False, [f"{fstab} has been removed since Preflight wrote its hugetlbfs lines to it"]
        return None, False, []
    lines = text.splitlines(keepends=True)
    present = fstab_entries(text)
    replace: dict[int, list[str]] = {}
    inserts: list[tuple[int, str]] = []
    errors = []
    for path, item in sorted(entry["mounts"].items()):
        written = item["written"]
        old = [raw for _, raw in item["replaced"]]
        here = [(i, raw) for i, raw, p in present if p == path]
        ours = [(i, raw) for i, raw in here if any(_same_fields(raw, w) for w in written)]
        if entry.get("migrated"):
            ours = [(i, raw) for i, raw in here if _preflight_form(raw, path)]
        others = [raw for i, raw in here if (i, raw) not in ours]
        if others and not (not ours and [r.split() for r in others] == [r.split() for r in old]):
            wrote = next((w for w in reversed(written) if w is not None), "no line")
            errors.append(
                f"{fstab}: the hugetlbfs line for {path} is now {others[0].rstrip()!r}, not the one Preflight "
                f"wrote ({wrote!r}): restore Preflight's line or remove the record's mount by hand, then run again"
            )
            continue
        if ours:
            first = ours[0][0]
            ending = "\n" if ours[-1][1].endswith("\n") else ""
            replace[first] = [r if r.endswith("\n") else r + "\n" for r in old]
            if replace[first] and not ending:
                replace[first][-1] = replace[first][-1].rstrip("\n")
            for i, _ in ours[1:]:
                replace[i] = []
        elif not here and old and None not in written:
            errors.append(
                f"{fstab}: the hugetlbfs line Preflight wrote for {path} has been removed since, so the line it "
                f"replaced ({old[0].rstrip()!r}) is not put back: add it by hand if it is still wanted"
            )
        elif not here and old:
            inserts.extend((i, raw) for i, raw in item["replaced"])
    if errors:
        return None, False, errors
    out = []
    for index, line in enumerate(lines):
        out.extend(replace.get(index, [line]))
    for index, raw in sorted(inserts):
        position = min(index, len(out))
        if position == len(out) and out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.insert(position, raw if raw.endswith("\n") or position == len(out) else raw + "\n")
    result = restore_tail("".join(out), entry.get("tail"))
    return result, not entry["existed"] and result == "", []


# ---------------------------------------------------------------------------------------------- record


def file_entries(plan_: dict, host, recorded_files: dict, fstab_wanted: dict, fstab_path: str) -> dict:
    """The files part of the record after this run: every file the plan manages, merged with the record."""
    files = dict(recorded_files)
    for item in plan_["files"]:
        path, current = item["path"], host.files.get(item["path"], {"exists": False})
        if item["role"] == "grub":  # exactly what the GRUB edit adds and replaces (hugepages_persist.grub_entry)
            entry = grub_entry(files.get(path), item)
            if entry:
                files[path] = entry
            continue
        if item["role"] == FSTAB_ROLE:
            files[path] = fstab_entry(files.get(path), host.fstab_text, fstab_wanted)
            continue
        exists = bool(current.get("exists"))
        if item["kind"] == "link":
            before, written = (current.get("link") if exists else None), item["target"]
        else:
            before, written = (current.get("content") if exists else None), item["content"]
        mode = current.get("mode") or item.get("mode") or "0644"
        files[path] = owned_entry(files.get(path), item["kind"], item["role"], before, mode, written)
    return files


# ---------------------------------------------------------------------------------------------- migration


def migrate(recorded: dict | None, read_backup) -> dict | None:
    """A record of any version as version 2. read_backup(name) -> the text of <state_dir>/<name> or None.

    Version 1 kept whole-file copies: a file Preflight created is migrated with its header as the proof of
    ownership, a file it replaced gets the copy as `before`; fstab keeps the copy's hugetlbfs lines as
    those replaced and takes lines of Preflight's own form as Preflight's. RecordError when a copy is missing."""
    if not recorded or recorded.get("version") == RECORD_VERSION:
        return recorded
    if recorded.get("version") not in (None, 1):
        raise RecordError(f"record version {recorded.get('version')!r} is newer than this Preflight understands")
    files = {}
    for path, old in (recorded.get("files") or {}).items():
        if old.get("role") == "grub":
            files[path] = old
            continue
        before = None
        if old.get("existed") and old.get("kind") == "link":
            before = old.get("target")
        elif old.get("existed"):
            before = read_backup(old.get("backup", ""))
            if before is None:
                raise RecordError(
                    f"the version 1 record lists a copy of {path} ({old.get('backup')}) that is missing: restore "
                    "it from your own backup, then remove the state directory by hand"
                )
        if old.get("role") == FSTAB_ROLE:
            files[path] = {
                "kind": FSTAB_ROLE,
                "role": FSTAB_ROLE,
                "existed": bool(old.get("existed")),
                "tail": unterminated_tail(before),
                "migrated": True,
                "legacy_backup": old.get("backup"),
                "mounts": {
                    mount: {"replaced": [[i, raw] for i, raw, p in fstab_entries(before) if p == mount],
                            "written": [None]}
                    for mount in (recorded.get("mounts") or {})
                },
            }
            continue
        entry = {"kind": old.get("kind", "file"), "role": old.get("role"), "before": before, "mode": "0644"}
        if entry["kind"] == "link":
            entry["written"] = [posixpath.join(posixpath.dirname(posixpath.dirname(path)), posixpath.basename(path))]
        else:
            entry.update(written=[None], marker=MANAGED_BY)
        if old.get("backup"):
            entry["legacy_backup"] = old["backup"]
        files[path] = entry
    return {**recorded, "version": RECORD_VERSION, "files": files, "state_dir_created": True}


# ---------------------------------------------------------------------------------------------- rollback


def files_undo(recorded: dict, read, read_link) -> dict:
    """What rollback writes: {'write': [actions], 'errors': [...]}; read(path)/read_link(path) give what is
    there now (None when absent). GRUB entries are left to the GRUB parts of the role."""
    actions, errors = [], []
    for path, entry in sorted((recorded.get("files") or {}).items()):
        if entry.get("role") == "grub":
            continue
        if entry["kind"] == FSTAB_ROLE:
            text, remove, problems = fstab_undo(path, entry, read(path))
            errors += problems
            if remove:
                actions.append({"path": path, "kind": "file", "state": "absent"})
            elif text is not None and text != read(path):
                actions.append({"path": path, "kind": "file", "state": "present", "content": text, "mode": None})
            continue
        now = read_link(path) if entry["kind"] == "link" else read(path)
        action, error = owned_undo(path, entry, now)
        if error:
            errors.append(error)
        elif action:
            actions.append(action)
    return {"write": actions, "errors": errors}


def cleanup(recorded: dict, state_dir: str) -> dict:
    """The files of the record (state.json, copies kept by version 1 or for GRUB) and the directories to remove
    when empty: files/ and the state directory itself when Preflight created it. Never a whole tree."""
    names = ["state.json"]
    for entry in (recorded.get("files") or {}).values():
        names += [entry[key] for key in ("backup", "legacy_backup") if entry.get(key)]
    dirs = [posixpath.join(state_dir, "files")]
    if recorded.get("state_dir_created", False):
        dirs.append(state_dir)
    return {"files": [posixpath.join(state_dir, n) for n in dict.fromkeys(names)], "dirs": dirs}
