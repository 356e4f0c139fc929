"""One arm of a THP A/B, owned by the process on the node that measures it (library/slm_probe.py).

The owner sets THP's mode, leaves a marker that says who owns the knob and what it was, and puts the mode back
on every way out: a normal end, SIGTERM/SIGINT/SIGHUP (turned into an exception the owner unwinds through), and,
when the owner is killed outright (SIGKILL, an async timeout, the node's OOM killer), a guard process in a
session of its own that sees the owner gone and restores the mode from the marker. Nothing here depends on the
controller: a controller that is interrupted or loses the host leaves the node to put itself back.

The marker (MARKER, on tmpfs: a reboot clears it with the mode itself) is also what the thp role reads before it
records a node's original values: while a live owner holds it, the node's mode is an A/B arm, not its own.

An arm is one or more settings joined by '+': a global mode (always, madvise, never: THP's ``enabled``) and/or
``<size>=<value>`` for a per-size knob (``hugepages-<size>/enabled``, Linux 6.8+; always, inherit, madvise,
never), each knob at most once: ``never``, ``64kB=always``, ``never+64kB=always+2048kB=inherit``. parse_arm
checks an arm once, here, for the plan on the controller (the form) and for the owner on the node (against the
sizes and values the kernel offers) before anything is written; knobs the arm does not name are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

from .catalog import THP_DIR, THP_ENABLED_CHOICES, THP_SIZE_CHOICES, THP_SIZE_KNOB, THP_SIZE_NAME
from .sysfs import selected
from .thp_sizes import read_sizes, size_kb
from .tree import Tree

KNOB = THP_DIR + "/enabled"
MARKER = "/run/preflight/thp-ab.json"
ARM_JOIN = "+"
GLOBAL = "enabled"  # the key of the global mode in an arm's settings; a size ("64kB") is the key of its knob

# The guard: argv owner_pid owner_start knobs marker (knobs: JSON [[path, original], ...]). It polls the owner;
# when the owner is gone and the marker is still the owner's, it writes every original back and removes the
# marker.
GUARD = r"""
import json, os, sys, time
pid, start, knobs, marker = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
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
    for knob, original in knobs:
        try:
            with open(knob, "w") as f:
                f.write(original)
        except OSError:
            pass
    os.unlink(marker)
"""


class ThpArmError(RuntimeError):
    """The arm cannot start (bad arm, another owner, a write the kernel refused): nothing was left changed."""


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP while the arm was set: unwound so the mode is put back."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


# --- An arm: what it sets, checked once ---------------------------------------------------------------------
def allowed_arms(sizes: dict | None = None) -> str:
    """What an arm may be, for an error message; with the node's sizes, the ones this kernel offers."""
    offered = f"a size this kernel offers ({', '.join(sizes)})" if sizes else "a page size such as 64kB"
    return (f"allowed: {', '.join(THP_ENABLED_CHOICES)} (THP enabled, every size that inherits it), or "
            f"<size>=<value> with {offered} and a value of {', '.join(THP_SIZE_CHOICES)}; several joined by "
            f"'{ARM_JOIN}', each knob once (e.g. never{ARM_JOIN}64kB=always)")


def _setting_problem(part: str, key: str, value: str, sizes: dict | None) -> str | None:
    """Why one setting of an arm cannot be made (None: it can); sizes None checks the form only."""
    if "," in part:
        return f"'{part}': the settings of one arm are joined by '{ARM_JOIN}', not ','; {allowed_arms(sizes)}"
    if key == GLOBAL:
        return None if value in THP_ENABLED_CHOICES else f"'{part}' is not allowed; {allowed_arms(sizes)}"
    if not re.fullmatch(THP_SIZE_NAME, key):
        return f"'{key}' in '{part}' is not a page size (write it as the kernel does: 64kB); {allowed_arms(sizes)}"
    if sizes is not None and not sizes:
        return (f"this kernel has no per-size THP knobs ({THP_DIR}/hugepages-<N>kB/enabled, Linux 6.8 and later), "
                f"so '{part}' cannot be set; allowed: {', '.join(THP_ENABLED_CHOICES)}")
    if sizes is not None and not (sizes.get(key) or {}).get("choices"):
        return f"size '{key}' is not offered by this kernel; allowed sizes: {', '.join(sizes)}"
    choices = sizes[key]["choices"] if sizes is not None else THP_SIZE_CHOICES
    if value not in choices:
        return f"'{value}' is not a setting of size {key}; allowed: {', '.join(choices)}"
    return None


def parse_arm(text, where: str = "thp_mode", sizes: dict | None = None) -> tuple[dict, list[str]]:
    """An arm's settings ({"enabled": "never", "64kB": "always"}: the global mode first, then sizes smallest
    first) and every error in it, each naming ``where``, the arm and what is allowed ({} with any error).
    ``sizes``: the node's per-size knobs ({size: {..., "choices": [...]}}, as thp_sizes.read_sizes and
    node_facts give them), checked against when given; None checks the form only (the controller does not know
    the node's kernel)."""
    if isinstance(text, bool) or not isinstance(text, str) or not text.strip():
        why = "is a YAML boolean, not a word (quote it)" if isinstance(text, bool) else "is not a THP arm"
        return {}, [f"{where}: '{text}' {why}; {allowed_arms(sizes)}"]
    settings: dict[str, str] = {}
    errors = []
    for part in (piece.strip() for piece in text.split(ARM_JOIN)):
        key, value = (piece.strip() for piece in part.split("=", 1)) if "=" in part else (GLOBAL, part)
        problem = _setting_problem(part, key, value, sizes)
        if problem is None and key in settings:
            problem = f"sets {'THP enabled' if key == GLOBAL else 'size ' + key} twice"
        if problem is not None:
            errors.append(f"{where}: {problem}" if part == text.strip() else f"{where}: '{text}': {problem}")
        else:
            settings[key] = value
    if errors:
        return {}, errors
    order = sorted(settings, key=lambda key: -1 if key == GLOBAL else size_kb(key))
    return {key: settings[key] for key in order}, []


