"""`python -m probes <name> [args]`: dispatches to probes.<name>.main(argv) -> exit status."""

from __future__ import annotations

import importlib
import sys

from probes import PROBES

USAGE = "usage: python -m probes {" + ",".join(PROBES) + "} [args] [--json]\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in PROBES:
        sys.stderr.write(f"unknown probe {name!r}\n{USAGE}")
        return 2
    module = importlib.import_module(f"probes.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
