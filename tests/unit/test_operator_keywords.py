"""Play and task keywords operators rely on, read from the YAML (nothing runs):

- the controller never escalates: every task delegated to localhost and every play that runs on localhost
  says `become: false` (an operator's --become or ansible.cfg become=True must not reach the controller);
- the plays that restart services or drop caches roll in batches (preflight_serial) and stop on failures
  (preflight_max_fail_percentage), with the defaults README "Batch size and failures" documents: the plays
  followed by the report play through Preflight's rollout gate as their first task (Ansible's keyword would
  end the playbook before the report), rollback.yml through Ansible's keyword; the plays that only read or
  write the controller's reports do not batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TASK_FILES = sorted([*REPO.glob("playbooks/**/*.yml"), *REPO.glob("roles/*/tasks/*.yml"),
                     *REPO.glob("roles/*/handlers/*.yml")])
SERIAL = "{{ preflight_serial | default('25%') }}"
MAX_FAIL = "{{ preflight_max_fail_percentage | default(0) }}"
# Plays that change nodes in ways a serving fleet feels: service restarts (jemalloc), cache drops (load probe).
ROLLING_PLAYS = {
    "playbooks/site.yml": "Tune memory settings and read every node back",
    "playbooks/bootstrap.yml": "Tune, read back and probe every node",
    "playbooks/probe.yml": "Probe every node",
    "playbooks/rollback.yml": "Roll back Preflight's tuning",
}
GATE = REPO / "playbooks/tasks/rollout_gate.yml"
CONTROLLER = {"localhost", "127.0.0.1"}
NESTED = ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers")


def documents() -> list[tuple[Path, list]]:
    return [(p, yaml.safe_load(p.read_text()) or []) for p in TASK_FILES]


def tasks_in(items: list, inherited_become=None):
    """Every task (blocks included), with the become it inherits from its play and enclosing blocks."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        become = item.get("become", inherited_become)
        yield item, become
        for key in NESTED:
            if isinstance(item.get(key), list):
                yield from tasks_in(item[key], become)


def test_every_task_delegated_to_the_controller_never_escalates():
    offenders = []
    for path, doc in documents():
        for task, become in tasks_in(doc):
            if task.get("delegate_to") in CONTROLLER and become is not False:
                offenders.append(f"{path.relative_to(REPO)}: {task.get('name', '(unnamed)')}")
    assert offenders == [], "delegated to localhost without become: false"


def test_every_play_on_the_controller_never_escalates():
    offenders = []
    for path in REPO.glob("playbooks/*.yml"):
        for play in yaml.safe_load(path.read_text()) or []:
            if play.get("hosts") == "localhost" and play.get("become") is not False:
                offenders.append(f"{path.name}: {play['name']}")
    assert offenders == []


@pytest.mark.parametrize("playbook", sorted(ROLLING_PLAYS))
def test_plays_that_restart_services_or_drop_caches_roll_in_batches(playbook):
    plays = {play["name"]: play for play in yaml.safe_load((REPO / playbook).read_text()) if "name" in play}
    play = plays[ROLLING_PLAYS[playbook]]
    assert play.get("serial") == SERIAL
    if playbook == "playbooks/rollback.yml":  # writes no report
        assert play.get("max_fail_percentage") == MAX_FAIL
    else:
        assert "max_fail_percentage" not in play
        assert first_task_file(REPO / playbook, play["tasks"]) == GATE


def first_task_file(path: Path, tasks: list) -> Path:
    """The task file the first task imports, following imports down to the first plain task's file."""
    first = tasks[0]
    if "ansible.builtin.import_tasks" not in first:
        return path
    imported = (path.parent / first["ansible.builtin.import_tasks"]).resolve()
    return first_task_file(imported, yaml.safe_load(imported.read_text()))


def test_report_and_audit_plays_do_not_batch():
    """The report play must see every host at once (one fleet summary); audit only reads."""
    for name in ("report.yml", "audit.yml"):
        for play in yaml.safe_load((REPO / "playbooks" / name).read_text()):
            assert "serial" not in play, f"{name}: {play.get('name')}"
