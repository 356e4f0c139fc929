"""Checks: a pure function of the host document (no Ansible, no I/O), so each is testable alone.

Every check says what was measured, what was expected (or the threshold), and in `reason` what that
means and what to do, written for the operator who reads it at 3 a.m.
"""

from __future__ import annotations

import statistics

from ansible.module_utils.preflight.report import metrics
from ansible.module_utils.preflight.report import thresholds as thr

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
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
PERSIST_OK = ("installed", "unchanged")


def check(cid, title, category, status, reason, measured=None, expected=None, threshold=None, unit=None) -> dict:
    return {
        "id": cid,
        "title": title,
        "category": category,
        "status": status,
        "measured": measured,
        "expected": expected,
        "threshold": threshold,
        "unit": unit,
        "reason": reason,
    }


def run_checks(doc: dict) -> list[dict]:
    """All checks for one host document, in report order."""
    out = _host_checks(doc)
    if doc["status"] == "unreachable":
        return out
    out += _run_checks(doc)
    out += _thp_checks(doc)
    out += _hugepages_checks(doc)
    out += _jemalloc_checks(doc)
    out += _gpu_checks(doc)
    out += _probe_checks(doc)
    return out


# --- the run itself ------------------------------------------------------------------------------


def _host_checks(doc: dict) -> list[dict]:
    host, error = doc["host"], doc["error"] or {}
    if doc["status"] == "unreachable":
        return [
            check(
                "host.reachable",
                "Host answered over SSH",
                "host",
                "fail",
                f"Ansible could not reach {host}: {error.get('msg')}. Check that the node is up, that sshd "
                f"listens on the inventory's address and port, and that the key is accepted; then rerun "
                f"with --limit {host}.",
                measured=False,
                expected=True,
            )
        ]
    out = [check("host.reachable", "Host answered over SSH", "host", "pass", f"{host} answered.", True, True)]
    if doc["status"] == "failed":
        task = error.get("task") or "an unnamed task"
        out.append(
            check(
                "host.run_completed",
                "Tuning and fact gathering completed",
                "host",
                "fail",
                f"The run stopped on {host} at '{task}': {error.get('msg')}. Nothing after that task ran "
                f"on this host; fix the cause above and rerun with --limit {host}.",
                measured=False,
                expected=True,
            )
        )
    else:
        out.append(
            check(
                "host.run_completed",
                "Tuning and fact gathering completed",
                "host",
                "pass",
                "Every tuning role and node_facts finished.",
                True,
                True,
            )
        )
    return out


def _run_checks(doc: dict) -> list[dict]:
    run = doc["run"] or {}
    out = []
    for failed in run.get("failed") or []:
        name = failed.get("probe") or "?"
        how = (
            " (timed out)"
            if failed.get("timed_out")
            else (f" (exit status {failed['rc']})" if failed.get("rc") else "")
        )
        tail = (failed.get("stderr_tail") or "").strip()
        reason = f"The {name} probe failed{how}: {failed.get('msg') or 'no message'}."
        if tail:
            reason += f" End of its stderr: {tail[-400:]}"
        reason += f" Fix the cause and rerun it alone with --tags {metrics.kind(doc, name)} --limit {doc['host']}."
        out.append(check(f"run.probe.{_slug(name)}", f"Probe {name} completed", "host", "fail", reason, False, True))
    if run.get("over_budget"):
        out.append(
            check(
                "run.budget",
                f"Level {doc['level']} finished within its time budget",
                "host",
                "warn",
                f"Certifying took {run.get('certify_s')} s, over the {run.get('budget_s')} s budget of level "
                f"{doc['level']} (the phase table shows where the time went). Raise preflight_level_budget_s for this "
                "class if that is normal for its model, or find the slow phase.",
                run.get("certify_s"),
                None,
                {"direction": "max", "warn": _num(run.get("budget_s")), "fail": None},
                "s",
            )
        )
    return out


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- THP ------------------------------------------------------------------------------------------


