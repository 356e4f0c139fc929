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
    """One probe option: the flag it becomes and the kind of value it takes.

    int | float | str: `--flag VALUE`.  bool: a switch, true adds `--flag`, false leaves it out.
    budget: a number or a size word (0.5, "1GiB"), `--flag VALUE`.
    csv / int_csv / budget_csv: a list (or one value), `--flag a,b,c`.
    repeat: a list, `--flag=ITEM` per item (the `=` lets an item start with `--`).
    env_map: a mapping, `--flag NAME=VALUE` per entry.
    """

    flag: str
    kind: str


def _opts(**spec: tuple) -> dict[str, Option]:
    return {name: Option(*args) for name, args in spec.items()}


# probes/server.py add_server_args(): the flags of every probe that starts a vLLM server.
_SERVER_COMMON = dict(
    model=("--model", "str"),
    enforce_eager=("--enforce-eager", "bool"),
    server_args=("--server-arg", "repeat"),
    server_env=("--server-env", "env_map"),
    ready_timeout_s=("--ready-timeout-s", "float"),
    log_dir=("--log-dir", "str"),
    gpu=("--gpu", "int"),
)
_SERVER_ONE = dict(
    _SERVER_COMMON,
    endpoint=("--endpoint", "str"),
    api_key=("--api-key", "str"),
    max_model_len=("--max-model-len", "int"),
    kv_budget=("--kv-budget", "budget"),
)

# The whitelist: option name (what a playbook writes under `options:`) -> flag of `python -m probes <probe>`.
# tests/integration/test_slm_probe.py checks every flag here against the probe's own argparse.
PROBE_OPTIONS: dict[str, dict[str, Option]] = {
    "load": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        placement=("--placement", "str"),
        repeats=("--repeats", "int"),
        drop_caches=("--drop-caches", "bool"),
        read_repeats=("--read-repeats", "int"),
        copy_mib=("--copy-mib", "int"),
        copy_repeats=("--copy-repeats", "int"),
        gpus=("--gpus", "int_csv"),
        timeout_s=("--timeout-s", "float"),
    ),
    "generate": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        allocators=("--allocators", "csv"),
        processes=("--processes", "int"),
        calls=("--calls", "int"),
        prompt_tokens=("--prompt-tokens", "int"),
        new_tokens=("--new-tokens", "int"),
        threads=("--threads", "int"),
        jemalloc_path=("--jemalloc-path", "str"),
        tcmalloc_path=("--tcmalloc-path", "str"),
        malloc_conf=("--malloc-conf", "str"),
        timeout_s=("--timeout-s", "float"),
    ),
    "ttft": _opts(
        **_SERVER_ONE,
        warm=("--warm", "int"),
        max_tokens=("--max-tokens", "int"),
        prompt_words=("--prompt-words", "int"),
        api=("--api", "csv"),
        request_timeout_s=("--request-timeout-s", "float"),
    ),
    "kv": _opts(
        **_SERVER_COMMON,
        max_model_len=("--max-model-len", "int_csv"),
        kv_budget=("--kv-budget", "budget_csv"),
    ),
    "batching": _opts(
        **_SERVER_ONE,
        prompts=("--prompts", "int"),
        max_concurrency=("--max-concurrency", "int"),
        repeats=("--repeats", "int"),
        max_tokens=("--max-tokens", "int"),
        prompt_words=("--prompt-words", "int"),
        warmup=("--warmup", "int"),
        time_budget_s=("--time-budget-s", "float"),
        request_timeout_s=("--request-timeout-s", "float"),
    ),
}

# Options whose value must not appear in what the module returns.
SECRET_OPTIONS = frozenset({"api_key"})

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a non-empty string",
    "bool": "true or false",
    "budget": "a number or a size such as 1GiB",
    "csv": "a list of words without commas",
    "int_csv": "a list of integers",
    "budget_csv": "a list of numbers or sizes such as 1GiB",
    "repeat": "a list of strings",
    "env_map": "a mapping of NAME: value",
}


class ProbeArgumentError(ValueError):
    """Every problem with the requested probe and options, in one message."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def _scalar(kind: str, value):
    """The value as flag text, or None when it is not of the kind (a YAML boolean is never a number or a word)."""
    if isinstance(value, bool) or value is None:
        return None
    if kind == "int":
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return str(int(value))
        return None
    if kind == "float":
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return None
            return value.strip()
        return None
    if kind == "budget":
        if isinstance(value, int | float):
            return str(value)
        return value.strip() if isinstance(value, str) and value.strip() and "," not in value else None
    if kind in ("str", "csv"):
        if not isinstance(value, str | int | float) or str(value).strip() == "":
            return None
        return None if kind == "csv" and "," in str(value) else str(value)
    raise AssertionError(f"unknown option kind {kind!r}")


def _flag_args(spec: Option, value) -> list[str] | None:
    """The arguments one option becomes, or None when the value does not fit its kind."""
    kind = spec.kind
    if kind == "bool":
        return None if not isinstance(value, bool) else ([spec.flag] if value else [])
    if kind in ("csv", "int_csv", "budget_csv"):
        items = list(value) if isinstance(value, list | tuple) else [value]
        item_kind = {"csv": "csv", "int_csv": "int", "budget_csv": "budget"}[kind]
        texts = [_scalar(item_kind, v) for v in items]
        if not texts or any(t is None for t in texts):
            return None
        return [spec.flag, ",".join(texts)]
    if kind == "repeat":
        if not isinstance(value, list | tuple) or any(not isinstance(v, str) or not v for v in value):
            return None
        return [f"{spec.flag}={v}" for v in value]
    if kind == "env_map":
        if not isinstance(value, dict) or any(not str(k) or "=" in str(k) for k in value):
            return None
        if any(isinstance(v, bool | dict | list) or v is None for v in value.values()):
            return None
        return [arg for k, v in value.items() for arg in (spec.flag, f"{k}={v}")]
    text = _scalar(kind, value)
    return None if text is None else [spec.flag, text]


def option_args(probe: str, options: dict | None) -> list[str]:
    """The probe's options -> its command-line arguments, in the order given; raises ProbeArgumentError."""
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
        if value is None:  # null: the probe's own default
            continue
        args = _flag_args(spec, value)
        if args is None:
            shown = "(hidden)" if name in SECRET_OPTIONS else repr(value)
            errors.append(f"options.{name} must be {_KIND_WORDS[spec.kind]}, got {shown}")
            continue
        argv.extend(args)
    if errors:
        raise ProbeArgumentError(errors)
    return argv


def redact(cmd: list[str]) -> list[str]:
    """The command with secret option values (the vLLM API key) replaced, for logs and results."""
    secret_flags = {opt.flag for probe in PROBE_OPTIONS.values() for n, opt in probe.items() if n in SECRET_OPTIONS}
    out, hide_next = [], False
    for arg in cmd:
        out.append("********" if hide_next else arg)
        hide_next = arg in secret_flags
    return out


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
