"""Cold vs warm model load, each run in a fresh process, with the host's limits measured beside it.

    python -m probes load --model tiny|qwen2.5-1.5b|/path [--device auto] [--repeats 5] [--drop-caches] [--json]

A run times its phases separately: interpreter start, `import torch`, `import transformers`, CUDA context,
`from_pretrained` (weights into host memory), `.to(device)` (+ synchronize). Warm runs read the weights from
the page cache. Cold runs drop the page cache first, which is done only with --drop-caches (it slows every
other process on the node for a while); without it, cold is reported as not measured.

Beside the figures, the same run measures the limits they should be read against: sequential read of the
weight files after dropping the cache (with --drop-caches; the page-cache read rate always), and host-to-device
copy GB/s, pinned and pageable, per GPU. GB means 1e9 bytes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from probes import cli, worker
from probes.load_measure import GB, h2d_worker, load_worker, read_files_gb_per_s, thp_state

PHASES = (
    "total_s",
    "interpreter_start_s",
    "import_torch_s",
    "import_transformers_s",
    "import_s",
    "cuda_init_s",
    "from_pretrained_s",
    "to_device_s",
    "load_s",
    "exit_s",
)


# ---- results: raw runs in, dataclasses out --------------------------------------------------------------


@dataclass
class LoadRun:
    """One fresh process. Times in seconds, memory in bytes; None where a phase does not apply."""

    condition: str  # "cold" or "warm"
    order: int  # position in the run sequence (drift shows up here)
    total_s: float  # process spawn to exit, as the parent saw it
    interpreter_start_s: float
    import_torch_s: float
    import_transformers_s: float
    cuda_init_s: float | None
    from_pretrained_s: float
    to_device_s: float | None
    device: str
    placement: str
    param_bytes: int
    rss_after_import_bytes: int
    rss_after_load_bytes: int
    peak_rss_bytes: int
    device_allocated_bytes: int | None = None
    device_max_allocated_bytes: int | None = None
    device_reserved_bytes: int | None = None
    nvml_used_before_bytes: int | None = None
    nvml_used_after_bytes: int | None = None
    exit_s: float | None = None  # result emitted to process gone (interpreter teardown), as the parent saw it

    @property
    def import_s(self) -> float:
        return self.import_torch_s + self.import_transformers_s

    @property
    def load_s(self) -> float:
        return self.from_pretrained_s + (self.to_device_s or 0.0)


@dataclass
class ConditionStats:
    """Summaries (probes.stats.summarize) of every phase over the runs of one condition."""

    n: int
    phases: dict  # phase -> summary in s, or None where the phase does not apply to these runs
    from_pretrained_gb_per_s: dict
    to_device_gb_per_s: dict | None
    import_share_of_total: dict  # fraction of the process's wall time spent importing
    rss_after_load_bytes: dict
    peak_rss_bytes: dict
    device_allocated_bytes: dict | None
    nvml_used_delta_bytes: dict | None


@dataclass
class LoadResult:
    model: dict
    cold: ConditionStats | None
    cold_not_measured: str | None
    warm: ConditionStats | None
    cold_vs_warm: dict  # phase -> stats.compare(cold, warm)
    limits: dict
    achieved_vs_limit: dict
    runs: list[LoadRun]
    priming_runs: list[LoadRun]
    notes: list[str] = field(default_factory=list)


def _phase_values(runs: list[LoadRun], phase: str) -> list[float]:
    values = [getattr(r, phase) for r in runs]
    return [v for v in values if v is not None]


def condition_stats(runs: list[LoadRun], weight_bytes: int) -> ConditionStats | None:
    from probes import stats

    if not runs:
        return None
    # A phase that does not apply (CUDA init and to(device) on a CPU run) is null, not an empty sample.
    phases = {p: (stats.summarize(v, "s") if (v := _phase_values(runs, p)) else None) for p in PHASES}
    to_dev = [r for r in runs if r.to_device_s]
    on_gpu = [r for r in runs if r.device_allocated_bytes is not None]
    nvml = [r for r in runs if r.nvml_used_before_bytes is not None and r.nvml_used_after_bytes is not None]
    return ConditionStats(
        n=len(runs),
        phases=phases,
        from_pretrained_gb_per_s=stats.summarize([weight_bytes / GB / r.from_pretrained_s for r in runs], "GB/s"),
        to_device_gb_per_s=(
            stats.summarize([r.param_bytes / GB / r.to_device_s for r in to_dev], "GB/s") if to_dev else None
        ),
        import_share_of_total=stats.summarize([r.import_s / r.total_s for r in runs], "fraction"),
        rss_after_load_bytes=stats.summarize([r.rss_after_load_bytes for r in runs], "bytes"),
        peak_rss_bytes=stats.summarize([r.peak_rss_bytes for r in runs], "bytes"),
        device_allocated_bytes=(
            stats.summarize([r.device_allocated_bytes for r in on_gpu], "bytes") if on_gpu else None
        ),
        nvml_used_delta_bytes=(
            stats.summarize([r.nvml_used_after_bytes - r.nvml_used_before_bytes for r in nvml], "bytes")
            if nvml
            else None
        ),
    )


def analyze(
    runs: list[LoadRun],
    *,
    weight_bytes: int,
    model: dict,
    disk_read_gb_per_s: list[float] | None,
    page_cache_read_gb_per_s: list[float],
    h2d: list[dict] | None,
    h2d_not_measured: str | None,
    cold_not_measured: str | None,
    priming_runs: list[LoadRun] | None = None,
) -> LoadResult:
    """Pure: every figure of the report from the raw runs and raw limit samples."""
    from probes import stats

    cold_runs = [r for r in runs if r.condition == "cold"]
    warm_runs = [r for r in runs if r.condition == "warm"]
    cold = condition_stats(cold_runs, weight_bytes)
    warm = condition_stats(warm_runs, weight_bytes)

    cold_vs_warm = {}
    if cold_runs and warm_runs:
        for phase in ("total_s", "import_s", "from_pretrained_s", "load_s"):
            cold_vs_warm[phase] = stats.compare(
                _phase_values(cold_runs, phase), _phase_values(warm_runs, phase),
                name_a="cold", name_b="warm", unit="s",
            )

    limits = {
        "disk_read_gb_per_s": stats.summarize(disk_read_gb_per_s, "GB/s") if disk_read_gb_per_s is not None else None,
        "disk_read_not_measured": None if disk_read_gb_per_s is not None else "needs --drop-caches",
        "page_cache_read_gb_per_s": stats.summarize(page_cache_read_gb_per_s, "GB/s"),
        "h2d": h2d,
        "h2d_not_measured": h2d_not_measured,
    }

    def fp_rates(rs):
        return [weight_bytes / GB / r.from_pretrained_s for r in rs]

    achieved = {
        "cold_from_pretrained_vs_disk_read": (
            stats.ratio(fp_rates(cold_runs), disk_read_gb_per_s) if cold_runs and disk_read_gb_per_s else None
        ),
        "warm_from_pretrained_vs_page_cache_read": (
            stats.ratio(fp_rates(warm_runs), page_cache_read_gb_per_s)
            if warm_runs and page_cache_read_gb_per_s
            else None
        ),
        "to_device_vs_h2d_pageable": None,
        "to_device_vs_h2d_pinned": None,
    }
    gpu_runs = [r for r in warm_runs if r.to_device_s and r.device.startswith("cuda")]
    if gpu_runs and h2d:
        index = int(gpu_runs[0].device.partition(":")[2] or 0)
        link = next((g for g in h2d if g["gpu_index"] == index), None)
        if link:
            rates = [r.param_bytes / GB / r.to_device_s for r in gpu_runs]
            achieved["to_device_vs_h2d_pageable"] = stats.ratio(rates, link["pageable_gb_per_s"]["samples"])
            achieved["to_device_vs_h2d_pinned"] = stats.ratio(rates, link["pinned_gb_per_s"]["samples"])

    return LoadResult(
        model=model,
        cold=cold,
        cold_not_measured=cold_not_measured,
        warm=warm,
        cold_vs_warm=cold_vs_warm,
        limits=limits,
        achieved_vs_limit=achieved,
        runs=runs,
        priming_runs=priming_runs or [],
    )


def _fmt_s(summary: dict | None) -> str:
    if not summary or summary["median"] is None:
        return "not measured"
    return f"{summary['median']:.3g} s"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2g} %" if fraction < 0.1 else f"{100 * fraction:.0f} %"


def verdicts(res: LoadResult) -> list[dict]:
    """Statements the numbers support; status info unless something is missing or noisy."""
    from probes.result import verdict

    out = []
    if res.cold is None:
        out.append(verdict("cold_load", "info", f"cold not measured: {res.cold_not_measured}"))
    elif "load_s" in res.cold_vs_warm:
        cmp_ = res.cold_vs_warm["total_s"]
        out.append(verdict("cold_vs_warm_start", "info", f"process start to model on device: {cmp_['verdict']}"))
        cmp_ = res.cold_vs_warm["from_pretrained_s"]
        out.append(verdict("cold_vs_warm_weights", "info", f"from_pretrained: {cmp_['verdict']}"))

    for name, cond in (("warm", res.warm), ("cold", res.cold)):
        if cond is None:
            continue
        ph = cond.phases
        share = cond.import_share_of_total
        parts = [("interpreter start", "interpreter_start_s"), ("import torch+transformers", "import_s"),
                 ("CUDA init", "cuda_init_s"), ("from_pretrained", "from_pretrained_s"), ("to(device)", "to_device_s")]
        text = (
            f"{name} start, medians of n={cond.n}: total {_fmt_s(ph['total_s'])} = "
            + " + ".join(f"{label} {_fmt_s(ph[key])}" for label, key in parts if ph[key])
            + (f" + exit {_fmt_s(ph['exit_s'])}" if ph["exit_s"] else "")
            + f"; imports are {_pct(share['median'])} (range {_pct(share['min'])}-{_pct(share['max'])}) of the total"
        )
        if cond.n >= 3 and share["min"] > 0.5:  # every one of several runs, not one lucky run
            text += f": the {name} start is dominated by Python imports, not by reading weights"
        out.append(verdict(f"{name}_load_breakdown", "info", text))

    ratios = res.achieved_vs_limit
    limit_texts = [
        ("cold_from_pretrained_vs_disk_read", "cold from_pretrained GB/s vs the disk's sequential read of the files"),
        ("warm_from_pretrained_vs_page_cache_read", "warm from_pretrained GB/s vs reading the files from page cache"),
        ("to_device_vs_h2d_pageable", "to(device) GB/s vs a pageable host-to-device copy"),
        ("to_device_vs_h2d_pinned", "to(device) GB/s vs a pinned host-to-device copy"),
    ]
    for key, label in limit_texts:
        r = ratios.get(key)
        if r and r["median_ratio"] is not None:
            ci = "" if r["ci_low"] is None else f" (bootstrap 95 % interval {_pct(r['ci_low'])}-{_pct(r['ci_high'])})"
            out.append(verdict(key, "info", f"{label}: {_pct(r['median_ratio'])} of the limit{ci}"))
    if res.limits["h2d_not_measured"]:
        out.append(verdict("h2d_copy", "info", f"host-to-device copy not measured: {res.limits['h2d_not_measured']}"))

    noisy = []
    for name, cond in (("cold", res.cold), ("warm", res.warm)):
        if cond is None:
            continue
        for phase, s in cond.phases.items():
            if s and s["n"] > 1 and s["spread_warning"] and s["median"] and s["iqr"] is not None:
                noisy.append(f"{name}.{phase} (IQR {100 * s['iqr'] / s['median']:.0f} % of median)")
    if noisy:
        out.append(verdict("spread", "warn", "large run-to-run spread, treat small differences as noise: "
                           + ", ".join(noisy)))
    return out


# ---- the command line ----------------------------------------------------------------------------------


def _run_from_payload(p: dict, condition: str, order: int, run: worker.WorkerRun) -> LoadRun:
    return LoadRun(
        condition=condition,
        order=order,
        total_s=run.wall_s,
        interpreter_start_s=max(0.0, p["start_wall_time"] - run.spawn_time),
        import_torch_s=p["import_torch_s"],
        import_transformers_s=p["import_transformers_s"],
        cuda_init_s=p["cuda_init_s"],
        from_pretrained_s=p["from_pretrained_s"],
        to_device_s=p["to_device_s"],
        device=p["device"],
        placement=p["placement"],
        param_bytes=p["param_bytes"],
        rss_after_import_bytes=p["rss_after_import_bytes"],
        rss_after_load_bytes=p["rss_after_load_bytes"],
        peak_rss_bytes=p["peak_rss_bytes"],
        device_allocated_bytes=p["device_allocated_bytes"],
        device_max_allocated_bytes=p["device_max_allocated_bytes"],
        device_reserved_bytes=p["device_reserved_bytes"],
        nvml_used_before_bytes=p["nvml_used_before_bytes"],
        nvml_used_after_bytes=p["nvml_used_after_bytes"],
        exit_s=max(0.0, run.spawn_time + run.wall_s - p["end_wall_time"]),
    )


def _arguments(p) -> None:
    p.add_argument("--model", default="tiny", help="a shape (tiny, qwen2.5-1.5b, ...) or a model directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--placement", choices=["cpu-then-move", "direct"], default="cpu-then-move",
                   help="load to host memory then .to(device) (phases apart), or device_map=device (one phase)")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per condition")
    p.add_argument("--drop-caches", action="store_true",
                   help="measure cold loads and the disk read: writes /proc/sys/vm/drop_caches (root)")
    p.add_argument("--read-repeats", type=int, default=3, help="repeats of the weight-file read")
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the host-to-device copy")
    p.add_argument("--copy-repeats", type=int, default=5)
    p.add_argument("--gpus", default=None, help="GPU indices for the copy test, e.g. 0,1 (default: all)")
    p.add_argument("--timeout-s", type=float, default=900, help="per worker process")
    p.add_argument("--worker", choices=["load", "h2d"], help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)


def _worker(args) -> int | None:
    if args.worker == "load":
        return load_worker(args)
    if args.worker == "h2d":
        return h2d_worker(args)
    return None


def _check(args, parser) -> None:
    if args.repeats < 1 or args.read_repeats < 1 or args.copy_repeats < 1:
        raise cli.Refused("--repeats, --read-repeats and --copy-repeats must be at least 1")
    if args.drop_caches and (reason := worker.can_drop_caches()):
        raise cli.Refused(f"--drop-caches given but {reason}")


def _load_runs(args, path: Path, env: dict, errors: list[str]) -> tuple[list[LoadRun], list[LoadRun]]:
    """(the measured runs, the priming run): fresh processes, cold and warm interleaved with --drop-caches."""
    runs: list[LoadRun] = []
    priming: list[LoadRun] = []
    worker_args = ["load", "--worker", "load", "--model-path", str(path), "--device", args.device,
                   "--placement", args.placement]

    total = 2 * args.repeats if args.drop_caches else args.repeats + 1

    def one(condition: str, order: int) -> LoadRun | None:
        what = "priming load (fills the page cache, not a sample)" if condition == "warm" and order == 0 and \
            not args.drop_caches else f"{condition} load"
        cli.step("load", order + 1, total, f"{what}, fresh process")
        run = worker.run_worker(worker_args, env=env, timeout_s=args.timeout_s)
        if run.result is None:
            errors.append(f"{condition} load run {order}: {run.error}")
            return None
        return _run_from_payload(run.result, condition, order, run)

    order = 0
    if args.drop_caches:
        # Interleaved so that slow drift (other tenants, thermal) hits both conditions alike.
        for _ in range(args.repeats):
            worker.drop_page_cache()
            for condition in ("cold", "warm"):
                if (r := one(condition, order)) is not None:
                    runs.append(r)
                order += 1
    else:
        if (r := one("warm", order)) is not None:  # fills the page cache; kept apart, not a sample
            priming.append(r)
        order += 1
        for _ in range(args.repeats):
            if (r := one("warm", order)) is not None:
                runs.append(r)
            order += 1
    return runs, priming


def _read_rates(args, files: list[Path]) -> tuple[list[float] | None, list[float]]:
    """(disk read GB/s after dropping the cache, or None without --drop-caches; page-cache read GB/s)."""
    disk = None
    if args.drop_caches:
        disk = []
        for _ in range(args.read_repeats):
            worker.drop_page_cache()
            disk.append(read_files_gb_per_s(files))
    read_files_gb_per_s(files)  # make sure the files are cached before timing the page-cache read
    return disk, [read_files_gb_per_s(files, min_s=0.25) for _ in range(args.read_repeats)]


def _h2d(args, env: dict, errors: list[str]) -> tuple[list[dict] | None, str | None]:
    """(host-to-device copy GB/s per GPU, or None and why not)."""
    from probes import result, stats

    if not (result.environment()["gpus"] or args.device.startswith("cuda")):
        return None, "no GPU on this host (NVML lists none and --device is not cuda)"
    sys.stderr.write("probes load: host-to-device copy rates\n")
    h2d_args = ["load", "--worker", "h2d", "--copy-mib", str(args.copy_mib), "--copy-repeats", str(args.copy_repeats)]
    if args.gpus:
        h2d_args += ["--gpus", args.gpus]
    run = worker.run_worker(h2d_args, env=env, timeout_s=args.timeout_s)
    if run.result is None:
        errors.append(f"host-to-device copy: {run.error}")
        return None, "the copy worker failed (see errors)"
    if not run.result["gpus"]:
        return None, run.result["reason"]
    return [
        {
            "gpu_index": g["gpu_index"],
            "name": g["name"],
            "pci_bus_id": g["pci_bus_id"],
            "copy_bytes": g["copy_bytes"],
            "host_cpus": g["host_cpus"],
            "pinned_gb_per_s": stats.summarize(g["pinned"], "GB/s"),
            "pageable_gb_per_s": stats.summarize(g["pageable"], "GB/s"),
        }
        for g in run.result["gpus"]
    ], None


def _measure(args, _checked) -> cli.Report:
    from probes import model as model_mod
    from probes import result

    worker.exit_on_sigterm()
    path = cli.resolve_model(args.model)
    try:
        weight_bytes = model_mod.weight_bytes(path)
    except model_mod.ModelError as exc:
        raise cli.Refused(str(exc)) from exc
    files = sorted(path.glob("*.safetensors"))
    env = worker.worker_env()
    errors: list[str] = []
    thp = thp_state()
    runs, priming = _load_runs(args, path, env, errors)
    thp_after = thp_state()
    disk, page_cache = _read_rates(args, files)
    h2d, h2d_reason = _h2d(args, env, errors)
    provenance = model_mod.provenance(path) or {}
    res = analyze(
        runs,
        weight_bytes=weight_bytes,
        model={
            "name": args.model,
            "path": str(path),
            "weight_files": [f.name for f in files],
            "weight_bytes": weight_bytes,
            "param_bytes": runs[0].param_bytes if runs else None,
            "shape": provenance.get("shape"),
            "dtype": provenance.get("dtype"),
            "parameters": provenance.get("parameters"),
        },
        disk_read_gb_per_s=disk,
        page_cache_read_gb_per_s=page_cache,
        h2d=h2d,
        h2d_not_measured=h2d_reason,
        cold_not_measured=None if args.drop_caches else "--drop-caches not given",
        priming_runs=priming,
    )
    if not args.drop_caches:
        res.notes.append("cold not measured: --drop-caches not given; warm runs only, after one priming run")
        res.notes.append("page_cache_read_gb_per_s is a read from memory (page cache), not from the disk")
    else:
        res.notes.append("the page cache was dropped before each cold run and each disk read (--drop-caches)")
    vs = verdicts(res)
    if errors:
        vs.append(result.verdict("measurement", "fail", f"{len(errors)} run(s) failed; see errors"))
    results_doc = result.jsonable(res)
    for key in ("runs", "priming_runs"):  # derived fields are raw-sample columns too
        for raw, obj in zip(results_doc[key], getattr(res, key), strict=True):
            raw["import_s"], raw["load_s"] = obj.import_s, obj.load_s
    results_doc["thp"] = dict(thp, changed_during_runs=thp_after != thp)
    if thp_after != thp:
        vs.append(result.verdict("thp_constant", "warn", f"THP changed during the runs: {thp} -> {thp_after}"))
    return cli.Report(results_doc, vs, errors)


PROBE = cli.Probe("load", __doc__, arguments=_arguments, check=_check, measure=_measure, worker=_worker,
                  hidden=("worker", "model_path"), validate=True)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
