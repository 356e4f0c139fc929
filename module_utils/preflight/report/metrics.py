"""Figures out of probe envelopes: every statistic summary and A/B comparison a probe returned.

Probes return nested `results` with statistic summaries (probes.stats.summarize: n, unit, median, p5, p95,
cv, iqr, ci_low, ci_high, samples, ...) and comparisons (probes.stats.compare: a, b, faster, inside_noise,
verdict). Everything here walks those generically, so a new measurement shows up in the reports without
code here; KNOWN gives the figures that are judged against a threshold their title and advice.
"""

from __future__ import annotations

import fnmatch

# (pattern over "<probe>.<path inside results>", threshold key, title, advice when it misses the threshold)
KNOWN = [
    (
        "load.cold.total_s",
        "load_cold_s",
        "Cold model load time",
        "Slow storage or a slow page-cache fill: compare the disk's read GB/s in this report with the weights' GB/s.",
    ),
    (
        "load.warm.total_s",
        "load_warm_s",
        "Warm model load time",
        "Weights are in page cache, so the time is Python imports and host-to-device copies: check CPU load and the "
        "PCIe link.",
    ),
    (
        "ttft.cold.ttft_ms",
        "ttft_cold_ms",
        "Cold time to first token",
        "The first request pays for graph capture and allocation: warm the server before it takes traffic.",
    ),
    (
        "ttft.warm.ttft_ms",
        "ttft_warm_ms",
        "Warm time to first token",
        "Prefill is slower than this class should be: check GPU clocks, other GPU processes, and THP/NUMA settings.",
    ),
    (
        "batching.*.ttft_p95_ms",
        "batching_ttft_p95_ms",
        "TTFT p95 at the highest concurrency",
        "Requests queue under load: lower max_num_seqs or max_model_len, or add capacity.",
    ),
]

# Words in a figure's name or unit that mean "more is better".
_HIGHER_IS_BETTER = (
    "throughput",
    "gbps",
    "gb_s",
    "per_s",
    "tok_s",
    "tokens_per",
    "concurrency",
    "speedup",
    "bandwidth",
    "/s",
)


# A list item that names itself (an allocator, a concurrency level, a GPU) is addressed by that name.
NAME_KEYS = ("allocator", "name", "level", "concurrency", "max_model_len", "gpu_index", "index", "condition")


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
            if key in ("raw", "runs", "priming_runs"):
                continue  # raw samples: already inside the summaries
            yield from walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            name = next((value[k] for k in NAME_KEYS if isinstance(value, dict) and value.get(k) is not None), i)
            yield from walk(value, path + (str(name),))


def higher_is_better(name: str, unit: str | None) -> bool:
    text = f"{name} {unit or ''}".lower()
    return any(word in text for word in _HIGHER_IS_BETTER)


def _known(metric: str):
    for pattern, key, title, advice in KNOWN:
        if fnmatch.fnmatchcase(metric, pattern):
            return key, title, advice
    return None, None, None


def _label(probe: str, path: tuple) -> str:
    return f"{probe}: " + " / ".join(p.replace("_", " ") for p in path)


def figures(doc: dict) -> list[dict]:
    """One record per statistic summary in the host's probe results, in probe order."""
    out = []
    for probe in sorted(doc.get("probes") or {}):
        envelope = doc["probes"][probe]
        for path, kind, node in walk(envelope.get("results") or {}):
            if kind == "comparison":
                continue
            if kind == "ratio":
                node = {"median": node.get("median_ratio"), "unit": "ratio", "n": min(node["n"]) if isinstance(node.get("n"), list) else node.get("n"),
                        "ci_low": node.get("ci_low"), "ci_high": node.get("ci_high"), "samples": []}
            metric = ".".join((probe,) + path)
            key, title, advice = _known(metric)
            out.append(
                {
                    "probe": probe,
                    "path": list(path),
                    "metric": metric,
                    "title": title or _label(probe, path),
                    "label": _label(probe, path),
                    "value": node.get("median"),
                    "unit": node.get("unit"),
                    "n": node.get("n"),
                    "cv": node.get("cv"),
                    "iqr": node.get("iqr"),
                    "p5": node.get("p5"),
                    "p95": node.get("p95"),
                    "ci_low": node.get("ci_low"),
                    "ci_high": node.get("ci_high"),
                    "samples": node.get("samples") or [],
                    "spread_warning": node.get("spread_warning"),
                    "threshold": key,
                    "advice": advice or "",
                    "spread_check": key is not None and (node.get("n") or 0) >= 3,
                    "higher_is_better": higher_is_better(metric, node.get("unit")),
                    "missing": None if node.get("median") is not None else (node.get("spread_warning") or "no samples"),
                }
            )
    return out


def comparisons(doc: dict) -> list[dict]:
    """Every A/B comparison (allocator, THP policy, ...) a probe made, with where it was found."""
    out = []
    for probe in sorted(doc.get("probes") or {}):
        for path, kind, node in walk((doc["probes"][probe].get("results")) or {}):
            if kind == "comparison":
                out.append({"probe": probe, "path": list(path), "metric": ".".join((probe,) + path), **node})
    return out


def numeric_facts(doc: dict) -> dict[str, tuple[float, str | None, bool]]:
    """Host figures worth comparing across a fleet: {metric: (value, unit, higher_is_better)}."""
    out = {}
    for fig in figures(doc):
        if fig["value"] is not None:
            out[fig["metric"]] = (float(fig["value"]), fig["unit"], fig["higher_is_better"])
    facts = doc.get("facts") or {}
    for gpu in facts.get("gpus") or []:
        pcie = gpu.get("pcie") or {}
        if pcie.get("width_current") is not None:
            out[f"gpu.{gpu.get('index')}.pcie_width"] = (float(pcie["width_current"]), "lanes", True)
    return out
