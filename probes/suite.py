"""Several vLLM probes on one server start, and one server per GPU side by side.

    python -m probes suite --plan '[[{"name": "ttft", "probe": "ttft", "argv": ["--model", "tiny"]},
                                     {"name": "kv", "probe": "kv", "argv": ["--model", "tiny", ...]}]]' [--json]

The plan is a list of servers, each a list of members: a result name, its probe (ttft, kv or batching) and
that probe's own flags. The members of one server ask for the same server (model, max-model-len, KV budget,
enforce-eager, extra arguments and environment, GPU; a kv member at exactly one length and budget): it starts
once, they measure it one after the other in the order given (ttft first, so that its cold request is the
first the server answers), and it stops on every way out. Several servers run side by side, each in a process
of its own (this probe with that one server), pinned to its GPU's NUMA node's CPUs where the node has more than
one NUMA node.

Prints one envelope (probe "suite"): results.members maps each result name to the envelope its probe prints
when it runs alone, each with results.server naming the members that shared the server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from probes import cli
from probes.procgroup import die_with_parent
from probes.server import (
    ProbeTerminated,
    ServerError,
    VllmServer,
    default_kv_budget,
    detect_backend,
    preload_report,
    server_failures,
    server_verdicts,
    spec_from_args,
)

MODULES = {"ttft": "probes.ttft", "kv": "probes.kv", "batching": "probes.batching"}
# What makes two members' servers the same server.
SERVER_FIELDS = ("model", "max_model_len", "kv_budget", "enforce_eager", "server_arg", "server_env", "gpu")
STOP_WAIT_S = 120.0  # how long side-by-side servers get to stop after an interruption


@dataclass
class Member:
    name: str
    probe: str
    args: argparse.Namespace
    checked: Any
    results: dict = field(default_factory=dict)
    verdicts: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    duration_s: float = 0.0
    t0: float = 0.0  # perf_counter at the start of its measurement
    ran: bool = False
    measure: Any = None  # on_server's measure(srv, verdicts)

    @property
    def module(self):
        return importlib.import_module(MODULES[self.probe])


# ---- the plan -------------------------------------------------------------------------------------------


def parse_plan(text: str) -> list[list[dict]]:
    """--plan -> servers of member entries; Refused with the reason when its shape is wrong."""
    try:
        plan = json.loads(text)
    except ValueError as exc:
        raise cli.Refused(f"--plan is not JSON: {exc}") from exc
    if not isinstance(plan, list) or not plan or not all(isinstance(s, list) and s for s in plan):
        raise cli.Refused("--plan: a non-empty list of servers, each a non-empty list of members")
    names = []
    for entry in (e for server in plan for e in server):
        if not isinstance(entry, dict) or set(entry) != {"name", "probe", "argv"}:
            raise cli.Refused(f"--plan: each member is {{name, probe, argv}}; got {entry!r}")
        if entry["probe"] not in MODULES:
            raise cli.Refused(f"--plan: member {entry['name']}: probe {entry['probe']!r} is not one of "
                              f"{', '.join(MODULES)}")
        if not isinstance(entry["argv"], list) or not all(isinstance(a, str) for a in entry["argv"]):
            raise cli.Refused(f"--plan: member {entry['name']}: argv must be a list of strings")
        names.append(entry["name"])
    if len(set(names)) != len(names):
        raise cli.Refused(f"--plan: member names must be unique; got {', '.join(names)}")
    return plan


def member_of(entry: dict) -> Member:
    """One member, its flags parsed and checked by its own probe, exactly as when it runs alone."""
    module = importlib.import_module(MODULES[entry["probe"]])
    parser = cli.parser_for(module.PROBE)
    try:
        args = parser.parse_args([*entry["argv"], "--json"])
        checked = module.PROBE.check(args, parser) if module.PROBE.check else None
    except SystemExit as exc:  # argparse printed why on stderr
        raise cli.Refused(f"member {entry['name']}: its {entry['probe']} flags were refused (above)") from exc
    if getattr(args, "endpoint", None):
        raise cli.Refused(f"member {entry['name']}: --endpoint: a suite starts the server it measures")
    return Member(entry["name"], entry["probe"], args, checked)


def server_settings(member: Member) -> dict:
    """The server this member asks for, by SERVER_FIELDS; a kv member's one length and budget (or Refused)."""
    fixed = member.module.server_settings(member.args, member.checked) if member.probe == "kv" else {}
    values = {name: fixed.get(name, getattr(member.args, name, None)) for name in SERVER_FIELDS}
    if values["kv_budget"] is None:
        values["kv_budget"] = default_kv_budget(detect_backend())
    return values


