"""Continuous batching on a real vLLM server: N prompts at concurrency 1 (sequential), 2, 4, ... up to a limit.

    python -m probes batching --model tiny [-N 32] [--max-concurrency 64] [--repeats 4] [--max-tokens 128]
                              [--time-budget-s 900] [--json]
    python -m probes batching --endpoint http://127.0.0.1:8000 --api-key KEY --json

Per level: wall time, output tokens/s, TTFT p50/p95 and e2e p50/p95, from async streaming requests (httpx)
with at most `level` in flight. Throughput is one number per repeat, so levels are repeated and compared with
probes.stats; TTFT and e2e pool every request of a level. The knee is the first level after which throughput
no longer rises beyond noise while TTFT still does; it is named only when the repeats can show that.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from probes import cli, stats, vllm_client
from probes.server import add_server_args, detect_backend, measure_on_server
from probes.vllm_client import RequestRecord

MIN_COMPARE_N = getattr(stats, "MIN_COMPARE_N", 2)  # fewer samples and stats.compare cannot name a winner
FLAT_GAIN_PCT = 10.0  # a throughput step inside noise counts as flat only if its median gain is at most this


def levels_up_to(limit: int, n_prompts: int) -> list[int]:
    """1, 2, 4, ... up to min(limit, n_prompts), the limit itself included when it is not a power of two."""
    top = max(1, min(limit, n_prompts))
    out, c = [], 1
    while c < top:
        out.append(c)
        c *= 2
    out.append(top)
    return out


# ---- pure functions over raw samples --------------------------------------------------------------------


@dataclass
class LevelRun:
    """One repeat of one level: every request's record and the wall time of the whole batch."""

    concurrency: int
    repeat: int
    wall_s: float
    records: list[RequestRecord]


@dataclass
class LevelResult:
    concurrency: int
    repeats: int
    n_requests: int  # over all repeats
    n_ok: int
    errors: list[str]
    wall_s: dict  # per repeat
    output_tok_per_s: dict  # per repeat: output tokens of the batch / its wall time
    request_per_s: dict
    ttft_ms: dict  # every request of every repeat
    e2e_ms: dict
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    speedup_vs_sequential: float | None  # median output tok/s / the concurrency-1 median


def level_result(runs: list[LevelRun], sequential_tok_per_s: float | None = None) -> LevelResult:
    recs = [r for run in runs for r in run.records]
    ok = [r for r in recs if r.ok]
    tput, rps = [], []
    for run in runs:
        toks = [r.output_tokens for r in run.records if r.ok]
        if run.wall_s > 0 and toks and all(t is not None for t in toks) and all(r.ok for r in run.records):
            tput.append(sum(toks) / run.wall_s)
            rps.append(len(run.records) / run.wall_s)
    ttft = stats.summarize([r.ttft_s * 1e3 for r in ok], "ms")
    e2e = stats.summarize([r.e2e_s * 1e3 for r in ok if r.e2e_s is not None], "ms")
    tput_s = stats.summarize(tput, "tok/s")
    speedup = None
    if sequential_tok_per_s and tput_s["median"] is not None:
        speedup = tput_s["median"] / sequential_tok_per_s
    return LevelResult(
        concurrency=runs[0].concurrency,
        repeats=len(runs),
        n_requests=len(recs),
        n_ok=len(ok),
        errors=[r.error for r in recs if r.error][:10],
        wall_s=stats.summarize([run.wall_s for run in runs], "s"),
        output_tok_per_s=tput_s,
        request_per_s=stats.summarize(rps, "req/s"),
        ttft_ms=ttft,
        e2e_ms=e2e,
        ttft_p50_ms=ttft["median"],
        ttft_p95_ms=ttft["p95"],
        e2e_p50_ms=e2e["median"],
        e2e_p95_ms=e2e["p95"],
        speedup_vs_sequential=speedup,
    )


@dataclass
class Knee:
    concurrency: int | None  # the last level worth running; None when not found or not determinable
    determined: bool  # False: the data cannot say (too few repeats, or failed levels)
    text: str
    steps: list[dict]  # per consecutive pair: throughput and TTFT comparisons (probes.stats.compare)


