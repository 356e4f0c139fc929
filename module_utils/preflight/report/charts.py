"""The probe sections of a host page: for each probe kind the charts that answer its question, drawn from
whichever results are present, and "not run" (with the run's reason when it gave one) otherwise.

  load      cold vs warm time per phase, with the class's limits; weights GB/s against disk, page cache,
            host-to-device and PCIe link limits; warm weight load per THP mode for the THP A/B
  generate  every steady-state and first-call sample per allocator (the distributions, not one number)
  ttft      first request vs warm TTFT (median, p5-p95) with the class's limits
  kv        max concurrency vs max-model-len, one line per KV budget, with the target
  batching  throughput and TTFT (p50, p95) vs concurrency
"""

from __future__ import annotations

from . import metrics, svg

SECTIONS = [
    ("load", "Model load: cold vs warm"),
    ("generate", "Generation latency by allocator"),
    ("ttft", "Time to first token: cold vs warm"),
    ("kv", "KV cache: max concurrency vs max-model-len"),
    ("batching", "Throughput and TTFT vs concurrency"),
]
PHASES = [
    ("interpreter_start_s", "interpreter"),
    ("import_s", "import torch + transformers"),
    ("cuda_init_s", "CUDA init"),
    ("from_pretrained_s", "from_pretrained"),
    ("to_device_s", "to(device)"),
    ("total_s", "total"),
]


def _limit_refs(doc: dict, key: str, unit_scale: float = 1.0) -> list[dict]:
    limits = doc["thresholds"].get(key) or {}
    refs = []
    for level in ("warn", "fail"):
        if limits.get(level) is not None:
            refs.append({"value": limits[level] * unit_scale, "label": f"{level} at {limits[level]:g}"})
    return refs


def sections(doc: dict) -> list[dict]:
    by_kind: dict[str, list[str]] = {}
    for name in sorted(doc["probes"]):
        by_kind.setdefault(metrics.kind(doc, name), []).append(name)
    known = [k for k, _ in SECTIONS]
    skipped = {s.get("probe"): s.get("reason") for s in ((doc.get("run") or {}).get("skipped") or [])}
    out = []
    for kind, title in SECTIONS + [(k, k) for k in sorted(by_kind) if k not in known]:
        names = by_kind.get(kind, [])
        if not names:
            reason = (
                skipped.get(kind)
                or next((r for p, r in skipped.items() if p and p.startswith(kind)), None)
                or skipped.get("probes")  # the whole probe phase was left out
            )
            out.append(
                {"probe": kind, "title": title, "ran": False, "charts": [], "rows": [], "notes": [], "reason": reason}
            )
            continue
        charts, rows, notes = [], [], []
        for name in names:
            envelope = doc["probes"][name]
            results = envelope.get("results") or {}
            charts += _specific(kind, name, results, doc)
            figures = [f for f in metrics.figures(doc) if f["probe"] == name]
            rows += [
                [f["label"], f["value"], _ci(f), f["p5"], f["p95"], f["n"], f["unit"], f["spread_warning"]]
                for f in figures
            ]
            took = f" in {envelope['duration_s']:g} s" if envelope.get("duration_s") is not None else ""
            notes.append(f"{name}: run{took} at {envelope.get('started_at') or 'an unknown time'}.")
            notes += [
                f"{name}: A/B {c['metric']}: {c.get('verdict')}"
                for c in metrics.comparisons(doc)
                if c["probe"] == name and c.get("verdict")
            ]
            notes += [
                f"{name}: {str(v.get('status')).upper()} {v['name']}: {v.get('text')}"
                for v in envelope.get("verdicts") or []
            ]
            notes += [f"{name}: {n}" for n in results.get("notes") or [] if isinstance(n, str)]
            notes += [f"{name}: ERROR {err}" for err in envelope.get("errors") or []]
        notes += [f"NOTE {c['title']}: {c['reason']}" for c in doc.get("checks") or []
                  if c["status"] == "warn" and c["id"].startswith(f"probe.{kind}.") and c["id"].endswith(".spread")
                  and ".verdict." not in c["id"]]
        if kind == "load":
            charts += _thp_ab(doc, names)
        out.append(
            {"probe": kind, "title": title, "ran": True, "charts": charts, "rows": rows, "notes": notes, "reason": None}
        )
    return out


