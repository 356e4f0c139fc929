"""Rollback takes out exactly what Preflight wrote and keeps every later edit (issue 15, defects 2 and 7):
the record of each file (core/undo.py, hugepages_undo.py, jemalloc_undo.py), what rollback writes from it,
the errors when a file no longer holds what Preflight wrote, and version 1 records (whole-file copies)."""

from __future__ import annotations

import json

import pytest

from tests.moduleutils import module_util

undo = module_util("preflight.core.undo")
hu = module_util("preflight.core.hugepages_undo")
ju = module_util("preflight.core.jemalloc_undo")
hv = module_util("preflight.core.hugepages_verify")
persist = module_util("preflight.core.hugepages_persist")
je = module_util("preflight.core.jemalloc")
tree_mod = module_util("preflight.core.tree")

FSTAB = "# UNCONFIGURED FSTAB FOR BASE SYSTEM\nUUID=0a1b2c3d / ext4 errors=remount-ro 0 1"
OURS = "hugetlbfs /mnt/huge hugetlbfs pagesize=2M,mode=1770,uid=0,gid=0 0 0"
NFS = "nas:/export /data nfs rw,hard 0 0\n"
LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
OTHER = "/usr/lib/libother.so"


def applied(text: str | None, wanted: dict) -> tuple[str, dict]:
    """What the role writes to fstab and the record it keeps, as one run does it."""
    entry = hu.fstab_entry(None, text, wanted)
    return persist.edit_fstab(text or "", wanted), entry


# --------------------------------------------------------------------------------------------- fstab


def test_fstab_rollback_keeps_a_line_added_since_byte_for_byte():
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    edited = written + NFS  # the operator adds an NFS mount after Preflight's run
    text, remove, errors = hu.fstab_undo("/etc/fstab", entry, edited)
    assert errors == [] and remove is False
    assert text == FSTAB + "\n" + NFS  # Preflight's line out, the NFS line kept, nothing else touched


def test_fstab_rollback_without_later_edits_is_the_original_byte_for_byte():
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    assert written == FSTAB + "\n" + OURS + "\n"
    assert hu.fstab_undo("/etc/fstab", entry, written) == (FSTAB, False, [])


def test_fstab_rollback_puts_back_the_line_preflight_replaced_in_its_place():
    original = "a / ext4 defaults 0 1\nhugetlbfs /mnt/huge hugetlbfs pagesize=2M 0 0\nb /b ext4 defaults 0 2\n"
    written, entry = applied(original, {"/mnt/huge": OURS})
    edited = "# a comment the operator added\n" + written + NFS
    text, _, errors = hu.fstab_undo("/etc/fstab", entry, edited)
    assert errors == [] and text == "# a comment the operator added\n" + original + NFS


def test_fstab_rollback_puts_back_a_line_preflight_removed():
    original = "a / ext4 defaults 0 1\nhugetlbfs /mnt/old hugetlbfs pagesize=2M 0 0\nb /b ext4 defaults 0 2\n"
    written, entry = applied(original, {"/mnt/old": None})
    assert "/mnt/old" not in written
    assert hu.fstab_undo("/etc/fstab", entry, written) == (original, False, [])


def test_fstab_line_changed_by_the_operator_stops_rollback_and_names_file_and_line():
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    edited = written.replace("mode=1770", "mode=0777")
    text, _, errors = hu.fstab_undo("/etc/fstab", entry, edited)
    assert text is None
    assert errors == [
        "/etc/fstab: the hugetlbfs line for /mnt/huge is now "
        "'hugetlbfs /mnt/huge hugetlbfs pagesize=2M,mode=0777,uid=0,gid=0 0 0', not the one Preflight wrote "
        f"({OURS!r}): restore Preflight's line or remove the record's mount by hand, then run again"
    ]


def test_fstab_is_compared_by_fields_not_spacing():
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    edited = written.replace(OURS, OURS.replace(" ", "\t"))
    assert hu.fstab_undo("/etc/fstab", entry, edited) == (FSTAB, False, [])


