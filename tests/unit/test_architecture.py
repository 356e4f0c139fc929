"""Which way imports may run (docs/architecture.md). Read from the source with ast: nothing is imported.

    core     module_utils/preflight/core/   stdlib and itself only (pynvml, optional, for NVML)
    probes   probes/                         never Ansible, never module_utils except through probes.core
    reports  module_utils/preflight/report/  never an Ansible module (library/), never Ansible's runtime, never probes
    modules  library/, roles/*/library/      Ansible's module API and module_utils.preflight only
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "module_utils" / "preflight" / "core"
REPORT = REPO / "module_utils" / "preflight" / "report"
PROBES = REPO / "probes"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def imports(path: Path) -> list[tuple[int, str]]:
    """(level, dotted name) of every import in a file; level > 0 is a relative import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def probe_files() -> list[Path]:
    return [p for p in python_files(PROBES) if "core" not in p.relative_to(PROBES).parts[:1]]


def module_files() -> list[Path]:
    return sorted([*(REPO / "library").glob("*.py"), *(REPO / "roles").glob("*/library/*.py")])


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_core_imports_only_the_standard_library_and_itself():
    bad = []
    for path in python_files(CORE):
        for level, name in imports(path):
            top = name.split(".")[0]
            if level > 1 or (level == 0 and top not in STDLIB and top != "pynvml"):
                bad.append(f"{rel(path)}: {'.' * level}{name}")
    assert bad == []


def test_probes_import_neither_ansible_nor_module_utils_except_through_probes_core():
    bad = []
    for path in probe_files():
        for level, name in imports(path):
            if level == 0 and name.split(".")[0] in {"ansible", "module_utils", "library", "ansible_runner"}:
                bad.append(f"{rel(path)}: {name}")
    assert bad == []


def test_probes_core_is_the_core_itself():
    assert (PROBES / "core").resolve() == CORE


def test_report_code_imports_no_ansible_module_no_ansible_runtime_and_no_probe():
    forbidden = ("ansible.module_utils.basic", "ansible.modules", "ansible.plugins", "ansible.executor",
                 "library", "probes")
    bad = []
    for path in python_files(REPORT):
        for level, name in imports(path):
            if level == 0 and any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{rel(path)}: {name}")
    assert bad == []


@pytest.mark.parametrize("path", module_files(), ids=rel)
def test_modules_use_only_the_module_api_and_preflight_module_utils(path):
    bad = []
    for level, name in imports(path):
        top = name.split(".")[0]
        if level == 0 and top not in STDLIB and not (
            name == "ansible.module_utils.basic" or name.startswith("ansible.module_utils.preflight")
        ):
            bad.append(name)
    assert bad == [], f"{rel(path)} imports {bad}"


def test_no_role_carries_its_own_module_utils():
    """One way to find module_utils (ansible.cfg's module_utils = module_utils), for playbooks, molecule and a
    built collection alike."""
    assert sorted(rel(p) for p in (REPO / "roles").glob("*/module_utils")) == []
