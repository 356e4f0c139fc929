"""Recommendations: rules over one host document that name the variable to change, its new value, and
the evidence. A rule that compares two measurements fires only when the difference is outside noise
(the confidence intervals of the medians do not overlap, as probes.stats.compare decides).
"""

from __future__ import annotations

from ansible.module_utils.preflight.report import metrics

THP_POLICIES = ("always", "madvise", "never")
ALLOCATORS = ("jemalloc", "glibc")
JEMALLOC_SWITCH = "jemalloc_enabled"


def recommend(doc: dict) -> list[dict]:
    if doc["status"] == "unreachable":
        return []
    out = []
    for rule in (
        _thp_always_with_spread,
        _thp_policy_ab,
        _allocator_ab,
        _persist_methods_unavailable,
        _hugepages_shortfall,
        _kv_concurrency,
    ):
        out.extend(rule(doc))
    return out


def _rec(rid, variable, value, current, reason, evidence) -> dict:
    return {"id": rid, "variable": variable, "value": value, "current": current, "reason": reason, "evidence": evidence}


def _ev(what, value, unit=None) -> dict:
    return {"what": what, "value": value, "unit": unit}


def _live_thp(doc: dict) -> str | None:
    return ((doc.get("facts") or {}).get("thp") or {}).get("enabled")


def _thp_always_with_spread(doc: dict) -> list[dict]:
    """THP `always` and latency that will not sit still: khugepaged and fault-time compaction are suspects."""
    if _live_thp(doc) != "always":
        return []
    limit = (doc["thresholds"].get("spread_cv") or {}).get("warn")
    if limit is None:
        return []
    noisy = [
        f
        for f in metrics.figures(doc)
        if f["probe"] in ("ttft", "generate", "batching")
        and f["cv"] is not None
        and (f["n"] or 0) >= 3
        and f["cv"] > limit
        and not f["higher_is_better"]
    ]
    if not noisy:
        return []
    return [
        _rec(
            "thp.madvise_for_latency_spread",
            "thp_enabled",
            "madvise",
            "always",
            f"THP is 'always' and latency varies by more than {100 * limit:g} % between repeats. With 'madvise' only "
            "the processes that ask (vLLM, torch) get huge pages and the rest of the node stops paying for "
            "compaction. Set it in this host's class (group_vars), rerun site.yml, and compare the spread.",
            [_ev("THP enabled (live)", "always")]
            + [_ev(f"{f['label']} coefficient of variation (n={f['n']})", round(f["cv"], 4)) for f in noisy],
        )
    ]


def _decided(comparison: dict) -> str | None:
    """The winner of a comparison, or None when it is inside noise."""
    if comparison.get("inside_noise", True) or not comparison.get("faster"):
        return None
    return str(comparison["faster"])


def _comparison_evidence(c: dict) -> list[dict]:
    out = [_ev(f"{c['metric']}: verdict", c.get("verdict") or f"{c.get('faster')} faster")]
    if c.get("effect_pct") is not None:
        out.append(_ev(f"{c['metric']}: advantage of {c.get('faster')}", round(c["effect_pct"], 2), "%"))
    return out


def _thp_policy_ab(doc: dict) -> list[dict]:
    desired = (doc["desired"].get("thp") or {}).get("enabled")
    out = []
    for c in metrics.comparisons(doc):
        names = {str(c.get("name_a", "")).lower(), str(c.get("name_b", "")).lower()}
        if not names <= set(THP_POLICIES):
            continue
        winner = _decided(c)
        if winner is None or winner == desired:
            continue
        out.append(
            _rec(
                f"thp.policy_ab.{winner}",
                "thp_enabled",
                winner,
                desired,
                f"The THP A/B measured '{winner}' faster than '{desired}' beyond noise on this host. Set thp_enabled: "
                f"{winner} for this host's class if its other hosts agree, rerun, and check the next report.",
                _comparison_evidence(c),
            )
        )
    return out


