"""Prompts sized in tokens by the model's own tokenizer, unique per request from the first token.

`vllm bench serve --dataset-name random --random-input-len N` sends prompts that the server counts as N tokens
(its special tokens included); these prompts are sized the same way, so the two TTFTs measure the same prefill.
A prompt is whole words that are single tokens of the vocabulary (" word" pieces), so the count moves one token
per word; the count of the finished prompt is checked with the tokenizer as the server applies it (completions:
the text with the tokenizer's special tokens; chat: the chat template with the generation prompt) and adjusted
until it is exact, or refused. The first word of request i is the i-th of a permutation of the word pool drawn
from the run tag, so no two requests of a run share their first token (pool size P: past P requests the first
two tokens are unique), and the rest is random per run tag and index: no block of vLLM's prefix cache matches.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_WORD_PIECE = re.compile(r"^[\u0120\u2581][A-Za-z]{2,}$")  # "Ġword" (byte-level BPE) or "▁word" (sentencepiece)
MAX_ADJUST = 8


class PromptError(ValueError):
    """No prompt of exactly the asked number of tokens could be made with this tokenizer."""


def word_pool(tokenizer) -> list[str]:
    """Words that are one token each with a space before them, in id order; at least 64 or PromptError."""
    words = []
    for piece, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if not _WORD_PIECE.match(piece):
            continue
        word = piece[1:]
        if tokenizer.encode(" " + word, add_special_tokens=False)[-1:] == [token_id]:
            words.append(word)
    if len(words) < 64:
        raise PromptError(f"the tokenizer has only {len(words)} single-token words; prompts sized in tokens need 64")
    return words


def count_tokens(tokenizer, text: str, api: str) -> int:
    """Prompt tokens as vLLM counts them for this API (usage.prompt_tokens)."""
    if api == "chat":
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
        return len(ids)
    return len(tokenizer(text)["input_ids"])


@dataclass
class TokenPrompts:
    """Makes the prompts of one run: ``prompt(index, api)`` has exactly ``n_tokens`` prompt tokens."""

    tokenizer: object
    n_tokens: int
    run_tag: str

    def __post_init__(self):
        self.pool = word_pool(self.tokenizer)
        self.order = random.Random(f"first-{self.run_tag}").sample(range(len(self.pool)), len(self.pool))

    def first_word(self, index: int) -> str:
        return self.pool[self.order[index % len(self.pool)]]

    def words(self, index: int, n: int) -> list[str]:
        rng = random.Random(f"{self.run_tag}-{index}")
        second = [self.pool[self.order[(index // len(self.pool)) % len(self.pool)]]] if index >= len(self.pool) else []
        rest = [rng.choice(self.pool) for _ in range(max(0, n - 1 - len(second)))]
        return [self.first_word(index), *second, *rest][:max(1, n)]

    def prompt(self, index: int, api: str = "completions") -> str:
        n_words = self.n_tokens - count_tokens(self.tokenizer, "", api)  # what the template/specials add
        for _ in range(MAX_ADJUST):
            if n_words < 1:
                break
            text = " " + " ".join(self.words(index, n_words))
            got = count_tokens(self.tokenizer, text, api)
            if got == self.n_tokens:
                return text
            n_words += self.n_tokens - got
        raise PromptError(f"no {api} prompt of exactly {self.n_tokens} tokens with this tokenizer "
                          f"(its special tokens and template take {count_tokens(self.tokenizer, '', api)})")


@dataclass
class PromptSizing:
    """How one run sizes its prompts: prompt_for(index, api) -> text, or None for the word-sized prompts."""

    prompt_for: object | None
    tokenizer_dir: str | None
    tokenizer_source: str | None
    input_tokens: int | None
    prompt_words: int | None
    pool_size: int | None


def sizing(input_tokens: int | None, prompt_words: int | None, run_tag: str, tokenizer_dir: str | None = None,
           tokenizer_source: str | None = None) -> PromptSizing:
    if input_tokens is None:
        return PromptSizing(None, None, None, None, prompt_words, None)
    from probes.model_tokenizer import load_tokenizer

    prompts = TokenPrompts(load_tokenizer(tokenizer_dir), input_tokens, run_tag)
    return PromptSizing(prompts.prompt, tokenizer_dir, tokenizer_source, input_tokens, None, len(prompts.pool))


def prompt_report(s: PromptSizing, records: list, output_tokens: int) -> dict:
    """What was asked and what the server counted, per request (usage.prompt_tokens / completion_tokens)."""
    ok = [r for r in records if r.ok]
    seen_in = sorted({r.prompt_tokens for r in ok if r.prompt_tokens is not None})
    seen_out = sorted({r.output_tokens for r in ok if r.output_tokens is not None})
    exact_in = None if s.input_tokens is None or not ok else all(r.prompt_tokens == s.input_tokens for r in ok)
    exact_out = all(r.output_tokens == output_tokens for r in ok) if ok else None
    unique = s.pool_size is not None and len(records) <= s.pool_size
    return {"sized_by": "tokens" if s.input_tokens is not None else "words", "input_tokens": s.input_tokens,
            "prompt_words": s.prompt_words, "output_tokens": output_tokens, "tokenizer_dir": s.tokenizer_dir,
            "tokenizer_source": s.tokenizer_source, "requests": len(records), "requests_ok": len(ok),
            "server_prompt_tokens_seen": seen_in, "server_output_tokens_seen": seen_out,
            "prompt_tokens_exact": exact_in, "output_tokens_exact": exact_out,
            "first_token_unique_per_request": unique if s.input_tokens is not None else None}


def prompt_verdict(rep: dict, result_mod) -> dict:
    seen_in, seen_out = rep["server_prompt_tokens_seen"], rep["server_output_tokens_seen"]
    if rep["sized_by"] == "words":
        return result_mod.verdict(
            "prompt_size", "info",
            f"prompts of {rep['prompt_words']} words, {seen_in or 'unknown'} prompt tokens at the server, "
            f"{rep['output_tokens']} output tokens: not comparable with vllm bench serve (give input_tokens)")
    n, m = rep["input_tokens"], rep["output_tokens"]
    good = rep["prompt_tokens_exact"] and rep["output_tokens_exact"]
    text = (f"{rep['requests_ok']} of {rep['requests']} requests, each {n} prompt tokens by the tokenizer of "
            f"{rep['tokenizer_dir']} ({rep['tokenizer_source']}), first token distinct per request; the server "
            f"counted {seen_in} prompt and {seen_out} output tokens per request")
    if not good:
        text += (f", not {n} and {m}: the tokenizer is not the one the server uses, or the server adds tokens; "
                 "TTFT is not comparable with a peer's at these sizes")
    return result_mod.verdict("prompt_size", "pass" if good else "warn", text)
