"""Time to first token on a real vLLM server: the cold request, warm repeats, and the server's own view.

    python -m probes ttft --model tiny [-n 20] [--input-tokens 256 --output-tokens 32 [--peer-rounds 2]]
                          [--api completions,chat] [--enforce-eager] [--kv-budget 1GiB|0.5] [--json]
    python -m probes ttft --model tiny [--prompt-words 128] [--max-tokens 32] ...   (prompts sized in words)
    python -m probes ttft --endpoint http://127.0.0.1:8000 --api-key KEY --json

Cold = the first request after /health turned ready; warm = the n that follow (n >= 10), one at a time,
streaming, temperature 0, exactly --output-tokens (ignore_eos). --input-tokens N sizes every prompt to exactly
N prompt tokens by the model's own tokenizer (probes.token_prompts), as `vllm bench serve --random-input-len N`
does; the server's own count of each request's prompt tokens is checked against N. Every prompt is unique from
its first token, so vLLM's prefix cache (on by default) cannot serve any of it; the cache hits the server
counted are reported. The server's TTFT for exactly these requests comes from /metrics scraped before and after
each window (`vllm:time_to_first_token_seconds` sum and count deltas); client minus server is information
(HTTP, SSE framing and detokenising cost about 3 ms on any node). --peer-rounds R runs `vllm bench serve`
against the same server, alternating with the probe's own requests (probes.peer), and reports probe - peer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from probes import cli, peer, stats, token_prompts, vllm_client, vllm_metrics
from probes.core.probe_options import MIN_WARM
from probes.server import add_server_args, detect_backend, measure_on_server, phase_split
from probes.vllm_client import RequestRecord

GOAL_MS = 2.0
GOAL_PCT = 2.0
MAX_TOKENS = 32
PROMPT_WORDS = 128


# ---- pure functions over raw samples --------------------------------------------------------------------


@dataclass
class TtftStats:
    api: str
    n_requests: int
    n_ok: int
    errors: list[str]
    ttft_ms: dict  # stats.summarize
    e2e_ms: dict
    itl_ms: dict  # every gap between text chunks, pooled over the requests
    tpot_ms: dict  # per request: (e2e - ttft) / (tokens - 1)
    output_tokens: list[int | None]
    prompt_tokens: list[int | None]


def ttft_stats(api: str, records: list[RequestRecord], *, seed: int = 0) -> TtftStats:
    ok = [r for r in records if r.ok]
    return TtftStats(
        api=api,
        n_requests=len(records),
        n_ok=len(ok),
        errors=[r.error for r in records if r.error],
        ttft_ms=stats.summarize([r.ttft_s * 1e3 for r in ok], "ms", seed=seed),
        e2e_ms=stats.summarize([r.e2e_s * 1e3 for r in ok if r.e2e_s is not None], "ms", seed=seed),
        itl_ms=stats.summarize([g * 1e3 for r in ok for g in r.itl_s], "ms", seed=seed),
        tpot_ms=stats.summarize([r.tpot_s * 1e3 for r in ok if r.tpot_s is not None], "ms", seed=seed),
        output_tokens=[r.output_tokens for r in records],
        prompt_tokens=[r.prompt_tokens for r in records],
    )


@dataclass
class ClientVsServer:
    """Client TTFT against vLLM's own histogram over the same requests (means: the histogram has only a sum)."""

    window: str
    n_client: int
    n_server: int | None  # requests the server's histogram counted in the window
    client_mean_ms: float | None
    client_median_ms: float | None
    server_mean_ms: float | None
    server_p50_ms_bucket_estimate: float | None  # from bucket edges: coarse, a cross-check only
    diff_ms: float | None  # client mean - server mean
    diff_pct: float | None  # of the server mean
    goal: str
    goal_met: bool | None  # None when the two cannot be compared
    text: str


