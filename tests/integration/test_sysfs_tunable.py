"""library/sysfs_tunable.py against this machine's real kernel tunables, run by the real `ansible`.

Every test that writes puts the file back (restore_kernel_tunables, or its own finally for procfs).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tests.moduleutils  # noqa: F401  (ansible.module_utils.preflight, as the module imports it)
from tests.sshfleet import REPO, ansible_env, run_module_here

THP = Path("/sys/kernel/mm/transparent_hugepage")
ENABLED = THP / "enabled"
KHUGEPAGED_DEFRAG = THP / "khugepaged" / "defrag"
PIPE_MAX_SIZE = Path("/proc/sys/fs/pipe-max-size")


def _load_module():
    spec = importlib.util.spec_from_file_location("sysfs_tunable", REPO / "library" / "sysfs_tunable.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sysfs_tunable = _load_module()


def run_tunable(*flags: str, **args) -> tuple[str, dict, str]:
    """Run the module once on localhost; returns (status word, result, whole output)."""
    return run_module_here("sysfs_tunable", args, *flags)


def selected(path: Path) -> str:
    return sysfs_tunable.parse_tunable(path.read_text())[0]


def other_choice(path: Path) -> str:
    current, choices = sysfs_tunable.parse_tunable(path.read_text())
    return next(choice for choice in choices if choice != current)


@pytest.mark.parametrize(
    ("text", "value", "choices"),
    [
        ("always [madvise] never\n", "madvise", ["always", "madvise", "never"]),
        (
            "always defer defer+madvise [madvise] never\n",
            "madvise",
            ["always", "defer", "defer+madvise", "madvise", "never"],
        ),
        ("always [inherit] madvise never\n", "inherit", ["always", "inherit", "madvise", "never"]),
        ("1\n", "1", []),
        ("  1024 \n", "1024", []),
    ],
)
def test_parse_tunable_reads_bracket_selection_and_plain_values(text, value, choices):
    assert sysfs_tunable.parse_tunable(text) == (value, choices)


def test_sets_a_bracket_choice_and_reads_it_back(restore_kernel_tunables):
    before = selected(ENABLED)
    target = other_choice(ENABLED)

    status, result, output = run_tunable(path=str(ENABLED), value=target)

    assert status == "CHANGED", output
    assert (result["before"], result["after"], result["taken"]) == (before, target, True)
    assert result["choices"] == sysfs_tunable.parse_tunable(ENABLED.read_text())[1]
    assert selected(ENABLED) == target


def test_same_value_again_is_unchanged(restore_kernel_tunables):
    current = selected(ENABLED)

    status, result, output = run_tunable(path=str(ENABLED), value=current)

    assert status == "SUCCESS", output
    assert (result["changed"], result["before"], result["after"]) == (False, current, current)


def test_plain_value_file_is_set_and_has_no_choices(restore_kernel_tunables):
    target = "0" if selected(KHUGEPAGED_DEFRAG) == "1" else "1"

    status, result, output = run_tunable(path=str(KHUGEPAGED_DEFRAG), value=target)

    assert status == "CHANGED", output
    assert (result["after"], result["choices"]) == (target, [])
    assert KHUGEPAGED_DEFRAG.read_text() == target + "\n"


def test_check_mode_predicts_the_change_shows_a_diff_and_leaves_the_file_byte_identical(restore_kernel_tunables):
    before_bytes = ENABLED.read_bytes()
    before = selected(ENABLED)
    target = other_choice(ENABLED)

    status, result, output = run_tunable("--check", "--diff", path=str(ENABLED), value=target)

    assert status == "CHANGED", output
    assert (result["before"], result["after"]) == (before, target)
    assert f"--- before: {ENABLED}\n+++ after: {ENABLED}\n@@ -1 +1 @@\n-{before}\n+{target}\n" in output
    assert ENABLED.read_bytes() == before_bytes


def test_value_not_among_the_files_choices_is_rejected_before_writing(restore_kernel_tunables):
    before_bytes = ENABLED.read_bytes()
    offered = ", ".join(sysfs_tunable.parse_tunable(before_bytes.decode())[1])

    status, result, output = run_tunable(path=str(ENABLED), value="sometimes")

    assert status == "FAILED!", output
    assert result["msg"] == f"'sometimes' is not a choice of {ENABLED}; this kernel offers: {offered}"
    assert ENABLED.read_bytes() == before_bytes


def test_kernel_refusing_the_write_fails_with_its_reason(restore_kernel_tunables):
    before_bytes = ENABLED.read_bytes()

    status, result, output = run_tunable(path=str(ENABLED), value="sometimes", choices_from_file=False)

    assert status == "FAILED!", output
    assert result["msg"] == f"the kernel refused 'sometimes' for {ENABLED}: Invalid argument"
    assert ENABLED.read_bytes() == before_bytes


def test_value_the_kernel_does_not_keep_fails_naming_what_it_read_back():
    # The kernel rounds pipe-max-size up to a power of two pages: writing N-1 leaves N, a real
    # "accepted but not taken" write that changes nothing on the machine.
    original = PIPE_MAX_SIZE.read_text()
    current = int(original)
    try:
        status, result, output = run_tunable(path=str(PIPE_MAX_SIZE), value=str(current - 1))
        assert status == "FAILED!", output
        assert result["msg"] == (
            f"the kernel did not take '{current - 1}' for {PIPE_MAX_SIZE}: it reads back '{current}' after the write"
        )
        assert (result["after"], result["taken"]) == (str(current), False)

        status, result, output = run_tunable(path=str(PIPE_MAX_SIZE), value=str(current - 1), fail_on_mismatch=False)
        assert status == "CHANGED", output
        assert (result["after"], result["taken"]) == (str(current), False)
    finally:
        if PIPE_MAX_SIZE.read_text() != original:
            PIPE_MAX_SIZE.write_text(original)


def test_missing_tunable_is_reported_as_not_offered_by_this_kernel():
    missing = THP / "no_such_tunable"

    status, result, output = run_tunable(path=str(missing), value="1")

    assert status == "FAILED!", output
    assert result["msg"] == f"{missing} does not exist: this kernel does not offer that tunable"


def test_documentation_lists_exactly_the_options_the_module_accepts():
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-doc"), "--json", "sysfs_tunable"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["sysfs_tunable"]
    options = doc["doc"]["options"]
    assert set(options) == set(sysfs_tunable.ARGUMENT_SPEC)
    for name, spec in sysfs_tunable.ARGUMENT_SPEC.items():
        documented = (options[name]["type"], options[name].get("required", False), options[name].get("default"))
        assert documented == (spec["type"], spec.get("required", False), spec.get("default")), name
    assert set(doc["return"]) == {"path", "before", "after", "choices", "taken", "changed", "diff"}
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert doc["doc"]["attributes"]["diff_mode"]["support"] == "full"
