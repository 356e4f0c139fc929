"""The tokenizer of the offline probe model: a byte-level BPE trained on local text (this interpreter's
standard library sources), with bos/eos/pad, ChatML tokens and a chat template, every id decodable.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

from probes.model_shapes import ModelError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START, IM_END]  # ids 0..4 in every tokenizer we train

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# How much local text to train the BPE on, and its merge budget: the rest of a large vocabulary is filled
# with unreachable but decodable tokens, so every id a random model can emit decodes (vLLM's detokenizer
# would otherwise meet ids the tokenizer does not know).
CORPUS_BYTES = 2_000_000
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
TRAINED_VOCAB_CAP = 8192


def corpus_files(limit_bytes: int = CORPUS_BYTES) -> list[Path]:
    """This interpreter's top-level standard library sources, by name, up to limit_bytes: local, always there."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        size = path.stat().st_size
        if total + size > limit_bytes and files:
            break
        files.append(path)
        total += size
    if not files:
        raise ModelError(f"no Python sources under {stdlib} to train the tokenizer on")
    return files


def train_tokenizer(vocab_size: int, *, corpus: list[Path] | None = None):
    """A byte-level BPE with exactly vocab_size ids, every one of them decodable.

    Returns (tokenizers.Tokenizer, info dict).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    corpus = corpus or corpus_files()
    train_to = min(vocab_size, TRAINED_VOCAB_CAP)
    # Qwen2's own normalizer and pre-tokenizer: transformers loads a qwen2 model's tokenizer through
    # Qwen2Tokenizer, which rebuilds these from vocab and merges, so the saved file and the loaded tokenizer agree.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=train_to,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in corpus], trainer)
    trained = tok.get_vocab_size()

    if trained < vocab_size:
        # Pad the BPE vocabulary itself (not added tokens): no merge produces these, so they never appear when
        # encoding, but decoding any id below vocab_size works. ASCII names decode to themselves.
        state = json.loads(tok.to_str())
        vocab = state["model"]["vocab"]
        next_id = max(vocab.values()) + 1
        n = 0
        while next_id < vocab_size:
            name = f"<unused_{n}>"
            n += 1
            if name in vocab:
                continue
            vocab[name] = next_id
            next_id += 1
        tok = Tokenizer.from_str(json.dumps(state))

    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    digest = hashlib.sha256()
    for p in corpus:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    info = {
        "kind": "byte-level BPE trained locally",
        "vocab_size": tok.get_vocab_size(),
        "trained_vocab_size": trained,
        "corpus": f"{len(corpus)} files of {corpus[0].parent}",
        "corpus_bytes": sum(p.stat().st_size for p in corpus),
        "corpus_sha256": digest.hexdigest(),
    }
    if tok.get_vocab_size() != vocab_size:
        raise ModelError(f"tokenizer has {tok.get_vocab_size()} ids, the model needs exactly {vocab_size}")
    return tok, info


def save_tokenizer(tok, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    # The generic class loads tokenizer.json as it is under transformers 4 and 5 and in vLLM; a Qwen2 class
    # would rebuild the pre-tokenizer from its own rules.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def load_tokenizer(model_dir: str | Path):
    """The model's own tokenizer from its directory, offline (no hub lookup): what vLLM tokenizes prompts with."""
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise ModelError(f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
