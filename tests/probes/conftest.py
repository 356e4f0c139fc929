"""Fixtures for the probe tests: the offline tiny model, built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.probes.vllm_fixtures import vllm_server  # noqa: F401  (session-scoped real vLLM server, shared)

# No model hub in tests: anything that tries to download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a freshly built `tiny` model (random Qwen2, local BPE tokenizer); about 8 s on 2 cores."""
    from probes import model

    return model.make("tiny", tmp_path_factory.mktemp("models") / "tiny", seed=0)


def run_probe(*args: str, timeout: float = 600, env: dict | None = None):
    """Run `python -m probes ARGS` as an operator would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "probes", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
