"""Make the repo's module_utils importable in tests as Ansible modules see them.

    from tests.moduleutils import module_util
    facts = module_util("preflight.core.facts")      # ansible.module_utils.preflight.facts

(After ``import tests.moduleutils`` plain ``from ansible.module_utils.preflight... import`` works
too, but import sorters move that line below the import it enables.)

Ansible puts ``module_utils/`` (ansible.cfg) under ``ansible.module_utils`` when it packs a module;
appending the directory to that package's ``__path__`` gives tests the same import names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import ansible.module_utils

REPO_MODULE_UTILS = Path(__file__).resolve().parent.parent / "module_utils"


def enable(directory: Path = REPO_MODULE_UTILS) -> None:
    """Append ``directory`` to ansible.module_utils' search path (once)."""
    path = str(directory)
    if path not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(path)


def module_util(name: str) -> ModuleType:
    """``module_util("preflight.core.facts")`` is ansible.module_utils.preflight.facts from this repo."""
    enable()
    return importlib.import_module(f"ansible.module_utils.{name}")


enable()