def classify_step(thr: dict) -> str:
    """A throughput step lo -> hi: 'rose' beyond noise, 'fell' beyond noise, 'flat' (inside noise and the median
    gain at most FLAT_GAIN_PCT), or 'unclear' (inside noise but a large median gain: the repeats are too noisy
    to say it stopped rising)."""
    if thr["faster"] == thr["name_b"]:
        return "rose"
    if thr["faster"] == thr["name_a"]:
        return "fell"
    m_lo, m_hi = thr["a"]["median"], thr["b"]["median"]
    gain_pct = 100.0 * (m_hi - m_lo) / m_lo if m_lo else None
    return "flat" if gain_pct is not None and gain_pct <= FLAT_GAIN_PCT else "unclear"


def find_knee(levels: list[LevelResult]) -> Knee:
    """The first level k where going to the next level leaves throughput flat (or lowers it) while TTFT p50 rises
    beyond noise. 'Flat' needs MIN_COMPARE_N throughput samples (repeats) per level and a median gain of at
    most FLAT_GAIN_PCT inside noise; a noisy step with a large median gain is 'unclear', never a knee."""
    steps: list[dict] = []
    if len(levels) < 2:
        return Knee(None, False, "one level only: nothing to compare", steps)
    unclear: list[str] = []
    for lo, hi in zip(levels, levels[1:], strict=False):
        a, b = f"c={lo.concurrency}", f"c={hi.concurrency}"
        thr = stats.compare(lo.output_tok_per_s["samples"], hi.output_tok_per_s["samples"], name_a=a, name_b=b,
                            unit="tok/s", lower_is_better=False)
        ttft = stats.compare(lo.ttft_ms["samples"], hi.ttft_ms["samples"], name_a=a, name_b=b, unit="ms")
        step = classify_step(thr)
        steps.append({"from": lo.concurrency, "to": hi.concurrency, "throughput_step": step, "throughput": thr,
                      "ttft": ttft})
        if min(thr["a"]["n"], thr["b"]["n"]) < MIN_COMPARE_N:
            return Knee(None, False,
                        f"not determined: throughput at {a} or {b} has fewer than {MIN_COMPARE_N} repeats, so a "
                        f"flat step cannot be told from noise (use --repeats {MIN_COMPARE_N} or more)", steps)
        ttft_rose = ttft["faster"] == a  # the lower level has the better (lower) TTFT beyond noise
        if step == "unclear":
            unclear.append(f"{a}->{b}")
        elif step in ("flat", "fell") and ttft_rose:
            t_lo, t_hi = lo.output_tok_per_s["median"], hi.output_tok_per_s["median"]
            caveat = (f"; earlier steps {', '.join(unclear)} gained over {FLAT_GAIN_PCT:g} % but inside noise, so "
                      "throughput may have levelled off before this" if unclear else "")
            return Knee(
                lo.concurrency, True,
                f"knee at concurrency {lo.concurrency}: going to {hi.concurrency} left throughput {step} "
                f"({t_lo:.1f} -> {t_hi:.1f} tok/s; {thr['verdict']}) while TTFT p50 rose {lo.ttft_p50_ms:.1f} -> "
                f"{hi.ttft_p50_ms:.1f} ms ({ttft['verdict']}){caveat}", steps)
    top = levels[-1].concurrency
    if unclear:
        return Knee(None, False,
                    f"not determined up to concurrency {top}: steps {', '.join(unclear)} gained over "
                    f"{FLAT_GAIN_PCT:g} % in median throughput but inside noise; more repeats or a quieter machine "
                    "would tell", steps)
    return Knee(None, True,
                f"no knee up to concurrency {top}: at every step throughput rose beyond noise, or TTFT did not rise "
                "beyond noise", steps)


# ---- the runner -----------------------------------------------------------------------------------------