def _shown(values: dict) -> dict:
    return {k: getattr(v, "label", v) for k, v in values.items()}


def one_server(members: list[Member]) -> dict:
    """The settings every member of one server shares; Refused naming the first difference."""
    wanted = server_settings(members[0])
    for member in members[1:]:
        other = server_settings(member)
        differ = [f"{k} {_shown(wanted)[k]!r} vs {_shown(other)[k]!r}" for k in SERVER_FIELDS
                  if _shown(wanted)[k] != _shown(other)[k]]
        if differ:
            raise cli.Refused(f"members {members[0].name} and {member.name} ask for different servers: "
                              + "; ".join(differ))
    return wanted


def _check(args, parser) -> list[tuple[list[dict], list[Member]]]:
    servers = parse_plan(args.plan)
    checked = [(entries, [member_of(e) for e in entries]) for entries in servers]
    for _entries, members in checked:
        one_server(members)
    gpus = [server_settings(members[0])["gpu"] for _entries, members in checked]
    if len(checked) > 1 and (None in gpus or len(set(gpus)) != len(gpus)):
        raise cli.Refused(f"servers side by side need one GPU each (--gpu); got {gpus}")
    return checked


# ---- one shared server ----------------------------------------------------------------------------------


def _progress(text: str) -> None:
    sys.stderr.write(f"probes suite: {text}\n")
    sys.stderr.flush()


def _measure_members(srv, members: list[Member], t_start: float, started: float) -> None:
    """Each member in turn on the one server; a member that fails leaves the next ones to run."""
    for i, member in enumerate(members):
        _progress(f"[{i + 1}/{len(members)}] {member.name} ({member.probe}) on the shared server")
        member.started = started if i == 0 else time.time()
        member.t0 = t_start if i == 0 else time.perf_counter()  # the first member's time includes the start
        try:
            member.measure(srv, member.verdicts)
        except ServerError as exc:
            member.errors.append(str(exc))
        except Exception as exc:  # one member's failure is its own; the server serves the next one
            member.errors.append(f"{type(exc).__name__}: {exc}")
        member.duration_s = time.perf_counter() - member.t0
        member.ran = True


def run_shared(members: list[Member]) -> int | None:
    """Start one server for all members, measure each, stop it; fills each member. Returns the exit status an
    interruption asks for (None otherwise)."""
    from probes import result

    wanted = one_server(members)
    for member in members:
        member.results, member.measure = member.module.on_server(member.args, member.checked)
    first = members[0].args
    spec = spec_from_args(first, max_model_len=wanted["max_model_len"], kv_budget=wanted["kv_budget"])
    spec = replace(spec, ready_timeout_s=max(m.args.ready_timeout_s for m in members))
    srv = VllmServer(spec)
    names = [m.name for m in members]
    common: dict = {}
    errors: list[str] = []
    started, t_start = time.time(), time.perf_counter()
    check, preload_verdicts = None, []
    _progress(f"starting one vLLM server for {', '.join(names)}")
    with server_failures(common, errors) as outcome:
        with srv:
            check, preload_verdicts = preload_report(srv, result)
            _measure_members(srv, members, t_start, started)
    ran = [m for m in members if m.ran]
    if ran:  # the stop belongs to the last measurement's time
        ran[-1].duration_s = time.perf_counter() - ran[-1].t0
    described = dict(srv.describe(), shared_by=names)
    for member in members:
        if not member.ran:
            member.started = member.started or started
            member.errors += errors or ["not run: the shared server stopped before its turn"]
            member.results.update(common)
        member.results["preload_check"] = check
        member.results["server"] = described
        member.verdicts += preload_verdicts + server_verdicts(srv, result)
        if len(members) > 1:
            member.verdicts.append(result.verdict(
                "shared_server", "info", f"measured on one vLLM server shared by {', '.join(names)} (one start)"))
    return outcome["status"]


def envelope_of(member: Member) -> dict:
    from probes import result

    probe = member.module.PROBE
    if member.probe == "kv":
        params = member.module.params(member.args, member.checked)
    else:
        params = cli.default_params(member.args, probe.hidden)
    doc = result.envelope(member.probe, params, member.results, member.verdicts, member.started,
                          member.duration_s, errors=member.errors)
    if probe.validate:
        result.validate(doc)
    return doc


# ---- servers side by side -------------------------------------------------------------------------------


