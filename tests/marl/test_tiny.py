"""The embedded tiny LMs: sizes, head_dim, seeded byte-identical weights, loadable with Auto classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from marl.policies.tiny import ARCHS, TINY_SIZES, build_tiny_lm, count_parameters, tiny_config


def test_named_sizes_exist_and_head_dim_at_least_32():
    assert {"100k", "3m"} <= set(TINY_SIZES)
    for size in TINY_SIZES:
        for arch in ARCHS:
            cfg = tiny_config(size, arch)
            hidden = cfg.hidden_size
            assert hidden // cfg.num_attention_heads >= 32
            assert cfg.max_position_embeddings >= 512
            assert cfg.vocab_size == 260 and cfg.tie_word_embeddings


def test_parameter_counts_by_hand(tmp_path):
    # 100k Qwen2: embedding 260*64 = 16,640 (tied with the head). Per layer:
    # q, k, v: 3 * (64*64 + 64) = 12,480; o: 64*64 = 4,096; gate, up, down: 3 * 64*128 = 24,576;
    # two RMSNorms: 128 -> 41,280. Two layers 82,560 + final norm 64 + 16,640 = 99,264.
    m = AutoModelForCausalLM.from_pretrained(build_tiny_lm("100k", 0, tmp_path / "a"))
    assert count_parameters(m) == 99_264
    # 3m Qwen2: 260*256 = 66,560; per layer 3*(256*256+256) + 256*256 + 3*256*768 + 512 = 853,248;
    # 4 layers 3,412,992 + 256 + 66,560 = 3,479,808.
    m = AutoModelForCausalLM.from_pretrained(build_tiny_lm("3m", 0, tmp_path / "b"))
    assert count_parameters(m) == 3_479_808
    # 300k Qwen2: 260*96 = 24,960; per layer 3*(96*96+96) + 96*96 + 3*96*256 + 192 = 111,072;
    # 3 layers 333,216 + 96 + 24,960 = 358,272.
    m = AutoModelForCausalLM.from_pretrained(build_tiny_lm("300k", 0, tmp_path / "c"))
    assert count_parameters(m) == 358_272


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    state = torch.random.get_rng_state()
    a = build_tiny_lm("100k", 7, tmp_path / "a")
    b = build_tiny_lm("100k", 7, tmp_path / "b")
    c = build_tiny_lm("100k", 8, tmp_path / "c")
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    wa = (a / "model.safetensors").read_bytes()
    assert wa == (b / "model.safetensors").read_bytes()
    assert wa != (c / "model.safetensors").read_bytes()


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_classes_load_model_and_tokenizer(tmp_path, arch):
    out = build_tiny_lm("100k", 0, tmp_path / arch, arch=arch)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == arch
    assert len(tok) == model.config.vocab_size
    ids = torch.tensor([tok.encode("hi", add_special_tokens=False)])
    assert model(input_ids=ids).logits.shape == (1, 2, 260)
    assert model.generation_config.eos_token_id == [1, 3]


def test_overrides_and_errors():
    cfg = tiny_config("100k", "llama", {"num_hidden_layers": 3, "num_key_value_heads": 1})
    assert cfg.num_hidden_layers == 3 and cfg.num_key_value_heads == 1
    gpt = tiny_config("100k", "gpt2", {"max_position_embeddings": 512})
    assert gpt.n_positions == 512 and gpt.n_embd == 64
    with pytest.raises(KeyError, match="valid sizes"):
        tiny_config("7b")
    with pytest.raises(KeyError, match="valid archs"):
        tiny_config("100k", "mamba")
    with pytest.raises(ValueError, match="head_dim >= 32"):
        tiny_config("100k", "qwen2", {"num_attention_heads": 4})  # 64 / 4 = 16
