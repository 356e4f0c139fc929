"""A THP A/B arm with per-size settings through library/slm_probe.py over real SSH (issue 19): the module sets
the arm on the node (core/thp_arm.py), the load probe on the tiny model names the arm in its result, and every
knob is back as it was; an arm this kernel cannot take is refused before anything changes. Real kernel: this
VM's 6.18 has hugepages-16kB ... 2048kB."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_slm_probe import PYTHON, run_module
from tests.sshfleet import REPO

THP = Path("/sys/kernel/mm/transparent_hugepage")


def knobs() -> dict[Path, str]:
    return {path: path.read_text() for path in [THP / "enabled", *sorted(THP.glob("hugepages-*/enabled"))]}


def current(text: str) -> str:
    return text.split("[", 1)[1].split("]", 1)[0]


@pytest.fixture
def inventory(ssh_fleet, tmp_path):
    if not (THP / "hugepages-64kB" / "enabled").exists():
        pytest.skip("needs per-size THP (Linux 6.8+)")
    return ssh_fleet.inventory(tmp_path / "hosts.yml")


@pytest.fixture
def every_knob_put_back():
    before = knobs()
    yield before
    for path, text in before.items():
        if path.read_text() != text:
            path.write_text(current(text))
    assert knobs() == before


def test_a_per_size_arm_is_set_for_the_probe_named_in_its_result_and_put_back(inventory, every_knob_put_back):
    v64 = current(every_knob_put_back[THP / "hugepages-64kB" / "enabled"])
    other = "always" if v64 != "always" else "madvise"
    arm = f"64kB={other}+2048kB=never"
    res = run_module(inventory, "node1", {
        "probe": "load", "name": "thp_ab_size", "python": PYTHON, "runtime_dir": str(REPO),
        "options": {"model": "tiny", "repeats": 1, "read_repeats": 1}, "thp_mode": arm, "timeout": 600})
    assert not res["failed"], res.get("msg")
    v2048 = current(every_knob_put_back[THP / "hugepages-2048kB" / "enabled"])
    assert res["thp"] == {"mode": arm, "original": f"64kB={v64}+2048kB={v2048}",
                          "settings": {"64kB": other, "2048kB": "never"},
                          "restored": {"mode": f"64kB={v64}+2048kB={v2048}", "ok": True}, "put_back": True}
    thp = res["result"]["results"]["thp"]
    assert thp["arm"]["settings"] == {"64kB": other, "2048kB": "never"} and thp["arm"]["probe"] == "thp_ab_size"
    assert (thp["sizes"]["64kB"], thp["sizes"]["2048kB"]) == (other, "never")
    assert knobs() == every_knob_put_back


def test_a_size_this_kernel_does_not_offer_is_refused_before_anything_changes(inventory, every_knob_put_back):
    res = run_module(inventory, "node1", {"probe": "load", "name": "thp_ab_4kb", "python": PYTHON,
                                          "runtime_dir": str(REPO), "options": {"model": "tiny"},
                                          "thp_mode": "never+4kB=always"})
    assert res["failed"]
    offered = ", ".join(sorted((p.parent.name.removeprefix("hugepages-") for p in THP.glob("hugepages-*/enabled")),
                               key=lambda size: int(size[:-2])))
    assert res["msg"] == (f"probe thp_ab_4kb: THP A/B arm never+4kB=always: thp_mode: 'never+4kB=always': size "
                          f"'4kB' is not offered by this kernel; allowed sizes: {offered}; THP was not changed")
    assert knobs() == every_knob_put_back and "rc" not in res
