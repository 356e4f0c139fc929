"""The GRUB command-line arithmetic of roles/thp/library/thp_inspect.py, on text (no bootloader here)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.sshfleet import REPO


def _load():
    spec = importlib.util.spec_from_file_location("thp_inspect", REPO / "roles/thp/library/thp_inspect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


thp_inspect = _load()

DEBIAN_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0 transparent_hugepage=always"
"""


def test_grub_line_finds_the_last_assignment_and_unquotes_it():
    text = DEBIAN_GRUB + "GRUB_CMDLINE_LINUX='mitigations=off'\n"
    assert thp_inspect.grub_line(text, "GRUB_CMDLINE_LINUX") == (
        "GRUB_CMDLINE_LINUX='mitigations=off'",
        "mitigations=off",
        "'",
    )


def test_grub_line_does_not_take_the_default_variable_for_the_plain_one():
    assert thp_inspect.grub_line(DEBIAN_GRUB, "GRUB_CMDLINE_LINUX_DEFAULT")[1] == "quiet"
    assert thp_inspect.grub_line(DEBIAN_GRUB, "GRUB_CMDLINE_LINUX")[1] == "console=ttyS0 transparent_hugepage=always"


@pytest.mark.parametrize(
    ("value", "quote", "thp", "line"),
    [
        (
            "console=ttyS0 transparent_hugepage=always",
            '"',
            "madvise",
            'GRUB_CMDLINE_LINUX="console=ttyS0 transparent_hugepage=madvise"',
        ),
        ("console=ttyS0", "'", "never", "GRUB_CMDLINE_LINUX='console=ttyS0 transparent_hugepage=never'"),
        ("", '"', "madvise", 'GRUB_CMDLINE_LINUX="transparent_hugepage=madvise"'),
        ("transparent_hugepage=never quiet transparent_hugepage=always", '"', "", 'GRUB_CMDLINE_LINUX="quiet"'),
    ],
    ids=["replace", "add-keeping-single-quotes", "add-to-empty", "remove-every-occurrence"],
)
def test_wanted_grub_line_replaces_adds_or_removes_the_option(value, quote, thp, line):
    assert thp_inspect.wanted_grub_line(value, quote, thp) == line


def test_cmdline_option_is_the_last_occurrence_as_the_kernel_reads_it():
    args = "ro transparent_hugepage=never quiet transparent_hugepage=madvise".split()
    assert thp_inspect.cmdline_option(args) == "madvise"
    assert thp_inspect.cmdline_option(["ro", "quiet"]) is None


def test_missing_grub_defaults_file_is_reported_as_no_bootloader(tmp_path):
    missing = tmp_path / "grub"
    info = thp_inspect.inspect_bootloader(str(missing), "madvise")
    assert (info["kind"], info["reason"]) == (
        None,
        f"no bootloader config found: {missing} does not exist; only GRUB is managed",
    )
