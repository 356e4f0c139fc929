"""One rule for secrets: a value whose name looks like a secret is never written where people or tools read.

Names are judged by their words (split at '_', '-', '.'): a name with a word TOKEN, SECRET, PASSWORD, PASSWD,
PASSPHRASE, CREDENTIAL(S), COOKIE, APIKEY or AUTHORIZATION, or ending in KEY after another word (API_KEY,
ACCESS_KEY, PRIVATE_KEY), is a secret's name. Plural measurement names (max_tokens, prompt_tokens) and a bare
`key` are not. redact() applies the rule to a whole JSON-like value:
- a mapping entry whose key is a secret's name and whose value is a string;
- `NAME=VALUE` (server_env entries, environment dumps, log lines) with a secret's name;
- a command line: the value after `--api-key`, `--hf-token`, ... and `--api-key=VALUE`;
- `Bearer <credential>` in any text.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
SECRET_WORDS = frozenset(
    {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS", "COOKIE", "APIKEY",
     "AUTHORIZATION"}
)
_WORDS = re.compile(r"[_\-.]+")
_ASSIGNMENT = re.compile(r"(?<![\w-])(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=(\"[^\"]*\"|'[^']*'|[^\s,;&\"']+)")
_FLAG_VALUE = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9_-]*)(\s+)(\"[^\"]*\"|'[^']*'|[^\s\"'-][^\s\"']*)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")


def is_secret_name(name) -> bool:
    """HF_TOKEN, VLLM_API_KEY, api-key, db.password: yes; max_tokens, key, tokenizer: no."""
    if not isinstance(name, str):
        return False
    words = [w for w in _WORDS.split(name.strip().lstrip("-").upper()) if w]
    if not words:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    return len(words) > 1 and words[-1] == "KEY"


def redact_text(text: str) -> str:
    """Free text (a log tail, a message): secret assignments, secret flags' values and bearer credentials."""
    text = _ASSIGNMENT.sub(lambda m: f"{m[1]}={REDACTED}" if is_secret_name(m[1]) else m[0], text)
    text = _FLAG_VALUE.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}" if is_secret_name(m[1]) else m[0], text)
    return _BEARER.sub(lambda m: m[1] + REDACTED, text)


def redact_argv(argv: list) -> list:
    """A command line as a list: the word after a secret flag, and `--flag=VALUE` / `NAME=VALUE` words."""
    out, hide_next = [], False
    for word in argv:
        if hide_next and isinstance(word, str):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if isinstance(word, str) and word.startswith("-") and "=" not in word and is_secret_name(word):
            hide_next = True
        out.append(redact(word))
    return out


def redact(value):
    """A copy of value (JSON-like: dict, list, str, numbers) with every secret replaced by REDACTED."""
    if isinstance(value, dict):
        return {
            key: REDACTED if is_secret_name(key) and isinstance(item, str) and item else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return redact_argv(list(value))
    if isinstance(value, str):
        return redact_text(value)
    return value
