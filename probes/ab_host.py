"""What the A/B does to the host and reads from it: THP (an arm: `enabled` and/or per-size knobs) set per start
and always put back, the page cache dropped or primed, the allocator each arm preloads and the check that the
server's processes map it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from probes.ab_plan import AbError
from probes.core import thp_arm
from probes.core.catalog import THP_DIR
from probes.core.sysfs import selected
from probes.core.thp_arm import GLOBAL
from probes.core.thp_sizes import read_sizes
from probes.core.tree import Tree, parse_meminfo
from probes.generate import ALLOCATOR_LIBRARIES, find_allocator
from probes.procgroup import preloaded_in, smaps_rollup_bytes

THP_ENABLED = Path(THP_DIR) / "enabled"
THP_DEFRAG = Path(THP_DIR) / "defrag"
PRIME_BLOCK_BYTES = 16 << 20


class ThpSwitch:
    """Sets THP to an arm before each start and puts back every knob an arm touched, as it found it; restore()
    is safe to call twice. An arm is core/thp_arm.py's: a global mode and/or per-size settings
    ('never+64kB=always'); a knob one arm sets and the next does not is put back to its original value for
    that next start, so each start runs the host's own THP changed by its arm only."""

    def __init__(self, path: Path | None = None, arms: list[str] = ()):
        self.path = path or THP_ENABLED
        self.arms: dict[str, dict] = {}  # arm -> its settings by knob (GLOBAL or a size)
        self.keys: list[str] = []  # every knob some arm sets, global first
        self.originals: dict[str, str | None] = {}
        self.last_written: dict[str, str] = {}
        for arm in arms:
            self.learn(arm)

    @property
    def original(self) -> str | None:
        """The values found, written as an arm ('madvise', 'madvise+64kB=never'); None before remember()."""
        if not self.originals or None in self.originals.values():
            return None
        return thp_arm.arm_text(self.originals)

    def learn(self, arm: str) -> dict:
        settings = thp_arm.parse_arm(arm, "--arms")[0] or {thp_arm.GLOBAL: arm}
        self.arms.setdefault(arm, settings)
        self.keys += [key for key in settings if key not in self.keys]
        return settings

    def knob(self, key: str = GLOBAL) -> Path:
        return self.path if key == GLOBAL else self.path.parent / f"hugepages-{key}" / "enabled"

    def read(self, key: str = GLOBAL) -> str | None:
        try:
            return selected(self.knob(key).read_text())
        except OSError:
            return None

    def sizes(self) -> dict:
        """The per-size knobs beside self.path, as core/thp_sizes.read_sizes gives them."""
        root = str(self.path)[: -len(thp_arm.KNOB)] if str(self.path).endswith(thp_arm.KNOB) else None
        return read_sizes(Tree(root or "/")) if root is not None else {}

    def problem(self) -> str | None:
        """None when the setting can be changed here, else why not."""
        if not self.path.exists():
            return f"{self.path} does not exist (kernel without transparent hugepages)"
        if not os.access(self.path, os.W_OK):
            return f"{self.path} is not writable by uid {os.getuid()}: the thp A/B needs root"
        return None

    def remember(self) -> str | None:
        for key in self.keys or [GLOBAL]:
            if self.originals.get(key) is None:
                self.originals[key] = self.read(key)
        return self.original

    def set(self, arm: str) -> str:
        """Every knob an arm sets, to this arm's value or back to the original; the arm as read back."""
        settings = self.learn(arm)
        self.remember()
        for key in self.keys:
            value = settings.get(key, self.originals.get(key))
            if value is None:
                continue
            self.last_written[key] = value
            try:
                self.knob(key).write_text(value + "\n")
            except OSError as exc:
                raise AbError(f"could not write {value!r} to {self.knob(key)}: {exc.strerror}") from exc
            now = self.read(key)
            if now != value:
                raise AbError(f"wrote {value!r} to {self.knob(key)} but the kernel reports {now!r}")
        return thp_arm.arm_text({key: self.read(key) for key in settings})

    def written(self) -> dict:
        """What the last set() left: THP enabled, and each size an arm sets (for a start's record)."""
        out = {"thp_enabled_written": self.last_written.get(GLOBAL)} if GLOBAL in self.keys else {}
        sizes = {key: value for key, value in self.last_written.items() if key != GLOBAL}
        return {**out, "thp_sizes_written": sizes} if sizes else out

    def drift(self, arm: str) -> str | None:
        """None when every knob still holds what set(arm) wrote; else what changed (someone else wrote it)."""
        changed = [f"{self.knob(key)} from {value!r} to {self.read(key)!r}" for key, value in self.last_written.items()
                   if key in self.arms.get(arm, {}) and self.read(key) != value]
        return "; ".join(changed) or None

    def restore(self) -> dict:
        """Put the originals back, always; returns what happened, for the results. `found` is what was there
        before the restore: a value that is neither the original nor the A/B's last write was written by someone
        else. Values are written as arms ('madvise', 'madvise+64kB=never')."""
        keys = [key for key in self.keys or [GLOBAL] if key in self.originals] or [GLOBAL]
        found = {key: self.read(key) for key in keys}
        errors = []
        for key in keys:
            original = self.originals.get(key)
            if original is not None and found[key] != original:
                try:
                    self.knob(key).write_text(original + "\n")
                except OSError as exc:
                    errors.append(f"could not write {original!r} back to {self.knob(key)}: {exc.strerror}")
        final = {key: self.read(key) for key in keys}

        def text(values: dict) -> str | None:
            return None if None in values.values() else thp_arm.arm_text(values)

        return {"path": ", ".join(str(self.knob(key)) for key in keys), "original": self.original,
                "found": text(found),
                "written_by_someone_else": any(found[k] not in (self.originals.get(k), self.last_written.get(k))
                                               for k in keys),
                "final": text(final), "restored": None if self.original is None else final == self.originals,
                "error": "; ".join(errors) or None}

    def by_hand(self) -> str:
        """The commands that put every original back."""
        return "; ".join(f"echo {value} > {self.knob(key)}" for key, value in self.originals.items() if value)


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
