"""HF generation latency per memory allocator: N fresh processes x M calls each, glibc vs jemalloc (vs tcmalloc).

    python -m probes generate --model tiny --allocators glibc,jemalloc [--processes 5] [--calls 5]
                              [--prompt-tokens 16] [--new-tokens 64] [--jemalloc-path PATH] [--json]

Each process loads the model, then generates the same prompt greedily with min_new_tokens == max_new_tokens,
so every call does the same work. The first call in a process (allocator warm-up, lazy init, kernel
selection) is reported apart from the steady state (the median of the later calls). The process is the unit
of replication: the comparison uses one steady-state figure per process, because processes differ more than
calls within one (first-call latency varied by 60 % between processes on the H100).

An allocator other than glibc is put in with LD_PRELOAD, using the library found on this host. Each process
checks, through /proc/self/maps, that `malloc` really resolves into the requested library; a process where it
does not is an error, not a sample.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import cli, worker

ALLOCATOR_LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so.1", "libjemalloc.so"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so"),
}
ALLOCATORS = ("glibc", *ALLOCATOR_LIBRARIES)
DEBIAN_PACKAGES = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}

# Fixed prompt: the same tokens for every allocator and process. Cut or repeated to --prompt-tokens.
PROMPT_TEXT = (
    "The operator checked the inference node before it joined the fleet: the driver was loaded, the memory "
    "settings were applied, and the model answered within its latency budget. "
)


# ---- finding the allocator library on the host ---------------------------------------------------------


def library_dirs() -> list[Path]:
    """Where the dynamic loader looks, most specific first (as node_facts searches)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    dirs = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/lib64", "/usr/local/lib",
            "/usr/local/lib64", "/usr/lib", "/lib", f"{sys.prefix}/lib"]
    conf = Path("/etc/ld.so.conf.d")
    if conf.is_dir():
        for f in sorted(conf.glob("*.conf")):
            for line in f.read_text(errors="replace").splitlines():
                line = line.strip()
                if line.startswith("/"):
                    dirs.append(line)
    seen, out = set(), []
    for d in dirs:
        if d not in seen and Path(d).is_dir():
            seen.add(d)
            out.append(Path(d))
    return out


def find_allocator(name: str, explicit: str | None = None) -> tuple[Path | None, list[str]]:
    """(library path or None, the paths that were tried)."""
    if name == "glibc":
        return None, []
    if explicit:
        path = Path(explicit).expanduser().absolute()  # LD_PRELOAD of a relative path depends on the cwd
        return (path if path.is_file() else None), [str(path)]
    tried = []
    for d in library_dirs():
        for lib in ALLOCATOR_LIBRARIES[name]:
            candidate = d / lib
            tried.append(str(candidate))
            if candidate.is_file():
                return candidate, tried
    return None, tried


def malloc_owner() -> str | None:
    """The file that provides this process's `malloc` (the symbol the dynamic loader resolved)."""
    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.malloc, ctypes.c_void_p).value
    return worker.mapping_of_address(address)


def jemalloc_serves_malloc(library: str, size: int = 1 << 20) -> bool:
    """True when a malloc() through the process's own binding shows up in jemalloc's thread.allocated."""
    try:
        je = ctypes.CDLL(library)
        mallctl = je.mallctl
    except (OSError, AttributeError):
        return False
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
                        ctypes.c_size_t]
    process = ctypes.CDLL(None)
    process.malloc.restype = ctypes.c_void_p
    process.malloc.argtypes = [ctypes.c_size_t]
    process.free.argtypes = [ctypes.c_void_p]

    def allocated() -> int | None:
        value, length = ctypes.c_uint64(), ctypes.c_size_t(8)
        if mallctl(b"thread.allocated", ctypes.byref(value), ctypes.byref(length), None, 0) != 0:
            return None
        return value.value

    before = allocated()
    pointer = process.malloc(size)
    after = allocated()
    process.free(pointer)
    return before is not None and after is not None and after - before >= size


