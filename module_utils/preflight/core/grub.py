"""/etc/default/grub read as the shell reads it, and the one editor of its kernel command line.

grub-mkconfig sources the defaults file with /bin/sh (dash on Debian and Ubuntu, bash on EL), so the file is
read here as shell: single, double and unquoted text, concatenated segments, backslash escapes, trailing
comments, ``export``, and several assignments of one variable (the last wins; ``VAR="$VAR x"`` adds to the one
before). Only a subset that dash and bash read alike is accepted on a line that assigns GRUB_CMDLINE_LINUX or
GRUB_CMDLINE_LINUX_DEFAULT; anything else on such a line is refused (GrubError: file, line, why), never guessed:

- kept verbatim: ``$NAME`` and ``${NAME}`` (a plain name). Evaluated from the assignments before it (those of
  the file, and for /etc/default/grub.d/*.cfg those of the files sourced before); a name never assigned is
  empty, as grub-mkconfig sees it. A name assigned only on a line that cannot be read is refused.
- refused: ``$(...)``, backticks, ``$((...))``, ``${NAME:-x}`` and every other ``${...}`` operator, ``$1``,
  ``$@`` and the other special parameters, bash-only ``$'...'``/``$"..."``, a leading ``~``, a quote left open
  at the end of the line, a backslash line continuation, a second command on the line (``;``, ``&&``, ...), an
  assignment inside if/case/a loop/a function, ``+=``, ``unset`` or ``read`` of the variable; with ``export``,
  an unquoted ``$NAME`` or glob (old dash splits and globs export's arguments, bash does not).

The editor changes only Preflight's own options (a group of adjacent words, e.g. ``transparent_hugepage=X`` or
``hugepagesz=1G hugepages=N``): it replaces the group where it stands or appends it, touching only those bytes
(and the value's quoting, made canonical ``"..."``, when the value ends unquoted). Its record names exactly what
was added and what was replaced; `revert` removes/restores exactly that in the file as it is now.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from .grub_shell import (  # noqa: F401 - GrubError, parse and cmdline_values are this module's API too
    _SAFE_TOKEN,
    CMDLINE_VARS,
    Assignment,
    GrubError,
    GrubFile,
    Piece,
    _assignment,
    _fail,
    cmdline_values,
    evaluate,
    parse,
)

# --- Preflight's options in a value ---------------------------------------------------------------------------
# A selector looks at the value's words (None for a word that is not plain literal text, e.g. one holding a
# $NAME or inside kernel double quotes) and says how many words from index i are a group Preflight owns.
Selector = Callable[[list, int], int]


def option_key(word: str) -> str:
    """The name of a kernel option, as the kernel compares names (dashes and underscores are equal)."""
    return word.split("=", 1)[0].replace("-", "_")


def option_selector(key: str) -> Selector:
    """One word ``key=...``: e.g. transparent_hugepage."""
    return lambda words, i: 1 if words[i] is not None and option_key(words[i]) == key else 0


def literal_words(assignment: Assignment) -> list[str | None]:
    words, kernel_quotes = [], 0
    for pieces in assignment.fields():
        plain = all(p.ref is None for p in pieces)
        text = "".join(p.text for p in pieces) if plain else None
        words.append(text if text is not None and '"' not in text and kernel_quotes % 2 == 0 else None)
        kernel_quotes += sum(p.text.count('"') for p in pieces if p.ref is None)
    return words


def _chain(parsed: GrubFile, variable: str) -> list[int]:
    """Indexes of the assignments whose words end up in the variable: the last one, and the one before it for
    as long as each says $VAR of itself (``VAR="$VAR x"``)."""
    own = [k for k, a in enumerate(parsed.assignments) if a.name == variable]
    chain = []
    while own:
        chain.insert(0, own.pop())
        if not any(p.ref == variable for p in parsed.assignments[chain[0]].pieces):
            break
    return chain


def _groups(parsed: GrubFile, variable: str, selector: Selector) -> list[tuple[int, int, int, list[str]]]:
    """Preflight's groups in the words that make the variable: (assignment index, word index, length, words).
    GrubError when a $NAME brings in words of such a group (they cannot be changed on this line)."""
    found = []
    for index in _chain(parsed, variable):
        assignment = parsed.assignments[index]
        for piece in assignment.pieces:
            if piece.ref is None or piece.ref == variable:
                continue
            before = evaluate(parsed, upto=index)
            if piece.ref in parsed.unknown and piece.ref not in before:
                raise _fail(parsed.path, assignment.lineno,
                            f"${piece.ref} is set on line {parsed.unknown[piece.ref]}, which cannot be read")
            value = before.get(piece.ref, "")
            brought = value.split()
            if any(selector(brought, k) for k in range(len(brought))):
                raise _fail(parsed.path, assignment.lineno,
                            f"{variable} takes Preflight's option from ${piece.ref} ({value.strip()!r})")
        words = literal_words(assignment)
        k = 0
        while k < len(words):
            length = selector(words, k)
            if length:
                found.append((index, k, length, words[k:k + length]))
            k += length or 1
    return found


def groups(text: str, path: str, variable: str, selector: Selector) -> list[list[str]]:
    """Each group of Preflight's words the variable holds, in order (the last is the one after the edit)."""
    return [words for _, _, _, words in _groups(parse(text, path), variable, selector)]


