"""One server start of the A/B: the host put into the arm's state, a fresh vLLM server timed to ready, the
arm's checks, the serving measurements, and what the start recorded (probes.ab_plan.StartRecord).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from probes.ab_host import (
    ThpSwitch,
    allocator_mapping_problem,
    anon_huge_pages_bytes,
    interpreter_pids,
    page_cache_bytes,
    prime_files,
)
from probes.ab_plan import AbError, PlannedStart, StartRecord, fmt_number
from probes.core.thp_arm import GLOBAL
from probes.server import ServerError, ServerSpec, VllmServer, phase_split


@dataclass
class ServingPlan:
    ttft_requests: int  # warm requests after the first; 0: no TTFT
    throughput_prompts: int  # 0: no throughput
    concurrency: int
    max_tokens: int
    prompt_words: int
    request_timeout_s: float


def measure_serving(srv, plan: ServingPlan, rec: StartRecord) -> None:
    """First-request and warm TTFT (probes.ttft), then output tok/s at one concurrency (probes.batching)."""
    from probes import batching, ttft

    if plan.ttft_requests > 0:
        run = asyncio.run(ttft.run_requests(srv, apis=["completions"], n=plan.ttft_requests,
                                            max_tokens=plan.max_tokens, prompt_words=plan.prompt_words,
                                            request_timeout_s=plan.request_timeout_s))
        if run.cold is not None and run.cold.ok:
            rec.first_ttft_ms = run.cold.ttft_s * 1e3
        elif run.cold is not None:
            rec.request_errors.append(f"first request: {run.cold.error}")
        warm = ttft.ttft_stats("completions", run.warm["completions"])
        rec.ttft_ms, rec.ttft_n = warm.ttft_ms["median"], warm.n_ok
        rec.request_errors += warm.errors[:3]
    if plan.throughput_prompts > 0:
        brun = asyncio.run(batching.run_batching(
            srv, levels=[plan.concurrency], n_prompts=plan.throughput_prompts, repeats=1,
            max_tokens=plan.max_tokens, prompt_words=plan.prompt_words, warmup=0 if plan.ttft_requests else 1,
            time_budget_s=plan.request_timeout_s * 4, request_timeout_s=plan.request_timeout_s))
        rec.throughput_concurrency = plan.concurrency
        if brun.runs:
            level = batching.level_result(brun.runs)
            rec.output_tok_per_s = level.output_tok_per_s["median"]
            rec.request_errors += level.errors[:3]
        else:
            rec.request_errors.append(f"throughput not measured: {brun.stopped_by}")


def prepare(factor: str, arm: str, *, thp: ThpSwitch | None, model_dir: Path) -> dict:
    """Put the host into the arm's state just before the start; returns what was done."""
    if factor == "thp":
        thp.set(arm)
        return thp.written()
    if factor == "pagecache":
        from probes import worker

        before = page_cache_bytes()
        if arm == "cold":
            t = time.perf_counter()
            worker.drop_page_cache()
            return {"page_cache_dropped": True, "drop_s": round(time.perf_counter() - t, 3),
                    "page_cache_bytes_before_drop": before}
        if model_dir.is_dir():
            return {"page_cache_dropped": False, **prime_files(model_dir)}
        return {"page_cache_dropped": False, "primed_bytes": None,
                "prime_s": None, "note": f"{model_dir} is not a directory: nothing to prime"}
    return {}


def one_start(planned: PlannedStart, base: ServerSpec, *, factor: str, env: dict[str, str],
              thp: ThpSwitch | None, serving: ServingPlan | None, log_dir: Path | None) -> StartRecord:
    rec = StartRecord(arm=planned.arm, round=planned.round, order=planned.order)
    log_name = f"ab-{factor}-{time.strftime('%Y%m%dT%H%M%S')}-{planned.order:02d}-{planned.arm}.log"
    spec = dataclasses.replace(base, env={**base.env, **env},
                               log_path=log_dir / log_name if log_dir is not None else None)
    watch = thp or ThpSwitch()
    try:
        rec.setup = prepare(factor, planned.arm, thp=thp, model_dir=Path(spec.model))
    except (AbError, PermissionError) as exc:
        rec.error = str(exc)
        return rec
    rec.thp_enabled_at_start = watch.read()
    if thp is not None and any(key != GLOBAL for key in thp.keys):
        rec.thp_sizes_at_start = {key: thp.read(key) for key in thp.keys if key != GLOBAL}
    rec.page_cache_bytes_at_start = page_cache_bytes()
    srv = VllmServer(spec)
    try:
        with srv:
            rec.ready_s = srv.timeline.ready_s
            rec.pid = srv.proc.pid
            pids = srv.pids()
            rec.anon_huge_pages_bytes = anon_huge_pages_bytes(pids)
            rec.thp_enabled_after_ready = watch.read()
            if factor == "allocator":
                rec.preload_check, problem = allocator_mapping_problem(planned.arm, env,
                                                                       interpreter_pids(pids, spec.python))
                if problem:
                    raise AbError(problem)
            if factor == "thp" and (drift := thp.drift(planned.arm)):
                raise AbError(f"THP changed during the start ({drift}): something else on this host wrote it")
            if serving is not None:
                measure_serving(srv, serving, rec)
    except (AbError, ServerError) as exc:
        rec.error = str(exc)
    except Exception as exc:  # a measurement broke; the server is already stopped by the with-block
        rec.error = f"{type(exc).__name__}: {exc}"
    finally:
        log = srv.startup()
        rec.weights_load_s, rec.weights_load_gib, rec.model_load_s = (log.weights_load_s, log.model_load_gib,
                                                                      log.model_load_s)
        rec.phases_s = phase_split(srv.timeline)
        rec.log_path = str(srv.log_path)
        rec.pid = srv.proc.pid if srv.proc else None
        rec.stop = dataclasses.asdict(srv.stop_report) if srv.stop_report else None
        if rec.stop is not None and not rec.stop["confirmed_gone"] and rec.error is None:
            rec.error = f"server processes {rec.stop['survivors']} were still alive after SIGKILL"
    return rec


def progress_line(rec: StartRecord, index: int, total: int, what: str = "of this run") -> str:
    head = f"probes ab: start {index}/{total} {what} ({rec.arm}, round {rec.round + 1})"
    if rec.error:
        return f"{head}: not a sample: {rec.error}"
    parts = [f"ready {fmt_number(rec.ready_s, '.1f')} s", f"weights {fmt_number(rec.weights_load_s, '.2f')} s"]
    if rec.ttft_ms is not None or rec.first_ttft_ms is not None:
        parts.append(f"TTFT first {fmt_number(rec.first_ttft_ms, '.1f')} ms, warm {fmt_number(rec.ttft_ms, '.1f')} ms")
    if rec.output_tok_per_s is not None:
        parts.append(f"{rec.output_tok_per_s:.0f} output tok/s at concurrency {rec.throughput_concurrency}")
    return f"{head}: " + ", ".join(parts)
