"""Per-size THP (core/thp_sizes.py and its part in core/thp.py): the reader, the validator, the thp_anon= words
in the GRUB defaults file and the rollback record, on files under a temporary root. The reader also runs on a
copy of this machine's own sysfs THP directory with the per-size knobs left out (a kernel before 6.8)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.moduleutils import module_util

thp = module_util("preflight.core.thp")
thp_node = module_util("preflight.core.thp_node")
thp_sizes = module_util("preflight.core.thp_sizes")
Tree = module_util("preflight.core.tree").Tree

BASE = "/sys/kernel/mm/transparent_hugepage"
LIVE = Path(BASE)
CHOICES = "always inherit madvise [never]\n"
DEBIAN_GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0"\n'
VARIABLES = {"thp_enabled": "madvise", "thp_defrag": "never", "thp_khugepaged_defrag": 1,
             "thp_persist": ["systemd"], "thp_state_dir": "/var/lib/preflight/thp"}


def node(tmp_path, files: dict[str, str]):
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return Tree(str(tmp_path))


def mthp_node(tmp_path, extra: dict | None = None):
    """A 6.18-like THP directory: 16kB, 64kB and 2048kB offered for anonymous memory, 8kB for shmem only."""
    return node(tmp_path, {
        f"{BASE}/enabled": "always [madvise] never\n",
        f"{BASE}/defrag": "always defer defer+madvise madvise [never]\n",
        f"{BASE}/khugepaged/defrag": "1\n",
        f"{BASE}/hpage_pmd_size": "2097152\n",
        f"{BASE}/hugepages-8kB/shmem_enabled": "always inherit within_size advise [never]\n",
        f"{BASE}/hugepages-16kB/enabled": CHOICES,
        f"{BASE}/hugepages-64kB/enabled": CHOICES,
        f"{BASE}/hugepages-2048kB/enabled": "always [inherit] madvise never\n",
        "/proc/sys/kernel/osrelease": "6.18.44\n",
        **(extra or {}),
    })


def test_the_reader_lists_every_anonymous_size_smallest_first_with_its_setting_and_choices(tmp_path):
    sizes = thp_sizes.read_sizes(mthp_node(tmp_path))
    assert list(sizes) == ["16kB", "64kB", "2048kB"]  # 8kB is shmem-only: no 'enabled', not a size to set
    assert sizes["2048kB"] == {"path": f"{BASE}/hugepages-2048kB/enabled", "current": "inherit",
                               "choices": ["always", "inherit", "madvise", "never"]}


def test_the_reader_reads_this_machine_s_own_per_size_knobs():
    live = {d.name[len("hugepages-"):]: d / "enabled" for d in LIVE.glob("hugepages-*kB") if (d / "enabled").exists()}
    sizes = thp_sizes.read_sizes(Tree("/"))
    assert set(sizes) == set(live)
    for size, path in live.items():
        assert f"[{sizes[size]['current']}]" in path.read_text()


def copy_without_size_knobs(tmp_path) -> Tree:
    """This machine's THP directory copied file by file, with every hugepages-<N>kB directory left out."""
    target = tmp_path / BASE.lstrip("/")
    shutil.copytree(LIVE, target, ignore=shutil.ignore_patterns("hugepages-*", "stats"),
                    copy_function=lambda src, dst: Path(dst).write_text(Path(src).read_text()))
    return Tree(str(tmp_path))


def test_a_copied_sysfs_tree_without_per_size_knobs_ignores_an_empty_map_and_refuses_any_other(tmp_path):
    tree = copy_without_size_knobs(tmp_path)
    settings, sizes = thp_node.read_settings(tree), thp_sizes.read_sizes(tree)
    assert sizes == {}
    assert settings["thp_enabled"]["current"] is not None  # the global knobs were copied
    assert thp.validate({**VARIABLES, "thp_sizes": {}}, settings, sizes) == []
    assert thp.plan({**VARIABLES, "thp_sizes": {}}, settings, sizes)[-1]["name"] == "thp_khugepaged_defrag"
    assert thp.validate({**VARIABLES, "thp_sizes": {"64kB": "always"}}, settings, sizes) == [
        f"thp_sizes: this kernel has no per-size THP knobs ({BASE}/hugepages-<N>kB/enabled, Linux 6.8 and later), "
        "so 64kB cannot be set; set thp_sizes: {} for this host or boot a newer kernel"
    ]


