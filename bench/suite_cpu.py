"""Where make test's time and CPU go: a pytest plugin that records each test's wall time and CPU, and a summary.

Each pytest process of `make pytest` moves itself into a cpuacct cgroup of its own (cgroup v1, as on this VM), so
everything it starts (SSH test hosts, ansible-playbook, vLLM servers) is counted to it, and the two lanes' processes,
which run side by side, are measured apart. Where no cgroup can be made, the machine-wide /proc/stat is read instead
(the other lane's CPU is then counted too). Run from the repository root:

    PYTHONPATH=. make pytest PYTEST_ARGS="-p bench.suite_cpu"     # writes .cache/suite-cpu.jsonl
    .venv/bin/python bench/suite_cpu.py                             # per lane and per file, the costliest tests
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

import pytest

OUT = Path(os.environ.get("SUITE_CPU_OUT", ".cache/suite-cpu.jsonl"))
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
_group: Path | None = None


def _process_name(config) -> str:
    """One pytest process of make pytest, named by its test paths and its -m expression."""
    paths = "+".join(Path(a).name for a in config.args) or "tests"
    marks = config.getoption("markexpr") or ""
    return "".join(c if c.isalnum() else "_" for c in f"preflight-{paths}-{marks}")[:100]


def pytest_configure(config) -> None:
    global _group
    group = CPUACCT / _process_name(config)
    try:
        group.mkdir(exist_ok=True)
        (group / "tasks").write_text(str(os.getpid()))
        _group = group
    except OSError:
        _group = None


def _cpu_s() -> float:
    if _group is not None:
        return int((_group / "cpuacct.usage").read_text()) / 1e9
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started, cpu = time.monotonic(), _cpu_s()
    yield
    record = {"process": _group.name if _group else "machine", "test": item.nodeid,
              "wall_s": round(time.monotonic() - started, 2), "cpu_s": round(_cpu_s() - cpu, 2)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as out:
        out.write(json.dumps(record) + "\n")


def main() -> None:
    rows = [json.loads(line) for line in OUT.read_text().splitlines()]
    processes = collections.defaultdict(list)
    for row in rows:
        processes[row["process"]].append(row)
    for process, tests in processes.items():
        print(f"{process}: {len(tests)} tests, {sum(t['wall_s'] for t in tests):.0f} s, "
              f"{sum(t['cpu_s'] for t in tests):.0f} CPU-s")
        files = collections.defaultdict(lambda: [0.0, 0.0, 0])
        for t in tests:
            entry = files[t["test"].split("::")[0]]
            entry[0] += t["wall_s"]
            entry[1] += t["cpu_s"]
            entry[2] += 1
        for name, (wall, cpu, n) in sorted(files.items(), key=lambda kv: -kv[1][1])[:12]:
            print(f"  {cpu:7.1f} CPU-s {wall:7.1f} s {n:4d} tests  {name}")
    print("costliest tests (CPU-s, s):")
    for t in sorted(rows, key=lambda r: -r["cpu_s"])[:15]:
        print(f"  {t['cpu_s']:7.1f} {t['wall_s']:7.1f}  {t['test']}")


if __name__ == "__main__":
    sys.exit(main())
