"""Atomic file output: a reader (or a crash) never sees a half-written report."""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from datetime import UTC, datetime

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LATEST = "latest"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable by time, unique within a second: 20261123T151700Z-3fa2."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id) or run_id == LATEST or run_id in (".", ".."):
        raise ValueError(
            f"run_id {run_id!r} cannot name a report directory: use letters, digits, '.', '_' or '-' "
            f"(at most 128, not starting with '.' or '-', and not {LATEST!r})"
        )
    return run_id


def write_atomic(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def point_symlink_atomic(link: str, target: str) -> None:
    """Make `link` point at `target` by renaming a fresh symlink over it (never a moment without one)."""
    directory = os.path.dirname(os.path.abspath(link))
    if os.path.isdir(link) and not os.path.islink(link):
        raise IsADirectoryError(
            f"{link} is a real directory, not a symlink: move it away so 'latest' can point at runs"
        )
    tmp = os.path.join(directory, f".{os.path.basename(link)}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
