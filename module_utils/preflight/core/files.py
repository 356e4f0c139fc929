"""Atomic file output: a reader (a report viewer, node_exporter's textfile collector) or a crash never sees a
half-written file."""

from __future__ import annotations

import os
import tempfile

# The file of Preflight's metrics in a node's textfile directory (node_exporter reads *.prom there), and the
# run's copy of every node's metrics in the report directory.
PROM_FILE = "preflight.prom"
# Numbers and labels only: readable by node_exporter's own user, on the node and in the report directory.
PROM_FILE_MODE = 0o644


def write_atomic(path: str, data: str | bytes, mode: int) -> None:
    """Write to a temp file in the same directory (named `.<random>.tmp`, so a collector reading `*.prom` skips
    it), fsync, then rename over the target. Missing parent directories are made (mode 0755 before umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
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
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
