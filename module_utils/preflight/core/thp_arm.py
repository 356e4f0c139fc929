"""One arm of a THP A/B, owned by the process on the node that measures it (library/slm_probe.py).

The owner sets THP's mode, leaves a marker that says who owns the knob and what it was, and puts the mode back
on every way out: a normal end, SIGTERM/SIGINT/SIGHUP (turned into an exception the owner unwinds through), and,
when the owner is killed outright (SIGKILL, an async timeout, the node's OOM killer), a guard process in a
session of its own that sees the owner gone and restores the mode from the marker. Nothing here depends on the
controller: a controller that is interrupted or loses the host leaves the node to put itself back.

The marker (MARKER, on tmpfs: a reboot clears it with the mode itself) is also what the thp role reads before it
records a node's original values: while a live owner holds it, the node's mode is an A/B arm, not its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from .catalog import THP_DIR, THP_ENABLED_CHOICES
from .sysfs import selected

KNOB = THP_DIR + "/enabled"
MARKER = "/run/preflight/thp-ab.json"

# The guard: argv owner_pid owner_start knob original marker. It polls the owner; when the owner is gone and
# the marker is still the owner's, it writes the original mode back and removes the marker.
GUARD = r"""
import json, os, sys, time
pid, start, knob, original, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def alive():
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and fields[19] == start
    except OSError:
        return False
while alive():
    time.sleep(0.5)
try:
    with open(marker) as f:
        mine = json.load(f).get("pid") == pid
except (OSError, ValueError):
    mine = False
if mine:
    with open(knob, "w") as f:
        f.write(original)
    os.unlink(marker)
"""


class ThpArmError(RuntimeError):
    """The arm cannot start (bad mode, another owner, a write the kernel refused): nothing was left changed."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP while the arm was set: unwound so the mode is put back."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def read_mode(knob: str = KNOB) -> str | None:
    try:
        with open(knob, encoding="utf-8") as handle:
            return selected(handle.read())
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner(marker: str = MARKER) -> dict | None:
    """The marker's owner while it runs; None when there is no marker or its owner is gone."""
    try:
        with open(marker, encoding="utf-8") as handle:
            held = json.load(handle)
    except (OSError, ValueError):
        return None
    pid = held.get("pid")
    if isinstance(pid, int) and _start_time(pid) is not None and _start_time(pid) == held.get("pid_start"):
        return held
    return None


def owner_message(held: dict) -> str:
    return (f"THP is held for an A/B arm by pid {held['pid']} ({held.get('probe') or 'a probe'}, mode "
            f"{held['mode']} since {held.get('since')}; original {held['original']}): the node's own mode is "
            f"{held['original']}; wait for that probe to end (it puts the mode back itself)")


class ThpArm:
    """``with ThpArm("never", probe="load_thp_ab_never"):`` THP's mode is "never" inside, the original after."""

    def __init__(self, mode: str, probe: str = "", knob: str = KNOB, marker: str = MARKER):
        if mode not in THP_ENABLED_CHOICES:
            raise ThpArmError(f"thp_mode: '{mode}' is not allowed; allowed: {', '.join(THP_ENABLED_CHOICES)}")
        self.mode, self.probe, self.knob, self.marker = mode, probe, knob, marker
        self.original: str | None = None
        self.guard: subprocess.Popen | None = None
        self.restored: dict | None = None
        self._old: dict = {}

    def __enter__(self) -> ThpArm:
        held = owner(self.marker)
        if held is not None:
            raise ThpArmError(owner_message(held))
        self.original = read_mode(self.knob)
        if self.original is None:
            raise ThpArmError(f"{self.knob} cannot be read: this kernel has no THP to A/B")
        self._write_marker()
        self.guard = subprocess.Popen(
            [sys.executable, "-c", GUARD, str(os.getpid()), _start_time(os.getpid()) or "", self.knob,
             self.original, self.marker],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self._set(self.mode)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for sig in self._old:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the restore short
        try:
            self._set(self.original)
            self.restored = {"mode": self.original, "ok": read_mode(self.knob) == self.original}
        except ThpArmError as err:
            self.restored = {"mode": self.original, "ok": False, "error": str(err)}
        finally:
            if self.restored.get("ok"):
                self._remove_marker()  # else the guard, seeing the marker still ours, tries again
            for sig, old in self._old.items():
                signal.signal(sig, old)

    @staticmethod
    def _on_signal(signum, frame):
        raise Interrupted(signum)

    def _set(self, mode: str) -> None:
        try:
            with open(self.knob, "w", encoding="utf-8") as handle:
                handle.write(mode)
        except OSError as err:
            raise ThpArmError(f"{self.knob}: the kernel refused '{mode}': {err.strerror or err}") from err
        if read_mode(self.knob) != mode:
            raise ThpArmError(f"{self.knob}: wrote '{mode}', read back '{read_mode(self.knob)}'")

    def _write_marker(self) -> None:
        os.makedirs(os.path.dirname(self.marker), mode=0o755, exist_ok=True)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        held = {"pid": os.getpid(), "pid_start": _start_time(os.getpid()), "probe": self.probe, "mode": self.mode,
                "original": self.original, "knob": self.knob, "since": since}
        tmp = f"{self.marker}.{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(held, handle)
            os.replace(tmp, self.marker)
        except OSError as err:  # a full disk: no partial marker, and THP is not touched without one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise ThpArmError(f"cannot write the A/B marker {self.marker}: {err.strerror or err}; "
                              "THP was not changed") from err

    def _remove_marker(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass
