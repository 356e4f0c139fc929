"""core/jemalloc_verify.py: what roles/jemalloc's read-back proves, the report's rows and texts; called
directly, without Ansible (the role's tasks used to decide this in Jinja)."""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

jv = module_util("preflight.core.jemalloc_verify")

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
UNIT = "preflight-vllm.service"
DROPIN = f"/etc/systemd/system/{UNIT}.d/60-preflight-jemalloc.conf"
CONF = "background_thread:true"
MAPS_WITH_LIB = f"7f00-7f10 r-xp 00000000 08:01 42 {LIB}\n"
SERVICE = {
    "name": "preflight-vllm",
    "unit": UNIT,
    "dropin_path": DROPIN,
    "changed": True,
    "before_env": {},
}


def run(**overrides) -> dict:
    """A converged host without systemd: the library loads, the service cannot be checked."""
    base = {
        "plan": {
            "package": {"installed": True, "library_path": LIB, "library_realpath": LIB},
            "services": [SERVICE],
            "ld_so_preload": {"managed": False, "path": "/etc/ld.so.preload", "lines": [], "desired": None},
            "systemd_running": False,
            "conflicts": [],
        },
        "installed_before": True,
        "package_changed": False,
        "preload_check": {"stdout": MAPS_WITH_LIB, "stderr": ""},
        "system_check": {"skipped": True},
        "services_read": {},
        "restart_units": [UNIT],
        "enabled": True,
        "check_mode": False,
        "package": "libjemalloc2",
        "malloc_conf": CONF,
        "scope": "service",
        "restart_services": True,
    }
    return base | overrides


def with_systemd(maps: str | None, stdout: str = "LoadState=loaded\nActiveState=active\nMainPID=4242") -> dict:
    plan = run()["plan"] | {"systemd_running": True}
    return run(plan=plan, services_read={UNIT: {"show": stdout, "maps": maps}})


@pytest.mark.parametrize(
    ("the_run", "ok", "detail"),
    [
        (
            run(),
            True,
            f"a process started with the drop-in's LD_PRELOAD and MALLOC_CONF mapped {LIB} and jemalloc accepted "
            "MALLOC_CONF",
        ),
        (run(enabled=False), True, "jemalloc_enabled is false: nothing to load"),
        (
            run(preload_check={"skipped": True}),
            False,
            "check mode: libjemalloc2 is not installed yet, so its library could not be loaded",
        ),
        (
            run(preload_check={"stdout": "", "stderr": " ld.so: cannot open \n"}),
            False,
            f"a process started with LD_PRELOAD={LIB} did not map it (stderr: ld.so: cannot open)",
        ),
        (
            run(preload_check={"stdout": MAPS_WITH_LIB, "stderr": "<jemalloc>: Invalid conf pair: x:y\n"}),
            False,
            f"jemalloc rejected MALLOC_CONF={CONF}: <jemalloc>: Invalid conf pair: x:y",
        ),
    ],
)
def test_preload_verdict(the_run, ok, detail):
    assert jv.preload_verdict(the_run) == (ok, detail)


@pytest.mark.parametrize(
    ("the_run", "verdict"),
    [
        (run(enabled=False), (None, "jemalloc_enabled is false: drop-in removed")),
        (run(check_mode=True), (None, "check mode: nothing was applied, so nothing was verified")),
        (run(), (None, "verification skipped: systemd is not running")),
        (
            with_systemd(None, "LoadState=not-found\nMainPID=0"),
            (None, f"{UNIT} is not installed: the drop-in is in place for when it is"),
        ),
        (with_systemd(None), (None, f"{UNIT} is not running: the drop-in applies at its next start")),
        (with_systemd(MAPS_WITH_LIB), (True, f"main process 4242 maps {LIB}")),
        (with_systemd("7f00-7f10 r-xp 0 0 1 /usr/lib/libc.so.6\n"), (False, f"main process 4242 does not map {LIB}")),
        (
            with_systemd("") | {"restart_services": False},
            (False, f"main process 4242 does not map {LIB}: restart it (jemalloc_restart_services is false)"),
        ),
    ],
)
def test_service_verdict(the_run, verdict):
    assert jv.service_verdict(the_run, SERVICE) == verdict


