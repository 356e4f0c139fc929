"""What the A/B does to the host and reads from it: THP `enabled` set per start and always put back, the page
cache dropped or primed, the allocator each arm preloads and the check that the server's processes map it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from probes.ab_plan import AbError
from probes.core.catalog import THP_DIR
from probes.core.sysfs import selected
from probes.core.tree import Tree, parse_meminfo
from probes.generate import ALLOCATOR_LIBRARIES, find_allocator
from probes.procgroup import preloaded_in, smaps_rollup_bytes

THP_ENABLED = Path(THP_DIR) / "enabled"
THP_DEFRAG = Path(THP_DIR) / "defrag"
PRIME_BLOCK_BYTES = 16 << 20


class ThpSwitch:
    """Sets THP `enabled` per start and puts back the value it found; restore() is safe to call twice."""

    def __init__(self, path: Path | None = None):
        self.path = path or THP_ENABLED
        self.original: str | None = None
        self.last_written: str | None = None

    def read(self) -> str | None:
        try:
            return selected(self.path.read_text())
        except OSError:
            return None

    def problem(self) -> str | None:
        """None when the setting can be changed here, else why not."""
        if not self.path.exists():
            return f"{self.path} does not exist (kernel without transparent hugepages)"
        if not os.access(self.path, os.W_OK):
            return f"{self.path} is not writable by uid {os.getuid()}: the thp A/B needs root"
        return None

    def remember(self) -> str | None:
        if self.original is None:
            self.original = self.read()
        return self.original

    def set(self, value: str) -> str:
        self.remember()
        self.last_written = value
        try:
            self.path.write_text(value + "\n")
        except OSError as exc:
            raise AbError(f"could not write {value!r} to {self.path}: {exc.strerror}") from exc
        now = self.read()
        if now != value:
            raise AbError(f"wrote {value!r} to {self.path} but the kernel reports {now!r}")
        return now

    def restore(self) -> dict:
        """Put the original back, always; returns what happened, for the results. `found` is the value before
        the restore: one that is neither the original nor the A/B's last write was written by someone else."""
        found = self.read()
        out = {"path": str(self.path), "original": self.original, "found": found,
               "written_by_someone_else": found not in (self.original, self.last_written), "final": found,
               "restored": None, "error": None}
        if self.original is None:
            return out
        if found != self.original:
            try:
                self.path.write_text(self.original + "\n")
            except OSError as exc:
                out["error"] = f"could not write {self.original!r} back to {self.path}: {exc.strerror}"
        out["final"] = self.read()
        out["restored"] = out["final"] == self.original
        return out


def page_cache_bytes() -> int | None:
    """/proc/meminfo Cached, in bytes; None when it cannot be read."""
    kib = parse_meminfo(Tree().read("/proc/meminfo")).get("Cached")
    return None if kib is None else kib * 1024


def prime_files(directory: Path) -> dict:
    """Read every file under directory once, so the next start finds it in the page cache."""
    t, total = time.perf_counter(), 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(PRIME_BLOCK_BYTES):
                total += len(chunk)
    return {"primed_bytes": total, "prime_s": round(time.perf_counter() - t, 3)}


def anon_huge_pages_bytes(pids: list[int]) -> int | None:
    return smaps_rollup_bytes(pids, "AnonHugePages")


def interpreter_pids(pids: list[int], python: str) -> list[int]:
    """The pids running this Python: vLLM's API server, engine and workers. A short-lived helper they exec
    (a static `ldconfig` that Triton runs, a compiler) cannot map a preloaded library and is left out of the
    allocator check; all pids when none can be told apart."""
    want = os.path.realpath(python)
    mine = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/{pid}/exe") == want:
                mine.append(pid)
    return mine or pids


def allocator_env(arms: list[str], explicit: dict[str, str | None]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """arm -> the server environment that puts it in; and what could not be found (with where it looked)."""
    env, missing = {}, []
    for arm in arms:
        if arm == "glibc":
            env[arm] = {"LD_PRELOAD": ""}  # empty, not unset: an LD_PRELOAD inherited from the shell is dropped
            continue
        lib, tried = find_allocator(arm, explicit.get(arm))
        if lib is None:
            missing.append(f"{arm} is not on this host; tried {', '.join(tried)}. Install it (Debian: apt-get "
                           f"install lib{arm}2 / libgoogle-perftools4) or give --{arm}-path")
        else:
            env[arm] = {"LD_PRELOAD": str(lib)}
    return env, missing


def allocator_mapping_problem(arm: str, arm_env: dict[str, str], pids: list[int]) -> tuple[dict, str | None]:
    """(maps check, None when the server's processes run the arm's allocator; else what is wrong)."""
    if not pids:
        return {}, "no server process could be found to check"
    if arm == "glibc":  # the usual soname of each allocator, wherever it was loaded from
        check = preloaded_in(pids, [libs[0] for libs in ALLOCATOR_LIBRARIES.values()])
        mapped = {lib: [p for p, ok in by_pid.items() if ok] for lib, by_pid in check.items()}
        mapped = {lib: p for lib, p in mapped.items() if p}
        return check, (f"the glibc arm's server processes map {mapped}: something else preloads an allocator"
                       if mapped else None)
    lib = arm_env["LD_PRELOAD"]
    check = preloaded_in(pids, [lib])
    by_pid = check.get(lib, {})
    missing = [p for p, ok in by_pid.items() if not ok]
    if not by_pid or missing:
        return check, (f"{arm} was asked for with LD_PRELOAD={lib}, but server processes "
                       f"{missing or pids} do not map it: this start would measure glibc")
    return check, None
