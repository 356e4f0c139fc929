"""Directories an operator gives Preflight (issue 15, defect 5): hugetlbfs mount points and the roles' state
directories are normalised, then refused when they are the root, a system directory or (state directories)
shared with another role."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.moduleutils import module_util

paths = module_util("preflight.core.paths")
hp = module_util("preflight.core.hugepages")
planner = module_util("preflight.core.hugepages_plan")
thp = module_util("preflight.core.thp")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("given", "normal"), [("//", "/"), ("/.", "/"), ("/usr/..", "/"), ("/etc/", "/etc"),
                                                ("//dev//hugepages/", "/dev/hugepages"), ("/a/./b/../c", "/a/c")])
def test_normal_path_resolves_as_the_kernel_does(given, normal):
    assert paths.normal_path(given) == normal


def _host():
    return hp.Host(meminfo_kb={"MemTotal": 8 << 20}, default_size_kb=2048, sizes_kb=[2048], pools={},
                   nodes=[0], node_memfree_kb={}, buddyinfo={}, cpu_flags=set(), mounts=[], cmdline="",
                   fstab_text="", files={})


@pytest.mark.parametrize(
    ("path", "why"),
    [("//", "the root directory"), ("/.", "the root directory"), ("/usr/..", "the root directory"),
     ("/etc", "a system directory"), ("/var/lib/", "a system directory"), ("/sys/fs/x", "inside /sys")],
)
def test_mount_on_root_or_a_system_directory_is_refused(path, why):
    errors = hp.validate({"size": "2M", "max_percent": 50, "mounts": [{"path": path, "mode": "0755"}]}, _host())
    assert len(errors) == 1, errors
    normal = paths.normal_path(path)
    assert errors[0].startswith(f"hugepages_mounts[0].path={path!r} is {normal} once normalised, {why}")


def test_mount_path_is_planned_normalised():
    params = {"size": "2M", "max_percent": 50, "count": None, "per_node": None,
              "mounts": [{"path": "//mnt//huge/", "mode": "0755"}],
              "paths": {"fstab": "/etc/fstab", "sysctl_file": "/s", "unit_dir": "/u", "grub_default": "/g"}}
    assert hp.validate(params, _host()) == []
    planned = planner.plan(params, _host())
    assert planned["to_mount"] == ["/mnt/huge"] and list(planned["fstab_wanted"]) == ["/mnt/huge"]


@pytest.mark.parametrize(
    ("dirs", "own", "expected"),
    [
        ({"hugepages_state_dir": "state"}, "hugepages_state_dir",
         "hugepages_state_dir: 'state' is not an absolute path"),
        ({"jemalloc_state_dir": "/var/lib/preflight", "hugepages_state_dir": "/srv/h"}, "jemalloc_state_dir",
         "jemalloc_state_dir: '/var/lib/preflight' contains thp_state_dir (/var/lib/preflight/thp): each role needs "
         "a state directory of its own, or the rollback of one touches the record of the other; "
         "e.g. /var/lib/preflight/jemalloc"),
        ({"hugepages_state_dir": "/var/lib/preflight/jemalloc/"}, "hugepages_state_dir",
         "hugepages_state_dir: '/var/lib/preflight/jemalloc/' is the same directory as jemalloc_state_dir: each role "
         "needs a state directory of its own, or the rollback of one touches the record of the other; "
         "e.g. /var/lib/preflight/hugepages"),
        ({"hugepages_state_dir": "/var/lib/preflight/thp/h"}, "hugepages_state_dir",
         "hugepages_state_dir: '/var/lib/preflight/thp/h' is inside thp_state_dir (/var/lib/preflight/thp): each "
         "role needs a state directory of its own, or the rollback of one touches the record of the other; "
         "e.g. /var/lib/preflight/hugepages"),
        ({"hugepages_state_dir": "//etc/"}, "hugepages_state_dir",
         "hugepages_state_dir: '//etc/' is /etc once normalised, a system directory: rollback removes the files it "
         "recorded there; give the role a directory of its own, e.g. /var/lib/preflight/hugepages"),
    ],
)
def test_state_dirs_must_be_absolute_of_their_own_and_not_system_directories(dirs, own, expected):
    assert paths.state_dir_errors(dirs, own) == [expected]


def test_both_state_dirs_set_to_the_parent_of_the_thp_one_are_refused_by_each_role():
    dirs = {"hugepages_state_dir": "/var/lib/preflight", "jemalloc_state_dir": "/var/lib/preflight"}
    assert len(paths.state_dir_errors(dirs, "hugepages_state_dir")) == 2  # contains thp's, same as jemalloc's
    assert len(paths.state_dir_errors(dirs, "jemalloc_state_dir")) == 2


def test_state_dir_defaults_match_the_roles_defaults():
    for role in ("hugepages", "jemalloc", "thp"):
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
        assert defaults[f"{role}_state_dir"] == paths.STATE_DIR_DEFAULTS[f"{role}_state_dir"]


def test_thp_knob_missing_from_the_kernel_is_not_recorded_and_an_old_null_record_is_skipped():
    """issue 15, defect 7: a kernel without khugepaged/defrag stored null and rollback then failed forever."""
    planned = [
        {"name": "thp_enabled", "path": "/e", "desired": "madvise", "current": "always"},
        {"name": "thp_khugepaged_defrag", "path": "/k", "desired": "1", "current": None},
    ]
    made = thp.record({}, planned, [], {"kind": "none"}, "T")
    assert list(made["state"]["settings"]) == ["thp_enabled"]
    old = {"settings": {"thp_khugepaged_defrag": {"path": "/k", "value": None, "recorded_at": "T"},
                        "thp_enabled": {"path": "/e", "value": "always", "recorded_at": "T"}}}
    assert thp.rollback_plan(old, None)["settings"] == [{"name": "thp_enabled", "path": "/e", "value": "always"}]
    assert thp.rollback_plan(old, None)["remove_record"] is True