def client_vs_server(
    window: str, client_ttft_ms: list[float], server_delta: vllm_metrics.Histogram | None
) -> ClientVsServer:
    goal = f"client TTFT within {GOAL_PCT:g} % or {GOAL_MS:g} ms of the server's"
    n = len(client_ttft_ms)
    c_mean = sum(client_ttft_ms) / n if n else None
    c_med = stats.summarize(client_ttft_ms, "ms")["median"] if n else None
    base = dict(window=window, n_client=n, client_mean_ms=c_mean, client_median_ms=c_med, goal=goal)
    if server_delta is None:
        return ClientVsServer(**base, n_server=None, server_mean_ms=None, server_p50_ms_bucket_estimate=None,
                              diff_ms=None, diff_pct=None, goal_met=None,
                              text="no server-side figure: /metrics has no vllm:time_to_first_token_seconds")
    n_server = int(round(server_delta.count))
    s_mean = server_delta.sum / server_delta.count * 1e3 if server_delta.count > 0 else None
    p50 = vllm_metrics.histogram_quantile(server_delta, 0.5)
    base.update(n_server=n_server, server_mean_ms=s_mean,
                server_p50_ms_bucket_estimate=None if p50 is None else p50 * 1e3)
    if n == 0 or s_mean is None or n_server != n:
        return ClientVsServer(
            **base, diff_ms=None, diff_pct=None, goal_met=None,
            text=f"not compared: the server counted {n_server} requests in the window, the client sent {n} "
                 "successful ones (other traffic on the server, or observations not yet recorded)")
    diff = c_mean - s_mean
    pct = 100.0 * diff / s_mean if s_mean > 0 else None
    met = abs(diff) <= GOAL_MS or (pct is not None and abs(pct) <= GOAL_PCT)
    text = (f"client mean {c_mean:.2f} ms vs server mean {s_mean:.2f} ms over the same {n} requests: "
            f"client - server = {diff:+.2f} ms ({'n/a' if pct is None else f'{pct:+.1f} %'}); "
            f"{'within' if met else 'beyond'} {GOAL_PCT:g} % or {GOAL_MS:g} ms: what the client itself adds (HTTP, "
            "streaming, detokenising), information, not a property of the node")
    return ClientVsServer(**base, diff_ms=diff, diff_pct=pct, goal_met=met, text=text)


@dataclass
class ColdStart:
    """Process start -> ready, and what the first request costs on top of a warm one."""

    started_by_probe: bool
    cold_is_first_request_since_start: bool | None  # None when /metrics could not tell
    process_start_to_ready_s: float | None
    start_phases_s: dict
    startup_log: dict  # what vLLM logged about load, compile, graphs, KV
    first_request_ttft_ms: float | None
    first_request_e2e_ms: float | None
    warm_median_ttft_ms: float | None
    warm_p95_ttft_ms: float | None
    first_request_penalty_ms: float | None  # cold TTFT - warm median TTFT
    penalty_beyond_warm_spread: bool | None  # cold above the warm p95; one cold sample has no CI of its own
    text: str


def cold_start(
    *, started_by_probe: bool, served_before: float | None, ready_s: float | None, phases: dict, startup_log: dict,
    cold: RequestRecord | None, warm_ttft: dict,
) -> ColdStart:
    first_since_start = None if served_before is None else served_before == 0
    c_ttft = cold.ttft_s * 1e3 if cold is not None and cold.ok else None
    c_e2e = cold.e2e_s * 1e3 if cold is not None and cold.ok and cold.e2e_s is not None else None
    w_med, w_p95 = warm_ttft.get("median"), warm_ttft.get("p95")
    penalty = c_ttft - w_med if c_ttft is not None and w_med is not None else None
    beyond = c_ttft > w_p95 if c_ttft is not None and w_p95 is not None and warm_ttft.get("n", 0) >= 2 else None
    parts = []
    if ready_s is not None:
        parts.append(f"process start -> ready {ready_s:.1f} s")
    if c_ttft is not None:
        parts.append(f"first request TTFT {c_ttft:.1f} ms")
    if penalty is not None:
        where = ("above the warm p95, a real first-request penalty" if beyond
                 else "inside the warm spread (<= p95), no penalty beyond noise" if beyond is False
                 else "warm spread unknown")
        parts.append(f"{penalty:+.1f} ms vs the warm median {w_med:.1f} ms ({where})")
    if first_since_start is False:
        parts.append("the server had served requests before, so this was not its first request")
    return ColdStart(
        started_by_probe=started_by_probe, cold_is_first_request_since_start=first_since_start,
        process_start_to_ready_s=ready_s, start_phases_s=phases, startup_log=startup_log,
        first_request_ttft_ms=c_ttft, first_request_e2e_ms=c_e2e, warm_median_ttft_ms=w_med, warm_p95_ttft_ms=w_p95,
        first_request_penalty_ms=penalty, penalty_beyond_warm_spread=beyond,
        text="; ".join(parts) if parts else "no cold-start figures",
    )


