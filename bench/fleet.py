"""Fleet scale (issue 18): wall time of audit.yml (check mode) and site.yml over N real SSH test hosts, and of
the report pipeline over synthetic host documents. Run from the repository root, as root, while no `make test`
runs here (the hosts share this machine's kernel and its sysfs with the integration tests):

    .venv/bin/python bench/fleet.py --hosts 1,5,10,25,50
    .venv/bin/python bench/fleet.py --hosts 1,5 --configs before,after      # one run, both configurations
    .venv/bin/python bench/fleet.py --hosts none --report-hosts 50,500      # the report alone (no host)

Each N starts N sshd hosts on 127.0.2.1.. (tests/sshfleet.py), each with its own run lock file, runs the
playbooks at level quick (site.yml runs no probes; audit.yml forces quick), rolls site.yml's persisted files
back through playbooks/rollback.yml, and stops every sshd by PID, also on Ctrl-C. The kernel's THP and
hugepage values are put back at the end. Results: bench/results/fleet.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import fleet_machine as machine  # noqa: E402
from tests.conftest import NR_HUGEPAGES, THP_TUNABLES, _selected  # noqa: E402
from tests.sshfleet import SshFleet, ansible_env, run_playbook  # noqa: E402

RESULTS = REPO / "bench" / "results"
# ansible-core's own defaults for what ansible.cfg sets for speed: the "before" of the before/after ratios.
CONFIGS = {
    "before": {"ANSIBLE_FORKS": "5", "ANSIBLE_PIPELINING": "False", "ANSIBLE_SSH_ARGS": "",
               "ANSIBLE_GATHERING": "implicit"},
    "after": {},
}
PLAYBOOKS = {
    "audit": ("playbooks/audit.yml", ["--check"]),
    "site": ("playbooks/site.yml", []),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="1,5,10,25,50", help="comma-separated N list, or 'none'")
    p.add_argument("--playbooks", default="audit,site", help="comma-separated: audit, site")
    p.add_argument("--configs", default="after",
                   help="comma-separated: after (ansible.cfg as it is), before (ansible-core defaults: "
                   "forks 5, no pipelining, no ControlPersist, implicit gathering)")
    p.add_argument("--ansible-cfg", help="run with this ansible.cfg instead of the repository's (label 'custom')")
    p.add_argument("-e", "--extra-vars", action="append", default=[], help="passed to every playbook run")
    p.add_argument("--report-hosts", default="",
                   help="comma-separated synthetic host counts for the report, e.g. 50,500")
    p.add_argument("--report-slices", type=int, default=0,
                   help="also write the largest --report-hosts count as this many slices of one run")
    p.add_argument("--profile-report", action="store_true", help="print the report's cProfile top 25")
    p.add_argument("--out", default=str(RESULTS), help="results directory")
    p.add_argument("--name", default="fleet", help="results file stem")
    return p.parse_args(argv)


def counts(text: str) -> list[int]:
    return [] if text in ("", "none") else [int(x) for x in text.split(",")]


def config_envs(args) -> dict[str, dict[str, str]]:
    envs = {name: dict(CONFIGS[name]) for name in args.configs.split(",") if name}
    if args.ansible_cfg:
        envs["custom"] = {"ANSIBLE_CONFIG": str(Path(args.ansible_cfg).resolve())}
    return envs


def run_one(playbook: str, inventory: Path, env_over: dict, extra: list[str], fleet: SshFleet, reports: Path) -> dict:
    """One timed ansible-playbook run: wall seconds, controller CPU (children), the sshd side's CPU."""
    path, flags = PLAYBOOKS[playbook]
    args = [*flags, "-e", f"preflight_report_dir={reports}"]
    for e in extra:
        args += ["-e", e]
    env = ansible_env(**env_over)
    sshd_before = machine.sshd_cpu_s(fleet.pids)
    cpu_before = os.times()
    load = os.getloadavg()[0]
    started = time.monotonic()
    proc = run_playbook(path, inventory, *args, env=env, timeout=3600)
    wall = time.monotonic() - started
    cpu_after = os.times()
    return {
        "wall_s": round(wall, 2),
        "controller_cpu_s": round((cpu_after.children_user - cpu_before.children_user)
                                  + (cpu_after.children_system - cpu_before.children_system), 2),
        "sshd_cpu_s": round(machine.sshd_cpu_s(fleet.pids) - sshd_before, 2),
        "load_1m_before": round(load, 2),
        "rc": proc.returncode,
        "recap": machine.recap(proc.stdout),
        "tail": "" if proc.returncode in (0,) else proc.stdout[-1500:] + proc.stderr[-1500:],
    }