def _allocator_ab(doc: dict) -> list[dict]:
    jemalloc_on = "jemalloc" in doc["settings"] and (doc["desired"].get("jemalloc") or {}).get("enabled", True)
    out = []
    for c in metrics.comparisons(doc):
        names = {str(c.get("name_a", "")).lower(), str(c.get("name_b", "")).lower()}
        if names != set(ALLOCATORS) or c["path"][-1] != "steady_state_s":
            continue  # first-call time and RSS are shown, but steady-state latency decides
        winner = _decided(c)
        if winner == "jemalloc" and not jemalloc_on:
            out.append(
                _rec(
                    "allocator.enable_jemalloc",
                    JEMALLOC_SWITCH,
                    True,
                    False,
                    "jemalloc was faster than glibc malloc beyond noise in the allocator A/B: preload it for the "
                    "inference service with the jemalloc role.",
                    _comparison_evidence(c),
                )
            )
        elif winner == "glibc" and jemalloc_on:
            out.append(
                _rec(
                    "allocator.disable_jemalloc",
                    JEMALLOC_SWITCH,
                    False,
                    True,
                    "glibc malloc was faster than jemalloc beyond noise in the allocator A/B, yet jemalloc is "
                    "preloaded: drop it for this class.",
                    _comparison_evidence(c),
                )
            )
    return out


def _persist_methods_unavailable(doc: dict) -> list[dict]:
    """A persistence method that cannot work on this node warns on every run: drop it for this host."""
    out = []
    for role in ("thp",):
        result = doc["settings"].get(role) or {}
        entries = result.get("persistence") or []
        working = [e["method"] for e in entries if e["state"] in ("installed", "unchanged")]
        missing = [e for e in entries if e["state"] == "unavailable"]
        if not missing or not working:
            continue
        variable = f"{role}_persist"
        current = (doc["desired"].get(role) or {}).get("persist") or [e["method"] for e in entries]
        keep = [m for m in current if m not in {e["method"] for e in missing}]
        if not keep:
            continue
        out.append(
            _rec(
                f"{role}.persist_only_available",
                variable,
                keep,
                current,
                f"{', '.join(e['method'] for e in missing)} cannot persist {role} on {doc['host']} "
                f"({'; '.join(e.get('detail') or 'unavailable' for e in missing)}); {', '.join(working)} already "
                f"does. Set {variable}: {keep} in host_vars/{doc['host']}.yml so the report stops warning, or give the "
                "node the missing piece (for kernel_cmdline: a GRUB or systemd-boot config).",
                [_ev(f"{e['method']} persistence", e["state"]) for e in entries],
            )
        )
    return out


def _hugepages_shortfall(doc: dict) -> list[dict]:
    result = doc["settings"].get("hugepages") or {}
    shortfall = result.get("shortfall")
    asked_total = (doc["desired"].get("hugepages") or {}).get("count")
    if not shortfall or asked_total is None or shortfall.get("got") is None:
        return []  # a per-node request has no single number to suggest
    variable = "hugepages_count"
    return [
        _rec(
            "hugepages.match_what_the_kernel_gives",
            variable,
            shortfall["got"],
            shortfall.get("asked"),
            f"The kernel reserved {shortfall['got']} of {shortfall.get('asked')} pages at run time "
            f"({shortfall.get('why') or 'fragmented memory'}). Either reserve them at boot (kernel command line, then "
            f"reboot) or ask for {shortfall['got']} so the role stops failing.",
            [_ev("hugepages asked", shortfall.get("asked")), _ev("hugepages reserved", shortfall["got"])],
        )
    ]


def _kv_concurrency(doc: dict) -> list[dict]:
    """Max concurrency at the chosen max-model-len below the target: name the length that meets it."""
    kv = ((doc["probes"].get("kv") or {}).get("results")) or {}
    target = (doc["thresholds"].get("kv_max_concurrency") or {}).get("warn")
    chosen = kv.get("max_model_len")
    concurrency = kv.get("max_concurrency")
    tokens = kv.get("kv_cache_tokens")
    if None in (target, chosen, concurrency, tokens) or concurrency >= target:
        return []
    block = kv.get("block_size") or 16
    fitting = int(tokens // target) // block * block
    if fitting <= 0 or fitting >= chosen:
        return []
    return [
        _rec(
            "kv.lower_max_model_len",
            kv.get("max_model_len_variable") or "probe_max_model_len",
            fitting,
            chosen,
            f"At max-model-len {chosen} the KV cache holds {concurrency:g} requests at once, below the target of "
            f"{target:g}. {fitting} tokens per request lets {target:g} fit in the same cache.",
            [
                _ev("KV cache size", tokens, "tokens"),
                _ev("max concurrency at the chosen length", concurrency, "x"),
                _ev("target concurrency", target, "x"),
            ],
        )
    ]
