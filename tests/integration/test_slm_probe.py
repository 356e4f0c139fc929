"""library/slm_probe.py over real SSH: a real probe on the tiny model, exact argument errors, check mode,
failures with their exit status and stderr, and a timeout that takes the probe's whole process group down."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from module_utils.preflight.core import catalog, probe_options
from tests.sshfleet import REPO, ansible_env

pytestmark = pytest.mark.node_untouched

PYTHON = sys.executable


def run_module(inventory: Path, host: str, args: dict, *extra: str, timeout: float = 600) -> dict:
    """Run slm_probe once through the real `ansible` command; the host's result, with `failed` from its exit."""
    tree = Path(tempfile.mkdtemp(prefix="slm-tree-"))
    proc = subprocess.run(
        [str(Path(PYTHON).parent / "ansible"), "-i", str(inventory), host, "-m", "slm_probe",
         "-a", json.dumps(args), "--tree", str(tree), *extra],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode in (0, 2), proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tree / host).read_text())
    shutil.rmtree(tree)
    result["failed"] = proc.returncode == 2
    return result


@pytest.fixture(scope="module")
def inventory(ssh_fleet, tmp_path_factory):
    return ssh_fleet.inventory(tmp_path_factory.mktemp("slm") / "hosts.yml")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    subprocess.run([PYTHON, "-m", "probes", "model", "make", "--shape", "tiny", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


# ---- the whitelist and the argument list, without Ansible ------------------------------------------------


@pytest.mark.parametrize("probe", catalog.PROBES)
def test_every_whitelisted_flag_is_a_flag_of_the_probe(probe):
    """The whitelist is written by hand; the probe's own --help is the truth it must not drift from."""
    proc = subprocess.run([PYTHON, "-m", "probes", probe, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    offered = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", proc.stdout))
    wanted = {opt.flag for opt in probe_options.PROBE_OPTIONS[probe].values()}
    assert wanted - offered == set(), f"{probe}: whitelisted flags the probe does not have"


def test_options_become_an_argument_list_in_the_order_given():
    cmd = probe_options.build_command("/opt/py", "batching", {
        "model": "/m", "enforce_eager": True, "kv_budget": "1GiB", "max_concurrency": 8,
        "server_args": ["--dtype=float32", "--seed=1"], "server_env": {"LD_PRELOAD": "/lib/x.so"},
        "repeats": None,
    })
    assert cmd == ["/opt/py", "-m", "probes", "batching", "--model", "/m", "--enforce-eager", "--kv-budget", "1GiB",
                   "--max-concurrency", "8", "--server-arg=--dtype=float32", "--server-arg=--seed=1",
                   "--server-env", "LD_PRELOAD=/lib/x.so", "--json"]
    assert probe_options.build_command("p", "kv", {"max_model_len": [2048, "4096"], "kv_budget": ["512MiB", 1],
                                                  "enforce_eager": False}) == [
        "p", "-m", "probes", "kv", "--max-model-len", "2048,4096", "--kv-budget", "512MiB,1", "--json"]


def test_every_bad_option_is_named_at_once():
    with pytest.raises(probe_options.ProbeArgumentError) as err:
        probe_options.option_args("ttft", {"warm": True, "max_tokens": "many", "api": ["chat,completions"],
                                          "bogus": 1})
    assert err.value.errors == [
        "options.warm must be an integer of at least 10, got True",
        "options.max_tokens must be an integer of at least 1, got 'many'",
        "options.api must be a list of words without commas, got ['chat,completions']",
        "options.bogus is not an option of the ttft probe; allowed: "
        + ", ".join(sorted(probe_options.PROBE_OPTIONS["ttft"])),
    ]


def test_api_key_is_hidden_in_the_returned_command():
    cmd = probe_options.build_command("p", "ttft", {"endpoint": "http://127.0.0.1:8000", "api_key": "s3cret"})
    assert "s3cret" not in probe_options.redact(cmd)
    assert probe_options.redact(cmd)[-3:] == ["--api-key", "********", "--json"]


# ---- the module over SSH ---------------------------------------------------------------------------------


def test_load_probe_over_ssh_returns_a_schema_valid_envelope_and_no_fact_to_cache(inventory, tiny_model):
    from probes import result as envelope

    res = run_module(inventory, "node1", {
        "probe": "load", "python": PYTHON, "runtime_dir": str(REPO),
        "options": {"model": str(tiny_model), "repeats": 2, "read_repeats": 1},
        "timeout": 900,
    })
    assert not res["failed"], res.get("msg")
    assert res["rc"] == 0 and res["changed"] is False
    doc = res["result"]
    envelope.validate(doc)
    assert doc["probe"] == "load"
    assert doc["params"]["model"] == str(tiny_model) and doc["params"]["repeats"] == 2
    assert "ansible_facts" not in res  # the playbooks record it; the fact cache would keep it for every later run
    assert res["cmd"][:4] == [PYTHON, "-m", "probes", "load"] and res["cmd"][-1] == "--json"
    assert res["duration_s"] >= doc["duration_s"]


def test_unknown_option_is_rejected_with_the_allowed_ones(inventory):
    res = run_module(inventory, "node1", {"probe": "load", "python": PYTHON, "runtime_dir": str(REPO),
                                          "options": {"repeat": 3}})
    assert res["failed"]
    assert res["msg"] == (
        "options.repeat is not an option of the load probe; allowed: copy_mib, copy_repeats, device, "
        "drop_caches, gpus, model, placement, read_repeats, repeats, timeout_s"
    )
    assert "rc" not in res


def _fake_python(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for the runtime's interpreter and leaves a trace when it runs."""
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_check_mode_returns_the_command_and_runs_nothing(inventory, tmp_path):
    marker = tmp_path / "ran"
    fake = _fake_python(tmp_path, f"touch {marker}\nexit 3\n")
    args = {"probe": "kv", "python": str(fake), "runtime_dir": str(REPO),
            "options": {"max_model_len": [2048], "kv_budget": ["1GiB"]}}
    res = run_module(inventory, "node1", args, "--check")
    assert not res["failed"], res.get("msg")
    assert res["cmd"] == [str(fake), "-m", "probes", "kv", "--max-model-len", "2048", "--kv-budget", "1GiB", "--json"]
    assert res["msg"].startswith("check mode: would run ")
    assert "ansible_facts" not in res and "rc" not in res
    assert not marker.exists()
    # The same call without --check does run it: the marker proves the check above could have failed.
    res = run_module(inventory, "node1", args)
    assert marker.exists() and res["rc"] == 3


def test_a_failing_probe_returns_its_exit_status_stderr_tail_and_command(inventory, tmp_path):
    missing = tmp_path / "no-such-model"
    res = run_module(inventory, "node1", {"probe": "load", "python": PYTHON, "runtime_dir": str(REPO),
                                          "options": {"model": str(missing)}})
    assert res["failed"]
    assert res["rc"] != 0
    assert f"--model {missing}: not a shape" in res["stderr_tail"]
    assert res["cmd"] == [PYTHON, "-m", "probes", "load", "--model", str(missing), "--json"]
    assert res["msg"].startswith(f"probe load ({' '.join(res['cmd'])}): the probe exited with status {res['rc']}")
    assert "Traceback" not in res["msg"]


def test_a_probe_past_its_timeout_is_stopped_with_its_children(inventory, tmp_path):
    child_pid = tmp_path / "child.pid"
    fake = _fake_python(tmp_path, f"echo starting >&2\nsleep 300 &\necho $! > {child_pid}\nwait\n")
    started = time.monotonic()
    res = run_module(inventory, "node1", {"probe": "load", "python": str(fake), "runtime_dir": str(REPO),
                                          "timeout": 2})
    assert time.monotonic() - started < 60
    assert res["failed"] and res["timed_out"] is True
    assert "ran past its timeout of 2 s and was stopped" in res["msg"]
    assert res["stderr_tail"] == "starting"
    pid = int(child_pid.read_text())
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), "the probe's child outlived the timeout"


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_missing_runtime_is_named_before_anything_runs(inventory, tmp_path):
    res = run_module(inventory, "node1", {"probe": "load", "python": PYTHON, "runtime_dir": str(tmp_path)})
    assert res["failed"]
    assert res["msg"] == (f"runtime_dir {tmp_path} holds no probes package (probes/__main__.py); "
                          "run the probe_runtime role first")
    assert os.listdir(tmp_path) == []


def test_documentation_parses_and_lists_every_option():
    proc = subprocess.run([str(Path(PYTHON).parent / "ansible-doc"), "-M", str(REPO / "library"), "--json",
                           "slm_probe"], cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["slm_probe"]["doc"]
    assert set(doc["options"]) == {"probe", "name", "servers", "options", "python", "runtime_dir", "env", "timeout",
                                   "log_dir", "heartbeat", "thp_mode"}
    assert doc["options"]["probe"]["choices"] == [*catalog.PROBES, catalog.SUITE_PROBE]
    # An arm may name per-size knobs (never+64kB=always): core/thp_arm.parse_arm checks it on the node.
    assert "choices" not in doc["options"]["thp_mode"]
    assert doc["options"]["log_dir"]["default"] == catalog.PROBE_LOG_DIR
