"""Preflight's defaults sit at the lowest precedence: one defaults role (roles/preflight_defaults, only
defaults/main.yml) that every play on the fleet's hosts includes first, so its defaults are visible to the whole
play and every inventory level (group_vars/all.yml, group_vars/<group>.yml, host_vars) and -e override them.
tests/integration/test_variable_precedence.py runs it; this checks the wiring of every playbook."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "preflight_defaults"


def plays():
    for path in sorted((REPO / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(path.read_text()) or []:
            if "hosts" in play and play["hosts"] != "localhost":
                yield pytest.param(play, id=f"{path.name}: {play.get('name')}")


@pytest.mark.parametrize("play", list(plays()))
def test_every_play_on_the_fleet_includes_the_defaults_role_first(play):
    roles = [r["role"] if isinstance(r, dict) else r for r in play.get("roles") or []]
    assert roles[:1] == ["preflight_defaults"], f"roles: {roles}"


def test_the_defaults_role_holds_only_defaults():
    files = sorted(str(p.relative_to(ROLE)) for p in ROLE.rglob("*") if p.is_file())
    assert files == ["defaults/main.yml"]
    assert "preflight_level" in yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
