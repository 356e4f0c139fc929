"""What an operator reads first (issue 16): the verdict line and key figures before any table, "What to do"
ranked by consequence with measurement notes kept next to their figures, client-server TTFT as information,
and the fleet page's chart per key figure with outliers marked and checks counted."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from probes import result as probe_result
from tests.unit import report_samples as s
from tests.unit.test_report_render import Page

render_md = s.module_util("preflight.report.render_markdown")
render_html = s.module_util("preflight.report.render_html")
headline = s.module_util("preflight.report.headline")

KNEE_TEXT = "not determined: throughput at c=1 or c=2 has fewer than 4 repeats"
SPREAD_TEXT = "large run-to-run spread, treat small differences as noise: warm.interpreter_start_s (IQR 20 % of median)"


def _noted_host() -> dict:
    """A healthy host whose only warnings are about the measurement, as on the real H200 node at standard."""
    load = s.load_probe()
    load["verdicts"].append(probe_result.verdict("spread", "warn", SPREAD_TEXT))
    batching = s.batching_probe({1: 100.0, 2: 190.0, 4: 350.0}, {1: 20.0, 2: 24.0, 4: 35.0})
    batching["verdicts"].append(probe_result.verdict("knee", "warn", KNEE_TEXT))
    ttft = s.ttft_probe()
    ttft["verdicts"].append(probe_result.verdict(
        "client_vs_server_completions", "warn",  # an envelope from before probes/ttft.py made it "info"
        "client mean 15.14 ms vs server mean 12.16 ms over the same 40 requests: client - server = +2.99 ms"))
    thp = s.thp_result()
    thp["persistence"] = [e for e in thp["persistence"] if e["method"] == "systemd"]
    return s.host("node1", probes={"load": load, "batching": batching, "ttft": ttft}, role_results={"thp": thp})


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}\n")
    return md[start:md.index("\n## ", start + 1)]


def test_measurement_notes_are_not_actions_and_sit_next_to_their_figures(tmp_path):
    doc = s.one(_noted_host(), tmp_path)
    md = render_md.host_report(doc)
    todo = _section(md, "What to do")
    assert "spread" not in todo.split("- NOTE")[0] and "knee" not in todo
    assert "- Nothing: no check fails, no change is recommended and nothing stands out." in todo
    assert ("- NOTE 2 measurement note(s) (spread, repeats, noise) are not actions: see them next to their figures "
            "under Probes (batching, load).") in todo
    probes = md[md.index("## Probes\n"):]
    assert f"load: WARN spread: {SPREAD_TEXT}" in probes[probes.index("### Model load"):probes.index("### Generation")]
    assert f"batching: WARN knee: {KNEE_TEXT}" in probes[probes.index("### Throughput and TTFT"):]
    assert headline.verdict_line(doc) == (
        "FIT TO SERVE at level quick: no check fails and nothing needs changing; its WARN comes only from "
        "2 measurement note(s).")


def test_client_minus_server_ttft_is_information_with_its_size_never_a_warning(tmp_path):
    doc = s.one(_noted_host(), tmp_path)
    assert not [c for c in doc["checks"] if "client_vs_server" in c["id"]]
    md = render_md.host_report(doc)
    ttft = md[md.index("### Time to first token"):md.index("### KV cache")]
    assert "client - server = +2.99 ms" in ttft


def test_what_to_do_ranks_failures_then_changes_then_warnings(tmp_path):
    item = s.host("node1", facts=s.facts(gpus=[s.gpu(0), s.gpu(1, width=8)]),
                  probes={"ttft": s.ttft_probe(warm_ms=300.0)})
    doc = s.one(item, tmp_path)
    todo = _section(render_md.host_report(doc), "What to do").splitlines()[2:]
    kinds = [line.split("**")[1] for line in todo if line.startswith("- **")]
    assert kinds == ["FAIL", "CHANGE", "WARN", "WARN"]
    assert todo[0].startswith("- **FAIL** `gpu.1.pcie_width`")
    assert todo[1].startswith('- **CHANGE** Set `thp_persist: ["systemd"]`')
    assert headline.verdict_line(doc) == "NOT FIT TO SERVE: 1 check(s) fail, first gpu.1.pcie_width " \
        "(GPU 1 (00000000:19:00.0) PCIe link at full width)."
    page = Page(render_html.host_page(doc))
    assert page.errors == []
    badges = [t for t in page.all_text().split("What to do", 1)[1].split() if t in ("FAIL", "CHANGE", "WARN")][:4]
    assert badges == ["FAIL", "CHANGE", "WARN", "WARN"]


def test_headline_shows_key_figures_with_their_previous_run_before_any_table(tmp_path):
    run = {"planned": ["ttft"], "ran": ["ttft"], "failed": [], "skipped": [], "budget_s": 900, "certify_s": 195.0,
           "over_budget": False, "phases": []}
    kv = s.kv_probe([(4096, "1GiB", 32768, 8.0)])
    first = s.host("node1", level="standard", run=run, probes={"ttft": s.ttft_probe(warm_ms=20.0), "kv": kv})
    s.pipeline.write_run(s.build([first], tmp_path, run_id="run-1"), str(tmp_path))
    second = dict(first, run=dict(run, certify_s=210.0), probes={"ttft": s.ttft_probe(warm_ms=30.0), "kv": kv})
    doc = s.build([second], tmp_path, run_id="run-2", now=s.NOW + timedelta(hours=1))["docs"][0]
    md = render_md.host_report(doc)
    top = md[:md.index("|")]
    assert "- **Certifying time**: 210 s of the 900 s budget of level standard; previous 195 s (+7.7 %)" in top
    assert "- **KV cache**: 32,768 tokens at max-model-len 4096; previous 32,768 tokens (+0.0 %)" in top
    assert "- **Warm TTFT**: " in top and "(warn above 200 ms); previous " in top
    assert top.index("**FIT TO SERVE") < top.index("- **Certifying time**") < top.index("## What to do")
    html = render_html.host_page(doc)
    assert html.index('class="headline') < html.index("Certifying time") < html.index("<table")


def test_fleet_page_charts_each_key_figure_across_hosts_with_outliers_marked(tmp_path):
    items = [s.host(name, probes={"ttft": s.ttft_probe(warm_ms=warm, seed=i)})
             for i, (name, warm) in enumerate({"node1": 20.0, "node2": 21.0, "node4": 20.5, "slow5": 60.0}.items())]
    items += [s.unreachable("dead1")]
    run = s.build(items, tmp_path)
    html = run["outputs"]["summary.html"]
    page = Page(html)
    assert page.errors == []
    assert "Warm TTFT (ms) per host; ◆ marks an outlier within its class" in html
    assert "slow5 ◆ outlier" in html and "node1 ◆ outlier" not in html
    assert html.index("Key figures across hosts") < html.index("<table")
    assert "checks fail" in page.all_text() and "checks skipped" in page.all_text()
    md = run["outputs"]["summary.md"]
    assert "**slow5 59.22 ms (outlier, worse than its class)**" in md
    assert headline.fleet_line(run["summary"]).startswith("4 of 5 host(s) fit to serve; not: did not finish: "
                                                          "dead1 (unreachable) (checks: ")
    assert md.index(headline.fleet_line(run["summary"])) < md.index("## Hosts that did not finish")


def test_a_figure_no_host_measured_is_left_out_never_drawn_as_zero(tmp_path: Path):
    run = s.build([s.host("node1"), s.host("node2")], tmp_path)
    assert "Key figures across hosts" not in run["outputs"]["summary.html"]
    assert all(f["value"] is not None for r in run["summary"]["hosts"] for f in r["key_figures"])


def test_the_console_line_of_a_host_with_only_measurement_notes_is_its_headline_not_a_warning(tmp_path):
    built = s.build([_noted_host()], tmp_path)
    lines = s.pipeline.outcome(built["summary"], str(tmp_path), False)["lines"]
    assert lines[0].startswith("node1: FIT TO SERVE at level ")
    assert "its WARN comes only from 2 measurement note(s)" in lines[0] and "spread" not in lines[0]
