"""vLLM's /metrics (Prometheus text format) and start-up log, read into plain numbers.

Pure functions over text, so they are tested on a real /metrics capture and real logs without a server.
vLLM names its series `vllm:<name>`; a histogram is `<name>_bucket{le=...}`, `<name>_sum`, `<name>_count`,
summed here over every label set (engines, model names) unless a label filter is given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
E2E_HISTOGRAM = "vllm:e2e_request_latency_seconds"
ITL_HISTOGRAM = "vllm:inter_token_latency_seconds"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
CACHE_CONFIG_INFO = "vllm:cache_config_info"

GIB = 1024**3


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], value)


def _parse_value(text: str) -> float:
    text = text.strip()
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    return float(text)


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample line of a Prometheus text exposition; comments and blank lines are skipped."""
    samples = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels: dict[str, str] = {}
            pos = 0
            while True:
                if rest[pos:].lstrip().startswith("}"):
                    pos = rest.index("}", pos) + 1
                    break
                m = _LABEL.match(rest, pos)
                if not m:
                    raise ValueError(f"/metrics line {lineno}: cannot parse labels in {raw!r}")
                labels[m.group(1)] = _unescape(m.group(2))
                pos = m.end()
            value_text = rest[pos:].split()[0]
        else:
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"/metrics line {lineno}: no value in {raw!r}")
            name, labels, value_text = parts[0], {}, parts[1]
        samples.append(Sample(name.strip(), labels, _parse_value(value_text)))
    return samples


def _matches(labels: dict[str, str], want: dict[str, str] | None) -> bool:
    return not want or all(labels.get(k) == v for k, v in want.items())


def counter_total(samples: list[Sample], name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum of a counter or gauge over its label sets; None when the series is absent (not 0)."""
    values = [s.value for s in samples if s.name == name and _matches(s.labels, labels)]
    return sum(values) if values else None


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram summed over label sets: cumulative bucket counts by upper bound."""

    name: str
    count: float
    sum: float
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), ascending le, ends with +Inf

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def histogram(samples: list[Sample], name: str, labels: dict[str, str] | None = None) -> Histogram | None:
    count = counter_total(samples, f"{name}_count", labels)
    total = counter_total(samples, f"{name}_sum", labels)
    if count is None or total is None:
        return None
    by_le: dict[float, float] = {}
    for s in samples:
        if s.name == f"{name}_bucket" and _matches(s.labels, labels) and "le" in s.labels:
            le = _parse_value(s.labels["le"])
            by_le[le] = by_le.get(le, 0.0) + s.value
    return Histogram(name, count, total, tuple(sorted(by_le.items())))


def histogram_delta(before: Histogram | None, after: Histogram | None) -> Histogram | None:
    """The observations made between two scrapes (after minus before); None when either scrape lacks it."""
    if before is None or after is None:
        return None
    old = dict(before.buckets)
    buckets = tuple((le, c - old.get(le, 0.0)) for le, c in after.buckets)
    return Histogram(after.name, after.count - before.count, after.sum - before.sum, buckets)


