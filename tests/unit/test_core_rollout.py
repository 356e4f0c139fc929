"""core/rollout.py: whether a rolling play's next batch starts, from how the hosts of earlier batches ended."""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

rollout = module_util("preflight.core.rollout")


def hosts(**states: str) -> list[dict]:
    return [{"host": name, "state": state} for name, state in states.items()]


def test_the_first_batch_always_starts():
    assert rollout.gate([], None) == {"stop": False, "msg": None, "unfinished": [], "ran": 0,
                                      "max_fail_percentage": 0.0}


def test_at_the_default_one_host_that_did_not_finish_stops_the_next_batch():
    decision = rollout.gate(hosts(node1="done", node2="started", node3="done"), None)
    assert decision["stop"] and decision["unfinished"] == ["node2"] and decision["ran"] == 3
    assert decision["msg"].startswith(
        "not run: the rollout stopped before this host's batch, because 1 of 3 host(s) of earlier batches did not "
        "finish (node2): 33 %, more than preflight_max_fail_percentage=0. Nothing was changed on this host.")


def test_a_share_at_the_limit_goes_on_and_one_above_it_stops():
    earlier = hosts(node1="done", node2="started")
    assert not rollout.gate(earlier, 50)["stop"]
    assert rollout.gate(earlier, "49.9")["stop"]
    assert not rollout.gate(earlier, "50%")["stop"]


def test_hosts_the_gate_stopped_do_not_count_again():
    earlier = hosts(node1="started", node2="done", node3="stopped", node4="stopped")
    decision = rollout.gate(earlier, 50)
    assert decision["ran"] == 2 and decision["unfinished"] == ["node1"] and not decision["stop"]


def test_hosts_that_all_finished_never_stop_the_rollout():
    assert not rollout.gate(hosts(**{f"n{i}": "done" for i in range(40)}), 0)["stop"]


def test_a_long_list_of_failed_hosts_is_cut_in_the_message():
    decision = rollout.gate(hosts(**{f"n{i:02}": "started" for i in range(12)}), 0)
    assert "(n00, n01, n02, n03, n04, n05, n06, n07, n08, n09 and 2 more)" in decision["msg"]


@pytest.mark.parametrize("value", [-1, 101, "most", True, "5 %x", [10]])
def test_a_bad_limit_is_refused_naming_the_variable_and_the_allowed_values(value):
    with pytest.raises(ValueError, match=r"^preflight_max_fail_percentage=.*: give a number from 0 to 100"):
        rollout.gate([], value)


def test_an_unknown_state_is_refused():
    with pytest.raises(ValueError, match="rollout states"):
        rollout.gate(hosts(node1="finished"), 0)
