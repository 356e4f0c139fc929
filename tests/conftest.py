"""Shared fixtures: real SSH test hosts, and guards that put the kernel's THP values and hugepage pools back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lanes import lane_lock
from tests.sshfleet import TEST_PROCESS_ENV, SshFleet

# The processes the tests start here get what the SSH test hosts' sessions get (tests/sshfleet.py says why).
for _name, _value in TEST_PROCESS_ENV.items():
    os.environ.setdefault(_name, _value)

THP = Path("/sys/kernel/mm/transparent_hugepage")
# THP's global values: what restore_kernel_tunables records and puts back.
THP_TUNABLES = [
    THP / "enabled",
    THP / "defrag",
    THP / "khugepaged" / "defrag",
]
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
# make test's two lanes share one kernel: a test that changes the hugepage pools, or asserts what they hold,
# holds this lock for its whole run (fixture hugepage_pools), so the other lane's never overlaps it.


def _selected(text: str) -> str:
    """'always [madvise] never' -> 'madvise'; plain values pass through."""
    text = text.strip()
    if "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return text


def read_tunables() -> dict[Path, str]:
    return {p: p.read_text() for p in THP_TUNABLES if p.exists()}


@pytest.fixture
def restore_kernel_tunables():
    """Record the THP values, give them back after the test whatever happened."""
    before = read_tunables()
    yield before
    for path, text in before.items():
        value = _selected(text)
        if _selected(path.read_text()) != value:
            path.write_text(value)


@pytest.fixture
def hugepage_pools():
    """Hold the hugepage pools for the test (the other lane's tests that need them wait), and give the default
    pool's size back after it whatever happened."""
    with lane_lock("hugepage-pools"):
        before = NR_HUGEPAGES.read_text()
        yield before
        if NR_HUGEPAGES.read_text() != before:
            NR_HUGEPAGES.write_text(before.strip())


# Preflight's THP unit (roles/thp) and its enable link, as the THP tests find and leave them.
THP_UNIT = Path("/etc/systemd/system/preflight-thp.service")
THP_UNIT_LINK = Path("/etc/systemd/system/sysinit.target.wants/preflight-thp.service")


@pytest.fixture
def clean_thp(restore_kernel_tunables):
    """Each test starts without Preflight's unit; THP values and the unit are put back as they were after it."""
    saved_unit = THP_UNIT.read_bytes() if THP_UNIT.exists() else None
    had_link = THP_UNIT_LINK.is_symlink()
    THP_UNIT_LINK.unlink(missing_ok=True)
    THP_UNIT.unlink(missing_ok=True)
    yield restore_kernel_tunables
    THP_UNIT_LINK.unlink(missing_ok=True)
    THP_UNIT.unlink(missing_ok=True)
    if saved_unit is not None:
        THP_UNIT.write_bytes(saved_unit)
    if had_link:
        THP_UNIT_LINK.symlink_to(THP_UNIT)


@pytest.fixture(scope="session")
def ssh_fleet(tmp_path_factory):
    """Three live sshd hosts on 127.0.0.2-4 and one address where nothing listens."""
    fleet = SshFleet(
        workdir=tmp_path_factory.mktemp("sshfleet"),
        addresses=["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        unreachable=["127.0.0.254"],
    ).start()
    yield fleet
    fleet.stop()


@pytest.fixture(scope="session")
def ssh_operator(ssh_fleet):
    """An unprivileged login (tests.sshfleet.OPERATOR_USER) on the test hosts, with a NOPASSWD sudo rule;
    the user, its home and the sudoers.d drop-in are removed when the session ends."""
    from tests.sshfleet import operator_user, remove_operator_user

    user = operator_user(ssh_fleet.client_key)
    yield user
    remove_operator_user(user)


# Fixtures that change THP or this machine's users and sudoers: a test that asks for one is neither
# `node_untouched` nor `thp_untouched`, the markers of the tests make test runs beside the ones that tune THP.
THP_CHANGING_FIXTURES = {"restore_kernel_tunables", "clean_thp", "ssh_operator"}
BESIDE_MARKERS = {
    "node_untouched": THP_CHANGING_FIXTURES | {"hugepage_pools"},
    "thp_untouched": THP_CHANGING_FIXTURES,
}


def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        marked = [m for m in BESIDE_MARKERS if item.get_closest_marker(m)]
        if len(marked) > 1:
            wrong.append(f"{item.nodeid} is marked both {' and '.join(marked)}")
        for marker in marked:
            if asked := BESIDE_MARKERS[marker] & set(item.fixturenames):
                wrong.append(f"{item.nodeid} is marked {marker} but asks for {', '.join(sorted(asked))}")
    if wrong:
        raise pytest.UsageError("; ".join(wrong))
