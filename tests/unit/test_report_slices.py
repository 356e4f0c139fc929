"""A run written in slices (AWX job slicing, --limit partitions sharing preflight_run_id) ends as one run:
the same fleet outliers, counts and rows as the same hosts written at once (module_utils/preflight/report/slices.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.unit import report_samples as s

RUN_ID = "20261123T150000Z-fleet"


def fleet_items() -> list[dict]:
    """Eight h100 hosts, one of them slow (an outlier only when seen beside the others), one unreachable,
    one failed."""
    items = [s.host(f"node{i}", probes={"ttft": s.ttft_probe(warm_ms=20.0 * (1 + i / 200), seed=i)})
             for i in range(1, 7)]
    items.append(s.host("node7", probes={"ttft": s.ttft_probe(warm_ms=60.0, seed=7)}))
    items += [s.unreachable("node8"), s.failed("node9")]
    return items


def write(items: list[dict], report_dir: Path) -> None:
    run = s.build(items, report_dir, run_id=RUN_ID, compare_history=False)
    s.pipeline.write_run(run, str(report_dir))


def view(report_dir: Path) -> dict:
    """What must not depend on slicing: totals, per host status, verdict, checks, outliers; the same
    outliers in each host's own document."""
    run_dir = report_dir / RUN_ID
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = {r["host"]: (r["status"], r["verdict"], r["checks"], r["outliers"], r["failing"]) for r in summary["hosts"]}
    docs = {r["host"]: json.loads((run_dir / r["files"]["json"]).read_text())["outliers"] for r in summary["hosts"]}
    return {"totals": summary["totals"], "rows": rows, "doc_outliers": docs, "not_ok": summary["not_ok"],
            "junit_cases": (run_dir / "junit.xml").read_text().count("<testcase")}


def test_unsliced_run_has_the_outlier_the_slices_must_reproduce(tmp_path):
    write(fleet_items(), tmp_path)
    got = view(tmp_path)
    assert [o["metric"] for o in got["rows"]["node7"][3]], "node7 should be an outlier of the whole fleet"
    assert got["totals"]["hosts"] == 9


def test_two_slices_written_apart_give_the_unsliced_summary_in_either_order(tmp_path):
    items = fleet_items()
    write(items, tmp_path / "whole")
    write(items[:4], tmp_path / "ab")
    # The first slice alone is a smaller fleet: its summary holds only its own hosts.
    assert view(tmp_path / "ab")["totals"]["hosts"] == 4
    write(items[4:], tmp_path / "ab")
    write(items[4:], tmp_path / "ba")
    write(items[:4], tmp_path / "ba")
    assert view(tmp_path / "ab") == view(tmp_path / "whole")
    assert view(tmp_path / "ba") == view(tmp_path / "whole")


def test_three_slices_written_at_once_leave_the_whole_run(tmp_path):
    items = fleet_items()
    write(items, tmp_path / "whole")
    runs = [s.build(part, tmp_path / "sliced", run_id=RUN_ID, compare_history=False)
            for part in (items[0:3], items[3:6], items[6:])]
    threads = [threading.Thread(target=s.pipeline.write_run, args=(run, str(tmp_path / "sliced"))) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert view(tmp_path / "sliced") == view(tmp_path / "whole")


def test_a_host_in_a_later_slice_replaces_its_earlier_document(tmp_path):
    items = fleet_items()
    write(items, tmp_path)
    # node8 was unreachable; a re-run slice of node8 alone reaches it.
    write([s.host("node8")], tmp_path)
    got = view(tmp_path)
    assert got["rows"]["node8"][0] == "ok"
    assert got["totals"]["hosts"] == 9 and got["totals"]["unreachable"] == 0


def test_without_other_slices_the_run_is_written_as_built(tmp_path):
    items = fleet_items()
    run = s.build(items, tmp_path, run_id=RUN_ID, compare_history=False)
    s.pipeline.write_run(run, str(tmp_path))
    assert (tmp_path / RUN_ID / "summary.json").read_text() == run["outputs"]["summary.json"]