def rollback(inventory: Path) -> None:
    """site.yml persisted units and drop-ins on this machine (every host is it): one rollback takes them back."""
    proc = run_playbook("playbooks/rollback.yml", inventory, "--limit", "node1", timeout=900)
    if proc.returncode != 0:
        print(f"rollback.yml failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}", file=sys.stderr)


def measure_fleets(args, work: Path) -> list[dict]:
    sizes = counts(args.hosts)
    rows: list[dict] = []
    if not sizes:
        return rows
    fleet = SshFleet(workdir=work / "fleet", addresses=[f"127.0.2.{i + 1}" for i in range(max(sizes))])
    try:
        fleet.start()
        for n in sizes:
            part = SshFleet(workdir=fleet.workdir, addresses=fleet.addresses[:n], port=fleet.port)
            inventory = part.inventory(work / f"hosts-{n}.yml")
            for config, env_over in config_envs(args).items():
                for playbook in args.playbooks.split(","):
                    result = run_one(playbook, inventory, env_over, args.extra_vars, fleet, work / "reports")
                    if playbook == "site":
                        rollback(inventory)
                    row = {"hosts": n, "playbook": playbook, "config": config, **result}
                    print(f"N={n:3d} {playbook:5s} {config:6s} {row['wall_s']:7.1f} s  rc={row['rc']} "
                          f"controller {row['controller_cpu_s']} s, sshd {row['sshd_cpu_s']} s CPU", flush=True)
                    rows.append(row)
    finally:
        fleet.stop()
    return rows


def measure_report(args) -> list[dict]:
    from bench import fleet_docs

    rows = []
    for n in counts(args.report_hosts):
        row = fleet_docs.time_report(n, profile=args.profile_report)
        if "profile_top" in row:
            print(row.pop("profile_top"))
        print(f"report over {n} synthetic hosts: {row['total_s']} s (build {row['build_s']}, write {row['write_s']})",
              flush=True)
        rows.append(row)
    if args.report_slices > 1 and rows:
        row = fleet_docs.time_sliced_report(max(counts(args.report_hosts)), args.report_slices)
        print(f"report over {row['hosts']} hosts in {row['slices']} slices: {row['slice_s']} s per slice", flush=True)
        rows.append(row)
    return rows


def restore_kernel(before: dict[Path, str]) -> None:
    for path, text in before.items():
        if _selected(path.read_text()) != _selected(text):
            path.write_text(_selected(text))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and a plain kill both unwind through the finally blocks that stop every sshd.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    kernel_before = {p: p.read_text() for p in [*THP_TUNABLES, NR_HUGEPAGES] if p.exists()}
    results = {"command": " ".join([".venv/bin/python bench/fleet.py", *(argv or sys.argv[1:])]),
               "machine": machine.describe(), "configs": config_envs(args), "extra_vars": args.extra_vars}
    try:
        with tempfile.TemporaryDirectory(prefix="preflight-bench-") as work:
            results["playbook_runs"] = measure_fleets(args, Path(work))
    finally:
        restore_kernel(kernel_before)
    results["report_runs"] = measure_report(args)
    machine.write_results(results, Path(args.out), args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
