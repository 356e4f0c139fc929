"""/etc/default/grub read as the shell reads it (the reading half of grub.py, which documents what is accepted
and what is refused): one shell word, the file's lines, its assignments and their values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CMDLINE_VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET_WORD = re.compile(r"(?<![\w${])(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)(?!\w)")
_ASSIGN_START = re.compile(rf"^([ \t]*)(export[ \t]+)?({NAME})=")
_EXPORT_ONLY = re.compile(rf"^[ \t]*export(?:[ \t]+{NAME})+[ \t]*(?:#.*)?$")
_OPENERS = {"if", "case", "for", "while", "until", "select", "{", "(", "function"}
_CLOSERS = {"fi", "esac", "done", "}", ")"}
_OPERATORS = set(";&|<>()")
# Characters of a token Preflight writes: literal in every quoting context.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_=:,./+-]+")


class GrubError(ValueError):
    """A GRUB defaults file Preflight will not edit (or read) because it cannot be sure what the shell sees."""


@dataclass
class Piece:
    """One character of a value's content, or one ``$NAME`` reference, with where it is on the line."""

    text: str
    start: int
    end: int
    ctx: str  # plain, single, double
    ref: str | None = None


@dataclass
class Assignment:
    lineno: int
    line: str
    name: str
    export: bool
    word_start: int
    word_end: int
    pieces: list[Piece]
    offset: int = 0  # where the line starts in the file text

    def fields(self) -> list[list[Piece]]:
        """The value's whitespace-separated words (a kernel option each), as pieces."""
        words, current = [], []
        for piece in self.pieces:
            if piece.ref is None and piece.text in " \t\n":
                if current:
                    words.append(current)
                current = []
            else:
                current.append(piece)
        if current:
            words.append(current)
        return words


@dataclass
class GrubFile:
    path: str
    text: str
    assignments: list[Assignment] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # name -> line of an assignment that cannot be read


def _fail(path: str, lineno: int, why: str) -> GrubError:
    return GrubError(f"{path} line {lineno}: {why}; Preflight does not edit a line it cannot read with certainty "
                     "(nothing was written): rewrite it as NAME=\"words\" or make the change by hand")


# --- Reading one shell word ---------------------------------------------------------------------------------
def _reference(line: str, i: int, ctx: str, fail) -> tuple[Piece | None, int]:
    """The ``$`` at line[i]: a Piece for $NAME/${NAME}, None for a literal ``$``; refuses every other form."""
    rest = line[i + 1:]
    if rest.startswith("(("):
        raise fail("arithmetic expansion $((...))")
    if rest.startswith("("):
        raise fail("command substitution $(...)")
    if rest.startswith("{"):
        match = re.match(rf"\{{({NAME})\}}", rest)
        if not match:
            raise fail("parameter expansion ${...} with an operator (only $NAME and ${NAME} are read)")
        end = i + 1 + match.end()
        return Piece(line[i:end], i, end, ctx, match.group(1)), end
    match = re.match(NAME, rest)
    if match:
        end = i + 1 + match.end()
        return Piece(line[i:end], i, end, ctx, match.group(0)), end
    if rest[:1] and (rest[0].isdigit() or rest[0] in "@*#?$!-"):
        raise fail(f"special parameter ${rest[0]}")
    if rest[:1] in ("'", '"') and ctx == "plain":
        raise fail(f"bash-only quoting ${rest[0]}...{rest[0]} (dash reads it differently)")
    return None, i + 1


def _double_quoted(line: str, i: int, out: list[Piece], fail) -> int:
    """Content of a double-quoted segment starting after its opening quote; returns the index after it."""
    while i < len(line):
        ch = line[i]
        if ch == '"':
            return i + 1
        if ch == "`":
            raise fail("command substitution with backticks")
        if ch == "\\":
            if i + 1 == len(line):
                raise fail("a backslash line continuation")
            if line[i + 1] in '$`"\\':
                out.append(Piece(line[i + 1], i, i + 2, "double"))
                i += 2
                continue
        if ch == "$":
            piece, after = _reference(line, i, "double", fail)
            if piece is not None:
                out.append(piece)
                i = after
                continue
        out.append(Piece(ch, i, i + 1, "double"))
        i += 1
    raise fail("a double quote left open at the end of the line (a value over several lines)")


