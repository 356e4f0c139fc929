"""Report files are replaced atomically, a crash leaves no half-written file, and `latest` moves last."""

from __future__ import annotations

import os

import pytest

from tests.unit import report_samples as s

files = s.module_util("preflight.report.files")


def test_write_atomic_replaces_the_whole_file(tmp_path):
    target = tmp_path / "node1.json"
    target.write_text("old")
    files.write_atomic(str(target), "new contents\n")
    assert target.read_text() == "new contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node1.json"]


def test_a_crash_while_writing_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"complete": true}\n')

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(OSError, match="No space left on device"):
        files.write_atomic(str(target), '{"complete": fal')
    assert target.read_text() == '{"complete": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_latest_symlink_is_replaced_not_removed_and_refuses_a_real_directory(tmp_path):
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-2").mkdir()
    latest = tmp_path / "latest"
    files.point_symlink_atomic(str(latest), "run-1")
    files.point_symlink_atomic(str(latest), "run-2")
    assert os.readlink(latest) == "run-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run-1", "run-2"]
    latest.unlink()
    latest.mkdir()
    with pytest.raises(IsADirectoryError, match="is a real directory"):
        files.point_symlink_atomic(str(latest), "run-2")


def test_failed_run_leaves_latest_on_the_previous_complete_run(tmp_path, monkeypatch):
    first = s.build([s.host("node1")], tmp_path, run_id="run-1")
    s.pipeline.write_run(first, str(tmp_path))
    second = s.build([s.host("node1")], tmp_path, run_id="run-2")
    real = s.pipeline.write_atomic

    def fail_on_summary(path, data, mode=0o644):
        if path.endswith("summary.json"):
            raise OSError(5, "Input/output error")
        real(path, data, mode)

    monkeypatch.setattr(s.pipeline, "write_atomic", fail_on_summary)
    with pytest.raises(OSError):
        s.pipeline.write_run(second, str(tmp_path))
    assert os.readlink(tmp_path / "latest") == "run-1"
    assert not (tmp_path / "run-2" / "summary.json").exists()
    assert (tmp_path / "run-2" / "node1.json").exists()  # host files come first, summary last


def test_prometheus_copy_goes_to_the_textfile_directory(tmp_path):
    run = s.build([s.host("node1")], tmp_path / "reports")
    written = s.pipeline.write_run(run, str(tmp_path / "reports"), str(tmp_path / "textfile"))
    prom = tmp_path / "textfile" / "preflight.prom"
    assert str(prom) in written
    assert prom.read_text() == (tmp_path / "reports" / run["run_id"] / "preflight.prom").read_text()
    assert written[-1] == str(tmp_path / "reports" / "latest")


@pytest.mark.parametrize("bad", ["latest", "../x", "a/b", ".hidden", "-x", ""])
def test_run_ids_that_cannot_name_a_directory_are_refused(bad):
    with pytest.raises(ValueError, match="cannot name a report directory"):
        files.check_run_id(bad)


def test_a_bad_run_id_fails_the_build_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="run_id 'latest' cannot name a report directory"):
        s.build([s.host("node1")], tmp_path, run_id="latest")
    assert list(tmp_path.iterdir()) == []


def test_generated_run_ids_sort_by_time():
    from datetime import timedelta

    earlier = files.new_run_id(s.NOW)
    later = files.new_run_id(s.NOW + timedelta(seconds=1))
    assert earlier < later and earlier.startswith("20261123T150000Z-")


def test_two_hosts_that_would_share_a_file_name_are_refused(tmp_path):
    with pytest.raises(s.pipeline.ReportError, match="would write the same report files"):
        s.build([s.host("gpu/01"), s.host("gpu_01")], tmp_path)
