"""bench/fleet.py's helpers: the machine's description, CPU time of the sshd side, and the results files
(JSON for machines, a Markdown table for people, a PNG plot)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def describe() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    ansible = subprocess.run([str(Path(os.sys.executable).parent / "ansible"), "--version"],
                             capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ansible_core": ansible[0] if ansible else "unknown",
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "note": "shared VM: other workers run tests on the same 2 cores; every test host is this machine "
        "(sshd on 127.0.2.N), so the nodes' work and the controller's share the CPU",
    }


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime, stime, cutime, cstime: the process and its reaped children.
    return sum(int(x) for x in fields[11:15])


def sshd_cpu_s(pids: list[int]) -> float:
    """CPU seconds of the test hosts' sshd daemons and everything under them (sessions, modules' Python)."""
    tree = _children()
    todo, seen = list(pids), set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += tree.get(pid, [])
    return sum(_cpu_ticks(p) for p in seen) / TICK


def recap(stdout: str) -> dict[str, int]:
    """Totals of PLAY RECAP: ok, changed, failed, unreachable over every host."""
    totals = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}
    for key, value in re.findall(r"\b(ok|changed|unreachable|failed)=(\d+)", stdout.split("PLAY RECAP")[-1]):
        totals[key] += int(value)
    return totals


def table(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Fleet scale: wall time against hosts",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, "
        f"{m['ansible_core']}, Python {m['python']}. {m['note']}.",
        "",
        "| hosts | playbook | config | wall s | x one host | controller CPU s | sshd CPU s | load 1m | rc |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    runs = results.get("playbook_runs", [])
    one = {(r["playbook"], r["config"]): r["wall_s"] for r in runs if r["hosts"] == 1}
    for r in runs:
        base = one.get((r["playbook"], r["config"]))
        ratio = f"{r['wall_s'] / base:.2f}" if base else "-"
        lines.append(f"| {r['hosts']} | {r['playbook']} | {r['config']} | {r['wall_s']:.1f} | {ratio} | "
                     f"{r['controller_cpu_s']:.1f} | {r['sshd_cpu_s']:.1f} | {r['load_1m_before']} | {r['rc']} |")
    if results.get("report_runs"):
        lines += ["", "## Report pipeline over synthetic host documents", "",
                  "| hosts | build s | write s | total s | files | hosts with outliers | unreachable | failed |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["report_runs"]:
            if "slices" in r:
                lines.append(f"| {r['hosts']} in {r['slices']} slices of one run | seconds per slice, in order: "
                             f"{', '.join(str(x) for x in r['slice_s'])} (the later ones fold in the earlier "
                             f"documents) | | | | {r['hosts_with_outliers']} | | |")
                continue
            lines.append(f"| {r['hosts']} | {r['build_s']} | {r['write_s']} | {r['total_s']} | {r['files']} | "
                         f"{r['hosts_with_outliers']} | {r['unreachable']} | {r['failed']} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = results.get("playbook_runs", [])
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(r["playbook"], r["config"]) for r in runs}):
        points = sorted((r["hosts"], r["wall_s"]) for r in runs if (r["playbook"], r["config"]) == key)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{key[0]} ({key[1]})")
        if points[0][0] == 1:
            ax.axhline(2 * points[0][1], linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("hosts")
    ax.set_ylabel("wall time, s")
    ax.set_title(f"Preflight fleet scale ({results['machine']['cores']} cores; dotted: 2x one host)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(results: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(table(results))
    if plot(results, out / f"{name}.png"):
        print(f"wrote {out / name}.json, .md, .png")
    else:
        print(f"wrote {out / name}.json, .md (no plot: no playbook runs, or matplotlib missing: requirements-dev.txt)")