def test_every_bad_size_and_value_is_named_with_what_is_allowed_in_one_list(tmp_path):
    tree = mthp_node(tmp_path)
    wanted = {"64kB": "sometimes", "4096kB": "always", "16kB": False, "2048kB": "inherit"}
    assert thp.validate({**VARIABLES, "thp_sizes": wanted}, thp_node.read_settings(tree),
                        thp_sizes.read_sizes(tree)) == [
        f"thp_sizes[64kB]: 'sometimes' is not offered by this kernel ({BASE}/hugepages-64kB/enabled); "
        "allowed: always, inherit, madvise, never",
        "thp_sizes: size '4096kB' is not offered by this kernel; allowed sizes: 16kB, 64kB, 2048kB",
        "thp_sizes[16kB]: 'False' is a YAML boolean, not a word (quote it: \"never\"); allowed: always, inherit, "
        "madvise, never",
    ]
    assert thp_sizes.validate(["64kB"], thp_sizes.read_sizes(tree)) == [
        "thp_sizes: '['64kB']' is not a map of page size to setting; write e.g. {\"64kB\": always}"]


def test_the_plan_sets_the_named_sizes_after_the_global_knobs_and_the_unit_writes_them_all(tmp_path):
    tree = mthp_node(tmp_path)
    planned = thp.plan({**VARIABLES, "thp_sizes": {"2048kB": "inherit", "64kB": "always"}},
                       thp_node.read_settings(tree), thp_sizes.read_sizes(tree))
    assert [(p["name"], p["current"], p["desired"]) for p in planned[3:]] == [
        ("thp_sizes[64kB]", "never", "always"), ("thp_sizes[2048kB]", "inherit", "inherit")]
    assert planned[3]["path"] == f"{BASE}/hugepages-64kB/enabled"


def test_the_record_keeps_the_first_value_of_each_size_and_rollback_restores_exactly_those(tmp_path):
    tree = mthp_node(tmp_path)
    settings, sizes = thp_node.read_settings(tree), thp_sizes.read_sizes(tree)
    boot = {"kind": None}
    first = thp.plan({**VARIABLES, "thp_sizes": {"64kB": "always", "16kB": "never"}}, settings, sizes)
    recorded = thp.record({}, first, ["systemd"], boot, "t1")["state"]
    assert recorded["settings"]["thp_sizes[64kB]"] == {"path": f"{BASE}/hugepages-64kB/enabled", "value": "never",
                                                       "recorded_at": "t1"}
    assert "thp_sizes[16kB]" not in recorded["settings"]  # not replaced: nothing to give back
    # A later run from Preflight's own value must not record that value as the original.
    later = [dict(p, current="always") if p["name"] == "thp_sizes[64kB]" else p
             for p in thp.plan({**VARIABLES, "thp_sizes": {"64kB": "madvise"}}, settings, sizes)]
    again = thp.record(recorded, later, ["systemd"], boot, "t2")
    assert (again["changes"], again["state"]["settings"]["thp_sizes[64kB]"]["value"]) == (0, "never")
    back = thp.rollback_plan(again["state"], None)
    assert {"name": "thp_sizes[64kB]", "path": f"{BASE}/hugepages-64kB/enabled", "value": "never"} in back["settings"]
    assert back["remove_record"] is True


