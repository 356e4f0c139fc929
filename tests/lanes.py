"""What make test's two lanes share: one kernel and one filesystem. A test that uses a shared thing (the hugepage
pools, the fake update-grub) holds its lock for as long as it uses it, and the other lane's test waits."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def lane_lock(name: str) -> Iterator[None]:
    """Hold the lock named `name` (a file in the temp directory) across both lanes' pytest processes."""
    with (Path(tempfile.gettempdir()) / f"preflight-tests-{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
