"""Host entries for the report tests, shaped as playbooks/report.yml collects them.

Facts come from node_facts' real parser over a recorded /proc and /sys tree (tests/fixtures/facts); probe
envelopes from the probes' own envelope and statistics code; role results follow the roles' contract.
"""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from probes import result as probe_result
from probes import stats
from tests.moduleutils import module_util

pipeline = module_util("preflight.report.pipeline")
facts_mod = module_util("preflight.core.facts")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"
NOW = datetime(2026, 11, 23, 15, 0, 0, tzinfo=UTC)
UNREACHABLE_MSG = (
    "Task failed: Failed to connect to the host via ssh: ssh: connect to host 127.0.0.254 port 2222: Connection refused"
)
INVALID_THP_MSG = (
    "thp_enabled: 'sometimes' is not one of always, madvise, never (this kernel offers: always madvise never)"
)


@cache
def _recorded_facts() -> dict:
    return facts_mod.gather(root=str(FIXTURES / "vm-1node"), gpus=False)


def facts(enabled="madvise", defrag="never", khugepaged_defrag=1, gpus=None, hugepages_2m=0) -> dict:
    out = copy.deepcopy(_recorded_facts())
    out["thp"].update(enabled=enabled, defrag=defrag, khugepaged_defrag=khugepaged_defrag)
    out["hugepages"]["sizes"].setdefault("2048kB", {}).update(total=hugepages_2m, free=hugepages_2m)
    if gpus is not None:
        out["gpus"] = gpus
        out["gpus_reason"] = None
    return out


def gpu(
    index=0,
    width=16,
    width_max=16,
    used_mib=512,
    total_mib=81559,
    persistence=True,
    uncorrected=0,
    remap_pending=0,
    remap_failure=0,
) -> dict:
    return {
        "index": index,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-{index:08d}",
        "pci_bus_id": f"00000000:{index + 0x18:02X}:00.0",
        "numa_node": 0,
        "memory_total_mib": total_mib,
        "memory_used_mib": used_mib,
        "driver_version": "580.159.04",
        "cuda_driver_version": "13.0",
        "pcie": {
            "gen_current": 5,
            "gen_max": 5,
            "width_current": width,
            "width_max": width_max,
            "bandwidth_gbs_current": 3.94 * width,
            "bandwidth_gbs_max": 3.94 * width_max,
        },
        "persistence_mode": persistence,
        "ecc": {
            "mode": "enabled",
            "pending_mode": "enabled",
            "volatile_uncorrected": uncorrected,
            "aggregate_uncorrected": uncorrected + 3,
            "volatile_corrected": 7,
            "aggregate_corrected": 40,
        },
        "remapped_rows": {"correctable": 0, "uncorrectable": 0, "pending": remap_pending, "failure": remap_failure},
    }


THP = "/sys/kernel/mm/transparent_hugepage"


def thp_result(
    before=("madvise", "madvise", 1),
    after=("madvise", "never", 1),
    persistence=None,
    conflicts=(),
    reboot_required=False,
    check_mode=False,
) -> dict:
    names = [
        ("thp_enabled", f"{THP}/enabled"),
        ("thp_defrag", f"{THP}/defrag"),
        ("thp_khugepaged_defrag", f"{THP}/khugepaged/defrag"),
    ]
    desired = ("madvise", "never", 1)
    return {
        "role": "thp",
        "settings": [
            {"name": n, "path": p, "desired": d, "before": b, "after": a, "changed": b != a}
            for (n, p), d, b, a in zip(names, desired, before, after, strict=True)
        ],
        "persistence": persistence
        if persistence is not None
        else [
            {
                "method": "systemd",
                "state": "installed",
                "path": "/etc/systemd/system/preflight-thp.service",
                "detail": "unit written and enabled",
            },
            {
                "method": "kernel_cmdline",
                "state": "unavailable",
                "path": "/etc/default/grub",
                "detail": "no bootloader config found: /etc/default/grub does not exist",
            },
        ],
        "conflicts": list(conflicts),
        "verified": True,
        "reboot_required": reboot_required,
        "check_mode": check_mode,
    }


