"""A/B of one host setting on real vLLM server starts, interleaved, with repeats and a noise verdict.

    python -m probes ab --factor allocator [--arms glibc,jemalloc] [--jemalloc-path PATH] --repeats 4 \\
                        --model DIR [--enforce-eager] [--kv-budget 0.5|1GiB] [--max-model-len N] [--json]
    python -m probes ab --factor thp [--arms always,madvise,never] --repeats 4 --model DIR --json      # root
    python -m probes ab --factor thp --arms madvise,64kB=always,never+2048kB=never ...  # per-size arms, root
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
- thp: writes /sys/kernel/mm/transparent_hugepage/enabled and/or per-size knobs (hugepages-<size>/enabled,
  Linux 6.8+) before each start (root) and always restores every value it found, on success, failure, Ctrl-C,
  SIGTERM and SIGHUP. An arm is a global mode and/or <size>=<value>, joined by '+' (never+64kB=always),
  checked against the sizes and values the kernel offers before anything is written (core/thp_arm.py); a knob
  that another arm sets is put back to its original for the starts of an arm that does not. The setting is
  host-wide: anything else running on the host sees it too. A start during which a value changed (someone
  else wrote it) is an error.
- pagecache: cold = `sync; echo 3 > /proc/sys/vm/drop_caches` just before the start (only with
  --drop-caches: it slows every process on the host for a while, and it drops the cached Python packages and
  libraries as well as the weights); warm = the model's files read into the page cache just before the start.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import cli, stats
from probes.ab_host import (
    THP_DEFRAG,
    THP_ENABLED,
    ThpSwitch,
    allocator_env,
    allocator_mapping_problem,
    anon_huge_pages_bytes,
    interpreter_pids,
    page_cache_bytes,
    prime_files,
)
from probes.ab_plan import (
    METRICS,
    POOLED_PARAMS,
    AbError,
    PlannedStart,
    StartRecord,
    arm_comparisons,
    arm_summaries,
    earlier_starts,
    measured_metrics,
    metric_samples,
    schedule,
    summary_line,
    verdicts_for,
)
from probes.ab_start import ServingPlan, measure_serving, one_start, prepare, progress_line
from probes.core import thp_arm
from probes.core.catalog import THP_ENABLED_CHOICES
from probes.core.sysfs import selected
from probes.generate import ALLOCATORS
from probes.server import (
    ProbeTerminated,
    ServerSpec,
    add_server_args,
    detect_backend,
    interrupted_text,
    parse_env,
    parse_kv_budget,
    spec_from_args,
)

# What the tests import from here; the code lives in ab_plan (pure), ab_host (the host) and ab_start (a start).
__all__ = [
    "ALLOWED_ARMS", "DEFAULT_ARMS", "METRICS", "PAGECACHE_ARMS", "POOLED_PARAMS", "THP_DEFRAG", "THP_ENABLED",
    "THP_MODES", "AbError", "PlannedStart", "ServingPlan", "StartRecord", "ThpSwitch", "allocator_env",
    "allocator_mapping_problem", "anon_huge_pages_bytes", "arm_comparisons", "arm_summaries", "earlier_starts",
    "interpreter_pids", "measure_serving", "measured_metrics", "metric_samples", "one_start", "page_cache_bytes",
    "prepare", "prime_files", "progress_line", "schedule", "selected", "summary_line", "verdicts_for", "main",
]

THP_MODES = THP_ENABLED_CHOICES
PAGECACHE_ARMS = ("cold", "warm")
THP_SIZE_ARMS = " or per-size settings (64kB=always, never+2048kB=never)"
DEFAULT_ARMS = {"allocator": ("glibc", "jemalloc"), "thp": THP_MODES, "pagecache": PAGECACHE_ARMS}
ALLOWED_ARMS = {"allocator": ALLOCATORS, "thp": THP_MODES, "pagecache": PAGECACHE_ARMS}


# ---- CLI ------------------------------------------------------------------------------------------------


def _arguments(p) -> None:
    p.add_argument("--factor", required=True, choices=tuple(DEFAULT_ARMS))
    p.add_argument("--arms", default=None,
                   help="comma list, the first is the baseline; default: allocator glibc,jemalloc; "
                        "thp always,madvise,never (a thp arm may set sizes: 64kB=always, never+2048kB=never); "
                        "pagecache cold,warm")
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


@dataclass
class AbSetup:
    """Everything checked and decided before the first start."""

    arms: list[str]
    arm_env: dict[str, dict[str, str]]
    thp: ThpSwitch | None
    base_spec: ServerSpec
    serving: ServingPlan | None
    params: dict
    earlier: list[StartRecord]
    plan: list[PlannedStart]


def _problems(args) -> tuple[list[str], list[str], dict[str, dict[str, str]], ThpSwitch | None]:
    """Every problem with the arguments at once: (problems, arms, arm -> environment, the THP switch)."""
    problems = []
    arms = [a.strip() for a in (args.arms or ",".join(DEFAULT_ARMS[args.factor])).split(",") if a.strip()]
    allowed = ALLOWED_ARMS[args.factor]
    thp = None
    if args.factor == "thp":  # each arm checked against the sizes this kernel offers (core/thp_arm.py)
        thp = ThpSwitch()
        if reason := thp.problem():
            problems.append(reason)
        arms, bad = _thp_arms(arms, problems, None if reason else thp.sizes())
        thp = ThpSwitch(arms=arms)
    else:
        bad = [a for a in arms if a not in allowed]
    if (bad and args.factor != "thp") or len(arms) < 2 or len(set(arms)) != len(arms):
        problems.append(f"--arms {args.arms!r} for --factor {args.factor}: give at least two of "
                        f"{', '.join(allowed)}{THP_SIZE_ARMS if args.factor == 'thp' else ''}, each at most once")
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
    if args.factor == "allocator" and "LD_PRELOAD" in server_env:
        problems.append("--server-env LD_PRELOAD=... with --factor allocator: the A/B sets LD_PRELOAD per arm; "
                        "drop it (use --jemalloc-path / --tcmalloc-path for the library)")
    if args.factor == "allocator" and not bad:
        arm_env, missing = allocator_env(arms, {"jemalloc": args.jemalloc_path, "tcmalloc": args.tcmalloc_path})
        problems += missing
    if args.factor == "pagecache" and "cold" in arms:
        problems += _drop_caches_problems(args)
    return problems, arms, arm_env, thp


def _thp_arms(arms: list[str], problems: list[str], sizes: dict | None) -> tuple[list[str], list[str]]:
    """The THP arms written in their one order (core/thp_arm.py), and those this kernel cannot take (each error
    is added to problems). sizes: the kernel's per-size knobs (None: the form only)."""
    out, bad = [], []
    for arm in arms:
        settings, errors = thp_arm.parse_arm(arm, "--arms", sizes)
        problems += errors
        if errors:
            bad.append(arm)
        else:
            out.append(thp_arm.arm_text(settings))
    return out, bad


