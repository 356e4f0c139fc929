"""Each probe's options: the whitelist a playbook's ``options:`` is checked against, and the argument list
(never a shell string) of ``python -m probes <probe> <flags> --json`` they become.

library/slm_probe.py and core/plan.py check options with it; tests/integration/test_slm_probe.py checks every
flag here against the probe's own argparse.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from .catalog import PROBES


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
    low: int | None = None  # int / int_csv: the least value allowed (floats are always finite and above 0)


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
    gpu=("--gpu", "int", 0),
)
_SERVER_ONE = dict(
    _SERVER_COMMON,
    endpoint=("--endpoint", "str"),
    api_key=("--api-key", "str"),
    max_model_len=("--max-model-len", "int", 1),
    kv_budget=("--kv-budget", "budget"),
)
# probes/ttft.py: a median with a spread needs at least this many warm requests.
MIN_WARM = 10

# The whitelist: option name (what a playbook writes under `options:`) -> flag of `python -m probes <probe>`.
# tests/integration/test_slm_probe.py checks every flag here against the probe's own argparse.
PROBE_OPTIONS: dict[str, dict[str, Option]] = {
    "load": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        placement=("--placement", "str"),
        repeats=("--repeats", "int", 1),
        drop_caches=("--drop-caches", "bool"),
        read_repeats=("--read-repeats", "int", 1),
        copy_mib=("--copy-mib", "int", 1),
        copy_repeats=("--copy-repeats", "int", 1),
        gpus=("--gpus", "int_csv", 0),
        timeout_s=("--timeout-s", "float"),
    ),
    "generate": _opts(
        model=("--model", "str"),
        device=("--device", "str"),
        allocators=("--allocators", "csv"),
        processes=("--processes", "int", 1),
        calls=("--calls", "int", 1),
        prompt_tokens=("--prompt-tokens", "int", 1),
        new_tokens=("--new-tokens", "int", 1),
        threads=("--threads", "int", 1),
        jemalloc_path=("--jemalloc-path", "str"),
        tcmalloc_path=("--tcmalloc-path", "str"),
        malloc_conf=("--malloc-conf", "str"),
        timeout_s=("--timeout-s", "float"),
    ),
    "ttft": _opts(
        **_SERVER_ONE,
        warm=("--warm", "int", MIN_WARM),
        warm_ci_pct=("--warm-ci-pct", "float"),
        warm_max=("--warm-max", "int", MIN_WARM),
        input_tokens=("--input-tokens", "int", 1),
        output_tokens=("--output-tokens", "int", 1),
        peer_rounds=("--peer-rounds", "int", 0),
        max_tokens=("--max-tokens", "int", 1),
        prompt_words=("--prompt-words", "int", 1),
        api=("--api", "csv"),
        request_timeout_s=("--request-timeout-s", "float"),
    ),
    "kv": _opts(
        **_SERVER_COMMON,
        max_model_len=("--max-model-len", "int_csv", 1),
        kv_budget=("--kv-budget", "budget_csv"),
    ),
    "batching": _opts(
        **_SERVER_ONE,
        prompts=("--prompts", "int", 1),
        max_concurrency=("--max-concurrency", "int", 1),
        repeats=("--repeats", "int", 1),
        max_tokens=("--max-tokens", "int", 1),
        prompt_words=("--prompt-words", "int", 1),
        warmup=("--warmup", "int", 0),
        time_budget_s=("--time-budget-s", "float"),
        request_timeout_s=("--request-timeout-s", "float"),
    ),
}

# Options whose value must appear neither in what the module returns nor on any command line (ps and
# /proc/PID/cmdline are world-readable): each travels in the environment variable the probes read it from
# (probes/server_frame.py: --api-key defaults to $VLLM_API_KEY).
SECRET_ENV = {"api_key": "VLLM_API_KEY"}
SECRET_OPTIONS = frozenset(SECRET_ENV)

_KIND_WORDS = {
    "int": "an integer",
    "float": "a finite number above 0",
    "str": "a non-empty string",
    "bool": "true or false",
    "budget": "a fraction above 0 and at most 1, or a size above 0 such as 1GiB",
    "csv": "a list of words without commas",
    "int_csv": "a list of integers",
    "budget_csv": "a list of fractions above 0 and at most 1, or sizes above 0 such as 1GiB",
    "repeat": "a list of strings",
    "env_map": "a mapping of NAME: value",
}

# The KV budget rule, here so that the controller checks a plan with the rule the probes parse with
# (probes/server_spec.py parse_kv_budget): a plain number up to 1 is a fraction of device memory, anything
# else (a number above 1, or with a unit) is bytes.
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def kv_budget(text) -> tuple[str, float]:
    """'0.5' -> ("fraction", 0.5); '1GiB', '512MiB', '1073741824' -> ("bytes", n). Raises ValueError."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"KV budget {text!r}: give a fraction of device memory (0.5) or a size (1GiB, 512MiB, bytes)")
    number, unit = float(m.group(1)), (m.group(2) or "").upper().rstrip("B").rstrip("I")
    if not unit and number <= 1.0:
        if number <= 0:
            raise ValueError(f"KV budget {text!r}: a fraction must be above 0")
        return "fraction", number
    size = float(int(number * _UNITS[unit]))
    if size <= 0:
        raise ValueError(f"KV budget {text!r}: a size must be above 0 bytes")
    return "bytes", size


