"""module_utils/preflight/core/hugepages*.py: the planner of roles/hugepages, without Ansible and without a kernel.

The host shapes below are written from real files (this machine's /proc/buddyinfo and /proc/mounts lines,
Debian's /etc/default/grub); what cannot be produced on demand on a real kernel (a fragmented node, a
2-node machine) is tested here.
"""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

hp = module_util("preflight.core.hugepages")
persist = module_util("preflight.core.hugepages_persist")
planner = module_util("preflight.core.hugepages_plan")

# This VM: 24 GiB, one node, plenty of large free blocks.
BUDDY_ROOMY = """\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone    DMA32      2      3      0      2      3      2      1      4      4      2    752
Node 0, zone   Normal      2      3      0    970   2210   1194   1169     64     20      7     20
"""
# The same node after a long uptime: lots of free memory, almost nothing contiguous at order 9 and above.
BUDDY_FRAGMENTED = """\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      0      0      0
Node 0, zone    DMA32   9000   8000   4000   2000    800    100     10      1      0      0      0
Node 0, zone   Normal 900000 500000 200000  60000  10000   2000    300     40      3      1      0
"""
PATHS = {
    "fstab": "/etc/fstab",
    "sysctl_file": "/etc/sysctl.d/80-preflight-hugepages.conf",
    "unit_dir": "/etc/systemd/system",
    "grub_default": "/etc/default/grub",
}


def host(**overrides) -> hp.Host:
    base = dict(
        meminfo_kb={"MemTotal": 24683656, "MemFree": 21000000, "Hugepagesize": 2048},
        default_size_kb=2048,
        sizes_kb=[2048, 1048576],
        pools={2048: {"total": 0, "nodes": {0: 0}}, 1048576: {"total": 0, "nodes": {0: 0}}},
        nodes=[0],
        node_memfree_kb={0: 21000000},
        buddyinfo=hp.parse_buddyinfo(BUDDY_ROOMY),
        cpu_flags={"pdpe1gb", "pse"},
        mounts=[],
        cmdline="console=ttyS0 quiet",
        fstab_text="# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
        files={},
        users={"root": 0},
        groups={"root": 0},
        bootloader={"kind": "none", "detail": "no bootloader configuration found (/etc/default/grub does not exist)"},
    )
    base.update(overrides)
    return hp.Host(**base)


def params(**overrides) -> dict:
    base = {"count": None, "per_node": None, "size": "2M", "max_percent": 50, "mounts": [], "paths": PATHS}
    base.update(overrides)
    return base


def test_cap_allows_exactly_the_limit_and_names_the_numbers_above_it():
    limit_pages = 24683656 * 50 // 100 // 2048
    assert hp.validate(params(count=limit_pages), host()) == []
    assert hp.validate(params(count=limit_pages + 1), host()) == [
        f"hugepages_count={limit_pages + 1} asks for {(limit_pages + 1) * 2} MiB of 2M pages; with 0 MiB already "
        "reserved in other page sizes that is 50.0% of this host's MemTotal of 24105 MiB, above "
        f"hugepages_max_percent_of_memory=50 (at most {limit_pages} pages of 2M). "
        "Lower hugepages_count or raise hugepages_max_percent_of_memory."
    ]


def test_cap_counts_pages_already_reserved_in_the_other_size():
    pools = {2048: {"total": 0, "nodes": {0: 0}}, 1048576: {"total": 10, "nodes": {0: 10}}}
    errors = hp.validate(params(count=1024), host(pools=pools))
    assert len(errors) == 1 and "with 10240 MiB already reserved in other page sizes" in errors[0]


def test_per_node_cap_keeps_the_nodes_not_named():
    two = host(nodes=[0, 1], pools={2048: {"total": 5000, "nodes": {0: 0, 1: 5000}}, 1048576: {"total": 0}})
    errors = hp.validate(params(per_node={0: 1100}), two)
    assert errors and errors[0].startswith("hugepages_per_node={0: 1100} asks for 12200 MiB of 2M pages")


def test_booleans_and_words_are_not_counts():
    errors = hp.validate(params(count=True, max_percent="half"), host())
    assert "hugepages_count=True must be a whole number >= 0, or null to leave hugepages alone" in errors
    assert "hugepages_max_percent_of_memory='half' must be a whole number from 1 to 100" in errors


def test_one_gib_pages_need_the_cpu_flag():
    errors = hp.validate(params(size="1G", count=1), host(cpu_flags={"pse"}))
    assert errors == ["hugepages_size=1G: this CPU lacks the pdpe1gb flag, so it has no 1 GiB pages; use 2M"]


