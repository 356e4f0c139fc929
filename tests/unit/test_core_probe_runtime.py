"""core/probe_runtime.py: the probe_runtime role's decisions, called directly (no Ansible run)."""

from __future__ import annotations

import json

import pytest

from tests.moduleutils import module_util

core = module_util("preflight.core.probe_runtime")
catalog = module_util("preflight.core.catalog")

GOOD = {
    "probe_runtime_dir": "/opt/preflight",
    "probe_runtime_python": None,
    "probe_runtime_env": {},
    "probe_runtime_flavor": "auto",
    "probe_runtime_packages": None,
    "probe_runtime_vllm": True,
    "probe_runtime_model": "tiny",
    "probe_runtime_required_imports": ["torch", "transformers"],
    "probe_runtime_model_timeout_s": 1800,
}
SHAPES = ", ".join(catalog.MODEL_SHAPES)
NOT_PINS = "probe_runtime_packages: must be null or a non-empty list of name==version pins"


def test_the_defaults_are_valid():
    assert core.validate(GOOD) == []


@pytest.mark.parametrize(("name", "value", "error"), [
    ("probe_runtime_dir", "/", "probe_runtime_dir: '/' is not an absolute directory other than /"),
    ("probe_runtime_dir", "opt", "probe_runtime_dir: 'opt' is not an absolute directory other than /"),
    ("probe_runtime_dir", None, "probe_runtime_dir: 'None' is not an absolute directory other than /"),
    ("probe_runtime_python", "python3", "probe_runtime_python: 'python3' is not an absolute path; give the "
     "interpreter's path (e.g. /usr/bin/python3) or null to build a venv"),
    ("probe_runtime_env", ["A=1"], "probe_runtime_env: must be a mapping of variable name to value, got ['A=1']"),
    ("probe_runtime_env", {"A": None}, "probe_runtime_env.A: None is not a string or number"),
    ("probe_runtime_env", {"A": [1]}, "probe_runtime_env.A: [1] is not a string or number"),
    ("probe_runtime_flavor", True, "probe_runtime_flavor: 'True' is not allowed; allowed: auto, cpu, gpu"),
    ("probe_runtime_flavor", "rocm", "probe_runtime_flavor: 'rocm' is not allowed; allowed: auto, cpu, gpu"),
    ("probe_runtime_packages", [], NOT_PINS),
    ("probe_runtime_packages", "six==1", NOT_PINS),
    ("probe_runtime_packages", {"six": 1}, NOT_PINS),
    ("probe_runtime_packages", ["six"], "probe_runtime_packages: 'six' is not pinned as name==version"),
    ("probe_runtime_packages", ["six>=1"], "probe_runtime_packages: 'six>=1' is not pinned as name==version"),
    ("probe_runtime_vllm", "yes", "probe_runtime_vllm: 'yes' is not allowed; allowed: true, false"),
    ("probe_runtime_model", 7, "probe_runtime_model: 7 is not a path or a shape name"),
    ("probe_runtime_model", "gpt-5", "probe_runtime_model: 'gpt-5' is neither an absolute path on the host nor a "
     f"shape; allowed shapes: {SHAPES}"),
    ("probe_runtime_required_imports", "torch", "probe_runtime_required_imports: must be a list of module names"),
    ("probe_runtime_required_imports", ["torch", "no-dash"],
     "probe_runtime_required_imports: 'no-dash' is not a module name"),
    ("probe_runtime_model_timeout_s", 0, "probe_runtime_model_timeout_s: '0' is not a positive number of seconds"),
    ("probe_runtime_model_timeout_s", True,
     "probe_runtime_model_timeout_s: 'True' is not a positive number of seconds"),
    ("probe_runtime_model_timeout_s", "soon",
     "probe_runtime_model_timeout_s: 'soon' is not a positive number of seconds"),
])
def test_a_bad_variable_is_named_with_its_value_and_what_is_allowed(name, value, error):
    assert core.validate({**GOOD, name: value}) == [error]


@pytest.mark.parametrize(("name", "value"), [
    ("probe_runtime_python", "/usr/bin/python3"),
    ("probe_runtime_env", {"PYTHONPATH": "/tmp/site", "N": 1}),
    ("probe_runtime_packages", ["six==1.17.0", "vllm[cpu]==0.25.1+cpu"]),
    ("probe_runtime_model", "/data/models/x"),
    ("probe_runtime_model", None),
    ("probe_runtime_model", ""),
    ("probe_runtime_model_timeout_s", "30"),
])
def test_good_values_pass(name, value):
    assert core.validate({**GOOD, name: value}) == []