def allowed_words(spec: Option) -> str:
    """What the option takes, in words, its range among them."""
    words = _KIND_WORDS[spec.kind]
    return words if spec.low is None else f"{words} of at least {spec.low}"


class ProbeArgumentError(ValueError):
    """Every problem with the requested probe and options, in one message."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def _int_text(value, low: int | None):
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    else:
        return None
    return None if low is not None and number < low else str(number)


def _float_text(value):
    if isinstance(value, int | float):
        number, text = float(value), str(value)
    elif isinstance(value, str):
        try:
            number, text = float(value), value.strip()
        except ValueError:
            return None
    else:
        return None
    return text if math.isfinite(number) and number > 0 else None


def _budget_text(value):
    text = str(value).strip() if isinstance(value, int | float | str) else ""
    try:
        kv_budget(text)
    except ValueError:
        return None
    return text


def _scalar(kind: str, value, low: int | None = None):
    """The value as flag text, or None when it is not of the kind or out of its range (a YAML boolean is
    never a number or a word; nan and inf are no number)."""
    if isinstance(value, bool) or value is None:
        return None
    if kind == "int":
        return _int_text(value, low)
    if kind == "float":
        return _float_text(value)
    if kind == "budget":
        return _budget_text(value)
    if kind in ("str", "csv"):
        if not isinstance(value, str | int | float) or str(value).strip() == "":
            return None
        return None if kind == "csv" and "," in str(value) else str(value)
    raise AssertionError(f"unknown option kind {kind!r}")


def _flag_args(spec: Option, value) -> list[str] | None:
    """The arguments one option becomes, or None when the value does not fit its kind and range."""
    kind = spec.kind
    if kind == "bool":
        return None if not isinstance(value, bool) else ([spec.flag] if value else [])
    if kind in ("csv", "int_csv", "budget_csv"):
        items = list(value) if isinstance(value, list | tuple) else [value]
        item_kind = {"csv": "csv", "int_csv": "int", "budget_csv": "budget"}[kind]
        texts = [_scalar(item_kind, v, spec.low) for v in items]
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
    text = _scalar(kind, value, spec.low)
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
            errors.append(f"options.{name} must be {allowed_words(spec)}, got {shown}")
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


def secrets_to_env(options: dict | None) -> tuple[dict, dict[str, str]]:
    """(the options without their secrets, the environment that carries them instead). A secret that is not a
    plain value (a list, a map, a boolean) stays in the options, so that option_args names it as a wrong value
    (hidden)."""
    rest, env = dict(options or {}), {}
    for name, variable in SECRET_ENV.items():
        if isinstance(rest.get(name), (str, int, float)) and not isinstance(rest[name], bool):
            env[variable] = str(rest.pop(name))
    return rest, env


def build_command(python: str, probe: str, options: dict | None) -> list[str]:
    """[python, -m, probes, <probe>, <flags...>, --json]: an argument list, never a shell string."""
    return [python, "-m", "probes", probe, *option_args(probe, options), "--json"]


def suite_plan(servers: list, defaults: dict | None = None) -> tuple[list[list[dict]], list[str]]:
    """A suite item's servers (lists of members {name, probe, options}) -> the plan ``probes suite --plan``
    takes (members {name, probe, argv}), each member's options under ``defaults`` checked as when it runs
    alone; and every problem, prefixed with the member's name."""
    plan, errors = [], []
    for server in servers or []:
        entries = []
        for member in server or []:
            name = member.get("name", "?")
            try:
                argv = option_args(member.get("probe"), dict(defaults or {}, **(member.get("options") or {})))
            except ProbeArgumentError as err:
                errors += [f"{name}: {e}" for e in err.errors]
                continue
            entries.append({"name": name, "probe": member["probe"], "argv": argv})
        plan.append(entries)
    if not plan or not all(plan):
        errors.append("servers: a non-empty list of servers, each a non-empty list of members")
    return plan, errors


def suite_command(python: str, plan: list[list[dict]], shown: bool = False) -> list[str]:
    """[python, -m, probes, suite, --plan, <JSON>, --json]; shown: secret values redacted, for logs."""
    if shown:
        plan = [[dict(m, argv=redact(m["argv"])) for m in server] for server in plan]
    return [python, "-m", "probes", "suite", "--plan", json.dumps(plan), "--json"]
