"""node_facts' logic against recorded /proc and /sys trees (tests/fixtures/facts/*/, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.moduleutils import module_util

facts_module = module_util("preflight.core.facts")
gather = facts_module.gather
cmdline_facts = module_util("preflight.core.cmdline").cmdline_facts
split_cmdline = module_util("preflight.core.cmdline").split_cmdline
parse_choices = module_util("preflight.core.sysfs").parse_choices
parse_cpulist = module_util("preflight.core.tree").parse_cpulist
parse_size_kb = module_util("preflight.core.tree").parse_size_kb
format_cpulist = module_util("preflight.core.gpus").format_cpulist

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"
MTHP_CHOICES = ["always", "inherit", "madvise", "never"]
MTHP_SHMEM_CHOICES = ["always", "inherit", "within_size", "advise", "never"]
THP_ENABLED_CHOICES = ["always", "madvise", "never"]
THP_DEFRAG_CHOICES = ["always", "defer", "defer+madvise", "madvise", "never"]
THP_SHMEM_CHOICES = ["always", "within_size", "advise", "never", "deny", "force"]
VM_CMDLINE = (
    "mitigations=auto,no_guest_host,no_guest_guest console=ttyS0 quiet reboot=k panic=1 nomodule "
    "random.trust_cpu=1 swiotlb=noforce psi=1 nvproxy.enable=1 page_reporting.page_reporting_order=11 "
    "deferred_init=lazy nested_pvm=1 rcupdate.rcu_cpu_stall_cputime=1 sched_vcpu_pack=15 rdinit=/process_api"
)
VM_INIT_ARGS = (
    "-- --firecracker-init --addr 0.0.0.0:2024 --max-ws-buffer-size 32768 --block-local-connections "
    "--log-vsock-port 5002 --control-vsock-port 5001 --listen-vsock-port 2024 --tcp-readiness-only --auth-required"
)
NO_CMDLINE_PARAMS = {
    "transparent_hugepage": None,
    "transparent_hugepage_shmem": None,
    "thp_anon": None,
    "hugepages": None,
    "hugepagesz": None,
    "default_hugepagesz": None,
    "hugetlb_free_vmemmap": None,
    "numa_balancing": None,
}
NO_BOOTLOADER = "no /etc/default/grub: no bootloader configuration found that could persist the kernel command line"


def facts_of(shape: str) -> dict:
    return gather(root=str(FIXTURES / shape), gpus=False)


def mthp_sizes() -> dict:
    """The recorded 6.18 kernel's sizes: 8kB is offered to shmem only, 2048kB inherits, the rest never."""
    sizes = {}
    for size_kb in (8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        inherit = size_kb == 2048
        sizes[f"{size_kb}kB"] = {
            "size_kb": size_kb,
            "enabled": None if size_kb == 8 else ("inherit" if inherit else "never"),
            "choices": [] if size_kb == 8 else MTHP_CHOICES,
            "shmem_enabled": "inherit" if inherit else "never",
            "shmem_choices": MTHP_SHMEM_CHOICES,
        }
    return sizes


def pool(size_kb: int, total=0, free=0, rsvd=0, nodes=None) -> dict:
    return {
        "size_kb": size_kb,
        "total": total,
        "free": free,
        "rsvd": rsvd,
        "surp": 0,
        "overcommit": 0,
        "nodes": nodes if nodes is not None else {"0": {"total": total, "free": free, "surp": 0}},
    }


# ---- the VM as recorded --------------------------------------------------------------------------


def test_recorded_vm_reports_global_and_per_size_thp_settings_with_their_choices():
    assert facts_of("vm-1node")["thp"] == {
        "supported": True,
        "reason": None,
        "enabled": "madvise",
        "enabled_choices": THP_ENABLED_CHOICES,
        "defrag": "madvise",
        "defrag_choices": THP_DEFRAG_CHOICES,
        "khugepaged_defrag": 1,
        "shmem_enabled": "never",
        "shmem_enabled_choices": THP_SHMEM_CHOICES,
        "hpage_pmd_size_kb": 2048,
        "sizes": mthp_sizes(),
    }


def test_recorded_vm_has_empty_2m_and_1g_pools_on_its_one_node():
    assert facts_of("vm-1node")["hugepages"] == {
        "default_size_kb": 2048,
        "sizes": {"2048kB": pool(2048), "1048576kB": pool(1048576)},
        "reason": None,
    }


def test_recorded_vm_meminfo_numa_cpu_and_allocator():
    facts = facts_of("vm-1node")
    assert facts["meminfo_kb"] == {
        "MemTotal": 24683656,
        "MemFree": 20091396,
        "MemAvailable": 21436648,
        "Cached": 1416880,
        "AnonHugePages": 0,
        "ShmemHugePages": 0,
        "FileHugePages": 0,
        "Hugetlb": 0,
        "HugePages_Total": 0,
        "HugePages_Free": 0,
        "HugePages_Rsvd": 0,
        "HugePages_Surp": 0,
        "Hugepagesize": 2048,
    }
    assert facts["meminfo_reason"] is None
    assert facts["numa"] == {
        "nodes": [
            {
                "id": 0,
                "cpulist": "0-1",
                "cpus": [0, 1],
                "mem_total_kb": 9135904,
                "mem_free_kb": 4543696,
                "distances": [10],
            }
        ],
        "reason": None,
    }
    assert facts["cpu"]["model"] == "AMD EPYC"
    assert facts["cpu"]["count"] == 2
    assert {flag: facts["cpu"]["flags"][flag] for flag in ("pse", "pdpe1gb", "avx2", "avx512f", "amx_tile")} == {
        "pse": True,
        "pdpe1gb": True,
        "avx2": True,
        "avx512f": False,
        "amx_tile": False,
    }
    assert facts["allocator"] == {
        "ld_so_preload": [],
        "jemalloc_paths": ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"],
        "tcmalloc_paths": [],
    }


def test_recorded_vm_kernel_params_stop_at_the_double_dash_that_starts_init_arguments():
    kernel = facts_of("vm-1node")["kernel"]
    assert kernel["release"] == "6.18.44-fc-v782"
    assert kernel["version"] == "#1 SMP PREEMPT_DYNAMIC @0"
    assert kernel["cmdline"] == f"{VM_CMDLINE} {VM_INIT_ARGS}"
    assert kernel["cmdline_params"] == NO_CMDLINE_PARAMS
    assert kernel["cmdline_hugepage_pools"] == []
    assert kernel["reason"] is None


def test_recorded_vm_has_no_other_tuner_and_no_bootloader():
    assert facts_of("vm-1node")["tuners"] == {
        "tuned_active_profile": None,
        "tuned_settings": {},
        "tuned_files": [],
        "sysctl_overrides": {},
        "sysctl_values": {},
        "boot_writers": {"transparent_hugepage": [], "hugepages": []},
        "bootloader": None,
        "bootloader_reason": NO_BOOTLOADER,
        "grub_files": [],
        "grub_cmdline": None,
        "grub_cmdline_params": None,
        "reason": None,
    }


def test_1g_pages_reserved_at_runtime_show_in_hugetlb_but_not_in_hugepages_total():
    facts = facts_of("vm-1g-reserved")
    assert facts["hugepages"]["default_size_kb"] == 2048
    assert facts["hugepages"]["sizes"]["1048576kB"] == pool(1048576, total=2, free=1, rsvd=1)
    assert facts["hugepages"]["sizes"]["2048kB"] == pool(2048)
    meminfo = facts["meminfo_kb"]
    assert (meminfo["HugePages_Total"], meminfo["Hugetlb"], meminfo["Hugepagesize"]) == (0, 2097152, 2048)


# ---- two NUMA nodes -------------------------------------------------------------------------------


def test_two_numa_nodes_each_have_their_cpus_memory_and_distances():
    assert facts_of("two-numa")["numa"] == {
        "nodes": [
            {
                "id": 0,
                "cpulist": "0-3,8-11",
                "cpus": [0, 1, 2, 3, 8, 9, 10, 11],
                "mem_total_kb": 65404028,
                "mem_free_kb": 58011224,
                "distances": [10, 21],
            },
            {
                "id": 1,
                "cpulist": "4-7,12-15",
                "cpus": [4, 5, 6, 7, 12, 13, 14, 15],
                "mem_total_kb": 66055044,
                "mem_free_kb": 60117880,
                "distances": [21, 10],
            },
        ],
        "reason": None,
    }


def test_two_numa_2m_pool_is_split_per_node():
    hugepages = facts_of("two-numa")["hugepages"]
    assert hugepages["sizes"]["2048kB"] == pool(
        2048,
        total=2048,
        free=2024,
        rsvd=8,
        nodes={"0": {"total": 1024, "free": 1000, "surp": 0}, "1": {"total": 1024, "free": 1024, "surp": 0}},
    )
    assert hugepages["sizes"]["1048576kB"] == pool(
        1048576, nodes={"0": {"total": 0, "free": 0, "surp": 0}, "1": {"total": 0, "free": 0, "surp": 0}}
    )


def test_two_numa_kernel_before_6_8_has_thp_but_no_per_size_knobs():
    facts = facts_of("two-numa")
    assert (facts["thp"]["supported"], facts["thp"]["enabled"], facts["thp"]["sizes"]) == (True, "always", {})
    assert facts["kernel"]["release"] == "5.14.0-427.13.1.el9_4.x86_64"
    assert facts["kernel"]["cmdline_params"] == {**NO_CMDLINE_PARAMS, "transparent_hugepage": "always"}
    assert facts["cpu"]["count"] == 16
    assert facts["allocator"] == {
        "ld_so_preload": [],
        "jemalloc_paths": [],
        "tcmalloc_paths": ["/usr/lib64/libtcmalloc.so.4", "/usr/lib64/libtcmalloc_minimal.so.4"],
    }


def test_two_numa_names_every_other_tuner_that_acts_at_boot():
    assert facts_of("two-numa")["tuners"] == {
        "tuned_active_profile": "throughput-performance",
        "tuned_settings": {"sysctl.vm.swappiness": "10"},
        "tuned_files": ["/usr/lib/tuned/throughput-performance/tuned.conf"],
        "sysctl_overrides": {"vm.nr_hugepages": ["/etc/sysctl.d/90-hugepages.conf"]},
        "sysctl_values": {"vm.nr_hugepages": "2048"},
        "boot_writers": {"transparent_hugepage": ["/etc/systemd/system/disable-thp.service"], "hugepages": []},
        "bootloader": "grub",
        "bootloader_reason": None,
        "grub_files": ["/etc/default/grub"],
        "grub_cmdline": {
            "GRUB_CMDLINE_LINUX": "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap "
            "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap transparent_hugepage=always",
            "GRUB_CMDLINE_LINUX_DEFAULT": None,
        },
        "grub_cmdline_params": {**NO_CMDLINE_PARAMS, "transparent_hugepage": "always"},
        "reason": None,
    }


# ---- a kernel without THP -------------------------------------------------------------------------


def test_kernel_without_thp_is_unsupported_with_reason_and_its_thp_meminfo_lines_are_null():
    facts = facts_of("no-thp")
    assert facts["thp"] == {
        "supported": False,
        "reason": "/sys/kernel/mm/transparent_hugepage is absent: this kernel was built without "
        "transparent hugepage support",
        "enabled": None,
        "enabled_choices": [],
        "defrag": None,
        "defrag_choices": [],
        "khugepaged_defrag": None,
        "shmem_enabled": None,
        "shmem_enabled_choices": [],
        "hpage_pmd_size_kb": None,
        "sizes": {},
    }
    assert (facts["meminfo_kb"]["AnonHugePages"], facts["meminfo_kb"]["FileHugePages"]) == (None, None)
    assert facts["meminfo_kb"]["MemTotal"] == 24683656
    assert facts["meminfo_reason"] == "/proc/meminfo has no line for AnonHugePages, ShmemHugePages, FileHugePages"
    assert facts["hugepages"]["sizes"]["2048kB"] == pool(2048)


# ---- 1 GiB default hugepages ----------------------------------------------------------------------


def test_1g_default_size_is_what_meminfo_and_the_cmdline_report():
    facts = facts_of("1g-default")
    assert facts["hugepages"]["default_size_kb"] == 1048576
    assert facts["hugepages"]["sizes"]["1048576kB"] == pool(1048576, total=2, free=1, rsvd=1)
    meminfo = facts["meminfo_kb"]
    assert {key: meminfo[key] for key in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "Hugetlb")} == {
        "HugePages_Total": 2,
        "HugePages_Free": 1,
        "HugePages_Rsvd": 1,
        "Hugetlb": 2097152,
    }
    kernel = facts["kernel"]
    assert kernel["cmdline_params"] == {
        **NO_CMDLINE_PARAMS,
        "transparent_hugepage": "madvise",
        "hugepages": "2",
        "hugepagesz": "1G",
        "default_hugepagesz": "1G",
    }
    assert kernel["cmdline_hugepage_pools"] == [{"hugepagesz": "1G", "size_kb": 1048576, "hugepages": "2"}]
    assert facts["allocator"]["ld_so_preload"] == ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"]