def test_fstab_record_keeps_the_first_replaced_line_and_every_line_written():
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    second_line = OURS.replace("1770", "0755")
    entry2 = hu.fstab_entry(entry, written, {"/mnt/huge": second_line})
    assert entry2["mounts"]["/mnt/huge"] == {"replaced": [], "written": [OURS, second_line]}
    again = persist.edit_fstab(written, {"/mnt/huge": second_line}) + NFS
    assert hu.fstab_undo("/etc/fstab", entry2, again) == (FSTAB + "\n" + NFS, False, [])


def test_fstab_created_by_preflight_is_removed_when_nothing_else_is_in_it():
    written, entry = applied(None, {"/mnt/huge": OURS})
    assert hu.fstab_undo("/tmp/fstab", entry, written) == ("", True, [])
    assert hu.fstab_undo("/tmp/fstab", entry, written + NFS) == (NFS, False, [])


# --------------------------------------------------------------------------------------------- owned files


def test_owned_file_is_removed_only_while_it_holds_what_preflight_wrote():
    entry = undo.owned_entry(None, "file", "sysctl", None, "0644", "vm.nr_hugepages = 64\n")
    assert undo.owned_undo("/etc/sysctl.d/80.conf", entry, "vm.nr_hugepages = 64\n") == (
        {"path": "/etc/sysctl.d/80.conf", "kind": "file", "state": "absent"},
        None,
    )
    action, error = undo.owned_undo("/etc/sysctl.d/80.conf", entry, "vm.nr_hugepages = 64\nvm.swappiness = 1\n")
    assert action is None
    assert error == (
        "/etc/sysctl.d/80.conf no longer holds what Preflight wrote:\n--- written by Preflight\n+++ on the host now\n"
        "@@ -1,0 +2 @@\n+vm.swappiness = 1"
    )
    assert undo.owned_undo("/x", entry, None) == (None, None)  # already as it was


def test_owned_file_that_existed_gets_its_content_back_and_a_link_its_target():
    entry = undo.owned_entry(None, "file", "unit", "old\n", "0600", "new\n")
    entry = undo.owned_entry(entry, "file", "unit", "new\n", "0644", "newer\n")
    assert entry["before"] == "old\n" and entry["mode"] == "0600" and entry["written"] == ["new\n", "newer\n"]
    assert undo.owned_undo("/u", entry, "new\n")[0] == {
        "path": "/u", "kind": "file", "state": "present", "content": "old\n", "mode": "0600"
    }
    link = undo.owned_entry(None, "link", "unit_wants", "/old/target", "0644", "/new/target")
    assert undo.owned_undo("/l", link, "/new/target")[0] == {"path": "/l", "kind": "link", "state": "link",
                                                              "target": "/old/target"}
    assert undo.owned_undo("/l", link, "/elsewhere")[1] == (
        "/l now points to '/elsewhere', not where Preflight linked it ('/new/target')"
    )


# --------------------------------------------------------------------------------------------- ld.so.preload


def test_preload_rollback_keeps_a_library_added_since():
    before = OTHER  # no final newline
    after_run = je.preload_content(before, LIB, True)
    entry = ju.preload_entry(None, before, LIB, "0644")
    edited = after_run + "/usr/lib/libadded-later.so\n"
    action, error = ju.preload_undo("/etc/ld.so.preload", entry, edited)
    assert error is None
    assert action["content"] == f"{OTHER}\n/usr/lib/libadded-later.so\n"
    # without later edits: byte for byte, the missing final newline included
    assert ju.preload_undo("/etc/ld.so.preload", entry, after_run)[0]["content"] == OTHER


def test_preload_created_by_preflight_is_removed_when_only_its_line_is_left():
    entry = ju.preload_entry(None, None, LIB, "0644")
    written = je.preload_content(None, LIB, True)
    assert ju.preload_undo("/etc/ld.so.preload", entry, written) == (
        {"path": "/etc/ld.so.preload", "kind": "file", "state": "absent"},
        None,
    )