def test_every_bad_variable_is_reported_in_one_message_in_the_variables_order():
    errors = core.validate({**GOOD, "probe_runtime_python": "python3", "probe_runtime_model": "gpt-5",
                            "probe_runtime_packages": ["six"]})
    assert core.rejection_message("node1", errors) == (
        "node1: probe runtime variables rejected, nothing was changed: "
        "probe_runtime_python: 'python3' is not an absolute path; give the interpreter's path (e.g. /usr/bin/python3) "
        "or null to build a venv; "
        "probe_runtime_packages: 'six' is not pinned as name==version; "
        f"probe_runtime_model: 'gpt-5' is neither an absolute path on the host nor a shape; allowed shapes: {SHAPES}")


@pytest.mark.parametrize(("env", "pythonpath"), [
    ({}, "/opt/p"),
    ({"PYTHONPATH": "/tmp/site"}, "/opt/p:/tmp/site"),
    ({"PYTHONPATH": "/opt/p::/tmp/site:/opt/p"}, "/opt/p:/tmp/site"),
])
def test_the_runtime_dir_goes_first_on_pythonpath_once(env, pythonpath):
    out = core.runtime_env(env, "/opt/p")
    assert out["PYTHONPATH"] == pythonpath
    assert out["HF_HUB_OFFLINE"] == "1" and out["PYTHONDONTWRITEBYTECODE"] == "1"


def test_operator_env_values_become_strings_and_may_override_the_base():
    out = core.runtime_env({"N": 1, "HF_HUB_OFFLINE": 0}, "/opt/p")
    assert out["N"] == "1" and out["HF_HUB_OFFLINE"] == "0"


@pytest.mark.parametrize(("model", "kind", "path", "device"), [
    (None, "none", None, "auto"),
    ("", "none", None, "auto"),
    ("/data/m", "path", "/data/m", "auto"),
    ("tiny", "shape", "/opt/p/models/tiny", "cpu"),
    ("qwen2.5-1.5b", "shape", "/opt/p/models/qwen2.5-1.5b", "auto"),
])
def test_model_plan(model, kind, path, device):
    plan = core.model_plan(model, "/opt/p")
    assert (plan["kind"], plan["path"], plan["device"]) == (kind, path, device)
    assert plan["shapes"] == list(catalog.MODEL_SHAPES) and plan["done_file"] == "preflight_model.json"


@pytest.mark.parametrize(("python", "interpreter", "source"), [
    (None, "/opt/p/venv/bin/python", "venv"),
    ("/usr/bin/python3", "/usr/bin/python3", "existing"),
])
def test_plan_chooses_the_interpreter(python, interpreter, source):
    plan = core.plan({**GOOD, "probe_runtime_dir": "/opt/p", "probe_runtime_python": python})
    assert (plan["interpreter"], plan["source"], plan["venv"]) == (interpreter, source, "/opt/p/venv")


def test_code_diff_copies_what_differs_removes_what_is_gone_and_makes_every_directory():
    source = {"__init__.py": "a", "core/catalog.py": "b", "schema/x/e.json": "c"}
    on_host = {"__init__.py": "a", "core/catalog.py": "old", "gone.py": "d"}
    assert core.code_diff(source, on_host) == {
        "to_copy": ["core/catalog.py", "schema/x/e.json"],
        "to_remove": ["gone.py"],
        "dirs": [".", "core", "schema/x"],
    }
    assert core.code_diff(source, source)["to_copy"] == [] and core.code_diff(source, source)["to_remove"] == []


