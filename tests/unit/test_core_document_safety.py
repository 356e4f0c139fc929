"""A host that dropped out mid-probe is `incomplete`, not ok; a host called `summary` keeps the fleet summary;
secrets (server_env's HF_TOKEN, --api-key) never reach a report file; report files are not world-readable.

core/document.py and core/redact.py called directly, then the report pipeline writing real files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.moduleutils import module_util
from tests.unit import report_samples as s

document = module_util("preflight.core.document")
redact = module_util("preflight.core.redact")
files = module_util("preflight.report.files")

SECRET = "hf_live_Zq8secret"
API_KEY = "sk-live-4f9secret"


def run(planned, ran=(), failed=(), skipped=()):
    return {"level": "standard", "planned": list(planned), "ran": list(ran), "failed": list(failed),
            "skipped": list(skipped), "phases": []}


# --- incomplete ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "missing"),
    [
        (run(["load", "ttft"], ran=["load", "ttft"]), []),
        (run(["load", "ttft"], ran=["load"]), ["ttft"]),
        (run(["load", "ttft"], ran=["load"], failed=[{"probe": "ttft", "msg": "rc 1"}]), []),
        (run(["load", "ttft"], skipped=[{"probe": "load", "reason": "check mode"}]), ["ttft"]),
        (run(["load"], skipped=[{"probe": "load", "reason": ""}]), ["load"]),
        (run(["load_0", "load_1"], ran=["load_0"]), ["load_1"]),
        (None, []),
        (run([]), []),
    ],
)
def test_a_planned_probe_without_an_outcome_is_missing(record, missing):
    assert document.missing_probes(record) == missing


def test_a_host_that_dropped_out_mid_probe_is_incomplete_and_cannot_pass(tmp_path):
    dropped = s.host("node2", level="standard", run=run(["load", "ttft"], ran=["load"]))
    built = s.build([s.host("node1"), dropped], tmp_path, compare_history=False)
    doc = next(d for d in built["docs"] if d["host"] == "node2")
    assert doc["status"] == "incomplete"
    assert doc["verdict"] == "fail"
    assert doc["error"] == {
        "task": "probe ttft",
        "msg": "planned probe(s) ttft recorded no result, no failure and no skip reason: the host stopped answering "
        "or the run was interrupted before they ended. Run the probes again (playbooks/probe.yml) once the host "
        "answers.",
    }
    totals = built["summary"]["totals"]
    assert (totals["ok"], totals["incomplete"], totals["failed"], totals["unreachable"]) == (1, 1, 0, 0)
    assert built["summary"]["not_ok"] == ["node2"]
    outcome = s.pipeline.outcome(built["summary"], str(tmp_path), False)
    # The report play fails the run for every host in not_ok_hosts: an incomplete host makes the exit non-zero.
    assert outcome["not_ok_hosts"] == {"node2": "incomplete: " + doc["error"]["msg"]}
    assert "node2: INCOMPLETE at 'probe ttft'" in outcome["lines"][1]
    assert "2 hosts: 1 ok, 1 incomplete, 0 failed, 0 unreachable" in built["outputs"]["summary.md"]
    assert '<b>1</b> incomplete' in built["outputs"]["summary.html"]
    assert 'preflight_host_status{host="node2",status="incomplete"} 1' in built["outputs"]["preflight.prom"]


def test_a_failed_host_stays_failed_whatever_its_probes_recorded(tmp_path):
    item = dict(s.failed("node3"), run=run(["load"]))
    doc = s.one(item, tmp_path)
    assert doc["status"] == "failed"


# --- file names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "stem"),
    [("node1", "node1"), ("summary", "host-summary"), ("Summary", "host-Summary"), ("junit", "host-junit"),
     ("preflight", "host-preflight"), ("host-summary", "host-summary"), ("gpu/01", "gpu_01"), (".hidden", "hidden")],
)
def test_a_host_file_never_takes_a_run_files_name(host, stem):
    assert files.host_file_stem(host) == stem


def test_the_run_files_are_the_files_the_pipeline_writes_beside_the_hosts(tmp_path):
    built = s.build([s.host("node1")], tmp_path, compare_history=False)
    assert set(built["outputs"]) - {f"node1.{kind}" for kind in files.HOST_FILE_KINDS} == set(files.RUN_FILES)


def test_a_host_called_summary_does_not_overwrite_the_fleet_summary(tmp_path):
    built = s.build([s.host("summary"), s.host("node1")], tmp_path, compare_history=False)
    s.pipeline.write_run(built, str(tmp_path))
    run_dir = tmp_path / built["run_id"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["host"] for r in summary["hosts"]] == ["node1", "summary"]
    assert json.loads((run_dir / "host-summary.json").read_text())["host"] == "summary"
    assert summary["hosts"][1]["files"] == {"json": "host-summary.json", "md": "host-summary.md",
                                            "html": "host-summary.html"}
    assert "Preflight fleet summary" in (run_dir / "summary.md").read_text()


def test_a_host_called_summary_beside_one_called_host_summary_is_refused(tmp_path):
    with pytest.raises(s.pipeline.ReportError, match="hosts 'summary' and 'host-summary' would write the same"):
        s.build([s.host("summary"), s.host("host-summary")], tmp_path)


def test_history_finds_the_previous_document_of_a_host_called_summary(tmp_path):
    first = s.build([s.host("summary")], tmp_path, run_id="20261123T140000Z-aaaa",
                    now=s.NOW.replace(hour=14))
    s.pipeline.write_run(first, str(tmp_path))
    second = s.build([s.host("summary")], tmp_path, run_id="20261123T150000Z-bbbb")
    assert second["docs"][0]["history"]["previous_run_id"] == "20261123T140000Z-aaaa"


def test_reports_are_readable_by_owner_and_group_only_and_the_textfile_by_node_exporter(tmp_path):
    built = s.build([s.host("node1")], tmp_path, compare_history=False)
    written = s.pipeline.write_run(built, str(tmp_path / "reports"), str(tmp_path / "textfile"))
    modes = {Path(p).relative_to(tmp_path).as_posix(): stat.S_IMODE(Path(p).stat().st_mode)
             for p in written if not Path(p).is_symlink()}
    textfile = "textfile/preflight.prom"
    assert modes.pop(textfile) == 0o644
    assert modes and set(modes.values()) == {0o640}, modes
    run_dir = tmp_path / "reports" / built["run_id"]
    assert stat.S_IMODE(run_dir.stat().st_mode) & 0o007 == 0


# --- secrets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [("HF_TOKEN", True), ("HUGGING_FACE_HUB_TOKEN", True), ("VLLM_API_KEY", True), ("api_key", True),
     ("--api-key", True), ("OPENAI_APIKEY", True), ("AWS_SECRET_ACCESS_KEY", True), ("db.password", True),
     ("PGPASSWD", False), ("max_tokens", False), ("prompt_tokens", False), ("key", False), ("tokenizer", False),
     ("OMP_NUM_THREADS", False), ("kv_budget", False), (None, False)],
)
def test_one_rule_says_which_names_are_secrets(name, secret):
    assert redact.is_secret_name(name) is secret


def test_secrets_are_redacted_in_mappings_assignments_command_lines_and_text():
    value = {
        "server_env": [f"HF_TOKEN={SECRET}", "OMP_NUM_THREADS=2"],
        "api_key": API_KEY,
        "max_tokens": 16,
        "cmd": ["python", "-m", "probes", "ttft", "--api-key", API_KEY, f"--hf-token={SECRET}", "--max-tokens", "16"],
        "stderr_tail": f"export HF_TOKEN='{SECRET}'\nAuthorization: Bearer {API_KEY}\nmax_tokens=16",
    }
    assert redact.redact(value) == {
        "server_env": ["HF_TOKEN=<redacted>", "OMP_NUM_THREADS=2"],
        "api_key": "<redacted>",
        "max_tokens": 16,
        "cmd": ["python", "-m", "probes", "ttft", "--api-key", "<redacted>", "--hf-token=<redacted>",
                "--max-tokens", "16"],
        "stderr_tail": "export HF_TOKEN=<redacted>\nAuthorization: Bearer <redacted>\nmax_tokens=16",
    }


def test_no_report_file_holds_a_secret_the_run_recorded(tmp_path):
    probe = s.ttft_probe()
    probe["params"] = dict(probe.get("params") or {}, server_env=[f"HF_TOKEN={SECRET}"], api_key=API_KEY)
    failed = {"probe": "kv", "msg": f"vLLM exited; HF_TOKEN={SECRET}", "rc": 1, "timed_out": False,
              "stderr_tail": f"Bearer {API_KEY}", "cmd": ["python", "-m", "probes", "kv", "--api-key", API_KEY]}
    item = s.host("node1", level="standard", probes={"ttft": probe},
                  run=run(["ttft", "kv"], ran=["ttft"], failed=[failed]),
                  failure={"task": "probe kv", "msg": f"kv failed with --api-key {API_KEY}"})
    built = s.build([item], tmp_path, compare_history=False)
    written = s.pipeline.write_run(built, str(tmp_path / "reports"), str(tmp_path / "textfile"))
    texts = {p: Path(p).read_text() for p in written if Path(p).is_file()}
    assert len(texts) == 9  # 3 host files, 5 run files, the textfile copy
    for path, text in texts.items():
        assert SECRET not in text and API_KEY not in text, path
    doc = built["docs"][0]
    assert doc["probes"]["ttft"]["params"]["server_env"] == ["HF_TOKEN=<redacted>"]
    assert doc["run"]["failed"][0]["cmd"][-1] == "<redacted>"
    assert doc["error"]["msg"] == "kv failed with --api-key <redacted>"


def test_the_run_line_people_read_holds_no_secret():
    record = run(["kv"], skipped=[{"probe": "kv", "reason": f"endpoint refused --api-key {API_KEY}"}])
    line = document.run_line("node1", document.close_run(record))
    assert API_KEY not in line and "--api-key <redacted>" in line