def _ci(f: dict) -> str | None:
    if f["ci_low"] is None or f["ci_high"] is None:
        return None
    return f"{f['ci_low']:.4g} - {f['ci_high']:.4g}"


def _bar(label, node, color=None) -> dict:
    node = node or {}
    return {"label": label, "value": node.get("median"), "low": node.get("p5"), "high": node.get("p95"), "color": color}


def _specific(kind: str, name: str, results: dict, doc: dict) -> list[str]:
    draw = {"load": _load, "generate": _generate, "ttft": _ttft, "kv": _kv, "batching": _batching}.get(kind)
    return draw(name, results, doc) if draw else []


def _load(name: str, results: dict, doc: dict) -> list[str]:
    charts = []
    bars = []
    for phase, label in PHASES:
        for condition, color in (("cold", "#3366cc"), ("warm", "#dc7633")):
            node = metrics._get(results, condition, "phases", phase)
            if isinstance(node, dict) or (condition == "cold" and results.get("cold") is None and phase == "total_s"):
                bars.append(_bar(f"{condition} {label}", node, color))
    refs = []
    if name == "load":
        refs = [{"value": r["value"], "label": f"cold {r['label']}"} for r in _limit_refs(doc, "load_cold_s")[:1]]
        refs += [{"value": r["value"], "label": f"warm {r['label']}"} for r in _limit_refs(doc, "load_warm_s")[:1]]
    if bars:
        charts.append(svg.bar_chart(f"{name}: seconds per phase, cold vs warm (median, p5-p95)", bars, "s", refs))
    speed = [
        _bar("cold from_pretrained", metrics._get(results, "cold", "from_pretrained_gb_per_s"), "#3366cc"),
        _bar("warm from_pretrained", metrics._get(results, "warm", "from_pretrained_gb_per_s"), "#dc7633"),
        _bar("warm to(device)", metrics._get(results, "warm", "to_device_gb_per_s"), "#2e8b57"),
    ]
    limits = results.get("limits") or {}
    lines = []
    for key, label in (("disk_read_gb_per_s", "disk read"), ("page_cache_read_gb_per_s", "page cache read")):
        node = limits.get(key)
        if isinstance(node, dict) and node.get("median") is not None:
            lines.append({"value": node["median"], "label": f"{label} {node['median']:.3g}"})
    for gpu in limits.get("h2d") or []:
        pinned = (gpu.get("pinned_gb_per_s") or {}).get("median")
        if pinned is not None:
            lines.append({"value": pinned, "label": f"GPU {gpu.get('gpu_index')} pinned copy {pinned:.3g}"})
    for gpu in (doc.get("facts") or {}).get("gpus") or []:
        link = (gpu.get("pcie") or {}).get("bandwidth_gbs_max")
        if link:
            lines.append({"value": link, "label": f"GPU {gpu.get('index')} PCIe link {link:.3g}"})
            break
    if any(b["value"] is not None for b in speed):
        charts.append(
            svg.bar_chart(f"{name}: weights GB/s against the measured limits", speed, "GB/s", lines, squash=True)
        )
    return charts


def _thp_ab(doc: dict, names: list[str]) -> list[str]:
    bars = []
    for name in names:
        if not name.startswith(metrics.THP_AB_PREFIX):
            continue
        node = metrics._get(doc["probes"][name].get("results") or {}, "warm", "phases", "load_s")
        bars.append(
            {
                "label": f"THP {metrics.thp_ab_arm(name, doc['probes'][name])[0]}",
                "value": (node or {}).get("median"),
                "low": (node or {}).get("ci_low"),
                "high": (node or {}).get("ci_high"),
            }
        )
    if not bars:
        return []
    return [svg.bar_chart("THP A/B: warm weight load per THP arm (median, 95 % CI)", bars, "s")]