def _thp_checks(doc: dict) -> list[dict]:
    desired = doc["desired"].get("thp") or {}
    facts = doc["facts"]
    if facts is None:
        return []
    thp = facts.get("thp") or {}
    out = []
    for key, var, path, title in THP_KNOBS:
        cid = f"thp.{key}"
        want = desired.get(key)
        if want is None:
            out.append(check(cid, title, "tuning", "skip", f"{var} is null: Preflight leaves {path} as it is."))
            continue
        want = str(want)
        if not thp.get("supported", False):
            why = thp.get("reason") or "no transparent_hugepage directory in sysfs"
            out.append(
                check(
                    cid,
                    title,
                    "tuning",
                    "fail",
                    f"This kernel has no THP ({why}), so {var}={want} cannot be applied. Use a kernel built "
                    f"with CONFIG_TRANSPARENT_HUGEPAGE or set {var}: null for this host.",
                    measured=None,
                    expected=want,
                )
            )
            continue
        got = thp.get(key)
        got = None if got is None else str(got)
        if got == want:
            out.append(check(cid, title, "tuning", "pass", f"{path} reads {got}, as {var} asks.", got, want))
        elif "thp" not in doc["settings"] and doc["status"] == "failed":
            task = (doc["error"] or {}).get("task") or "an earlier task"
            out.append(
                check(
                    cid,
                    title,
                    "tuning",
                    "fail",
                    f"{path} reads {got} but {var} is {want}: the run stopped at '{task}' before the thp role "
                    f"applied anything (see host.run_completed). Fix that and rerun with --limit {doc['host']}.",
                    got,
                    want,
                )
            )
        elif (doc["settings"].get("thp") or {}).get("check_mode"):
            out.append(
                check(
                    cid,
                    title,
                    "tuning",
                    "fail",
                    f"{path} reads {got} but {var} is {want}. This was a check-mode run, so nothing was "
                    f"changed: run site.yml without --check (e.g. --limit {doc['host']}) to set it.",
                    got,
                    want,
                )
            )
        else:
            out.append(
                check(
                    cid,
                    title,
                    "tuning",
                    "fail",
                    f"{path} reads {got} but {var} is {want}. The value did not take or something reset it "
                    f"after Preflight (tuned, a sysctl.d or udev rule, another agent). Rerun site.yml with "
                    f"--limit {doc['host']} and read the thp role's output.",
                    got,
                    want,
                )
            )
    out.append(_persisted_check(doc, "thp", "THP settings persist across reboot", "thp_persist"))
    conflicts = (doc["settings"].get("thp") or {}).get("conflicts") or []
    if conflicts:
        out.append(
            check(
                "thp.conflicts",
                "No other tuner overrides THP",
                "tuning",
                "warn",
                "Another tuner would set THP differently at the next boot: "
                + "; ".join(_text(c) for c in conflicts)
                + ". Remove or align it so the node keeps Preflight's values.",
                measured=[_text(c) for c in conflicts],
                expected=[],
            )
        )
    elif "thp" in doc["settings"]:
        out.append(
            check(
                "thp.conflicts",
                "No other tuner overrides THP",
                "tuning",
                "pass",
                "No tuned profile, sysctl.d file or kernel option sets THP differently.",
                [],
                [],
            )
        )
    return out


def _text(item) -> str:
    if isinstance(item, dict):
        for key in ("detail", "msg", "message", "source", "path"):
            if item.get(key):
                extra = item.get("path") if key != "path" and item.get("path") else None
                return f"{item[key]} ({extra})" if extra else str(item[key])
        return ", ".join(f"{k}={v}" for k, v in item.items())
    return str(item)


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


# --- hugepages --------------------------------------------------------------------------------------


def _hugepages_checks(doc: dict) -> list[dict]:
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


# --- jemalloc ---------------------------------------------------------------------------------------


def _jemalloc_checks(doc: dict) -> list[dict]:
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
    dropins = {p.get("path"): p for p in result.get("persistence") or [] if p.get("method") == "systemd_dropin"}
    for svc in result.get("services") or []:
        name = svc.get("unit") or svc["name"]
        path = svc.get("dropin_path")
        state = (dropins.get(path) or {}).get("state")
        present = state in PERSIST_OK
        out.append(
            check(
                f"jemalloc.dropin.{_slug(name)}",
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
            check(f"jemalloc.mapped.{_slug(name)}", f"{name} maps jemalloc", "tuning", status, reason, verified, True)
        )
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)