def test_list_tree_follows_links_and_leaves_bytecode_out(tmp_path):
    real = tmp_path / "module_utils" / "core"
    real.mkdir(parents=True)
    (real / "catalog.py").write_text("X = 1\n")
    (real / "loop").symlink_to(real)  # a link back up the tree is walked once
    probes = tmp_path / "probes"
    (probes / "__pycache__").mkdir(parents=True)
    (probes / "__init__.py").write_text("")
    (probes / "stale.pyc").write_bytes(b"\0")
    (probes / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (probes / "core").symlink_to(real)
    files = core.list_tree(str(probes))
    assert sorted(files) == ["__init__.py", "core/catalog.py"]
    assert files["core/catalog.py"] == core.sha1_file(str(real / "catalog.py"))
    assert core.list_tree(str(tmp_path / "missing")) == {}


def test_write_tree_makes_the_host_copy_equal_to_the_source_and_keeps_nothing_stale(tmp_path):
    source = tmp_path / "source"
    (source / "core").mkdir(parents=True)
    (source / "__init__.py").write_text("A = 1\n")
    (source / "core" / "catalog.py").write_bytes(b"X = 2\n\xff")
    host = tmp_path / "host"
    (host / "old").mkdir(parents=True)
    (host / "old" / "gone.py").write_text("raise ImportError\n")
    (host / "__init__.py").write_text("A = 0\n")
    files = core.list_tree(str(source))
    diff = core.code_diff(files, core.list_tree(str(host)))
    core.write_tree(str(host), diff, core.read_contents(str(source), diff["to_copy"]))
    assert core.list_tree(str(host)) == files
    assert (host / "core" / "catalog.py").read_bytes() == b"X = 2\n\xff"
    assert oct((host / "core" / "catalog.py").stat().st_mode & 0o777) == "0o644"
    assert not list(host.rglob(".preflight-*"))
    again = core.code_diff(files, core.list_tree(str(host)))
    assert again["to_copy"] == [] and again["to_remove"] == []


@pytest.mark.parametrize(("flavor", "gpus", "driver", "chosen"), [
    ("cpu", [{"index": 0}], True, "cpu"),
    ("gpu", [], False, "gpu"),
    ("auto", [{"index": 0}], False, "gpu"),
    ("auto", [], True, "cpu"),  # node facts win over the driver's directory
    ("auto", None, True, "gpu"),
    ("auto", None, False, "cpu"),
])
def test_choose_flavor(flavor, gpus, driver, chosen):
    assert core.choose_flavor(flavor, gpus, driver) == chosen


def test_nvidia_driver_present_reads_under_root(tmp_path):
    assert core.nvidia_driver_present(str(tmp_path)) is False
    (tmp_path / "proc/driver/nvidia/gpus").mkdir(parents=True)
    assert core.nvidia_driver_present(str(tmp_path)) is True


REQUIREMENTS = {
    "probes": "# probes\ntorch==2.13.0\n\ntransformers==5.19.0  \n",
    "controller": "ansible-core==2.19.14\npsutil==7.2.2\nnvidia-ml-py==13.615.71\njsonschema==4.26.0\npsutil-x==1\n",
    "vllm_cpu": "# cpu vllm\nvllm==0.32.0+cpu\n",
    "gpu": "torch==2.11.0\nhttpx==0.28.1\n",
}


@pytest.mark.parametrize(("flavor", "vllm", "packages", "pins", "vllm_pins"), [
    ("cpu", True, None, ["torch==2.13.0", "transformers==5.19.0", "psutil==7.2.2", "nvidia-ml-py==13.615.71",
                         "jsonschema==4.26.0"], ["vllm==0.32.0+cpu"]),
    ("gpu", True, None, ["torch==2.11.0", "httpx==0.28.1"], ["vllm==0.25.1"]),
    ("gpu", False, None, ["torch==2.11.0", "httpx==0.28.1"], []),
    ("cpu", True, [" six==1.17.0 "], ["six==1.17.0"], []),
])
def test_venv_pins(flavor, vllm, packages, pins, vllm_pins):
    assert core.venv_pins(flavor, vllm, packages, REQUIREMENTS) == {"pins": pins, "vllm_pins": vllm_pins}


def test_installed_names_are_canonical_and_a_local_label_satisfies_its_public_version():
    installed = core.parse_installed(json.dumps({"Torch": "2.13.0+cpu", "nvidia_ml.py": "13.615.71"}))
    assert installed == {"torch": "2.13.0", "nvidia-ml-py": "13.615.71"}
    assert core.missing_pins(["torch==2.13.0", "nvidia-ml-py==13.615.71", "vllm[audio]==1", "six==2"],
                             {**installed, "vllm": "1", "six": "1"}) == ["six==2"]


@pytest.mark.parametrize(("flavor", "vllm", "exists", "installed", "install", "install_vllm", "conflicts"), [
    ("cpu", True, False, {}, True, True, list(core.VLLM_CPU_CONFLICTS)),
    ("cpu", True, True, {"six": "1.17.0", "vllm": "0.32.0"}, False, False, list(core.VLLM_CPU_CONFLICTS)),
    ("cpu", False, True, {"six": "1.17.0"}, False, False, []),
    ("gpu", True, True, {"six": "1.17.0"}, False, True, []),
])
def test_venv_plan_installs_only_what_is_missing(flavor, vllm, exists, installed, install, install_vllm, conflicts):
    pins = {"pins": ["six==1.17.0"], "vllm_pins": ["vllm==0.32.0"] if vllm else []}
    plan = core.venv_plan(flavor, vllm, pins, exists, installed)
    assert (plan["install"], plan["install_vllm"], plan["conflicts"]) == (install, install_vllm, conflicts)


@pytest.mark.parametrize(("check_mode", "pending", "vllm", "imports"), [
    (False, ["a.py"], False, ["probes", "torch"]),
    (True, [], True, ["probes", "torch", "?vllm", "?httpx"]),
    (True, ["a.py"], False, ["torch"]),  # check mode has only planned the copy: probes/ may not be there
])
def test_imports_to_check(check_mode, pending, vllm, imports):
    assert core.imports_to_check(check_mode, pending, ["torch"], vllm) == imports
    assert core.must_import(check_mode, pending, ["torch"]) == [n for n in imports if not n.startswith("?")]


CHECK = {"python": "3.11.7", "executable": "/usr/bin/python3", "modules": {
    "probes": {"version": None, "error": None},
    "torch": {"version": None, "error": "ModuleNotFoundError: No module named 'torch'"},
    "transformers": {"version": "5.19.0", "error": None},
    "vllm": {"version": None, "error": "ModuleNotFoundError: No module named 'vllm'"},
    "httpx": {"version": "0.28.1", "error": None},
}}


def test_parse_check_reads_the_last_marker_line():
    stdout = f"noise\nPREFLIGHT_RUNTIME_CHECK {{}}\nPREFLIGHT_RUNTIME_CHECK {json.dumps(CHECK)}\n"
    assert core.parse_check(stdout) == CHECK
    assert core.parse_check("no marker\n") is None


@pytest.mark.parametrize(("given", "advice"), [
    (True, "Give probe_runtime_python an interpreter that has them, with probe_runtime_env for its PYTHONPATH."),
    (False, "The venv /opt/p/venv is incomplete: remove it and run again."),
])
def test_import_failure_names_each_module_and_its_error(given, advice):
    broken = core.broken_imports(CHECK, ["probes", "torch", "transformers"])
    assert broken == ["torch"]
    assert core.import_failure("node1", "/usr/bin/python3", CHECK, broken, given, "/opt/p/venv") == (
        f"node1: the probe runtime /usr/bin/python3 cannot import torch (ModuleNotFoundError: No module named "
        f"'torch'). {advice}")


@pytest.mark.parametrize(("wanted", "modules", "reason"), [
    (False, CHECK["modules"], "probe_runtime_vllm is false"),
    (True, {}, "the probe runtime was not checked (check mode on a host without it)"),
    (True, CHECK["modules"], "vllm not importable in the probe runtime: ModuleNotFoundError: No module named 'vllm'"),
    (True, {"vllm": {"error": None}, "httpx": {"error": "ImportError: x"}},
     "httpx (the vLLM probes' client) not importable in the probe runtime: ImportError: x"),
    (True, {"vllm": {"error": None}, "httpx": {"error": None}}, None),
])
def test_vllm_reason(wanted, modules, reason):
    assert core.vllm_reason(wanted, modules) == reason


def test_runtime_result_is_what_the_playbooks_read():
    plan = core.plan({**GOOD, "probe_runtime_dir": "/opt/p", "probe_runtime_python": "/usr/bin/python3"})
    result = core.runtime_result(plan, CHECK, None, True, True, ["a.py"], False)
    assert result["python"] == "/usr/bin/python3" and result["source"] == "existing" and result["flavor"] is None
    assert result["python_version"] == "3.11.7" and result["checked"] is True
    assert result["versions"] == {"torch": None, "transformers": "5.19.0", "vllm": None, "httpx": "0.28.1"}
    assert result["vllm_importable"] is False and result["vllm_reason"].startswith("vllm not importable")
    assert result["model"] == {"requested": "tiny", "kind": "shape", "path": "/opt/p/models/tiny", "built": True}
    assert result["changed_files"] == ["a.py"] and result["env"]["PYTHONPATH"] == "/opt/p"
    assert core.runtime_summary("node1", result) == (
        "node1: probes in /opt/p run with /usr/bin/python3 (existing); torch missing, transformers 5.19.0, "
        "vllm missing, httpx 0.28.1; model /opt/p/models/tiny; "
        "vllm not importable in the probe runtime: ModuleNotFoundError: No module named 'vllm'")


def test_an_unchecked_runtime_has_no_versions_and_says_why_vllm_cannot_run():
    plan = core.plan({**GOOD, "probe_runtime_model": None})
    result = core.runtime_result(plan, None, "cpu", True, False, [], True)
    assert result["checked"] is False and result["python_version"] is None and result["versions"] == {}
    assert result["vllm_reason"] == "the probe runtime was not checked (check mode on a host without it)"
    assert result["changed_files"] == [] and result["model"]["path"] is None
    assert core.runtime_summary("n", result).endswith("(venv, cpu builds); ; model none; " + result["vllm_reason"])
