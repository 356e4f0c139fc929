"""The GRUB defaults file as the thp role edits and rolls it back (core/thp_node.py through core/grub.py), and
the reading of what else sets THP at boot, on files under a temporary root (no bootloader here)."""

from __future__ import annotations

from tests.moduleutils import module_util

thp_node = module_util("preflight.core.thp_node")
Tree = module_util("preflight.core.tree").Tree

DEBIAN_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0 transparent_hugepage=always"
"""


def node(tmp_path, files: dict[str, str]):
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return Tree(str(tmp_path))


def test_the_grub_edit_keeps_quotes_comments_and_export_and_records_what_it_replaced(tmp_path):
    text = DEBIAN_GRUB.replace('GRUB_CMDLINE_LINUX="console=ttyS0 transparent_hugepage=always"',
                               "export GRUB_CMDLINE_LINUX='console=ttyS0 transparent_hugepage=always' # serial")
    tree = node(tmp_path, {"/etc/default/grub": text})
    boot = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: f"/usr/sbin/{name}")
    assert boot["content"] == text.replace("transparent_hugepage=always", "transparent_hugepage=madvise")
    assert (boot["changed"], boot["edit"]["added"], boot["edit"]["replaced"]) == (
        True, ["transparent_hugepage=madvise"], ["transparent_hugepage=always"])
    same = thp_node.bootloader(tree, "/etc/default/grub", "always", which=lambda name: f"/usr/sbin/{name}")
    assert (same["changed"], same["edit"], same["content"]) == (False, None, text)


def test_a_grub_file_that_cannot_be_read_with_certainty_is_an_error_not_a_bootloader(tmp_path):
    tree = node(tmp_path, {"/etc/default/grub": 'GRUB_CMDLINE_LINUX="$(cat /etc/cmdline)"\n'})
    boot = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: f"/usr/sbin/{name}")
    assert (boot["kind"], boot["content"]) == (None, None)
    assert boot["error"].startswith("/etc/default/grub line 1: command substitution $(...); Preflight does not edit")


def test_rollback_takes_out_only_preflight_s_option_and_keeps_the_operator_s_later_edit(tmp_path):
    tree = node(tmp_path, {"/etc/default/grub": DEBIAN_GRUB})
    boot = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: f"/usr/sbin/{name}")
    later = boot["content"].replace("transparent_hugepage=madvise", "transparent_hugepage=madvise mitigations=off")
    later += "# operator: serial console kept\n"
    tree = node(tmp_path, {"/etc/default/grub": later})
    back = thp_node.rollback_bootloader(tree, boot["edit"], which=lambda name: f"/usr/sbin/{name}")
    assert back["content"] == DEBIAN_GRUB.replace("transparent_hugepage=always", "transparent_hugepage=always "
                                                  "mitigations=off") + "# operator: serial console kept\n"
    gone = node(tmp_path, {"/etc/default/grub": later.replace("transparent_hugepage=madvise", "")})
    stopped = thp_node.rollback_bootloader(gone, boot["edit"], which=lambda name: f"/usr/sbin/{name}")
    assert stopped["error"] == (
        "/etc/default/grub: GRUB_CMDLINE_LINUX no longer holds what Preflight wrote (transparent_hugepage=madvise); "
        "it now has none of transparent_hugepage: the record is kept, put the options back as they were or edit "
        "the file by hand and remove the record"
    )


def test_a_record_of_an_older_preflight_is_read_as_the_one_option_the_line_holds_now(tmp_path):
    tree = node(tmp_path, {"/etc/default/grub": 'GRUB_CMDLINE_LINUX="quiet transparent_hugepage=madvise"\n'})
    old = {"file": "/etc/default/grub", "variable": "GRUB_CMDLINE_LINUX", "original_option": "never"}
    back = thp_node.rollback_bootloader(tree, old, which=lambda name: f"/usr/sbin/{name}")
    assert back["content"] == 'GRUB_CMDLINE_LINUX="quiet transparent_hugepage=never"\n'
    none = thp_node.rollback_bootloader(tree, {**old, "original_option": None}, which=lambda name: "/x")
    assert none["content"] == 'GRUB_CMDLINE_LINUX="quiet"\n'


def test_thp_option_is_the_last_occurrence_as_the_kernel_reads_it():
    assert thp_node.thp_option("ro transparent_hugepage=never quiet transparent_hugepage=madvise") == "madvise"
    assert thp_node.thp_option("ro quiet") is None
    assert thp_node.thp_option("ro -- transparent_hugepage=never") is None


def test_missing_grub_defaults_file_is_reported_as_no_bootloader(tmp_path):
    info = thp_node.bootloader(Tree(str(tmp_path)), "/etc/default/grub", "madvise")
    assert (info["kind"], info["reason"]) == (
        None,
        "no bootloader config found: /etc/default/grub does not exist; only GRUB is managed",
    )


def test_grub_without_a_regenerator_is_no_bootloader_and_with_one_gives_the_line_to_write(tmp_path):
    tree = node(tmp_path, {"/etc/default/grub": DEBIAN_GRUB.replace('"quiet"', '"quiet transparent_hugepage=never"')})
    none = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: None)
    assert none["reason"] == (
        "no bootloader config found: /etc/default/grub exists but none of update-grub, grub2-mkconfig, "
        "grub-mkconfig is installed"
    )
    grub = thp_node.bootloader(tree, "/etc/default/grub", "madvise", which=lambda name: f"/usr/sbin/{name}")
    assert grub["regenerate"] == ["/usr/sbin/update-grub"]
    assert (grub["option"], grub["default_option"]) == ("always", "never")
    assert grub["content"] == DEBIAN_GRUB.replace('"quiet"', '"quiet transparent_hugepage=never"').replace(
        "transparent_hugepage=always", "transparent_hugepage=madvise")


def test_settings_read_the_bracketed_word_and_khugepaged_offers_0_and_1(tmp_path):
    base = "/sys/kernel/mm/transparent_hugepage"
    tree = node(tmp_path, {f"{base}/enabled": "always [madvise] never\n", f"{base}/defrag": "[never] always\n",
                           f"{base}/khugepaged/defrag": "1\n"})
    settings = thp_node.read_settings(tree)
    assert settings["thp_enabled"] == {"path": f"{base}/enabled", "current": "madvise",
                                       "choices": ["always", "madvise", "never"]}
    assert settings["thp_khugepaged_defrag"]["current"] == "1"
    assert settings["thp_khugepaged_defrag"]["choices"] == ["0", "1"]


def test_tuned_unit_tmpfiles_and_a_non_inheriting_size_knob_are_conflicts_but_our_own_unit_is_not(tmp_path):
    base = "/sys/kernel/mm/transparent_hugepage"
    tree = node(
        tmp_path,
        {
            "/etc/tuned/active_profile": "mine\n",
            "/etc/tuned/base/tuned.conf": "[vm]\ntransparent_hugepages=always\n",
            "/etc/tuned/mine/tuned.conf": "[main]\ninclude=base\n",
            "/etc/systemd/system/multi-user.target.wants/tuned.service": "",
            "/etc/systemd/system/preflight-thp.service": f"ExecStart=echo madvise > {base}/enabled\n",
            "/etc/tmpfiles.d/thp.conf": f"w {base}/enabled - - - - always\n",
            f"{base}/hpage_pmd_size": "2097152\n",
            f"{base}/hugepages-2048kB/enabled": "always [never] inherit madvise\n",
        },
    )
    found = thp_node.conflicts(tree, "madvise", "never", "never", {"default_option": None}, "preflight-thp.service")
    assert found == [
        "the running kernel was booted with transparent_hugepage=never (/proc/cmdline) but thp_enabled is madvise: "
        "every boot starts from never until Preflight's unit runs or the command line is changed",
        "tuned profile 'mine' sets transparent_hugepages=always (/etc/tuned/base/tuned.conf) and tuned is enabled: "
        "it applies that at every start and overrides thp_enabled=madvise; set it in a custom tuned profile or "
        "disable tuned",
        "/etc/tmpfiles.d/thp.conf writes Transparent Huge Pages settings too: at boot it may override "
        "thp_enabled=madvise and thp_defrag=never; remove it or make it agree",
        f"{base}/hugepages-2048kB/enabled is 'never', not 'inherit': pages of that size follow it, not "
        "thp_enabled=madvise",
    ]


def test_a_tuned_profile_is_no_conflict_while_tuned_is_not_enabled(tmp_path):
    tree = node(tmp_path, {"/etc/tuned/active_profile": "mine\n",
                           "/etc/tuned/mine/tuned.conf": "[vm]\ntransparent_hugepages=always\n"})
    assert thp_node.tuned_conflicts(tree, "madvise") == []
