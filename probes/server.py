"""A vLLM OpenAI server that the probe starts, owns and always stops.

    python -m probes server --model tiny [--max-model-len N] [--kv-budget 1GiB|0.5] [--enforce-eager]
                            [--server-arg=--dtype=bfloat16 ...] [--server-env LD_PRELOAD=/path/lib.so ...]
                            [--ready-timeout-s 900] [--hold-s 0] [--json]
    python -m probes server --endpoint http://127.0.0.1:8000 [--api-key KEY] --json   # never starts or stops

The server runs `python -m vllm.entrypoints.openai.api_server` (the entry point every vLLM build has) on
127.0.0.1, a free port and a random API key, in a process group of its own. Whatever happens to the probe
(success, an exception, a timeout, Ctrl-C, SIGTERM or SIGHUP) the whole group gets SIGTERM, then SIGKILL
after a grace period, and the probe checks that no process of it is left. If the probe itself is killed
with SIGKILL, the kernel still sends SIGTERM to the server (PR_SET_PDEATHSIG), so nothing is orphaned.

The KV budget knob follows the installed vLLM: `--gpu-memory-utilization` (a fraction) on GPU builds,
`--kv-cache-memory-bytes` on CPU builds, where vLLM cannot size the cache by itself on small VMs.
"""

from __future__ import annotations

import sys
import time

from probes import cli
from probes.procgroup import preloaded_in
from probes.server_frame import (
    add_server_args,
    first_request,
    measure_on_server,
    open_server,
    parse_env,
    preload_check_verdicts,
    preload_libraries,
    preload_report,
    server_failures,
    server_verdicts,
    spec_from_args,
)
from probes.server_process import ExternalEndpoint, VllmServer
from probes.server_spec import (
    API_SERVER_MODULE,
    DEFAULT_CPU_KV_BYTES,
    MILESTONES,
    KvBudget,
    MemorySnapshot,
    ProbeTerminated,
    ServerError,
    ServerSpec,
    ServerStartError,
    StartTimeline,
    StopReport,
    default_kv_budget,
    detect_backend,
    interrupted_text,
    memory_snapshot,
    parse_kv_budget,
    phase_split,
)

# What the other probes and the tests import from here; the code lives in server_spec, server_process and
# server_frame.
__all__ = [
    "API_SERVER_MODULE", "DEFAULT_CPU_KV_BYTES", "MILESTONES", "ExternalEndpoint", "KvBudget", "MemorySnapshot",
    "ProbeTerminated", "ServerError", "ServerSpec", "ServerStartError", "StartTimeline", "StopReport", "VllmServer",
    "add_server_args", "default_kv_budget", "detect_backend", "first_request", "interrupted_text",
    "measure_on_server", "memory_snapshot", "open_server", "parse_env", "parse_kv_budget", "phase_split",
    "preload_check_verdicts", "preload_libraries", "preload_report", "preloaded_in", "server_failures",
    "server_verdicts", "spec_from_args", "main",
]


def _arguments(parser) -> None:
    add_server_args(parser)
    parser.add_argument("--hold-s", type=float, default=0.0, help="keep the server up this long after ready")


def _serve(srv, args, results: dict, verdicts: list[dict]) -> None:
    from probes import result

    if srv.started_by_probe:
        sys.stderr.write(f"probes server: vLLM ready at {srv.base_url} in {srv.timeline.ready_s:.1f} s "
                         f"(pid {srv.proc.pid}, process group {srv.pgid}, log {srv.log_path})\n")
        sys.stderr.flush()
    results["first_request"] = first_request(srv)
    srv.snapshot_memory("after_first_request")
    results["preload_check"], more = preload_report(srv, result)
    verdicts += more
    if args.hold_s > 0:
        sys.stderr.write(f"probes server: holding the server for {args.hold_s:g} s\n")
        sys.stderr.flush()
        time.sleep(args.hold_s)


def _measure(args, _checked) -> cli.Report:
    from probes import result

    errors: list[str] = []
    verdicts: list[dict] = []
    results: dict = {"backend": detect_backend()}
    srv = None
    try:
        with server_failures(results, errors) as outcome:
            srv = open_server(args)
            with srv:
                _serve(srv, args, results, verdicts)
    except Exception as exc:  # a measurement failed; the server is already stopped by the with-block
        errors.append(f"{type(exc).__name__}: {exc}")
    if srv is not None:
        results["server"] = srv.describe()
        results["start_phases_s"] = phase_split(srv.timeline)
        verdicts += server_verdicts(srv, result)
        if srv.started_by_probe and srv.timeline and srv.timeline.ready_s is not None:
            verdicts.insert(0, result.verdict(
                "server_ready", "pass",
                f"vLLM answered /health {srv.timeline.ready_s:.1f} s after spawn "
                f"(deadline {args.ready_timeout_s:g} s)"))
    return cli.Report(results, verdicts, errors, status=outcome["status"])


PROBE = cli.Probe("server", __doc__, arguments=_arguments, measure=_measure, hidden=("api_key",))


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