def hugepages_result(asked=None, got=None) -> dict:
    settings = []
    if asked is not None:
        settings.append(
            {
                "name": "nr_hugepages",
                "path": "/proc/sys/vm/nr_hugepages",
                "desired": asked,
                "before": 0,
                "after": got,
                "changed": True,
            }
        )
    return {
        "role": "hugepages",
        "size": "2M",
        "settings": settings,
        "persistence": [
            {
                "method": "sysctl",
                "path": "/etc/sysctl.d/80-preflight-hugepages.conf",
                "detail": "vm.nr_hugepages at boot",
                "state": "installed",
            }
        ]
        if asked is not None
        else [],
        "conflicts": [],
        "verified": got == asked,
        "reboot_required": False,
        "shortfall": None
        if got == asked
        else {
            "asked": asked,
            "got": got,
            "why": "memory too fragmented: the kernel found no more contiguous blocks of that size",
        },
    }


def desired(enabled="madvise", defrag="never", khugepaged_defrag=1, hugepages_count=None, shortfall="fail") -> dict:
    return {
        "thp": {
            "enabled": enabled,
            "defrag": defrag,
            "khugepaged_defrag": khugepaged_defrag,
            "persist": ["systemd", "kernel_cmdline"],
        },
        "hugepages": {"count": hugepages_count, "per_node": None, "size": "2M", "shortfall": shortfall},
    }


def host(name, groups=("h100",), **over) -> dict:
    item = {
        "host": name,
        "groups": list(groups),
        "gpu_class": None,
        "level": "quick",
        "ping": {"ping": "pong", "changed": False},
        "failure": None,
        "facts": facts(),
        "role_results": {"thp": thp_result()},
        "desired": desired(),
        "thresholds": {},
        "probes": {},
        "timings": {},
    }
    item.update(over)
    return item


def unreachable(name, groups=("h100",)) -> dict:
    return {
        "host": name,
        "groups": list(groups),
        "ping": {"unreachable": True, "msg": UNREACHABLE_MSG, "changed": False},
    }


def failed(name, groups=("h100",)) -> dict:
    return host(
        name,
        groups,
        failure={"task": "thp : Ensure every THP variable is valid for this kernel", "msg": INVALID_THP_MSG},
        role_results={},
        desired=desired(enabled="sometimes"),
    )


