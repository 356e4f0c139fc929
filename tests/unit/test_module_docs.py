"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse as YAML, as ansible-doc reads them (a stray ': ' in
a description once made `ansible-doc thp_inspect` fail)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted([*REPO.glob("library/*.py"), *REPO.glob("roles/*/library/*.py")])


def blocks(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN")
            and isinstance(node.value, ast.Constant)}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_documentation_parses(path):
    found = blocks(path)
    assert set(found) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, path
    for name, text in found.items():
        assert yaml.safe_load(text) is not None, f"{path.name} {name} is empty"
    assert yaml.safe_load(found["DOCUMENTATION"])["module"] == path.stem