@dataclass
class PrefixCacheReport:
    enabled: bool | None  # from vllm:cache_config_info; None when the server does not say
    prompts_unique: bool
    hit_tokens: float | None  # during the measured requests
    query_tokens: float | None
    text: str


def prefix_cache_report(enabled: bool | None, hits: float | None, queries: float | None) -> PrefixCacheReport:
    state = {True: "on", False: "off", None: "not reported by the server"}[enabled]
    if hits is None or queries is None:
        usage = "the server exposes no prefix-cache counters"
    else:
        usage = f"{hits:.0f} of {queries:.0f} prompt tokens were served from the prefix cache during the runs"
    return PrefixCacheReport(enabled, True, hits, queries,
                             f"prefix caching {state}; every prompt is unique from its first token; {usage}")


# ---- the runner -----------------------------------------------------------------------------------------


def _delta_counter(before, after, name) -> float | None:
    if before is None or after is None:
        return None
    a, b = vllm_metrics.counter_total(after, name), vllm_metrics.counter_total(before, name)
    return None if a is None or b is None else a - b


def _ttft_delta(before, after) -> vllm_metrics.Histogram | None:
    if before is None or after is None:
        return None
    return vllm_metrics.histogram_delta(vllm_metrics.histogram(before, vllm_metrics.TTFT_HISTOGRAM),
                                        vllm_metrics.histogram(after, vllm_metrics.TTFT_HISTOGRAM))


@dataclass
class TtftRun:
    """Raw material of one probe run: every request record and every scrape, before any statistics."""

    cold: RequestRecord | None
    warm: dict[str, list[RequestRecord]]
    scrapes: dict[str, list | None]  # "before_cold", "after_cold", "before_<api>", "after_<api>"


async def run_requests(srv, *, apis: list[str], n: int, max_tokens: int, prompt_words: int | None = None,
                       request_timeout_s: float, run_tag: str | None = None, prompt_for=None,
                       enough=None, max_n: int | None = None) -> TtftRun:
    """prompt_for(index, api) -> prompt (sized in tokens); without it, prompts of prompt_words words.

    With ``enough(records) -> bool``, each api's warm requests go on in further rounds of n until it says so or
    the next round would pass ``max_n`` requests (a precision target: warm_precision)."""
    tag = run_tag or vllm_client.new_run_tag()
    if prompt_for is None:
        def prompt_for(index, _api):
            return vllm_client.make_prompt(index, prompt_words, tag)
    headers = srv.headers()
    scrapes: dict[str, list | None] = {}
    warm: dict[str, list[RequestRecord]] = {}
    index = 0
    async with httpx_client(request_timeout_s) as client:
        scrapes["before_cold"] = await vllm_client.scrape(client, srv.base_url, headers)
        cold = await vllm_client.stream_request(client, srv.base_url, headers, apis[0], srv.model_id,
                                                prompt_for(index, apis[0]), max_tokens)
        index += 1
        scrapes["after_cold"] = await vllm_client.scrape_after(client, srv.base_url, headers,
                                                               scrapes["before_cold"], 1)
        srv.snapshot_memory("after_first_request")
        for api in apis:
            scrapes[f"before_{api}"] = await vllm_client.scrape(client, srv.base_url, headers)
            records = []
            while True:
                for _ in range(n):
                    records.append(await vllm_client.stream_request(
                        client, srv.base_url, headers, api, srv.model_id,
                        prompt_for(index, api), max_tokens))
                    index += 1
                if enough is None or len(records) + n > (max_n or 0) or enough(records):
                    break
            ok = sum(r.ok for r in records)
            scrapes[f"after_{api}"] = await vllm_client.scrape_after(client, srv.base_url, headers,
                                                                     scrapes[f"before_{api}"], ok)
            warm[api] = records
    return TtftRun(cold, warm, scrapes)