async def run_level(client, srv, *, concurrency: int, prompts: list[str], max_tokens: int, repeat: int) -> LevelRun:
    sem = asyncio.Semaphore(concurrency)
    headers = srv.headers()
    t0 = time.perf_counter()

    async def one(prompt: str) -> RequestRecord:
        async with sem:
            return await vllm_client.stream_request(client, srv.base_url, headers, "completions", srv.model_id,
                                                    prompt, max_tokens, t_ref=t0)

    records = await asyncio.gather(*(one(p) for p in prompts))
    return LevelRun(concurrency, repeat, time.perf_counter() - t0, list(records))


@dataclass
class BatchingRun:
    runs: list[LevelRun]
    skipped_levels: list[int]
    stopped_by: str | None  # why levels were skipped: the time budget, or None


async def run_batching(srv, *, levels: list[int], n_prompts: int, repeats: int, max_tokens: int,
                       prompt_words: int, warmup: int, time_budget_s: float, request_timeout_s: float) -> BatchingRun:
    import httpx

    tag = vllm_client.new_run_tag()
    index = 0
    runs: list[LevelRun] = []
    deadline = time.perf_counter() + time_budget_s
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(request_timeout_s, connect=10.0), limits=limits) as client:
        for _ in range(warmup):  # not counted: the first requests after start pay one-off costs
            await vllm_client.stream_request(client, srv.base_url, srv.headers(), "completions", srv.model_id,
                                             vllm_client.make_prompt(index, prompt_words, tag), max_tokens)
            index += 1
        for li, level in enumerate(levels):
            for rep in range(repeats):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return BatchingRun(runs, levels[li:], f"time budget {time_budget_s:g} s used up")
                prompts = [vllm_client.make_prompt(index + i, prompt_words, tag) for i in range(n_prompts)]
                index += n_prompts
                try:
                    runs.append(await asyncio.wait_for(
                        run_level(client, srv, concurrency=level, prompts=prompts, max_tokens=max_tokens,
                                  repeat=rep), remaining))
                except TimeoutError:
                    return BatchingRun(runs, levels[li:],
                                       f"time budget {time_budget_s:g} s ran out during concurrency {level}")
    return BatchingRun(runs, [], None)


def raw_run(run: LevelRun) -> dict:
    """A level run for the JSON: per request send offset, TTFT, e2e, tokens (chunk times left out: too many)."""
    return {
        "concurrency": run.concurrency,
        "repeat": run.repeat,
        "wall_s": run.wall_s,
        "requests": [
            {"sent_at_s": r.sent_at_s, "ttft_s": r.ttft_s, "e2e_s": r.e2e_s, "output_tokens": r.output_tokens,
             "prompt_tokens": r.prompt_tokens, "chunks": len(r.chunk_times_s), "error": r.error}
            for r in run.records
        ],
    }


@dataclass
class BatchingResults:
    levels: list[LevelResult]
    knee: Knee
    skipped_levels: list[int]
    stopped_by: str | None
    table: list[str]


def compute(run: BatchingRun) -> BatchingResults:
    by_level: dict[int, list[LevelRun]] = {}
    for r in run.runs:
        by_level.setdefault(r.concurrency, []).append(r)
    levels: list[LevelResult] = []
    seq = None
    for c in sorted(by_level):
        lr = level_result(by_level[c], seq)
        if c == 1:
            seq = lr.output_tok_per_s["median"]
            lr.speedup_vs_sequential = 1.0 if seq else None
        levels.append(lr)
    return BatchingResults(levels, find_knee(levels), run.skipped_levels, run.stopped_by, format_table(levels))