def histogram_quantile(h: Histogram, q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket. Coarse (bucket edges), so only a cross-check."""
    if h.count <= 0 or not h.buckets:
        return None
    rank = q * h.count
    prev_le, prev_c = 0.0, 0.0
    for le, c in h.buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return None


# ---- cache_config_info ----------------------------------------------------------------------------------


def _num_label(labels: dict[str, str], key: str) -> float | None:
    text = labels.get(key)
    if text in (None, "", "None", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _int_label(labels: dict[str, str], key: str) -> int | None:
    value = _num_label(labels, key)
    return None if value is None else int(value)


@dataclass(frozen=True)
class CacheConfig:
    """What vLLM says about its KV cache in `vllm:cache_config_info` (labels only; the value is always 1)."""

    block_size: int | None
    num_blocks: int | None
    kv_cache_size_tokens: int | None
    kv_cache_max_concurrency: float | None
    kv_cache_memory_bytes: int | None
    gpu_memory_utilization: float | None
    cache_dtype: str | None
    enable_prefix_caching: bool | None
    labels: dict[str, str] = field(default_factory=dict)


def cache_config(samples: list[Sample]) -> CacheConfig | None:
    info = [s for s in samples if s.name == CACHE_CONFIG_INFO]
    if not info:
        return None
    labels = info[0].labels
    prefix = labels.get("enable_prefix_caching")
    # GPU builds fill num_gpu_blocks; some CPU builds num_cpu_blocks: whichever is a number.
    blocks = _int_label(labels, "num_gpu_blocks")
    if blocks is None:
        blocks = _int_label(labels, "num_cpu_blocks")
    return CacheConfig(
        block_size=_int_label(labels, "block_size"),
        num_blocks=blocks,
        kv_cache_size_tokens=_int_label(labels, "kv_cache_size_tokens"),
        kv_cache_max_concurrency=_num_label(labels, "kv_cache_max_concurrency"),
        kv_cache_memory_bytes=_int_label(labels, "kv_cache_memory_bytes"),
        gpu_memory_utilization=_num_label(labels, "gpu_memory_utilization"),
        cache_dtype=labels.get("cache_dtype"),
        enable_prefix_caching=None if prefix is None else prefix == "True",
        labels=dict(labels),
    )


# ---- the start-up log -----------------------------------------------------------------------------------

_NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def _f(text: str) -> float:
    return float(text.replace(",", ""))


# (field, pattern, group -> value); the first match in the log wins. Patterns cover vLLM 0.2x-0.3x wording.
_LOG_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("weights_load_s", re.compile(r"Loading weights took " + _NUM + r" seconds")),
    ("model_load_gib", re.compile(r"Model loading took " + _NUM + r" ?GiB")),
    ("model_load_s", re.compile(r"Model loading took [0-9.]+ ?GiB(?: memory)? and " + _NUM + r" ?s")),
    ("dynamo_transform_s", re.compile(r"Dynamo bytecode transform time: " + _NUM + r" s")),
    ("torch_compile_s", re.compile(r"torch\.compile takes? " + _NUM + r" s in total|"
                                   r"torch\.compile took " + _NUM + r" s")),
    ("graph_capture_s", re.compile(r"Graph capturing finished in " + _NUM + r" secs?")),
    ("graph_capture_gib", re.compile(r"Graph capturing finished in [0-9.]+ secs?, took " + _NUM + r" GiB")),
    ("available_kv_cache_gib", re.compile(r"Available KV cache memory: " + _NUM + r" GiB")),
    ("kv_cache_tokens", re.compile(r"(?:GPU|CPU|XPU|TPU)? ?KV cache size: " + _NUM + r" tokens")),
    ("max_concurrency_len", re.compile(r"Maximum concurrency for " + _NUM + r" tokens per request")),
    ("max_concurrency", re.compile(r"Maximum concurrency for [0-9,]+ tokens per request: " + _NUM + r"x")),
    ("init_engine_s", re.compile(r"init engine \(profile, create kv cache, warmup model\) took " + _NUM)),
    ("init_engine_compile_s", re.compile(r"init engine \(profile, create kv cache, warmup model\) took [0-9.]+ "
                                         r"(?:s|seconds) \(compilation: " + _NUM)),
]
_KV_DEVICE = re.compile(r"\b(GPU|CPU|XPU|TPU) KV cache size:")
_DTYPE = re.compile(r"\bdtype=torch\.([a-z0-9_]+)")
_KV_DTYPE = re.compile(r"\bkv_cache_dtype=([a-z0-9_]+)")
_MAX_LEN_FITS = re.compile(r"estimated maximum model length is " + _NUM)
_MAX_LEN_OLD = re.compile(r"max seq len \(" + _NUM + r"\) is larger than the maximum number of tokens that can be "
                          r"stored in KV cache \(" + _NUM + r"\)")
_MAX_LEN_MODEL = re.compile(r"User-specified max_model_len \(" + _NUM + r"\) is greater than the derived "
                            r"max_model_len \([a-z_]+=" + _NUM)
_NO_KV_MEMORY = re.compile(r"No available memory for the cache blocks")


@dataclass
class StartupLog:
    """What vLLM's start-up log says about where the start went; None where this build does not log it."""

    kv_device: str | None = None  # "GPU" or "CPU": whose KV cache it is
    dtype: str | None = None  # the dtype the engine runs the model in (torch name)
    kv_cache_dtype: str | None = None
    weights_load_s: float | None = None
    model_load_gib: float | None = None
    model_load_s: float | None = None
    dynamo_transform_s: float | None = None
    torch_compile_s: float | None = None
    graph_capture_s: float | None = None
    graph_capture_gib: float | None = None
    available_kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency_len: int | None = None
    max_concurrency: float | None = None
    init_engine_s: float | None = None
    init_engine_compile_s: float | None = None


def parse_startup_log(text: str) -> StartupLog:
    out = StartupLog()
    for name, pattern in _LOG_PATTERNS:
        m = pattern.search(text)
        if not m:
            continue
        value = _f(next(g for g in m.groups() if g is not None))
        setattr(out, name, int(value) if name in ("kv_cache_tokens", "max_concurrency_len") else value)
    if m := _KV_DEVICE.search(text):
        out.kv_device = m.group(1)
    if m := _DTYPE.search(text):
        out.dtype = m.group(1)
    if m := _KV_DTYPE.search(text):
        out.kv_cache_dtype = m.group(1)
    return out


@dataclass(frozen=True)
class StartFailure:
    """Why a start stopped, when the log says so in a way we understand."""

    kind: str  # "max_model_len_does_not_fit" | "max_model_len_above_model_limit" | "no_kv_memory" | "unknown"
    requested_max_model_len: int | None
    largest_max_model_len: int | None  # the largest length vLLM says would fit (or the model's own limit)
    message: str | None  # the log line that says it


def _line_of(text: str, m: re.Match) -> str:
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    return text[start : end if end >= 0 else len(text)].strip()


def parse_start_failure(text: str) -> StartFailure:
    if m := _MAX_LEN_FITS.search(text):
        req = re.search(r"max seq len \(" + _NUM + r"\)", text)
        return StartFailure("max_model_len_does_not_fit", int(_f(req.group(1))) if req else None,
                            int(_f(m.group(1))), _line_of(text, m))
    if m := _MAX_LEN_OLD.search(text):
        return StartFailure("max_model_len_does_not_fit", int(_f(m.group(1))), int(_f(m.group(2))), _line_of(text, m))
    if m := _MAX_LEN_MODEL.search(text):
        return StartFailure("max_model_len_above_model_limit", int(_f(m.group(1))), int(_f(m.group(2))),
                            _line_of(text, m))
    if m := _NO_KV_MEMORY.search(text):
        return StartFailure("no_kv_memory", None, None, _line_of(text, m))
    errors = [ln.strip() for ln in text.splitlines() if re.search(r"\b(Error|ERROR|Exception)\b", ln)]
    return StartFailure("unknown", None, None, errors[-1] if errors else None)