def httpx_client(timeout_s: float):
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0),
                             limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))


@dataclass
class TtftResults:
    apis: list[str]
    warm: dict[str, TtftStats]
    client_vs_server: dict[str, ClientVsServer]  # "cold" and each api's warm window
    cold_start: ColdStart
    prefix_cache: PrefixCacheReport
    cache_config: vllm_metrics.CacheConfig | None
    notes: list[str]


def compute(run: TtftRun, *, started_by_probe: bool, ready_s: float | None,
            phases: dict, startup_log) -> TtftResults:
    """Everything the probe reports, from the raw run alone."""
    warm = {api: ttft_stats(api, recs) for api, recs in run.warm.items()}
    cvs: dict[str, ClientVsServer] = {}
    s = run.scrapes
    cold_ms = [run.cold.ttft_s * 1e3] if run.cold is not None and run.cold.ok else []
    cvs["cold"] = client_vs_server("cold", cold_ms, _ttft_delta(s.get("before_cold"), s.get("after_cold")))
    hits = queries = 0.0
    for api, recs in run.warm.items():
        ms = [r.ttft_s * 1e3 for r in recs if r.ok]
        cvs[api] = client_vs_server(api, ms, _ttft_delta(s.get(f"before_{api}"), s.get(f"after_{api}")))
        h = _delta_counter(s.get(f"before_{api}"), s.get(f"after_{api}"), vllm_metrics.PREFIX_CACHE_HITS)
        q = _delta_counter(s.get(f"before_{api}"), s.get(f"after_{api}"), vllm_metrics.PREFIX_CACHE_QUERIES)
        hits = None if h is None or hits is None else hits + h
        queries = None if q is None or queries is None else queries + q
    before = s.get("before_cold")
    served_before = None
    if before is not None:
        h = vllm_metrics.histogram(before, vllm_metrics.TTFT_HISTOGRAM)
        served_before = None if h is None else h.count
    cache = vllm_metrics.cache_config(before) if before is not None else None
    first_api = next(iter(run.warm), None)
    cs = cold_start(
        started_by_probe=started_by_probe, served_before=served_before, ready_s=ready_s, phases=phases,
        startup_log=startup_log, cold=run.cold,
        warm_ttft=warm[first_api].ttft_ms if first_api else {},
    )
    notes = []
    if not started_by_probe:
        notes.append("--endpoint: the probe did not start this server, so no process start -> ready figures")
    return TtftResults(
        apis=list(run.warm), warm=warm, client_vs_server=cvs, cold_start=cs,
        prefix_cache=prefix_cache_report(cache.enable_prefix_caching if cache else None, hits, queries),
        cache_config=cache, notes=notes,
    )


def verdicts_for(res: TtftResults, result_mod) -> list[dict]:
    v = []
    for api, st in res.warm.items():
        t = st.ttft_ms
        if t["n"] == 0:
            v.append(result_mod.verdict(f"ttft_warm_{api}", "fail", f"no successful {api} request: {st.errors[:3]}"))
            continue
        spread = f"; {t['spread_warning']}" if t["spread_warning"] else ""
        v.append(result_mod.verdict(
            f"ttft_warm_{api}", "warn" if st.n_ok < st.n_requests or t["spread_warning"] else "info",
            f"{api}: warm TTFT median {t['median']:.2f} ms (95 % CI {t['ci_low']:.2f}-{t['ci_high']:.2f}, "
            f"p5 {t['p5']:.2f}, p95 {t['p95']:.2f}, n={t['n']} of {st.n_requests}){spread}"))
    for window, c in res.client_vs_server.items():  # HTTP's cost, the same on every node: information
        v.append(result_mod.verdict(f"client_vs_server_{window}", "info", c.text))
    v.append(result_mod.verdict("cold_start", "info", res.cold_start.text))
    v.append(result_mod.verdict("prefix_cache", "info", res.prefix_cache.text))
    return v


