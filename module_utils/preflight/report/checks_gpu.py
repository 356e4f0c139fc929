"""Checks of the node's GPUs: count, PCIe link, idle memory, persistence, ECC, row remapping, and each GPU
against its siblings on the same node."""

from __future__ import annotations

import statistics

from ..core import thresholds as thr
from . import metrics
from .checks_common import check, show


def gpu_checks(doc: dict) -> list[dict]:
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
        for one in (_pcie_width_check, _memory_free_check, _persistence_check, _ecc_check, _row_remapping_check):
            found = one(gpu, idx, label, th)
            if found:
                out.append(found)
    return out


def _pcie_width_check(gpu: dict, idx, label: str, th: dict) -> dict | None:
    pcie = gpu.get("pcie") or {}
    width, width_max = pcie.get("width_current"), pcie.get("width_max")
    if width is None or width_max is None:
        return None
    ok = width >= width_max
    return check(
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


def _memory_free_check(gpu: dict, idx, label: str, th: dict) -> dict | None:
    used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
    if used is None or not total:
        return None
    pct = round(100.0 * used / total, 2)
    status, record = thr.judge(pct, "gpu_memory_used_idle_pct", th)
    return check(
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


def _persistence_check(gpu: dict, idx, label: str, th: dict) -> dict | None:
    persistence = gpu.get("persistence_mode")
    if persistence is None:
        return None
    on = persistence in (True, "Enabled", "enabled", "on", 1)
    return check(
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


def _ecc_check(gpu: dict, idx, label: str, th: dict) -> dict | None:
    uncorrectable = _ecc_uncorrectable(gpu.get("ecc"))
    if uncorrectable is None:
        return None
    return check(
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


def _row_remapping_check(gpu: dict, idx, label: str, th: dict) -> dict | None:
    remap = gpu.get("remapped_rows")
    if not isinstance(remap, dict) or remap.get("failure") is None:
        return None
    if remap.get("failure"):
        status, reason = (
            "fail",
            f"Row remapping failed ({remap['failure']}): the GPU has run out of spare rows. "
            "Drain the node and open an RMA with the vendor.",
        )
    elif remap.get("pending"):
        status, reason = (
            "warn",
            f"{remap['pending']} row remapping(s) pending: they apply at the next GPU reset. "
            "Drain the node and reset the GPU (`nvidia-smi -r`) or reboot.",
        )
    else:
        status, reason = "pass", "No failed or pending row remapping."
    return check(
        f"gpu.{idx}.row_remapping",
        f"{label} row remapping healthy",
        "gpu",
        status,
        reason,
        remap,
        {"pending": 0, "failure": 0},
    )


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
            f"{label}: {what} {show(r['value'], unit)}, its siblings' median {show(sibling, unit)} "
            f"({100 * off:.0f} % {side})"
        )
        low, high = r.get("ci") or (None, None)
        if status != "pass" and low is not None and high is not None and low <= sibling <= high:
            status = "pass"  # a difference the repeats cannot tell from noise is no finding
            reason += f", inside noise: this GPU's 95 % interval {show(low, unit)} to {show(high, unit)} holds it"
        reason += f": {advice}" if status != "pass" else "."
        # Measured is the fraction the threshold judges; the figures themselves are in the reason.
        out.append(check(f"gpu.{r['gpu_index']}.{name}_vs_siblings", f"{label} {what} in line with its siblings",
                         "gpu", status, reason, off, None, record, ""))
    return out


def gpu_sibling_checks(doc: dict) -> list[dict]:
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