def test_preload_entry_merged_into_another_line_stops_rollback():
    entry = ju.preload_entry(None, OTHER + "\n", LIB, "0644")
    action, error = ju.preload_undo("/etc/ld.so.preload", entry, f"{OTHER}:{LIB}\n")
    assert action is None
    assert error == (
        f"/etc/ld.so.preload: the line Preflight added ({LIB}) is now part of '{OTHER}:{LIB}': take {LIB} out of "
        "that line by hand (or put it back on a line of its own), then run the rollback again"
    )


def test_preload_line_preflight_removed_is_put_back():
    before = f"{LIB}\n{OTHER}\n"
    entry = ju.preload_entry(None, before, LIB, "0644")
    assert entry["listed_before"] is True
    removed = je.preload_content(before, LIB, False) + "/usr/lib/libnew.so\n"
    assert ju.preload_undo("/p", entry, removed)[0]["content"] == f"{LIB}\n{OTHER}\n/usr/lib/libnew.so\n"


def test_preload_entries_are_split_as_the_loader_splits_them():
    assert ju.preload_entries(f" {OTHER}:{LIB}\t/x.so\n") == [OTHER, LIB, "/x.so"]


# --------------------------------------------------------------------------------------------- package


def test_package_is_removed_only_when_preflight_installed_it_and_nothing_depends_on_it():
    mine = {"name": "libjemalloc2", "installed_before": False, "installed_by_preflight": True}
    found, why = ju.dependents("libjemalloc2", ["apt-get", "--simulate", "remove", "libjemalloc2"], 0,
                               "Remv libjemalloc2 [5.3.0-1]\n", "")
    assert ju.package_decision(mine, found, why)["remove"] is True
    out = "Remv redis-server [5:7.0]\nRemv libjemalloc2 [5.3.0-1]\n"
    found, why = ju.dependents("libjemalloc2", ["apt-get", "-s", "remove", "libjemalloc2"], 0, out, "")
    assert found == ["redis-server"]
    assert ju.package_decision(mine, found, why) == {
        "remove": False, "name": "libjemalloc2",
        "detail": "libjemalloc2 kept: installed packages depend on it: redis-server",
    }
    theirs = {"name": "libjemalloc2", "installed_before": False, "installed_by_preflight": False}
    assert ju.package_decision(theirs, [], "")["detail"] == "libjemalloc2 kept: Preflight did not install it"
    rpm_err = "error: Failed dependencies:\n\tlibjemalloc.so.2()(64bit) is needed by (installed) valkey-8.0-1.x86_64\n"
    assert ju.dependents("jemalloc", ["rpm", "--erase", "--test", "jemalloc"], 1, "", rpm_err) == (
        ["valkey-8.0-1.x86_64"], ""
    )
    found, why = ju.dependents("libjemalloc2", ["apt-get", "-s", "remove", "x"], 100, "", "E: lock")
    assert found is None and ju.package_decision(mine, found, why)["remove"] is False


def test_snapshot_notes_that_preflight_installed_the_package_only_after_it_did(tmp_path):
    planner = module_util("preflight.core.jemalloc_plan")
    request = {"package": "libjemalloc2", "services": ["svc"], "malloc_conf": "", "enabled": True,
               "unit_dir": "/etc/systemd/system", "ld_so_preload": "/etc/ld.so.preload", "scope": "service"}
    tree = tree_mod.Tree(str(tmp_path))
    before = planner.plan(tree, request, None, None)
    assert before["snapshot"]["package"]["installed_by_preflight"] is False
    after = planner.plan(tree, {**request, "installed_now": True}, LIB, before["snapshot"])
    assert after["snapshot"]["package"] == {"name": "libjemalloc2", "installed_before": False,
                                            "installed_by_preflight": True}
    assert after["record_needed"] is True
    dropin = "/etc/systemd/system/svc.service.d/60-preflight-jemalloc.conf"
    assert after["snapshot"]["files"][dropin]["written"] == [je.dropin_content(LIB, "")]


# --------------------------------------------------------------------------------------------- version 1


