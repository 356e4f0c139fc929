"""What roles/jemalloc proved after wiring: whether the library loads with the drop-in's environment, whether
each running service maps it, what /etc/ld.so.preload does; and the settings rows, persistence states and
verify_detail of the result the report reads (preflight_role_results.jemalloc).

Pure functions, called by roles/jemalloc/library/jemalloc_verify.py, which makes the reads `reads` asks for.
`run` below is the role's request, what its tasks registered and what was read:
  enabled, check_mode, package, malloc_conf, scope, restart_services  the role's variables
  plan             jemalloc_inspect's result the role wired from (package, services, ld_so_preload, ...)
  installed_before whether the package was installed before the role ran
  package_changed  whether the package task installed it (or would, in check mode)
  preload_check    `cat /proc/self/maps` started with the drop-in's LD_PRELOAD and MALLOC_CONF: stdout, stderr
                   ({"skipped": True} when not read)
  system_check     `cat /proc/self/maps` started with no environment, for ld.so.preload (or skipped)
  services_read    per unit, `show`: what `systemctl show` said (LoadState, ActiveState, MainPID) and `maps`:
                   its main process's /proc/PID/maps (None when it has no main process)
  restart_units    the units whose drop-in changed
"""

from __future__ import annotations

import re

LOADER_PRELOAD = "/etc/ld.so.preload"


def library_paths(package: dict) -> list[str]:
    """The library's path and real path, each once (the maps of a process name the real path)."""
    return list(dict.fromkeys(p for p in (package.get("library_path"), package.get("library_realpath")) if p))


def _maps(paths: list[str], text: str) -> bool:
    return any(path in text for path in paths)


def main_pid(show: str) -> str:
    """The MainPID systemctl show gives ("0" for none)."""
    match = re.search(r"MainPID=(\d+)", show or "")
    return match.group(1) if match else "0"


def reads(run: dict) -> dict:
    """Which read-backs verification makes on the node: the preload check wherever the library is known, the
    ld.so.preload check for scope system on the loader's own file (not in check mode: nothing was written), and
    each service through systemd where it runs."""
    plan = run["plan"]
    loads = bool(run["enabled"]) and plan["package"]["library_path"] is not None
    return {
        "preload": loads,
        "system": loads and run["scope"] == "system" and plan["ld_so_preload"]["path"] == LOADER_PRELOAD
        and not run["check_mode"],
        "services": bool(run["enabled"]) and plan["systemd_running"],
    }


def preload_verdict(run: dict) -> tuple[bool, str]:
    """Whether a process started with the drop-in's environment maps the library and jemalloc takes MALLOC_CONF."""
    check = run["preload_check"]
    paths = library_paths(run["plan"]["package"])
    maps_has_lib = "stdout" in check and _maps(paths, check["stdout"])
    stderr = check.get("stderr") or ""
    complaints = [line for line in stderr.splitlines() if "<jemalloc>" in line]
    ok = maps_has_lib and not complaints
    if not run["enabled"]:
        return ok, "jemalloc_enabled is false: nothing to load"
    if check.get("skipped"):
        return ok, f"check mode: {run['package']} is not installed yet, so its library could not be loaded"
    if not maps_has_lib:
        library = run["plan"]["package"].get("library_path")
        return ok, f"a process started with LD_PRELOAD={library} did not map it (stderr: {stderr.strip()})"
    if complaints:
        return ok, f"jemalloc rejected MALLOC_CONF={run['malloc_conf']}: {'; '.join(complaints)}"
    return ok, (
        f"a process started with the drop-in's LD_PRELOAD and MALLOC_CONF mapped {paths[-1]} "
        "and jemalloc accepted MALLOC_CONF"
    )


def system_verdict(run: dict) -> bool | None:
    """With ld.so.preload checked: whether a process started with no environment maps the library."""
    check = run["system_check"]
    if check.get("skipped"):
        return None
    return _maps(library_paths(run["plan"]["package"]), check.get("stdout") or "")


def service_verdict(run: dict, service: dict) -> tuple[bool | None, str]:
    """Whether the service's main process maps the library; None when that could not be checked, and why."""
    unit = service["unit"]
    read = run["services_read"].get(unit) or {}
    show, maps = read.get("show") or "", read.get("maps")
    paths = library_paths(run["plan"]["package"])
    if not run["enabled"]:
        return None, "jemalloc_enabled is false: drop-in removed"
    if run["check_mode"]:
        return None, "check mode: nothing was applied, so nothing was verified"
    if not run["plan"]["systemd_running"]:
        return None, "verification skipped: systemd is not running"
    if "LoadState=not-found" in show:
        return None, f"{unit} is not installed: the drop-in is in place for when it is"
    if maps is None:
        return None, f"{unit} is not running: the drop-in applies at its next start"
    pid = main_pid(show)
    if _maps(paths, maps):
        return True, f"main process {pid} maps {paths[-1]}"
    hint = "" if run["restart_services"] else ": restart it (jemalloc_restart_services is false)"
    return False, f"main process {pid} does not map {paths[-1]}{hint}"


