"""library/preflight_textfile.py run by the real `ansible` on localhost, on files under the test's tmp_path."""

from __future__ import annotations

import stat

import pytest

from tests.sshfleet import run_module_here

pytestmark = pytest.mark.node_untouched


def run_textfile(*flags: str, **args) -> tuple[str, dict, str]:
    return run_module_here("preflight_textfile", args, *flags)


def test_writes_through_a_rename_once_and_then_changes_nothing(tmp_path):
    textfile = tmp_path / "node-exporter"
    prom = textfile / "preflight.prom"
    status, result, _ = run_textfile(dir=str(textfile), content="preflight_up 1\n")
    assert status == "CHANGED" and result["dir_created"] is True and result["path"] == str(prom)
    assert prom.read_text() == "preflight_up 1\n" and stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert sorted(p.name for p in textfile.iterdir()) == ["preflight.prom"]  # no temp file left behind
    inode = prom.stat().st_ino

    assert run_textfile(dir=str(textfile), content="preflight_up 1\n")[0] == "SUCCESS"
    assert prom.stat().st_ino == inode

    # Check mode: the change and its diff, nothing written.
    status, _, output = run_textfile("--check", "--diff", dir=str(textfile), content="preflight_up 0\n")
    assert status == "CHANGED" and "-preflight_up 1\n+preflight_up 0\n" in output
    assert prom.read_text() == "preflight_up 1\n"

    # A new text replaces the file (a new inode: renamed over it, never rewritten in place); a mode alone is a change.
    assert run_textfile(dir=str(textfile), content="preflight_up 0\n")[0] == "CHANGED"
    assert prom.read_text() == "preflight_up 0\n" and prom.stat().st_ino != inode
    assert run_textfile(dir=str(textfile), content="preflight_up 0\n", mode="0640")[0] == "CHANGED"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o640


def test_bad_options_are_refused_naming_each_before_anything_is_written(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    status, result, _ = run_textfile(dir=str(not_a_dir), content="x 1\n", name="../x.prom", mode="rw")
    assert status == "FAILED!"
    assert result["msg"] == (
        "preflight_textfile: name: '../x.prom' is not a plain file name ending in .prom (node_exporter reads only "
        "those, and skips names starting with '.'); mode: 'rw' is not an octal file mode such as 0644; "
        f"dir: {not_a_dir} exists and is not a directory; nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
