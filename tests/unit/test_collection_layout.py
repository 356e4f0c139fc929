"""tools/build_collection.py's import rewrite, and one licence for the whole repository."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import build_collection  # noqa: E402

NEW = "ansible_collections.preflight.node.plugins.module_utils.preflight"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("from ansible.module_utils.preflight.core.facts import gather",
         f"from {NEW}.core.facts import gather"),
        ("from ansible.module_utils.preflight.core import plan as core  # noqa: E402",
         f"from {NEW}.core import plan as core  # noqa: E402"),
        ("from ansible.module_utils.preflight import probe_runner",
         f"from {NEW} import probe_runner"),
        ("    import ansible.module_utils.preflight.core.thp", f"    import {NEW}.core.thp"),
        # Not the package: Ansible's own module_utils and look-alike names stay as they are.
        ("from ansible.module_utils.basic import AnsibleModule",
         "from ansible.module_utils.basic import AnsibleModule"),
        ("from ansible.module_utils.preflight_extra import x", "from ansible.module_utils.preflight_extra import x"),
        ("# see ansible.module_utils.preflight.core", "# see ansible.module_utils.preflight.core"),
    ],
)
def test_module_imports_are_rewritten_to_the_collection(line, expected):
    assert build_collection.rewrite_imports(line, "preflight", "node") == expected


def test_every_module_import_of_the_core_is_rewritten():
    modules = [*REPO.glob("library/*.py"), *REPO.glob("roles/*/library/*.py")]
    for module in modules:
        rewritten = build_collection.rewrite_imports(module.read_text(), "preflight", "node")
        assert "from ansible.module_utils.preflight" not in rewritten, module


def test_one_licence_for_the_repository_the_collection_and_every_role():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["license"] == ["Apache-2.0"]
    assert "Apache License" in (REPO / "LICENSE").read_text().split("\n", 3)[1]
    for meta in REPO.glob("roles/*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["license"] == "Apache-2.0", meta


def test_role_metadata_names_the_collection_namespace():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    for meta in REPO.glob("roles/*/meta/main.yml"):
        assert yaml.safe_load(meta.read_text())["galaxy_info"]["namespace"] == galaxy["namespace"], meta
