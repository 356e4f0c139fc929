"""Run one probe of the `probes` package as a child process and hand back its envelope.

The logic behind library/slm_probe.py, importable without Ansible: the per-probe option whitelist, the
argument list it builds (never a shell string), the child process with a timeout that takes the whole
process group down (a vLLM server included), and the parsing of the probe's JSON from its stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

PROBES = ("load", "generate", "ttft", "kv", "batching")


@dataclass(frozen=True)
class Option:
    """One probe option: the flag it becomes and the type of value it takes.

    kind: int | float | str | bool (a switch: true adds the flag, false leaves it out) |
    int_list | float_list | str_list (the flag followed by every element, argparse nargs="+").
    """

    flag: str
    kind: str
    choices: tuple = ()


def _opts(**spec: tuple) -> dict[str, Option]:
    return {name: Option(*args) for name, args in spec.items()}


# Options shared by the probes that start a vLLM server (probes/server.py's flags).
_SERVER = dict(
    model=("--model", "str"),
    port=("--port", "int"),
    max_model_len=("--max-model-len", "int"),
    kv_cache_memory_bytes=("--kv-cache-memory-bytes", "int"),
    gpu_memory_utilization=("--gpu-memory-utilization", "float"),
    dtype=("--dtype", "str"),
    enforce_eager=("--enforce-eager", "bool"),
    ready_timeout_s=("--ready-timeout", "float"),
    server_log=("--server-log", "str"),
    base_url=("--base-url", "str"),
    seed=("--seed", "int"),
)

# The whitelist: option name (what a playbook writes under `options:`) -> flag of `python -m probes <probe>`.
# tests/integration/test_slm_probe.py checks every flag here against the probe's own --help.
PROBE_OPTIONS: dict[str, dict[str, Option]] = {
    "load": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        dtype=("--dtype", "str"),
        repeats=("--repeats", "int"),
        drop_caches=("--drop-caches", "bool"),
    ),
    "generate": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        dtype=("--dtype", "str"),
        repeats=("--repeats", "int"),
        prompt_tokens=("--prompt-tokens", "int"),
        new_tokens=("--new-tokens", "int"),
        allocators=("--allocators", "str_list"),
    ),
    "ttft": _opts(
        **_SERVER,
        requests=("--requests", "int"),
        prompt_tokens=("--prompt-tokens", "int"),
        output_tokens=("--output-tokens", "int"),
    ),
    "kv": _opts(
        **_SERVER,
        max_model_lens=("--max-model-lens", "int_list"),
    ),
    "batching": _opts(
        **_SERVER,
        concurrency=("--concurrency", "int_list"),
        requests=("--requests", "int"),
        prompt_tokens=("--prompt-tokens", "int"),
        output_tokens=("--output-tokens", "int"),
    ),
}

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "int_list": "a list of integers",
    "float_list": "a list of numbers",
    "str_list": "a list of strings",
}


class ProbeArgumentError(ValueError):
    """Every problem with the requested probe and options, in one message."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def _scalar(kind: str, value):
    """The value as the flag's text, or None when it is not of the kind (a YAML boolean is never a number)."""
    if isinstance(value, bool):
        return None
    if kind == "int":
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return str(int(value))
        return None
    if kind == "float":
        if isinstance(value, int | float):
            return repr(float(value)) if isinstance(value, float) else str(value)
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return None
            return value.strip()
        return None
    if kind == "str":
        return value if isinstance(value, str) and value != "" else None
    raise AssertionError(f"unknown option kind {kind!r}")


