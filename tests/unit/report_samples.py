"""Host entries for the report tests, shaped as playbooks/report.yml collects them.

Facts come from node_facts' real parser over a recorded /proc and /sys tree (tests/fixtures/facts); probe
envelopes from the probes' own envelope and statistics code; role results follow the roles' contract.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from probes import result as probe_result
from probes import stats
from tests.moduleutils import module_util

pipeline = module_util("preflight.report.pipeline")
facts_mod = module_util("preflight.facts")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"
NOW = datetime(2026, 11, 23, 15, 0, 0, tzinfo=timezone.utc)
UNREACHABLE_MSG = (
    "Task failed: Failed to connect to the host via ssh: ssh: connect to host 127.0.0.254 port 2222: Connection refused"
)
INVALID_THP_MSG = "thp_enabled: 'sometimes' is not one of always, madvise, never (this kernel offers: always madvise never)"


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


def gpu(index=0, width=16, width_max=16, used_mib=512, total_mib=81559, persistence=True, uncorrected=0,
        remap_pending=0, remap_failure=0) -> dict:
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
        "pcie": {"gen_current": 5, "gen_max": 5, "width_current": width, "width_max": width_max,
                 "bandwidth_gbs_current": 3.94 * width, "bandwidth_gbs_max": 3.94 * width_max},
        "persistence_mode": persistence,
        "ecc": {"mode": "enabled", "pending_mode": "enabled", "volatile_uncorrected": uncorrected,
                "aggregate_uncorrected": uncorrected + 3, "volatile_corrected": 7, "aggregate_corrected": 40},
        "remapped_rows": {"correctable": 0, "uncorrectable": 0, "pending": remap_pending, "failure": remap_failure},
    }


THP = "/sys/kernel/mm/transparent_hugepage"


def thp_result(before=("madvise", "madvise", 1), after=("madvise", "never", 1), persistence=None, conflicts=(),
               reboot_required=False, check_mode=False) -> dict:
    names = [("thp_enabled", f"{THP}/enabled"), ("thp_defrag", f"{THP}/defrag"),
             ("thp_khugepaged_defrag", f"{THP}/khugepaged/defrag")]
    desired = ("madvise", "never", 1)
    return {
        "role": "thp",
        "settings": [{"name": n, "path": p, "desired": d, "before": b, "after": a, "changed": b != a}
                     for (n, p), d, b, a in zip(names, desired, before, after, strict=True)],
        "persistence": persistence if persistence is not None else [
            {"method": "systemd", "state": "installed", "path": "/etc/systemd/system/preflight-thp.service",
             "detail": "unit written and enabled"},
            {"method": "kernel_cmdline", "state": "unavailable", "path": "/etc/default/grub",
             "detail": "no bootloader config found: /etc/default/grub does not exist"},
        ],
        "conflicts": list(conflicts),
        "verified": True,
        "reboot_required": reboot_required,
        "check_mode": check_mode,
    }


def hugepages_result(asked=None, got=None) -> dict:
    settings = []
    if asked is not None:
        settings.append({"name": "nr_hugepages", "path": "/proc/sys/vm/nr_hugepages", "desired": asked,
                         "before": 0, "after": got, "changed": True})
    return {
        "role": "hugepages",
        "size": "2M",
        "settings": settings,
        "persistence": [{"method": "sysctl", "path": "/etc/sysctl.d/80-preflight-hugepages.conf",
                         "detail": "vm.nr_hugepages at boot", "state": "installed"}] if asked is not None else [],
        "conflicts": [],
        "verified": got == asked,
        "reboot_required": False,
        "shortfall": None if got == asked else {
            "asked": asked, "got": got,
            "why": "memory too fragmented: the kernel found no more contiguous blocks of that size"},
    }


def desired(enabled="madvise", defrag="never", khugepaged_defrag=1, hugepages_count=None, shortfall="fail") -> dict:
    return {
        "thp": {"enabled": enabled, "defrag": defrag, "khugepaged_defrag": khugepaged_defrag,
                "persist": ["systemd", "kernel_cmdline"]},
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
    return {"host": name, "groups": list(groups), "ping": {"unreachable": True, "msg": UNREACHABLE_MSG,
                                                          "changed": False}}


def failed(name, groups=("h100",)) -> dict:
    return host(name, groups, failure={"task": "thp : Ensure every THP variable is valid for this kernel",
                                       "msg": INVALID_THP_MSG},
                role_results={}, desired=desired(enabled="sometimes"))


def samples(median: float, spread: float, n: int = 9, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def envelope(probe: str, results: dict, verdicts=()) -> dict:
    return probe_result.envelope(probe, {"repeats": 9}, results, list(verdicts), started_at=NOW.timestamp(),
                                 duration_s=12.5)


def ttft_probe(cold_ms=50.0, warm_ms=20.0, spread=0.05, seed=1) -> dict:
    return envelope("ttft", {
        "cold": {"ttft_ms": stats.summarize(samples(cold_ms, spread, 3, seed), "ms")},
        "warm": {"ttft_ms": stats.summarize(samples(warm_ms, spread, 9, seed + 1), "ms")},
    })


def allocator_probe(glibc_s: float, jemalloc_s: float, spread: float = 0.02) -> dict:
    """Shaped like probes.generate's result: per-allocator summaries and '<other>_vs_<baseline>' comparisons."""
    glibc, jemalloc = samples(glibc_s, spread, 9, 3), samples(jemalloc_s, spread, 9, 4)
    return envelope("generate", {
        "baseline": "glibc",
        "allocators": [{"allocator": "glibc", "steady_state_s": stats.summarize(glibc, "s")},
                       {"allocator": "jemalloc", "steady_state_s": stats.summarize(jemalloc, "s")}],
        "comparisons": {"jemalloc_vs_glibc": {
            "steady_state_s": stats.compare(jemalloc, glibc, name_a="jemalloc", name_b="glibc", unit="s")}},
    })


def build(items: list[dict], report_dir: Path, **kw) -> dict:
    kw.setdefault("now", NOW)
    return pipeline.build_run(items, str(report_dir), **kw)


def one(item: dict, tmp_path: Path) -> dict:
    return build([item], tmp_path, compare_history=False)["docs"][0]


def by_id(doc: dict) -> dict[str, dict]:
    return {c["id"]: c for c in doc["checks"]}
