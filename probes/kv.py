"""KV cache capacity on a real vLLM server: how it follows the memory budget and what --max-model-len does.

    python -m probes kv --model tiny --max-model-len 4096,16384,32768 --kv-budget 0.3,0.5,0.7 [--enforce-eager] [--json]
    (CPU builds: --kv-budget 512MiB,1GiB; a budget <= 1 is a fraction of GPU memory, anything else bytes)

Plan: every length at the first budget, then every other budget at the first length, one server start each.
Per configuration it reads what vLLM reports (`vllm:cache_config_info` labels and the start-up log): KV
tokens, blocks, block size, maximum concurrency, and the device memory in use after ready; bytes per token
come from budget / tokens and from the slope of tokens across budgets, against the theory from the model's
config.json (2 x layers x KV heads x head_dim x dtype bytes). A length that does not fit is a result naming
the largest length vLLM says fits. The conclusions say only what the measured numbers show.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from probes import cli, vllm_metrics
from probes.server import (
    KvBudget,
    ProbeTerminated,
    ServerStartError,
    VllmServer,
    add_server_args,
    detect_backend,
    interrupted_text,
    parse_kv_budget,
    spec_from_args,
)

GIB = 1024**3
THEORY_TOLERANCE_PCT = 1.0  # bytes per token within 1 % of the config's theory
SAME_MEMORY_PCT = 2.0  # "did not change the memory used": within 2 % across lengths
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1, "fp8_e4m3": 1,
               "fp8_e5m2": 1, "int8": 1}


# ---- pure functions -------------------------------------------------------------------------------------


def plan(lengths: list[int], budgets: list[KvBudget]) -> list[tuple[int, KvBudget]]:
    """Each length at the first budget, then each other budget at the first length (each pair once, in order)."""
    return list(dict.fromkeys([(n, budgets[0]) for n in lengths] + [(lengths[0], b) for b in budgets[1:]]))


@dataclass
class KvTheory:
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    dtype_bytes: int
    bytes_per_token: int  # 2 (K and V) x layers x kv_heads x head_dim x dtype bytes
    caveats: list[str]


def kv_theory(config: dict, served_dtype: str | None = None, kv_cache_dtype: str | None = None) -> KvTheory:
    """From config.json; the dtype is the KV cache dtype when set, else the one vLLM serves in, else the config's."""
    cfg = config.get("text_config", config)
    layers = int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    caveats = []
    if kv_cache_dtype and kv_cache_dtype != "auto":
        dtype = kv_cache_dtype
    elif served_dtype:
        dtype = served_dtype
    else:
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "float16")
        caveats.append(f"dtype {dtype} taken from config.json: the server log did not say which dtype it ran")
    dtype = dtype.removeprefix("torch.")
    nbytes = DTYPE_BYTES.get(dtype) or DTYPE_BYTES.get(dtype.split("_")[0])
    if nbytes is None:
        raise ValueError(f"unknown dtype {dtype!r} for the KV cache theory")
    types = cfg.get("layer_types") or []
    if any(t != "full_attention" for t in types) or cfg.get("use_sliding_window"):
        caveats.append("some layers use sliding-window attention: the full-attention theory overstates their KV")
    return KvTheory(layers, kv_heads, head_dim, dtype, nbytes, 2 * layers * kv_heads * head_dim * nbytes, caveats)