# --- GPUs -------------------------------------------------------------------------------------------


def _gpu_checks(doc: dict) -> list[dict]:
    facts = doc["facts"]
    if facts is None:
        return []
    gpus = facts.get("gpus") or []
    th = doc["thresholds"]
    out = []
    expected = th.get("gpu_count")
    if expected is not None:
        status = "pass" if len(gpus) == expected else "fail"
        reason = (
            f"{len(gpus)} GPUs seen, as expected."
            if status == "pass"
            else f"{len(gpus)} GPUs seen, {expected} expected for this class"
            + (f" ({facts.get('gpus_reason')})" if facts.get("gpus_reason") else "")
            + ": a GPU has fallen off the bus or the driver is not loaded. Check `nvidia-smi` and dmesg (Xid)."
        )
        out.append(check("gpu.count", "Expected number of GPUs present", "gpu", status, reason, len(gpus), expected))
    elif not gpus:
        out.append(
            check(
                "gpu.count",
                "Expected number of GPUs present",
                "gpu",
                "skip",
                f"No GPUs seen ({facts.get('gpus_reason') or 'no reason given'}); "
                "preflight_thresholds.gpu_count is null, so none are required.",
                0,
                None,
            )
        )
    for gpu in gpus:
        idx = gpu.get("index")
        label = f"GPU {idx}" + (f" ({gpu['pci_bus_id']})" if gpu.get("pci_bus_id") else "")
        pcie = gpu.get("pcie") or {}
        width, width_max = pcie.get("width_current"), pcie.get("width_max")
        if width is not None and width_max is not None:
            ok = width >= width_max
            out.append(
                check(
                    f"gpu.{idx}.pcie_width",
                    f"{label} PCIe link at full width",
                    "gpu",
                    "pass" if ok else "fail",
                    f"Link runs x{width} of x{width_max}."
                    if ok
                    else f"Link trained at x{width} of x{width_max}: host-to-device copies (model load) run at a "
                    "fraction "
                    "of their speed. Reseat the card or riser and check the slot; `nvidia-smi -q -d PCIE`.",
                    width,
                    width_max,
                    unit="lanes",
                )
            )
        used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
        if used is not None and total:
            pct = round(100.0 * used / total, 2)
            status, record = thr.judge(pct, "gpu_memory_used_idle_pct", th)
            out.append(
                check(
                    f"gpu.{idx}.memory_free",
                    f"{label} memory free before serving",
                    "gpu",
                    status,
                    f"{used:g} MiB of {total:g} MiB in use ({pct:g} %). "
                    + (
                        ""
                        if status == "pass"
                        else "Another process holds GPU memory: find it with `nvidia-smi` and stop "
                        "it, or the model and KV cache will not fit as planned."
                    ),
                    pct,
                    None,
                    record,
                    "%",
                )
            )
        persistence = gpu.get("persistence_mode")
        if persistence is not None:
            on = persistence in (True, "Enabled", "enabled", "on", 1)
            out.append(
                check(
                    f"gpu.{idx}.persistence_mode",
                    f"{label} persistence mode on",
                    "gpu",
                    "pass" if on else "warn",
                    "Persistence mode is on."
                    if on
                    else "Persistence mode is off: the driver tears down and re-initialises the GPU between users, "
                    "adding "
                    "seconds to start-up. Enable nvidia-persistenced (or `nvidia-smi -pm 1`).",
                    persistence,
                    True,
                )
            )
        uncorrectable = _ecc_uncorrectable(gpu.get("ecc"))
        if uncorrectable is not None:
            out.append(
                check(
                    f"gpu.{idx}.ecc",
                    f"{label} has no uncorrectable ECC errors",
                    "gpu",
                    "pass" if uncorrectable == 0 else "fail",
                    "No uncorrectable ECC errors."
                    if uncorrectable == 0
                    else f"{uncorrectable} uncorrectable ECC errors: results on this GPU cannot be trusted. "
                    "Drain the node "
                    "and run `dcgmi diag -r 3`; check for pending page retirement / row remapping.",
                    uncorrectable,
                    0,
                )
            )
        remap = gpu.get("remapped_rows")
        if isinstance(remap, dict) and remap.get("failure") is not None:
            if remap.get("failure"):
                status, reason = (
                    "fail",
                    (
                        f"Row remapping failed ({remap['failure']}): the GPU has run out of spare rows. "
                        "Drain the node and open an RMA with the vendor."
                    ),
                )
            elif remap.get("pending"):
                status, reason = (
                    "warn",
                    (
                        f"{remap['pending']} row remapping(s) pending: they apply at the next GPU reset. "
                        "Drain the node and reset the GPU (`nvidia-smi -r`) or reboot."
                    ),
                )
            else:
                status, reason = "pass", "No failed or pending row remapping."
            out.append(
                check(
                    f"gpu.{idx}.row_remapping",
                    f"{label} row remapping healthy",
                    "gpu",
                    status,
                    reason,
                    remap,
                    {"pending": 0, "failure": 0},
                )
            )
    return out