def samples(median: float, spread: float, n: int = 9, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def envelope(probe: str, results: dict, verdicts=()) -> dict:
    return probe_result.envelope(
        probe, {"repeats": 9}, results, list(verdicts), started_at=NOW.timestamp(), duration_s=12.5
    )


def ttft_probe(cold_ms=50.0, warm_ms=20.0, spread=0.05, seed=1, n=9) -> dict:
    """Shaped like probes.ttft's result: warm per API, the first request in cold_start."""
    warm = stats.summarize(samples(warm_ms, spread, n, seed), "ms")
    return envelope(
        "ttft",
        {
            "backend": "cpu",
            "apis": ["completions"],
            "warm": {
                "completions": {
                    "api": "completions",
                    "n_requests": n,
                    "n_ok": n,
                    "errors": [],
                    "ttft_ms": warm,
                    "e2e_ms": stats.summarize(samples(warm_ms * 5, spread, n, seed + 1), "ms"),
                }
            },
            "cold_start": {
                "started_by_probe": True,
                "cold_is_first_request_since_start": True,
                "process_start_to_ready_s": 35.2,
                "first_request_ttft_ms": cold_ms,
                "warm_median_ttft_ms": warm["median"],
                "warm_p95_ttft_ms": warm["p95"],
            },
            "notes": [],
        },
    )


def load_probe(cold_s=(30.0, 1.4), warm_s=(15.0, 0.6), weight_bytes=3.09e9, disk_gb_s=1.7, spread=0.05) -> dict:
    """Shaped like probes.load's result: per condition, phase summaries and GB/s; limits; ratios."""

    def condition(total_s, weights_s, seed):
        phases = {
            "total_s": stats.summarize(samples(total_s, spread, 3, seed), "s"),
            "import_s": stats.summarize(samples(total_s - weights_s - 0.5, spread, 3, seed + 1), "s"),
            "from_pretrained_s": stats.summarize(samples(weights_s, spread, 3, seed + 2), "s"),
            "load_s": stats.summarize(samples(weights_s, spread, 3, seed + 3), "s"),
        }
        return {
            "n": 3,
            "phases": phases,
            "from_pretrained_gb_per_s": stats.summarize(
                samples(weight_bytes / 1e9 / weights_s, spread, 3, seed), "GB/s"
            ),
        }

    cold = condition(*cold_s, 10)
    disk = samples(disk_gb_s, spread, 3, 20)
    return envelope(
        "load",
        {
            "model": {"name": "qwen2.5-1.5b", "weight_bytes": weight_bytes},
            "cold": cold,
            "cold_not_measured": None,
            "warm": condition(*warm_s, 30),
            "limits": {
                "disk_read_gb_per_s": stats.summarize(disk, "GB/s"),
                "disk_read_not_measured": None,
                "page_cache_read_gb_per_s": stats.summarize(samples(9.0, spread, 3, 21), "GB/s"),
                "h2d": None,
                "h2d_not_measured": "no GPU on this host",
            },
            "achieved_vs_limit": {
                "cold_from_pretrained_vs_disk_read": stats.ratio(cold["from_pretrained_gb_per_s"]["samples"], disk)
            },
        },
    )


def _bytes(size: str) -> int:
    return int(float(size[:-3]) * {"MiB": 2**20, "GiB": 2**30}[size[-3:]])


def kv_probe(configs: list[tuple[int, str, int | None, float | None]]) -> dict:
    """Shaped like probes.kv's result: one entry per (max_model_len, budget) start; kv_tokens None: did not fit."""
    return envelope(
        "kv",
        {
            "backend": "cpu",
            "configs": [
                {
                    "max_model_len": length,
                    "budget": f"kv_cache_memory_bytes={_bytes(budget)} ({budget})",
                    "budget_kind": "bytes",
                    "budget_value": float(_bytes(budget)),
                    "fits": tokens is not None,
                    "kv_tokens": tokens,
                    "block_size": 16,
                    "max_concurrency": concurrency,
                    "error": None if tokens is not None else f"max-model-len {length} does not fit",
                }
                for length, budget, tokens, concurrency in configs
            ],
        },
    )


def batching_probe(levels: dict[int, float], ttft_ms: dict[int, float]) -> dict:
    """Shaped like probes.batching's result: per concurrency level, throughput and TTFT summaries."""
    out, sequential = [], None
    for c, tok_s in sorted(levels.items()):
        tput = stats.summarize(samples(tok_s, 0.05, 3, c), "tok/s")
        ttft = stats.summarize(samples(ttft_ms[c], 0.1, 3 * c, c), "ms")
        sequential = sequential or tput["median"]
        out.append(
            {
                "concurrency": c,
                "repeats": 3,
                "output_tok_per_s": tput,
                "ttft_ms": ttft,
                "ttft_p50_ms": ttft["median"],
                "ttft_p95_ms": ttft["p95"],
                "speedup_vs_sequential": tput["median"] / sequential,
            }
        )
    return envelope("batching", {"backend": "cpu", "levels": out})


def allocator_probe(glibc_s: float, jemalloc_s: float, spread: float = 0.02) -> dict:
    """Shaped like probes.generate's result: per-allocator summaries and '<other>_vs_<baseline>' comparisons."""
    glibc, jemalloc = samples(glibc_s, spread, 9, 3), samples(jemalloc_s, spread, 9, 4)
    return envelope(
        "generate",
        {
            "baseline": "glibc",
            "allocators": {
                "glibc": {"allocator": "glibc", "steady_state_s": stats.summarize(glibc, "s")},
                "jemalloc": {"allocator": "jemalloc", "steady_state_s": stats.summarize(jemalloc, "s")},
            },
            "comparisons": {
                "jemalloc_vs_glibc": {
                    "steady_state_s": stats.compare(jemalloc, glibc, name_a="jemalloc", name_b="glibc", unit="s")
                }
            },
        },
    )


def build(items: list[dict], report_dir: Path, **kw) -> dict:
    kw.setdefault("now", NOW)
    return pipeline.build_run(items, str(report_dir), **kw)


def one(item: dict, tmp_path: Path) -> dict:
    return build([item], tmp_path, compare_history=False)["docs"][0]


def by_id(doc: dict) -> dict[str, dict]:
    return {c["id"]: c for c in doc["checks"]}