def arm_text(settings: dict) -> str:
    """The arm as it is written, in its one order: 'never+64kB=always'."""
    return ARM_JOIN.join(value if key == GLOBAL else f"{key}={value}" for key, value in settings.items())


def arm_slug(settings: dict) -> str:
    """The arm in a result name: 'never' stays 'never' (thp_ab_never), 'never+64kB=always' is
    'never_64kb_always'."""
    return re.sub(r"[^a-z0-9]+", "_", arm_text(settings).lower()).strip("_")


def knob_path(key: str) -> str:
    """The sysfs file of one setting, as seen on the node."""
    return KNOB if key == GLOBAL else THP_SIZE_KNOB.format(size=key)


def live_settings(root: str = "/") -> dict:
    """THP's live global mode and every size's setting: {"enabled": "madvise", "sizes": {"64kB": "never"}}."""
    tree = Tree(root)
    return {"enabled": read_mode(tree.real(KNOB)),
            "sizes": {size: entry["current"] for size, entry in read_sizes(tree).items()}}


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
    """``with ThpArm("never+64kB=always", probe="load_thp_ab_never_64kb_always"):`` THP's global mode is never
    and the 64 kB size always inside; every knob the arm names is back to the value it had after, the others
    are never touched. ``mode`` and ``original`` are the arm and the values it found, written as arms."""

    def __init__(self, arm: str, probe: str = "", root: str = "/", marker: str = MARKER, where: str = "thp_mode"):
        self.settings, errors = parse_arm(arm, where)
        if errors:
            raise ThpArmError("; ".join(errors))
        self.mode, self.probe, self.marker, self.where = arm_text(self.settings), probe, marker, where
        self.tree = Tree(root)
        self.knob = self.tree.real(KNOB)
        self.originals: dict[str, str] = {}
        self.original: str | None = None
        self.guard: subprocess.Popen | None = None
        self.restored: dict | None = None
        self._old: dict = {}

    def path(self, key: str) -> str:
        return self.tree.real(knob_path(key))

    def __enter__(self) -> ThpArm:
        held = owner(self.marker)
        if held is not None:
            raise ThpArmError(owner_message(held))
        self._find_originals()
        self._write_marker()
        knobs = json.dumps([[self.path(key), value] for key, value in self.originals.items()])
        self.guard = subprocess.Popen(
            [sys.executable, "-c", GUARD, str(os.getpid()), _start_time(os.getpid()) or "", knobs, self.marker],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for key, value in self.settings.items():
                self._set(key, value)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _find_originals(self) -> None:
        """The value of every knob the arm names, checked against what the kernel offers; nothing is written."""
        originals = {}
        if GLOBAL in self.settings:
            originals[GLOBAL] = read_mode(self.knob)
            if originals[GLOBAL] is None:
                raise ThpArmError(f"{self.knob} cannot be read: this kernel has no THP to A/B")
        if any(key != GLOBAL for key in self.settings):
            sizes = read_sizes(self.tree)
            errors = parse_arm(self.mode, self.where, sizes)[1]
            if errors:
                raise ThpArmError("; ".join(errors) + "; THP was not changed")
            originals.update({key: sizes[key]["current"] for key in self.settings if key != GLOBAL})
        unread = [self.path(key) for key, value in originals.items() if value is None]
        if unread:
            raise ThpArmError(f"{', '.join(unread)} cannot be read; THP was not changed")
        self.originals, self.original = originals, arm_text(originals)

    def __exit__(self, *exc) -> None:
        for sig in self._old:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the restore short
        errors = []
        try:
            for key, value in reversed(self.originals.items()):
                try:
                    self._set(key, value)
                except ThpArmError as err:
                    errors.append(str(err))
            self.restored = {"mode": self.original, "ok": not errors}
            if errors:
                self.restored["error"] = "; ".join(errors)
        finally:
            if self.restored and self.restored.get("ok"):
                self._remove_marker()  # else the guard, seeing the marker still ours, tries again
            for sig, old in self._old.items():
                signal.signal(sig, old)

    @staticmethod
    def _on_signal(signum, frame):
        raise Interrupted(signum)

    def _set(self, key: str, value: str) -> None:
        path = self.path(key)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(value)
        except OSError as err:
            raise ThpArmError(f"{path}: the kernel refused '{value}': {err.strerror or err}") from err
        if read_mode(path) != value:
            raise ThpArmError(f"{path}: wrote '{value}', read back '{read_mode(path)}'")

    def _write_marker(self) -> None:
        os.makedirs(os.path.dirname(self.marker), mode=0o755, exist_ok=True)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        held = {"pid": os.getpid(), "pid_start": _start_time(os.getpid()), "probe": self.probe, "mode": self.mode,
                "original": self.original, "settings": self.settings, "originals": self.originals,
                "knobs": {self.path(key): value for key, value in self.originals.items()}, "since": since}
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