def service_results(run: dict) -> list[dict]:
    out = []
    for service in run["plan"]["services"]:
        verified, detail = service_verdict(run, service)
        out.append(
            {
                "name": service["name"],
                "unit": service["unit"],
                "dropin_path": service["dropin_path"],
                "changed": service["unit"] in run["restart_units"],
                "verified": verified,
                "verify_detail": detail,
            }
        )
    return out


def settings_rows(run: dict) -> list[dict]:
    """The report's rows: the package, LD_PRELOAD and MALLOC_CONF of each service, ld.so.preload."""
    plan, enabled, library = run["plan"], run["enabled"], run["plan"]["package"]["library_path"]
    installed_after = plan["package"]["installed"] or (run["check_mode"] and run["package_changed"])
    rows = [
        {
            "name": f"package {run['package']}",
            "path": None,
            "desired": "installed" if enabled else "left as it is",
            "before": "installed" if run["installed_before"] else "not installed",
            "after": "installed" if installed_after else "not installed",
            "changed": run["package_changed"],
        }
    ]
    for service in plan["services"]:
        for var in ("LD_PRELOAD", "MALLOC_CONF"):
            desired = None if not enabled else (library if var == "LD_PRELOAD" else (run["malloc_conf"] or None))
            before = service["before_env"].get(var)
            rows.append(
                {
                    "name": f"{var} for {service['unit']}",
                    "path": service["dropin_path"],
                    "desired": desired,
                    "before": before,
                    "after": desired if service["changed"] else before,
                    "changed": service["changed"] and desired != before,
                }
            )
    preload = plan["ld_so_preload"]
    if preload["managed"]:
        rows.append(
            {
                "name": "ld.so.preload",
                "path": preload["path"],
                "desired": ("lists " if enabled else "does not list ") + str(library),
                "before": " ".join(preload["lines"]) or "empty",
                "after": " ".join((preload["desired"] or "").split()) or "empty",
                "changed": preload["changed"],
            }
        )
    return rows


def persistence_states(run: dict, services: list[dict]) -> list[dict]:
    if not run["enabled"]:
        return []
    out = [
        {
            "method": "systemd_dropin",
            "path": service["dropin_path"],
            "state": "installed" if service["changed"] else "unchanged",
            "detail": f"LD_PRELOAD and MALLOC_CONF for {service['unit']} at every start of the service",
        }
        for service in services
    ]
    preload = run["plan"]["ld_so_preload"]
    if preload["managed"]:
        out.append(
            {
                "method": "ld.so.preload",
                "path": preload["path"],
                "state": "installed" if preload["changed"] else "unchanged",
                "detail": "every dynamically linked process on the host loads jemalloc",
            }
        )
    return out


def verify_detail(run: dict, preload_detail: str, system_ok: bool | None) -> str:
    preload = run["plan"]["ld_so_preload"]
    detail = (
        "check mode: nothing was applied, so nothing was verified; " if run["check_mode"] else ""
    ) + preload_detail
    if system_ok is not None:
        detail += f"; {LOADER_PRELOAD}: a process started with no environment {'maps' if system_ok else 'does NOT map'}"
        detail += " jemalloc"
    if preload["managed"] and preload["path"] != LOADER_PRELOAD:
        detail += (
            f"; {preload['path']} is not {LOADER_PRELOAD} (the file the loader reads), so no process was started "
            "to check it"
        )
    return detail


def role_result(run: dict) -> tuple[dict, list[str]]:
    """preflight_role_results.jemalloc and, when it did not verify, the reasons that fail the role."""
    preload_ok, preload_detail = preload_verdict(run)
    system_ok = system_verdict(run)
    services = service_results(run)
    failed_services = [s["verify_detail"] for s in services if s["verified"] is False]
    verified = (
        not run["check_mode"] and (not run["enabled"] or preload_ok) and not failed_services and system_ok is not False
    )
    failures = (
        ([preload_detail] if run["enabled"] and not preload_ok else [])
        + failed_services
        + ([f"{LOADER_PRELOAD} lists jemalloc but a new process does not map it"] if system_ok is False else [])
    )
    result = {
        "role": "jemalloc",
        "enabled": run["enabled"],
        "package": run["package"],
        "library_path": run["plan"]["package"]["library_path"],
        "scope": run["scope"],
        "malloc_conf": run["malloc_conf"],
        "services": services,
        "settings": settings_rows(run),
        "persistence": persistence_states(run, services),
        "conflicts": run["plan"]["conflicts"],
        "verified": verified,
        "verify_detail": verify_detail(run, preload_detail, system_ok),
        "reboot_required": False,
        "check_mode": run["check_mode"],
    }
    return result, failures