def check_allocator(name: str, expected: str | None) -> str | None:
    """None when malloc comes from the requested allocator, else why not."""
    owner = malloc_owner()
    if owner is None:
        return f"{name}: malloc resolves to anonymous memory, cannot tell which allocator serves it"
    if name == "glibc":
        base = os.path.basename(owner)
        if base.startswith("libc.so") or base.startswith("libc-"):
            return None
        others = [p for p in worker.mapped_paths() if any(a in os.path.basename(p) for a in ("jemalloc", "tcmalloc"))]
        if owner == os.path.realpath(sys.executable) and not others:
            return None  # non-PIE python: malloc's address is the executable's PLT stub, and nothing else is mapped
        return f"glibc asked for, but malloc comes from {owner} (is LD_PRELOAD set by the environment?)"
    if expected and os.path.realpath(owner) == os.path.realpath(expected):
        return None
    in_executable = owner == os.path.realpath(sys.executable)
    if expected and name == "jemalloc" and in_executable and jemalloc_serves_malloc(expected):
        # A non-PIE python (the H100 box's) exports a canonical PLT stub for malloc, so the address names the
        # executable; jemalloc's own counter then shows whether it served a malloc() made through that stub.
        return None
    mapped = sorted(p for p in worker.mapped_paths() if name in os.path.basename(p))
    return (
        f"{name} asked for with LD_PRELOAD={expected}, but malloc comes from {owner}"
        + (f" ({', '.join(mapped)} mapped but not serving malloc)" if mapped else f" and no {name} is mapped")
    )


# ---- results ------------------------------------------------------------------------------------------


@dataclass
class GenerateRun:
    """One fresh process. Times in seconds, memory in bytes."""

    allocator: str
    order: int
    malloc_from: str
    import_s: float
    load_s: float
    call_s: list[float]  # every generate() call, in order; call_s[0] is the first call
    prompt_tokens: int
    new_tokens: int
    rss_end_bytes: int
    peak_rss_bytes: int
    device: str
    threads: int
    output_sha256: str
    device_max_allocated_bytes: int | None = None

    @property
    def first_call_s(self) -> float:
        return self.call_s[0]

    @property
    def steady_state_s(self) -> float | None:
        """Median of the calls after the first; None with a single call."""
        return statistics.median(self.call_s[1:]) if len(self.call_s) > 1 else None


@dataclass
class AllocatorStats:
    allocator: str
    library: str | None
    processes: int  # processes that produced a sample
    first_call_s: dict  # one sample per process
    steady_state_s: dict  # one sample per process: the median of its calls after the first
    steady_state_calls_s: dict  # every later call of every process pooled (not independent: for the picture)
    steady_state_tokens_per_s: dict
    load_s: dict
    rss_end_bytes: dict
    peak_rss_bytes: dict


@dataclass
class GenerateResult:
    model: dict
    baseline: str
    allocators: dict[str, AllocatorStats]  # by name, in the order asked for
    comparisons: dict  # "<allocator>_vs_<baseline>" -> {"steady_state_s": compare, "first_call_s": ..., ...}
    outputs_identical: bool | None  # same tokens from every process (greedy decoding should not depend on malloc)
    runs: list[GenerateRun]
    notes: list[str] = field(default_factory=list)


def allocator_stats(name: str, library: str | None, runs: list[GenerateRun]) -> AllocatorStats:
    from probes import stats

    steady = [r.steady_state_s for r in runs if r.steady_state_s is not None]
    return AllocatorStats(
        allocator=name,
        library=library,
        processes=len(runs),
        first_call_s=stats.summarize([r.first_call_s for r in runs], "s"),
        steady_state_s=stats.summarize(steady, "s"),
        steady_state_calls_s=stats.summarize([c for r in runs for c in r.call_s[1:]], "s"),
        steady_state_tokens_per_s=stats.summarize(
            [r.new_tokens / r.steady_state_s for r in runs if r.steady_state_s], "tokens/s"
        ),
        load_s=stats.summarize([r.load_s for r in runs], "s"),
        rss_end_bytes=stats.summarize([r.rss_end_bytes for r in runs], "bytes"),
        peak_rss_bytes=stats.summarize([r.peak_rss_bytes for r in runs], "bytes"),
    )


def analyze(runs: list[GenerateRun], *, allocators: list[str], libraries: dict, model: dict) -> GenerateResult:
    """Pure: per-allocator summaries and comparisons against the first allocator, from the raw runs."""
    from probes import stats

    per = {a: [r for r in runs if r.allocator == a] for a in allocators}
    summaries = {a: allocator_stats(a, libraries.get(a), per[a]) for a in allocators}
    baseline = allocators[0]
    comparisons = {}
    for other in allocators[1:]:
        base_runs, other_runs = per[baseline], per[other]
        comparisons[f"{other}_vs_{baseline}"] = {
            "steady_state_s": stats.compare(
                [r.steady_state_s for r in other_runs if r.steady_state_s is not None],
                [r.steady_state_s for r in base_runs if r.steady_state_s is not None],
                name_a=other, name_b=baseline, unit="s",
            ),
            "first_call_s": stats.compare(
                [r.first_call_s for r in other_runs], [r.first_call_s for r in base_runs],
                name_a=other, name_b=baseline, unit="s",
            ),
            "peak_rss_bytes": stats.compare(
                [r.peak_rss_bytes for r in other_runs], [r.peak_rss_bytes for r in base_runs],
                name_a=other, name_b=baseline, unit="bytes",
            ),
        }
    hashes = {r.output_sha256 for r in runs}
    return GenerateResult(
        model=model,
        baseline=baseline,
        allocators=summaries,
        comparisons=comparisons,
        outputs_identical=(len(hashes) == 1) if runs else None,
        runs=runs,
    )


