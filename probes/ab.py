"""A/B of one host setting on real vLLM server starts, interleaved, with repeats and a noise verdict.

    python -m probes ab --factor allocator [--arms glibc,jemalloc] [--jemalloc-path PATH] --repeats 4 \\
                        --model DIR [--enforce-eager] [--kv-budget 0.5|1GiB] [--max-model-len N] [--json]
    python -m probes ab --factor thp [--arms always,madvise,never] --repeats 4 --model DIR --json      # root
    python -m probes ab --factor pagecache [--arms cold,warm] --drop-caches --repeats 4 --model DIR --json  # root
    ... [--warmup-starts 1] [--time-budget-s 500] [--continue-from EARLIER.json] [--log-dir DIR]

A run longer than one sitting (a 10-minute device call) is split: --time-budget-s runs only the whole rounds
that fit, and a later run with --continue-from pools the earlier starts (same settings, checked) and continues
the rotation from the next round. --warmup-starts runs unmeasured starts first, so the slow first start on a
fresh host (Python and vLLM read from disk) does not fall on one arm.

Each start is one sample: a fresh server (probes.server.VllmServer) timed from process spawn to /health ready,
with the weights-load time and size from vLLM's own log. For `allocator` each start also measures the first
request's TTFT, the warm TTFT median over a few unique prompts (probes.ttft) and output tok/s at one
concurrency (probes.batching). The server process is the unit of replication, as in probes.generate: the
comparison uses one figure per start, because starts differ more than requests within one.

Arms run interleaved and rotated each round (A B, B A, A B, ... or A B C, B C A, C A B, ...), so drift on
the host falls on every arm alike. Every arm is compared with the first one by probes.stats.compare, which
names a winner only when the confidence intervals of the two medians do not overlap (at least 4 starts per
arm); anything else is reported as inside noise.

- allocator: the allocator goes in through the server's own environment (LD_PRELOAD, as `--server-env`
  does); the glibc arm runs with LD_PRELOAD empty. Every start checks /proc/PID/maps of all the server's
  processes: a jemalloc start where jemalloc is not mapped (or a glibc start where it is) is an error, not a
  sample, and stops the A/B.
- thp: writes /sys/kernel/mm/transparent_hugepage/enabled before each start (root) and always restores the
  value it found, on success, failure, Ctrl-C, SIGTERM and SIGHUP. The setting is host-wide: anything else
  running on the host sees it too. A start during which the value changed (someone else wrote it) is an error.
- pagecache: cold = `sync; echo 3 > /proc/sys/vm/drop_caches` just before the start (only with
  --drop-caches: it slows every process on the host for a while, and it drops the cached Python packages and
  libraries as well as the weights); warm = the model's files read into the page cache just before the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import stats
from probes.generate import ALLOCATOR_LIBRARIES, ALLOCATORS, find_allocator
from probes.server import (
    KvBudget,
    ProbeTerminated,
    ServerError,
    ServerSpec,
    VllmServer,
    add_server_args,
    detect_backend,
    interrupted_text,
    parse_env,
    parse_kv_budget,
    phase_split,
    preloaded_in,
    spec_from_args,
)

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
THP_DEFRAG = Path("/sys/kernel/mm/transparent_hugepage/defrag")
THP_MODES = ("always", "madvise", "never")
PAGECACHE_ARMS = ("cold", "warm")
DEFAULT_ARMS = {"allocator": ("glibc", "jemalloc"), "thp": THP_MODES, "pagecache": PAGECACHE_ARMS}
ALLOWED_ARMS = {"allocator": ALLOCATORS, "thp": THP_MODES, "pagecache": PAGECACHE_ARMS}
PRIME_BLOCK_BYTES = 16 << 20

# name -> (unit, lower is better, compared between arms)
METRICS: dict[str, tuple[str, bool, bool]] = {
    "ready_s": ("s", True, True),
    "weights_load_s": ("s", True, True),
    "weights_load_gib": ("GiB", True, False),  # the same model in every arm: shown, not compared
    "first_ttft_ms": ("ms", True, True),
    "ttft_ms": ("ms", True, True),
    "output_tok_per_s": ("tok/s", False, True),
}


class AbError(Exception):
    """A start that cannot count as a sample (the setting did not take, the allocator was not mapped)."""


# ---- pure functions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedStart:
    order: int  # position in the whole run, from 0
    round: int  # each round runs every arm once
    arm: str


def schedule(arms: list[str], repeats: int, *, first_round: int = 0, first_order: int = 0) -> list[PlannedStart]:
    """Round r runs the arms rotated left by r: A B, B A, A B ... (two arms), A B C, B C A, C A B (three).
    Each arm then sits in each position equally often over len(arms) rounds, so neither a drift across the
    run nor 'the start right after another start' favours one arm. A run that continues an earlier one
    starts at the round after the earlier run's last."""
    out, k = [], len(arms)
    for r in range(first_round, first_round + repeats):
        for arm in arms[r % k:] + arms[: r % k]:
            out.append(PlannedStart(first_order + len(out), r, arm))
    return out