def _n(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def format_table(levels: list[LevelResult]) -> list[str]:
    head = f"{'conc':>5} {'reps':>4} {'ok':>7} {'wall s':>8} {'out tok/s':>10} {'IQR%':>5} {'speedup':>7} " \
           f"{'TTFT p50':>9} {'TTFT p95':>9} {'e2e p50':>9} {'e2e p95':>9}"
    rows = [head]
    for lv in levels:
        t = lv.output_tok_per_s
        iqr = None if t["median"] in (None, 0) or t["iqr"] is None else 100 * t["iqr"] / t["median"]
        ok = f"{lv.n_ok}/{lv.n_requests}"
        rows.append(
            f"{lv.concurrency:>5} {lv.repeats:>4} {ok:>7} {_n(lv.wall_s['median'], '{:.2f}'):>8} "
            f"{_n(t['median']):>10} {_n(iqr, '{:.0f}'):>5} {_n(lv.speedup_vs_sequential, '{:.2f}x'):>7} "
            f"{_n(lv.ttft_p50_ms):>9} {_n(lv.ttft_p95_ms):>9} {_n(lv.e2e_p50_ms):>9} {_n(lv.e2e_p95_ms):>9}")
    return rows


def verdicts_for(res: BatchingResults, result_mod) -> list[dict]:
    v = []
    failed = [lv.concurrency for lv in res.levels if lv.n_ok < lv.n_requests]
    if failed:
        v.append(result_mod.verdict("requests_ok", "fail", f"requests failed at concurrency {failed}: "
                                    f"{next(lv.errors for lv in res.levels if lv.errors)[:2]}"))
    elif res.levels:
        v.append(result_mod.verdict("requests_ok", "pass",
                                    f"all {sum(lv.n_requests for lv in res.levels)} requests completed"))
    if res.levels and res.levels[0].concurrency == 1 and len(res.levels) > 1:
        seq, top = res.levels[0], res.levels[-1]
        v.append(result_mod.verdict(
            "sequential_vs_concurrent", "info",
            f"{seq.n_requests // seq.repeats} prompts: sequential {_n(seq.wall_s['median'], '{:.2f}')} s "
            f"({_n(seq.output_tok_per_s['median'])} tok/s) vs concurrency {top.concurrency} "
            f"{_n(top.wall_s['median'], '{:.2f}')} s ({_n(top.output_tok_per_s['median'])} tok/s, "
            f"{_n(top.speedup_vs_sequential, '{:.2f}x')}); medians of {seq.repeats} repeats"))
    v.append(result_mod.verdict("knee", "info" if res.knee.determined else "warn", res.knee.text))
    if res.skipped_levels:
        v.append(result_mod.verdict("levels_skipped", "warn",
                                    f"concurrency {res.skipped_levels} not measured: {res.stopped_by}"))
    return v


def _arguments(parser) -> None:
    add_server_args(parser)
    parser.add_argument("-N", "--prompts", type=int, default=32, help="prompts per level and repeat")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=max(4, MIN_COMPARE_N),
                        help="repeats per level (throughput is one number per repeat)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-words", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--time-budget-s", type=float, default=900.0, help="levels not started by then are skipped")
    parser.add_argument("--request-timeout-s", type=float, default=300.0)


def _check(args, parser) -> list[int]:
    if args.prompts < 1 or args.repeats < 1 or args.max_concurrency < 1:
        parser.error("--prompts, --repeats and --max-concurrency must be at least 1")
    return levels_up_to(args.max_concurrency, args.prompts)


def on_server(args, levels: list[int]):
    """(results, measure): ``measure(srv, verdicts)`` fills results while srv serves (alone or shared)."""
    from probes import result

    results: dict = {"backend": detect_backend(), "levels_planned": levels}

    def measure(srv, verdicts: list[dict]) -> None:
        run = asyncio.run(run_batching(
            srv, levels=levels, n_prompts=args.prompts, repeats=args.repeats, max_tokens=args.max_tokens,
            prompt_words=args.prompt_words, warmup=args.warmup, time_budget_s=args.time_budget_s,
            request_timeout_s=args.request_timeout_s))
        res = compute(run)
        results.update(vars(res))
        results["raw"] = [raw_run(r) for r in run.runs]
        verdicts += verdicts_for(res, result)
        if not args.json:
            sys.stderr.write("\n".join(res.table) + "\n")

    return results, measure


def _measure(args, levels: list[int]) -> cli.Report:
    return measure_on_server(args, *on_server(args, levels))


PROBE = cli.Probe("batching", __doc__, arguments=_arguments, check=_check, measure=_measure, hidden=("api_key",))


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
