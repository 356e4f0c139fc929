"""Count what issue 14 measures: Jinja control flow in tasks and playbooks, the largest Python files and
functions, and the functions over the limit. Run from the repository root:

    .venv/bin/python bench/structure.py            # prints the figures
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

FUNCTION_LIMIT = 80
FILE_LIMIT = 500


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
                         capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in out.split() if Path(p).is_file()]


def jinja_control_lines() -> dict[str, int]:
    files = tracked("playbooks/*.yml", "roles/*/tasks/*.yml", "roles/*/handlers/*.yml")
    counts = {str(f): sum("{%" in line for line in f.read_text().splitlines()) for f in files}
    return {k: v for k, v in counts.items() if v}


def python_files() -> list[Path]:
    return [f for f in tracked("*.py") if not str(f).startswith(("tests/fixtures/", "docs/"))]


def functions(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def main() -> None:
    jinja = jinja_control_lines()
    print(f"Jinja control-flow lines in tasks and playbooks: {sum(jinja.values())}")
    for name, count in sorted(jinja.items(), key=lambda kv: -kv[1]):
        print(f"  {count:4d} {name}")
    sizes = sorted(((len(f.read_text().splitlines()), str(f)) for f in python_files()), reverse=True)
    print(f"Python files over {FILE_LIMIT} lines: {sum(n > FILE_LIMIT for n, _ in sizes)}; largest:")
    for n, name in sizes[:5]:
        print(f"  {n:5d} {name}")
    funcs = sorted(((n, f"{f}:{line} {name}") for f in python_files() for name, line, n in functions(f)), reverse=True)
    print(f"Functions over {FUNCTION_LIMIT} lines: {sum(n > FUNCTION_LIMIT for n, _ in funcs)}; "
          f"over 60: {sum(n > 60 for n, _ in funcs)}; largest:")
    for n, where in funcs[:8]:
        print(f"  {n:5d} {where}")


if __name__ == "__main__":
    main()