def slope_bytes_per_token(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of KV tokens against budget bytes, inverted; None without two distinct budgets."""
    pts = [(x, y) for x, y in points if x is not None and y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    if sxy <= 0:
        return None  # tokens did not grow with the budget: there is no bytes-per-token slope to speak of
    return sxx / sxy


@dataclass
class KvConfigResult:
    max_model_len: int
    budget: str
    budget_kind: str  # fraction | bytes
    budget_value: float
    fits: bool | None  # None: the start failed for another reason
    failure_kind: str | None = None
    largest_fitting_len: int | None = None  # from vLLM's error when the length does not fit
    error: str | None = None
    kv_tokens: int | None = None
    num_blocks: int | None = None
    block_size: int | None = None
    max_concurrency: float | None = None  # vLLM's figure at this max-model-len
    max_concurrency_from_tokens: float | None = None  # kv_tokens / max_model_len, the check
    budget_bytes: float | None = None  # the budget in bytes: as given (CPU), or fraction x GPU total
    kv_memory_bytes: float | None = None  # what vLLM gave the KV cache ("Available KV cache memory", or the bytes)
    bytes_per_token: float | None = None  # kv_memory_bytes / kv_tokens
    gpu_used_before_bytes: int | None = None
    gpu_used_after_ready_bytes: int | None = None  # device memory in use (NVML, all processes)
    gpu_used_by_server_bytes: int | None = None  # after ready - before start
    server_pss_bytes: int | None = None  # CPU memory of the server's processes after ready
    served_dtype: str | None = None
    kv_cache_dtype: str | None = None
    ready_s: float | None = None
    log_path: str | None = None
    stopped_cleanly: bool | None = None
    startup_log: dict = field(default_factory=dict)


def config_result(length: int, budget: KvBudget, *, cache: vllm_metrics.CacheConfig | None,
                  log: vllm_metrics.StartupLog, memory: dict, ready_s: float | None, log_path: str | None,
                  stopped_cleanly: bool | None) -> KvConfigResult:
    """One configuration that started, from its /metrics labels, its log and its memory snapshots."""
    tokens = (cache.kv_cache_size_tokens if cache else None) or log.kv_cache_tokens
    conc = (cache.kv_cache_max_concurrency if cache else None)
    if conc is None and log.max_concurrency_len == length:
        conc = log.max_concurrency
    gpu_total = memory.get("gpu_total_bytes")
    if budget.kind == "bytes":
        budget_bytes = budget.value
    else:
        budget_bytes = budget.value * gpu_total if gpu_total else None
    if log.available_kv_cache_gib is not None:
        kv_mem = log.available_kv_cache_gib * GIB
    elif cache and cache.kv_cache_memory_bytes:
        kv_mem = float(cache.kv_cache_memory_bytes)
    elif budget.kind == "bytes":
        kv_mem = budget.value
    else:
        kv_mem = None
    before, after = memory.get("gpu_used_before_bytes"), memory.get("gpu_used_after_ready_bytes")
    return KvConfigResult(
        max_model_len=length, budget=budget.label, budget_kind=budget.kind, budget_value=budget.value, fits=True,
        kv_tokens=tokens, num_blocks=cache.num_blocks if cache else None,
        block_size=cache.block_size if cache else None, max_concurrency=conc,
        max_concurrency_from_tokens=tokens / length if tokens else None,
        budget_bytes=budget_bytes, kv_memory_bytes=kv_mem,
        bytes_per_token=kv_mem / tokens if kv_mem and tokens else None,
        gpu_used_before_bytes=before, gpu_used_after_ready_bytes=after,
        gpu_used_by_server_bytes=after - before if after is not None and before is not None else None,
        server_pss_bytes=memory.get("server_pss_bytes"), served_dtype=log.dtype, kv_cache_dtype=log.kv_cache_dtype,
        ready_s=ready_s, log_path=log_path, stopped_cleanly=stopped_cleanly,
        startup_log=vars(log),
    )


def failed_result(length: int, budget: KvBudget, failure: vllm_metrics.StartFailure | None, error: str,
                  log_path: str | None, stopped_cleanly: bool | None) -> KvConfigResult:
    kind = failure.kind if failure else "unknown"
    fits = False if kind in ("max_model_len_does_not_fit", "max_model_len_above_model_limit") else None
    return KvConfigResult(
        max_model_len=length, budget=budget.label, budget_kind=budget.kind, budget_value=budget.value, fits=fits,
        failure_kind=kind, largest_fitting_len=failure.largest_max_model_len if failure else None,
        error=(failure.message if failure and failure.message else error), log_path=log_path,
        stopped_cleanly=stopped_cleanly,
    )


def _memory_used(r: KvConfigResult) -> tuple[float | None, str]:
    if r.gpu_used_after_ready_bytes is not None:
        return float(r.gpu_used_after_ready_bytes), "GPU memory in use (NVML)"
    if r.server_pss_bytes is not None:
        return float(r.server_pss_bytes), "server processes' PSS (CPU memory)"
    return None, "not measured"


def _fmt_bytes(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB / 4 else f"{b / 1024**2:.1f} MiB"


@dataclass
class KvConclusions:
    theory: KvTheory | None
    bytes_per_token_from_budget: float | None  # median over the configurations that started
    bytes_per_token_from_slope: float | None
    ratio_to_theory_budget: float | None
    ratio_to_theory_slope: float | None
    theory_within_tolerance: bool | None
    capacity_follows_budget: bool | None  # None: fewer than two budgets started
    max_model_len_changes_memory: bool | None  # None: fewer than two lengths started at one budget, or no memory
    max_model_len_changes_tokens: bool | None
    budget_text: str
    length_text: str
    theory_text: str | None
    fit_texts: list[str]
    statements: list[str]  # all of the above, in order: what the numbers show, in words


def _budget_sweep(ok: list[KvConfigResult]) -> tuple[bool | None, float | None, str]:
    """Budgets at one length: does capacity follow the budget? (follows, slope in B/token, in words)."""
    by_len: dict[int, list[KvConfigResult]] = {}
    for r in ok:
        by_len.setdefault(r.max_model_len, []).append(r)
    budget_sweep = max(by_len.values(), key=lambda rs: len({x.budget_value for x in rs}), default=[])
    if len({r.budget_value for r in budget_sweep}) < 2:
        return None, None, ("Fewer than two budgets started at one length: these numbers cannot show how KV "
                            "capacity follows the budget.")
    rs = sorted(budget_sweep, key=lambda r: r.budget_value)
    slope = slope_bytes_per_token([(r.budget_bytes, r.kv_tokens) for r in rs])
    rising = all(b.kv_tokens > a.kv_tokens for a, b in zip(rs, rs[1:], strict=False))
    per = [r.bytes_per_token for r in rs if r.bytes_per_token]
    steady = len(per) == len(rs) and (max(per) - min(per)) / min(per) * 100 <= THEORY_TOLERANCE_PCT
    follows = rising and steady
    pairs = ", ".join(f"{r.budget} -> {r.kv_tokens:,} tokens" for r in rs)
    if follows:
        return follows, slope, (
            f"KV capacity follows the memory budget at max-model-len {rs[0].max_model_len}: {pairs}; bytes per "
            f"token stay within {THEORY_TOLERANCE_PCT:g} % ({min(per):,.0f}-{max(per):,.0f} B)"
            + (f", slope across budgets {slope:,.0f} B/token" if slope else "") + ".")
    return follows, slope, (f"KV capacity did not simply follow the budget at max-model-len {rs[0].max_model_len}: "
                            f"{pairs} (bytes per token {', '.join(f'{p:,.0f}' for p in per)}).")


def _memory_across(rs: list[KvConfigResult]) -> tuple[bool | None, str]:
    """(did the memory in use change across these lengths, in words); None when it was not measured."""
    mem = [_memory_used(r) for r in rs]
    if not all(m is not None for m, _ in mem):
        return None, "memory in use was not measured"
    vals = [m for m, _ in mem]
    spread_pct = (max(vals) - min(vals)) / min(vals) * 100
    return spread_pct > SAME_MEMORY_PCT, (f"{mem[0][1]} {', '.join(_fmt_bytes(v) for v in vals)} (spread "
                                          f"{spread_pct:.1f} %, threshold {SAME_MEMORY_PCT:g} %)")


def _length_sweep(ok: list[KvConfigResult]) -> tuple[bool | None, bool | None, str]:
    """Lengths at one budget: (memory changed, tokens changed, in words)."""
    by_budget: dict[float, list[KvConfigResult]] = {}
    for r in ok:
        by_budget.setdefault(r.budget_value, []).append(r)
    len_sweep = max(by_budget.values(), key=lambda rs: len({x.max_model_len for x in rs}), default=[])
    if len({r.max_model_len for r in len_sweep}) < 2:
        return None, None, ("Fewer than two lengths started at one budget: these numbers cannot show what "
                            "max-model-len does to memory.")
    rs = sorted(len_sweep, key=lambda r: r.max_model_len)
    tokens = {r.kv_tokens for r in rs}
    block = max((r.block_size or 0) for r in rs)
    changes_tok = max(tokens) - min(tokens) > block
    conc = ", ".join(f"{r.max_model_len} -> {r.max_concurrency:.2f}x" if r.max_concurrency is not None
                     else f"{r.max_model_len} -> ?" for r in rs)
    changes_mem, mem_text = _memory_across(rs)
    head = f"At budget {rs[0].budget}, max-model-len {', '.join(str(r.max_model_len) for r in rs)}"
    if not changes_tok and changes_mem is False:
        text = (f"{head} gave the same KV cache ({rs[0].kv_tokens:,} tokens) and the same memory in use: "
                f"{mem_text}. Only the maximum concurrency changed ({conc}, = KV tokens / max-model-len). "
                "So max-model-len does not reserve memory in vLLM: the budget sets the KV cache, and a longer "
                "max-model-len only lets fewer such requests fit at once. The common belief that a larger "
                "max-model-len takes more memory is wrong for vLLM, on these numbers.")
    elif not changes_tok:
        text = (f"{head} gave the same KV cache ({rs[0].kv_tokens:,} tokens) and maximum concurrency {conc}; "
                + (f"memory in use differed: {mem_text}, so these numbers do not show that memory stayed the same."
                   if changes_mem else f"{mem_text}, so nothing is claimed about memory."))
    else:
        text = (f"{head} gave different KV caches ({', '.join(f'{r.kv_tokens:,}' for r in rs)} "
                f"tokens): max-model-len changed the KV capacity here; {mem_text}.")
    return changes_mem, changes_tok, text


def _fit_texts(results: list[KvConfigResult]) -> list[str]:
    out = []
    for r in results:
        if r.fits is False and r.failure_kind == "max_model_len_does_not_fit":
            out.append(f"max-model-len {r.max_model_len} does not fit in {r.budget}: vLLM estimates the "
                       f"largest length that fits as {r.largest_fitting_len}.")
        elif r.fits is False:
            out.append(f"max-model-len {r.max_model_len} is above the model's own limit ({r.largest_fitting_len}).")
        elif r.fits is None:
            out.append(f"max-model-len {r.max_model_len} at {r.budget} did not start: {r.error}")
    return out


def _against_theory(theory: KvTheory | None, bpt_budget: float | None, slope: float | None):
    """(ratio from budget, ratio from slope, within tolerance, in words); Nones where there is nothing to say."""
    ratio_b = ratio_s = within = text = None
    if theory is None:
        return ratio_b, ratio_s, within, text
    if bpt_budget:
        ratio_b = bpt_budget / theory.bytes_per_token
    if slope:
        ratio_s = slope / theory.bytes_per_token
    ratios = [x for x in (ratio_b, ratio_s) if x is not None]
    if ratios:
        within = all(abs(x - 1) * 100 <= THEORY_TOLERANCE_PCT for x in ratios)
        text = (
            f"Bytes per KV token: {bpt_budget:,.1f} from budget / tokens"
            + (f", {slope:,.1f} from the slope across budgets" if slope else ", no slope (one budget)")
            + f", against {theory.bytes_per_token:,} in theory (2 x {theory.layers} layers x {theory.kv_heads} "
            f"KV heads x {theory.head_dim} head_dim x {theory.dtype_bytes} B {theory.dtype}): "
            + ", ".join(f"{100 * (x - 1):+.2f} %" for x in ratios)
            + (f", within {THEORY_TOLERANCE_PCT:g} %." if within else f", NOT within {THEORY_TOLERANCE_PCT:g} %."))
    return ratio_b, ratio_s, within, text


def conclude(results: list[KvConfigResult], theory: KvTheory | None) -> KvConclusions:
    ok = [r for r in results if r.fits and r.kv_tokens]
    bpt = [r.bytes_per_token for r in ok if r.bytes_per_token]
    bpt_budget = statistics.median(bpt) if bpt else None
    follows, slope, budget_text = _budget_sweep(ok)
    changes_mem, changes_tok, length_text = _length_sweep(ok)
    fit_texts = _fit_texts(results)
    ratio_b, ratio_s, within, theory_text = _against_theory(theory, bpt_budget, slope)
    statements = [budget_text, length_text, *fit_texts] + ([theory_text] if theory_text else [])
    return KvConclusions(theory, bpt_budget, slope, ratio_b, ratio_s, within, follows, changes_mem, changes_tok,
                         budget_text, length_text, theory_text, fit_texts, statements)


# ---- the runner -----------------------------------------------------------------------------------------


def measure_config(args, length: int, budget: KvBudget, index: int) -> KvConfigResult:
    """One configuration on a server of its own, started and stopped here."""
    spec = spec_from_args(args, max_model_len=length, kv_budget=budget,
                          log_name=f"kv-{index:02d}-len{length}-{_budget_slug(budget)}.log")
    srv = VllmServer(spec)
    try:
        with srv:
            measured = running_config(srv, length, budget)
        stop = srv.stop_report
        return replace(measured, stopped_cleanly=stop.confirmed_gone if stop else None)
    except ServerStartError as exc:
        stop = srv.stop_report
        return failed_result(length, budget, exc.failure, str(exc), str(srv.log_path),
                             stop.confirmed_gone if stop else None)


def running_config(srv, length: int, budget: KvBudget) -> KvConfigResult:
    """The KV figures of a server that serves now at (length, budget): its cache config from /metrics, GPU
    memory before start and after ready, its startup log. Whether it stopped cleanly is known only later."""
    import httpx

    r = httpx.get(f"{srv.base_url}/metrics", headers=srv.headers(), timeout=30.0)
    cache = vllm_metrics.cache_config(vllm_metrics.parse_prometheus(r.text)) if r.status_code == 200 else None
    before, after = srv.memory[0], srv.memory[-1]
    gpu = srv.spec.gpu or 0  # the server's one GPU, NVML numbering

    def on_gpu(values):
        return values[gpu] if values and gpu < len(values) else None

    memory = {
        "gpu_total_bytes": on_gpu(after.gpu_total_bytes),
        "gpu_used_before_bytes": on_gpu(before.gpu_used_bytes),
        "gpu_used_after_ready_bytes": on_gpu(after.gpu_used_bytes),
        "server_pss_bytes": after.server_pss_bytes,
    }
    return config_result(length, budget, cache=cache, log=srv.startup(), memory=memory,
                         ready_s=srv.timeline.ready_s, log_path=str(srv.log_path), stopped_cleanly=None)


def _budget_slug(budget: KvBudget) -> str:
    return f"util{budget.value:g}" if budget.kind == "fraction" else f"{int(budget.value) // 1024**2}MiB"


def _model_config(model_dir: str) -> dict | None:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _budget_list(text: str) -> list[KvBudget]:
    return [parse_kv_budget(x) for x in text.split(",") if x.strip()]


def _arguments(parser) -> None:
    add_server_args(parser, sweep=True)
    parser.add_argument("--max-model-len", type=_int_list, default=[4096, 16384, 32768],
                        help="comma-separated lengths (measured at the first budget)")
    parser.add_argument("--kv-budget", type=_budget_list, default=None,
                        help="comma-separated budgets (measured at the first length); default 0.3,0.5,0.7 on GPU, "
                             "512MiB,1GiB on CPU")


def _plan(args, parser) -> tuple[str, list[KvBudget], list[tuple[int, KvBudget]]]:
    backend = detect_backend()
    budgets = args.kv_budget or _budget_list("0.3,0.5,0.7" if backend == "gpu" else "512MiB,1GiB")
    return backend, budgets, plan(args.max_model_len, budgets)


def _verdicts(per_config: list[KvConfigResult], concl: KvConclusions, result) -> list[dict]:
    verdicts = []
    for r in per_config:
        if r.fits is None:
            verdicts.append(result.verdict(f"start_len{r.max_model_len}", "fail",
                                           f"max-model-len {r.max_model_len} at {r.budget} did not start: {r.error} "
                                           f"(log {r.log_path})"))
        elif r.fits is False:
            verdicts.append(result.verdict(f"fits_len{r.max_model_len}", "info",
                                           f"max-model-len {r.max_model_len} does not fit at {r.budget}; largest "
                                           f"that fits: {r.largest_fitting_len}"))
        if r.stopped_cleanly is False:
            verdicts.append(result.verdict("server_stopped", "fail",
                                           f"the server for max-model-len {r.max_model_len} left processes behind"))
    known = [r.stopped_cleanly for r in per_config if r.stopped_cleanly is not None]
    if known and all(known):  # unknown on a shared server: its own server_stopped verdict says
        verdicts.append(result.verdict("server_stopped", "pass",
                                       f"all {len(per_config)} servers stopped; no process of theirs is left"))
    if concl.theory_within_tolerance is not None:
        verdicts.append(result.verdict("bytes_per_token_vs_theory",
                                       "pass" if concl.theory_within_tolerance else "warn", concl.theory_text))
    else:
        verdicts.append(result.verdict("bytes_per_token_vs_theory", "info",
                                       "no configuration started with a KV size, or no config.json: nothing to "
                                       "compare with the theory"))
    verdicts.append(result.verdict("capacity_follows_budget",
                                   "warn" if concl.capacity_follows_budget is False else "info", concl.budget_text))
    verdicts.append(result.verdict("max_model_len_memory", "info", concl.length_text))
    return verdicts


def _measure(args, planned) -> cli.Report:
    backend, budgets, configs = planned
    errors: list[str] = []
    status = None
    per_config: list[KvConfigResult] = []
    try:
        for i, (length, budget) in enumerate(configs):
            sys.stderr.write(f"probes kv: [{i + 1}/{len(configs)}] max-model-len {length}, {budget.label}\n")
            sys.stderr.flush()
            per_config.append(measure_config(args, length, budget, i))
    except (ProbeTerminated, KeyboardInterrupt) as exc:
        errors.append(interrupted_text(exc))
        status = exc.code if isinstance(exc, ProbeTerminated) else 130
    results, verdicts = _conclusions(args, backend, per_config)
    return cli.Report(results, verdicts, errors, params=params(args, planned), status=status)


def _conclusions(args, backend: str, per_config: list[KvConfigResult]) -> tuple[dict, list[dict]]:
    from probes import result

    model_dir = str(cli.resolve_model(args.model))
    cfg = _model_config(model_dir)
    served = next((r.served_dtype for r in per_config if r.served_dtype), None)
    kv_dtype = next((r.kv_cache_dtype for r in per_config if r.kv_cache_dtype), None)
    theory = kv_theory(cfg, served, kv_dtype) if cfg else None
    concl = conclude(per_config, theory)
    results = {"backend": backend, "model_dir": model_dir, "configs": per_config, "conclusions": concl,
               "notes": concl.statements}
    return results, _verdicts(per_config, concl, result)


def params(args, planned) -> dict:
    _backend, budgets, configs = planned
    return {"model": args.model, "max_model_len": args.max_model_len, "kv_budget": [b.label for b in budgets],
            "enforce_eager": args.enforce_eager, "server_arg": args.server_arg, "server_env": args.server_env,
            "ready_timeout_s": args.ready_timeout_s, "log_dir": args.log_dir, "gpu": args.gpu,
            "plan": [f"max-model-len {n} at {b.label}" for n, b in configs]}


def server_settings(args, planned) -> dict:
    """The one max-model-len and budget a shared server must run at for this probe (probes.suite)."""
    _backend, _budgets, configs = planned
    if len(configs) != 1:
        raise cli.Refused(f"kv on a shared server measures one max-model-len at one budget; this plan has "
                          f"{len(configs)}: {', '.join(f'{n} at {b.label}' for n, b in configs)}")
    length, budget = configs[0]
    return {"max_model_len": length, "kv_budget": budget}


def on_server(args, planned):
    """(results, measure): ``measure(srv, verdicts)`` measures the one configuration srv serves at (shared)."""
    backend, _budgets, configs = planned
    results: dict = {}

    def measure(srv, verdicts: list[dict]) -> None:
        length, budget = configs[0]
        found, more = _conclusions(args, backend, [running_config(srv, length, budget)])
        results.update(found)
        verdicts += more

    return results, measure


PROBE = cli.Probe("kv", __doc__, arguments=_arguments, check=_plan, measure=_measure)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
