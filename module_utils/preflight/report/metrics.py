"""Figures out of probe envelopes.

Two views of the same results:
- figures(): every statistic summary (probes.stats.summarize) and ratio (probes.stats.ratio) a probe returned,
  found by walking `results`, so a new measurement shows up in tables, history and Prometheus without code here;
- headline(): the few figures each probe exists to answer (cold and warm load, TTFT, KV concurrency, batching
  speed-up), read from where each probe puts them, judged against thresholds and compared across the fleet.

`doc["probes"]` maps a result name (load, ttft, kv_sweep, thp_ab_always, ...) to an envelope whose `probe`
field names the probe that made it. Only the result named like its probe is the host's certificate run;
A/B arms and sweeps are shown and used for recommendations, not judged against thresholds.
"""

from __future__ import annotations

from ..core.thresholds import ADVICE

# A list item that names itself (an allocator, a concurrency level, a GPU) is addressed by that name.
NAME_KEYS = ("allocator", "api", "concurrency", "max_model_len", "gpu_index", "index", "name", "condition")
SKIP_KEYS = ("raw", "runs", "priming_runs", "samples", "server", "startup_log")

# Words in a figure's name or unit that mean "more is better".
_HIGHER_IS_BETTER = (
    "throughput",
    "gbps",
    "gb_per_s",
    "gb/s",
    "per_s",
    "tok/s",
    "tokens/s",
    "req/s",
    "concurrency",
    "speedup",
    "bandwidth",
    "_vs_",
    "ratio",
)

def walk(node, path: tuple = ()):
    """(path, 'summary'|'comparison'|'ratio', node) for every statistic under node."""
    if isinstance(node, dict):
        if {"a", "b", "inside_noise"} <= node.keys():
            yield path, "comparison", node
            return
        if {"median", "n", "samples"} <= node.keys():
            yield path, "summary", node
            return
        if {"median_ratio", "ci_low", "ci_high"} <= node.keys():
            yield path, "ratio", node
            return
        for key, value in node.items():
            if key in SKIP_KEYS:
                continue  # raw samples and server logs: the summaries already hold what matters
            yield from walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            name = next((value[k] for k in NAME_KEYS if isinstance(value, dict) and value.get(k) is not None), i)
            yield from walk(value, path + (str(name),))


def higher_is_better(name: str, unit: str | None) -> bool:
    text = f"{name} {unit or ''}".lower()
    return any(word in text for word in _HIGHER_IS_BETTER)


def kind(doc: dict, name: str) -> str:
    """The probe that made result `name` (thp_ab_always -> load)."""
    return str((doc["probes"].get(name) or {}).get("probe") or name)


THP_AB_PREFIX = "thp_ab_"


def thp_ab_arm(name: str, envelope: dict) -> tuple[str, str | None]:
    """(the arm as written, e.g. never+64kB=always; its global mode when it sets only that, else None) of a THP
    A/B result thp_ab_<arm>. The load probe records the arm it ran under (results.thp.arm); an older result
    without it is named by its suffix."""
    arm = ((envelope.get("results") or {}).get("thp") or {}).get("arm") or {}
    settings = arm.get("settings")
    if isinstance(settings, dict) and settings:
        mode = settings.get("enabled") if set(settings) == {"enabled"} else None
        return str(arm.get("mode") or mode), mode
    suffix = name.removeprefix(THP_AB_PREFIX)
    return suffix, suffix


def _summary_record(**kw) -> dict:
    base = {
        "value": None,
        "unit": None,
        "n": None,
        "cv": None,
        "iqr": None,
        "p5": None,
        "p95": None,
        "ci_low": None,
        "ci_high": None,
        "samples": [],
        "spread_warning": None,
    }
    base.update(kw)
    return base


def _from_summary(node: dict) -> dict:
    return _summary_record(
        value=node.get("median"),
        unit=node.get("unit"),
        n=node.get("n"),
        cv=node.get("cv"),
        iqr=node.get("iqr"),
        p5=node.get("p5"),
        p95=node.get("p95"),
        ci_low=node.get("ci_low"),
        ci_high=node.get("ci_high"),
        samples=node.get("samples") or [],
        spread_warning=node.get("spread_warning"),
    )


def _from_ratio(node: dict) -> dict:
    n = node.get("n")
    return _summary_record(
        value=node.get("median_ratio"),
        unit="ratio",
        n=min(n) if isinstance(n, list) else n,
        ci_low=node.get("ci_low"),
        ci_high=node.get("ci_high"),
    )


def _label(name: str, path: tuple) -> str:
    return f"{name}: " + " / ".join(p.replace("_", " ") for p in path)


