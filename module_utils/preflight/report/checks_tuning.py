"""Checks of the tuning roles' results: THP, hugepages, jemalloc, and whether each persists."""

from __future__ import annotations

from ..core.catalog import THP_DIR
from .checks_common import PERSIST_OK, check, slug, text

THP_KNOBS = [
    ("enabled", "thp_enabled", f"{THP_DIR}/enabled", "THP enabled matches the desired policy"),
    ("defrag", "thp_defrag", f"{THP_DIR}/defrag", "THP defrag matches the desired policy"),
    (
        "khugepaged_defrag",
        "thp_khugepaged_defrag",
        f"{THP_DIR}/khugepaged/defrag",
        "khugepaged defrag matches the desired value",
    ),
]


def thp_checks(doc: dict) -> list[dict]:
    desired = doc["desired"].get("thp") or {}
    facts = doc["facts"]
    if facts is None:
        return []
    thp = facts.get("thp") or {}
    out = [_thp_knob_check(doc, thp, desired.get(key), key, var, path, title) for key, var, path, title in THP_KNOBS]
    out.append(_persisted_check(doc, "thp", "THP settings persist across reboot", "thp_persist"))
    conflicts = _thp_conflicts_check(doc)
    return out + ([conflicts] if conflicts else [])


def _thp_knob_check(doc: dict, thp: dict, want, key: str, var: str, path: str, title: str) -> dict:
    """One THP knob: the live value against the desired one, and if they differ, why and what to do."""
    cid = f"thp.{key}"
    if want is None:
        return check(cid, title, "tuning", "skip", f"{var} is null: Preflight leaves {path} as it is.")
    want = str(want)
    if not thp.get("supported", False):
        why = thp.get("reason") or "no transparent_hugepage directory in sysfs"
        return check(
            cid,
            title,
            "tuning",
            "fail",
            f"This kernel has no THP ({why}), so {var}={want} cannot be applied. Use a kernel built "
            f"with CONFIG_TRANSPARENT_HUGEPAGE or set {var}: null for this host.",
            measured=None,
            expected=want,
        )
    got = thp.get(key)
    got = None if got is None else str(got)
    if got == want:
        return check(cid, title, "tuning", "pass", f"{path} reads {got}, as {var} asks.", got, want)
    if "thp" not in doc["settings"] and doc["status"] == "failed":
        task = (doc["error"] or {}).get("task") or "an earlier task"
        why = (
            f": the run stopped at '{task}' before the thp role applied anything (see host.run_completed). "
            f"Fix that and rerun with --limit {doc['host']}."
        )
    elif (doc["settings"].get("thp") or {}).get("check_mode"):
        why = (
            ". This was a check-mode run, so nothing was changed: run site.yml without --check "
            f"(e.g. --limit {doc['host']}) to set it."
        )
    else:
        why = (
            ". The value did not take or something reset it after Preflight (tuned, a sysctl.d or udev rule, "
            f"another agent). Rerun site.yml with --limit {doc['host']} and read the thp role's output."
        )
    return check(cid, title, "tuning", "fail", f"{path} reads {got} but {var} is {want}{why}", got, want)


def _thp_conflicts_check(doc: dict) -> dict | None:
    conflicts = (doc["settings"].get("thp") or {}).get("conflicts") or []
    if conflicts:
        return check(
            "thp.conflicts",
            "No other tuner overrides THP",
            "tuning",
            "warn",
            "Another tuner would set THP differently at the next boot: "
            + "; ".join(text(c) for c in conflicts)
            + ". Remove or align it so the node keeps Preflight's values.",
            measured=[text(c) for c in conflicts],
            expected=[],
        )
    if "thp" in doc["settings"]:
        return check(
            "thp.conflicts",
            "No other tuner overrides THP",
            "tuning",
            "pass",
            "No tuned profile, sysctl.d file or kernel option sets THP differently.",
            [],
            [],
        )
    return None


def _persisted_check(doc: dict, role: str, title: str, var: str | None) -> dict:
    cid = f"{role}.persisted"
    result = doc["settings"].get(role)
    if result is None:
        return check(cid, title, "tuning", "skip", f"The {role} role reported nothing on this host (it did not run).")
    entries = result.get("persistence") or []
    if not entries and not any(s.get("desired") is not None for s in result.get("settings") or []):
        return check(cid, title, "tuning", "skip", f"The {role} role was asked to change nothing, so nothing persists.")
    if not entries:
        return check(
            cid,
            title,
            "tuning",
            "warn",
            f"Nothing persists the {role} settings ({var} is empty): the live values are lost at the next reboot.",
            measured={},
            expected=f"every method in {var} installed",
        )
    measured = {e["method"]: e["state"] for e in entries}
    worst = "pass"
    parts = []
    for entry in entries:
        state = entry["state"]
        where = f" at {entry['path']}" if entry.get("path") else ""
        detail = f": {entry['detail']}" if entry.get("detail") else ""
        parts.append(f"{entry['method']} {state}{where}{detail}")
        if state == "failed":
            worst = "fail"
        elif state not in PERSIST_OK and worst != "fail":
            worst = "warn"
    if result.get("reboot_required"):
        parts.append("a reboot is needed before the persisted values are what the kernel boots with")
        worst = "warn" if worst == "pass" else worst
    advice = {
        "pass": "",
        "warn": " The live values hold until the next reboot; for a method marked unavailable, "
        + (f"remove it from {var} for this host or give" if var else "give")
        + " the node what it needs, then rerun.",
        "fail": f" Persisting failed: fix the cause above and rerun with --limit {doc['host']}.",
    }[worst]
    return check(cid, title, "tuning", worst, "; ".join(parts) + "." + advice, measured, list(PERSIST_OK))