def _generate(name: str, results: dict, doc: dict) -> list[str]:
    charts = []
    allocators = results.get("allocators") or []
    # probes.generate keys them by name (envelope.schema.json, generate_results); a list is read too.
    allocators = allocators.values() if isinstance(allocators, dict) else allocators
    allocators = [a for a in allocators if isinstance(a, dict)]
    for key, label in (("steady_state_s", "steady-state generate()"), ("first_call_s", "first generate() call")):
        groups = []
        for a in allocators:
            node = a.get(key) or {}
            groups.append(
                {
                    "label": str(a.get("allocator")),
                    "samples": node.get("samples") or [],
                    "median": node.get("median"),
                    "ci_low": node.get("ci_low"),
                    "ci_high": node.get("ci_high"),
                }
            )
        if any(g["samples"] for g in groups):
            charts.append(
                svg.strip_chart(f"{name}: {label} per allocator (every sample, median, 95 % CI)", groups, "s")
            )
    return charts


def _ttft(name: str, results: dict, doc: dict) -> list[str]:
    cold = metrics._get(results, "cold_start", "first_request_ttft_ms")
    bars = [{"label": "first request (cold)", "value": cold, "color": "#3366cc"}]
    for api, stats in sorted((results.get("warm") or {}).items()):
        if isinstance(stats, dict):
            bars.append(_bar(f"warm {api}", stats.get("ttft_ms"), "#dc7633"))
    refs = [{"value": r["value"], "label": f"warm {r['label']}"} for r in _limit_refs(doc, "ttft_warm_ms")[:1]]
    refs += [{"value": r["value"], "label": f"cold {r['label']}"} for r in _limit_refs(doc, "ttft_cold_ms")[:1]]
    if name != "ttft":
        refs = []
    return [svg.bar_chart(f"{name}: time to first token (warm: median, p5-p95)", bars, "ms", refs)]


def _kv(name: str, results: dict, doc: dict) -> list[str]:
    series: dict[str, list] = {}
    for c in metrics.kv_configs(results):
        if c.get("max_model_len") is None:
            continue
        series.setdefault(f"budget {metrics.budget_label(c)}", []).append(
            (c["max_model_len"], c.get("max_concurrency"))
        )
    if not series:
        return []
    target = (doc["thresholds"].get("kv_max_concurrency") or {}).get("warn")
    refs = [{"value": target, "label": f"target {target:g}"}] if target is not None else []
    return [
        svg.line_chart(
            f"{name}: max concurrency vs max-model-len",
            [{"label": label, "points": sorted(points)} for label, points in sorted(series.items())],
            "max-model-len (tokens)",
            "requests at once",
            refs,
        )
    ]


def _batching(name: str, results: dict, doc: dict) -> list[str]:
    levels = [lv for lv in results.get("levels") or [] if isinstance(lv, dict) and lv.get("concurrency") is not None]
    if not levels:
        return []
    tput = [
        (
            lv["concurrency"],
            (lv.get("output_tok_per_s") or {}).get("median"),
            (lv.get("output_tok_per_s") or {}).get("ci_low"),
            (lv.get("output_tok_per_s") or {}).get("ci_high"),
        )
        for lv in levels
    ]
    ttft = [
        {"label": "TTFT p50", "points": [(lv["concurrency"], lv.get("ttft_p50_ms")) for lv in levels]},
        {"label": "TTFT p95", "points": [(lv["concurrency"], lv.get("ttft_p95_ms")) for lv in levels]},
    ]
    refs = _limit_refs(doc, "batching_ttft_p95_ms")[:1]
    return [
        svg.line_chart(
            f"{name}: output throughput vs concurrency (median, 95 % CI)",
            [{"label": "output tok/s", "points": tput}],
            "concurrent requests",
            "tok/s",
        ),
        svg.line_chart(f"{name}: TTFT vs concurrency", ttft, "concurrent requests", "ms", refs),
    ]