@dataclass
class StartRecord:
    """One server start. A start with `error` set is not a sample; a metric that was not measured is None."""

    arm: str
    round: int
    order: int
    setup: dict = field(default_factory=dict)  # what was done to the host before this start
    thp_enabled_at_start: str | None = None
    thp_enabled_after_ready: str | None = None
    page_cache_bytes_at_start: int | None = None  # /proc/meminfo Cached just before spawn
    ready_s: float | None = None  # process spawn -> /health 200
    weights_load_s: float | None = None  # vLLM's "Loading weights took"
    weights_load_gib: float | None = None  # vLLM's "Model loading took N GiB" (GPU builds)
    model_load_s: float | None = None
    phases_s: dict = field(default_factory=dict)
    anon_huge_pages_bytes: int | None = None  # AnonHugePages over the server's processes at ready
    preload_check: dict | None = None
    first_ttft_ms: float | None = None  # first request after ready
    ttft_ms: float | None = None  # median of the warm requests of this start
    ttft_n: int = 0
    output_tok_per_s: float | None = None
    throughput_concurrency: int | None = None
    request_errors: list[str] = field(default_factory=list)
    pid: int | None = None
    log_path: str | None = None
    stop: dict | None = None
    error: str | None = None
    source: str | None = None  # None: this run; else the earlier result file it was read from (--continue-from)

    @property
    def is_sample(self) -> bool:
        return self.error is None and self.ready_s is not None


def metric_samples(starts: list[StartRecord], arm: str, metric: str) -> list[float]:
    """The arm's values of one metric, in run order, from the starts that count as samples."""
    return [getattr(s, metric) for s in starts if s.arm == arm and s.is_sample and getattr(s, metric) is not None]


def measured_metrics(starts: list[StartRecord]) -> list[str]:
    """Metrics with at least one value in some start; the others were not measured and are left out."""
    return [m for m in METRICS if any(getattr(s, m) is not None for s in starts if s.is_sample)]


def arm_summaries(starts: list[StartRecord], arms: list[str]) -> dict[str, dict[str, dict]]:
    """arm -> metric -> stats.summarize (unit in the metric's name and in the summary)."""
    metrics = measured_metrics(starts)
    return {arm: {m: stats.summarize(metric_samples(starts, arm, m), METRICS[m][0]) for m in metrics}
            for arm in arms}