def _arguments(parser) -> None:
    add_server_args(parser)
    parser.add_argument("-n", "--warm", type=int, default=20, help=f"warm requests per API (>= {MIN_WARM})")
    parser.add_argument("--input-tokens", type=int, default=None,
                        help="prompt tokens per request, exact by the model's tokenizer (as bench serve's random "
                             "--random-input-len)")
    parser.add_argument("--output-tokens", type=int, default=None, help="output tokens per request (ignore_eos)")
    parser.add_argument("--max-tokens", type=int, default=None, help=f"as --output-tokens (default {MAX_TOKENS})")
    parser.add_argument("--prompt-words", type=int, default=None,
                        help=f"prompts sized in words instead of tokens (default {PROMPT_WORDS} without "
                             "--input-tokens)")
    parser.add_argument("--peer-rounds", type=int, default=0,
                        help="rounds of `vllm bench serve` then the probe, on the same server (0: off; needs "
                             "--input-tokens)")
    parser.add_argument("--warm-ci-pct", type=float, default=None,
                        help="go on sending warm requests, n at a time, until the 95 %% interval of the median TTFT "
                             "is within this percentage of the median on both sides, or --warm-max is reached")
    parser.add_argument("--warm-max", type=int, default=None,
                        help="the most warm requests per API with --warm-ci-pct (default 10 x -n)")
    parser.add_argument("--api", default="completions,chat", help="completions, chat or both (comma-separated)")
    parser.add_argument("--request-timeout-s", type=float, default=300.0)


def _check(args, parser) -> list[str]:
    apis = [a.strip() for a in args.api.split(",") if a.strip()]
    if not apis or any(a not in vllm_client.APIS for a in apis):
        parser.error(f"--api {args.api!r}: choose from {','.join(vllm_client.APIS)}")
    if args.warm < MIN_WARM:
        parser.error(f"-n {args.warm}: at least {MIN_WARM} warm requests are needed for a median with a spread")
    if args.warm_ci_pct is not None and not 0 < args.warm_ci_pct < 100:
        parser.error(f"--warm-ci-pct {args.warm_ci_pct}: a percentage above 0 and below 100")
    if args.warm_max is not None and (args.warm_ci_pct is None or args.warm_max < args.warm):
        parser.error(f"--warm-max {args.warm_max}: goes with --warm-ci-pct, and at least -n ({args.warm})")
    if args.warm_ci_pct is not None and args.warm_max is None:
        args.warm_max = 10 * args.warm
    for given, other in (("input_tokens", "prompt_words"), ("output_tokens", "max_tokens")):
        if getattr(args, given) is not None and getattr(args, other) is not None:
            parser.error(f"--{given.replace('_', '-')} and --{other.replace('_', '-')} size the same thing: "
                         "give one")
    if args.input_tokens is not None and args.input_tokens < 2:
        parser.error(f"--input-tokens {args.input_tokens}: at least 2 (the tokenizer's own tokens count too)")
    if args.output_tokens is not None and args.output_tokens < 1:
        parser.error(f"--output-tokens {args.output_tokens}: at least 1")
    if args.peer_rounds < 0 or (args.peer_rounds and args.input_tokens is None):
        parser.error(f"--peer-rounds {args.peer_rounds}: 0 (off), or 1 or more with --input-tokens (the peer's "
                     "prompts are sized in tokens)")
    args.max_tokens = args.output_tokens or args.max_tokens or MAX_TOKENS
    if args.input_tokens is None:
        args.prompt_words = args.prompt_words or PROMPT_WORDS
    return apis


