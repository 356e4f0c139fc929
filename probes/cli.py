"""The frame every probe's command line runs in: argparse -> checks -> measurement -> envelope -> output.

A probe module declares a ``Probe``: its arguments, the checks made before anything runs, and its
measurement, which hands back a ``Report``. The frame parses, runs the hidden worker mode where a probe has
one, turns a ``Refused`` into ``probes <name>: <why>`` on stderr and exit status 2, times the measurement,
builds the envelope (probes.result), validates it where the probe asks, prints it (JSON or the table) and
returns the exit status: the one an interruption asked for, else 0 or 1 from the envelope.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Refused(Exception):
    """The probe cannot run as asked (bad input, no such model): printed as `probes <name>: <why>`, exit 2."""


@dataclass
class Report:
    """What a measurement hands back to the frame."""

    results: dict
    verdicts: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    params: dict | None = None  # None: every argument but --json and the probe's hidden ones
    status: int | None = None  # the exit status an interruption asks for; None: from the envelope


@dataclass(frozen=True)
class Probe:
    name: str
    doc: str  # the module's docstring: its first paragraph is the --help description
    arguments: Callable[[argparse.ArgumentParser], None]
    measure: Callable[[argparse.Namespace, Any], Report]
    check: Callable[[argparse.Namespace, argparse.ArgumentParser], Any] | None = None  # -> passed to measure
    worker: Callable[[argparse.Namespace], int | None] | None = None  # the hidden worker mode; None: not one
    hidden: tuple[str, ...] = ()  # arguments left out of the envelope's params
    validate: bool = False  # check the envelope against its schema before printing it
    json_flag: bool = True  # False: the probe adds --json itself (to each of its subcommands)
    raw_help: bool = False  # keep the docstring's layout in --help
    human: Callable[[dict], str] | None = None  # the output for people; default: probes.result's table


def parser_for(probe: Probe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m probes {probe.name}", description=probe.doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter if probe.raw_help else argparse.HelpFormatter)
    probe.arguments(parser)
    if probe.json_flag:
        parser.add_argument("--json", action="store_true", help="print the JSON envelope instead of the table")
    return parser


def default_params(args: argparse.Namespace, hidden: tuple[str, ...] = ()) -> dict:
    """Every argument as given, a KV budget by its label; --json and the hidden ones left out."""
    return {k: getattr(v, "label", v) for k, v in vars(args).items() if k not in ("json", *hidden)}


def resolve_model(model: str) -> Path:
    """A shape or a model directory -> the directory (a shape is built on first use); Refused when neither."""
    from probes import model as model_mod

    try:
        return model_mod.resolve(model)
    except model_mod.ModelError as exc:
        raise Refused(str(exc)) from exc


def step(probe: str, index: int, total: int, what: str) -> None:
    """One progress line on stderr, ``probes load: [2/7] warm load, fresh process``: the node's log keeps it and
    the controller's progress line shows the latest (module_utils/preflight/core/progress.py)."""
    sys.stderr.write(f"probes {probe}: [{index}/{total}] {what}\n")
    sys.stderr.flush()


def run(probe: Probe, argv: list[str]) -> int:
    """Parse argv, run the probe, print its envelope; returns the exit status."""
    parser = parser_for(probe)
    args = parser.parse_args(argv)
    if probe.worker is not None and (status := probe.worker(args)) is not None:
        return status
    try:
        checked = probe.check(args, parser) if probe.check is not None else None
        started, t0 = time.time(), time.perf_counter()
        report = probe.measure(args, checked)
    except Refused as exc:
        sys.stderr.write(f"probes {probe.name}: {exc}\n")
        return 2
    return finish(probe, args, report, started, time.perf_counter() - t0)


def finish(probe: Probe, args: argparse.Namespace, report: Report, started: float, duration_s: float) -> int:
    from probes import result

    params = report.params if report.params is not None else default_params(args, probe.hidden)
    doc = result.envelope(probe.name, params, report.results, report.verdicts, started, duration_s,
                          errors=report.errors)
    if probe.validate:
        result.validate(doc)
    if probe.human is not None and not args.json:
        sys.stdout.write(probe.human(doc))
        sys.stdout.flush()
    else:
        result.emit(doc, args.json)
    return report.status if report.status is not None else result.exit_status(doc)
