"""Directories Preflight is given by an operator: the roles' state directories (where each keeps its rollback
record) and hugetlbfs mount points. Each is normalised as the kernel resolves it (`//`, `/.`, `/usr/..`) and
refused when it is the root or a system directory, or (state directories) when it is not a directory of
its own: a rollback removes the files its role recorded there, so two roles must never share one.
"""

from __future__ import annotations

import posixpath

from .catalog import THP_DEFAULTS

# Each role's default state directory (roles/<role>/defaults/main.yml must say the same).
STATE_DIR_DEFAULTS = {
    "thp_state_dir": THP_DEFAULTS["thp_state_dir"],
    "hugepages_state_dir": "/var/lib/preflight/hugepages",
    "jemalloc_state_dir": "/var/lib/preflight/jemalloc",
}
# Directories the system owns: a mount over one hides what it holds, a record in one mixes with the system's.
SYSTEM_DIRS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/include",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/sbin",
        "/usr/share",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/spool",
        "/var/tmp",
    }
)
# Kernel file systems: nothing of Preflight's goes inside them.
VIRTUAL_TREES = ("/proc", "/sys")


def normal_path(path: str) -> str:
    """The path as the kernel resolves it, without following links: '//' and '/usr/..' are '/'.

    posixpath.normpath keeps a leading '//' (POSIX leaves it implementation-defined; Linux reads it as '/')."""
    return posixpath.normpath("/" + path.lstrip("/")) if path.startswith("/") else posixpath.normpath(path)


def refused_dir(normal: str) -> str | None:
    """Why a normalised absolute directory may not be used, or None."""
    if normal == "/":
        return "the root directory"
    if normal in SYSTEM_DIRS:
        return "a system directory"
    for tree in VIRTUAL_TREES:
        if normal.startswith(tree + "/"):
            return f"inside {tree}, a kernel file system"
    return None


def inside(inner: str, outer: str) -> bool:
    """Whether normalised `inner` is `outer` or below it."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def state_dir_errors(dirs: dict, own: str) -> list[str]:
    """Every reason role variable `own` (a key of STATE_DIR_DEFAULTS) cannot be used, checked against the other
    roles' state directories. dirs: variable -> value as the play has it (None or missing: the role default)."""
    value = dirs.get(own)
    value = STATE_DIR_DEFAULTS[own] if value is None else value
    if not isinstance(value, str) or not value.startswith("/"):
        return [f"{own}: {value!r} is not an absolute path"]
    normal = normal_path(value)
    why = refused_dir(normal)
    if why:
        return [
            f"{own}: {value!r} is {normal} once normalised, {why}: rollback removes the files it recorded there; "
            f"give the role a directory of its own, e.g. {STATE_DIR_DEFAULTS[own]}"
        ]
    errors = []
    for other, default in STATE_DIR_DEFAULTS.items():
        if other == own:
            continue
        theirs = dirs.get(other)
        theirs = default if theirs is None else theirs
        if not isinstance(theirs, str) or not theirs.startswith("/"):
            continue
        theirs_normal = normal_path(theirs)
        if normal == theirs_normal:
            relation = f"is the same directory as {other}"
        elif inside(theirs_normal, normal):
            relation = f"contains {other} ({theirs_normal})"
        elif inside(normal, theirs_normal):
            relation = f"is inside {other} ({theirs_normal})"
        else:
            continue
        errors.append(
            f"{own}: {value!r} {relation}: each role needs a state directory of its own, or the rollback of one "
            f"touches the record of the other; e.g. {STATE_DIR_DEFAULTS[own]}"
        )
    return errors
