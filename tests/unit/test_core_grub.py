"""module_utils/preflight/core/grub.py: /etc/default/grub read as the shell reads it, and the one editor of its
kernel command line (the thp and hugepages roles both edit through it).

Every edited file is checked by the shell itself: `bash -n`, then sourced by bash (and by dash, /bin/sh on
Debian and Ubuntu, which is what grub-mkconfig sources it with) and the variable's words compared."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.moduleutils import module_util

grub = module_util("preflight.core.grub")
tuners = module_util("preflight.core.tuners")
hugepages_persist = module_util("preflight.core.hugepages_persist")
Tree = module_util("preflight.core.tree").Tree

PATH = "/etc/default/grub"
THP = grub.option_selector("transparent_hugepage")
HUGE = hugepages_persist.hugepages_selector(1048576)
SHELLS = [shell for shell in ("bash", "dash") if shutil.which(shell)]

DEBIAN_12 = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Debian} ) 2>/dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""

# Uncomment to enable BadRAM filtering, modify to suit your needs
# This works with Linux (no patch required) and with any kernel that obtains
# the memory map information from GRUB (GNU Mach, kernel of FreeBSD ...)
#GRUB_BADRAM="0x01234567,0xfefefefe,0x89abcdef,0xefefefef"

# Uncomment to disable graphical terminal
#GRUB_TERMINAL=console
"""
UBUNTU_2204 = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT_STYLE=hidden
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
GRUB_CMDLINE_LINUX=""
"""
ROCKY_9 = """\
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR="$(sed 's, release .*$,,g' /etc/system-release)"
GRUB_DEFAULT=saved
GRUB_DISABLE_SUBMENU=true
GRUB_TERMINAL_OUTPUT="console"
GRUB_CMDLINE_LINUX="crashkernel=auto resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rhgb quiet"
GRUB_DISABLE_RECOVERY="true"
GRUB_ENABLE_BLSCFG=true
"""
ROCKY = "crashkernel=auto resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rhgb quiet".split()
MADVISE = "transparent_hugepage=madvise"

# (what, the file, the words GRUB_CMDLINE_LINUX has after Preflight puts transparent_hugepage=madvise there)
REAL_WORLD = [
    ("debian 12 as shipped", DEBIAN_12, [MADVISE]),
    ("ubuntu 22.04 as shipped", UBUNTU_2204, [MADVISE]),
    ("rocky 9 as shipped", ROCKY_9, [*ROCKY, MADVISE]),
    ("rocky 9 with an older option", ROCKY_9.replace("rhgb quiet", "transparent_hugepage=never rhgb quiet"),
     [*ROCKY[:3], MADVISE, "rhgb", "quiet"]),
    ("double quotes and a trailing comment", 'GRUB_CMDLINE_LINUX="quiet splash" # keep\n',
     ["quiet", "splash", MADVISE]),
    ("single quotes", "GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 quiet'\n",
     ["console=ttyS0,115200n8", "quiet", MADVISE]),
    ("unquoted", "GRUB_CMDLINE_LINUX=quiet\n", ["quiet", MADVISE]),
    ("empty and unquoted", "GRUB_CMDLINE_LINUX=\n", [MADVISE]),
    ("export", 'export GRUB_CMDLINE_LINUX="quiet"\n', ["quiet", MADVISE]),
    ("indented export with a comment", '  export GRUB_CMDLINE_LINUX="a b"   # x\n', ["a", "b", MADVISE]),
    ("concatenated quoting", "GRUB_CMDLINE_LINUX='quiet '\"splash\"' nomodeset'\n",
     ["quiet", "splash", "nomodeset", MADVISE]),
    ("escaped quote and dollar", 'GRUB_CMDLINE_LINUX="dyndbg=\\"file a.c +p\\" x=\\$y"\n',
     ['dyndbg="file', 'a.c', '+p"', "x=$y", MADVISE]),
    ("backslash escapes unquoted", "GRUB_CMDLINE_LINUX=quiet\\ splash\n", ["quiet", "splash", MADVISE]),
    ("hash inside a word", 'GRUB_CMDLINE_LINUX="quiet"#not-a-comment\n', ["quiet#not-a-comment", MADVISE]),
    ("the last of several assignments wins", 'GRUB_CMDLINE_LINUX="old"\nGRUB_CMDLINE_LINUX="new"\n',
     ["new", MADVISE]),
    ("adds to itself",
     'GRUB_CMDLINE_LINUX="a transparent_hugepage=never"\nGRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX b"\n',
     ["a", MADVISE, "b"]),
    ("the _DEFAULT variable is not the plain one", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet transparent_hugepage=never"\n'
     'GRUB_CMDLINE_LINUX="ro"\n', ["ro", MADVISE]),
    ("takes a variable of the file", 'EXTRA="console=ttyS0"\nGRUB_CMDLINE_LINUX="$EXTRA ${EXTRA}x"\n',
     ["console=ttyS0", "console=ttyS0x", MADVISE]),
    ("no assignment at all", "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5", [MADVISE]),
    ("inside a function it is not assigned here",
     'f() {\n  GRUB_CMDLINE_X=1\n}\nGRUB_CMDLINE_LINUX="quiet"\n', ["quiet", MADVISE]),
]


def sourced(text: str, variable: str, shell: str, tmp_path, before: list[str] = ()) -> list[str]:
    """The variable's words after `shell` sources the files, in order, as grub-mkconfig does."""
    paths = []
    for index, content in enumerate([*before, text]):
        path = tmp_path / f"grub{index}"
        path.write_text(content)
        paths.append(path)
    subprocess.run([shell, "-n", str(paths[-1])], check=True)
    script = "".join(f'. "{p}"\n' for p in paths) + f'printf "%s" "${variable}"'
    return subprocess.run([shell, "-c", script], check=True, capture_output=True, text=True).stdout.split()