def read_word(line: str, i: int, fail, exported: bool = False) -> tuple[list[Piece], int]:
    """The shell word of an assignment value starting at line[i]: its pieces and the index after it."""
    out: list[Piece] = []
    while i < len(line):
        ch = line[i]
        if ch in " \t" or ch in _OPERATORS:
            break
        if ch == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise fail("a single quote left open at the end of the line (a value over several lines)")
            out.extend(Piece(c, i + 1 + k, i + 2 + k, "single") for k, c in enumerate(line[i + 1:close]))
            i = close + 1
        elif ch == '"':
            i = _double_quoted(line, i + 1, out, fail)
        elif ch == "\\":
            if i + 1 == len(line):
                raise fail("a backslash line continuation")
            out.append(Piece(line[i + 1], i, i + 2, "plain"))
            i += 2
        elif ch == "`":
            raise fail("command substitution with backticks")
        elif ch == "$":
            piece, i = _reference(line, i, "plain", fail)
            if piece is None:
                out.append(Piece("$", i - 1, i, "plain"))
            elif exported:
                raise fail("an unquoted $NAME after export (old dash splits it into several words)")
            else:
                out.append(piece)
        else:
            if ch == "~" and (not out or (out[-1].text == ":" and out[-1].ctx == "plain")):
                raise fail("a leading ~ (tilde expansion)")
            if exported and ch in "*?[":
                raise fail("an unquoted glob character after export")
            out.append(Piece(ch, i, i + 1, "plain"))
            i += 1
    return out, i


# --- Reading the file -----------------------------------------------------------------------------------------
def _scan_line(line: str, stack: list[str]) -> tuple[str, bool]:
    """One physical line: its unquoted code (quoted text, backticks, $(...) and comments blanked) and whether it
    ends in a backslash continuation. ``stack`` carries the open quotes and substitutions to the next line."""
    code, i, continued = [], 0, False
    while i < len(line):
        ch, top, pair = line[i], stack[-1], line[i:i + 2]
        if top == "single":
            if ch == "'":
                stack.pop()
        elif ch == "\\" and top != "plain":
            i += 1
        elif top in ("double", "backtick"):
            if ch == ('"' if top == "double" else "`"):
                stack.pop()
            elif pair == "$(" or ch == "`":
                stack.append("subst" if pair == "$(" else "backtick")
                i += pair == "$("
        elif top == "subst":
            if ch == ")":
                stack.pop()
            elif ch in "('\"`":
                stack.append({"(": "subst", "'": "single", '"': "double", "`": "backtick"}[ch])
        elif ch == "#" and (i == 0 or line[i - 1] in " \t;&|("):
            break
        elif ch in "'\"`" or pair == "$(":
            stack.append({"'": "single", '"': "double", "`": "backtick"}.get(ch, "subst"))
            i += pair == "$("
            top = "quote"
        elif ch == "\\":
            continued = i + 1 == len(line)
            i += 1
        code.append(ch if top == "plain" else " ")
        i += 1
    return "".join(code), continued


def _scan(text: str) -> list[tuple[int, str, bool, str]]:
    """Per physical line: (lineno, line, starts inside a multi-line quote, substitution or continuation, unquoted
    code). A last row (-line, "", True, what) says a quote or substitution opened on that line is never closed."""
    rows, stack, continued, opened = [], ["plain"], False, 0
    for number, line in enumerate(text.split("\n"), 1):
        inside = len(stack) > 1 or continued
        code, continued = _scan_line(line, stack)
        opened = number if not inside and len(stack) > 1 else opened
        rows.append((number, line, inside, code))
    if len(stack) > 1:
        rows.append((-opened, "", True, stack[-1]))
    return rows


def _first_words(code: str) -> list[str]:
    """The first word of each command on a line of code."""
    words = []
    for command in re.split(r"[;&|]+|\bthen\b|\bdo\b|\belse\b", code):
        parts = command.split()
        if parts:
            words.append(parts[0])
    return words


def _depth_change(code: str, stack: list[str]) -> None:
    """Follow if/case/loops/functions/subshells: ``stack`` is non-empty while inside one."""
    for word in _first_words(code):
        if word in _OPENERS - {"("} or re.fullmatch(rf"{NAME}\(\)", word):
            stack.append(word)
        elif word in _CLOSERS - {")"} and stack:
            stack.pop()
    if stack and stack[-1] == "case":
        return
    for ch in re.sub(rf"{NAME}\(\)", "", code):
        if ch == "(":
            stack.append("(")
        elif ch == ")" and stack and stack[-1] == "(":
            stack.pop()