def verdicts(res: GenerateResult) -> list[dict]:
    from probes.result import verdict

    out = []
    labels = {"steady_state_s": "steady-state generate()", "first_call_s": "first generate() call in a process",
              "peak_rss_bytes": "peak RSS (lower is better)"}
    for key, cmps in res.comparisons.items():
        for metric, label in labels.items():
            text = cmps[metric]["verdict"]
            if metric == "peak_rss_bytes":
                text = text.replace(" faster by ", " smaller by ")
            out.append(verdict(f"{key}_{metric.removesuffix('_s').removesuffix('_bytes')}", "info",
                               f"{label}: {text}"))
    for a in res.allocators.values():
        s = a.steady_state_s
        if s["n"] > 1 and s["spread_warning"]:
            out.append(verdict(f"{a.allocator}_spread", "warn", f"{a.allocator} steady state: {s['spread_warning']}"))
    if res.outputs_identical is False:
        out.append(verdict("outputs_identical", "warn",
                           "greedy outputs differ between processes: the runs did not all do the same work"))
    return out


# ---- worker ---------------------------------------------------------------------------------------------


def _worker(args) -> int:
    problem = check_allocator(args.allocator, args.expect_lib)
    if problem:
        return worker.emit_result({"error": problem}, failed=True)
    owner = malloc_owner()
    t0 = time.perf_counter()
    import torch

    try:
        dev = worker.torch_device(args.device)
    except RuntimeError as exc:
        return worker.emit_result({"error": str(exc)}, failed=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import_s = time.perf_counter() - t0
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype="auto").to(dev).eval()
    worker.synchronize(dev)
    load_s = time.perf_counter() - t

    ids = tokenizer(PROMPT_TEXT)["input_ids"]
    while len(ids) < args.prompt_tokens:
        ids = ids + tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
    ids = ids[: args.prompt_tokens]
    input_ids = torch.tensor([ids], device=dev)
    attention = torch.ones_like(input_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    calls, digest = [], None
    for _ in range(args.calls):
        worker.synchronize(dev)
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids, attention_mask=attention, do_sample=False,
                min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens, pad_token_id=pad,
            )
        worker.synchronize(dev)
        calls.append(time.perf_counter() - t)
        new = out.shape[1] - input_ids.shape[1]
        if new != args.new_tokens:
            return worker.emit_result(
                {"error": f"generate() made {new} new tokens, {args.new_tokens} were asked for"}, failed=True)
        if digest is None:
            digest = hashlib.sha256(out[0].cpu().numpy().tobytes()).hexdigest()
    problem = check_allocator(args.allocator, args.expect_lib)  # still the same allocator at the end
    if problem:
        return worker.emit_result({"error": problem}, failed=True)
    return worker.emit_result({
        "malloc_from": owner,
        "import_s": import_s,
        "load_s": load_s,
        "call_s": calls,
        "prompt_tokens": len(ids),
        "new_tokens": args.new_tokens,
        "rss_end_bytes": worker.rss_bytes(),
        "peak_rss_bytes": worker.peak_rss_bytes(),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "output_sha256": digest,
        "device_max_allocated_bytes": worker.torch_memory(dev)["device_max_allocated_bytes"],
    })


# ---- CLI ------------------------------------------------------------------------------------------------


def _arguments(p) -> None:
    p.add_argument("--model", default="tiny", help="a shape (tiny, qwen2.5-1.5b, ...) or a model directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--allocators", default="glibc,jemalloc",
                   help="comma list of glibc, jemalloc, tcmalloc; the first is the baseline")
    p.add_argument("--processes", type=int, default=5, help="fresh processes per allocator")
    p.add_argument("--calls", type=int, default=5, help="generate() calls per process (the first is reported apart)")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--jemalloc-path", default=None, help="libjemalloc.so.2 to preload (default: searched)")
    p.add_argument("--tcmalloc-path", default=None, help="libtcmalloc to preload (default: searched)")
    p.add_argument("--malloc-conf", default=None, help="MALLOC_CONF for the jemalloc processes")
    p.add_argument("--timeout-s", type=float, default=900, help="per worker process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--allocator", default="glibc", help=argparse.SUPPRESS)
    p.add_argument("--expect-lib", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)