def hugepages_checks(doc: dict) -> list[dict]:
    result = doc["settings"].get("hugepages")
    if result is None:
        return []
    out = []
    shortfall = result.get("shortfall")
    severity = (doc["desired"].get("hugepages") or {}).get("shortfall") or "fail"
    sizes = ((doc["facts"] or {}).get("hugepages") or {}).get("sizes") or {}
    total_settings = [
        s
        for s in result.get("settings") or []
        if s.get("desired") is not None and not str(s.get("name", "")).startswith("hugetlbfs mount")
    ]
    measured = {k: v.get("total") for k, v in sizes.items()}
    if shortfall:
        out.append(
            check(
                "hugepages.total",
                "Hugepages reserved as asked",
                "tuning",
                "warn" if severity == "warn" else "fail",
                f"Asked for {shortfall.get('asked')} pages, the kernel reserved {shortfall.get('got')}: "
                f"{shortfall.get('why') or 'memory is too fragmented or too small'}. Reserve them at boot "
                f"(kernel command line) or reboot and rerun before the pool is needed, or lower the request.",
                measured=shortfall.get("got"),
                expected=shortfall.get("asked"),
            )
        )
    elif not total_settings:
        out.append(
            check(
                "hugepages.total",
                "Hugepages reserved as asked",
                "tuning",
                "skip",
                "No hugepage reservation was asked for on this host.",
                measured,
            )
        )
    else:
        desc = ", ".join(f"{s['name']}={s.get('after')}" for s in total_settings)
        out.append(
            check(
                "hugepages.total",
                "Hugepages reserved as asked",
                "tuning",
                "pass",
                f"The kernel holds the pages asked for ({desc}).",
                measured,
                {s["name"]: s.get("desired") for s in total_settings},
            )
        )
    out.append(_persisted_check(doc, "hugepages", "Hugepage reservation persists across reboot", None))
    return out


def jemalloc_checks(doc: dict) -> list[dict]:
    result = doc["settings"].get("jemalloc")
    if result is None:
        return []
    if result.get("enabled") is False:
        return [
            check(
                "jemalloc.library",
                "jemalloc wired in",
                "tuning",
                "skip",
                "jemalloc_enabled is false: Preflight removed its wiring and leaves the allocator to glibc.",
            )
        ]
    out = []
    library = result.get("library_path")
    if library:
        out.append(
            check(
                "jemalloc.library",
                "jemalloc library installed",
                "tuning",
                "pass",
                f"jemalloc is at {library}.",
                library,
            )
        )
    else:
        out.append(
            check(
                "jemalloc.library",
                "jemalloc library installed",
                "tuning",
                "fail",
                f"No libjemalloc after the role ran (package {result.get('package') or 'unknown'}): install it "
                "(libjemalloc2 on Debian/Ubuntu, jemalloc on RHEL) and rerun.",
                None,
            )
        )
    if result.get("scope") == "system":
        preload = ((doc["facts"] or {}).get("allocator") or {}).get("ld_so_preload") or []
        preload = preload if isinstance(preload, list) else [preload]
        listed = bool(library) and any(library in str(p) for p in preload)
        out.append(
            check(
                "jemalloc.preload",
                "jemalloc preloaded for every process",
                "tuning",
                "pass" if listed else "fail",
                f"/etc/ld.so.preload lists {library}."
                if listed
                else f"/etc/ld.so.preload does not list {library}: new processes use glibc malloc. "
                "Rerun the jemalloc role and read its output.",
                measured=preload,
                expected=library,
            )
        )
    return out + _jemalloc_service_checks(result)


def _jemalloc_service_checks(result: dict) -> list[dict]:
    """Per service of jemalloc_scope=service: its drop-in is in place, and the running process maps jemalloc."""
    out = []
    dropins = {p.get("path"): p for p in result.get("persistence") or [] if p.get("method") == "systemd_dropin"}
    for svc in result.get("services") or []:
        name = svc.get("unit") or svc["name"]
        path = svc.get("dropin_path")
        state = (dropins.get(path) or {}).get("state")
        present = state in PERSIST_OK
        out.append(
            check(
                f"jemalloc.dropin.{slug(name)}",
                f"{name} has the jemalloc drop-in",
                "tuning",
                "pass" if present else "fail",
                f"{path} sets LD_PRELOAD and MALLOC_CONF for {name} ({state})."
                if present
                else f"The drop-in for {name} is {state or 'missing'} ({path}): rerun the jemalloc role and read "
                "its output.",
                state,
                list(PERSIST_OK),
            )
        )
        verified = svc.get("verified")
        detail = svc.get("verify_detail") or "no detail"
        if verified is True:
            status, reason = "pass", f"{detail}: {name} runs with jemalloc."
        elif verified is False:
            status, reason = (
                "fail",
                (f"{detail}. {name} still runs with glibc malloc: restart it so it picks the drop-in up, then rerun."),
            )
        else:
            status, reason = "skip", f"Not verified: {detail}."
        out.append(
            check(f"jemalloc.mapped.{slug(name)}", f"{name} maps jemalloc", "tuning", status, reason, verified, True)
        )
    return out
