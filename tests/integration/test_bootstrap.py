"""playbooks/bootstrap.yml, probe.yml and audit.yml end to end over real SSH hosts: the quick level over the
fleet, the standard level with real probes and a real vLLM on one host, tags, check mode, the skip when vLLM
does not import, and an audit that leaves the kernel's tunables byte-identical."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.sshfleet import REPO, run_playbook

STANDARD_PROBES = ["load", "ttft", "kv", "batching"]
FULL_ONLY = ["thp_ab_always", "thp_ab_madvise", "thp_ab_never", "allocator_ab", "ttft_per_gpu", "kv_sweep",
             "kv_per_gpu"]
SYSFS = [
    *sorted(Path("/sys/kernel/mm/transparent_hugepage").glob("**/enabled")),
    Path("/sys/kernel/mm/transparent_hugepage/defrag"),
    Path("/sys/kernel/mm/transparent_hugepage/khugepaged/defrag"),
    Path("/proc/sys/vm/nr_hugepages"),
    *sorted(Path("/sys/devices/system/node").glob("node*/hugepages/hugepages-*/nr_hugepages")),
]


def fleet_inventory(ssh_fleet, tmp_path: Path, hosts: list[str] | None, **variables) -> tuple[Path, list[str]]:
    """The fleet's inventory reduced to `hosts` (None: all, the unreachable one included), and the -e arguments
    that carry the test's variables (extra vars: group_vars/all.yml would override inventory vars).

    Each host keeps its tuning records apart (they share this machine's disk) and nothing is persisted
    into this machine's systemd or boot configuration.
    """
    base = {
        "thp_persist": [],
        "jemalloc_services": [],
        "thp_state_dir": str(tmp_path / "state" / "{{ inventory_hostname }}" / "thp"),
        "hugepages_state_dir": str(tmp_path / "state" / "{{ inventory_hostname }}" / "hugepages"),
        "jemalloc_state_dir": str(tmp_path / "state" / "{{ inventory_hostname }}" / "jemalloc"),
        "preflight_report_dir": str(tmp_path / "reports"),
        "preflight_fail_on_failed_checks": False,
    }
    path = ssh_fleet.inventory(tmp_path / "hosts.yml")
    if hosts is not None:
        doc = yaml.safe_load(path.read_text())
        members = doc["all"]["children"]["fleet"]["hosts"]
        doc["all"]["children"]["fleet"]["hosts"] = {h: members[h] for h in hosts}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    extra = tmp_path / "extra-vars.json"
    extra.write_text(json.dumps({**base, **variables}))
    return path, ["-e", f"@{extra}"]


def host_documents(tmp_path: Path) -> dict[str, dict]:
    """The per-host JSON documents of the (only) report run under tmp_path/reports."""
    runs = sorted(p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.is_symlink())
    assert runs, "no report was written"
    docs = {}
    for path in runs[-1].glob("*.json"):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "host" in doc and "status" in doc:
            docs[doc["host"]] = doc
    return docs


def run_summary(stdout: str, host: str) -> str:
    """The 'level ...; ran ...; phases ...' line the node play prints for a host, unwrapped."""
    flat = " ".join(stdout.split())
    match = re.search(rf"msg: '{host}: level (.*?)' (?:TASK|PLAY)", flat)
    assert match, stdout[-3000:]
    return f"level {match.group(1)}"


def read_sysfs() -> dict[Path, bytes]:
    """THP and the hugepage pools, as the kernel holds them (a test that compares them holds hugepage_pools)."""
    return {p: p.read_bytes() for p in SYSFS if p.exists()}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    subprocess.run([sys.executable, "-m", "probes", "model", "make", "--shape", "tiny", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


def test_quick_bootstrap_over_the_fleet_tunes_reads_back_and_reports_every_host(
        ssh_fleet, tmp_path, restore_kernel_tunables):
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, None, preflight_level="quick")
    started = time.monotonic()
    proc = run_playbook("playbooks/bootstrap.yml", inventory, *extra)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0, "an unreachable host must make the run exit non-zero"
    docs = host_documents(tmp_path)
    assert docs["dead1"]["status"] == "unreachable"
    for host in ssh_fleet.hostnames():
        assert docs[host]["status"] == "ok", docs[host]["error"]
        assert docs[host]["level"] == "quick"
        assert docs[host]["probes"] == {}
        run = docs[host]["run"]
        assert run["level"] == "quick" and run["ran"] == [] and run["failed"] == []
        assert [p["name"] for p in run["phases"]] == ["tune", "facts"]
        assert {s["probe"]: s["reason"] for s in run["skipped"]} == {
            name: "level quick runs no probes" for name in STANDARD_PROBES + FULL_ONLY}
        summary = run_summary(proc.stdout, host)
        assert summary.startswith("level quick; ran no probes;")
        assert re.search(r"phases: tune [\d.]+ s, facts [\d.]+ s;", summary), summary
    assert Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().find("[madvise]") >= 0
    assert not (tmp_path / "opt").exists()
    print(f"quick bootstrap of {len(docs)} hosts: {elapsed:.0f} s")


# The audit over the fleet (drift, an unreachable host): tests/integration/test_ansible_runner.py, as AWX runs it.


def test_audit_without_check_refuses_before_touching_a_node(ssh_fleet, tmp_path, restore_kernel_tunables,
                                                           hugepage_pools):
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], thp_enabled="never")
    before = read_sysfs()
    proc = run_playbook("playbooks/audit.yml", inventory, *extra)
    assert proc.returncode != 0
    assert read_sysfs() == before
    assert "audit.yml changes nothing and must be run with --check" in " ".join(proc.stdout.split())
    assert "node1" not in proc.stdout.split("PLAY RECAP", 1)[1], "a node task ran after the refusal"
    assert not (tmp_path / "reports").exists()


@pytest.mark.node_untouched  # probe.yml tunes nothing
def test_tags_pick_probes_and_check_mode_runs_none(ssh_fleet, tmp_path, tiny_model):
    opt = tmp_path / "opt"
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], preflight_level="standard",
                                       probe_runtime_python=sys.executable, probe_runtime_dir=str(opt),
                                       probe_model=str(tiny_model))
    proc = run_playbook("playbooks/probe.yml", inventory, "--check", "--tags", "load", *extra)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not opt.exists(), "check mode created the probe runtime"
    # In check mode the report play writes nothing either: the run's own summary line is the evidence.
    summary = run_summary(proc.stdout, "node1")
    assert summary.startswith("level standard; ran no probes; ")
    assert f"skipped load (check mode: would run {sys.executable} -m probes load --model {tiny_model} " in summary
    assert "skipped ttft, kv, batching (not selected by --tags load)" in summary
    assert (f"skipped {', '.join(FULL_ONLY)} (level standard does not include it (it runs at full))") in summary


@pytest.mark.node_untouched  # probe.yml tunes nothing
def test_vllm_probes_are_skipped_with_the_reason_when_vllm_does_not_import(ssh_fleet, tmp_path, tiny_model):
    """A runtime without vLLM (a venv with one tiny pin): the ttft probe is skipped, never failed."""
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], preflight_level="standard",
                                       probe_runtime_dir=str(tmp_path / "opt"), probe_runtime_flavor="cpu",
                                       probe_runtime_packages=["six==1.17.0"], probe_runtime_required_imports=["six"],
                                       probe_model=str(tiny_model))
    proc = run_playbook("playbooks/probe.yml", inventory, "--tags", "ttft", *extra)
    assert proc.returncode == 0, proc.stdout[-4000:]
    run = host_documents(tmp_path)["node1"]["run"]
    skipped = {s["probe"]: s["reason"] for s in run["skipped"]}
    assert skipped["ttft"].startswith(
        "skipped: vllm not importable in the probe runtime: ModuleNotFoundError: No module named 'vllm'")
    assert run["ran"] == [] and run["failed"] == []
    assert [p["name"] for p in run["phases"]] == ["facts", "probe_runtime"]


def test_bad_level_is_rejected_before_anything_changes(ssh_fleet, tmp_path, restore_kernel_tunables, hugepage_pools):
    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], preflight_level="thorough",
                                       thp_enabled="never")
    before = read_sysfs()
    proc = run_playbook("playbooks/bootstrap.yml", inventory, *extra)
    assert proc.returncode != 0
    assert read_sysfs() == before
    assert ("node1: preflight_level / probe_plan rejected, nothing was changed: preflight_level: 'thorough' "
            "is not a level; allowed: quick, standard, full") in " ".join(proc.stdout.split())
    assert "Set THP" not in proc.stdout and "thp :" not in proc.stdout, "tuning ran after the plan was rejected"


def cached_facts(host: str) -> dict:
    """What the jsonfile fact cache (ansible.cfg, or the lane's ANSIBLE_CACHE_PLUGIN_CONNECTION) holds for host."""
    directory = REPO / os.environ.get("ANSIBLE_CACHE_PLUGIN_CONNECTION", ".cache/facts")
    (path,) = [p for p in directory.iterdir() if p.name == host or p.name.endswith(f"_{host}")]
    doc = json.loads(path.read_text())
    facts = json.loads(doc["__payload__"]) if "__payload__" in doc else doc
    # ansible-core 2.19 stores a value with its origin: {"value": ..., "tags": [...], "__ansible_type": ...}.
    return {k: v["value"] if isinstance(v, dict) and "__ansible_type" in v else v for k, v in facts.items()}


@pytest.mark.slow
@pytest.mark.thp_untouched  # --skip-tags tune, and level standard sets no THP arm
def test_standard_bootstrap_on_one_host_runs_load_and_the_vllm_probes(ssh_fleet, tmp_path):
    """The probes of level standard, end to end. The tune phase is skipped (the fleet bootstrap above tunes):
    this, the suite's longest test, then runs beside the tests that tune THP."""
    from probes import result as envelope

    inventory, extra = fleet_inventory(ssh_fleet, tmp_path, ["node1"], preflight_level="standard",
                                       probe_runtime_python=sys.executable, probe_runtime_dir=str(tmp_path / "opt"),
                                       probe_model="tiny")
    started = time.monotonic()
    proc = run_playbook("playbooks/bootstrap.yml", inventory, "--skip-tags", "tune", *extra, timeout=1800)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-6000:]
    doc = host_documents(tmp_path)["node1"]
    assert doc["status"] == "ok" and doc["level"] == "standard"
    run = doc["run"]
    assert run["ran"] == STANDARD_PROBES and run["failed"] == []
    assert {s["probe"] for s in run["skipped"]} == set(FULL_ONLY)
    assert [p["name"] for p in run["phases"]] == ["facts", "probe_runtime"] + [
        f"probe {name}" for name in STANDARD_PROBES]
    assert all(p["status"] == "ok" and p["duration_s"] > 0 for p in run["phases"])
    for name in STANDARD_PROBES:
        envelope.validate(doc["probes"][name])
        assert doc["probes"][name]["probe"] == name
    assert doc["probes"]["kv"]["params"]["max_model_len"] == [2048]
    # Over budget is a warn check in the report, not a failure: a shared CI machine can be slower.
    assert run["over_budget"] == (run["certify_s"] > float(run["budget_s"]))
    html = list((tmp_path / "reports").glob("*/node1.html"))
    assert html and "ttft" in html[0].read_text()
    # The envelopes are this run's host variables, not facts: the fact cache, which every task of every later
    # run reads again, keeps none of them.
    assert cached_facts("node1").get("preflight_probe_results") == {}
    print(f"standard bootstrap of node1: {elapsed:.0f} s; phases {run['phases']}")