def test_thp_anon_words_keep_every_size_as_it_boots_and_need_kernel_6_12(tmp_path):
    tree = mthp_node(tmp_path)
    sizes = thp_sizes.read_sizes(tree)
    assert thp_sizes.anon_tokens({"64kB": "always"}, sizes) == [
        "thp_anon=16K:never", "thp_anon=64K:always", "thp_anon=2048K:inherit"]
    assert thp_sizes.anon_support(tree) is None
    old = node(tmp_path / "old", {"/proc/sys/kernel/osrelease": "6.8.0-45-generic\n"})
    assert thp_sizes.anon_support(old) == "the running kernel 6.8 is older than 6.12 and ignores thp_anon="


def grub_with_anon(tree, wanted: dict):
    boot = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: f"/usr/sbin/{name}")
    tokens = thp_sizes.anon_tokens(wanted, thp_sizes.read_sizes(tree))
    return thp_sizes.with_anon(boot, tokens, thp_sizes.anon_support(tree))


def test_the_grub_edit_adds_only_preflight_s_thp_anon_words_and_rollback_restores_the_file_byte_for_byte(tmp_path):
    tree = mthp_node(tmp_path, {"/etc/default/grub": DEBIAN_GRUB})
    boot = grub_with_anon(tree, {"64kB": "always"})
    assert boot["content"] == DEBIAN_GRUB.replace(
        '"console=ttyS0"', '"console=ttyS0 transparent_hugepage=madvise thp_anon=16K:never thp_anon=64K:always '
        'thp_anon=2048K:inherit"')
    assert boot["anon_edit"]["added"] == ["thp_anon=16K:never", "thp_anon=64K:always", "thp_anon=2048K:inherit"]
    state = thp.record({}, [], ["kernel_cmdline"], boot, "t1")["state"]
    assert state["kernel_cmdline_thp_anon"]["added"] == boot["anon_edit"]["added"]
    tree = mthp_node(tmp_path, {"/etc/default/grub": boot["content"]})
    assert grub_with_anon(tree, {"64kB": "always"})["changed"] is False  # second run: nothing to write
    back = thp_node.rollback_bootloader(tree, state["kernel_cmdline"], which=lambda name: f"/usr/sbin/{name}",
                                        after=state["kernel_cmdline_thp_anon"])
    assert (back["kind"], back["content"]) == ("grub", DEBIAN_GRUB)


def test_a_file_without_the_command_line_gets_it_appended_and_rollback_removes_the_whole_line(tmp_path):
    text = "GRUB_DEFAULT=0\n"
    tree = mthp_node(tmp_path, {"/etc/default/grub": text})
    boot = grub_with_anon(tree, {"2048kB": "always"})
    assert boot["content"] == text + ('GRUB_CMDLINE_LINUX="transparent_hugepage=madvise thp_anon=16K:never '
                                      'thp_anon=64K:never thp_anon=2048K:always"\n')
    state = thp.record({}, [], ["kernel_cmdline"], boot, "t1")["state"]
    tree = mthp_node(tmp_path, {"/etc/default/grub": boot["content"]})
    back = thp_node.rollback_bootloader(tree, state["kernel_cmdline"], which=lambda name: f"/usr/sbin/{name}",
                                        after=state["kernel_cmdline_thp_anon"])
    assert back["content"] == text


def test_an_operator_s_own_thp_anon_is_replaced_in_place_and_put_back_by_rollback(tmp_path):
    text = DEBIAN_GRUB.replace('"console=ttyS0"', '"thp_anon=16K:always thp_anon=64K:always thp_anon=2048K:never '
                                                  'console=ttyS0"')
    tree = mthp_node(tmp_path, {"/etc/default/grub": text})
    boot = grub_with_anon(tree, {"64kB": "madvise"})
    assert "thp_anon=16K:never thp_anon=64K:madvise thp_anon=2048K:inherit console=ttyS0" in boot["content"]
    state = thp.record({}, [], ["kernel_cmdline"], boot, "t1")["state"]
    back = thp_node.rollback_bootloader(mthp_node(tmp_path, {"/etc/default/grub": boot["content"]}),
                                        state["kernel_cmdline"], which=lambda name: f"/usr/sbin/{name}",
                                        after=state["kernel_cmdline_thp_anon"])
    assert back["content"] == text
    # Only a thp_anon record (transparent_hugepage= was already right): rollback still restores the line.
    assert thp.rollback_plan({"kernel_cmdline_thp_anon": state["kernel_cmdline_thp_anon"]}, back)["remove_record"]


