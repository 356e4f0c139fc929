"""One run at a time per host: an flock on one file under Preflight's state directory.

Two runs on one host (site, bootstrap, probe, rollback in any pair) would each rebuild the roles' records from
their own snapshot, and the last writer would drop the other's values. So every run that changes a node holds
this lock from before its first change to after its last one, and a probe that touches a kernel knob holds it
while the knob is not the node's own value.

Two ways to hold it, one file, one holder format (HOLDER_KEYS, JSON in the lock file itself):
- acquire() holds it in this process until release() or the process ends (the kernel drops an flock with its
  last descriptor, so a killed probe cannot leave it held). A probe calls it as probes.core.lock.acquire().
- acquire_detached() (library/preflight_lock.py) takes it and hands it to a small holder process on the node
  that keeps it until release_detached() or until expire_s have passed, whichever is first: a controller
  that dies between tasks cannot leave the node locked for longer than that.

A process inside a run (a probe started by bootstrap.yml) passes the run's token (TOKEN_ENV in its
environment): while the run's holder still holds the lock it is covered by that hold and takes nothing.

A run whose controller is gone lets go sooner than its expiry when it was waiting for a probe: while the
controller polls a probe (library/slm_probe_wait.py, core/progress.py wait), each poll touches the run's
heartbeat file (heartbeat_path, named to the poll by HEARTBEAT_ENV) and the poll that sees the probe end
removes it again. A holder whose heartbeat exists and has not been touched for HEARTBEAT_GRACE_S (3 x
PROBE_HEARTBEAT_S: by then the probe itself has been stopped and the node put back, core/thp_arm.py) lets go.
Without a heartbeat (tuning, between probes) the holder keeps the lock until release or expiry: a long task
polls nothing, and a restarted run must not tune over a half-done one.
The lock file is never removed: removing an flocked file lets two processes lock two different inodes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import time
from datetime import UTC, datetime, timedelta

from .catalog import PROBE_HEARTBEAT_S

# The roles keep their records in <STATE_DIR>/<role> (thp_state_dir, hugepages_state_dir, jemalloc_state_dir).
STATE_DIR = "/var/lib/preflight"
LOCK_FILE = STATE_DIR + "/run.lock"
# How long a second run waits for the lock before it fails naming the holder (preflight_lock_wait_s).
LOCK_WAIT_S = 60
# Added to the level's budget for the longest a detached holder may live (preflight_lock_expire_s): tuning,
# a package install and the probe runtime are outside the budget.
LOCK_MARGIN_S = 900
# The environment variable that carries a run's token to the processes it starts on the node.
TOKEN_ENV = "PREFLIGHT_LOCK_TOKEN"
# The environment variable that names the run's heartbeat file to the processes that poll probes on the node.
HEARTBEAT_ENV = "PREFLIGHT_LOCK_HEARTBEAT"
HEARTBEAT_SUFFIX = ".heartbeat"
# A heartbeat untouched this long means the controller stopped polling: the holder lets go.
HEARTBEAT_GRACE_S = 3 * PROBE_HEARTBEAT_S
HOLDER_KEYS = ("pid", "token", "host", "playbook", "controller", "started_at", "expires_at", "heartbeat",
               "heartbeat_grace_s")
# Places the lock file may never be (a lock file there would be a kernel file or a system directory).
FORBIDDEN_PARENTS = ("/proc", "/sys", "/dev")
POLL_S = 0.2


class LockError(Exception):
    """The lock cannot be taken or given back for a reason other than another holder (bad path, I/O)."""


class LockBusy(LockError):
    """Another run holds the lock and did not let go within the wait."""

    def __init__(self, path: str, holder: dict | None, waited_s: float):
        self.path, self.holder, self.waited_s = path, holder, waited_s
        super().__init__(busy_message(path, holder, waited_s))


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def path_errors(path) -> list[str]:
    """What is wrong with a lock file path (empty when it is usable), each naming preflight_lock_file."""
    if not isinstance(path, str) or not path:
        return [f"preflight_lock_file must be an absolute file path; got {path!r}"]
    norm = os.path.normpath(path)
    if not os.path.isabs(path) or norm in ("/", "//"):
        return [f"preflight_lock_file must be an absolute file path; got {path!r}"]
    if norm != path:
        return [f"preflight_lock_file {path!r} is not in normal form: write it as {norm!r}"]
    if any(norm == p or norm.startswith(p + "/") for p in FORBIDDEN_PARENTS):
        return [f"preflight_lock_file {path!r} is under {', '.join(FORBIDDEN_PARENTS)}: use a file under {STATE_DIR}"]
    if os.path.isdir(path):
        return [f"preflight_lock_file {path!r} is a directory: name a file, e.g. {LOCK_FILE}"]
    return []


def expire_after_s(budget_s=None, margin_s: float = LOCK_MARGIN_S) -> int:
    """The longest a detached holder lives: the level's budget (none for tuning only) plus the margin."""
    try:
        budget = max(float(budget_s or 0), 0.0)
    except (TypeError, ValueError):
        budget = 0.0
    return int(budget + margin_s)