def _assignment(path: str, number: int, line: str, offset: int) -> Assignment | None:
    """The assignment on a line of its own; None when the line does not have that shape."""
    match = _ASSIGN_START.match(line)
    if not match:
        return None

    def fail(why: str) -> GrubError:
        return _fail(path, number, why)

    pieces, end = read_word(line, match.end(), fail, exported=bool(match.group(2)))
    rest = line[end:].lstrip(" \t")
    if rest and not rest.startswith("#"):
        raise fail(f"more than the assignment on the line ({rest.split()[0]!r} follows the value)")
    return Assignment(number, line, match.group(3), bool(match.group(2)), match.end(), end, pieces, offset)


def parse(text: str, path: str) -> GrubFile:
    """Every assignment of the file that the shell would run for certain; GrubError for a line that sets
    GRUB_CMDLINE_LINUX or GRUB_CMDLINE_LINUX_DEFAULT in a way that cannot be read with certainty."""
    parsed = GrubFile(path, text)
    stack: list[str] = []
    offset = 0
    for number, line, inside, code in _scan(text):
        if number < 0:
            what = {"single": "single quote", "double": "double quote", "backtick": "backtick", "subst": "$("}[code]
            raise _fail(path, -number, f"a {what} is never closed (the file is not valid shell)")
        targets = _TARGET_WORD.findall(code) if not inside else _TARGET_WORD.findall(line)
        if not inside and "<<" in code:
            raise _fail(path, number, "a here-document (its body cannot be told from commands)")
        simple = not inside and not stack
        if targets and not (simple and _EXPORT_ONLY.match(line)):
            if not simple:
                where = "inside a quoted value or continuation"
                if not inside:
                    where = f"inside {stack[-1]} ... (an if, case, loop or function: it may not run)"
                raise _fail(path, number, f"{targets[0]} is assigned {where}")
            found = _assignment(path, number, line, offset)
            if found is None or found.name not in CMDLINE_VARS or len(targets) > 1:
                raise _fail(path, number, f"{targets[0]} is changed by a command other than NAME=value")
            parsed.assignments.append(found)
        elif simple and _ASSIGN_START.match(line):
            try:
                found = _assignment(path, number, line, offset)
                parsed.assignments.append(found)
            except GrubError:
                parsed.unknown.setdefault(_ASSIGN_START.match(line).group(3), number)
        elif stack and _ASSIGN_START.match(code):
            parsed.unknown.setdefault(_ASSIGN_START.match(code).group(3), number)
        if not inside:
            _depth_change(code, stack)
        offset += len(line) + 1
    return parsed


def evaluate(parsed: GrubFile, env: dict[str, str] | None = None, upto: int | None = None) -> dict[str, str]:
    """The variables after the file has run (or before assignment index ``upto``), starting from ``env``."""
    values = dict(env or {})
    for assignment in parsed.assignments[:upto]:
        try:
            values[assignment.name] = value_of(assignment, values, parsed)
        except GrubError:
            if assignment.name in CMDLINE_VARS:
                raise
            values.pop(assignment.name, None)
            parsed.unknown.setdefault(assignment.name, assignment.lineno)
    return values


def value_of(assignment: Assignment, values: dict[str, str], parsed: GrubFile) -> str:
    out = []
    for piece in assignment.pieces:
        if piece.ref is None:
            out.append(piece.text)
            continue
        if piece.ref in parsed.unknown and piece.ref not in values:
            raise _fail(parsed.path, assignment.lineno,
                        f"${piece.ref} is set on line {parsed.unknown[piece.ref]}, which cannot be read")
        out.append(values.get(piece.ref, ""))
    return "".join(out)


def cmdline_values(texts: list[tuple[str, str]]) -> dict[str, str | None]:
    """GRUB_CMDLINE_LINUX and _DEFAULT after sourcing each (path, text) in order, as grub-mkconfig does
    (/etc/default/grub, then /etc/default/grub.d/*.cfg); None for one never assigned. GrubError as parse."""
    values: dict[str, str] = {}
    for path, text in texts:
        values = evaluate(parse(text, path), values)
    return {name: values.get(name) for name in CMDLINE_VARS}
