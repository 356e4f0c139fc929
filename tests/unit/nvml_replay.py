"""Replays an NVML recording (tests/fixtures/nvml/*.json, written by tests/fixtures/nvml/record.py on a GPU node).

No GPU here, so this is a stand-in for pynvml, named as such: it answers each call exactly as the recorded
node's NVML did (values, or the recorded NVML error code raised as pynvml's own NVMLError).
`several()` builds a node of N GPUs from a one-GPU recording, each a copy with its own index, PCI bus id and
UUID, and lets a test change what one GPU answers; the tests say so where they use it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pynvml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvml"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _struct(value):
    return SimpleNamespace(**value) if isinstance(value, dict) else value


class RecordedNvml:
    """pynvml as the recorded node answered it."""

    NVMLError = pynvml.NVMLError

    def __init__(self, recording: dict):
        self._answers = {}
        for call in recording["calls"]:
            key = (call["function"], call["index"], json.dumps(call["args"]))
            self._answers[key] = call

    def __getattr__(self, name):
        if not name.startswith("nvml"):
            return getattr(pynvml, name)  # constants

        def call(*args):
            if name == "nvmlDeviceGetHandleByIndex":
                index, rest = args[0], []
            elif name.startswith("nvmlDevice") and args:  # the handle, which the replay makes the index
                index, rest = args[0], list(args[1:])
            else:
                index, rest = None, list(args)
            key = (name, index, json.dumps(rest))
            if key not in self._answers:
                raise AssertionError(f"not in the recording: {key}")
            answer = self._answers[key]
            if "error" in answer:
                raise pynvml.NVMLError(answer["error"])
            return index if name == "nvmlDeviceGetHandleByIndex" else _struct(answer["value"])

        return call


def several(recording: dict, count: int, change: dict[int, dict[str, object]] | None = None) -> dict:
    """A node of ``count`` GPUs, each answering as the recorded GPU 0 did; ``change[i][function]`` replaces
    GPU i's answer to that call (a value, or {"error": code})."""
    change = change or {}
    one = [c for c in recording["calls"] if c["index"] == 0]
    node = [c for c in recording["calls"] if c["index"] is None]
    out = copy.deepcopy(recording)
    out["calls"] = []
    numa = next(iter(recording["pci_numa_node"].values()), None)
    out["pci_numa_node"] = {}
    for call in node:
        call = copy.deepcopy(call)
        if call["function"] == "nvmlDeviceGetCount":
            call["value"] = count
        out["calls"].append(call)
    for i in range(count):
        for call in one:
            call = copy.deepcopy(call)
            call["index"] = i
            if call["function"] == "nvmlDeviceGetPciInfo":
                call["value"]["busId"] = f"00000000:{0x17 + 0x20 * i:02X}:00.0"
            if call["function"] == "nvmlDeviceGetUUID":
                call["value"] = call["value"][:-2] + f"{i:02d}"
            if call["function"] in change.get(i, {}):
                new = change[i][call["function"]]
                call.pop("value", None), call.pop("error", None)
                call.update(new if isinstance(new, dict) and "error" in new else {"value": new})
            out["calls"].append(call)
        out["pci_numa_node"][f"0000:{0x17 + 0x20 * i:02x}:00.0"] = numa
    return out