def arm_comparisons(starts: list[StartRecord], arms: list[str]) -> dict[str, dict[str, dict]]:
    """Every arm after the first -> metric -> stats.compare(first arm, this arm)."""
    base = arms[0]
    out: dict[str, dict[str, dict]] = {}
    for arm in arms[1:]:
        out[arm] = {}
        for m in measured_metrics(starts):
            unit, lower_is_better, compared = METRICS[m]
            if compared:
                out[arm][m] = stats.compare(metric_samples(starts, base, m), metric_samples(starts, arm, m),
                                            name_a=base, name_b=arm, unit=unit, lower_is_better=lower_is_better)
    return out


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def summary_line(arm: str, metric: str, s: dict) -> str:
    """'jemalloc ready_s: median 41.2 s, IQR 3.1 (7.5 %), n=4, CI 39.9-44.0' for people."""
    if not s["n"]:
        return f"{arm} {metric}: not measured (no start of this arm counted)"
    if s["n"] == 1:
        spread = "one start, no spread"
    elif s["iqr"] is not None and s["median"]:
        spread = f"IQR {_fmt(s['iqr'])} ({100 * s['iqr'] / abs(s['median']):.1f} %)"
    else:
        spread = "IQR -"
    ci = "" if s["ci_low"] is None else f", CI of median {_fmt(s['ci_low'])}-{_fmt(s['ci_high'])}"
    return f"{arm} {metric}: median {_fmt(s['median'])} {s['unit']}, {spread}, n={s['n']}{ci}"


def verdicts_for(starts: list[StartRecord], arms: list[str], summaries: dict, comparisons: dict, result_mod,
                 *, factor: str) -> list[dict]:
    v = []
    for arm in arms:
        lines = [summary_line(arm, m, s) for m, s in summaries[arm].items()] or [
            f"{arm}: nothing measured (no start of this arm counted)"]
        warned = [m for m, s in summaries[arm].items() if s["spread_warning"] and s["n"] > 1]
        v.append(result_mod.verdict(f"arm_{arm}", "warn" if warned else "info",
                                    "; ".join(lines) + (f" (large spread in {', '.join(warned)})" if warned else "")))
    for arm, by_metric in comparisons.items():
        for m, c in by_metric.items():
            v.append(result_mod.verdict(f"{arm}_vs_{arms[0]}_{m}", "info", f"{m}: {c['verdict']}"))
    thp_seen = {t for s in starts if s.is_sample for t in (s.thp_enabled_at_start, s.thp_enabled_after_ready) if t}
    if len(thp_seen) > 1 and factor != "thp":
        v.append(result_mod.verdict(
            "host_constant", "warn",
            f"THP enabled was not the same in every start ({', '.join(sorted(thp_seen))}): something else on this "
            "host wrote it during the A/B, so the arms may differ in more than the factor under test"))
    counted = [sum(1 for s in starts if s.arm == a and s.is_sample) for a in arms]
    if counted and min(counted) < stats.MIN_COMPARE_N:
        v.append(result_mod.verdict(
            "enough_repeats", "warn",
            f"{min(counted)} counted start(s) in the smallest arm: a difference can be told from noise only with "
            f"at least {stats.MIN_COMPARE_N} per arm (--repeats {stats.MIN_COMPARE_N} or more)"))
    return v


# Settings that must be equal for starts of an earlier run to be pooled with this run's.
POOLED_PARAMS = ("factor", "arms", "model", "enforce_eager", "max_model_len", "kv_budget", "server_arg", "server_env",
                 "jemalloc_path", "tcmalloc_path", "ttft_requests", "throughput_prompts", "concurrency", "max_tokens",
                 "prompt_words")


def earlier_starts(doc: dict, params: dict, source: str) -> tuple[list[StartRecord], list[str]]:
    """The starts of an earlier `ab` result made with the same settings; else [] and what differs."""
    if doc.get("probe") != "ab" or "starts" not in doc.get("results", {}):
        return [], [f"--continue-from {source}: not a result of `python -m probes ab` (probe {doc.get('probe')!r})"]
    differ = [f"{k} {doc['params'].get(k)!r} there, {params.get(k)!r} here" for k in POOLED_PARAMS
              if doc["params"].get(k) != params.get(k)]
    if differ:
        return [], [f"--continue-from {source}: its settings differ from this run's: {'; '.join(differ)}"]
    names = {f.name for f in dataclasses.fields(StartRecord)}
    starts = []
    for raw in doc["results"]["starts"]:
        rec = StartRecord(**{k: v for k, v in raw.items() if k in names})
        rec.source = rec.source or f"{source} (host {doc.get('host')}, {doc.get('started_at')})"
        starts.append(rec)
    return starts, []


