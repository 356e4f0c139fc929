"""probes.model: the offline model loads with the ordinary loaders and has the shapes it claims."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from probes import model
from probes.core.catalog import MODEL_SHAPES
from tests.probes.conftest import run_probe


def test_the_shapes_are_the_cores_model_shapes():
    assert sorted(model.SHAPES) == sorted(MODEL_SHAPES)
    assert all(shape.name == name for name, shape in model.SHAPES.items())


def test_tiny_model_config_is_the_documented_qwen2(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["vocab_size"] == 4096
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, 2)
    assert 2e6 < model.weight_bytes(tiny_model) < 8e6  # "a few MB"
    prov = model.provenance(tiny_model)
    assert prov["shape"] == "tiny" and prov["seed"] == 0 and prov["weight_bytes"] == model.weight_bytes(tiny_model)


def test_tiny_tokenizer_fits_the_model_and_every_id_decodes(tiny_model):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert len(tok) == 4096
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>", "<|pad|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    for i in range(4096):  # a random model can emit any id: each must decode (vLLM detokenizes every one)
        assert isinstance(tok.decode([i]), str)
    text = "def probe(node):\n    return node.ready  # héllo, 日本\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    # What transformers loads (Qwen2Tokenizer) encodes exactly like the saved tokenizer.json (what vLLM reads).
    raw = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    assert raw.encode(text).ids == ids


def test_tiny_chat_template_renders_chatml(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rendered = tok.apply_chat_template([{"role": "user", "content": "ping"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == "<|startoftext|><|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_generates_exactly_the_tokens_asked_for(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert sum(p.numel() for p in m.parameters()) == model.provenance(tiny_model)["parameters"]
    ids = torch.tensor([[0, 10, 20, 30]])
    out = m.generate(ids, min_new_tokens=12, max_new_tokens=12, do_sample=False, pad_token_id=2)
    assert out.shape == (1, 16)


def test_qwen2_5_1_5b_shape_has_the_real_models_parameter_count():
    config = model.build_config("qwen2.5-1.5b")
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (1536, 8960, 28)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (12, 2, 151936)
    assert config.tie_word_embeddings is True
    assert config.max_position_embeddings == 32768
    assert config.rope_parameters["rope_theta"] == 1e6
    assert config.dtype == "bfloat16"
    assert model.count_parameters("qwen2.5-1.5b") == 1_543_714_304  # Qwen2.5-1.5B's published count


def test_phi_3_mini_shape_has_the_real_models_parameter_count():
    config = model.build_config("phi-3-mini")
    assert config.model_type == "phi3"
    assert model.count_parameters("phi-3-mini") == 3_821_079_552  # Phi-3-mini-4k-instruct's


def test_large_vocabulary_is_padded_with_decodable_unreachable_tokens():
    tok, info = model.train_tokenizer(10_000, corpus=model.corpus_files(300_000))
    assert tok.get_vocab_size() == 10_000
    assert info["trained_vocab_size"] < 10_000
    assert tok.decode([9_999]).startswith("<unused_")
    assert all(i < info["trained_vocab_size"] for i in tok.encode("import os\nprint(os.getcwd())").ids)


def test_resolve_uses_a_directory_as_is_and_explains_a_bad_one(tiny_model, tmp_path):
    assert model.resolve(str(tiny_model)) == tiny_model.resolve()
    with pytest.raises(model.ModelError, match="not a shape .* and not a directory"):
        model.resolve(str(tmp_path / "missing"))
    with pytest.raises(model.ModelError, match="no config.json"):
        model.resolve(str(tmp_path))


def test_resolve_shape_uses_the_cache_without_rebuilding(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFLIGHT_MODEL_CACHE", str(tmp_path))
    shutil.copytree(tiny_model, tmp_path / "tiny")
    before = (tmp_path / "tiny" / "model.safetensors").stat().st_mtime_ns
    assert model.resolve("tiny") == tmp_path / "tiny"
    assert (tmp_path / "tiny" / "model.safetensors").stat().st_mtime_ns == before


def test_make_refuses_to_overwrite_a_directory_it_did_not_build(tmp_path):
    (tmp_path / "precious.txt").write_text("operator data")
    with pytest.raises(model.ModelError, match="is not a model built by probes.model; refusing"):
        model.make("tiny", tmp_path)
    assert (tmp_path / "precious.txt").exists()


def test_arch_applies_to_tiny_only():
    with pytest.raises(model.ModelError, match="qwen2.5-1.5b is a qwen2 model; --arch llama applies to the tiny"):
        model.build_config("qwen2.5-1.5b", arch="llama")


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_cli_make_is_reproducible_for_a_seed(tiny_model, tmp_path):
    proc = run_probe("model", "make", "--shape", "tiny", "--out", str(tmp_path / "again"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    from probes import result

    result.validate(doc)
    assert doc["results"]["path"] == str(tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(tiny_model)
    other = model.make("tiny", tmp_path / "seed1", seed=1)
    assert _digest(other) != _digest(tiny_model)


@pytest.mark.slow
def test_smollm2_converts_from_the_wheel_and_answers_sensibly(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model.make("smollm2-135m", tmp_path / "smollm2")
    assert json.loads((path / "config.json").read_text())["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(path)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out = m.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
