#!/usr/bin/python
"""Ansible module: build, check and write Preflight's per-host documents and fleet reports (on the controller)."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core import document
from ansible.module_utils.preflight.report import pipeline

DOCUMENTATION = r"""
---
module: preflight_report
short_description: Write Preflight's host documents, checks and fleet reports for one run
description:
  - Runs on the controller (C(delegate_to=localhost) with C(run_once), as C(playbooks/report.yml) does) after
    the tuning play, with one entry per host of the run, including hosts that failed or were unreachable.
  - Builds one JSON document per host (with status, error, facts, settings before/after, probe results,
    checks, recommendations, fleet outliers, comparison with the host's previous run; the schema is
    module_utils/preflight/report/host_document.schema.json),
    validates it against the schema, and renders per-host Markdown and HTML, a fleet summary
    (Markdown, HTML, JSON), a Prometheus textfile and JUnit XML.
  - Returns each reached host's own Prometheus textfile (RV(node_metrics)), for the playbook to copy onto
    that host, into node_exporter's textfile directory.
  - Writes everything under O(report_dir)/<run id>/, each file through a temp file and a rename, then
    points O(report_dir)/latest at the run by renaming a new symlink over it.
  - In check mode everything is computed and validated, nothing is written, and RV(run_dir) says where
    the reports would go.
  - The logic lives in C(module_utils/preflight/report/); this module only marshals.