def on_server(args, apis: list[str]):
    """(results, measure): ``measure(srv, verdicts)`` fills results while srv serves (alone or shared)."""
    from probes import result

    results: dict = {"backend": detect_backend()}

    def measure(srv, verdicts: list[dict]) -> None:
        tag = vllm_client.new_run_tag()
        sizing = prompt_sizing(srv, args, tag)
        run = asyncio.run(run_requests(srv, apis=apis, n=args.warm, max_tokens=args.max_tokens,
                                       prompt_words=args.prompt_words, request_timeout_s=args.request_timeout_s,
                                       run_tag=tag, prompt_for=sizing.prompt_for, max_n=args.warm_max,
                                       enough=precise_enough(args.warm_ci_pct)))
        res = compute(run, started_by_probe=srv.started_by_probe,
                      ready_s=srv.timeline.ready_s if srv.timeline else None,
                      phases=phase_split(srv.timeline), startup_log=srv.startup())
        results.update(vars(res))
        results["raw"] = {"cold": run.cold, "warm": run.warm}
        verdicts += verdicts_for(res, result)
        if args.warm_ci_pct is not None:
            results["warm_precision"] = precision(res, args.warm_ci_pct, args.warm_max)
            verdicts += precision_verdicts(results["warm_precision"], result)
        records = ([run.cold] if run.cold is not None else []) + [r for recs in run.warm.values() for r in recs]
        results["prompts"] = token_prompts.prompt_report(sizing, records, args.max_tokens)
        verdicts.append(token_prompts.prompt_verdict(results["prompts"], result))
        if args.peer_rounds:
            cmp = peer.run_rounds(srv, rounds=args.peer_rounds, tokenizer_dir=sizing.tokenizer_dir,
                                  input_tokens=args.input_tokens, output_tokens=args.max_tokens,
                                  prompts=args.warm, prompt_for=sizing.prompt_for,
                                  start_index=1 + sum(map(len, run.warm.values())), timeout_s=args.request_timeout_s)
            results["peer"] = cmp
            verdicts.append(peer.verdict(cmp, result))

    return results, measure


def precise_enough(target_pct: float | None):
    """The stop rule of an adaptive warm sample: the 95 % interval of the median TTFT within target_pct of it."""
    if target_pct is None:
        return None

    def enough(records: list[RequestRecord]) -> bool:
        width = stats.ci_half_width_pct(stats.summarize([r.ttft_s * 1e3 for r in records if r.ok], "ms"))
        return width is not None and width <= target_pct

    return enough


def precision(res, target_pct: float, max_n: int) -> dict:
    """Per api: the target, the cap, the n sent and the interval's reach (percent of the median) it got to."""
    out = {}
    for api, st in res.warm.items():
        width = stats.ci_half_width_pct(st.ttft_ms)
        out[api] = {"target_ci_pct": target_pct, "max_requests": max_n, "n": st.n_requests,
                    "ci_pct": width, "reached": width is not None and width <= target_pct}
    return out


def precision_verdicts(prec: dict, result) -> list[dict]:
    """Information, not a warning: a TTFT that varies more than the target allows is already in the warm figure's
    spread; this says how far the sample got."""
    out = []
    for api, p in prec.items():
        got = "no interval" if p["ci_pct"] is None else f"+-{p['ci_pct']:.1f} % of the median"
        how = "reached" if p["reached"] else f"not reached within {p['max_requests']} requests"
        out.append(result.verdict(f"ttft_warm_precision_{api}", "info",
                                  f"{api}: 95 % interval of the warm median TTFT {got} after {p['n']} requests "
                                  f"(target +-{p['target_ci_pct']:g} %: {how})"))
    return out


def prompt_sizing(srv, args, run_tag: str) -> token_prompts.PromptSizing:
    """Word- or token-sized prompts; the tokenizer is the served model's: the started server's model directory,
    else the endpoint's /v1/models root where it is a directory here, else --model."""
    if args.input_tokens is None:
        return token_prompts.sizing(None, args.prompt_words, run_tag)
    spec = getattr(srv, "spec", None)
    if spec is not None:
        where, source = spec.model, "the model the probe's server loaded"
    else:
        where, source = _served_root(srv), "the endpoint's /v1/models root"
        if where is None:
            from probes import model as model_mod

            where, source = str(model_mod.resolve(args.model)), "--model (the endpoint names no local directory)"
    return token_prompts.sizing(args.input_tokens, None, run_tag, where, source)


def _served_root(srv) -> str | None:
    from pathlib import Path

    import httpx

    try:
        data = httpx.get(srv.base_url + "/v1/models", headers=srv.headers(), timeout=30.0).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    root = next((m.get("root") for m in data if m.get("id") == srv.model_id), None)
    return root if root and Path(root).is_dir() else None


def _measure(args, apis: list[str]) -> cli.Report:
    return measure_on_server(args, *on_server(args, apis))


PROBE = cli.Probe("ttft", __doc__, arguments=_arguments, check=_check, measure=_measure, hidden=("api_key",))


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
