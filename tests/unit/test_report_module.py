"""library/preflight_report.py documents exactly the options it accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

import tests.moduleutils  # noqa: F401  (ansible.module_utils.preflight from this repo)

MODULE = Path(__file__).resolve().parents[2] / "library" / "preflight_report.py"


def load_module():
    spec = importlib.util.spec_from_file_location("preflight_report", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spec_of(options: dict) -> dict:
    out = {}
    for name, doc in options.items():
        entry = {k: doc[k] for k in ("type", "required", "default", "elements", "choices") if k in doc}
        if "suboptions" in doc:
            entry["options"] = spec_of(doc["suboptions"])
        out[name] = entry
    return out


def normalised(argument_spec: dict) -> dict:
    out = {}
    for name, arg in argument_spec.items():
        entry = {k: arg[k] for k in ("type", "required", "default", "elements", "choices") if k in arg}
        if "options" in arg:
            entry["options"] = normalised(arg["options"])
        out[name] = entry
    return out


def test_documentation_matches_the_argument_spec():
    module = load_module()
    documented = yaml.safe_load(module.DOCUMENTATION)
    assert spec_of(documented["options"]) == normalised(module.ARGUMENT_SPEC)
    assert documented["attributes"]["check_mode"]["support"] == "full"
    yaml.safe_load(module.EXAMPLES)
    returned = yaml.safe_load(module.RETURN)
    assert {"run_id", "run_dir", "files", "would_write", "not_ok_hosts", "failing_checks"} <= set(returned)