def figures(doc: dict) -> list[dict]:
    """Every summary and ratio in the host's probe results, in result-name order."""
    out = []
    for name in sorted(doc.get("probes") or {}):
        for path, what, node in walk((doc["probes"][name].get("results")) or {}):
            if what == "comparison":
                continue
            record = _from_summary(node) if what == "summary" else _from_ratio(node)
            metric = ".".join((name,) + path)
            out.append(
                {
                    "probe": name,
                    "kind": kind(doc, name),
                    "path": list(path),
                    "metric": metric,
                    "label": _label(name, path),
                    "higher_is_better": higher_is_better(metric, record["unit"]),
                    **record,
                }
            )
    return out


def comparisons(doc: dict) -> list[dict]:
    """Every A/B comparison (cold vs warm, allocators, concurrency steps) a probe made, with where it was found."""
    out = []
    for name in sorted(doc.get("probes") or {}):
        for path, what, node in walk((doc["probes"][name].get("results")) or {}):
            if what == "comparison":
                out.append(
                    {
                        "probe": name,
                        "kind": kind(doc, name),
                        "path": list(path),
                        "metric": ".".join((name,) + path),
                        **node,
                    }
                )
    return out


# --- headline figures ----------------------------------------------------------------------------------


def _get(node, *path):
    for key in path:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def _scalar(value, unit, n=1) -> dict | None:
    if value is None:
        return None
    return _summary_record(value=float(value), unit=unit, n=n)


def _summary_at(results, *path) -> dict | None:
    node = _get(results, *path)
    return _from_summary(node) if isinstance(node, dict) and "median" in node else None


def _load(results: dict) -> list[tuple]:
    ratio = _get(results, "achieved_vs_limit", "cold_from_pretrained_vs_disk_read")
    return [
        (
            "load.cold_total_s",
            "load_cold_s",
            "Cold model load (process start to model loaded)",
            _summary_at(results, "cold", "phases", "total_s"),
            results.get("cold_not_measured"),
        ),
        (
            "load.warm_total_s",
            "load_warm_s",
            "Warm model load (process start to model loaded)",
            _summary_at(results, "warm", "phases", "total_s"),
            None,
        ),
        (
            "load.weights_fraction_of_disk",
            "load_weights_fraction_of_disk",
            "Cold weights read speed against the disk's",
            _from_ratio(ratio) if isinstance(ratio, dict) else None,
            _get(results, "limits", "disk_read_not_measured"),
        ),
    ]


def _ttft(results: dict) -> list[tuple]:
    warm = results.get("warm") or {}
    api = next(iter(warm), None)
    return [
        (
            "ttft.cold_ms",
            "ttft_cold_ms",
            "Time to first token of the first request",
            _scalar(_get(results, "cold_start", "first_request_ttft_ms"), "ms"),
            None
            if _get(results, "cold_start", "cold_is_first_request_since_start") is not False
            else "the server had served requests before",
        ),
        (
            "ttft.warm_ms",
            "ttft_warm_ms",
            f"Warm time to first token ({api or 'no API'})",
            _summary_at(warm, api, "ttft_ms") if api else None,
            results.get("start_failure") and "vLLM did not start",
        ),
    ]


def kv_configs(results: dict) -> list[dict]:
    return [c for c in results.get("configs") or [] if isinstance(c, dict)]


def budget_label(config: dict) -> str:
    """'256MiB', '1GiB' or '0.5' (fraction of GPU memory): short enough for a check id and a chart legend."""
    value, what = config.get("budget_value"), config.get("budget_kind")
    if isinstance(value, (int, float)) and what == "bytes":
        return f"{value / 2**30:g}GiB" if value >= 2**30 else f"{value / 2**20:g}MiB"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return "".join(ch if ch.isalnum() or ch in "+-" else "_" for ch in str(config.get("budget") or "default"))


def _kv(results: dict) -> list[tuple]:
    out = []
    for c in kv_configs(results):
        budget = budget_label(c)
        why = None if c.get("fits") else (c.get("error") or c.get("failure_kind") or "the server did not start")
        out.append(
            (
                f"kv.max_concurrency.{c.get('max_model_len')}.{budget}",
                "kv_max_concurrency",
                f"KV max concurrency at max-model-len {c.get('max_model_len')} (budget {budget})",
                _scalar(c.get("max_concurrency"), "x"),
                why,
            )
        )
    return out


def _batching(results: dict) -> list[tuple]:
    levels = [lv for lv in results.get("levels") or [] if isinstance(lv, dict)]
    top = levels[-1] if levels else {}
    c = top.get("concurrency")
    ttft = top.get("ttft_ms") or {}
    return [
        (
            "batching.speedup",
            "batching_speedup",
            f"Throughput speed-up at concurrency {c} over sequential",
            _scalar(top.get("speedup_vs_sequential"), "x", (top.get("output_tok_per_s") or {}).get("n") or 1),
            None if levels else "no concurrency level completed",
        ),
        (
            "batching.ttft_p95_ms",
            "batching_ttft_p95_ms",
            f"TTFT p95 at concurrency {c}",
            _scalar(top.get("ttft_p95_ms"), "ms", ttft.get("n") or 1),
            None if levels else "no level completed",
        ),
    ]


