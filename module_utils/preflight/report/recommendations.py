"""Recommendations: rules over one host document that name the variable to change, its new value, and
the evidence. A rule that compares two measurements fires only when the difference is outside noise:
the confidence intervals of the two medians do not overlap (probes.stats.compare decides the same way).
"""

from __future__ import annotations

from . import metrics

THP_POLICIES = ("always", "madvise", "never")
ALLOCATORS = ("jemalloc", "glibc")
JEMALLOC_SWITCH = "jemalloc_enabled"
KV_LENGTH_VARIABLE = "probe_max_model_len"
LATENCY_PROBES = ("ttft", "generate", "batching")


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


def _spread(f: dict) -> float | None:
    if f.get("iqr") is not None and f.get("value"):
        return abs(f["iqr"] / f["value"])
    return f.get("cv")


def _thp_always_with_spread(doc: dict) -> list[dict]:
    """THP `always` and latency that will not sit still: khugepaged and fault-time compaction are suspects."""
    if _live_thp(doc) != "always":
        return []
    limit = (doc["thresholds"].get("spread_iqr_fraction") or {}).get("warn")
    if limit is None:
        return []
    noisy = [
        f
        for f in metrics.figures(doc)
        if f["kind"] in LATENCY_PROBES and f["unit"] in ("ms", "s") and (f["n"] or 0) >= 3 and (_spread(f) or 0) > limit
    ]
    if not noisy:
        return []
    return [
        _rec(
            "thp.madvise_for_latency_spread",
            "thp_enabled",
            "madvise",
            "always",
            f"THP is 'always' and latency spreads by more than {100 * limit:g} % of its median between repeats. With "
            "'madvise' only the processes that ask (vLLM, torch) get huge pages and the rest of the node stops paying "
            "for compaction. Set it for this host's class (group_vars/<class>.yml), rerun, and compare the spread.",
            [_ev("THP enabled (live)", "always")]
            + [_ev(f"{f['label']}: IQR / median (n={f['n']})", round(_spread(f), 4)) for f in noisy[:5]],
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


def _thp_ab_arms(doc: dict) -> dict[str, dict]:
    """{mode: warm weight-load summary} from the THP A/B load runs (results thp_ab_<mode>)."""
    arms = {}
    for name, envelope in (doc.get("probes") or {}).items():
        if envelope.get("probe") != "load" or not name.startswith(metrics.THP_AB_PREFIX):
            continue
        mode = metrics.thp_ab_arm(name, envelope)[1]  # per-size arms are not a thp_enabled policy
        if mode not in THP_POLICIES:
            continue
        node = metrics._get(envelope.get("results") or {}, "warm", "phases", "load_s")
        if isinstance(node, dict) and node.get("ci_low") is not None and node.get("ci_high") is not None:
            arms[mode] = node
    return arms


def _thp_policy_ab(doc: dict) -> list[dict]:
    """A THP mode whose warm weight load is faster than the desired mode's beyond noise."""
    desired = (doc["desired"].get("thp") or {}).get("enabled")
    arms = _thp_ab_arms(doc)
    if desired not in arms:
        return []
    base = arms[desired]
    better = [
        (arm["median"], mode) for mode, arm in arms.items() if mode != desired and arm["ci_high"] < base["ci_low"]
    ]
    if not better:
        return []
    _, winner = min(better)
    arm = arms[winner]
    gain = 100.0 * (base["median"] - arm["median"]) / base["median"] if base["median"] else None
    return [
        _rec(
            f"thp.policy_ab.{winner}",
            "thp_enabled",
            winner,
            desired,
            f"In the THP A/B on {doc['host']}, warm weight loading under '{winner}' was faster than under '{desired}' "
            "beyond noise (their 95 % intervals do not overlap). Set thp_enabled for this host's class if its other "
            "hosts agree, rerun, and check the next report.",
            [
                _ev(
                    f"warm load_s under THP {winner}: median (95 % CI)",
                    f"{arm['median']:.4g} ({arm['ci_low']:.4g}-{arm['ci_high']:.4g})",
                    "s",
                ),
                _ev(
                    f"warm load_s under THP {desired}: median (95 % CI)",
                    f"{base['median']:.4g} ({base['ci_low']:.4g}-{base['ci_high']:.4g})",
                    "s",
                ),
            ]
            + ([_ev(f"time saved by {winner}", round(gain, 1), "%")] if gain is not None else []),
        )
    ]


def _allocator_ab(doc: dict) -> list[dict]:
    result = doc["settings"].get("jemalloc")
    wanted = (doc["desired"].get("jemalloc") or {}).get("enabled")
    jemalloc_on = bool(result) and result.get("enabled", True) is not False
    out = []
    for c in metrics.comparisons(doc):
        names = {str(c.get("name_a", "")).lower(), str(c.get("name_b", "")).lower()}
        if c["kind"] != "generate" or names != set(ALLOCATORS) or c["path"][-1] != "steady_state_s":
            continue  # first-call time and RSS are shown, but steady-state latency decides
        winner = _decided(c)
        if winner == "jemalloc" and not jemalloc_on and wanted is not True:  # True: the role just did not run
            out.append(
                _rec(
                    "allocator.enable_jemalloc",
                    JEMALLOC_SWITCH,
                    True,
                    False,
                    "jemalloc served steady-state generate() faster than glibc malloc beyond noise in the allocator "
                    "A/B: preload it for the inference service with the jemalloc role.",
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
                    "glibc malloc served steady-state generate() faster than jemalloc beyond noise in the "
                    "allocator A/B, yet jemalloc is preloaded: drop it for this class.",
                    _comparison_evidence(c),
                )
            )
    return out


def _persist_methods_unavailable(doc: dict) -> list[dict]:
    """A THP persistence method that cannot work on this node warns on every run: drop it for this host."""
    result = doc["settings"].get("thp") or {}
    entries = result.get("persistence") or []
    working = [e["method"] for e in entries if e["state"] in ("installed", "unchanged")]
    missing = [e for e in entries if e["state"] == "unavailable"]
    if not missing or not working:
        return []
    current = (doc["desired"].get("thp") or {}).get("persist") or [e["method"] for e in entries]
    keep = [m for m in current if m not in {e["method"] for e in missing}]
    if not keep:
        return []
    return [
        _rec(
            "thp.persist_only_available",
            "thp_persist",
            keep,
            current,
            f"{', '.join(e['method'] for e in missing)} cannot persist THP on this host "
            f"({'; '.join(e.get('detail') or 'unavailable' for e in missing)}); {', '.join(working)} already does. "
            f"Set it in host_vars/<host>.yml (or group_vars/<class>.yml when the whole class is built this way) so "
            "the report stops warning, or give the node the missing piece (for kernel_cmdline: a GRUB config).",
            [_ev(f"{e['method']} persistence", e["state"]) for e in entries],
        )
    ]


def _hugepages_shortfall(doc: dict) -> list[dict]:
    result = doc["settings"].get("hugepages") or {}
    shortfall = result.get("shortfall")
    asked_total = (doc["desired"].get("hugepages") or {}).get("count")
    if not shortfall or asked_total is None or shortfall.get("got") is None:
        return []  # a per-node request has no single number to suggest
    return [
        _rec(
            "hugepages.match_what_the_kernel_gives",
            "hugepages_count",
            shortfall["got"],
            shortfall.get("asked"),
            f"The kernel reserved {shortfall['got']} of {shortfall.get('asked')} pages at run time "
            f"({shortfall.get('why') or 'fragmented memory'}). Either reserve them at boot (the persisted setting, "
            f"then reboot) or ask for {shortfall['got']} so the pool matches what this node can give.",
            [_ev("hugepages asked", shortfall.get("asked")), _ev("hugepages reserved", shortfall["got"])],
        )
    ]


def _kv_concurrency(doc: dict) -> list[dict]:
    """Max concurrency at the chosen max-model-len below the target: name the length that meets it."""
    kv = doc["probes"].get("kv") or {}
    target = (doc["thresholds"].get("kv_max_concurrency") or {}).get("warn")
    if kv.get("probe", "kv") != "kv" or target is None:
        return []
    out = []
    for config in metrics.kv_configs(kv.get("results") or {}):
        chosen, concurrency = config.get("max_model_len"), config.get("max_concurrency")
        tokens, block = config.get("kv_tokens"), config.get("block_size") or 16
        if None in (chosen, concurrency, tokens) or concurrency >= target:
            continue
        fitting = int(tokens // target) // block * block
        if fitting <= 0 or fitting >= chosen:
            continue
        out.append(
            _rec(
                f"kv.lower_max_model_len.{chosen}",
                KV_LENGTH_VARIABLE,
                fitting,
                chosen,
                f"At max-model-len {chosen} the KV cache ({tokens} tokens, budget {metrics.budget_label(config)}) "
                f"holds {concurrency:g} full-length requests at once, below the target of {target:g} "
                f"(preflight_thresholds.kv_max_concurrency.warn). {fitting} tokens per request lets {target:g} fit in "
                "the same cache; or keep the length and give the KV cache more memory.",
                [
                    _ev("KV cache size", tokens, "tokens"),
                    _ev(f"max concurrency at {chosen}", concurrency, "x"),
                    _ev("target concurrency", target, "x"),
                    _ev("block size", block, "tokens"),
                ],
            )
        )
        break
    return out