def test_sysctl_files_apply_in_systemd_order_with_etc_masking_run_and_dev_null_masking_vendor():
    tuners = facts_of("1g-default")["tuners"]
    # /run's 60-hugepages.conf (4) is masked by /etc's, the vendor's 64 by a /dev/null link, and
    # /etc/sysctl.conf is read once, through the 99-sysctl.conf link to it.
    assert tuners["sysctl_overrides"] == {
        "vm.nr_hugepages": ["/etc/sysctl.d/60-hugepages.conf"],
        "vm.swappiness": ["/etc/sysctl.d/99-sysctl.conf"],
    }
    assert tuners["sysctl_values"] == {"vm.nr_hugepages": "2", "vm.swappiness": "1"}


def test_tuned_profile_includes_apply_first_so_the_including_profile_wins():
    tuners = facts_of("1g-default")["tuners"]
    assert tuners["tuned_active_profile"] == "virtual-guest"
    assert tuners["tuned_files"] == [
        "/usr/lib/tuned/throughput-performance/tuned.conf",
        "/usr/lib/tuned/virtual-guest/tuned.conf",
    ]
    assert tuners["tuned_settings"] == {"sysctl.vm.swappiness": "30"}


def test_grub_d_snippets_extend_the_default_cmdline():
    tuners = facts_of("1g-default")["tuners"]
    assert tuners["grub_files"] == ["/etc/default/grub", "/etc/default/grub.d/60-preflight-thp.cfg"]
    assert tuners["grub_cmdline"] == {
        "GRUB_CMDLINE_LINUX": "default_hugepagesz=1G hugepagesz=1G hugepages=2",
        "GRUB_CMDLINE_LINUX_DEFAULT": "quiet transparent_hugepage=madvise",
    }
    assert tuners["grub_cmdline_params"]["default_hugepagesz"] == "1G"
    assert tuners["grub_cmdline_params"]["transparent_hugepage"] == "madvise"


