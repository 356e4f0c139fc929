"""Streaming OpenAI-API requests timed from the client side, and prompts that defeat prefix caching.

One request -> one RequestRecord of raw timings (seconds, perf_counter). TTFT is the time from sending the
request to the first streamed chunk that carries text, not to the response headers (vLLM sends headers, and
for chat an empty role chunk, before any token). Inter-token latencies are the gaps between text chunks.
`ignore_eos` (a vLLM extension) makes every request produce exactly max_tokens, so runs are comparable.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import httpx

from probes import vllm_metrics

APIS = ("completions", "chat")

# Plain words for prompts; any tokenizer splits them into a predictable number of tokens.
_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven engineers measure memory bandwidth on every node "
    "of the cluster before lunch because operators need numbers they can trust at three in the morning when "
    "pages arrive and nobody remembers which kernel setting changed last week so the report explains each "
    "value with its unit and spread river mountain window garden pencil orange silver winter summer market "
    "station library theater bridge harbor forest island valley desert ocean planet rocket engine battery "
    "cable switch router server storage network packet signal sensor camera screen keyboard printer folder"
).split()


def make_prompt(index: int, n_words: int, run_tag: str) -> str:
    """A prompt unique from its first token on (tag + index first), so no prefix cache block can match."""
    rng = random.Random(f"{run_tag}-{index}")
    words = [rng.choice(_WORDS) for _ in range(max(0, n_words - 3))]
    return f"{run_tag}{index:05d} request {index}: " + " ".join(words)


def new_run_tag() -> str:
    return f"r{random.SystemRandom().randrange(16**8):08x}"


@dataclass
class RequestRecord:
    api: str  # completions | chat
    sent_at_s: float  # when it was sent, seconds after t_ref (a batch's start); 0 without one
    ok: bool = False
    error: str | None = None
    headers_s: float | None = None  # send -> response headers
    ttft_s: float | None = None  # send -> first chunk with text
    e2e_s: float | None = None  # send -> end of stream
    chunk_times_s: list[float] = field(default_factory=list)  # send -> each text chunk
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # usage.completion_tokens as the server counted them

    @property
    def itl_s(self) -> list[float]:
        t = self.chunk_times_s
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first: (e2e - ttft) / (tokens - 1)."""
        if self.e2e_s is None or self.ttft_s is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def request_body(api: str, model_id: str, prompt: str, max_tokens: int) -> dict:
    body: dict = {
        "model": model_id,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _chunk_text(api: str, chunk: dict) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    if api == "chat":
        return (choices[0].get("delta") or {}).get("content") or ""
    return choices[0].get("text") or ""


async def stream_request(
    client: httpx.AsyncClient, base_url: str, headers: dict, api: str, model_id: str, prompt: str, max_tokens: int,
    *, t_ref: float | None = None,
) -> RequestRecord:
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    body = request_body(api, model_id, prompt, max_tokens)
    t0 = time.perf_counter()
    rec = RequestRecord(api=api, sent_at_s=t0 - t_ref if t_ref is not None else 0.0)
    try:
        async with client.stream("POST", base_url + path, json=body, headers=headers) as resp:
            rec.headers_s = time.perf_counter() - t0
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                rec.error = f"HTTP {resp.status_code}: {text[:300]}"
                return rec
            async for line in resp.aiter_lines():
                now = time.perf_counter() - t0
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    rec.error = f"stream error: {chunk['error']}"
                    return rec
                if _chunk_text(api, chunk):
                    if rec.ttft_s is None:
                        rec.ttft_s = now
                    rec.chunk_times_s.append(now)
                if usage := chunk.get("usage"):
                    rec.prompt_tokens = usage.get("prompt_tokens")
                    rec.output_tokens = usage.get("completion_tokens")
        rec.e2e_s = time.perf_counter() - t0
        rec.ok = rec.ttft_s is not None
        if not rec.ok:
            rec.error = "the stream ended without any text"
    except (httpx.HTTPError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    return rec


async def scrape(client: httpx.AsyncClient, base_url: str, headers: dict) -> list[vllm_metrics.Sample] | None:
    """The server's /metrics, parsed; None when it has none (not a vLLM server, or metrics off)."""
    try:
        r = await client.get(base_url + "/metrics", headers=headers)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    return vllm_metrics.parse_prometheus(r.text)


async def scrape_after(
    client: httpx.AsyncClient,
    base_url: str,
    headers: dict,
    before: list[vllm_metrics.Sample] | None,
    expected: int,
    *,
    settle_s: float = 3.0,
) -> list[vllm_metrics.Sample] | None:
    """Scrape until the TTFT histogram has counted `expected` more requests than `before` (or settle_s passes):
    the server records a request's metrics just after the client has seen its end."""
    import asyncio

    deadline = time.perf_counter() + settle_s
    while True:
        after = await scrape(client, base_url, headers)
        if after is None or before is None:
            return after
        delta = vllm_metrics.histogram_delta(
            vllm_metrics.histogram(before, vllm_metrics.TTFT_HISTOGRAM),
            vllm_metrics.histogram(after, vllm_metrics.TTFT_HISTOGRAM),
        )
        if delta is None or delta.count >= expected or time.perf_counter() > deadline:
            return after
        await asyncio.sleep(0.1)