def option_args(probe: str, options: dict | None) -> list[str]:
    """The probe's options -> its command-line flags, in the order given; raises ProbeArgumentError."""
    if probe not in PROBE_OPTIONS:
        raise ProbeArgumentError([f"probe {probe!r} is not one of {', '.join(PROBES)}"])
    allowed = PROBE_OPTIONS[probe]
    errors: list[str] = []
    argv: list[str] = []
    for name, value in (options or {}).items():
        spec = allowed.get(name)
        if spec is None:
            errors.append(
                f"options.{name} is not an option of the {probe} probe; allowed: {', '.join(sorted(allowed))}"
            )
            continue
        if value is None:  # null means "the probe's default"
            continue
        want = _KIND_WORDS[spec.kind]
        if spec.kind == "bool":
            if not isinstance(value, bool):
                errors.append(f"options.{name} must be {want}, got {value!r}")
            elif value:
                argv.append(spec.flag)
            continue
        if spec.kind.endswith("_list"):
            items = value if isinstance(value, list | tuple) else None
            texts = [_scalar(spec.kind[: -len("_list")], v) for v in items] if items else None
            if not texts or any(t is None for t in texts):
                errors.append(f"options.{name} must be {want} (at least one), got {value!r}")
                continue
            argv.extend([spec.flag, *texts])
            continue
        text = _scalar(spec.kind, value)
        if text is None:
            errors.append(f"options.{name} must be {want}, got {value!r}")
            continue
        argv.extend([spec.flag, text])
    if errors:
        raise ProbeArgumentError(errors)
    return argv


def build_command(python: str, probe: str, options: dict | None) -> list[str]:
    """[python, -m, probes, <probe>, <flags...>, --json]: an argument list, never a shell string."""
    return [python, "-m", "probes", probe, *option_args(probe, options), "--json"]


def probe_env(runtime_dir: str, extra: dict | None, base: dict | None = None) -> dict[str, str]:
    """The child's environment: the caller's, then `extra`, with runtime_dir first on PYTHONPATH.

    Probes are offline by design (HF_HUB_OFFLINE=1 unless the operator says otherwise), unbuffered so a
    killed probe still leaves its last lines, and they write no bytecode into the runtime directory.
    """
    env = dict(os.environ if base is None else base)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    paths = [runtime_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != runtime_dir]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def tail(text: str, lines: int = 40, chars: int = 4000) -> str:
    """The end of a stream: what an operator needs to see why a probe stopped."""
    out = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return out[-chars:]


def parse_envelope(stdout: str) -> dict | None:
    """The probe's JSON document: all of stdout, else the last top-level object in it (a library may print)."""
    text = stdout.strip()
    if not text:
        return None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else None
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    for pos in reversed([p for p in starts if text.startswith("{", p)]):
        try:
            doc, end = decoder.raw_decode(text, pos)
        except ValueError:
            continue
        if isinstance(doc, dict) and not text[end:].strip():
            return doc
    return None


def envelope_problem(doc: dict | None, probe: str) -> str | None:
    """Why doc is not this probe's envelope (None when it is one)."""
    if doc is None:
        return "the probe printed no JSON document on stdout"
    missing = [k for k in ("schema_version", "probe", "results", "verdicts", "environment") if k not in doc]
    if missing:
        return f"the probe's JSON lacks {', '.join(missing)}: not a probe envelope"
    if doc["probe"] != probe:
        return f"the JSON is the envelope of probe {doc['probe']!r}, not of {probe!r}"
    return None


@dataclass
class ProbeRun:
    cmd: list[str]
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    envelope: dict | None = None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and self.problem is None


def run(cmd: list[str], probe: str, env: dict[str, str], cwd: str, timeout_s: float) -> ProbeRun:
    """Run the probe in its own process group; on timeout SIGTERM the group, then SIGKILL what is left."""
    started = time.monotonic()
    out = ProbeRun(cmd=cmd)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        out.problem = f"cannot start {cmd[0]}: {exc.strerror or exc}"
        out.duration_s = round(time.monotonic() - started, 3)
        return out
    try:
        out.stdout, out.stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out.timed_out = True
        _stop_group(proc)
        out.stdout, out.stderr = proc.communicate()
    out.rc = proc.returncode
    out.duration_s = round(time.monotonic() - started, 3)
    if out.timed_out:
        out.problem = f"the probe ran past its timeout of {timeout_s:g} s and was stopped"
        return out
    out.envelope = parse_envelope(out.stdout)
    problem = envelope_problem(out.envelope, probe)
    if problem and out.rc == 0:
        out.problem = problem
    elif out.rc != 0:
        out.problem = f"the probe exited with status {out.rc}"
        if problem:
            out.envelope = None
    return out


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