def _show(value, unit) -> str:
    if unit in (None, ""):
        return f"{value:.4g}"
    if unit == "x":
        return f"{value:.4g}x"
    if unit == "ratio":
        return f"{100 * value:.3g} %"
    return f"{value:.4g} {unit}"


def _spread(figure: dict) -> float | None:
    """IQR over the median, the probes' own spread measure; the coefficient of variation when IQR is missing."""
    if figure.get("iqr") is not None and figure.get("value"):
        return abs(figure["iqr"] / figure["value"])
    return figure.get("cv")


def _sibling_checks(doc: dict, name: str, rows: list[dict], what: str, key: str, unit: str, lower_is_better: bool,
                    advice: str) -> list[dict]:
    """One check per GPU: how far (a fraction) its figure is on the bad side of the median of the node's other GPUs.

    ``rows`` are {gpu_index, pci_bus_id, value, ci (optional: the 95 % interval of a median)}; a node needs
    two GPUs with the figure for a comparison.
    """
    rows = [r for r in rows if r["value"] is not None]
    if len(rows) < 2:
        return []
    out = []
    for r in rows:
        sibling = statistics.median(o["value"] for o in rows if o is not r)
        if not sibling:
            continue
        off = (r["value"] / sibling - 1.0) * (1 if lower_is_better else -1)
        off = round(max(0.0, off), 4)
        status, record = thr.judge(off, key, doc["thresholds"])
        label = f"GPU {r['gpu_index']}" + (f" ({r['pci_bus_id']})" if r.get("pci_bus_id") else "")
        side = "above" if lower_is_better else "below"
        reason = (
            f"{label}: {what} {_show(r['value'], unit)}, its siblings' median {_show(sibling, unit)} "
            f"({100 * off:.0f} % {side})"
        )
        low, high = r.get("ci") or (None, None)
        if status != "pass" and low is not None and high is not None and low <= sibling <= high:
            status = "pass"  # a difference the repeats cannot tell from noise is no finding
            reason += f", inside noise: this GPU's 95 % interval {_show(low, unit)} to {_show(high, unit)} holds it"
        reason += f": {advice}" if status != "pass" else "."
        # Measured is the fraction the threshold judges; the figures themselves are in the reason.
        out.append(check(f"gpu.{r['gpu_index']}.{name}_vs_siblings", f"{label} {what} in line with its siblings",
                         "gpu", status, reason, off, None, record, ""))
    return out