@pytest.mark.parametrize(("text", "words"), [row[1:] for row in REAL_WORLD], ids=[row[0] for row in REAL_WORLD])
def test_real_world_files_are_edited_so_the_shell_sees_exactly_the_wanted_words(text, words, tmp_path):
    edit = grub.apply(text, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    for shell in SHELLS:
        assert sourced(edit["text"], "GRUB_CMDLINE_LINUX", shell, tmp_path) == words, shell
        assert sourced(text, "GRUB_CMDLINE_LINUX_DEFAULT", shell, tmp_path) == sourced(
            edit["text"], "GRUB_CMDLINE_LINUX_DEFAULT", shell, tmp_path)
    assert grub.cmdline_values([(PATH, edit["text"])])["GRUB_CMDLINE_LINUX"].split() == words
    assert grub.revert(edit["text"], PATH, edit["record"])["text"] == text
    again = grub.apply(edit["text"], PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert (again["changed"], again["record"], again["text"]) == (False, None, edit["text"])


def test_only_the_edited_line_changes_and_only_preflight_s_option_in_it():
    edit = grub.apply(DEBIAN_12, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert edit["text"] == DEBIAN_12.replace('GRUB_CMDLINE_LINUX=""', f'GRUB_CMDLINE_LINUX="{MADVISE}"')
    rocky = grub.apply(ROCKY_9, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])["text"]
    assert rocky == ROCKY_9.replace('rhgb quiet"', f'rhgb quiet {MADVISE}"')


def test_defect_quoted_value_with_a_trailing_comment_keeps_every_option():
    """Issue 15 defect 1: the old edit made GRUB_CMDLINE_LINUX=""quiet splash" # keep transparent_hugepage=madvise",
    which the shell reads as the single word 'quiet'."""
    edit = grub.apply('GRUB_CMDLINE_LINUX="quiet splash" # keep\n', PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert edit["text"] == f'GRUB_CMDLINE_LINUX="quiet splash {MADVISE}" # keep\n'


def test_defect_an_export_line_is_edited_not_followed_by_a_second_assignment():
    """Issue 15 defect 1: the old edit did not see `export GRUB_CMDLINE_LINUX=` and appended another line."""
    edit = grub.apply('export GRUB_CMDLINE_LINUX="quiet"\n', PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert edit["text"] == f'export GRUB_CMDLINE_LINUX="quiet {MADVISE}"\n'
    huge = hugepages_persist.edit_grub_cmdline('export GRUB_CMDLINE_LINUX="quiet" # x\n', PATH, "1G",
                                               ["hugepagesz=1G", "hugepages=4"])
    assert huge["text"] == 'export GRUB_CMDLINE_LINUX="quiet hugepagesz=1G hugepages=4" # x\n'


def test_ubuntu_grub_d_files_that_add_to_the_default_are_read_as_grub_mkconfig_sources_them(tmp_path):
    cloud = '# CLOUD_IMG: This file was created/modified by the Cloud Image build process\n' \
            'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n'
    kdump = 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT crashkernel=512M-:192M"\n'
    values = grub.cmdline_values([(PATH, UBUNTU_2204), ("/etc/default/grub.d/50-cloudimg-settings.cfg", cloud),
                                  ("/etc/default/grub.d/kdump-tools.cfg", kdump)])
    for shell in SHELLS:
        assert sourced(kdump, "GRUB_CMDLINE_LINUX_DEFAULT", shell, tmp_path, [UBUNTU_2204, cloud]) == values[
            "GRUB_CMDLINE_LINUX_DEFAULT"].split()
    assert values == {"GRUB_CMDLINE_LINUX": "", "GRUB_CMDLINE_LINUX_DEFAULT": "console=tty1 console=ttyS0 "
                      "crashkernel=512M-:192M"}
    edit = grub.apply(kdump, "/etc/default/grub.d/kdump-tools.cfg", "GRUB_CMDLINE_LINUX_DEFAULT", THP, [MADVISE])
    assert edit["text"] == kdump.replace('192M"', f'192M {MADVISE}"')


def test_node_facts_read_grub_defaults_with_the_same_parser(tmp_path):
    (tmp_path / "etc/default/grub.d").mkdir(parents=True)
    (tmp_path / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="quiet splash" # keep\n')
    (tmp_path / "etc/default/grub.d/kdump.cfg").write_text('GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX crashkernel=1G"\n')
    values, files = tuners.grub_facts(Tree(str(tmp_path)))
    assert values == {"GRUB_CMDLINE_LINUX": "quiet splash crashkernel=1G", "GRUB_CMDLINE_LINUX_DEFAULT": None}
    assert files == ["/etc/default/grub", "/etc/default/grub.d/kdump.cfg"]
    (tmp_path / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="`cat /x`"\n')
    problems = []
    assert tuners.grub_facts(Tree(str(tmp_path)), problems)[0] == {"GRUB_CMDLINE_LINUX": None,
                                                                    "GRUB_CMDLINE_LINUX_DEFAULT": None}
    assert problems == ["/etc/default/grub line 1: command substitution with backticks; Preflight does not edit a "
                        "line it cannot read with certainty (nothing was written): rewrite it as NAME=\"words\" or "
                        "make the change by hand"]


REFUSED = [
    ('GRUB_CMDLINE_LINUX="$(cat /etc/cmdline)"', 1, "command substitution $(...)"),
    ("GRUB_CMDLINE_LINUX=`cat /etc/cmdline`", 1, "command substitution with backticks"),
    ('GRUB_CMDLINE_LINUX="quiet', 1, "a double quote left open at the end of the line (a value over several lines)"),
    ("GRUB_CMDLINE_LINUX='quiet\nsplash'", 1, "a single quote left open at the end of the line (a value over "
     "several lines)"),
    ("GRUB_TIMEOUT='5\nGRUB_CMDLINE_LINUX=\"quiet\"\n'", 2, "GRUB_CMDLINE_LINUX is assigned inside a quoted value "
     "or continuation"),
    ('GRUB_THEME="x', 1, "a double quote is never closed (the file is not valid shell)"),
    ('GRUB_CMDLINE_LINUX="quiet \\\nsplash"', 1, "a backslash line continuation"),
    ('GRUB_CMDLINE_LINUX=quiet\\\n', 1, "a backslash line continuation"),
    ('GRUB_CMDLINE_LINUX="${EXTRA:-quiet}"', 1, "parameter expansion ${...} with an operator (only $NAME and "
     "${NAME} are read)"),
    ('GRUB_CMDLINE_LINUX="$1 quiet"', 1, "special parameter $1"),
    ("GRUB_CMDLINE_LINUX=$'quiet\\tsplash'", 1, "bash-only quoting $'...' (dash reads it differently)"),
    ('GRUB_CMDLINE_LINUX="$((1+1))"', 1, "arithmetic expansion $((...))"),
    ('GRUB_CMDLINE_LINUX="quiet"; GRUB_TIMEOUT=1', 1, "more than the assignment on the line (';' follows the value)"),
    ('GRUB_CMDLINE_LINUX+=" quiet"', 1, "GRUB_CMDLINE_LINUX is changed by a command other than NAME=value"),
    ("unset GRUB_CMDLINE_LINUX", 1, "GRUB_CMDLINE_LINUX is changed by a command other than NAME=value"),
    ('if [ -e /x ]; then\n  GRUB_CMDLINE_LINUX="quiet"\nfi', 2, "GRUB_CMDLINE_LINUX is assigned inside if ... "
     "(an if, case, loop or function: it may not run)"),
    ('set_cmdline() {\n  GRUB_CMDLINE_LINUX="quiet"\n}', 2, "GRUB_CMDLINE_LINUX is assigned inside set_cmdline() ... "
     "(an if, case, loop or function: it may not run)"),
    ("export GRUB_CMDLINE_LINUX=$EXTRA", 1, "an unquoted $NAME after export (old dash splits it into several words)"),
    ("GRUB_CMDLINE_LINUX=~/x", 1, "a leading ~ (tilde expansion)"),
    ('X="$(cat /etc/x)"\nGRUB_CMDLINE_LINUX="$X quiet"', 2, "$X is set on line 1, which cannot be read"),
]


@pytest.mark.parametrize(("text", "line", "why"), REFUSED, ids=[row[0].split("\n")[0] for row in REFUSED])
def test_lines_that_cannot_be_read_with_certainty_are_refused_naming_file_line_and_why(text, line, why):
    with pytest.raises(grub.GrubError) as refused:
        grub.apply(text + "\n", PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert str(refused.value) == (
        f"{PATH} line {line}: {why}; Preflight does not edit a line it cannot read with certainty (nothing was "
        'written): rewrite it as NAME="words" or make the change by hand'
    )


def test_an_option_brought_in_by_a_variable_is_refused_it_cannot_be_changed_on_the_line():
    text = 'THP="transparent_hugepage=never"\nGRUB_CMDLINE_LINUX="quiet $THP"\n'
    with pytest.raises(grub.GrubError) as refused:
        grub.apply(text, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert str(refused.value).startswith(f"{PATH} line 2: GRUB_CMDLINE_LINUX takes Preflight's option from $THP "
                                         "('transparent_hugepage=never')")


def test_unreadable_lines_that_do_not_set_the_command_line_are_left_alone():
    text = 'GRUB_DISTRIBUTOR="$(lsb_release -i -s)"\nGRUB_THEME=`x`\nGRUB_CMDLINE_LINUX="quiet"\n'
    assert grub.apply(text, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])["text"] == text.replace(
        '"quiet"', f'"quiet {MADVISE}"')


SITE = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=\'console=ttyS0 rhgb\' # serial\n'


@pytest.mark.parametrize("order", ["thp first", "hugepages first"])
def test_site_then_operator_edit_then_rollback_leaves_the_original_plus_only_the_operator_s_edits(order):
    """Issue 15 defect 2: apply (thp, then hugepages), the operator adds a kernel option and a comment line,
    rollback of both: the file is the original plus the operator's edits, byte for byte."""
    thp = grub.apply(SITE, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    huge = hugepages_persist.edit_grub_cmdline(thp["text"], PATH, "1G", ["hugepagesz=1G", "hugepages=4"])
    applied = huge["text"]
    assert applied == SITE.replace("rhgb'", f"rhgb {MADVISE} hugepagesz=1G hugepages=4'")
    operator = applied.replace("hugepages=4'", "hugepages=4 mitigations=off'") + "# operator: mitigations off\n"
    records = [thp["record"], huge["record"]]
    for record in records if order == "thp first" else records[::-1]:
        operator = grub.revert(operator, PATH, record)["text"]
    assert operator == SITE.replace("rhgb'", "rhgb mitigations=off'") + "# operator: mitigations off\n"


def test_requoted_value_is_put_back_as_it_was_when_the_line_is_as_preflight_left_it():
    text = "GRUB_CMDLINE_LINUX=quiet\\ splash # x\n"
    edit = grub.apply(text, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert edit["text"] == f'GRUB_CMDLINE_LINUX="quiet splash {MADVISE}" # x\n'
    assert grub.revert(edit["text"], PATH, edit["record"])["text"] == text
    later = edit["text"].replace(MADVISE, f"{MADVISE} nosmt")
    assert grub.revert(later, PATH, edit["record"])["text"] == 'GRUB_CMDLINE_LINUX="quiet splash nosmt" # x\n'


def test_rollback_stops_naming_the_file_and_the_difference_when_preflight_s_option_changed():
    edit = grub.apply(ROCKY_9, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    changed = edit["text"].replace(MADVISE, "transparent_hugepage=always")
    with pytest.raises(grub.GrubError) as stopped:
        grub.revert(changed, PATH, edit["record"])
    assert str(stopped.value) == (
        f"{PATH}: GRUB_CMDLINE_LINUX no longer holds what Preflight wrote ({MADVISE}); it now has "
        "transparent_hugepage=always: the record is kept, put the options back as they were or edit the file by "
        "hand and remove the record"
    )


def test_a_later_run_replaces_preflight_s_own_option_and_rollback_restores_the_first_one():
    text = ROCKY_9.replace("rhgb quiet", "transparent_hugepage=never rhgb quiet")
    first = grub.apply(text, PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    second = grub.apply(first["text"], PATH, "GRUB_CMDLINE_LINUX", THP, ["transparent_hugepage=always"])
    record = grub.merge(first["record"], second["record"])
    assert (record["added"], record["replaced"]) == (["transparent_hugepage=always"], ["transparent_hugepage=never"])
    assert grub.revert(second["text"], PATH, record)["text"] == text


def test_an_assignment_preflight_appended_is_removed_whole():
    edit = grub.apply("GRUB_TIMEOUT=5\n", PATH, "GRUB_CMDLINE_LINUX", THP, [MADVISE])
    assert edit["text"] == f'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="{MADVISE}"\n'
    assert grub.revert(edit["text"], PATH, edit["record"])["text"] == "GRUB_TIMEOUT=5\n"


def test_an_older_record_without_added_options_is_migrated_from_the_file_as_it_is():
    now = f'GRUB_CMDLINE_LINUX="quiet {MADVISE} hugepagesz=1G hugepages=4"\n'
    record = grub.record_from(None, now, PATH, "GRUB_CMDLINE_LINUX", THP, ["transparent_hugepage=never"])
    assert grub.revert(now, PATH, record)["text"] == now.replace(MADVISE, "transparent_hugepage=never")
    with pytest.raises(grub.GrubError, match="holds 0 groups of its options"):
        grub.record_from(None, 'GRUB_CMDLINE_LINUX="quiet"\n', PATH, "GRUB_CMDLINE_LINUX", THP)


def test_preflight_writes_only_plain_options():
    with pytest.raises(grub.GrubError, match="writes only plain kernel options"):
        grub.apply("", PATH, "GRUB_CMDLINE_LINUX", THP, ['transparent_hugepage="x y"'])
