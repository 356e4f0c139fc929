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


def test_the_report_code_imports_without_ansible():
    """module_utils/preflight/report uses relative imports only, so it runs wherever its files are."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class NoAnsible:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ansible':\n"
        "            raise ImportError('ansible is not importable here')\n"
        "sys.meta_path.insert(0, NoAnsible())\n"
        f"sys.path.insert(0, {str(MODULE.parents[1] / 'module_utils')!r})\n"
        "import preflight.report.pipeline\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