def _drop_caches_problems(args) -> list[str]:
    from probes import worker

    if not args.drop_caches:
        return ["the cold arm drops the host's page cache (sync; echo 3 > /proc/sys/vm/drop_caches), which slows "
                "every other process on this node for a while: add --drop-caches to allow it"]
    if reason := worker.can_drop_caches():
        return [f"--drop-caches given but {reason}"]
    return []


def _refuse(parser, problems: list[str]) -> None:
    if problems:
        parser.error("\n  ".join(["cannot run this A/B:", *problems]))


def _serving_plan(args) -> ServingPlan | None:
    default_on = args.factor == "allocator"
    n_ttft = args.ttft_requests if args.ttft_requests is not None else (5 if default_on else 0)
    n_tput = args.throughput_prompts if args.throughput_prompts is not None else (16 if default_on else 0)
    if n_ttft <= 0 and n_tput <= 0:
        return None
    return ServingPlan(max(0, n_ttft), max(0, n_tput), args.concurrency, args.max_tokens, args.prompt_words,
                       args.request_timeout_s)


def _params(args, arms: list[str]) -> dict:
    params = cli.default_params(args)
    params["arms"] = arms
    params["requires_root"] = args.factor == "thp" or (args.factor == "pagecache" and "cold" in arms)
    params["changes_host"] = {
        "thp": f"writes {ThpSwitch().path} and/or per-size knobs before each start (root) and restores every "
               "value it found",
        "pagecache": "drops the page cache before each cold start (root, --drop-caches)",
        "allocator": "nothing on the host; LD_PRELOAD in the server's environment only",
    }[args.factor]
    return params


def _earlier(args, params: dict) -> tuple[list[StartRecord], list[str]]:
    """The starts of the --continue-from runs, and what is wrong with those runs."""
    from probes import result

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
    return earlier, problems


