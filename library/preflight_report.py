#!/usr/bin/python
"""Ansible module: build, check and write Preflight's per-host documents and fleet reports (on the controller)."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.report import pipeline

DOCUMENTATION = r"""
---
module: preflight_report
short_description: Write Preflight's host documents, checks and fleet reports for one run
description:
  - Runs on the controller (C(delegate_to=localhost) with C(run_once), as C(playbooks/report.yml) does) after
    the tuning play, with one entry per host of the run, including hosts that failed or were unreachable.
  - Builds one JSON document per host (schema version 1 with status, error, facts, settings before/after,
    probe results, checks, recommendations, fleet outliers, comparison with the host's previous run),
    validates it against the schema, and renders per-host Markdown and HTML, a fleet summary
    (Markdown, HTML, JSON), a Prometheus textfile and JUnit XML.
  - Writes everything under O(report_dir)/<run id>/, each file through a temp file and a rename, then
    points O(report_dir)/latest at the run by renaming a new symlink over it.
  - In check mode everything is computed and validated, nothing is written, and RV(run_dir) says where
    the reports would go.
  - The logic lives in C(module_utils/preflight/report/); this module only marshals.
version_added: "0.1.0"
author: Preflight
options:
  report_dir:
    description: Directory that holds one sub-directory per run and the C(latest) symlink.
    type: path
    required: true
  hosts:
    description:
      - One entry per host of the run, as C(playbooks/report.yml) collects it from C(hostvars).
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: Inventory name.
        type: str
        required: true
      groups:
        description: The host's C(group_names).
        type: list
        elements: str
        default: []
      gpu_class:
        description: Hosts are compared for outliers within their class; default the first group.
        type: str
      level:
        description:
          - Certification level the host ran at (quick, standard or full); C(run.level) wins.
          - Any other value makes the host a failed row that names the variable, not a failed module.
        type: str
        default: quick
      ping:
        description: The registered result of the first ping (C(unreachable) and C(msg) are read).
        type: dict
      failure:
        description: C({task, msg}) recorded by the tuning play's rescue; null when nothing failed.
        type: dict
      facts:
        description: C(ansible_facts.preflight) as C(node_facts) returned it in this run (not from the fact cache).
        type: dict
      role_results:
        description: C(preflight_role_results) (per role settings before/after, persistence, verification).
        type: dict
        default: {}
      desired:
        description:
          - The desired state the host was tuned to, per role, for example C(thp.enabled) and C(hugepages.count).
        type: dict
        default: {}
      thresholds:
        description: C(preflight_thresholds) overrides for this host (see group_vars/all.yml).
        type: dict
        default: {}
      probes:
        description: Probe envelopes by probe name.
        type: dict
        default: {}
      timings:
        description: Seconds per phase.
        type: dict
        default: {}
      run:
        description:
          - C(preflight_run) as the entry playbooks record it (level, budget, planned, ran, failed, skipped with
            the reason, phases with their seconds). Its level wins over O(hosts[].level).
        type: dict
  run_id:
    description:
      - Name of the run directory; default a time-sortable id such as C(20261123T151700Z-3fa2).
      - Letters, digits, C(.), C(_), C(-), and not C(latest).
    type: str
  prometheus_dir:
    description:
      - Also write C(preflight.prom) here (atomically), for node_exporter's textfile collector.
    type: path
  compare_history:
    description: Compare each host with its newest earlier document under O(report_dir).
    type: bool
    default: true
  outlier_score:
    description: Robust z-score (0.6745 x deviation / MAD) beyond which a figure is an outlier in its class.
    type: float
    default: 3.5
  outlier_min_relative:
    description: Ignore deviations smaller than this fraction of the class median.
    type: float
    default: 0.1
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - jsonschema (on the controller; in requirements.txt)
notes:
  - Hosts that failed or were unreachable are reports too, with their error; the playbook decides whether
    the run fails (see RV(not_ok_hosts) and RV(failing_checks)).
"""

EXAMPLES = r"""
- name: Write the reports of this run
  preflight_report:
    report_dir: "{{ preflight_report_dir }}"
    prometheus_dir: "{{ preflight_prometheus_dir | default(omit) }}"
    hosts:
      - host: node1
        groups: [h100]
        ping: "{{ hostvars['node1'].preflight_ping }}"
        facts: "{{ hostvars['node1'].preflight_node_facts.ansible_facts.preflight }}"
        role_results: "{{ hostvars['node1'].preflight_role_results | default({}) }}"
        desired:
          thp: {enabled: madvise, defrag: never, khugepaged_defrag: 1}
  register: preflight_report_result
"""

RETURN = r"""
run_id:
  description: The run's id (its directory name).
  returned: always
  type: str
  sample: 20261123T151700Z-3fa2
run_dir:
  description: Where the reports are (or, in check mode, would be) written.
  returned: always
  type: str
latest:
  description: The C(latest) symlink (not touched in check mode).
  returned: always
  type: str
summary_html:
  description: Path of the fleet summary page.
  returned: always
  type: str
files:
  description: Every file written (empty in check mode), C(latest) last.
  returned: always
  type: list
  elements: str
would_write:
  description: Files that check mode would have written.
  returned: always
  type: list
  elements: str
hosts:
  description: Per host, status, verdict, check counts and the error if any.
  returned: always
  type: dict
  sample: {node1: {status: ok, verdict: warn, checks: {pass: 6, warn: 1, fail: 0, skip: 0}, error: null}}
not_ok_hosts:
  description: Hosts that failed or were unreachable, each with its error message.
  returned: always
  type: dict
failing_checks:
  description: Per host, the checks that failed, each as the check id, a colon and the reason.
  returned: always
  type: dict
totals:
  description: Counts of hosts, statuses, verdicts and checks.
  returned: always
  type: dict
lines:
  description: A few lines for the operator (one per host that needs attention, then where the reports are).
  returned: always
  type: list
  elements: str
"""


HOST_SPEC = dict(
    host=dict(type="str", required=True),
    groups=dict(type="list", elements="str", default=[]),
    gpu_class=dict(type="str"),
    level=dict(type="str", default="quick"),
    ping=dict(type="dict"),
    failure=dict(type="dict"),
    facts=dict(type="dict"),
    role_results=dict(type="dict", default={}),
    desired=dict(type="dict", default={}),
    thresholds=dict(type="dict", default={}),
    probes=dict(type="dict", default={}),
    timings=dict(type="dict", default={}),
    run=dict(type="dict"),
)


ARGUMENT_SPEC = dict(
    report_dir=dict(type="path", required=True),
    hosts=dict(type="list", elements="dict", required=True, options=HOST_SPEC),
    run_id=dict(type="str"),
    prometheus_dir=dict(type="path"),
    compare_history=dict(type="bool", default=True),
    outlier_score=dict(type="float", default=3.5),
    outlier_min_relative=dict(type="float", default=0.1),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    report_dir = os.path.abspath(p["report_dir"])
    try:
        run = pipeline.build_run(
            p["hosts"],
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
    hosts = {
        r["host"]: {"status": r["status"], "verdict": r["verdict"], "checks": r["checks"], "error": r["error"]}
        for r in summary["hosts"]
    }
    not_ok = {
        r["host"]: f"{r['status']}: {(r['error'] or {}).get('msg')}" for r in summary["hosts"] if r["status"] != "ok"
    }
    lines = []
    for r in summary["hosts"]:
        if r["status"] != "ok":
            err = r["error"] or {}
            lines.append(f"{r['host']}: {r['status'].upper()} at '{err.get('task') or '?'}': {err.get('msg')}")
        elif r["failing"]:
            lines.append(f"{r['host']}: FAIL {len(r['failing'])} check(s): " + " | ".join(r["failing"]))
        elif r["verdict"] == "warn":
            lines.append(f"{r['host']}: WARN " + " | ".join(r["warnings"]))
        else:
            lines.append(f"{r['host']}: PASS")
    where = run_dir if not module.check_mode else f"(check mode, nothing written) {run_dir}"
    lines.append(f"Reports: {where}/summary.html (Markdown: summary.md, per host <host>.html/.md/.json)")
    module.exit_json(
        changed=True,
        run_id=run["run_id"],
        run_dir=run_dir,
        latest=os.path.join(report_dir, "latest"),
        summary_html=os.path.join(run_dir, "summary.html"),
        files=written,
        would_write=would_write if module.check_mode else [],
        hosts=hosts,
        not_ok_hosts=not_ok,
        failing_checks=summary["failing_checks"],
        totals=summary["totals"],
        lines=lines,
        msg=lines[-1],
    )


if __name__ == "__main__":
    main()
