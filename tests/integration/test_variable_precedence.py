"""The operator's variables win over Preflight's defaults, at every level Ansible users expect.

A real bootstrap.yml run (probes deselected with --skip-tags probes, so every level is fast) over the SSH test
fleet, with an inventory directory of its own: group_vars/all.yml, group_vars/<group>.yml, host_vars/<host>.yml
and -e each set tuning-role variables (roles/thp/defaults) and project variables (roles/preflight_defaults), each
above the level below it. What the node got is read back: the THP values the kernel took (node_facts in the
report) and each host's level and thresholds in its report JSON. All hosts share this kernel, so the THP
variables are set alike for every host at each level; the project variables differ per host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.sshfleet import run_playbook

THP_DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/thp/defaults/main.yml").read_text())
PROJECT_DEFAULTS = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "roles/preflight_defaults/defaults/main.yml").read_text()
)


def ttft_limit(warn: int) -> dict:
    return {"ttft_warm_ms": {"warn": warn, "fail": warn * 10}}


def write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def operator_inventory(ssh_fleet, work: Path) -> Path:
    """hosts.yml with node1 in group `plain`, node2 and node3 in group `gpu_x`, both under `fleet`."""
    inv = work / "inventory"
    inv.mkdir()
    ssh_fleet.inventory(inv / "hosts.yml")
    doc = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts = doc["all"]["children"]["fleet"]["hosts"]
    doc["all"]["children"] = {
        "fleet": {
            "children": {
                "plain": {"hosts": {"node1": hosts["node1"]}},
                "gpu_x": {"hosts": {"node2": hosts["node2"], "node3": hosts["node3"]}},
            }
        }
    }
    write(inv / "hosts.yml", doc)
    state = str(work / "state" / "{{ inventory_hostname }}")
    write(inv / "group_vars" / "all.yml", {
        # Kept off this machine's boot and services, each host's records apart (they share one disk).
        "jemalloc_services": [],
        "thp_state_dir": f"{state}/thp",
        "hugepages_state_dir": f"{state}/hugepages",
        "jemalloc_state_dir": f"{state}/jemalloc",
        "preflight_textfile_dir": f"{state}/textfile",
        "preflight_fail_on_failed_checks": False,
        # The levels under test: each is overridden above for some variable.
        "thp_khugepaged_defrag": 0,
        "thp_enabled": "never",
        "thp_defrag": "always",
        "thp_persist": ["systemd"],
        "preflight_level": "full",
        "preflight_thresholds": ttft_limit(101),
        "preflight_report_dir": str(work / "reports-from-group-all"),
    })
    write(inv / "group_vars" / "fleet.yml", {"thp_enabled": "always", "thp_defrag": "never"})
    write(inv / "group_vars" / "gpu_x.yml", {"preflight_level": "quick", "preflight_thresholds": ttft_limit(102)})
    for host in ("node1", "node2", "node3"):
        write(inv / "host_vars" / f"{host}.yml", {
            "thp_defrag": "defer",
            "preflight_report_dir": str(work / "reports-from-host-vars"),
        })
    node3 = yaml.safe_load((inv / "host_vars" / "node3.yml").read_text())
    write(inv / "host_vars" / "node3.yml", {**node3, "preflight_level": "standard",
                                            "preflight_thresholds": ttft_limit(103)})
    return inv / "hosts.yml"


@pytest.fixture(scope="module")
def run(ssh_fleet, tmp_path_factory):
    from tests.conftest import read_tunables

    before = read_tunables()
    work = tmp_path_factory.mktemp("precedence")
    inventory = operator_inventory(ssh_fleet, work)
    extra = ["-e", json.dumps({"thp_persist": [], "preflight_report_dir": str(work / "reports")})]
    try:
        proc = run_playbook("playbooks/bootstrap.yml", inventory, "--skip-tags", "probes", *extra, timeout=600)
        (work / "run.log").write_text(proc.stdout + proc.stderr)
    finally:
        rollback = run_playbook("playbooks/rollback.yml", inventory, "--limit", "node1", *extra, timeout=600)
        for path, text in before.items():
            path.write_text(text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip())
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    latest = (work / "reports" / "latest").resolve()
    docs = {p.stem: json.loads(p.read_text()) for p in latest.glob("node*.json")}
    return {"work": work, "docs": docs, "proc": proc}


def test_the_values_under_test_differ_from_the_project_defaults():
    """Otherwise a run that ignored the inventory would pass."""
    assert (THP_DEFAULTS["thp_enabled"], THP_DEFAULTS["thp_defrag"], THP_DEFAULTS["thp_khugepaged_defrag"]) == (
        "madvise", "never", 1)
    assert THP_DEFAULTS["thp_persist"] == ["systemd"]
    assert PROJECT_DEFAULTS["preflight_level"] == "standard"
    assert PROJECT_DEFAULTS["preflight_thresholds"]["ttft_warm_ms"]["warn"] not in (101, 102, 103)


def test_inventory_group_all_beats_the_role_default(run):
    for doc in run["docs"].values():
        assert doc["facts"]["thp"]["khugepaged_defrag"] == 0  # roles/thp default 1
    assert run["docs"]["node1"]["level"] == "full"  # roles/preflight_defaults: standard
    assert run["docs"]["node1"]["thresholds"]["ttft_warm_ms"] == {"warn": 101, "fail": 1010}


def test_inventory_group_beats_group_all(run):
    for doc in run["docs"].values():
        assert doc["facts"]["thp"]["enabled"] == "always"  # group_vars/all.yml: never
    assert run["docs"]["node2"]["level"] == "quick"  # group_vars/all.yml: full
    assert run["docs"]["node2"]["thresholds"]["ttft_warm_ms"] == {"warn": 102, "fail": 1020}


def test_host_vars_beat_the_groups(run):
    for doc in run["docs"].values():
        assert doc["facts"]["thp"]["defrag"] == "defer"  # group_vars/fleet.yml: never, all.yml: always
    assert run["docs"]["node3"]["level"] == "standard"  # group_vars/gpu_x.yml: quick
    assert run["docs"]["node3"]["thresholds"]["ttft_warm_ms"] == {"warn": 103, "fail": 1030}


def test_extra_vars_beat_host_vars(run):
    work = run["work"]
    assert sorted(run["docs"]) == ["node1", "node2", "node3"]  # the reports went where -e said
    assert not (work / "reports-from-host-vars").exists() and not (work / "reports-from-group-all").exists()
    for doc in run["docs"].values():
        assert doc["desired"]["thp"]["persist"] == []  # host_vars and group_vars/all.yml: [systemd]