def new_token() -> str:
    return secrets.token_hex(8)


def holder_info(token: str, host=None, playbook=None, controller=None, expire_s=None, pid=None) -> dict:
    """The record a holder writes into the lock file: who, from where, since when, until when (a detached
    holder adds its heartbeat file and grace)."""
    started = _now()
    return {
        "pid": pid if pid is not None else os.getpid(),
        "token": token,
        "host": host,
        "playbook": playbook,
        "controller": controller,
        "started_at": _iso(started),
        "expires_at": _iso(started + timedelta(seconds=expire_s)) if expire_s else None,
        "heartbeat": None,
        "heartbeat_grace_s": None,
    }


# --- the heartbeat of a run that waits for a probe ----------------------------------------------------------
def heartbeat_path(lock_path: str) -> str:
    return lock_path + HEARTBEAT_SUFFIX


def touch_heartbeat(path: str | None = None) -> None:
    """Arm or refresh the run's heartbeat (default: the file HEARTBEAT_ENV names; nothing when none is named)."""
    path = path if path is not None else os.environ.get(HEARTBEAT_ENV, "")
    if not path or not os.path.isabs(path):
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    os.utime(path, None)


def disarm_heartbeat(path: str | None = None) -> None:
    """Remove the run's heartbeat: nothing polls now, so its age says nothing about the controller."""
    path = path if path is not None else os.environ.get(HEARTBEAT_ENV, "")
    if path and os.path.isabs(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def heartbeat_stale(path: str | None, grace_s: float, now: float | None = None) -> bool:
    """Whether the heartbeat is armed and untouched for longer than grace_s."""
    if not path:
        return False
    try:
        touched = os.stat(path).st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - touched > grace_s


def describe(holder: dict | None) -> str:
    """The holder in words, for an operator: PID, playbook, controller, start and expiry."""
    if not holder:
        return "a holder that has not written its record yet (or a tool that is not Preflight)"
    parts = [f"PID {holder.get('pid', '?')} on the node"]
    if holder.get("playbook"):
        parts.append(f"playbook {holder['playbook']}")
    if holder.get("controller"):
        parts.append(f"controller {holder['controller']}")
    parts.append(f"started {holder.get('started_at') or '?'}")
    if holder.get("expires_at"):
        parts.append(f"expires {holder['expires_at']} at the latest")
    if holder.get("heartbeat"):
        parts.append(f"or {holder.get('heartbeat_grace_s'):g} s after its controller stops polling a probe")
    return ", ".join(parts)


def busy_message(path: str, holder: dict | None, waited_s: float) -> str:
    who = describe(holder)
    return (
        f"another Preflight run holds this host's lock {path}: {who}; waited {waited_s:g} s. "
        "Let that run finish, then run again; raise preflight_lock_wait_s to wait longer. A holder whose "
        "controller died lets go by itself at its expiry time; when you know that run is gone, `kill` the "
        "holder's PID on the node to free the lock now."
    )


def read_holder(path: str) -> dict | None:
    """The holder record in the lock file (None when empty or unreadable; written right after locking)."""
    for _ in range(3):
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return None
        if text.strip():
            try:
                found = json.loads(text)
            except ValueError:
                time.sleep(0.05)  # caught between truncate and write: read again
                continue
            return found if isinstance(found, dict) else None
        time.sleep(0.05)
    return None


def _open(path: str) -> int:
    errors = path_errors(path)
    if errors:
        raise LockError(errors[0])
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc


def _try_flock(fd: int, wait_s: float) -> bool:
    """Take the flock on fd, trying for up to wait_s seconds (0: once)."""
    deadline = time.monotonic() + max(float(wait_s), 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))


def _write_holder(fd: int, info: dict, path: str = "the lock file") -> None:
    data = (json.dumps(info, sort_keys=True) + "\n").encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except OSError as exc:  # a full disk: the holder is refused, not half-written
        raise LockError(f"cannot write the holder record to {path}: {exc.strerror or exc}") from exc


class Held:
    """A held lock. release() (or leaving a `with`) gives it back; a covered hold gives back nothing."""

    def __init__(self, path: str, fd: int | None, info: dict | None, covered: bool = False, waited_s: float = 0.0):
        self.path, self.fd, self.info, self.covered = path, fd, info, covered
        self.waited_s = waited_s  # seconds spent waiting for another holder to let go (0.0: free at once)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # the last descriptor: the kernel drops the flock

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def status(path: str) -> dict:
    """{"held": bool, "holder": record or None}, taking nothing (check mode)."""
    fd = _open(path)
    try:
        if _try_flock(fd, 0):
            return {"held": False, "holder": None}
        return {"held": True, "holder": read_holder(path)}
    finally:
        os.close(fd)