def test_fstab_keeps_every_other_byte_and_replaces_only_its_own_line():
    text = (
        "# static\nUUID=1 / ext4 defaults 0 1\nhugetlbfs /mnt/huge hugetlbfs pagesize=1G 0 0\n#hugetlbfs /x hugetlbfs"
    )
    wanted = {"/mnt/huge": "hugetlbfs /mnt/huge hugetlbfs pagesize=2M,mode=0755,uid=0,gid=0 0 0"}
    assert persist.edit_fstab(text, wanted) == (
        "# static\nUUID=1 / ext4 defaults 0 1\nhugetlbfs /mnt/huge hugetlbfs pagesize=2M,mode=0755,uid=0,gid=0 0 0\n"
        "#hugetlbfs /x hugetlbfs"
    )
    assert persist.edit_fstab("UUID=1 / ext4 defaults 0 1", {"/a": "hugetlbfs /a hugetlbfs pagesize=2M 0 0"}) == (
        "UUID=1 / ext4 defaults 0 1\nhugetlbfs /a hugetlbfs pagesize=2M 0 0\n"
    )
    assert (
        persist.edit_fstab(text, {"/mnt/huge": None}) == "# static\nUUID=1 / ext4 defaults 0 1\n#hugetlbfs /x hugetlbfs"
    )


def test_proc_mounts_spelling_matches_the_requested_options():
    [mount] = hp.parse_hugetlbfs_mounts("none /tmp/hpt hugetlbfs rw,relatime,mode=770,pagesize=2M 0 0\n")
    wanted = {"pagesize": "2M", "mode": "0770", "uid": "0", "gid": "0"}
    assert mount["path"] == "/tmp/hpt" and persist.mounted_as_wanted(mount["options"], wanted)
    assert not persist.mounted_as_wanted(mount["options"], wanted | {"mode": "1770"})
    assert not persist.mounted_as_wanted(mount["options"], wanted | {"pagesize": "1G"})


@pytest.mark.parametrize(
    ("before", "tokens", "after", "replaced"),
    [
        (
            'GRUB_CMDLINE_LINUX=""\n',
            ["hugepagesz=1G", "hugepages=4"],
            'GRUB_CMDLINE_LINUX="hugepagesz=1G hugepages=4"\n',
            [],
        ),
        (
            'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=2 hugepagesz=2M hugepages=8"\n',
            ["hugepagesz=1G", "hugepages=0:2,1:2"],
            'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=0:2,1:2 hugepagesz=2M hugepages=8"\n',
            ["hugepagesz=1G", "hugepages=2"],
        ),
        (
            "GRUB_TIMEOUT=5",
            ["hugepagesz=1G", "hugepages=1"],
            'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="hugepagesz=1G hugepages=1"\n',
            [],
        ),
        (
            "GRUB_CMDLINE_LINUX='quiet splash' # keep\n",
            ["hugepagesz=1G", "hugepages=4"],
            "GRUB_CMDLINE_LINUX='quiet splash hugepagesz=1G hugepages=4' # keep\n",
            [],
        ),
    ],
)
def test_grub_cmdline_pair_is_replaced_in_place_or_appended_and_recorded(before, tokens, after, replaced):
    edit = persist.edit_grub_cmdline(before, "/etc/default/grub", "1G", tokens)
    assert (edit["text"], edit["record"]["added"], edit["record"]["replaced"]) == (after, tokens, replaced)


def test_two_pairs_of_the_same_size_are_refused_the_kernel_ignores_the_second():
    text = 'GRUB_CMDLINE_LINUX="hugepagesz=1G hugepages=2 quiet hugepagesz=1048576k hugepages=4"\n'
    with pytest.raises(persist.grub.GrubError) as refused:
        persist.edit_grub_cmdline(text, "/etc/default/grub", "1G", ["hugepagesz=1G", "hugepages=8"])
    assert str(refused.value) == (
        "/etc/default/grub: GRUB_CMDLINE_LINUX has 2 groups hugepagesz=1G hugepages=2 / hugepagesz=1048576k "
        "hugepages=4 (lines 1, 1); the kernel keeps only the first: remove all but one by hand (nothing was written)"
    )