def _gpu_sibling_checks(doc: dict) -> list[dict]:
    """The GPUs of one node against each other: one slow or misconfigured card shows even when it passes alone."""
    gpus = (doc["facts"] or {}).get("gpus") or []
    links = [{"gpu_index": g.get("index"), "pci_bus_id": g.get("pci_bus_id"),
              "value": (g.get("pcie") or {}).get("bandwidth_gbs_max")} for g in gpus]
    copies = [{"gpu_index": g["gpu_index"], "pci_bus_id": g.get("pci_bus_id"), "value": g["pinned_gb_per_s"]}
              for g in metrics.h2d(doc)]
    out = _sibling_checks(
        doc, "link", links, "PCIe link at most", "gpu_link_below_siblings_fraction", "GB/s", False,
        "the slot, riser or BIOS limits this GPU's link (generation x width) below its siblings'. "
        "Compare `nvidia-smi -q -d PCIE` across the GPUs and move the card or fix the slot's setting.",
    ) + _sibling_checks(
        doc, "h2d", copies, "host-to-device copy (pinned)", "gpu_h2d_below_siblings_fraction", "GB/s", False,
        "check its PCIe link (width and generation under load), the slot and riser, and whether the "
        "copy ran from the GPU's own NUMA node.",
    )
    bus = {g.get("index"): g.get("pci_bus_id") for g in gpus}

    def rows(runs, field, ci=None):
        return [{"gpu_index": r["gpu_index"], "pci_bus_id": bus.get(r["gpu_index"]), "value": r[field],
                 "ci": r[ci] if ci else None} for r in runs]

    for name, runs in metrics.per_gpu(doc).items():
        out += _sibling_checks(
            doc, name, rows(runs, "ttft_warm_ms", "ttft_warm_ci_ms"), f"warm TTFT median ({name})",
            "gpu_ttft_above_siblings_fraction", "ms", True,
            "the same server and requests are slower on this GPU: check its clocks and throttle reasons "
            "(`nvidia-smi -q -d PERFORMANCE`), its PCIe link and what else runs on it.",
        ) + _sibling_checks(
            doc, name, rows(runs, "kv_tokens"), f"KV cache tokens ({name})",
            "gpu_kv_below_siblings_fraction", "tokens", False,
            "at the same budget this GPU holds fewer KV tokens: another process holds memory on it "
            "(`nvidia-smi`), or its memory differs from its siblings'.",
        )
    return out


def _ecc_uncorrectable(ecc) -> int | None:
    """Sum of the uncorrectable counters node_facts reported, whatever their nesting; None when unknown."""
    if not isinstance(ecc, dict):
        return None
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + [str(key).lower()])
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            if any("uncorrect" in p for p in path) and not any("aggregate" in p for p in path):
                found.append(int(node))

    walk(ecc, [])
    return sum(found) if found else None


# --- probes -----------------------------------------------------------------------------------------


def _probe_checks(doc: dict) -> list[dict]:
    out = []
    th = doc["thresholds"]
    for figure in metrics.headline(doc):
        key = figure["threshold"]
        status, record = thr.judge(figure["value"], key, th)
        unit = figure["unit"]
        value = figure["value"]
        if status == "skip":
            reason = f"{figure['title']}: not measured ({figure['missing']})."
        else:
            reason = f"{figure['title']}: {_show(value, unit)}"
            if figure["n"] and figure["n"] > 1:
                reason += f" (median of {figure['n']})"
            reason += f"; {thr.describe(record, unit)}."
            if status != "pass":
                reason += " " + figure["advice"]
        out.append(
            check(f"probe.{figure['metric']}", figure["title"], "probe", status, reason, value, None, record, unit)
        )
        spread = _spread(figure)
        if figure["spread_check"] and spread is not None:
            s_status, s_record = thr.judge(spread, "spread_iqr_fraction", th)
            out.append(
                check(
                    f"probe.{figure['metric']}.spread",
                    f"{figure['title']}: repeatable",
                    "probe",
                    s_status,
                    f"The middle half of the {figure['n']} samples spans {100 * spread:.1f} % of the median; "
                    + (
                        thr.describe(s_record, "") + "."
                        if s_status == "pass"
                        else "differences smaller than that are noise. Look for other load on the node, CPU frequency "
                        "scaling, or THP compaction stalls."
                    ),
                    round(spread, 4),
                    None,
                    s_record,
                    "",
                )
            )
    out += _gpu_sibling_checks(doc)
    for probe, envelope in sorted(doc["probes"].items()):
        for verdict in envelope.get("verdicts") or []:
            status = verdict.get("status")
            if status not in ("pass", "warn", "fail"):
                continue  # "info" verdicts are statements, shown with the probe's results, not checks
            out.append(
                check(
                    f"probe.{_slug(probe)}.verdict.{_slug(verdict['name'])}",
                    f"{probe}: {verdict['name']}",
                    "probe",
                    status,
                    verdict.get("text") or f"the {probe} probe says {verdict.get('status')}",
                    verdict.get("status"),
                )
            )
    return out