def test_settings_rows_for_the_package_each_variable_and_ld_so_preload():
    preload = {"managed": True, "path": "/etc/ld.so.preload", "lines": [], "desired": f"{LIB}\n", "changed": True}
    the_run = run(installed_before=False, package_changed=True)
    the_run["plan"] = the_run["plan"] | {"ld_so_preload": preload}
    assert jv.settings_rows(the_run) == [
        {
            "name": "package libjemalloc2",
            "path": None,
            "desired": "installed",
            "before": "not installed",
            "after": "installed",
            "changed": True,
        },
        {
            "name": f"LD_PRELOAD for {UNIT}",
            "path": DROPIN,
            "desired": LIB,
            "before": None,
            "after": LIB,
            "changed": True,
        },
        {
            "name": f"MALLOC_CONF for {UNIT}",
            "path": DROPIN,
            "desired": CONF,
            "before": None,
            "after": CONF,
            "changed": True,
        },
        {
            "name": "ld.so.preload",
            "path": "/etc/ld.so.preload",
            "desired": f"lists {LIB}",
            "before": "empty",
            "after": LIB,
            "changed": True,
        },
    ]


def test_an_empty_malloc_conf_is_no_value():
    rows = jv.settings_rows(run(malloc_conf=""))
    assert rows[2]["name"] == f"MALLOC_CONF for {UNIT}" and rows[2]["desired"] is None


@pytest.mark.parametrize(
    ("the_run", "states"),
    [
        (run(), [("systemd_dropin", "installed")]),
        (run(restart_units=[]), [("systemd_dropin", "unchanged")]),
        (run(enabled=False), []),
    ],
)
def test_persistence_states(the_run, states):
    services = jv.service_results(the_run)
    assert [(p["method"], p["state"]) for p in jv.persistence_states(the_run, services)] == states


def test_role_result_on_a_host_without_systemd_is_verified_by_the_preload_check():
    result, failures = jv.role_result(run())
    assert failures == [] and result["verified"] is True
    assert result["services"] == [
        {
            "name": "preflight-vllm",
            "unit": UNIT,
            "dropin_path": DROPIN,
            "changed": True,
            "verified": None,
            "verify_detail": "verification skipped: systemd is not running",
        }
    ]
    assert list(result) == [
        "role",
        "enabled",
        "package",
        "library_path",
        "scope",
        "malloc_conf",
        "services",
        "settings",
        "persistence",
        "conflicts",
        "verified",
        "verify_detail",
        "reboot_required",
        "check_mode",
    ]


def test_role_result_in_check_mode_says_so_first():
    result, _ = jv.role_result(run(check_mode=True))
    assert result["verified"] is False
    assert result["verify_detail"].startswith("check mode: nothing was applied, so nothing was verified; a process")


def test_role_result_collects_every_failure():
    the_run = with_systemd("") | {"system_check": {"stdout": ""}}
    the_run["preload_check"] = {"stdout": "", "stderr": ""}
    result, failures = jv.role_result(the_run)
    assert result["verified"] is False
    assert failures == [
        f"a process started with LD_PRELOAD={LIB} did not map it (stderr: )",
        f"main process 4242 does not map {LIB}",
        "/etc/ld.so.preload lists jemalloc but a new process does not map it",
    ]
    assert result["verify_detail"].endswith(
        "; /etc/ld.so.preload: a process started with no environment does NOT map jemalloc"
    )


def test_a_preload_file_other_than_the_loaders_is_not_checked():
    the_run = run(scope="system")
    the_run["plan"] = the_run["plan"] | {
        "ld_so_preload": {"managed": True, "path": "/tmp/preload", "lines": [], "desired": LIB, "changed": True}
    }
    result, _ = jv.role_result(the_run)
    assert result["verify_detail"].endswith(
        "; /tmp/preload is not /etc/ld.so.preload (the file the loader reads), so no process was started to check it"
    )


@pytest.mark.parametrize(
    ("overrides", "plan", "wanted"),
    [
        ({}, {}, {"preload": True, "system": False, "services": False}),
        ({}, {"systemd_running": True}, {"preload": True, "system": False, "services": True}),
        ({"scope": "system"}, {}, {"preload": True, "system": True, "services": False}),
        ({"scope": "system", "check_mode": True}, {}, {"preload": True, "system": False, "services": False}),
        # a preload file other than the loader's is not what a new process reads
        ({"scope": "system"}, {"ld_so_preload": {"path": "/tmp/preload"}}, {"preload": True, "system": False,
                                                                           "services": False}),
        # nothing to load: no library known (check mode before the package is installed), or jemalloc disabled
        ({"scope": "system"}, {"package": {"installed": False, "library_path": None}},
         {"preload": False, "system": False, "services": False}),
        ({"enabled": False}, {"systemd_running": True}, {"preload": False, "system": False, "services": False}),
    ],
)
def test_reads_are_the_read_backs_verification_needs(overrides, plan, wanted):
    the_run = run(**overrides)
    the_run["plan"] = the_run["plan"] | plan
    assert jv.reads(the_run) == wanted