version_added: "0.1.0"
author: Preflight
options:
  report_dir:
    description:
      - Directory that holds one sub-directory per run and the C(latest) symlink.
      - Required with O(hosts).
    type: path
  hosts:
    description:
      - One entry per host of the run, with the host's variables the report reads, passed as they are and
        only those the host defines (C(playbooks/report.yml) passes them from C(hostvars)) - C(inventory_hostname),
        C(group_names), C(preflight_gpu_class), C(preflight_level), C(preflight_ping) (reach.yml's ping),
        C(preflight_failure) (C({task, msg}) from the tuning play's rescue; with C(node_writable=false) where the
        login lacks root, that host gets no RV(node_metrics)), C(preflight_node_facts) (the
        node_facts result of this run), C(preflight_role_results), C(preflight_probe_results),
        C(preflight_run), C(preflight_timings), C(preflight_thresholds), and the tuning variables
        C(thp_enabled), C(thp_defrag), C(thp_khugepaged_defrag), C(thp_persist), C(hugepages_count),
        C(hugepages_per_node), C(hugepages_size), C(hugepages_shortfall), C(jemalloc_enabled), C(jemalloc_scope).
      - The list is C(REPORT_HOSTVARS) in C(module_utils/preflight/core/document.py), which assembles the document;
        a tuning variable the host does not define takes its role's default, one set to null stays null.
      - A bad C(preflight_level) or C(preflight_thresholds) makes the host a failed row that names the variable,
        not a failed module.
      - An entry with C(host) instead of C(inventory_hostname) is taken as already assembled (C(host), C(groups),
        C(gpu_class), C(level), C(ping), C(failure), C(facts), C(role_results), C(desired), C(thresholds),
        C(probes), C(timings), C(run)), as callers of earlier versions pass it.
      - Give either O(hosts) (write the reports) or O(close_run) (close one host's run).
    type: list
    elements: dict
  report_level:
    description:
      - The level of every host that recorded no run of its own (C(preflight_report_level) of the importing
        playbook, e.g. site.yml); wins over each host's C(preflight_level).
    type: str
  run_id:
    description:
      - Name of the run directory; default a time-sortable id such as C(20261123T151700Z-3fa2).
      - Letters, digits, C(.), C(_), C(-), and not C(latest).
      - Slices of one run (AWX job slicing, C(--limit) partitions) that share a run id write into one directory;
        each slice adds its hosts' documents and rewrites the summary over every host written there so far, so
        the last slice to finish leaves the whole fleet's summary, outliers and counts.
    type: str
  prometheus_dir:
    description:
      - Also write the run's fleet-wide C(preflight.prom) here (atomically). It holds the hosts of this run
        directory only (all slices of a shared O(run_id)), so a C(--limit) run with a run id of its own drops the
        others; node_exporter should read each node's own file (RV(node_metrics)).
    type: path
  compare_history:
    description: Compare each host with its newest earlier document under O(report_dir).
    type: bool
    default: true
  outlier_score:
    description:
      - Robust z-score (MAD_SCALE x deviation / MAD) beyond which a figure is an outlier in its class.
      - Null or omitted is Preflight's built-in OUTLIER_SCORE (C(module_utils/preflight/core/thresholds.py)).
    type: float
  outlier_min_relative:
    description:
      - Ignore deviations smaller than this fraction of the class median.
      - Null or omitted is Preflight's built-in OUTLIER_MIN_RELATIVE (C(module_utils/preflight/core/thresholds.py)).
    type: float
  close_run:
    description:
      - Instead of writing reports, close one host's run (C(playbooks/tasks/summary.yml)) - C(preflight_run)
        as recorded so far - and return it with C(total_s), C(certify_s) and C(over_budget) added
        (RV(run)), the seconds per phase (RV(timings)) and one line for people (RV(line)). Writes nothing.
    type: dict
  host:
    description: The host whose run O(close_run) closes (its inventory name); required with O(close_run).
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - jsonschema (on the controller; in requirements.txt)
notes:
  - With O(close_run) it only computes; run it on the controller (C(delegate_to=localhost)).
  - Hosts that failed or were unreachable are reports too, with their error; the playbook decides whether
    the run fails (see RV(not_ok_hosts) and RV(failing_checks)).
"""

EXAMPLES = r"""
- name: Write the reports of this run
  preflight_report:
    report_dir: "{{ preflight_report_dir }}"
    hosts:
      - inventory_hostname: node1
        group_names: [h100]
        preflight_ping: "{{ hostvars['node1'].preflight_ping }}"
        preflight_node_facts: "{{ hostvars['node1'].preflight_node_facts }}"
        preflight_role_results: "{{ hostvars['node1'].preflight_role_results | default(omit) }}"
        thp_enabled: madvise
  register: preflight_report_result

- name: Total the phases of this host's run and compare with the level's budget
  preflight_report:
    close_run: "{{ preflight_run }}"
    host: "{{ inventory_hostname }}"
  delegate_to: localhost
  register: preflight_closed_run
"""

RETURN = r"""
run_id:
  description: The run's id (its directory name).
  returned: with hosts
  type: str
  sample: 20261123T151700Z-3fa2
run_dir:
  description: Where the reports are (or, in check mode, would be) written.
  returned: with hosts
  type: str
latest:
  description: The C(latest) symlink (not touched in check mode).
  returned: with hosts
  type: str
summary_html:
  description: Path of the fleet summary page.
  returned: with hosts
  type: str
files:
  description: Every file written (empty in check mode), C(latest) last.
  returned: with hosts
  type: list
  elements: str
would_write:
  description: Files that check mode would have written.
  returned: with hosts
  type: list
  elements: str
hosts:
  description: Per host, status, verdict, check counts and the error if any.
  returned: with hosts
  type: dict
  sample: {node1: {status: ok, verdict: warn, checks: {pass: 6, warn: 1, fail: 0, skip: 0}, error: null}}
not_ok_hosts:
  description: Hosts that failed or were unreachable, each with its error message.
  returned: with hosts
  type: dict
failing_checks:
  description: Per host, the checks that failed, each as the check id, a colon and the reason.
  returned: with hosts
  type: dict
totals:
  description: Counts of hosts, statuses, verdicts and checks.
  returned: with hosts
  type: dict
lines:
  description: A few lines for the operator (one per host that needs attention, then where the reports are).
  returned: with hosts
  type: list
  elements: str
node_metrics:
  description:
    - Per host that was reached, its Prometheus textfile (no host label, no run id; base units), built in
      C(module_utils/preflight/report/node_metrics.py). C(playbooks/report.yml) copies it to the host as
      C(preflight_textfile_dir)/preflight.prom. Also returned in check mode.
  returned: with hosts
  type: dict
  sample: {node1: "# HELP preflight_last_run_timestamp_seconds ...\n"}
run:
  description: With O(close_run), the run with C(total_s), C(certify_s) and C(over_budget) added.
  returned: with close_run
  type: dict
timings:
  description: With O(close_run), seconds per phase.
  returned: with close_run
  type: dict
line:
  description: With O(close_run), what ran, failed and was skipped (and why), the phases' seconds and the budget.
  returned: with close_run
  type: str
"""


ARGUMENT_SPEC = dict(
    report_dir=dict(type="path"),
    hosts=dict(type="list", elements="dict"),
    report_level=dict(type="str"),
    run_id=dict(type="str"),
    prometheus_dir=dict(type="path"),
    compare_history=dict(type="bool", default=True),
    outlier_score=dict(type="float"),
    outlier_min_relative=dict(type="float"),
    close_run=dict(type="dict"),
    host=dict(type="str"),
)


def close_run(module, run: dict, host: str):
    closed = document.close_run(run)
    line = document.run_line(host, closed)
    module.exit_json(changed=False, run=closed, timings=document.timings(closed), line=line, msg=line)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_one_of=[("hosts", "close_run")],
        mutually_exclusive=[("hosts", "close_run")],
        required_by={"hosts": "report_dir", "close_run": "host"},
    )
    p = module.params
    if p["close_run"] is not None:
        close_run(module, p["close_run"], p["host"])
    report_dir = os.path.abspath(p["report_dir"])
    try:
        items = [document.report_input(hostvars, p["report_level"]) for hostvars in p["hosts"]]
        run = pipeline.build_run(
            items,
            report_dir,
            run_id=p["run_id"],
            outlier_score=p["outlier_score"],
            outlier_min_relative=p["outlier_min_relative"],
            compare_history=p["compare_history"],
        )
    except (pipeline.ReportError, ValueError, RuntimeError) as exc:
        module.fail_json(msg=f"Preflight could not build the reports: {exc}")

    run_dir = os.path.join(report_dir, run["run_id"])
    would_write = [os.path.join(run_dir, name) for name in sorted(run["outputs"])]
    if p["prometheus_dir"]:
        would_write.append(os.path.join(p["prometheus_dir"], pipeline.PROM_FILE))
    written = []
    if not module.check_mode:
        try:
            written = pipeline.write_run(run, report_dir, p["prometheus_dir"])
        except OSError as exc:
            module.fail_json(
                msg=f"Preflight could not write the reports under {report_dir}: {exc}. "
                "Check that the directory is writable and has space; set preflight_report_dir "
                "to another place if needed.",
                run_id=run["run_id"],
                run_dir=run_dir,
            )
    summary = run["summary"]
    outcome = pipeline.outcome(summary, run_dir, module.check_mode)
    module.exit_json(
        changed=True,
        run_id=run["run_id"],
        run_dir=run_dir,
        latest=os.path.join(report_dir, "latest"),
        summary_html=os.path.join(run_dir, "summary.html"),
        files=written,
        would_write=would_write if module.check_mode else [],
        failing_checks=summary["failing_checks"],
        totals=summary["totals"],
        node_metrics=run["node_metrics"],
        msg=outcome["lines"][-1],
        **outcome,
    )


if __name__ == "__main__":
    main()
