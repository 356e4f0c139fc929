"""Processes on Linux, read from /proc: a process group and its descendants, whether a pid is still the same
process, memory (PSS), which libraries a process has mapped. Used to stop a server completely and prove it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
from pathlib import Path

from probes.core.tree import parse_meminfo

_PR_SET_PDEATHSIG = 1


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a live pid from /proc/PID/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is pgid."""
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[2] == pgid and st[0] != "Z":
            out.append(pid)
    return sorted(out)


def descendants(root: int) -> list[int]:
    """root's live descendants (children, grandchildren, ...), found through /proc ppid links."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[0] != "Z":
            children.setdefault(st[1], []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return sorted(out)


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def smaps_rollup_bytes(pids: list[int], key: str) -> int | None:
    """One field of /proc/PID/smaps_rollup (Pss, AnonHugePages, ...) summed over pids, in bytes; None when
    no process had it."""
    total, seen = 0, False
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        kib = parse_meminfo(text).get(key)
        if kib is not None:
            total += kib * 1024
            seen = True
    return total if seen else None


def pss_bytes(pids: list[int]) -> int | None:
    """Proportional set size summed over pids (shared pages counted once overall); None when none can be read."""
    return smaps_rollup_bytes(pids, "Pss")


def preloaded_in(pids: list[int], libraries: list[str]) -> dict[str, dict[str, bool]]:
    """For each library: is it mapped in each process (/proc/PID/maps)? Proves LD_PRELOAD took effect."""
    maps: dict[int, list[str]] = {}
    for pid in pids:
        try:
            maps[pid] = [line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                         if line.count(" ") >= 5]
        except OSError:
            continue
    out: dict[str, dict[str, bool]] = {}
    for lib in libraries:
        if "/" in lib:  # a path: match it or what it links to
            wanted = {lib, os.path.realpath(lib)}
            out[lib] = {str(pid): any(path.strip() in wanted for path in paths) for pid, paths in maps.items()}
        else:  # a bare soname, resolved by the loader
            out[lib] = {
                str(pid): any(path.strip().endswith("/" + lib) for path in paths) for pid, paths in maps.items()
            }
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def alive(pid: int, start_time: int | None = None) -> bool:
    """Running (not a zombie), and when start_time is given the same process, not a reused pid."""
    st = proc_stat(pid)
    return st is not None and st[0] != "Z" and (start_time is None or st[3] == start_time)
