"""Reading a node's files: every path under a root ("/" live, a recorded copy in tests), and the parsers of
what the kernel prints (sysfs choice lists, cpulists, sizes, meminfo). The one place node files are parsed."""

from __future__ import annotations

import fnmatch
import os
import re


class Tree:
    """A node's file tree under ``root``; every path given to it is the path as seen on the node.

    ``trace`` (used by the fixture recorder) is called as ``trace(kind, path)``: kind "file" for
    every file whose content mattered, "exists" for files only looked for, "dir" for directories listed.
    """

    def __init__(self, root: str = "/", trace=None):
        self.root = root
        self.trace = trace or (lambda kind, path: None)

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path: str, problems: list | None = None, record: bool = True) -> str | None:
        """The file's text, or None when it is absent or unreadable (why goes into ``problems``)."""
        try:
            with open(self.real(path), encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            if problems is not None:
                problems.append(f"{path}: not found")
            return None
        except OSError as exc:
            if problems is not None:
                problems.append(f"{path}: {exc.strerror or exc}")
            return None
        if record:
            self.trace("file", path)
        return text

    def keep(self, path: str) -> None:
        """Mark a file read with ``record=False`` as one whose content mattered after all."""
        self.trace("file", path)

    def found(self, path: str) -> None:
        """Mark a file whose existence, not content, is the fact."""
        self.trace("exists", path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(self.real(path))

    def listdir(self, path: str) -> list[str] | None:
        try:
            names = sorted(os.listdir(self.real(path)))
        except OSError:
            return None
        self.trace("dir", path)
        return names

    def glob(self, pattern: str) -> list[str]:
        """Node paths matching a shell pattern (wildcards matched one path part at a time), sorted."""
        parts = pattern.strip("/").split("/")
        found = ["/"]
        for part in parts:
            matched = []
            for base in found:
                if not any(ch in part for ch in "*?["):
                    candidate = os.path.join(base, part)
                    if os.path.lexists(self.real(candidate)):
                        matched.append(candidate)
                    continue
                names = self.listdir(base)
                matched.extend(os.path.join(base, name) for name in names or () if fnmatch.fnmatch(name, part))
            found = matched
        return sorted(found)

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.real(path))
        except OSError:
            return None

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.real(path))
        except OSError:
            return None
        return (st.st_dev, st.st_ino)


def _reason(problems: list[str]) -> str | None:
    return "; ".join(problems) if problems else None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_cpulist(text: str | None) -> list[int] | None:
    """Kernel cpulist '0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    if text is None:
        return None
    cpus: list[int] = []
    for chunk in text.strip().split(","):
        if not chunk:
            continue
        if "-" in chunk:
            low, high = chunk.split("-", 1)
            cpus.extend(range(int(low), int(high) + 1))
        else:
            cpus.append(int(chunk))
    return cpus


def parse_size_kb(text: str | None) -> int | None:
    """Kernel memparse: '1G' -> 1048576, '2M' -> 2048, '2048k' -> 2048, bare bytes -> kB."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([KkMmGgTt]?)[Bb]?", text.strip())
    if not match:
        return None
    number, suffix = int(match.group(1)), match.group(2).upper()
    factor = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}[suffix]
    return int(number * factor)


def parse_meminfo(text: str | None) -> dict[str, int]:
    """'/proc/meminfo' or a node's meminfo ('Node 0 MemTotal: ... kB') -> {key: number}."""
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        match = re.match(r"^(?:Node\s+\d+\s+)?([^:\s]+):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