def pinning(gpus: list[int]) -> dict[int, list[int] | None]:
    """Each GPU's server's CPUs: its NUMA node's where the node has several (core.gpus.server_cpus)."""
    from probes.core.facts import gather
    from probes.core.gpus import server_cpus

    facts = gather()
    cpus = server_cpus(facts["numa"], facts["gpus"])
    return {gpu: cpus.get(gpu) for gpu in gpus}


def _child(entries: list[dict], cpus: list[int] | None) -> subprocess.Popen:
    def setup() -> None:  # in the child, before exec
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return subprocess.Popen([sys.executable, "-m", "probes", "suite", "--plan", json.dumps([entries]), "--json"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=setup)


def _collect(proc: subprocess.Popen, entries: list[dict]) -> tuple[dict, str | None]:
    """A child's member envelopes, or why there are none."""
    out, _ = proc.communicate()
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return json.loads(out)["results"]["members"], None
    return {}, f"the server process for {', '.join(e['name'] for e in entries)} exited with status " \
               f"{proc.returncode} and printed no envelope (its stderr is above)"


def run_side_by_side(checked: list[tuple[list[dict], list[Member]]]) -> tuple[dict, list[dict], int | None]:
    """One child per server, all at once; (member envelopes, the servers' layout, interruption status)."""
    gpus = [server_settings(members[0])["gpu"] for _entries, members in checked]
    cpus = pinning(gpus)
    _progress(f"starting {len(checked)} vLLM servers side by side, one per GPU ({', '.join(map(str, gpus))})")
    procs = [_child(entries, cpus[gpu]) for (entries, _members), gpu in zip(checked, gpus, strict=True)]
    status = None
    envelopes: dict = {}
    layout = []
    for proc, (entries, members), gpu in zip(procs, checked, gpus, strict=True):
        try:
            found, problem = _collect(proc, entries)
        except (ProbeTerminated, KeyboardInterrupt) as exc:  # the children got the same signal: let them stop
            status = exc.code if isinstance(exc, ProbeTerminated) else 130
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_WAIT_S)
            found, problem = {}, "interrupted"
        for member in members:
            envelopes[member.name] = found.get(member.name) or _failed_envelope(member, problem)
        layout.append({"gpu": gpu, "members": [m.name for m in members], "pid": proc.pid, "rc": proc.returncode,
                       "cpus": cpus[gpu]})
    note = side_by_side_note(layout)
    for doc in envelopes.values():
        (doc.get("results") or {}).setdefault("server", {})["side_by_side"] = {"servers": layout, "note": note}
        doc.setdefault("verdicts", []).append({"name": "side_by_side", "status": "info", "text": note})
    return envelopes, layout, status


def side_by_side_note(layout: list[dict]) -> str:
    pinned = [f"GPU {s['gpu']}: CPUs {s['cpus'][0]}-{s['cpus'][-1]}" for s in layout if s["cpus"]]
    return (f"{len(layout)} vLLM servers ran at once, one per GPU ({', '.join(str(s['gpu']) for s in layout)}); "
            "each has its GPU to itself and shares the host's CPUs, memory bandwidth and PCIe root with the others"
            + (f"; threads pinned to each GPU's NUMA node ({'; '.join(pinned)})" if pinned
               else "; not pinned (one NUMA node, or the GPUs' nodes unknown)"))


def _failed_envelope(member: Member, problem: str | None) -> dict:
    member.errors.append(problem or "no result")
    member.started = member.started or time.time()
    return envelope_of(member)


# ---- the probe ------------------------------------------------------------------------------------------


def _arguments(parser) -> None:
    parser.add_argument("--plan", required=True, help="JSON: a list of servers, each a list of "
                                                       "{name, probe, argv} members (see the module's help)")


def _measure(args, checked) -> cli.Report:
    from probes import result

    if len(checked) == 1:
        members = checked[0][1]
        status = run_shared(members)
        envelopes = {m.name: envelope_of(m) for m in members}
        layout = [{"gpu": server_settings(members[0])["gpu"], "members": [m.name for m in members]}]
    else:
        envelopes, layout, status = run_side_by_side(checked)
    verdicts = []
    for name, doc in envelopes.items():
        why = "; ".join(doc.get("errors") or []) or "a verdict failed"
        failed = result.exit_status(doc)
        verdicts.append(result.verdict(f"member_{name}", "fail" if failed else "pass",
                                       f"{name} ({doc['probe']}): {why if failed else 'measured'}"))
    params = {"servers": [[m.name for m in members] for _entries, members in checked]}
    return cli.Report({"members": envelopes, "servers": layout}, verdicts, params=params, status=status)


PROBE = cli.Probe("suite", __doc__, arguments=_arguments, check=_check, measure=_measure, raw_help=True)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
