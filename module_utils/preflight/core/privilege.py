"""Whether Preflight may change a node as the user it runs as there: its tuning, probes and rollback write
sysfs, /etc and systemd units, which only root may do. Checked before anything changes, so a login without
become fails at once with what to do, not halfway through with a permission error."""

from __future__ import annotations

ROOT_UID = 0


def privilege_problem(host: str, euid: int, user: str, login_user: str | None = None) -> str | None:
    """The operator-facing error when the module runs as someone other than root, else None.

    ``user`` is who the module runs as on the node, ``login_user`` who Ansible logged in as (when known).
    """
    if euid == ROOT_UID:
        return None
    who = f"'{user}' (uid {euid})"
    if login_user and login_user != user:
        who += f", logged in as '{login_user}'"
    return (
        f"Preflight on {host}: runs as {who}, not root, and would fail halfway with permission errors "
        "(it writes sysfs, /etc and systemd units). Nothing was changed. Escalate with become: set "
        "ansible_become: true on the nodes' group in your inventory (or pass --become), with a sudo rule "
        "for that user, or log in as root."
    )
