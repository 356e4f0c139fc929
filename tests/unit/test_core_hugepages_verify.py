"""core/hugepages_verify.py: what roles/hugepages' read-back proves, the report's rows and texts, and which
mounts its rollback fixes; called directly, without Ansible (the role's tasks used to decide this in Jinja)."""

from __future__ import annotations

import json

import pytest

from tests.moduleutils import module_util

hv = module_util("preflight.core.hugepages_verify")
Tree = module_util("preflight.core.tree").Tree

SETTING = {"name": "vm.nr_hugepages", "path": "/proc/sys/vm/nr_hugepages", "desired": 64, "before": 0}
MOUNT = {
    "path": "/mnt/huge",
    "state": "mounted",
    "options": "pagesize=2M,mode=1770,uid=0,gid=0",
    "mounted": False,
    "dir_exists": False,
}
SYSCTL = {"method": "sysctl", "path": "/etc/sysctl.d/80-preflight-hugepages.conf", "detail": "vm.nr_hugepages at boot"}


def plan(**overrides) -> dict:
    base = {
        "manage_pool": True,
        "settings": [SETTING],
        "persistence": [SYSCTL],
        "mounts": [MOUNT],
        "to_mount": ["/mnt/huge"],
        "to_unmount": [],
        "conflicts": [],
        "reboot_required": False,
        "pool": {"total": 0},
        "files": [],
    }
    return base | overrides


def back(**overrides) -> dict:
    """The read-back of a host that holds the plan."""
    base = {
        "to_mount": [],
        "to_unmount": [],
        "files": [],
        "settings": [SETTING | {"before": 64}],
        "pool": {"total": 64},
    }
    return base | overrides


@pytest.mark.parametrize(
    ("readback", "problems"),
    [
        (back(), []),
        (
            back(to_mount=["/mnt/huge"]),
            ["hugetlbfs is not mounted at /mnt/huge with the requested options after mounting"],
        ),
        (back(to_unmount=["/mnt/huge"]), ["hugetlbfs is still mounted at /mnt/huge after unmounting"]),
        (
            back(files=[{"path": "/etc/fstab", "state": "present", "changed": True}]),
            ["/etc/fstab does not hold what was written (present)"],
        ),
        (
            back(settings=[SETTING | {"desired": 8, "before": 64}]),
            [
                "/proc/sys/vm/nr_hugepages reads 64, more than the 8 asked: the kernel frees pages in use only "
                "when their users release them"
            ],
        ),
    ],
)
def test_readback_problems_name_what_the_host_does_not_hold(readback, problems):
    assert hv.readback_problems(readback) == problems


@pytest.mark.parametrize(
    ("entry", "failed_files", "touched", "state"),
    [
        (SYSCTL, [], [SYSCTL["path"]], "installed"),
        (SYSCTL, [], [], "unchanged"),
        (SYSCTL, [{"path": SYSCTL["path"], "state": "present", "changed": True}], [SYSCTL["path"]], "failed"),
        ({"method": "kernel_cmdline", "path": None, "state": "unavailable", "detail": "x"}, [], [], "unavailable"),
    ],
)
def test_persistence_state_of_each_method(entry, failed_files, touched, state):
    [row] = hv.persistence_states(plan(persistence=[entry], mounts=[]), back(files=failed_files), touched, "/f")
    assert row == entry | {"state": state}


def test_mounts_add_an_fstab_row():
    rows = hv.persistence_states(plan(persistence=[]), back(), ["/tmp/fstab"], "/tmp/fstab")
    assert rows == [
        {"method": "fstab", "path": "/tmp/fstab", "state": "installed", "detail": "hugetlbfs lines for /mnt/huge"}
    ]


def test_settings_rows_take_the_pool_files_as_written_then_the_mounts():
    results = [{"item": SETTING, "before": "0", "after": "64", "changed": True}]
    assert hv.settings_rows(plan(), results) == [
        {"name": "vm.nr_hugepages", "path": SETTING["path"], "desired": 64, "before": 0, "after": 64, "changed": True},
        {
            "name": "hugetlbfs mount /mnt/huge",
            "path": "/mnt/huge",
            "desired": MOUNT["options"],
            "before": "not mounted",
            "after": MOUNT["options"],
            "changed": True,
        },
    ]
    # A result without before/after (the write was skipped) keeps the planned value.
    [row] = hv.settings_rows(plan(mounts=[]), [{"item": SETTING}])
    assert (row["before"], row["after"], row["changed"]) == (0, 0, False)


