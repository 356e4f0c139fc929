"""Every output of a run of six hosts (one failed, one unreachable, one outlier), read back with real parsers:
html.parser for the pages, xml.etree for JUnit, prometheus_client's parser for the textfile, jsonschema."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit import report_samples as s

VOID = {"meta", "br", "hr", "img", "input", "link"}
HOSTS = ["dead1", "node1", "node2", "node3", "node4", "slow5"]


class Page(HTMLParser):
    """Collects what the tests look at and fails on unbalanced tags."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.tables: list[dict] = []  # {"class": ..., "head": [...], "rows": [[cell text]]}
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "head": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self.tables:
            text = " ".join("".join(self._cell).split())
            table = self.tables[-1]
            (table["head"] if tag == "th" else table["rows"][-1]).append(text)
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def all_text(self) -> str:
        return " ".join("".join(self.text).split())


RUN = {
    "level": "standard",
    "budget_s": 900,
    "planned": ["load", "ttft", "kv", "batching", "allocator_ab"],
    "ran": ["load", "ttft", "kv", "batching", "allocator_ab"],
    "failed": [],
    "skipped": [{"probe": "kv_sweep", "reason": "not at level standard"}],
    "phases": [
        {"name": "tune", "duration_s": 4.2, "status": "ok"},
        {"name": "facts", "duration_s": 1.3, "status": "ok"},
    ],
    "total_s": 300.5,
    "certify_s": 296.3,
    "over_budget": False,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    normal = {"node1": 20.0, "node2": 21.0, "node4": 20.5, "slow5": 60.0}
    items = []
    for i, (name, warm) in enumerate(normal.items()):
        probes = {"ttft": s.ttft_probe(warm_ms=warm, seed=i)}
        extra = {}
        if name == "node1":  # every probe kind, two GPUs (one on a narrow link) and a run record
            probes.update(
                load=s.load_probe(),
                allocator_ab=s.allocator_probe(glibc_s=1.5, jemalloc_s=1.2),
                kv=s.kv_probe([(2048, "1GiB", 32768, 16.0), (4096, "1GiB", 32768, 8.0)]),
                batching=s.batching_probe(
                    {1: 100.0, 2: 190.0, 4: 350.0, 8: 420.0}, {1: 20.0, 2: 24.0, 4: 35.0, 8: 80.0}
                ),
            )
            extra = {"facts": s.facts(gpus=[s.gpu(0), s.gpu(1, width=8)]), "run": RUN}
        items.append(s.host(name, probes=probes, **extra))
    items += [s.failed("node3"), s.unreachable("dead1")]
    run = s.build(items, root, run_id="run-under-test")
    s.pipeline.write_run(run, str(root))
    return root / "run-under-test"


def test_every_file_is_written_and_latest_points_at_the_run(run_dir):
    names = sorted(p.name for p in run_dir.iterdir())
    expected = sorted(
        [f"{h}.{ext}" for h in HOSTS for ext in ("json", "md", "html")]
        + ["summary.json", "summary.md", "summary.html", "preflight.prom", "junit.xml"]
    )
    assert names == expected  # and no temp files left behind
    latest = run_dir.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == run_dir.resolve()


def test_host_documents_validate_against_the_schema_file(run_dir):
    import jsonschema

    schema = json.loads(Path(s.module_util("preflight.report.schema").export_path()).read_text())
    for host in HOSTS:
        jsonschema.validate(json.loads((run_dir / f"{host}.json").read_text()), schema)


def test_summary_json_counts_every_host_and_lists_the_ones_that_did_not_finish(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    t = summary["totals"]
    assert (t["hosts"], t["ok"], t["failed"], t["unreachable"]) == (6, 4, 1, 1)
    assert summary["not_ok"] == ["dead1", "node3"]
    rows = {r["host"]: r for r in summary["hosts"]}
    assert rows["dead1"]["error"] == {"task": "ping", "msg": s.UNREACHABLE_MSG}
    assert [o["metric"] for o in rows["slow5"]["outliers"]] == ["ttft.warm_ms"]
    assert "node1" in summary["failing_checks"]  # the x8 link of GPU 1
    assert rows["node1"]["files"] == {"json": "node1.json", "md": "node1.md", "html": "node1.html"}


def test_fleet_html_has_a_sortable_row_per_host_counts_outliers_and_unreachable_hosts(run_dir):
    page = Page((run_dir / "summary.html").read_text())
    assert page.errors == []
    table = next(t for t in page.tables if "sortable" in t["class"])
    assert [row[0] for row in table["rows"][1:]] == HOSTS
    status = {row[0]: row[2] for row in table["rows"][1:]}
    assert status["dead1"] == "UNREACHABLE" and status["node3"] == "FAILED" and status["node2"] == "OK"
    text = page.all_text()
    assert "6 hosts" in text and "1 unreachable" in text
    assert f"dead1 at ping: {s.UNREACHABLE_MSG}" in text
    assert "slow5 ttft.warm_ms = " in text
    scripts = [a for t, a in page.tags if t == "script"]
    assert scripts == [{}], "one inline script (the table sort), nothing loaded from elsewhere"
    links = {a["href"] for t, a in page.tags if t == "a"}
    assert links == {f"{h}.html" for h in HOSTS}
    assert all((run_dir / link).exists() for link in links)


def test_host_html_is_self_contained_with_a_chart_for_each_probe_that_ran(run_dir):
    html = (run_dir / "node1.html").read_text()
    page = Page(html)
    assert page.errors == []
    assert not [a for t, a in page.tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    urls = [v for _, a in page.tags for k, v in a.items() if k != "xmlns" and "//" in str(v)]
    assert urls == [], "nothing is fetched from elsewhere"
    assert sum(1 for t, _ in page.tags if t == "svg") == 7  # load 2, allocators 1, ttft 1, kv 1, batching 2
    text = page.all_text()
    for chart in (
        "load: seconds per phase, cold vs warm (median, p5-p95)",
        "load: weights GB/s against the measured limits",
        "allocator_ab: steady-state generate() per allocator (every sample, median, 95 % CI)",
        "ttft: time to first token (warm: median, p5-p95)",
        "kv: max concurrency vs max-model-len",
        "batching: output throughput vs concurrency (median, 95 % CI)",
        "batching: TTFT vs concurrency",
    ):
        assert chart in text, chart
    assert "disk read 1.7" in text  # the disk's measured GB/s drawn as a limit line
    assert "Link trained at x8 of x16" in text
    assert "Level standard: certifying took 296.3 s of the 900 s budget (300.5 s with tuning)." in text
    assert "Skipped: kv_sweep: not at level standard" in text


def test_probes_that_did_not_run_say_so(run_dir):
    text = Page((run_dir / "node2.html").read_text()).all_text()
    for section in (
        "Model load: cold vs warm",
        "Generation latency by allocator",
        "KV cache: max concurrency vs max-model-len",
        "Throughput and TTFT vs concurrency",
    ):
        assert f"{section} Not run (level quick)." in text
    assert "Time to first token: cold vs warm ttft: time to first token" in text
    md = (run_dir / "node2.md").read_text()
    assert "### Model load: cold vs warm\n\nNot run (level quick).\n" in md


def test_unreachable_and_failed_host_pages_lead_with_the_error(run_dir):
    dead = Page((run_dir / "dead1.html").read_text())
    assert dead.errors == []
    assert f"UNREACHABLE at ping: {s.UNREACHABLE_MSG}" in dead.all_text()
    md = (run_dir / "node3.md").read_text()
    assert md.startswith("# Preflight: node3 — FAIL\n")
    assert f"> **FAILED** at `thp : Ensure every THP variable is valid for this kernel`: {s.INVALID_THP_MSG}" in md


def test_markdown_summary_has_a_row_per_host_and_what_to_do_first(run_dir):
    md = (run_dir / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| host")]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == HOSTS
    assert md.index("## Hosts that did not finish") < md.index("## Hosts\n")
    assert f"- **dead1** UNREACHABLE at `ping`: {s.UNREACHABLE_MSG}" in md
    assert "## Outliers against the fleet" in md and "## Recommendations" in md
    # the same change on several hosts is one line that names them
    assert '- **node1, node2, node4, slow5** Set `thp_persist: ["systemd"]`' in md


def test_junit_has_one_testcase_per_check_and_failures_where_checks_failed(run_dir):
    root = ET.parse(run_dir / "junit.xml").getroot()
    docs = {h: json.loads((run_dir / f"{h}.json").read_text()) for h in HOSTS}
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert sorted(suites) == HOSTS
    assert int(root.get("tests")) == sum(len(d["checks"]) for d in docs.values()) == len(root.findall(".//testcase"))
    for host, suite in suites.items():
        cases = {c.get("name"): c for c in suite.findall("testcase")}
        assert list(cases) == [c["id"] for c in docs[host]["checks"]]
        failed = {c["id"] for c in docs[host]["checks"] if c["status"] == "fail"}
        assert {n for n, c in cases.items() if c.find("failure") is not None} == failed
        assert int(suite.get("failures")) == len(failed)
    dead = suites["dead1"].find("testcase").find("failure")
    assert "Connection refused" in dead.get("message")
    warn = suites["node2"].find("testcase[@name='thp.persisted']/system-out")
    assert warn.text.startswith("WARN THP settings persist across reboot:")


def test_prometheus_textfile_parses_and_carries_host_labels(run_dir):
    text = (run_dir / "preflight.prom").read_text()
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("preflight_")
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    assert value("preflight_host_up", host="dead1") == 0 and value("preflight_host_up", host="node1") == 1
    assert value("preflight_host_status", host="node3", status="failed") == 1
    assert value("preflight_host_status", host="node3", status="ok") == 0
    assert value("preflight_check_status", host="node2", check="thp.enabled", status="pass") == 1
    assert value("preflight_outlier", host="slow5", metric="ttft.warm_ms", group="h100", direction="high") == 1
    warm = value("preflight_probe_value", host="slow5", probe="ttft", metric="ttft.warm_ms", unit="ms")
    assert warm == pytest.approx(60.0, rel=0.1)
    median = value(
        "preflight_probe_median", host="slow5", probe="ttft", metric="ttft.warm.completions.ttft_ms", unit="ms"
    )
    assert median == warm
    assert value("preflight_phase_seconds", host="node1", phase="tune") == 4.2
    assert not [k for k in samples if k[0] == "preflight_probe_median" and ("host", "node3") in k[1]]
    assert not [k for k in samples if k[0] == "preflight_gpus" and ("host", "dead1") in k[1]]


def test_a_probe_that_was_skipped_says_why(tmp_path):
    run = {
        "level": "standard",
        "planned": [],
        "ran": [],
        "failed": [],
        "phases": [],
        "skipped": [
            {"probe": "ttft", "reason": "skipped: vLLM does not import in the probe runtime"},
            {"probe": "probes", "reason": "site.yml tunes and reads back only"},
        ],
    }
    md = s.build([s.host("node1", run=run)], tmp_path)["outputs"]["node1.md"]
    assert (
        "### Time to first token: cold vs warm\n\nNot run (skipped: vLLM does not import in the probe runtime).\n" in md
    )
    assert "### Model load: cold vs warm\n\nNot run (site.yml tunes and reads back only).\n" in md
