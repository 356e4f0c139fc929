"""The collection (galaxy.yml, tools/build_collection.py): built, installed into a temporary collections path,
and used by FQCN only from a playbook outside this checkout, over real SSH to a test host.

The playbook runs under an ansible.cfg of its own (no library, module_utils or roles_path pointing here), so
every module, role and module_util it uses comes from the installed collection.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from tests.sshfleet import ansible_env

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import build_collection  # noqa: E402

THP = Path("/sys/kernel/mm/transparent_hugepage")
PLAYBOOK = """
- name: Use Preflight by FQCN only
  hosts: fleet
  gather_facts: false
  tasks:
    - name: Read the node's facts with the collection's module
      preflight.node.node_facts:
        gpus: false
      register: facts

    - name: Show the THP mode the module read
      ansible.builtin.debug:
        msg: "THP_ENABLED={{ facts.ansible_facts.preflight.thp.enabled }}"

    - name: Apply the collection's THP role (the run is in check mode)
      ansible.builtin.include_role:
        name: preflight.node.thp
"""


def selected(name: str) -> str:
    text = (THP / name).read_text()
    return text.split("[", 1)[1].split("]", 1)[0]


def test_built_collection_installs_and_runs_by_fqcn_over_ssh(ssh_fleet, tmp_path):
    tarball = build_collection.build(tmp_path / "dist")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"plugins/modules/node_facts.py", "plugins/modules/thp_inspect.py", "roles/thp/tasks/main.yml",
            "plugins/module_utils/preflight/core/facts.py", "LICENSE"} <= names
    assert not any(name.startswith("roles/thp/library") or "/molecule/" in name for name in names)

    collections = tmp_path / "collections"
    install = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p",
         str(collections)], capture_output=True, text=True, env=ansible_env())
    assert install.returncode == 0, install.stdout + install.stderr
    manifest = json.loads((collections / "ansible_collections/preflight/node/MANIFEST.json").read_text())
    assert manifest["collection_info"]["license"] == ["Apache-2.0"]

    project = tmp_path / "project"
    project.mkdir()
    (project / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {collections}\nretry_files_enabled = False\n"
        "[ssh_connection]\npipelining = True\n")
    (project / "fqcn.yml").write_text(PLAYBOOK)
    doc = yaml.safe_load(ssh_fleet.inventory(project / "hosts.yml").read_text())
    doc["all"]["children"]["fleet"]["hosts"] = {"node1": doc["all"]["children"]["fleet"]["hosts"]["node1"]}
    (project / "hosts.yml").write_text(yaml.safe_dump(doc))
    before = {name: selected(name) for name in ("enabled", "defrag")}

    env = ansible_env(ANSIBLE_CONFIG=str(project / "ansible.cfg"))
    for leaked in ("ANSIBLE_LIBRARY", "ANSIBLE_MODULE_UTILS", "ANSIBLE_ROLES_PATH", "ANSIBLE_COLLECTIONS_PATH"):
        env.pop(leaked, None)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "hosts.yml", "fqcn.yml", "--check"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert f"THP_ENABLED={before['enabled']}" in output
    assert "TASK [preflight.node.thp : " in output
    assert {name: selected(name) for name in ("enabled", "defrag")} == before  # check mode changed nothing
