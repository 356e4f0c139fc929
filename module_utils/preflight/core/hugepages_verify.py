"""What roles/hugepages proved after applying: the problems of the read-back, the state of each persistence
method, the settings rows and the verify_detail of the result the report reads
(preflight_role_results.hugepages); and which mounts its rollback takes down or brings back.

Pure functions of what the role's tasks registered, called by roles/hugepages/library/hugepages_verify.py.
"""

from __future__ import annotations

import json
import posixpath

from .hugepages import parse_hugetlbfs_mounts
from .hugepages_undo import cleanup, files_undo, migrate
from .paths import state_dir_errors
from .tree import Tree
from .undo import RecordError


def _as_int(value) -> int:
    """Jinja's `| int`: a number, or 0 for what is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def changed_paths(task_results: list[dict]) -> list[str]:
    """The paths of the loop items a file task changed (or would change, in check mode)."""
    return [r["item"]["path"] for r in task_results if r.get("changed") and isinstance(r.get("item"), dict)]


def readback_problems(back: dict) -> list[str]:
    """Where the host read back after applying does not hold the plan (back: the read-back's plan)."""
    problems = []
    for path in back.get("to_mount", []):
        problems.append(f"hugetlbfs is not mounted at {path} with the requested options after mounting")
    for path in back.get("to_unmount", []):
        problems.append(f"hugetlbfs is still mounted at {path} after unmounting")
    for item in back.get("files", []):
        if item.get("changed"):
            problems.append(f"{item['path']} does not hold what was written ({item['state']})")
    for item in back.get("settings", []):
        if item["before"] > item["desired"]:
            problems.append(
                f"{item['path']} reads {item['before']}, more than the {item['desired']} asked: the kernel frees "
                "pages in use only when their users release them"
            )
    return problems


def persistence_states(plan: dict, back: dict, touched: list[str], fstab_path: str) -> list[dict]:
    """Each persistence method of the plan with its state: unavailable, failed, installed or unchanged."""
    failed = {item["path"] for item in back.get("files", []) if item.get("changed")}
    out = []
    for entry in plan["persistence"]:
        if "state" in entry:
            state = entry["state"]
        elif entry["path"] in failed:
            state = "failed"
        elif entry["path"] in touched:
            state = "installed"
        else:
            state = "unchanged"
        out.append({**entry, "state": state})
    if plan["mounts"]:
        out.append(
            {
                "method": "fstab",
                "path": fstab_path,
                "state": "installed" if fstab_path in touched else "unchanged",
                "detail": "hugetlbfs lines for " + ", ".join(m["path"] for m in plan["mounts"]),
            }
        )
    return out


def settings_rows(plan: dict, pool_results: list[dict]) -> list[dict]:
    """The report's rows: each pool file as sysfs_tunable wrote it, then each hugetlbfs mount."""
    rows = []
    for result in pool_results:
        item = result["item"]
        rows.append(
            {
                "name": item["name"],
                "path": item["path"],
                "desired": item["desired"],
                "before": _as_int(result.get("before", item["before"])),
                "after": _as_int(result.get("after", item["before"])),
                "changed": result.get("changed", False),
            }
        )
    for mount in plan["mounts"]:
        changing = mount["path"] in plan["to_mount"] or mount["path"] in plan["to_unmount"]
        before = "mounted" if mount["mounted"] else "not mounted"
        desired = mount["options"] if mount["state"] == "mounted" else "not mounted"
        rows.append(
            {
                "name": "hugetlbfs mount " + mount["path"],
                "path": mount["path"],
                "desired": desired,
                "before": before if changing else desired,
                "after": desired if changing or mount["mounted"] else before,
                "changed": changing,
            }
        )
    return rows


def verify_detail(plan: dict, problems: list[str], shortfall: dict | None, check_mode: bool) -> str:
    mounts_note = "; mounts match /proc/mounts" if plan["mounts"] else ""
    if check_mode:
        return "check mode: nothing was applied, so nothing was read back"
    if problems:
        return "; ".join(problems)
    if shortfall is not None:
        return f"shortfall: asked {shortfall['asked']}, got {shortfall['got']}"
    if not plan["manage_pool"]:
        return "pool left alone (hugepages_count and hugepages_per_node are null)" + mounts_note
    names = ", ".join(s["name"] for s in plan["settings"])
    return f"read back: {names} hold the requested pages{mounts_note}"


def role_result(
    plan: dict,
    readback: dict,
    task_results: list[dict],
    pool_results: list[dict],
    size: str,
    fstab_path: str,
    check_mode: bool,
) -> tuple[dict, list[str]]:
    """preflight_role_results.hugepages and the problems that fail the role.

    plan: the plan made before applying; readback: hugepages_state's registered result after applying
    (skipped in check mode); task_results: the results of the tasks that wrote, linked and removed the
    persistence files; pool_results: sysfs_tunable's results for the pool files.
    """
    back = readback.get("plan") or {}
    problems = [] if check_mode else readback_problems(back)
    shortfall = readback.get("shortfall")
    touched = changed_paths(task_results)
    result = {
        "role": "hugepages",
        "size": size,
        "settings": settings_rows(plan, pool_results),
        "persistence": persistence_states(plan, back, touched, fstab_path),
        "conflicts": plan["conflicts"],
        "verified": not check_mode and not problems and shortfall is None,
        "verify_detail": verify_detail(plan, problems, shortfall, check_mode),
        "reboot_required": plan["reboot_required"],
        "shortfall": shortfall,
        "pool": (readback.get("plan") or plan)["pool"],
        "check_mode": check_mode,
    }
    return result, problems


def rollback_mounts(recorded_mounts: dict, proc_mounts: str | None) -> tuple[list[str], list[dict]]:
    """The hugetlbfs mounts to take down (Preflight added or changed them) and those to bring back as recorded.

    recorded_mounts: state.json's mounts ({path: {was_mounted, options}}); proc_mounts: /proc/mounts now.
    """
    mounted_now = {m["path"]: m["raw"] for m in parse_hugetlbfs_mounts(proc_mounts)}
    unmount, remount = [], []
    for path, was in recorded_mounts.items():
        if path in mounted_now and (not was["was_mounted"] or mounted_now[path] != was["options"]):
            unmount.append(path)
        if was["was_mounted"] and mounted_now.get(path) != was["options"]:
            remount.append({"path": path, "options": was["options"]})
    return unmount, remount


def rollback_plan(tree: Tree, state_dir: str, state_dirs: dict | None = None) -> dict:
    """What roles/hugepages' rollback restores on this host: the record (state.json, migrated to version 2),
    the mounts to fix, the files to write back (hugepages_undo.py), and what to clean up afterwards.

    errors: every reason to stop before anything changes (a bad state directory, a file that no longer holds
    what Preflight wrote, a record that cannot be read); the record is then kept."""
    state_file = posixpath.join(str(state_dir), "state.json")
    errors = state_dir_errors({**(state_dirs or {}), "hugepages_state_dir": state_dir}, "hugepages_state_dir")
    text = tree.read(state_file) if not errors else None
    recorded: dict = {}
    files = {"write": [], "errors": []}
    if text is not None:
        try:
            recorded = migrate(json.loads(text), lambda name: tree.read(posixpath.join(state_dir, name)))
            files = files_undo(recorded, tree.read, tree.readlink)
        except ValueError as exc:  # RecordError is a ValueError
            why = str(exc) if isinstance(exc, RecordError) else "it is not valid JSON"
            errors.append(f"{state_file} cannot be used: {why}; move it away or restore it, then run again")
            recorded = {}
    errors += files["errors"]
    unmount, remount = rollback_mounts(recorded.get("mounts", {}), tree.read("/proc/mounts")) if recorded else ([], [])
    return {
        "exists": text is not None,
        "errors": errors,
        "recorded": recorded,
        "write": files["write"],
        "cleanup": cleanup(recorded, state_dir) if recorded else {"files": [], "dirs": []},
        "unmount": unmount,
        "remount": remount,
        "rmdir_mounts": sorted(p for p, m in recorded.get("mounts", {}).items() if not m.get("dir_existed")),
        "regenerate": recorded.get("regenerate", []),
        "systemd_running": tree.isdir("/run/systemd/system"),
    }


def rollback_outcome(pool_results: list[dict], rmdir_results: list[dict]) -> dict:
    """Whether the record may go (every pool took its recorded page count: otherwise it is kept, so that a
    later rollback can finish the job) and the warnings for what was not restored."""
    short = [r["item"]["key"] for r in pool_results if "taken" in r and not r["taken"]]
    warnings = [f"{path} could not be given back its recorded page count; the record is kept" for path in short]
    warnings += [
        f"{r['item']} was left in place: it is not empty" for r in rmdir_results if r.get("rc") not in (None, 0)
    ]
    return {"remove_record": not short, "warnings": warnings}