HEADLINES = {"load": _load, "ttft": _ttft, "kv": _kv, "batching": _batching}


def headline(doc: dict) -> list[dict]:
    """The figures each probe exists to answer, from the certificate run of each probe (result name = probe)."""
    out = []
    for probe, extract in HEADLINES.items():
        envelope = (doc.get("probes") or {}).get(probe)
        if not envelope or envelope.get("probe", probe) != probe:
            continue
        for metric, threshold, title, record, missing in extract(envelope.get("results") or {}):
            record = record or _summary_record()
            out.append(
                {
                    "probe": probe,
                    "metric": metric,
                    "threshold": threshold,
                    "title": title,
                    "label": title,
                    "advice": ADVICE.get(threshold, ""),
                    "higher_is_better": higher_is_better(metric, record["unit"]),
                    "spread_check": record["value"] is not None
                    and (record["n"] or 0) >= 3
                    and record["cv"] is not None,
                    "missing": None if record["value"] is not None else (missing or "the probe gave no figure"),
                    **record,
                }
            )
    return out


def numeric_facts(doc: dict) -> dict[str, tuple[float, str | None, bool]]:
    """Figures worth comparing across a fleet: {metric: (value, unit, higher_is_better)}."""
    out = {}
    for fig in headline(doc):
        if fig["value"] is not None:
            out[fig["metric"]] = (float(fig["value"]), fig["unit"], fig["higher_is_better"])
    for gpu in h2d(doc):
        if gpu.get("pinned_gb_per_s") is not None:
            out[f"gpu.{gpu['gpu_index']}.h2d_pinned_gb_per_s"] = (gpu["pinned_gb_per_s"], "GB/s", True)
    facts = doc.get("facts") or {}
    for gpu in facts.get("gpus") or []:
        pcie = gpu.get("pcie") or {}
        if pcie.get("width_current") is not None:
            out[f"gpu.{gpu.get('index')}.pcie_width"] = (float(pcie["width_current"]), "lanes", True)
    return out


def per_gpu(doc: dict) -> dict[str, list[dict]]:
    """Runs of one plan entry on each GPU (results <entry>_<index>, the probe's --gpu):
    {entry: [{gpu_index, result, ttft_warm_ms, ttft_warm_ci_ms, kv_tokens}]}, entries of two GPUs or more."""
    groups: dict[str, list[dict]] = {}
    for name, envelope in sorted((doc.get("probes") or {}).items()):
        if not isinstance(envelope, dict):
            continue
        gpu = (envelope.get("params") or {}).get("gpu")
        entry, _, index = name.rpartition("_")
        if not isinstance(gpu, int) or isinstance(gpu, bool) or index != str(gpu):
            continue
        results = envelope.get("results") or {}
        warm = results.get("warm") or {}
        api = next(iter(warm), None) if isinstance(warm, dict) else None
        ttft = (_summary_at(warm, api, "ttft_ms") if api else None) or {}
        configs = kv_configs(results)
        is_ttft = envelope.get("probe") == "ttft"
        groups.setdefault(entry, []).append({
            "gpu_index": gpu,
            "result": name,
            "ttft_warm_ms": ttft.get("value") if is_ttft else None,
            "ttft_warm_ci_ms": (ttft.get("ci_low"), ttft.get("ci_high")) if is_ttft else None,
            "kv_tokens": configs[0].get("kv_tokens") if envelope.get("probe") == "kv" and configs else None,
        })
    return {entry: runs for entry, runs in groups.items() if len(runs) >= 2}


def h2d(doc: dict) -> list[dict]:
    """Host-to-device copy GB/s per GPU from the load probe: [{gpu_index, name, pci_bus_id, pinned/pageable}]."""
    results = ((doc.get("probes") or {}).get("load") or {}).get("results") or {}
    out = []
    for g in _get(results, "limits", "h2d") or []:
        if isinstance(g, dict) and g.get("gpu_index") is not None:
            out.append(
                {
                    "gpu_index": g["gpu_index"],
                    "name": g.get("name"),
                    "pci_bus_id": g.get("pci_bus_id"),
                    "pinned_gb_per_s": (g.get("pinned_gb_per_s") or {}).get("median"),
                    "pageable_gb_per_s": (g.get("pageable_gb_per_s") or {}).get("median"),
                }
            )
    return out
