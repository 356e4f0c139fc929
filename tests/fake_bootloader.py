"""A FAKE update-grub for the integration tests: this VM has no bootloader. It only logs its calls, and the
roles find it on PATH like the real one; removed afterwards. The GRUB defaults file each test edits is its own
(in the test's tmp dir), never /etc/default/grub. make test's two lanes both have tests that install it: a lock
file, held while the fake is in place, makes the other lane's test wait instead of finding it there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.lanes import lane_lock

FAKE_UPDATE_GRUB = Path("/usr/local/sbin/update-grub")


@contextmanager
def fake_update_grub(tmp_path: Path) -> Iterator[Path]:
    """Install the fake; yields the file its calls are logged in (one line `run` per call)."""
    with lane_lock("fake-update-grub"):
        if FAKE_UPDATE_GRUB.exists():
            pytest.skip(f"{FAKE_UPDATE_GRUB} exists on this machine; the fake would replace it")
        calls = tmp_path / "update-grub.calls"
        FAKE_UPDATE_GRUB.write_text(
            f"#!/bin/sh\n# FAKE update-grub of tests/integration (no bootloader here)\necho run >> {calls}\n"
        )
        FAKE_UPDATE_GRUB.chmod(0o755)
        try:
            yield calls
        finally:
            FAKE_UPDATE_GRUB.unlink(missing_ok=True)
