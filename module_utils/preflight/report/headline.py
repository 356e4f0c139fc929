"""What an operator reads first: one line saying whether the node is fit to serve and why, the node's key
figures beside their previous run, and "What to do" ranked by consequence.

Ranking: failures, then changes the operator can make (a variable and its value, with evidence), then other
findings to look at (warnings about the node, regressions, fleet outliers); measurement notes (spread, noise,
too few repeats, an undetermined knee) are not actions: they stay next to their figures under Probes and
"What to do" only points to them in one line.
"""

from __future__ import annotations

from . import metrics

# Probe verdict names (and suffixes) that describe the measurement, not the node.
NOTE_VERDICTS = ("spread", "knee", "levels_skipped", "enough_repeats", "stopped_early")
NOTE_VERDICT_PREFIXES = ("arm_", "client_vs_server_")
NOTE_VERDICT_SUFFIXES = ("_spread",)

# Key figures: (key, label, unit, outlier metric or prefix the fleet's outlier rule flags for it).
KEY_FIGURES = (
    ("certify_s", "Certifying time", "s", None),
    ("ttft_warm_ms", "Warm TTFT", "ms", "ttft.warm_ms"),
    ("kv_tokens", "KV cache", "tokens", "kv.max_concurrency."),
    ("load_warm_s", "Model load (warm)", "s", "load.warm_total_s"),
    ("load_cold_s", "Model load (cold)", "s", "load.cold_total_s"),
)


def is_measurement_note(check: dict) -> bool:
    """A warning about how well something was measured (spread, repeats, noise), not about the node."""
    cid = check["id"]
    if cid.endswith(".spread"):
        return True
    if ".verdict." not in cid:
        return False
    name = cid.rsplit(".verdict.", 1)[1]
    return (
        name in NOTE_VERDICTS
        or name.startswith(NOTE_VERDICT_PREFIXES)
        or name.endswith(NOTE_VERDICT_SUFFIXES)
    )


def _figure(doc: dict, metric: str) -> dict | None:
    return next((f for f in metrics.headline(doc) if f["metric"] == metric and f["value"] is not None), None)


def _kv_tokens(doc: dict) -> tuple[float | None, str | None]:
    envelope = (doc.get("probes") or {}).get("kv") or {}
    for config in metrics.kv_configs(envelope.get("results") or {}):
        if isinstance(config.get("kv_tokens"), (int, float)):
            return float(config["kv_tokens"]), f"at max-model-len {config.get('max_model_len')}"
    return None, None


def key_values(doc: dict) -> dict[str, float | None]:
    """{key: value} of the key figures (None where not measured): what history keeps of a run."""
    run = doc.get("run") or {}
    out: dict[str, float | None] = {"certify_s": _number(run.get("certify_s"))}
    for key, metric in (("ttft_warm_ms", "ttft.warm_ms"), ("load_warm_s", "load.warm_total_s"),
                        ("load_cold_s", "load.cold_total_s")):
        fig = _figure(doc, metric)
        out[key] = float(fig["value"]) if fig else None
    out["kv_tokens"] = _kv_tokens(doc)[0]
    return out


def _number(value) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "tokens":
        return f"{value:,.0f} tokens"
    return f"{value:.4g} {unit}"


def key_figures(doc: dict) -> list[dict]:
    """The headline figures of one host: value, what it is judged against, and the previous run's value.

    A figure that was never measured on this host or its previous run is left out (not shown as zero)."""
    values = key_values(doc)
    previous = ((doc.get("history") or {}).get("key_figures")) or {}
    run = doc.get("run") or {}
    out = []
    for key, label, unit, _ in KEY_FIGURES:
        value, before = values.get(key), _number(previous.get(key))
        if value is None and before is None:
            continue
        out.append({"key": key, "label": label, "unit": unit, "value": value, "previous": before,
                    "against": _against(doc, key, run), "status": _status(doc, key, run),
                    "change": _change(value, before, unit)})
    return out


def _against(doc: dict, key: str, run: dict) -> str | None:
    if key == "certify_s" and run.get("budget_s") is not None:
        return f"of the {run['budget_s']} s budget of level {doc.get('level')}"
    if key == "kv_tokens":
        return _kv_tokens(doc)[1]
    limit = (doc.get("thresholds") or {}).get({"ttft_warm_ms": "ttft_warm_ms", "load_warm_s": "load_warm_s",
                                                "load_cold_s": "load_cold_s"}.get(key, ""), {}) or {}
    if limit.get("warn") is None:
        return None
    unit = {"ttft_warm_ms": "ms"}.get(key, "s")
    return f"(warn {'above' if limit.get('direction', 'max') == 'max' else 'below'} {limit['warn']:g} {unit})"