def test_the_record_of_the_grub_file_keeps_what_was_replaced_first_and_no_whole_file_copy():
    grub = {"kind": "grub", "path": "/etc/default/grub", "regenerate": ["update-grub"]}
    files = {"/etc/default/grub": {"exists": True, "content": 'GRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=2"\n',
                                   "mode": "0644"}}
    first = planner.plan(params(size="1G", count=4), host(bootloader=grub, files=files))
    snap = planner.snapshot(first, host(bootloader=grub, files=files), None)
    entry = snap["files"]["/etc/default/grub"]
    assert "backup" not in entry and planner.backups(snap, None) == []
    assert (entry["cmdline"]["added"], entry["cmdline"]["replaced"]) == (
        ["hugepagesz=1G", "hugepages=4"], ["hugepagesz=1G", "hugepages=2"])
    files["/etc/default/grub"]["content"] = next(f for f in first["files"] if f["role"] == "grub")["content"]
    later = planner.plan(params(size="1G", count=8), host(bootloader=grub, files=files))
    merged = planner.snapshot(later, host(bootloader=grub, files=files), snap)["files"]["/etc/default/grub"]
    assert (merged["cmdline"]["added"], merged["cmdline"]["replaced"]) == (
        ["hugepagesz=1G", "hugepages=8"], ["hugepagesz=1G", "hugepages=2"])