def test_a_kernel_before_6_12_gets_no_thp_anon_and_the_persistence_detail_says_why(tmp_path):
    tree = mthp_node(tmp_path, {"/etc/default/grub": DEBIAN_GRUB, "/proc/sys/kernel/osrelease": "6.8.0\n"})
    boot = grub_with_anon(tree, {"64kB": "always"})
    assert "thp_anon" not in boot["content"] and boot["anon_edit"] is None
    assert thp_sizes.anon_note(boot) == (
        "; thp_sizes: no thp_anon= written (the running kernel 6.8 is older than 6.12 and ignores thp_anon=), "
        "the per-size values persist through the systemd method only")


def test_a_size_the_operator_sets_is_not_reported_as_a_conflict(tmp_path):
    tree = mthp_node(tmp_path, {f"{BASE}/hugepages-2048kB/enabled": CHOICES})
    boot = {"default_option": None}
    found = thp_node.conflicts(tree, "madvise", "never", None, boot, "preflight-thp.service")
    assert found == [f"{BASE}/hugepages-2048kB/enabled is 'never', not 'inherit': pages of that size follow it, "
                     "not thp_enabled=madvise"]
    assert thp_node.conflicts(tree, "madvise", "never", None, boot, "preflight-thp.service",
                              {"2048kB": "never"}) == []


def test_the_host_report_lists_each_size_s_setting_before_and_after_and_the_node_s_per_size_facts(tmp_path):
    from tests.unit import report_samples as samples

    render_md = module_util("preflight.report.render_markdown")
    result = samples.thp_result()
    result["settings"].append({"name": "thp_sizes[64kB]", "path": f"{BASE}/hugepages-64kB/enabled",
                               "desired": "always", "before": "never", "after": "always", "changed": True})
    facts = samples.facts()
    facts["thp"]["sizes"]["64kB"]["enabled"] = "always"
    doc = samples.one(samples.host("gpu-a", facts=facts, role_results={"thp": result}), tmp_path)
    md = render_md.host_report(doc)
    assert "| thp | thp_sizes[64kB] | never | always | always | yes |" in md
    assert ("| THP per size | 16kB never, 32kB never, 64kB always, 128kB never, 256kB never, 512kB never, "
            "1024kB never, 2048kB inherit |") in md


def test_the_kernel_cmdline_method_asks_for_a_reboot_until_the_kernel_booted_with_preflight_s_thp_anon(tmp_path):
    tree = mthp_node(tmp_path, {"/etc/default/grub": DEBIAN_GRUB, "/proc/cmdline": "ro transparent_hugepage=madvise\n"})
    boot = grub_with_anon(tree, {"64kB": "always"})
    boot = thp_sizes.with_anon(boot, boot["anon_tokens"], None, thp_sizes.booted_anon(tree))
    regenerated = {"edit": {"changed": False}, "regenerate": {}}
    outcome = thp.cmdline_outcome({**boot, "regenerate": ["update-grub"]}, "madvise", "madvise", regenerated, False)
    assert outcome["reboot_required"] is True
    booted = " ".join(boot["anon_tokens"])
    tree = mthp_node(tmp_path, {"/proc/cmdline": f"ro transparent_hugepage=madvise {booted}\n"})
    boot = thp_sizes.with_anon(boot, boot["anon_tokens"], None, thp_sizes.booted_anon(tree))
    outcome = thp.cmdline_outcome({**boot, "regenerate": ["update-grub"]}, "madvise", "madvise", regenerated, False)
    assert outcome["reboot_required"] is False
    assert outcome["detail"].endswith(f"; thp_sizes at boot: {booted}")