# ---- absent and broken files ----------------------------------------------------------------------


def test_empty_root_gives_nulls_and_reasons_never_an_exception(tmp_path):
    facts = gather(root=str(tmp_path), gpus=False)
    assert facts["thp"]["supported"] is False
    assert facts["hugepages"] == {
        "default_size_kb": None,
        "sizes": {},
        "reason": "/sys/kernel/mm/hugepages is absent: this kernel has no hugetlbfs support",
    }
    assert set(facts["meminfo_kb"].values()) == {None}
    assert facts["meminfo_reason"] == "/proc/meminfo: not found"
    assert facts["numa"] == {
        "nodes": [],
        "reason": "/sys/devices/system/node is absent: this kernel was built without NUMA support",
    }
    assert facts["kernel"] == {
        "release": None,
        "version": None,
        "cmdline": None,
        "cmdline_params": NO_CMDLINE_PARAMS,
        "cmdline_hugepage_pools": [],
        "reason": "/proc/sys/kernel/osrelease: not found; /proc/sys/kernel/version: not found; "
        "/proc/cmdline: not found",
    }
    assert facts["cpu"]["count"] is None
    assert set(facts["cpu"]["flags"].values()) == {None}
    assert facts["cpu"]["reason"] == "/proc/cpuinfo: not found"
    assert facts["allocator"] == {"ld_so_preload": [], "jemalloc_paths": [], "tcmalloc_paths": []}
    assert facts["gpus"] == []
    assert facts["gpus_reason"] == "GPU facts not requested (gpus=false)"