def _run_from_payload(p: dict, allocator: str, order: int) -> GenerateRun:
    return GenerateRun(allocator=allocator, order=order, **p)


def _check(args, parser) -> list[str]:
    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    bad = [a for a in allocators if a not in ALLOCATORS]
    if bad or not allocators or len(set(allocators)) != len(allocators):
        raise cli.Refused(f"--allocators {args.allocators}: each of {', '.join(ALLOCATORS)} at most once")
    if args.processes < 1 or args.calls < 1 or args.new_tokens < 1 or args.prompt_tokens < 1:
        raise cli.Refused("--processes, --calls, --new-tokens and --prompt-tokens must be >= 1")
    return allocators


def _libraries(args, allocators: list[str], errors: list[str]) -> dict[str, str | None]:
    """allocator -> the library to preload (None for glibc, or one that was not found: an error)."""
    libraries: dict[str, str | None] = {}
    for a in allocators:
        lib, tried = find_allocator(a, {"jemalloc": args.jemalloc_path, "tcmalloc": args.tcmalloc_path}.get(a))
        if a != "glibc" and lib is None:
            errors.append(f"{a} requested but not found on this host; tried: {', '.join(tried)}. "
                          f"Install it (Debian/Ubuntu: apt-get install {DEBIAN_PACKAGES[a]}) or give --{a}-path")
        libraries[a] = str(lib) if lib else None
    return libraries


def _runs(args, path, usable: list[str], libraries: dict, errors: list[str]) -> list[GenerateRun]:
    base_args = ["generate", "--worker", "--model-path", str(path), "--device", args.device,
                 "--calls", str(args.calls), "--prompt-tokens", str(args.prompt_tokens),
                 "--new-tokens", str(args.new_tokens)]
    if args.threads:
        base_args += ["--threads", str(args.threads)]
    runs: list[GenerateRun] = []
    order = 0
    total = args.processes * len(usable)
    for p in range(args.processes if usable else 0):
        # Round robin, rotated each round: drift and ordering effects fall on every allocator alike.
        for a in usable[p % len(usable):] + usable[: p % len(usable)]:
            extra = {}
            if a != "glibc":
                extra["LD_PRELOAD"] = libraries[a]
            if a == "jemalloc" and args.malloc_conf:
                extra["MALLOC_CONF"] = args.malloc_conf
            env = worker.worker_env(extra, drop=("LD_PRELOAD",) if a == "glibc" else ())
            wargs = base_args + ["--allocator", a] + (["--expect-lib", libraries[a]] if libraries[a] else [])
            cli.step("generate", order + 1, total, f"{a}, process {p + 1} of {args.processes}")
            run = worker.run_worker(wargs, env=env, timeout_s=args.timeout_s)
            if run.result is None:
                errors.append(f"{a} process {p} (run {order}): {run.error}")
            else:
                runs.append(_run_from_payload(run.result, a, order))
            order += 1
    return runs


def _measure(args, allocators: list[str]) -> cli.Report:
    from probes import model as model_mod
    from probes import result

    worker.exit_on_sigterm()
    path = cli.resolve_model(args.model)
    errors: list[str] = []
    libraries = _libraries(args, allocators, errors)
    usable = [a for a in allocators if a == "glibc" or libraries[a]]
    runs = _runs(args, path, usable, libraries, errors)
    provenance = model_mod.provenance(path) or {}
    res = analyze(runs, allocators=allocators, libraries=libraries, model={
        "name": args.model, "path": str(path), "shape": provenance.get("shape"), "dtype": provenance.get("dtype"),
        "parameters": provenance.get("parameters"),
    })
    if args.calls < 2:
        res.notes.append("steady state not measured: --calls 1 gives only the first call of each process")
    res.notes.append("comparisons use one steady-state figure per process (median of its calls after the first)")
    vs = verdicts(res)
    if errors:
        vs.append(result.verdict("measurement", "fail", f"{len(errors)} problem(s); see errors"))
    params = cli.default_params(args, ("worker", "allocator", "expect_lib", "model_path"))
    params["allocators"] = allocators
    params["libraries"] = libraries
    results_doc = result.jsonable(res)
    for raw, obj in zip(results_doc["runs"], res.runs, strict=True):
        raw["first_call_s"], raw["steady_state_s"] = obj.first_call_s, obj.steady_state_s
    return cli.Report(results_doc, vs, errors, params=params)


PROBE = cli.Probe("generate", __doc__, arguments=_arguments, check=_check, measure=_measure,
                  worker=lambda args: _worker(args) if args.worker else None, validate=True)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
