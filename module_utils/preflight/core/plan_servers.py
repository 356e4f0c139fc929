"""Which planned vLLM probes share one server start, and which servers run side by side.

Items of the vLLM probes (ttft, kv, batching) that ask for the same server - the same model, max-model-len,
KV budget, enforce-eager, extra server arguments and environment, and GPU - become members of one server:
it starts once and they measure it one after the other (ttft first: its cold request must be the first the
server answers). A kv entry shares only at exactly one length and one budget; entries with an endpoint, a
THP arm, or several kv configurations keep servers of their own. Servers of per-GPU entries (one GPU each)
run side by side, one wave per round of servers a GPU needs.

A shared run is one plan item of the probe ``suite`` (probes/suite.py):
``{name, entry: None, probe: "suite", timeout_s, thp_mode: None, per_gpu, gpu: None, vllm: True,
servers: [[member item with its options], ...]}``; each member keeps its own result name, and the run record
lists members, never the suite.
"""

from __future__ import annotations

import json

from .catalog import SUITE_PROBE, VLLM_PROBES

# probe_plan options that make two servers different; the GPU comes from the item.
SERVER_OPTIONS = ("model", "max_model_len", "kv_budget", "enforce_eager", "server_args", "server_env")
# Options that mean "do not start a server here": such an entry never shares.
OWN_SERVER_OPTIONS = ("endpoint", "api_key")


def _one(value):
    """A kv list option at one value is that value; several values (a sweep) cannot share: None."""
    if isinstance(value, list | tuple):
        return value[0] if len(value) == 1 else None
    return value


def server_key(item: dict, options: dict) -> str | None:
    """What server this item starts, as a comparable string; None when it must have a server of its own."""
    if item["probe"] not in VLLM_PROBES or item.get("thp_mode") is not None:
        return None
    if any(options.get(name) is not None for name in OWN_SERVER_OPTIONS):
        return None
    wanted = {}
    for name in SERVER_OPTIONS:
        value = options.get(name)
        if item["probe"] == "kv" and name in ("max_model_len", "kv_budget"):
            if value is None or _one(value) is None:
                return None  # kv's own default is a sweep
            value = _one(value)
        wanted[name] = value if isinstance(value, dict | list | bool) or value is None else str(value)
    wanted["gpu"] = item.get("gpu")
    return json.dumps(wanted, sort_keys=True)


def member(item: dict, options: dict) -> dict:
    """A suite member: the plan item with the options it runs with (its GPU among them)."""
    with_gpu = dict(options, gpu=item["gpu"]) if item.get("gpu") is not None else dict(options)
    return dict(item, options=with_gpu)


def _suite(servers: list[list[dict]]) -> dict:
    names = [m["name"] for server in servers for m in server]
    gpus = [server[0]["gpu"] for server in servers]
    label = "+".join(names) if len(servers) == 1 else f"{'+'.join(names)} (side by side on GPUs " \
                                                       f"{', '.join(map(str, gpus))})"
    return {
        "name": label,
        "entry": None,
        "probe": SUITE_PROBE,
        "timeout_s": max(sum(m["timeout_s"] for m in server) for server in servers),
        "thp_mode": None,
        "per_gpu": any(m.get("per_gpu") for server in servers for m in server),
        "gpu": None,
        "vllm": True,
        "servers": servers,
    }


def group(items: list[dict], probe_plan: dict) -> list[dict]:
    """The run items with shared servers made: suite items where the first of their members stood."""
    servers: dict[str, list[dict]] = {}
    order: list = []  # item or server key, in plan order
    for item in items:
        options = (probe_plan.get(item["entry"]) or {}).get("options") or {}
        key = server_key(item, options)
        if key is None:
            order.append(item)
            continue
        if key not in servers:
            servers[key] = []
            order.append(key)
        servers[key].append(member(item, options))
    out, waves = [], _waves([servers[k] for k in order if isinstance(k, str) and servers[k][0]["per_gpu"]])
    for entry in order:
        if not isinstance(entry, str):
            out.append(entry)
        elif not servers[entry][0]["per_gpu"]:
            shared = servers[entry]
            out.append(_suite([shared]) if len(shared) > 1 else _plain(shared[0]))
        elif waves:  # per-GPU servers: all their waves where the first of them stood
            out += waves
            waves = []
    return out


def _plain(item: dict) -> dict:
    return {k: v for k, v in item.items() if k != "options"}


def _waves(per_gpu: list[list[dict]]) -> list[dict]:
    """Per-GPU servers, one per GPU at a time: wave k holds each GPU's k-th server."""
    by_gpu: dict = {}
    for server in per_gpu:
        by_gpu.setdefault(server[0]["gpu"], []).append(server)
    waves = []
    for k in range(max((len(s) for s in by_gpu.values()), default=0)):
        wave = [servers[k] for servers in by_gpu.values() if k < len(servers)]
        if len(wave) == 1 and len(wave[0]) == 1:
            waves.append(_plain(wave[0][0]))
        else:
            waves.append(_suite(wave))
    return waves


def members(item: dict) -> list[dict]:
    """The items a plan item stands for: a suite's members, or the item itself."""
    return [m for server in item["servers"] for m in server] if item.get("servers") else [item]
