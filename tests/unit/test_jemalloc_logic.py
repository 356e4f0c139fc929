"""module_utils/preflight/core/jemalloc.py (roles/jemalloc): MALLOC_CONF validation, library choice, drop-in and
ld.so.preload editing, without Ansible. The installed library's own opinion is tested too, for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.moduleutils import module_util

je = module_util("preflight.core.jemalloc")

DEFAULT_CONF = "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:10000"
# `dpkg-query -L libjemalloc2` on Debian 12 and `rpm -ql jemalloc jemalloc-devel` on EL9.
DPKG_FILES = """/.
/usr
/usr/lib/x86_64-linux-gnu
/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
/usr/share/doc/libjemalloc2/README
"""
RPM_FILES = """/usr/bin/jemalloc.sh
/usr/lib64/libjemalloc.so
/usr/lib64/libjemalloc.so.2
/usr/share/doc/jemalloc/README
"""


def test_the_default_conf_is_valid():
    assert je.validate_malloc_conf(DEFAULT_CONF) == []
    assert je.validate_malloc_conf("") == []


def test_unknown_option_is_named_with_a_suggestion_and_the_known_list():
    [error] = je.validate_malloc_conf("backgroud_thread:true")
    assert error.startswith(
        "jemalloc_malloc_conf: unknown jemalloc option 'backgroud_thread' (did you mean background_thread?); "
        "known options: abort, abort_conf, background_thread,"
    )


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        ("dirty_decay_ms:soon", "dirty_decay_ms:soon is not allowed; dirty_decay_ms takes a whole number (-1 allowed)"),
        ("thp:maybe", "thp:maybe is not allowed; thp takes one of: default, always, never"),
        ("background_thread:yes", "background_thread:yes is not allowed; background_thread takes one of: true, false"),
        ("narenas:-2", "narenas:-2 is not allowed; narenas takes a whole number >= 0"),
        ("tcache:true,tcache:false", "option 'tcache' is given twice"),
        ("prof_prefix", "prof_prefix has no value; write it as prof_prefix:<value>"),
    ],
)
def test_bad_values_name_the_option_and_what_it_takes(conf, error):
    assert je.validate_malloc_conf(conf) == [f"jemalloc_malloc_conf: {error}"]


def test_quotes_and_non_strings_are_refused():
    assert je.validate_malloc_conf('narenas:"2"') == [
        "jemalloc_malloc_conf='narenas:\"2\"' must not contain spaces, quotes or backslashes "
        "(jemalloc options never do)"
    ]
    assert je.validate_malloc_conf(True)[0].startswith("jemalloc_malloc_conf=True must be a string")


def test_the_library_is_the_runtime_soname_not_the_dev_symlink():
    assert je.pick_library(DPKG_FILES.splitlines()) == "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert je.pick_library(RPM_FILES.splitlines()) == "/usr/lib64/libjemalloc.so.2"
    assert je.pick_library(["/usr/share/doc/libjemalloc2/copyright"]) is None


def test_service_names():
    assert je.unit_name("preflight-vllm") == "preflight-vllm.service"
    assert je.unit_name("vllm@0.service") == "vllm@0.service"
    assert je.validate_services(["ok", "bad name", "x.socket", "ok.service"]) == [
        "jemalloc_services[1]='bad name' is not a systemd unit name "
        "(letters, digits and : _ . @ - only, e.g. preflight-vllm or vllm@0.service)",
        "jemalloc_services[2]='x.socket': only .service units run a process to preload",
        "jemalloc_services=['ok', 'bad name', 'x.socket', 'ok.service'] names a service twice",
    ]


def test_dropin_environment_reads_back_as_systemd_would():
    text = je.dropin_content("/usr/lib64/libjemalloc.so.2", DEFAULT_CONF)
    assert je.parse_environment(text) == {"LD_PRELOAD": "/usr/lib64/libjemalloc.so.2", "MALLOC_CONF": DEFAULT_CONF}
    assert je.parse_environment('Environment="A=1" B=2\nEnvironment=C=3') == {"A": "1", "B": "2", "C": "3"}
    assert "MALLOC_CONF" not in je.parse_environment(je.dropin_content("/l.so.2", ""))


def test_preload_file_edits_keep_every_other_byte():
    lib = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    assert je.preload_content("/lib/other.so", lib, True) == f"/lib/other.so\n{lib}\n"
    assert je.preload_content(f"/lib/other.so\n{lib}\n", lib, True) == f"/lib/other.so\n{lib}\n"
    assert je.preload_content(f"# keep\n{lib}\n/lib/other.so", lib, False) == "# keep\n/lib/other.so"
    assert je.preload_content(None, lib, True) == f"{lib}\n"


@pytest.mark.skipif(
    not Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2").exists(), reason="libjemalloc2 not installed"
)
def test_every_option_the_role_allows_is_one_jemalloc_parses():
    """Each known name, given a valid value, either is taken by the installed library or is one that only
    builds with that feature know (the role then refuses it through the library itself)."""
    build_dependent = {"lg_san_uaf_align", "log", "utrace", "xmalloc"}
    samples = {"int": "1", "uint": "1", "text": "1"}
    special = {
        "bin_shards": "1-160:16",
        "stats_print_opts": "J",
        "stats_interval_opts": "J",
        "prof_prefix": "jeprof",
        "hpa_dirty_mult": "0.25",
        "hpa_hugification_threshold_ratio": "0.9",
        "slab_sizes": "default",
        "stats_interval": "-1",
        "lg_san_uaf_align": "-1",
    }
    refused = set()
    for name, allowed in je.OPTIONS.items():
        value = special.get(name) or (allowed[-1] if isinstance(allowed, tuple) else samples[allowed])
        if name == "percpu_arena":
            value = "disabled"
        env = {
            **os.environ,
            "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "MALLOC_CONF": f"{name}:{value}",
        }
        err = subprocess.run(["/bin/true"], env=env, capture_output=True, text=True).stderr
        if "Invalid conf" in err:
            refused.add(name)
    assert refused <= build_dependent


def _request(**overrides) -> dict:
    base = {
        "package": "libjemalloc2",
        "services": ["preflight-vllm"],
        "malloc_conf": DEFAULT_CONF,
        "enabled": True,
        "scope": "service",
        "unit_dir": "/etc/systemd/system",
        "ld_so_preload": "/etc/ld.so.preload",
    }
    return base | overrides


def test_plan_reads_the_units_through_the_tree_and_reports_other_settings(tmp_path):
    planner = module_util("preflight.core.jemalloc_plan")
    tree = module_util("preflight.core.tree").Tree(str(tmp_path))
    dropins = tmp_path / "etc/systemd/system/preflight-vllm.service.d"
    dropins.mkdir(parents=True)
    (dropins / "90-operator.conf").write_text('[Service]\nEnvironment="MALLOC_CONF=narenas:2"\n')
    (tmp_path / "etc/ld.so.preload").write_text("/lib/other.so\n")
    lib = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"

    planned = planner.plan(tree, _request(), lib, None)

    [service] = planned["services"]
    assert service["desired"] == je.dropin_content(lib, DEFAULT_CONF) and service["changed"]
    assert service["dropin_dir_exists"] and service["current"] is None
    assert planned["conflicts"] == [
        {
            "source": "/etc/systemd/system/preflight-vllm.service.d/90-operator.conf",
            "setting": "preflight-vllm.service environment",
            "value": "MALLOC_CONF=narenas:2",
            "effect": "a drop-in sorted after Preflight's: its value wins",
        },
        {
            "source": "/etc/ld.so.preload",
            "setting": "ld.so.preload",
            "value": "/lib/other.so",
            "effect": "preloaded into every process on the host, the services included",
        },
    ]
    assert planned["record_needed"] and planned["backups"] == []
    assert planned["snapshot"]["files"] == {
        service["dropin_path"]: {"kind": "file", "role": "dropin", "before": None, "mode": "0644",
                                 "written": [service["desired"]]}
    }
    # Once recorded, an entry keeps its first value and nothing new is backed up.
    again = planner.plan(tree, _request(), lib, planned["snapshot"])
    assert again["snapshot"] == planned["snapshot"] and again["record_needed"] is False