def _status(doc: dict, key: str, run: dict) -> str | None:
    if key == "certify_s":
        return None if run.get("over_budget") is None else ("warn" if run["over_budget"] else "pass")
    check_id = {"ttft_warm_ms": "probe.ttft.warm_ms", "load_warm_s": "probe.load.warm_total_s",
                "load_cold_s": "probe.load.cold_total_s"}.get(key)
    found = next((c["status"] for c in doc.get("checks") or [] if c["id"] == check_id), None)
    return found if found in ("pass", "warn", "fail") else None


def _change(value, before, unit) -> str | None:
    if value is None or before is None:
        return None
    if before == 0:
        return f"previous {show(before, unit)}"
    return f"previous {show(before, unit)} ({100.0 * (value - before) / abs(before):+.1f} %)"


def todo(doc: dict) -> dict:
    """What to do, ranked: {'failures', 'changes', 'look_at', 'regressions', 'outliers', 'notes'}."""
    checks = doc.get("checks") or []
    warns = [c for c in checks if c["status"] == "warn"]
    return {
        "failures": [c for c in checks if c["status"] == "fail"],
        "changes": list(doc.get("recommendations") or []),
        "look_at": [c for c in warns if not is_measurement_note(c)],
        "regressions": list((doc.get("history") or {}).get("regressions") or []),
        "outliers": list(doc.get("outliers") or []),
        "notes": [c for c in warns if is_measurement_note(c)],
    }


def notes_line(notes: list[dict]) -> str | None:
    """At most one line pointing to the measurement notes, which are shown next to their figures."""
    if not notes:
        return None
    where = sorted({c["id"].split(".")[1] for c in notes if c["id"].count(".") >= 1})
    return (f"{len(notes)} measurement note(s) (spread, repeats, noise) are not actions: see them next to "
            f"their figures under Probes ({', '.join(where)}).")


def verdict_line(doc: dict) -> str:
    """One line: is this node fit to serve, and why."""
    host, status = doc["host"], doc["status"]
    if status != "ok":
        err = doc.get("error") or {}
        return (f"NOT CERTIFIED: {host} is {status} at '{err.get('task') or '?'}' ({err.get('msg')}); "
                "nothing can be said about serving until it finishes a run.")
    items = todo(doc)
    if items["failures"]:
        first = items["failures"][0]
        return (f"NOT FIT TO SERVE: {len(items['failures'])} check(s) fail, first {first['id']} "
                f"({first['title']}).")
    level = doc.get("level")
    counts = [f"{len(items['changes'])} change(s) to make" if items["changes"] else "",
              f"{len(items['look_at'])} warning(s) to look at" if items["look_at"] else "",
              f"{len(items['regressions'])} regression(s)" if items["regressions"] else ""]
    counts = [c for c in counts if c]
    scope = "" if doc.get("probes") else " (tuning and GPUs only: no serving figure was measured at this level)"
    if counts:
        return f"FIT TO SERVE at level {level}{scope}, with {', '.join(counts)}: see What to do."
    why = (f"; its WARN comes only from {len(items['notes'])} measurement note(s)"
           if items["notes"] and doc.get("verdict") == "warn" else "")
    return f"FIT TO SERVE at level {level}{scope}: no check fails and nothing needs changing{why}."


def fleet_line(summary: dict) -> str:
    """One line for the fleet: how many hosts are fit to serve, and which are not and why."""
    rows = summary["hosts"]
    unfinished = [r for r in rows if r["status"] != "ok"]
    failing = [r for r in rows if r["status"] == "ok" and r["failing"]]
    fit = len(rows) - len(unfinished) - len(failing)
    t = summary["totals"]
    checks = (f"checks: {t['checks_fail']} fail, {t['checks_warn']} warn, {t['checks_pass']} pass, "
              f"{t['checks_skip']} skip")
    if not unfinished and not failing:
        return f"FLEET FIT TO SERVE: all {len(rows)} host(s) finished and no check fails ({checks})."
    why = []
    if failing:
        why.append("failing checks on " + ", ".join(f"{r['host']} ({len(r['failing'])})" for r in failing))
    if unfinished:
        why.append("did not finish: " + ", ".join(f"{r['host']} ({r['status']})" for r in unfinished))
    return f"{fit} of {len(rows)} host(s) fit to serve; not: {'; '.join(why)} ({checks})."