@pytest.mark.parametrize(
    ("the_plan", "problems", "shortfall", "check_mode", "detail"),
    [
        (plan(), [], None, True, "check mode: nothing was applied, so nothing was read back"),
        (plan(), ["a", "b"], None, False, "a; b"),
        (plan(), [], {"asked": 64, "got": 7}, False, "shortfall: asked 64, got 7"),
        (
            plan(manage_pool=False, settings=[]),
            [],
            None,
            False,
            "pool left alone (hugepages_count and hugepages_per_node are null); mounts match /proc/mounts",
        ),
        (plan(mounts=[]), [], None, False, "read back: vm.nr_hugepages hold the requested pages"),
    ],
)
def test_verify_detail(the_plan, problems, shortfall, check_mode, detail):
    assert hv.verify_detail(the_plan, problems, shortfall, check_mode) == detail


def test_role_result_verified_after_a_clean_read_back():
    readback = {"plan": back(), "shortfall": None}
    tasks = [{"item": {"path": SYSCTL["path"]}, "changed": True}, {"item": {"path": "/x"}, "changed": False}]
    result, problems = hv.role_result(plan(), readback, tasks, [], "2M", "/etc/fstab", False)
    assert problems == [] and result["verified"] is True and result["pool"] == {"total": 64}
    assert result["persistence"][0]["state"] == "installed"
    assert list(result) == [
        "role",
        "size",
        "settings",
        "persistence",
        "conflicts",
        "verified",
        "verify_detail",
        "reboot_required",
        "shortfall",
        "pool",
        "check_mode",
    ]


def test_role_result_in_check_mode_reads_nothing_back():
    result, problems = hv.role_result(plan(), {"skipped": True}, [], [], "2M", "/etc/fstab", True)
    assert problems == [] and result["verified"] is False and result["pool"] == {"total": 0}
    assert result["check_mode"] is True and result["shortfall"] is None


def test_role_result_with_a_shortfall_is_not_verified():
    shortfall = {"asked": 64, "got": 7, "why": "w", "settings": []}
    result, problems = hv.role_result(plan(), {"plan": back(), "shortfall": shortfall}, [], [], "2M", "/f", False)
    assert problems == [] and result["verified"] is False and result["verify_detail"] == "shortfall: asked 64, got 7"


PROC_MOUNTS = "hugetlbfs /mnt/a hugetlbfs rw,relatime,pagesize=2M 0 0\nhugetlbfs /mnt/b hugetlbfs rw,pagesize=1G 0 0\n"


@pytest.mark.parametrize(
    ("recorded", "unmount", "remount"),
    [
        ({"/mnt/a": {"was_mounted": False, "options": None}}, ["/mnt/a"], []),
        ({"/mnt/a": {"was_mounted": True, "options": "rw,relatime,pagesize=2M"}}, [], []),
        (
            {"/mnt/b": {"was_mounted": True, "options": "rw,pagesize=2M"}},
            ["/mnt/b"],
            [{"path": "/mnt/b", "options": "rw,pagesize=2M"}],
        ),
        ({"/mnt/c": {"was_mounted": True, "options": "rw"}}, [], [{"path": "/mnt/c", "options": "rw"}]),
        ({"/mnt/c": {"was_mounted": False, "options": None}}, [], []),
    ],
)
def test_rollback_mounts(recorded, unmount, remount):
    assert hv.rollback_mounts(recorded, PROC_MOUNTS) == (unmount, remount)


def test_rollback_plan_reads_the_record_and_the_mounts(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "mounts").write_text(PROC_MOUNTS)
    tree = Tree(str(tmp_path))
    assert hv.rollback_plan(tree, "/state") == {
        "exists": False,
        "errors": [],
        "recorded": {},
        "write": [],
        "cleanup": {"files": [], "dirs": []},
        "unmount": [],
        "remount": [],
        "rmdir_mounts": [],
        "regenerate": [],
        "systemd_running": False,
    }
    (tmp_path / "state").mkdir()
    record = {"mounts": {"/mnt/a": {"was_mounted": False, "options": None}}, "regenerate": ["update-grub"]}
    (tmp_path / "state" / "state.json").write_text(json.dumps(record))
    planned = hv.rollback_plan(tree, "/state")
    assert planned["exists"] and planned["unmount"] == ["/mnt/a"] and planned["regenerate"] == ["update-grub"]
    assert planned["rmdir_mounts"] == ["/mnt/a"] and planned["errors"] == []
    (tmp_path / "state" / "state.json").write_text("{not json")
    assert hv.rollback_plan(tree, "/state")["errors"] == [
        "/state/state.json cannot be used: it is not valid JSON; move it away or restore it, then run again"
    ]
