"""What roles/jemalloc changes on one host: each service's drop-in, /etc/ld.so.preload, the other settings of
LD_PRELOAD and MALLOC_CONF that compete with them (reported, never fought), and the snapshot to record for
rollback. The host's files are read through `Tree`; the package's file list comes from the module."""

from __future__ import annotations

import os

from .jemalloc import DROPIN_NAME, dropin_content, parse_environment, preload_content, unit_name
from .jemalloc_undo import file_entries
from .tree import Tree
from .undo import RECORD_VERSION

UNIT_PATHS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


def unit_sources(tree: Tree, unit: str, unit_dir: str, ours: str) -> tuple[bool, list[dict]]:
    """Whether the unit exists, and the LD_PRELOAD/MALLOC_CONF its file and other drop-ins set."""
    found, sources = False, []
    for base in dict.fromkeys((unit_dir, *UNIT_PATHS)):
        path = os.path.join(base, unit)
        text = tree.read(path)
        if text is not None:
            found = True
            sources.append((path, text))
        dropins = os.path.join(base, unit + ".d")
        if tree.isdir(dropins):
            for name in tree.listdir(dropins) or []:
                full = os.path.join(dropins, name)
                if name.endswith(".conf") and full != ours:
                    sources.append((full, tree.read(full) or ""))
    env_sources = []
    for path, text in sources:
        env = parse_environment(text)
        picked = {k: v for k, v in env.items() if k in ("LD_PRELOAD", "MALLOC_CONF")}
        if picked:
            env_sources.append(
                {
                    "source": path,
                    "env": picked,
                    "after_ours": os.path.basename(path) > DROPIN_NAME and path.endswith(".conf"),
                }
            )
        elif "EnvironmentFile=" in text:
            env_sources.append({"source": path, "env": {}, "environment_file": True, "after_ours": False})
    return found, env_sources


def _conflict(unit: str, other: dict) -> dict:
    if other.get("environment_file"):
        effect = "EnvironmentFile= may also set LD_PRELOAD or MALLOC_CONF; check it by hand"
    elif other["after_ours"]:
        effect = "a drop-in sorted after Preflight's: its value wins"
    else:
        effect = "Preflight's drop-in comes later and wins for the variables it sets"
    return {
        "source": other["source"],
        "setting": f"{unit} environment",
        "value": " ".join(f"{k}={v}" for k, v in other["env"].items()),
        "effect": effect,
    }


def service_plans(tree: Tree, request: dict, library: str | None) -> tuple[list[dict], list[dict]]:
    """Each service's drop-in (current, desired, changed...) and the conflicts its unit carries.

    request: services, malloc_conf, enabled, unit_dir (the module's arguments)."""
    unit_dir = request["unit_dir"].rstrip("/")
    services, conflicts = [], []
    for service in request["services"]:
        unit = unit_name(service)
        dropin_dir = f"{unit_dir}/{unit}.d"
        dropin_path = f"{dropin_dir}/{DROPIN_NAME}"
        current = tree.read(dropin_path)
        if not request["enabled"]:
            desired, known = None, True
        elif library:
            desired, known = dropin_content(library, request["malloc_conf"]), True
        else:
            desired, known = None, False  # the package is not installed yet (check mode): path unknown
        unit_found, others = unit_sources(tree, unit, unit_dir, dropin_path)
        conflicts.extend(_conflict(unit, other) for other in others)
        services.append(
            {
                "name": service,
                "unit": unit,
                "dropin_dir": dropin_dir,
                "dropin_dir_exists": tree.isdir(dropin_dir),
                "dropin_path": dropin_path,
                "current": current,
                "desired": desired,
                "desired_known": known,
                "changed": (not known) or desired != current,
                "before_env": parse_environment(current or ""),
                "unit_found": unit_found,
            }
        )
    return services, conflicts


def preload_plan(tree: Tree, request: dict, library: str | None) -> tuple[dict, list[dict]]:
    """/etc/ld.so.preload as it is and as the request wants it, and the conflict it is for the service scope.

    request: ld_so_preload (the path), scope, enabled."""
    path = request["ld_so_preload"]
    text = tree.read(path)
    managed = request["scope"] == "system" and library is not None
    desired = preload_content(text, library, request["enabled"]) if managed else None
    if managed and not request["enabled"] and text is None:
        desired = None
    preload = {
        "path": path,
        "exists": text is not None,
        "content": text,
        "managed": managed,
        "desired": desired,
        "changed": managed and desired is not None and desired != text,
        "lines": [line.strip() for line in (text or "").splitlines() if line.strip()],
        "mode": f"{os.stat(tree.real(path)).st_mode & 0o7777:04o}" if text is not None else "0644",
    }
    conflicts = []
    if request["scope"] == "service" and preload["lines"]:
        conflicts.append(
            {
                "source": path,
                "setting": "ld.so.preload",
                "value": " ".join(preload["lines"]),
                "effect": "preloaded into every process on the host, the services included",
            }
        )
    return preload, conflicts


def snapshot(
    request: dict, library: str | None, services: list[dict], preload: dict, recorded: dict | None
) -> tuple[dict, list[dict]]:
    """The rollback record after this run (jemalloc_undo.py): what each file held before Preflight's first
    change and what Preflight has written to it; whether Preflight installed the package. Version 2 keeps no
    copies of files, so the list of files to back up is empty."""
    recorded = recorded or {}
    package = recorded.get("package") or {
        "name": request["package"],
        "installed_before": library is not None,
        "installed_by_preflight": False,
    }
    if request.get("installed_now"):
        package = {**package, "installed_by_preflight": True}
    snap = {
        "version": RECORD_VERSION,
        "package": package,
        "files": file_entries(recorded.get("files", {}), services, preload, library),
        "dirs": dict(recorded.get("dirs", {})),
        "services": sorted(set(recorded.get("services", [])) | {s["unit"] for s in services}),
        "state_dir_created": recorded.get("state_dir_created", not request.get("state_dir_existed", True)),
    }
    for service in services:
        snap["dirs"].setdefault(service["dropin_dir"], service["dropin_dir_exists"])
    return snap, []


def plan(tree: Tree, request: dict, library: str | None, recorded: dict | None) -> dict:
    """Everything roles/jemalloc will change on this host, and what to record first."""
    services, conflicts = service_plans(tree, request, library)
    preload, preload_conflicts = preload_plan(tree, request, library)
    pending = (request["enabled"] and not library) or any(s["changed"] for s in services) or preload["changed"]
    snap, new_backups = snapshot(request, library, services, preload, recorded)
    return {
        "services": services,
        "ld_so_preload": preload,
        "conflicts": conflicts + preload_conflicts,
        "pending": bool(pending),
        "snapshot": snap,
        "backups": new_backups,
        "record_needed": bool(pending or request.get("installed_now")) and snap != recorded,
    }
