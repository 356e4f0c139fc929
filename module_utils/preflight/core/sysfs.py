"""Kernel tunables as sysfs prints them: 'always [madvise] never' names the choices and marks the current one."""

from __future__ import annotations


def parse_choices(text: str | None) -> tuple[str | None, list[str]]:
    """'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never']).

    A plain value file ('1', '4096 8192') is its value with no choices; a list of words with none marked
    ('always madvise never') has choices but no current value. None (file absent) -> (None, []).
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
    if selected is None and not any(word[:1].isalpha() for word in words):
        return " ".join(words), []
    return selected, choices


def selected(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'; a plain value is itself, stripped."""
    return parse_choices(text)[0]


def read_choice(path: str) -> tuple[str, list[str]]:
    """The current value and the choices of one tunable file; OSError when it cannot be read."""
    with open(path, encoding="ascii", errors="replace") as handle:
        return parse_choices(handle.read())


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
