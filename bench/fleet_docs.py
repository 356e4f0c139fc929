"""The report at fleet size: N synthetic hosts through the report pipeline (playbooks/report.yml's module calls
module_utils/preflight/report/pipeline.py: build every document, check, outliers, render, write).

The hosts are built from tests/unit/report_samples.py (real facts parser over a recorded tree, real probe
envelopes and statistics), varied per host with a fixed seed, with a few slow hosts (outliers), a few
failed and unreachable ones, and four GPU classes. Every document is validated against the schema by
build_run itself. Used by bench/fleet.py --report-hosts.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import random
import tempfile
import time
from pathlib import Path

from tests.unit import report_samples as rs

CLASSES = ("h100", "a100", "l40s", "h200")


def synthetic_items(count: int, seed: int = 18) -> list[dict]:
    """`count` report entries: about 2 % unreachable, 2 % failed, 3 % slow (outliers), the rest spread ~3 %."""
    rng = random.Random(seed)
    items = []
    for i in range(count):
        name = f"gpu{i + 1:04d}"
        group = CLASSES[i % len(CLASSES)]
        roll = rng.random()
        if roll < 0.02:
            items.append(rs.unreachable(name, (group,)))
            continue
        if roll < 0.04:
            items.append(rs.failed(name, (group,)))
            continue
        slow = 2.5 if roll > 0.97 else 1.0
        jitter = 1 + rng.uniform(-0.03, 0.03)
        probes = {
            "ttft": rs.ttft_probe(cold_ms=50.0 * jitter * slow, warm_ms=20.0 * jitter * slow, seed=i),
            "load": rs.load_probe(cold_s=(30.0 * jitter * slow, 1.4), warm_s=(15.0 * jitter, 0.6)),
        }
        if i % 5 == 0:
            probes["allocator"] = rs.allocator_probe(glibc_s=10.0 * jitter, jemalloc_s=9.0 * jitter)
        items.append(rs.host(name, (group,), level="standard" if i % 2 else "quick", probes=probes))
    return items


def time_report(count: int, profile: bool = False) -> dict:
    """Seconds to build (documents, checks, outliers, rendering) and to write `count` hosts' reports."""
    pipeline = rs.pipeline
    items = synthetic_items(count)
    with tempfile.TemporaryDirectory(prefix="preflight-bench-report-") as report_dir:
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        run = pipeline.build_run(items, report_dir, run_id="bench")
        built = time.perf_counter()
        pipeline.write_run(run, report_dir)
        written = time.perf_counter()
        if profiler:
            profiler.disable()
        totals = run["summary"]["totals"]
        outliers = sum(1 for row in run["summary"]["hosts"] if row["outliers"])
        files = len(list(Path(report_dir, "bench").iterdir()))
    result = {
        "hosts": count,
        "build_s": round(built - started, 3),
        "write_s": round(written - built, 3),
        "total_s": round(written - started, 3),
        "files": files,
        "hosts_with_outliers": outliers,
        "unreachable": totals.get("unreachable", 0),
        "failed": totals.get("failed", 0),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        result["profile_top"] = out.getvalue()
    return result


def time_sliced_report(count: int, slices: int) -> dict:
    """The same `count` hosts written as `slices` slices of one run, one after another: each slice's seconds
    (build and write, the write folding in every document the earlier slices wrote)."""
    pipeline = rs.pipeline
    items = synthetic_items(count)
    seconds = []
    with tempfile.TemporaryDirectory(prefix="preflight-bench-slices-") as report_dir:
        for k in range(slices):
            started = time.perf_counter()
            run = pipeline.build_run(items[k::slices], report_dir, run_id="bench")
            pipeline.write_run(run, report_dir)
            seconds.append(round(time.perf_counter() - started, 3))
        summary = json.loads(Path(report_dir, "bench", "summary.json").read_text())
    return {"hosts": count, "slices": slices, "slice_s": seconds, "merged_hosts": summary["totals"]["hosts"],
            "hosts_with_outliers": sum(1 for row in summary["hosts"] if row["outliers"])}
