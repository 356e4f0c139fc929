"""Kernel tunables as sysfs prints them: 'always [madvise] never' names the choices and marks the current one."""

from __future__ import annotations

import re


def parse_choices(text: str | None) -> tuple[str | None, list[str]]:
    """A choice file as the kernel prints it: 'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never']).

    Words with none marked ('always madvise never') are choices with no current value; None (file absent) ->
    (None, []). A file that holds a plain value ('1') is parse_tunable's.
    """
    if text is None:
        return None, []
    words = text.split()
    selected = None
    choices = []
    for word in words:
        if word.startswith("[") and word.endswith("]"):
            word = word[1:-1]
            selected = word
        choices.append(word)
    return selected, choices


def selected(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'."""
    return parse_choices(text)[0]


def holds_pattern(value: str) -> str:
    """A regular expression (multiline) that matches a tunable's text exactly when it holds ``value``: the marked
    word of a choice file ('always [madvise] never') or the whole of a plain one ('1')."""
    return rf"\[{re.escape(value)}\]|^{re.escape(value)}$"


def parse_tunable(text: str | None) -> tuple[str | None, list[str]]:
    """A tunable as a writer sees it: the marked word and the choices, or else the whole file as one value.

    'always [madvise] never' -> ('madvise', [...]); '1' -> ('1', []); 'performance' -> ('performance', []).
    """
    current, choices = parse_choices(text)
    if current is None and text is not None:
        return " ".join(text.split()), []
    return current, choices


def read_tunable(path: str) -> tuple[str, list[str]]:
    """parse_tunable of one file; OSError when it cannot be read."""
    with open(path, encoding="ascii", errors="replace") as handle:
        return parse_tunable(handle.read())