def test_version_1_hugepages_record_is_migrated_and_rolls_back_without_losing_later_lines(tmp_path):
    state = tmp_path / "state"
    (state / "files").mkdir(parents=True)
    (state / "files" / "etc__fstab").write_text(FSTAB)
    sysctl = "/etc/sysctl.d/80-preflight-hugepages.conf"
    record = {
        "version": 1,
        "settings": {},
        "mounts": {"/mnt/huge": {"was_mounted": False, "options": None, "dir_existed": False}},
        "files": {
            "/etc/fstab": {"kind": "file", "existed": True, "role": "fstab", "backup": "files/etc__fstab"},
            sysctl: {"kind": "file", "existed": False, "role": "sysctl"},
        },
    }
    migrated = hu.migrate(record, lambda name: (state / name).read_text() if (state / name).exists() else None)
    assert migrated["version"] == 2
    now = {"/etc/fstab": FSTAB + "\n" + OURS + "\n" + NFS, sysctl: persist.sysctl_content(64)}
    planned = hu.files_undo(migrated, now.get, lambda path: None)
    assert planned["errors"] == []
    assert planned["write"] == [
        {"path": "/etc/fstab", "kind": "file", "state": "present", "content": FSTAB + "\n" + NFS, "mode": None},
        {"path": sysctl, "kind": "file", "state": "absent"},
    ]
    assert hu.cleanup(migrated, "/s") == {"files": ["/s/state.json", "/s/files/etc__fstab"],
                                          "dirs": ["/s/files", "/s"]}


def test_version_1_record_with_a_missing_copy_is_a_clear_error():
    record = {"files": {"/etc/fstab": {"kind": "file", "existed": True, "role": "fstab", "backup": "files/x"}}}
    with pytest.raises(undo.RecordError, match="lists a copy of /etc/fstab"):
        hu.migrate(record, lambda name: None)


def test_version_1_jemalloc_record_keeps_the_package_it_cannot_prove_it_installed():
    record = {"version": 1, "package": {"name": "libjemalloc2", "installed_before": False},
              "files": {"/etc/ld.so.preload": {"existed": True, "role": "ld_so_preload", "backup": "files/p"}}}
    migrated = ju.migrate(record, lambda name: OTHER, LIB)
    assert ju.package_decision(migrated["package"], [], "")["remove"] is False
    planned = ju.files_undo(migrated, {"/etc/ld.so.preload": f"{OTHER}\n{LIB}\n/x.so\n"}.get)
    assert planned["write"][0]["content"] == f"{OTHER}\n/x.so\n"


# --------------------------------------------------------------------------------------------- hugepages record


def test_hugepages_record_is_kept_when_a_pool_was_not_restored():
    short = [{"item": {"key": "/proc/sys/vm/nr_hugepages"}, "taken": False}]
    assert hv.rollback_outcome(short, []) == {
        "remove_record": False,
        "warnings": ["/proc/sys/vm/nr_hugepages could not be given back its recorded page count; the record is kept"],
    }
    assert hv.rollback_outcome([{"item": {"key": "/p"}, "taken": True}], [])["remove_record"] is True


def test_hugepages_rollback_plan_stops_on_an_edited_file_and_removes_only_its_own_files(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "etc").mkdir()
    written, entry = applied(FSTAB, {"/mnt/huge": OURS})
    (tmp_path / "etc" / "fstab").write_text(written.replace("1770", "0700"))
    record = {"version": 2, "files": {"/etc/fstab": entry}, "mounts": {}, "state_dir_created": False}
    (tmp_path / "state" / "state.json").write_text(json.dumps(record))
    planned = hv.rollback_plan(tree_mod.Tree(str(tmp_path)), "/state")
    assert planned["write"] == [] and len(planned["errors"]) == 1
    assert planned["errors"][0].startswith("/etc/fstab: the hugetlbfs line for /mnt/huge is now")
    assert planned["cleanup"] == {"files": ["/state/state.json"], "dirs": ["/state/files"]}