def acquire(path: str, wait_s: float = LOCK_WAIT_S, info: dict | None = None, token: str | None = None) -> Held:
    """Hold the lock in this process, waiting up to wait_s; LockBusy names the holder when it does not come.

    `token` (default: TOKEN_ENV from the environment) is the token of the run that started this process: while
    that run's holder holds the lock, this process is covered by its hold and takes nothing (Held.covered).
    """
    token = os.environ.get(TOKEN_ENV) if token is None else token
    fd = _open(path)
    waited = 0.0
    try:
        if not _try_flock(fd, 0):
            started = time.monotonic()
            holder = read_holder(path)
            if token and holder and holder.get("token") == token:
                os.close(fd)
                return Held(path, None, holder, covered=True)
            if not _try_flock(fd, wait_s):
                raise LockBusy(path, read_holder(path), round(time.monotonic() - started, 1))
            waited = round(time.monotonic() - started, 1)
        record = dict(info or holder_info(token or new_token()))
        _write_holder(fd, record, path)
        return Held(path, fd, record, waited_s=waited)
    except BaseException:
        os.close(fd)
        raise


def acquire_detached(path: str, wait_s: float, expire_s: float, info: dict,
                     grace_s: float = HEARTBEAT_GRACE_S) -> dict:
    """Take the lock and hand it to a detached holder process that keeps it for at most expire_s seconds, or
    until its heartbeat (heartbeat_path) is armed and stale for grace_s.

    Returns the holder record (its pid is the holder's) with waited_s. The caller gives it back with
    release_detached(path, record["token"]).
    """
    held = acquire(path, wait_s, dict(info), token="")
    try:
        heartbeat = heartbeat_path(path)
        disarm_heartbeat(heartbeat)  # an earlier run's, left by a controller that died while polling
        pid = _spawn_holder(held.fd, expire_s, heartbeat, grace_s)
        record = dict(held.info, pid=pid, heartbeat=heartbeat, heartbeat_grace_s=grace_s)
        try:
            _write_holder(held.fd, record, path)
        except LockError:
            os.kill(pid, signal.SIGTERM)  # a holder nobody could name must not keep the lock
            raise
    finally:
        held.release()  # the holder keeps its own descriptor of the same open file, and with it the flock
    return dict(record, waited_s=held.waited_s)


def _spawn_holder(fd: int, expire_s: float, heartbeat: str, grace_s: float) -> int:
    """Fork a holder in its own session (double fork: not our child, not in our process group); its pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        try:
            os.close(read_end)
            os.setsid()
            if os.fork():
                os._exit(0)
            _hold_until_released(fd, write_end, expire_s, heartbeat, grace_s)
        finally:
            os._exit(1)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode().strip()
    if not text.isdigit():
        raise LockError("the lock holder process did not start (fork failed on the node)")
    return int(text)


def _hold_until_released(fd: int, report_fd: int, expire_s: float, heartbeat: str,
                         grace_s: float) -> None:  # pragma: no cover - forked
    """The holder: keep fd (and its flock) until SIGTERM, expiry, or a stale heartbeat; nothing of the caller's
    stays open."""
    os.set_inheritable(fd, False)
    os.write(report_fd, str(os.getpid()).encode())
    os.close(report_fd)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.closerange(3, fd)
    os.closerange(fd + 1, 65536)
    os.chdir("/")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    deadline = time.monotonic() + max(float(expire_s), 1.0)
    step = min(30.0, max(float(grace_s) / 5, 0.2))
    while (left := deadline - time.monotonic()) > 0:
        if heartbeat_stale(heartbeat, grace_s):
            disarm_heartbeat(heartbeat)  # before letting go: the next run's holder must not find it stale
            break
        time.sleep(min(left, step))
    os._exit(0)


def release_detached(path: str, token: str, wait_s: float = 10.0) -> dict:
    """Stop the holder of `token` and give the lock back.

    {"released": True} when it held the lock; {"released": False, "expired": True, "holder": ...} when the
    lock had already gone (the holder expired or was killed) or another run holds it now.
    """
    fd = _open(path)
    try:
        if _try_flock(fd, 0):
            return {"released": False, "expired": True, "holder": None}
        holder = read_holder(path)
        if not token or not holder or holder.get("token") != token:
            return {"released": False, "expired": True, "holder": holder}
        try:
            os.kill(int(holder["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not _let_go(fd, path, token, wait_s):
            raise LockError(
                f"the holder of {path} (PID {holder['pid']}) did not let go within {wait_s:g} s of SIGTERM"
            )
        disarm_heartbeat(holder.get("heartbeat"))
        return {"released": True, "expired": False, "holder": holder}
    finally:
        os.close(fd)


def _let_go(fd: int, path: str, token: str, wait_s: float) -> bool:
    """Whether our holder let go within wait_s: the lock is free, or a run that was waiting took it (its record
    replaced ours)."""
    deadline = time.monotonic() + wait_s
    while True:
        if _try_flock(fd, 0):
            return True
        current = read_holder(path)
        if current and current.get("token") != token:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S / 4)


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