def _check(args, parser) -> AbSetup:
    """Validate everything before any start; every problem is reported at once (exit 2)."""
    problems, arms, arm_env, thp = _problems(args)
    base_spec = None
    if not problems:  # resolving the model may build it (tiny): only once the rest is known to be right
        try:
            base_spec = spec_from_args(args)
        except Exception as exc:
            problems.append(str(exc))
    _refuse(parser, problems)
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    params = _params(args, arms)
    earlier, problems = _earlier(args, params)
    _refuse(parser, problems)
    plan = schedule(arms, args.repeats, first_round=max((s.round for s in earlier), default=-1) + 1,
                    first_order=max((s.order for s in earlier), default=-1) + 1)
    return AbSetup(arms, arm_env, thp, base_spec, _serving_plan(args), params, earlier, plan)


# ---- the run --------------------------------------------------------------------------------------------


@dataclass
class AbRun:
    """What the starts of this run left: the records, and why and how the run ended."""

    starts: list[StartRecord]
    plan: list[PlannedStart]
    warmups: list[StartRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: str | None = None
    status: int | None = None  # the exit status an interruption asks for
    thp_restore: dict | None = None


def _start(args, setup: AbSetup, planned: PlannedStart) -> StartRecord:
    return one_start(planned, setup.base_spec, factor=args.factor, env=setup.arm_env.get(planned.arm, {}),
                     thp=setup.thp, serving=setup.serving, log_dir=args.log_dir)


def _warm_up(args, setup: AbSetup, run: AbRun) -> bool:
    """The unmeasured starts; False when one failed (then no measured start is made)."""
    for w in range(args.warmup_starts):
        rec = _start(args, setup, PlannedStart(-1 - w, -1, setup.arms[0]))
        run.warmups.append(rec)
        sys.stderr.write(progress_line(rec, w + 1, args.warmup_starts, "of the warm-up, not counted") + "\n")
        if rec.error:
            run.errors.append(f"warm-up start {w + 1} ({rec.arm}): {rec.error}")
            run.stopped_early = "the warm-up start failed; no measured start was made"
            run.plan = []
            return False
    return True


def _scheduled(args, setup: AbSetup, run: AbRun, t0: float) -> None:
    """The measured starts, whole rounds only while they fit the time budget; the first failure stops them."""
    plan = run.plan
    round_s: list[float] = []
    round_t = time.perf_counter()
    for i, planned in enumerate(plan):
        if i and planned.round != plan[i - 1].round:
            round_s.append(time.perf_counter() - round_t)
            round_t = time.perf_counter()
            elapsed = time.perf_counter() - t0
            if args.time_budget_s is not None and elapsed + max(round_s) > args.time_budget_s:
                run.stopped_early = (f"time budget {args.time_budget_s:g} s: {len(round_s)} of {args.repeats} "
                                     f"rounds ran in {elapsed:.0f} s and the longest round took {max(round_s):.0f} s")
                return
        rec = _start(args, setup, planned)
        run.starts.append(rec)
        sys.stderr.write(progress_line(rec, i + 1, len(plan)) + "\n")
        sys.stderr.flush()
        if rec.error:
            run.errors.append(f"start {rec.order + 1} ({rec.arm}): {rec.error}")
            run.stopped_early = (f"start {rec.order + 1} ({rec.arm}) failed; the A/B stopped there, because the "
                                 "remaining starts of that configuration would fail or mislead the same way")
            return
        if rec.request_errors:
            run.errors.append(f"start {rec.order + 1} ({rec.arm}): requests failed: {rec.request_errors[:3]}")


def _run(args, setup: AbSetup, t0: float) -> AbRun:
    """Every start; THP is put back and the signal handlers restored on every way out."""
    run = AbRun(starts=list(setup.earlier), plan=setup.plan)
    restoring = False

    def on_signal(signum, frame):
        if restoring:
            return  # already on the way out: let THP be restored
        raise ProbeTerminated(signum)

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if setup.thp is not None:
            setup.thp.remember()
        if _warm_up(args, setup, run):
            _scheduled(args, setup, run, t0)
    except (ProbeTerminated, KeyboardInterrupt) as exc:
        run.errors.append(interrupted_text(exc))
        run.stopped_early = interrupted_text(exc)
        run.status = exc.code if isinstance(exc, ProbeTerminated) else 130
    finally:
        restoring = True
        if setup.thp is not None:
            run.thp_restore = setup.thp.restore()
        for sig, old in old_handlers.items():
            signal.signal(sig, old)
    return run


# ---- the report -----------------------------------------------------------------------------------------


def _allocator_verdicts(setup: AbSetup, run: AbRun, result) -> list[dict]:
    """Put first: did every start run its arm's allocator?"""
    out = []
    checked = [s for s in run.starts if s.preload_check is not None and s.error is None]
    preload_text = ", ".join(f"{a}: LD_PRELOAD={setup.arm_env[a]['LD_PRELOAD'] or '(empty)'}" for a in setup.arms)
    for s in run.starts:
        if s.preload_check is not None and s.error:
            out.insert(0, result.verdict("allocator_mapped", "fail", f"start {s.order + 1}: {s.error}"))
    if checked:
        out.insert(0, result.verdict(
            "allocator_mapped", "pass",
            f"every counted start ran its arm's allocator: /proc/PID/maps of all server processes checked in "
            f"{len(checked)} start(s) ({preload_text})"))
    return out


def _thp_restored_verdict(thp: ThpSwitch, restore: dict, result) -> dict:
    if restore["restored"] is not False:
        return result.verdict(
            "thp_restored", "pass",
            f"THP enabled is back to {restore['original']!r} ({restore['path']})"
            + (f"; it was {restore['found']!r} before the restore, a value something else on this host wrote"
               if restore["written_by_someone_else"] else ""))
    return result.verdict(
        "thp_restored", "fail",
        f"THP enabled is {restore['final']!r}, not the original {restore['original']!r}: "
        f"{restore['error'] or 'it changed again'}; set it by hand: {thp.by_hand()}")


def _verdicts(args, setup: AbSetup, run: AbRun, summaries: dict, comparisons: dict, result) -> list[dict]:
    verdicts = verdicts_for(run.starts, setup.arms, summaries, comparisons, result, factor=args.factor)
    if args.factor == "allocator":
        verdicts[:0] = _allocator_verdicts(setup, run, result)
    if run.thp_restore is not None:
        verdicts.append(_thp_restored_verdict(setup.thp, run.thp_restore, result))
        if run.thp_restore["restored"] is False:
            run.errors.append(f"THP enabled not restored to {run.thp_restore['original']!r}")
    if run.stopped_early:
        verdicts.append(result.verdict("stopped_early", "warn", f"{len(run.starts) - len(setup.earlier)} of "
                                                                f"{len(run.plan)} starts of this run ran: "
                                                                f"{run.stopped_early}"))
    return verdicts


def _notes(args, setup: AbSetup) -> list[str]:
    notes = [
        "one sample per server start (the process is the unit of replication); arms interleaved and rotated per "
        "round; every arm compared with the first, a winner only where the medians' confidence intervals do not "
        f"overlap and each side has at least {stats.MIN_COMPARE_N} starts",
        "ready_s = process spawn -> /health 200; weights_load_s and weights_load_gib are vLLM's own log lines",
    ]
    serving = setup.serving
    if serving is not None:
        notes.append(f"per start: first request TTFT, median warm TTFT of {serving.ttft_requests} unique prompts "
                     f"({serving.prompt_words} words, {serving.max_tokens} tokens, streaming), and output tok/s "
                     f"of {serving.throughput_prompts} prompts at concurrency {serving.concurrency}")
    if setup.earlier:
        notes.append(f"{len(setup.earlier)} start(s) pooled from earlier runs "
                     f"({', '.join(map(str, args.continue_from))}); their `source` says where each came from")
    if args.factor == "thp":
        notes.append("THP is host-wide: every process on this host ran under each arm's values during its "
                     "starts; defrag and the knobs no arm names were left as they were")
    if args.factor == "pagecache":
        notes.append("cold drops the whole page cache: Python packages and shared libraries are read from disk "
                     "again too, not only the weights; warm reads the model's files just before the start")
    return notes


def _measure(args, setup: AbSetup) -> cli.Report:
    from probes import result

    run = _run(args, setup, time.perf_counter())
    summaries = arm_summaries(run.starts, setup.arms)
    comparisons = arm_comparisons(run.starts, setup.arms)
    verdicts = _verdicts(args, setup, run, summaries, comparisons, result)
    res = {
        "backend": detect_backend(),
        "factor": args.factor,
        "arms": setup.arms,
        "baseline": setup.arms[0],
        "planned_order": [p.arm for p in run.plan],
        "arm_environment": setup.arm_env if args.factor == "allocator" else None,
        "summaries": summaries,
        "comparisons": comparisons,
        "starts": run.starts,
        "warmup_starts": run.warmups,
        "thp_restore": run.thp_restore,
        "thp_arm_settings": setup.thp.arms if setup.thp is not None else None,
        "thp_defrag": selected(THP_DEFRAG.read_text()) if THP_DEFRAG.exists() else None,
        "stopped_early": run.stopped_early,
        "notes": _notes(args, setup),
    }
    return cli.Report(res, verdicts, run.errors, params=setup.params, status=run.status)


PROBE = cli.Probe("ab", __doc__, arguments=_arguments, check=_check, measure=_measure, raw_help=True)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