# ---- the host settings ----------------------------------------------------------------------------------


def selected(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'; a plain word is itself."""
    if text and "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return text.strip() if text else text


class ThpSwitch:
    """Sets THP `enabled` per start and puts back the value it found; restore() is safe to call twice."""

    def __init__(self, path: Path | None = None):
        self.path = path or THP_ENABLED
        self.original: str | None = None
        self.last_written: str | None = None

    def read(self) -> str | None:
        try:
            return selected(self.path.read_text())
        except OSError:
            return None

    def problem(self) -> str | None:
        """None when the setting can be changed here, else why not."""
        if not self.path.exists():
            return f"{self.path} does not exist (kernel without transparent hugepages)"
        if not os.access(self.path, os.W_OK):
            return f"{self.path} is not writable by uid {os.getuid()}: the thp A/B needs root"
        return None

    def remember(self) -> str | None:
        if self.original is None:
            self.original = self.read()
        return self.original

    def set(self, value: str) -> str:
        self.remember()
        self.last_written = value
        try:
            self.path.write_text(value + "\n")
        except OSError as exc:
            raise AbError(f"could not write {value!r} to {self.path}: {exc.strerror}") from exc
        now = self.read()
        if now != value:
            raise AbError(f"wrote {value!r} to {self.path} but the kernel reports {now!r}")
        return now

    def restore(self) -> dict:
        """Put the original back, always; returns what happened, for the results. `found` is the value before
        the restore: one that is neither the original nor the A/B's last write was written by someone else."""
        found = self.read()
        out = {"path": str(self.path), "original": self.original, "found": found,
               "written_by_someone_else": found not in (self.original, self.last_written), "final": found,
               "restored": None, "error": None}
        if self.original is None:
            return out
        if found != self.original:
            try:
                self.path.write_text(self.original + "\n")
            except OSError as exc:
                out["error"] = f"could not write {self.original!r} back to {self.path}: {exc.strerror}"
        out["final"] = self.read()
        out["restored"] = out["final"] == self.original
        return out


def page_cache_bytes() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    return None


def prime_files(directory: Path) -> dict:
    """Read every file under directory once, so the next start finds it in the page cache."""
    t, total = time.perf_counter(), 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(PRIME_BLOCK_BYTES):
                total += len(chunk)
    return {"primed_bytes": total, "prime_s": round(time.perf_counter() - t, 3)}


def anon_huge_pages_bytes(pids: list[int]) -> int | None:
    total, seen = 0, False
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("AnonHugePages:"):
                total += int(line.split()[1]) * 1024
                seen = True
    return total if seen else None


def interpreter_pids(pids: list[int], python: str) -> list[int]:
    """The pids running this Python: vLLM's API server, engine and workers. A short-lived helper they exec
    (a static `ldconfig` that Triton runs, a compiler) cannot map a preloaded library and is left out of the
    allocator check; all pids when none can be told apart."""
    want = os.path.realpath(python)
    mine = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/{pid}/exe") == want:
                mine.append(pid)
    return mine or pids


def allocator_env(arms: list[str], explicit: dict[str, str | None]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """arm -> the server environment that puts it in; and what could not be found (with where it looked)."""
    env, missing = {}, []
    for arm in arms:
        if arm == "glibc":
            env[arm] = {"LD_PRELOAD": ""}  # empty, not unset: an LD_PRELOAD inherited from the shell is dropped
            continue
        lib, tried = find_allocator(arm, explicit.get(arm))
        if lib is None:
            missing.append(f"{arm} is not on this host; tried {', '.join(tried)}. Install it (Debian: apt-get "
                           f"install lib{arm}2 / libgoogle-perftools4) or give --{arm}-path")
        else:
            env[arm] = {"LD_PRELOAD": str(lib)}
    return env, missing


def allocator_mapping_problem(arm: str, arm_env: dict[str, str], pids: list[int]) -> tuple[dict, str | None]:
    """(maps check, None when the server's processes run the arm's allocator; else what is wrong)."""
    if not pids:
        return {}, "no server process could be found to check"
    if arm == "glibc":  # the usual soname of each allocator, wherever it was loaded from
        check = preloaded_in(pids, [libs[0] for libs in ALLOCATOR_LIBRARIES.values()])
        mapped = {lib: [p for p, ok in by_pid.items() if ok] for lib, by_pid in check.items()}
        mapped = {lib: p for lib, p in mapped.items() if p}
        return check, (f"the glibc arm's server processes map {mapped}: something else preloads an allocator"
                       if mapped else None)
    lib = arm_env["LD_PRELOAD"]
    check = preloaded_in(pids, [lib])
    by_pid = check.get(lib, {})
    missing = [p for p, ok in by_pid.items() if not ok]
    if not by_pid or missing:
        return check, (f"{arm} was asked for with LD_PRELOAD={lib}, but server processes "
                       f"{missing or pids} do not map it: this start would measure glibc")
    return check, None


# ---- one start ------------------------------------------------------------------------------------------


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
        return {"thp_enabled_written": thp.set(arm)}
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
            if factor == "thp" and rec.thp_enabled_after_ready != planned.arm:
                raise AbError(f"THP enabled changed from {planned.arm!r} to {rec.thp_enabled_after_ready!r} during "
                              "the start: something else on this host wrote it")
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
    parts = [f"ready {_fmt(rec.ready_s, '.1f')} s", f"weights {_fmt(rec.weights_load_s, '.2f')} s"]
    if rec.ttft_ms is not None or rec.first_ttft_ms is not None:
        parts.append(f"TTFT first {_fmt(rec.first_ttft_ms, '.1f')} ms, warm {_fmt(rec.ttft_ms, '.1f')} ms")
    if rec.output_tok_per_s is not None:
        parts.append(f"{rec.output_tok_per_s:.0f} output tok/s at concurrency {rec.throughput_concurrency}")
    return f"{head}: " + ", ".join(parts)


# ---- CLI ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m probes ab", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factor", required=True, choices=tuple(DEFAULT_ARMS))
    p.add_argument("--arms", default=None,
                   help="comma list, the first is the baseline; default: allocator glibc,jemalloc; "
                        "thp always,madvise,never; pagecache cold,warm")
    p.add_argument("--repeats", type=int, default=stats.MIN_COMPARE_N,
                   help=f"server starts per arm (default {stats.MIN_COMPARE_N}, the fewest that can name a winner)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="start no round that would end after this (only whole rounds run, so arms stay balanced)")
    p.add_argument("--warmup-starts", type=int, default=0,
                   help="unmeasured starts of the first arm before the schedule: the first start on a fresh host "
                        "reads Python and vLLM from disk and would fall on one arm (110 s vs 52-66 s on the H100)")
    p.add_argument("--continue-from", action="append", type=Path, default=[], metavar="RESULT.json",
                   help="pool the starts of an earlier run (its --json output, same settings) with this run's; "
                        "rounds continue where it stopped (for runs longer than one sitting)")
    p.add_argument("--drop-caches", action="store_true",
                   help="allow the cold arm of pagecache: writes /proc/sys/vm/drop_caches before its starts (root)")
    p.add_argument("--jemalloc-path", default=None, help="libjemalloc.so.2 to preload (default: searched)")
    p.add_argument("--tcmalloc-path", default=None, help="libtcmalloc to preload (default: searched)")
    g = p.add_argument_group("serving measurements per start (default: on for allocator, off otherwise)")
    g.add_argument("--ttft-requests", type=int, default=None,
                   help="warm TTFT requests after the first one, unique prompts (default 5 / 0)")
    g.add_argument("--throughput-prompts", type=int, default=None,
                   help="prompts sent at --concurrency for output tok/s (default 16 / 0)")
    g.add_argument("--concurrency", type=int, default=4)
    g.add_argument("--max-tokens", type=int, default=32)
    g.add_argument("--prompt-words", type=int, default=64)
    g.add_argument("--request-timeout-s", type=float, default=300.0)
    add_server_args(p, sweep=True)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--kv-budget", default=None, type=parse_kv_budget,
                   help="fraction of GPU memory (0.5) or KV bytes (1GiB); default: 1GiB on CPU builds, vLLM's own "
                        "on GPU")
    p.add_argument("--json", action="store_true")
    return p


def _check(args, parser) -> tuple[list[str], dict[str, dict[str, str]], ThpSwitch | None, ServerSpec]:
    """Validate everything before any start; every problem is reported at once (exit 2)."""
    problems = []
    arms = [a.strip() for a in (args.arms or ",".join(DEFAULT_ARMS[args.factor])).split(",") if a.strip()]
    allowed = ALLOWED_ARMS[args.factor]
    bad = [a for a in arms if a not in allowed]
    if bad or len(arms) < 2 or len(set(arms)) != len(arms):
        problems.append(f"--arms {args.arms!r} for --factor {args.factor}: give at least two of "
                        f"{', '.join(allowed)}, each at most once")
    if args.repeats < 1:
        problems.append(f"--repeats {args.repeats}: at least 1")
    if args.warmup_starts < 0:
        problems.append(f"--warmup-starts {args.warmup_starts}: 0 or more")
    if args.concurrency < 1:
        problems.append(f"--concurrency {args.concurrency}: at least 1")
    try:
        server_env = parse_env(args.server_env)
    except ValueError as exc:
        problems.append(str(exc))
        server_env = {}
    arm_env: dict[str, dict[str, str]] = {a: {} for a in arms}
    thp = None
    if args.factor == "allocator" and "LD_PRELOAD" in server_env:
        problems.append("--server-env LD_PRELOAD=... with --factor allocator: the A/B sets LD_PRELOAD per arm; "
                        "drop it (use --jemalloc-path / --tcmalloc-path for the library)")
    if args.factor == "allocator" and not bad:
        arm_env, missing = allocator_env(arms, {"jemalloc": args.jemalloc_path, "tcmalloc": args.tcmalloc_path})
        problems += missing
    if args.factor == "thp":
        thp = ThpSwitch()
        if reason := thp.problem():
            problems.append(reason)
    if args.factor == "pagecache" and "cold" in arms:
        from probes import worker

        if not args.drop_caches:
            problems.append("the cold arm drops the host's page cache (sync; echo 3 > /proc/sys/vm/drop_caches), "
                            "which slows every other process on this node for a while: add --drop-caches to allow "
                            "it")
        elif reason := worker.can_drop_caches():
            problems.append(f"--drop-caches given but {reason}")
    base_spec = None
    if not problems:  # resolving the model may build it (tiny): only once the rest is known to be right
        try:
            base_spec = spec_from_args(args)
        except Exception as exc:
            problems.append(str(exc))
    if problems:
        parser.error("\n  ".join(["cannot run this A/B:", *problems]))
    return arms, arm_env, thp, base_spec


def _serving_plan(args) -> ServingPlan | None:
    default_on = args.factor == "allocator"
    n_ttft = args.ttft_requests if args.ttft_requests is not None else (5 if default_on else 0)
    n_tput = args.throughput_prompts if args.throughput_prompts is not None else (16 if default_on else 0)
    if n_ttft <= 0 and n_tput <= 0:
        return None
    return ServingPlan(max(0, n_ttft), max(0, n_tput), args.concurrency, args.max_tokens, args.prompt_words,
                       args.request_timeout_s)


def main(argv: list[str]) -> int:
    from probes import result

    parser = _parser()
    args = parser.parse_args(argv)
    arms, arm_env, thp, base_spec = _check(args, parser)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    serving = _serving_plan(args)
    params = {k: (v.label if isinstance(v, KvBudget) else v) for k, v in vars(args).items() if k != "json"}
    params["arms"] = arms
    params["requires_root"] = args.factor == "thp" or (args.factor == "pagecache" and "cold" in arms)
    params["changes_host"] = {
        "thp": f"writes {ThpSwitch().path} before each start (root) and restores the value it found",
        "pagecache": "drops the page cache before each cold start (root, --drop-caches)",
        "allocator": "nothing on the host; LD_PRELOAD in the server's environment only",
    }[args.factor]
    earlier, problems = [], []
    for path in args.continue_from:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"--continue-from {path}: cannot read it as JSON ({exc})")
            continue
        got, why = earlier_starts(doc, result.jsonable(params), str(path))
        earlier += got
        problems += why
    if problems:
        parser.error("\n  ".join(["cannot run this A/B:", *problems]))
    plan = schedule(arms, args.repeats, first_round=max((s.round for s in earlier), default=-1) + 1,
                    first_order=max((s.order for s in earlier), default=-1) + 1)

    started, t0 = time.time(), time.perf_counter()
    errors: list[str] = []
    starts: list[StartRecord] = list(earlier)
    warmups: list[StartRecord] = []
    stopped_early = None
    status = None
    thp_restore = None
    old_handlers = {}
    restoring = False

    def on_signal(signum, frame):
        if restoring:
            return  # already on the way out: let THP be restored
        raise ProbeTerminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        old_handlers[sig] = signal.signal(sig, on_signal)
    try:
        if thp is not None:
            thp.remember()
        for w in range(args.warmup_starts):
            rec = one_start(PlannedStart(-1 - w, -1, arms[0]), base_spec, factor=args.factor,
                            env=arm_env.get(arms[0], {}), thp=thp, serving=serving, log_dir=args.log_dir)
            warmups.append(rec)
            sys.stderr.write(progress_line(rec, w + 1, args.warmup_starts, "of the warm-up, not counted") + "\n")
            if rec.error:
                errors.append(f"warm-up start {w + 1} ({rec.arm}): {rec.error}")
                stopped_early = "the warm-up start failed; no measured start was made"
                plan = []
                break
        round_s: list[float] = []
        round_t = time.perf_counter()
        for i, planned in enumerate(plan):
            if i and planned.round != plan[i - 1].round:
                round_s.append(time.perf_counter() - round_t)
                round_t = time.perf_counter()
                elapsed = time.perf_counter() - t0
                if args.time_budget_s is not None and elapsed + max(round_s) > args.time_budget_s:
                    stopped_early = (f"time budget {args.time_budget_s:g} s: {len(round_s)} of {args.repeats} rounds "
                                     f"ran in {elapsed:.0f} s and the longest round took {max(round_s):.0f} s")
                    break
            rec = one_start(planned, base_spec, factor=args.factor, env=arm_env.get(planned.arm, {}), thp=thp,
                            serving=serving, log_dir=args.log_dir)
            starts.append(rec)
            sys.stderr.write(progress_line(rec, i + 1, len(plan)) + "\n")
            sys.stderr.flush()
            if rec.error:
                errors.append(f"start {rec.order + 1} ({rec.arm}): {rec.error}")
                stopped_early = (f"start {rec.order + 1} ({rec.arm}) failed; the A/B stopped there, because the "
                                 "remaining starts of that configuration would fail or mislead the same way")
                break
            if rec.request_errors:
                errors.append(f"start {rec.order + 1} ({rec.arm}): requests failed: {rec.request_errors[:3]}")
    except (ProbeTerminated, KeyboardInterrupt) as exc:
        errors.append(interrupted_text(exc))
        stopped_early = interrupted_text(exc)
        status = exc.code if isinstance(exc, ProbeTerminated) else 130
    finally:
        restoring = True
        if thp is not None:
            thp_restore = thp.restore()
        for sig, old in old_handlers.items():
            signal.signal(sig, old)

    summaries = arm_summaries(starts, arms)
    comparisons = arm_comparisons(starts, arms)
    verdicts = verdicts_for(starts, arms, summaries, comparisons, result, factor=args.factor)
    if args.factor == "allocator":
        checked = [s for s in starts if s.preload_check is not None and s.error is None]
        preload_text = ", ".join(f"{a}: LD_PRELOAD={arm_env[a]['LD_PRELOAD'] or '(empty)'}" for a in arms)
        for s in starts:
            if s.preload_check is not None and s.error:
                verdicts.insert(0, result.verdict("allocator_mapped", "fail", f"start {s.order + 1}: {s.error}"))
        if checked:
            verdicts.insert(0, result.verdict(
                "allocator_mapped", "pass",
                f"every counted start ran its arm's allocator: /proc/PID/maps of all server processes checked in "
                f"{len(checked)} start(s) ({preload_text})"))
    if thp_restore is not None:
        ok = thp_restore["restored"] is not False
        verdicts.append(result.verdict(
            "thp_restored", "pass" if ok else "fail",
            f"THP enabled is back to {thp_restore['original']!r} ({thp.path})"
            + (f"; it was {thp_restore['found']!r} before the restore, a value something else on this host wrote"
               if thp_restore["written_by_someone_else"] else "") if ok else
            f"THP enabled is {thp_restore['final']!r}, not the original {thp_restore['original']!r}: "
            f"{thp_restore['error'] or 'it changed again'}; set it by hand: echo {thp_restore['original']} > "
            f"{thp.path}"))
        if not ok:
            errors.append(f"THP enabled not restored to {thp_restore['original']!r}")
    if stopped_early:
        verdicts.append(result.verdict("stopped_early", "warn", f"{len(starts) - len(earlier)} of {len(plan)} "
                                                                f"starts of this run ran: "
                                                                f"{stopped_early}"))

    notes = [
        "one sample per server start (the process is the unit of replication); arms interleaved and rotated per "
        "round; every arm compared with the first, a winner only where the medians' confidence intervals do not "
        f"overlap and each side has at least {stats.MIN_COMPARE_N} starts",
        "ready_s = process spawn -> /health 200; weights_load_s and weights_load_gib are vLLM's own log lines",
    ]
    if serving is not None:
        notes.append(f"per start: first request TTFT, median warm TTFT of {serving.ttft_requests} unique prompts "
                     f"({serving.prompt_words} words, {serving.max_tokens} tokens, streaming), and output tok/s "
                     f"of {serving.throughput_prompts} prompts at concurrency {serving.concurrency}")
    if earlier:
        notes.append(f"{len(earlier)} start(s) pooled from earlier runs ({', '.join(map(str, args.continue_from))}); "
                     "their `source` says where each came from")
    if args.factor == "thp":
        notes.append("THP enabled is host-wide: every process on this host ran under each arm's value during its "
                     "starts; defrag was left as it was")
    if args.factor == "pagecache":
        notes.append("cold drops the whole page cache: Python packages and shared libraries are read from disk "
                     "again too, not only the weights; warm reads the model's files just before the start")
    res = {
        "backend": detect_backend(),
        "factor": args.factor,
        "arms": arms,
        "baseline": arms[0],
        "planned_order": [p.arm for p in plan],
        "arm_environment": arm_env if args.factor == "allocator" else None,
        "summaries": summaries,
        "comparisons": comparisons,
        "starts": starts,
        "warmup_starts": warmups,
        "thp_restore": thp_restore,
        "thp_defrag": selected(THP_DEFRAG.read_text()) if THP_DEFRAG.exists() else None,
        "stopped_early": stopped_early,
        "notes": notes,
    }
    doc = result.envelope("ab", params, res, verdicts, started, time.perf_counter() - t0, errors=errors)
    result.emit(doc, args.json)
    return status if status is not None else result.exit_status(doc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