def test_thp_dir_missing_some_files_names_each_one(tmp_path):
    thp = tmp_path / "sys/kernel/mm/transparent_hugepage"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("always [madvise] never\n")
    facts = gather(root=str(tmp_path), gpus=False)["thp"]
    assert (facts["supported"], facts["enabled"], facts["defrag"], facts["khugepaged_defrag"]) == (
        True,
        "madvise",
        None,
        None,
    )
    assert facts["reason"] == (
        "/sys/kernel/mm/transparent_hugepage/defrag: not found; "
        "/sys/kernel/mm/transparent_hugepage/shmem_enabled: not found; "
        "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size: not found; "
        "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag: not found"
    )


def test_unreadable_file_gives_the_os_error_as_reason(tmp_path):
    (tmp_path / "proc/cmdline").mkdir(parents=True)
    kernel = gather(root=str(tmp_path), gpus=False)["kernel"]
    assert kernel["cmdline"] is None
    assert "/proc/cmdline: Is a directory" in kernel["reason"]


def test_tuned_include_loop_and_missing_profile_are_reasons_not_crashes(tmp_path):
    (tmp_path / "etc/tuned").mkdir(parents=True)
    (tmp_path / "etc/tuned/active_profile").write_text("loop-a ghost\n")
    for name, include in (("loop-a", "loop-b"), ("loop-b", "loop-a")):
        profile = tmp_path / f"etc/tuned/{name}"
        profile.mkdir()
        (profile / "tuned.conf").write_text(f"[main]\ninclude={include}\n[vm]\ntransparent_hugepages={name}\n")
    tuners = gather(root=str(tmp_path), gpus=False)["tuners"]
    assert tuners["tuned_settings"] == {"vm.transparent_hugepages": "loop-a"}
    assert tuners["reason"] == (
        "tuned profile loop-a: include loop through loop-a -> loop-b; "
        "tuned profile ghost: no tuned.conf in /etc/tuned/profiles, /etc/tuned, /usr/lib/tuned/profiles, /usr/lib/tuned"
    )


