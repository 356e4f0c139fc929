"""core/privilege.py: who may run Preflight on a node, and the message for everyone else."""

from __future__ import annotations

from tests.moduleutils import module_util

privilege = module_util("preflight.core.privilege")


def test_root_may_run():
    assert privilege.privilege_problem("node1", 0, "root", "preflight-op") is None


def test_an_unprivileged_login_is_told_to_escalate_with_become():
    message = privilege.privilege_problem("node1", 998, "preflight-op", "preflight-op")
    assert message == (
        "Preflight on node1: runs as 'preflight-op' (uid 998), not root, and would fail halfway with permission "
        "errors (it writes sysfs, /etc and systemd units). Nothing was changed. Escalate with become: set "
        "ansible_become: true on the nodes' group in your inventory (or pass --become), with a sudo rule for "
        "that user, or log in as root."
    )


def test_become_to_another_unprivileged_user_names_both():
    message = privilege.privilege_problem("node2", 65534, "nobody", "preflight-op")
    assert message.startswith("Preflight on node2: runs as 'nobody' (uid 65534), logged in as 'preflight-op', not root")
