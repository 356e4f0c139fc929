"""The command-line plumbing shared by the probes that measure a vLLM server (server, ttft, kv, batching, ab):
the server arguments, the spec they make, and the frame that starts a server, measures and always stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import time
from pathlib import Path

from probes.cli import Report
from probes.procgroup import comm, preloaded_in
from probes.server_process import ExternalEndpoint, VllmServer
from probes.server_spec import (
    ProbeTerminated,
    ServerError,
    ServerSpec,
    ServerStartError,
    default_kv_budget,
    detect_backend,
    interrupted_text,
    parse_kv_budget,
)


def add_server_args(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    g = parser.add_argument_group("vLLM server")
    g.add_argument("--model", default="tiny", help="shape name (built offline on first use) or model directory")
    if not sweep:
        g.add_argument("--endpoint", default=None, help="use this running server; nothing is started or stopped")
        g.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"),
                       help="the endpoint's key, or the key for the started server (default: $VLLM_API_KEY, "
                            "else a random one)")
        g.add_argument("--max-model-len", type=int, default=None)
        g.add_argument("--kv-budget", default=None, type=parse_kv_budget,
                       help="fraction of GPU memory (0.5) or KV bytes (1GiB); default: 1GiB on CPU builds, "
                            "vLLM's own on GPU")
    g.add_argument("--enforce-eager", action="store_true", help="no torch.compile / CUDA graphs (faster start)")
    g.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the server, repeatable (--server-arg=--dtype=bfloat16)")
    g.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the server, repeatable (LD_PRELOAD=/usr/lib/.../libjemalloc.so.2)")
    g.add_argument("--gpu", type=int, default=None,
                   help="the one GPU the server may use (its NVML/CUDA index, through CUDA_VISIBLE_DEVICES); "
                        "default: what vLLM picks")
    g.add_argument("--ready-timeout-s", type=float, default=900.0)
    g.add_argument("--log-dir", type=Path, default=None, help="where server logs go (default: a temp file)")


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--server-env {item!r}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        env[name] = value
    return env


def preload_libraries(env: dict[str, str]) -> list[str]:
    return [p for p in re.split(r"[:\s]+", env.get("LD_PRELOAD", "")) if p]


def spec_from_args(args, *, max_model_len=None, kv_budget=None, log_name: str | None = None) -> ServerSpec:
    from probes import model as model_mod

    backend = detect_backend()
    budget = kv_budget if kv_budget is not None else getattr(args, "kv_budget", None)
    log_path = None
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = args.log_dir / (log_name or f"vllm-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    return ServerSpec(
        model=str(model_mod.resolve(args.model)),
        max_model_len=max_model_len if max_model_len is not None else getattr(args, "max_model_len", None),
        kv_budget=budget if budget is not None else default_kv_budget(backend),
        enforce_eager=args.enforce_eager,
        extra_args=list(args.server_arg),
        env=parse_env(args.server_env),
        ready_timeout_s=args.ready_timeout_s,
        log_path=log_path,
        gpu=getattr(args, "gpu", None),
    )


def open_server(args) -> VllmServer | ExternalEndpoint:
    if getattr(args, "endpoint", None):
        return ExternalEndpoint(args.endpoint, args.api_key)
    return VllmServer(spec_from_args(args), api_key=getattr(args, "api_key", None))


def server_verdicts(srv, result_mod) -> list[dict]:
    """Verdicts every probe that ran a server adds: it stopped and is gone; a preloaded library is mapped."""
    out = []
    if not srv.started_by_probe:
        return out
    report = srv.stop_report
    if report is not None:
        if report.confirmed_gone:
            out.append(result_mod.verdict(
                "server_stopped", "pass",
                f"vLLM stopped with {report.signal_sent or 'no signal (it had exited)'} in {report.stop_s:.1f} s; "
                f"no process of group {srv.pgid} is left"))
        else:
            out.append(result_mod.verdict(
                "server_stopped", "fail",
                f"processes {[(p, comm(p)) for p in report.survivors]} of vLLM group {srv.pgid} are still alive "
                "after SIGKILL; "
                f"kill them by hand (kill -9 {' '.join(map(str, report.survivors))})"))
    return out


def preload_check_verdicts(check: dict[str, dict[str, bool]], result_mod) -> list[dict]:
    out = []
    for lib, by_pid in check.items():
        if by_pid and all(by_pid.values()):
            out.append(result_mod.verdict("preload_mapped", "pass",
                                          f"{lib} is mapped in all {len(by_pid)} server processes"))
        else:
            missing = [p for p, ok in by_pid.items() if not ok]
            out.append(result_mod.verdict(
                "preload_mapped", "fail",
                f"{lib} from LD_PRELOAD is not mapped in server processes {missing or '(none could be read)'}: "
                "the A/B would compare glibc with glibc; check the path and that the library exists"))
    return out


def preload_report(srv, result_mod) -> tuple[dict | None, list[dict]]:
    """The maps check for a started server with LD_PRELOAD in its extra environment: (check, verdicts)."""
    libs = preload_libraries(srv.spec.env) if srv.started_by_probe else []
    if not libs:
        return None, []
    check = preloaded_in(srv.pids(), libs)
    return check, preload_check_verdicts(check, result_mod)


@contextlib.contextmanager
def server_failures(results: dict, errors: list[str]):
    """Turns the ways a server probe ends early into its envelope: a start that failed (with vLLM's reason in
    results["start_failure"]), a server error, an interruption. Yields a dict whose "status" is the exit
    status an interruption asks for (None otherwise); any other exception goes on up."""
    outcome: dict = {"status": None}
    try:
        yield outcome
    except ServerStartError as exc:
        errors.append(str(exc))
        results["start_failure"] = exc.failure
    except ServerError as exc:
        errors.append(str(exc))
    except (ProbeTerminated, KeyboardInterrupt) as exc:
        errors.append(interrupted_text(exc))
        outcome["status"] = exc.code if isinstance(exc, ProbeTerminated) else 130


def measure_on_server(args, results: dict, measure) -> Report:
    """The measurement of a probe that measures one vLLM server: start it (or use --endpoint), check that a
    preloaded library is mapped, call ``measure(srv, verdicts)`` while it serves (it fills ``results``), stop
    it on every way out, and report whatever happened."""
    from probes import result

    errors: list[str] = []
    verdicts: list[dict] = []
    srv = None
    with server_failures(results, errors) as outcome:
        srv = open_server(args)
        with srv:
            results["preload_check"], more = preload_report(srv, result)
            verdicts += more
            measure(srv, verdicts)
    if srv is not None:
        results["server"] = srv.describe()
        verdicts += server_verdicts(srv, result)
    return Report(results, verdicts, errors, status=outcome["status"])


def first_request(srv, max_tokens: int = 8, timeout_s: float = 300.0) -> dict:
    """One small completion, so memory can be read after the first request; returns its timing."""
    import httpx

    body = {"model": srv.model_id, "prompt": "Preflight first request.", "max_tokens": max_tokens,
            "temperature": 0.0}
    t = time.perf_counter()
    r = httpx.post(f"{srv.base_url}/v1/completions", json=body, headers=srv.headers(), timeout=timeout_s)
    r.raise_for_status()
    usage = r.json().get("usage") or {}
    return {"e2e_ms": round((time.perf_counter() - t) * 1000, 3), "completion_tokens": usage.get("completion_tokens")}