def test_rollback_of_an_older_whole_file_copy_takes_out_only_the_pair_and_keeps_the_thp_option(tmp_path):
    # Version 1 copied the defaults file after the thp role had added its option (site order thp -> hugepages);
    # the thp rollback has taken that option out since: the copy must not bring it back.
    copy = 'GRUB_CMDLINE_LINUX="quiet transparent_hugepage=madvise"\n'
    now = 'GRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=4 mitigations=off"\n# operator\n'
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/grub").write_text(now)
    (tmp_path / "state/files").mkdir(parents=True)
    (tmp_path / "state/files/etc__default__grub").write_text(copy)
    recorded = {"files": {"/etc/default/grub": {"kind": "file", "existed": True, "role": "grub",
                                                "backup": "files/etc__default__grub"}}}
    tree = module_util("preflight.core.tree").Tree(str(tmp_path))
    restores = persist.grub_rollback(tree, recorded, "/state")
    assert [(r["path"], r["content"]) for r in restores] == [
        ("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet mitigations=off"\n# operator\n')]


def test_total_of_the_default_size_persists_in_sysctl_and_per_node_in_a_unit():
    plan = planner.plan(params(count=64), host())
    sysctl = next(f for f in plan["files"] if f["role"] == "sysctl")
    assert sysctl["content"].endswith("\nvm.nr_hugepages = 64\n") and sysctl["changed"]
    assert [s["path"] for s in plan["settings"]] == ["/proc/sys/vm/nr_hugepages"]
    assert next(f for f in plan["files"] if f["role"] == "unit")["state"] == "absent"

    plan = planner.plan(params(per_node={"0": 32}), host())
    unit = next(f for f in plan["files"] if f["role"] == "unit")
    assert (
        "ExecStart=/bin/sh -c 'echo 32 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages'"
        in (unit["content"])
    )
    assert next(f for f in plan["files"] if f["role"] == "sysctl")["state"] == "absent"


def test_one_gib_pages_go_on_the_grub_cmdline_and_ask_for_a_reboot():
    grub = {"kind": "grub", "path": "/etc/default/grub", "regenerate": ["update-grub"]}
    files = {"/etc/default/grub": {"exists": True, "content": 'GRUB_CMDLINE_LINUX="quiet"\n', "mode": "0644"}}
    plan = planner.plan(params(size="1G", count=4), host(bootloader=grub, files=files))
    edited = next(f for f in plan["files"] if f["role"] == "grub")
    assert edited["content"] == 'GRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=4"\n'
    assert plan["reboot_required"] is True
    assert [p["method"] for p in plan["persistence"]] == ["kernel_cmdline"]

    booted = host(bootloader=grub, files=files, cmdline="quiet hugepagesz=1G hugepages=4")
    assert planner.plan(params(size="1G", count=4), booted)["reboot_required"] is False


def test_conflicting_sysctl_files_are_reported_with_who_wins():
    # As core/tuners.py sysctl_assignments lists them: in the order they are applied at boot.
    settings = [
        {"path": "/usr/lib/sysctl.d/50-vendor.conf", "key": "vm.nr_hugepages", "value": "16"},
        {"path": "/etc/sysctl.d/80-preflight-hugepages.conf", "key": "vm.nr_hugepages", "value": "64"},
        {"path": "/etc/sysctl.d/90-hugepages.conf", "key": "vm.nr_hugepages", "value": "2048"},
    ]
    found = persist.conflicts(
        params(count=64), host(sysctl_settings=settings, cmdline="hugepages=8"), PATHS["sysctl_file"]
    )
    assert [(c["source"], c["value"], c["effect"].split(":")[0]) for c in found] == [
        ("/etc/sysctl.d/90-hugepages.conf", "2048", "applied after Preflight's file at boot"),
        ("/usr/lib/sysctl.d/50-vendor.conf", "16", "applied before Preflight's file at boot"),
        (
            "/proc/cmdline",
            "hugepages=8",
            "the kernel reserves these pages at boot; Preflight's sysctl or unit then resizes the pool",
        ),
    ]


def _short_plan(asked: int, host_: hp.Host) -> dict:
    plan = planner.plan(params(count=asked), host_)
    return plan


def test_shortfall_on_fragmented_memory_says_so_with_the_numbers():
    fragmented = host(
        buddyinfo=hp.parse_buddyinfo(BUDDY_FRAGMENTED),
        pools={2048: {"total": 7, "nodes": {0: 7}}, 1048576: {"total": 0}},
    )
    short = planner.shortfall(_short_plan(512, host()), fragmented)
    assert (short["asked"], short["got"]) == (512, 7)
    assert short["why"].startswith("memory too fragmented: 505 more pages needed, 1 free contiguous blocks (node0: ")
    assert "20507 MiB free, 1 free 2M blocks, from /proc/buddyinfo)" in short["why"]


def test_shortfall_without_enough_free_memory_says_so():
    starved = host(node_memfree_kb={0: 100 * 1024}, pools={2048: {"total": 40, "nodes": {0: 40}}, 1048576: {}})
    short = planner.shortfall(_short_plan(512, host()), starved)
    assert short["why"].startswith("not enough free memory: 944 MiB more needed, 100 MiB free")


def test_shortfall_that_free_memory_does_not_explain_points_at_another_writer():
    short = planner.shortfall(_short_plan(64, host()), host())
    assert (short["asked"], short["got"]) == (64, 0)
    assert short["why"].startswith("neither free memory nor fragmentation explains it")


def test_no_shortfall_when_the_kernel_kept_every_page():
    full = host(pools={2048: {"total": 64, "nodes": {0: 64}}, 1048576: {}})
    assert planner.shortfall(_short_plan(64, host()), full) is None


def test_snapshot_keeps_the_first_recorded_value():
    first = planner.snapshot(planner.plan(params(count=64), host()), host(), None)
    assert first["settings"]["/proc/sys/vm/nr_hugepages"]["value"] == 0
    later_host = host(pools={2048: {"total": 64, "nodes": {0: 64}}, 1048576: {}})
    second = planner.snapshot(planner.plan(params(count=128), later_host), later_host, first)
    assert second["settings"]["/proc/sys/vm/nr_hugepages"]["value"] == 0


def test_read_host_finds_pool_sysctls_and_a_tuned_profile_through_the_core_readers(tmp_path):
    """A recorded node tree: one node, a 2 MiB pool, a vendor sysctl file and a tuned profile that sizes a pool."""
    reader = module_util("preflight.core.hugepages_read")
    Tree = module_util("preflight.core.tree").Tree
    files = {
        "proc/meminfo": "MemTotal:       24683656 kB\nMemFree:        21000000 kB\nHugepagesize:       2048 kB\n",
        "proc/mounts": "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
        "proc/cmdline": "console=ttyS0 quiet\n",
        "proc/buddyinfo": BUDDY_ROOMY,
        "proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu pse pdpe1gb\n",
        "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages": "16\n",
        "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages": "16\n",
        "sys/devices/system/node/node0/meminfo": "Node 0 MemFree:        20000000 kB\n",
        "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages": "16\n",
        "usr/lib/sysctl.d/50-vendor.conf": "# vendor\nvm.nr_hugepages=16\nvm.swappiness = 10\n",
        "etc/tuned/active_profile": "gpu-node\n",
        "etc/tuned/gpu-node/tuned.conf": "[main]\nsummary=x\n[sysctl]\nvm.nr_hugepages=32\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    read = reader.read_host(Tree(str(tmp_path)), {"mounts": []}, PATHS)
    assert read.sizes_kb == [2048] and read.pools[2048]["total"] == 16 and read.pools[2048]["nodes"] == {0: 16}
    assert read.nodes == [0] and read.node_memfree_kb == {0: 20000000} and "pdpe1gb" in read.cpu_flags
    assert read.mounts[0]["path"] == "/dev/hugepages" and read.bootloader["kind"] == "none"
    found = persist.conflicts(params(count=64), read, PATHS["sysctl_file"])
    assert [(c["source"], c["setting"], c["value"]) for c in found] == [
        ("/usr/lib/sysctl.d/50-vendor.conf", "vm.nr_hugepages", "16"),
        ("/etc/tuned/gpu-node/tuned.conf", "tuned profile gpu-node", "sets hugepages"),
    ]
