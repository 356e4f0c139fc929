"""roles/probe_runtime over real SSH: an operator's interpreter (the test venv, which has torch and transformers),
the venv path with one tiny pinned package, idempotence, check mode, and exact errors for bad input."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.sshfleet import REPO, run_playbook

pytestmark = pytest.mark.node_untouched

PLAY = """\
- name: Put the probe runtime on the node
  hosts: node1
  gather_facts: false
  roles:
    - role: probe_runtime
  post_tasks:
    - name: Hand the published runtime to the test
      ansible.builtin.copy:
        content: "{{ preflight_probe_runtime | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
      delegate_to: localhost
      check_mode: false
      changed_when: false  # the test's own plumbing: not counted in the role's recap
"""


@pytest.fixture
def play(tmp_path, ssh_fleet):
    path = tmp_path / "play.yml"
    path.write_text(PLAY)
    return path, ssh_fleet.inventory(tmp_path / "hosts.yml")


def apply(play, variables: dict, *args: str):
    path, inventory = play
    extra = path.parent / f"vars-{len(list(path.parent.glob('vars-*')))}.json"
    extra.write_text(json.dumps(variables))
    return run_playbook(path, inventory, "-e", f"@{extra}", *args)


def recap(stdout: str, host: str = "node1") -> dict[str, int]:
    line = next(line for line in stdout.splitlines() if line.startswith(host) and "ok=" in line)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_model_shapes_match_probes_model():
    """The role validates probe_runtime_model against the catalog; probes.model must build exactly those."""
    from probes.core.catalog import MODEL_SHAPES
    from probes.model import SHAPES

    assert list(MODEL_SHAPES) == list(SHAPES)
    assert "__probe_runtime_model_shapes" not in (REPO / "roles/probe_runtime/vars/main.yml").read_text()


def test_given_interpreter_is_checked_the_model_built_and_a_rerun_changes_nothing(play, tmp_path):
    import torch
    import transformers

    opt = tmp_path / "opt"
    out = tmp_path / "runtime.json"
    variables = {"probe_runtime_python": sys.executable, "probe_runtime_dir": str(opt), "probe_runtime_vllm": False,
                 "probe_runtime_model": "tiny", "probe_runtime_env": {"PREFLIGHT_TEST": "1"}, "out": str(out)}

    checked = apply(play, variables, "--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert recap(checked.stdout)["changed"] > 0
    assert not opt.exists(), "check mode created the runtime directory"

    stray = opt / "probes" / "gone.py"  # a module the package no longer has
    stray.parent.mkdir(parents=True)
    stray.write_text("raise ImportError('stale')\n")
    first = apply(play, variables)
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap(first.stdout)["changed"] > 0
    assert not stray.exists()
    runtime = json.loads(out.read_text())
    assert runtime["python"] == sys.executable and runtime["source"] == "existing"
    assert runtime["versions"] == {"torch": torch.__version__, "transformers": transformers.__version__}
    assert runtime["env"]["PYTHONPATH"] == str(opt) and runtime["env"]["PREFLIGHT_TEST"] == "1"
    assert runtime["model"]["path"] == str(opt / "models/tiny") and runtime["model"]["built"] is True
    assert (opt / "models/tiny/config.json").exists() and (opt / "models/tiny/preflight_model.json").exists()
    for source in (REPO / "probes").rglob("*.py"):
        copied = opt / "probes" / source.relative_to(REPO / "probes")
        assert copied.read_bytes() == source.read_bytes()
    assert not list((opt / "probes").rglob("*.pyc"))
    core = opt / "probes" / "core"  # probes/core links to module_utils/preflight/core: shipped as files
    assert core.is_dir() and not core.is_symlink()
    for source in (REPO / "module_utils/preflight/core").glob("*.py"):
        assert (core / source.name).read_bytes() == source.read_bytes()

    second = apply(play, variables)
    assert second.returncode == 0, second.stdout[-3000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-3000:]
    assert json.loads(out.read_text())["model"]["built"] is False


def test_bad_variables_are_all_named_before_anything_changes(play, tmp_path):
    opt = tmp_path / "opt"
    proc = apply(play, {"probe_runtime_python": "python3", "probe_runtime_dir": str(opt),
                        "probe_runtime_model": "gpt-5", "probe_runtime_packages": ["six"], "out": "/dev/null"})
    assert proc.returncode != 0
    assert (
        "node1: probe runtime variables rejected, nothing was changed: "
        "probe_runtime_python: 'python3' is not an absolute path; give the interpreter's path (e.g. /usr/bin/python3) "
        "or null to build a venv; "
        "probe_runtime_packages: 'six' is not pinned as name==version; "
        "probe_runtime_model: 'gpt-5' is neither an absolute path on the host nor a shape; "
        "allowed shapes: tiny, qwen2.5-1.5b, phi-3-mini, smollm2-135m"
    ) in " ".join(proc.stdout.split())
    assert not opt.exists()


def test_an_interpreter_without_torch_fails_naming_the_import_error(play, tmp_path):
    proc = apply(play, {"probe_runtime_python": "/usr/bin/python3", "probe_runtime_dir": str(tmp_path / "opt"),
                        "probe_runtime_vllm": False, "probe_runtime_model": None, "out": "/dev/null"})
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert ("node1: the probe runtime /usr/bin/python3 cannot import torch (ModuleNotFoundError: No module named "
            "'torch'); transformers (ModuleNotFoundError: No module named 'transformers').") in text
    assert "Give probe_runtime_python an interpreter that has them" in text


def test_venv_with_a_tiny_pin_is_built_once(play, tmp_path):
    """The venv path end to end, with one small pin instead of torch and vLLM (minutes, gigabytes)."""
    opt = tmp_path / "opt"
    out = tmp_path / "runtime.json"
    variables = {"probe_runtime_python": None, "probe_runtime_dir": str(opt), "probe_runtime_flavor": "cpu",
                 "probe_runtime_packages": ["six==1.17.0"], "probe_runtime_required_imports": ["six"],
                 "probe_runtime_vllm": True, "probe_runtime_model": None, "out": str(out)}
    first = apply(play, variables)
    assert first.returncode == 0, first.stdout[-4000:]
    runtime = json.loads(out.read_text())
    assert runtime["python"] == str(opt / "venv/bin/python") and runtime["source"] == "venv"
    assert runtime["flavor"] == "cpu" and runtime["versions"]["six"] == "1.17.0"
    assert runtime["vllm_importable"] is False
    assert runtime["vllm_reason"].startswith("vllm not importable in the probe runtime: ModuleNotFoundError")
    second = apply(play, variables)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-4000:]