# ---- parsers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("always [madvise] never\n", ("madvise", ["always", "madvise", "never"])),
        ("[always] inherit madvise never", ("always", ["always", "inherit", "madvise", "never"])),
        ("always madvise never", (None, ["always", "madvise", "never"])),
        (None, (None, [])),
    ],
)
def test_parse_choices_returns_the_bracketed_word_and_all_words(text, expected):
    assert parse_choices(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("always [madvise] never\n", ("madvise", ["always", "madvise", "never"])),
        ("1\n", ("1", [])),
        ("4096 8192", ("4096 8192", [])),
        ("performance", ("performance", [])),
    ],
)
def test_parse_tunable_reads_a_plain_value_file_as_its_whole_value(text, expected):
    assert module_util("preflight.core.sysfs").parse_tunable(text) == expected


def test_cpulists_round_trip_in_the_kernels_notation():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("") == []
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert format_cpulist([5]) == "5"
    assert format_cpulist([]) == ""


def test_cmdline_split_keeps_double_quoted_spaces_and_pairs_pools_with_their_size():
    assert split_cmdline('a=1  dyndbg="file x.c +p" b') == ["a=1", "dyndbg=file x.c +p", "b"]
    params, pools = cmdline_facts("hugepages=512 hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=1024 -- hugepages=9")
    assert pools == [
        {"hugepagesz": None, "size_kb": None, "hugepages": "512"},
        {"hugepagesz": "1G", "size_kb": 1048576, "hugepages": "4"},
        {"hugepagesz": "2M", "size_kb": 2048, "hugepages": "1024"},
    ]
    assert (params["hugepages"], params["hugepagesz"]) == ("1024", "2M")


def test_kernel_params_treat_dashes_and_underscores_alike():
    params, _ = cmdline_facts("default-hugepagesz=1G transparent_hugepage=never")
    assert (params["default_hugepagesz"], params["transparent_hugepage"]) == ("1G", "never")


@pytest.mark.parametrize(
    ("text", "kb"), [("1G", 1048576), ("2M", 2048), ("2048k", 2048), ("2097152", 2048), ("x", None), (None, None)]
)
def test_parse_size_kb_follows_kernel_memparse(text, kb):
    assert parse_size_kb(text) == kb
