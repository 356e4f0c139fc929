"""Atomic file output: a reader (or a crash) never sees a half-written report."""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC, datetime

from ..core import files as core_files

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LATEST = "latest"
PROM_FILE = core_files.PROM_FILE
# The run's own files beside the host files <stem>.json/.md/.html in a run directory.
RUN_FILES = ("summary.json", "summary.md", "summary.html", PROM_FILE, "junit.xml")
HOST_FILE_KINDS = ("json", "md", "html")
# A host whose name would give a run file's name (a host called `summary`) gets this prefix on its files.
RESERVED_STEM_PREFIX = "host-"
# Reports hold host details (kernel command line, services, probe parameters): readable by the controller
# user and its group (an operators' group on a shared report directory), not by every local user.
# The Prometheus textfile (numbers and labels only) stays world-readable for node_exporter's own user.
REPORT_FILE_MODE = 0o640
REPORT_DIR_MODE = 0o750
PUBLIC_FILE_MODE = core_files.PROM_FILE_MODE


def host_file_stem(host: str) -> str:
    """A host's report file names without extension: the inventory name made safe ('_' for anything else),
    never a name the run's own files use (case-insensitively: `Summary` on a case-insensitive disk).
    Two hosts that still meet (`summary` and `host-summary`) are refused by pipeline.build_run."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", host).lstrip(".") or "_"
    if stem.lower() in {name.rsplit(".", 1)[0].lower() for name in RUN_FILES}:
        stem = RESERVED_STEM_PREFIX + stem
    return stem


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


def write_atomic(path: str, data: str | bytes, mode: int = REPORT_FILE_MODE) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the target (core/files.py)."""
    core_files.write_atomic(path, data, mode)


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
    core_files.fsync_dir(directory)