# --- Editing one line ---------------------------------------------------------------------------------------
def _splice(line: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        line = line[:start] + new + line[end:]
    return line


def _replace_words(assignment: Assignment, first: int, old_count: int, tokens: list[str]) -> str:
    """The line with ``old_count`` words from ``first`` replaced one by one, each where it stands."""
    fields = assignment.fields()[first:first + old_count]
    edits = []
    for pieces, token in zip(fields, tokens, strict=False):
        edits.append((pieces[0].start, pieces[0].end, token))
        edits.extend((p.start, p.end, "") for p in pieces[1:])
    return _splice(assignment.line, edits)


def _remove_words(assignment: Assignment, first: int, count: int) -> str:
    """The line without ``count`` words from ``first`` and one separating blank (the one before them)."""
    pieces = assignment.pieces
    fields = assignment.fields()
    begin, end = pieces.index(fields[first][0]), pieces.index(fields[first + count - 1][-1])
    if begin > 0:
        begin -= 1
    elif end + 1 < len(pieces):
        end += 1
    return _splice(assignment.line, [(p.start, p.end, "") for p in pieces[begin:end + 1]])


def _canonical(pieces: list[Piece]) -> str:
    out = []
    for k, piece in enumerate(pieces):
        if piece.ref is not None:
            after = pieces[k + 1].text[:1] if k + 1 < len(pieces) and pieces[k + 1].ref is None else ""
            glued = piece.text[1:2] != "{" and re.match(r"\w", after)
            out.append("${" + piece.ref + "}" if glued else piece.text)
        else:
            out.append("\\" + piece.text if piece.text in '\\"$`' else piece.text)
    return '"' + "".join(out) + '"'


def requoted(line: str, path: str = "", lineno: int = 0) -> str:
    """The assignment line with its value in canonical double quotes."""
    assignment = _assignment(path, lineno, line, 0)
    return line[:assignment.word_start] + _canonical(assignment.pieces) + line[assignment.word_end:]


def _append_words(assignment: Assignment, tokens: list[str]) -> tuple[str, bool]:
    """The line with ``tokens`` after its last word, and whether the value had to be requoted for that (only
    when it ends unquoted: a blank there would end the shell word)."""
    fields, pieces, addition = assignment.fields(), assignment.pieces, " ".join(tokens)
    raw = assignment.line[assignment.word_start:assignment.word_end]
    if fields and fields[-1][-1].ctx != "plain":
        last = fields[-1][-1]
        return _splice(assignment.line, [(last.end, last.end, " " + addition)]), False
    if not pieces and raw in ('""', "''"):
        return _splice(assignment.line, [(assignment.word_start + 1, assignment.word_start + 1, addition)]), False
    extra = [Piece(c, 0, 0, "plain") for c in ((" " if fields else "") + addition)]
    if fields:
        cut = pieces.index(fields[-1][-1]) + 1
        new_pieces = pieces[:cut] + extra + pieces[cut:]
    else:
        new_pieces = pieces + extra
    return _splice(assignment.line, [(assignment.word_start, assignment.word_end, _canonical(new_pieces))]), True


def _put_line(text: str, assignment: Assignment, new_line: str | None) -> str:
    """The file with the assignment's line replaced (or removed with its newline when ``new_line`` is None)."""
    end = assignment.offset + len(assignment.line)
    if new_line is None:
        return text[:assignment.offset] + text[end + 1:]
    return text[:assignment.offset] + new_line + text[end:]


def file_mode(tree, path: str) -> str:
    """The permission bits of the defaults file, as the edit keeps them ('0644' when it cannot be read)."""
    try:
        return f"{os.stat(tree.real(path)).st_mode & 0o7777:04o}"
    except OSError:
        return "0644"


# --- The editor: apply and revert -------------------------------------------------------------------------------
def apply(text: str, path: str, variable: str, selector: Selector, tokens: list[str], unique: bool = False) -> dict:
    """Make ``variable`` end with Preflight's group ``tokens``: the group it already holds is replaced where it
    stands (the last one: the kernel reads the last; ``unique``: a second group is refused, the kernel ignores
    it), else the group goes after the last word. Returns text, changed and record (None when unchanged): file,
    variable, line, added, replaced, requoted_from (the line before, when its value had to be requoted) and
    appended_line (when the file had no assignment and Preflight wrote the whole line)."""
    if not tokens or not all(_SAFE_TOKEN.fullmatch(t) for t in tokens):
        raise GrubError(f"{path}: Preflight writes only plain kernel options, not {tokens!r}")
    parsed = parse(text, path)
    found = _groups(parsed, variable, selector)
    record = {"file": path, "variable": variable, "added": list(tokens), "replaced": [], "requoted_from": None,
              "appended_line": None}
    if unique and len(found) > 1:
        lines = ", ".join(str(parsed.assignments[index].lineno) for index, *_ in found)
        raise GrubError(f"{path}: {variable} has {len(found)} groups {' / '.join(' '.join(w) for *_, w in found)} "
                        f"(lines {lines}); the kernel keeps only the first: remove all but one by hand "
                        "(nothing was written)")
    if found:
        index, first, count, old = found[-1]
        if old == list(tokens):
            return {"text": text, "changed": False, "record": None}
        assignment = parsed.assignments[index]
        if count != len(tokens):
            raise _fail(path, assignment.lineno, f"{' '.join(old)} is not the group {' '.join(tokens)} would replace")
        new_line = _replace_words(assignment, first, count, tokens)
        record.update(line=assignment.lineno, replaced=old)
    elif _chain(parsed, variable):
        assignment = parsed.assignments[_chain(parsed, variable)[-1]]
        new_line, requote = _append_words(assignment, tokens)
        record.update(line=assignment.lineno, requoted_from=assignment.line if requote else None)
    else:
        line = f'{variable}="{" ".join(tokens)}"'
        ending = "" if not text or text.endswith("\n") else "\n"
        record.update(line=len((text + ending).split("\n")), appended_line=line, added_newline=bool(ending))
        return _checked(text, text + ending + line + "\n", path, variable, selector, tokens, record)
    return _checked(text, _put_line(text, assignment, new_line), path, variable, selector, tokens, record)


def _checked(before: str, after: str, path: str, variable: str, selector: Selector, tokens: list[str],
             record: dict) -> dict:
    """The edit, once the edited file reads back with ``tokens`` as the last group and every other word kept."""
    found = groups(after, path, variable, selector)
    old = (cmdline_values([(path, before)])[variable] or "").split()
    new = (cmdline_values([(path, after)])[variable] or "").split()
    mine = set(record["replaced"]) | set(tokens)
    if not found or found[-1] != list(tokens) or [w for w in old if w not in mine] != [w for w in new if w not in mine]:
        raise GrubError(f"{path}: the edit of {variable} did not read back as intended; nothing was written")
    return {"text": after, "changed": after != before, "record": record}


def merge(old: dict | None, new: dict | None) -> dict | None:
    """The record after a later run: what Preflight replaced first stays, what it holds now is the new group."""
    if not old or not new:
        return old or new
    return {**old, "added": new["added"]}


def revert(text: str, path: str, record: dict, selector: Selector | None = None) -> dict:
    """Take out exactly the group ``record`` says Preflight added and put back what it replaced, in the file as
    it is now (every other byte stays). GrubError, naming the file and the difference, when the file no longer
    holds what Preflight wrote. Returns text and changed."""
    added, variable = record["added"], record["variable"]
    keys = {option_key(word) for word in added}
    selector = selector or (lambda words, i: len(added) if words[i:i + len(added)] == added else 0)
    parsed = parse(text, path)
    exact = [g for g in _groups(parsed, variable, selector) if g[3] == added]
    if not exact:
        value = cmdline_values([(path, text)])[variable] or ""
        now = [w for w in value.split() if option_key(w) in keys]
        raise GrubError(
            f"{path}: {variable} no longer holds what Preflight wrote ({' '.join(added)}); it now has "
            f"{' '.join(now) if now else 'none of ' + ', '.join(sorted(keys))}: the record is kept, put the "
            "options back as they were or edit the file by hand and remove the record"
        )
    index, first, count, _ = exact[-1]
    assignment = parsed.assignments[index]
    if record.get("appended_line") and assignment.line == record["appended_line"]:
        reverted = _put_line(text, assignment, None)
        if record.get("added_newline") and len(reverted) == assignment.offset and reverted.endswith("\n"):
            reverted = reverted[:-1]
        return {"text": reverted, "changed": True}
    if record.get("replaced"):
        new_line = _replace_words(assignment, first, count, record["replaced"])
    else:
        new_line = _remove_words(assignment, first, count)
    original = record.get("requoted_from")
    if original and new_line == requoted(original, path, assignment.lineno):
        new_line = original
    return {"text": _put_line(text, assignment, new_line), "changed": True}


def record_from(original: str | None, text: str, path: str, variable: str, selector: Selector,
                replaced: list[str] | None = None) -> dict:
    """A record for an edit an older Preflight made without one: what it added is the one group of Preflight's
    the variable holds now; what it replaced is ``replaced``, or the last group of the file as it was
    (``original``). GrubError when the file holds no such group or several (the older edit cannot be told)."""
    now = groups(text, path, variable, selector)
    if len(now) != 1:
        raise GrubError(f"{path}: the rollback record was written by an older Preflight and {variable} holds "
                        f"{len(now)} groups of its options, so what it added cannot be told: restore the line by "
                        "hand and remove the record")
    if replaced is None and original is not None:
        before = groups(original, path, variable, selector)
        replaced = before[-1] if before else []
    return {"file": path, "variable": variable, "added": now[0], "replaced": replaced or [], "requoted_from": None,
            "appended_line": None}
