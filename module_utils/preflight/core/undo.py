"""Rollback records that hold what Preflight wrote, not copies of whole files.

A file Preflight owns whole (its sysctl.d file, its unit and its link, its drop-in) is recorded as what was
there before (`before`: the text, the link target, or None when absent) and everything Preflight has written
there since (`written`, None for "removed"). Rollback puts `before` back only while the file still holds one
of those: an operator's edit since is never overwritten, it stops the rollback with the difference.

Files Preflight shares with the operator (fstab, ld.so.preload) have their own records, by their own
syntax (hugepages_undo.py, jemalloc_undo.py); both use the end-of-file rule here.

Records of version 1 (whole-file copies under <state_dir>/files/) are migrated where the file's own marker
proves what is Preflight's, and refused with the reason where it cannot.
"""

from __future__ import annotations

import difflib

RECORD_VERSION = 2


class RecordError(ValueError):
    """A record that cannot be read or migrated; the message says what to do."""


def owned_entry(recorded: dict | None, kind: str, role: str, before: str | None, mode: str, written) -> dict:
    """The record of one file (kind 'file') or link (kind 'link') Preflight owns whole. `before` and `mode`
    count only the first time; `written` (text, link target, None for removed) joins those already recorded."""
    entry = dict(recorded) if recorded else {"kind": kind, "role": role, "before": before, "mode": mode, "written": []}
    if written not in entry["written"]:
        entry["written"] = [*entry["written"], written]
    return entry


def _holds_ours(entry: dict, now: str | None) -> bool:
    if now in entry["written"]:
        return True
    marker = entry.get("marker")  # migrated records: Preflight's header line proves the file is its own
    return bool(marker) and now is not None and now.startswith(marker)


def difference(path: str, wrote: str | None, now: str | None) -> str:
    """A short unified diff (at most 12 lines) between what Preflight wrote and what the file holds."""
    if now is None:
        return f"{path} has been removed since Preflight wrote it"
    if wrote is None:
        return f"{path} has been created since Preflight removed it"
    lines = list(
        difflib.unified_diff(
            wrote.splitlines(), now.splitlines(), "written by Preflight", "on the host now", n=0, lineterm=""
        )
    )
    if not lines:
        return f"{path} differs from what Preflight wrote only in line endings or the final newline"
    shown = lines[:12] + (["..."] if len(lines) > 12 else [])
    return f"{path} no longer holds what Preflight wrote:\n" + "\n".join(shown)


def owned_undo(path: str, entry: dict, now: str | None) -> tuple[dict | None, str | None]:
    """What rollback does to a file or link Preflight owns whole: (action, error).

    action: {'path', 'kind', 'state': 'present'|'link'|'absent', 'content'|'target', 'mode'}; None when the
    file already is as it was. error: why it is left alone (the file no longer holds what Preflight wrote)."""
    before = entry["before"]
    if now == before:
        return None, None
    if not _holds_ours(entry, now):
        wrote = next((w for w in reversed(entry["written"]) if w is not None), None)
        if entry["kind"] == "link":
            return None, f"{path} now points to {now!r}, not where Preflight linked it ({wrote!r})"
        return None, difference(path, wrote, now)
    if before is None:
        return {"path": path, "kind": entry["kind"], "state": "absent"}, None
    if entry["kind"] == "link":
        return {"path": path, "kind": "link", "state": "link", "target": before}, None
    mode = entry.get("mode") or "0644"
    return {"path": path, "kind": "file", "state": "present", "content": before, "mode": mode}, None


def unterminated_tail(text: str | None) -> str | None:
    """The last line of a text that does not end in a newline (Preflight adds one before appending)."""
    if not text or text.endswith("\n"):
        return None
    return text.rsplit("\n", 1)[-1]


def restore_tail(text: str, tail: str | None) -> str:
    """Take back the newline Preflight added after `tail`, when `tail` is the last line again."""
    if tail is not None and text.endswith(tail + "\n") and (text == tail + "\n" or text.endswith("\n" + tail + "\n")):
        return text[:-1]
    return text
