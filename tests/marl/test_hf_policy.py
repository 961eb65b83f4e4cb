"""load_policy (tiny / local dir / LoRA) and the Policy API: text helpers, generate, token_logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from marl.policies import LoraConfig, Policy, PolicyConfig, load_policy
from marl.policies.hf import tiny_dir


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("policy_cache")


@pytest.fixture(scope="module")
def policy(cache):
    pol = load_policy(PolicyConfig(tiny="100k", seed=0), cache)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # peaked random weights: distributions far from uniform
        for p in pol.model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return pol


def _right_pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(map(len, seqs))
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def test_config_is_structured_and_overridable():
    cfg = OmegaConf.structured(PolicyConfig)
    cfg.merge_with_dotlist(["tiny=3m", "lora.enabled=true", "lora.r=4", "num_layers=3"])
    assert cfg.tiny == "3m" and cfg.lora.r == 4 and cfg.num_layers == 3
    assert list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(Exception, match="nonexistent"):
        cfg.merge_with_dotlist(["nonexistent=1"])
    assert PolicyConfig(num_layers=3, hidden_size=128).tiny_overrides() == {
        "num_hidden_layers": 3,
        "hidden_size": 128,
    }


def test_tiny_is_built_once_then_reused(tmp_path):
    cfg = PolicyConfig(tiny="100k", seed=3)
    load_policy(cfg, tmp_path)
    weights = tiny_dir(cfg, tmp_path) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    pol = load_policy(cfg, tmp_path)
    assert weights.stat().st_mtime_ns == stamp
    assert isinstance(pol, Policy) and pol.model.config.model_type == "qwen2"
    other = PolicyConfig(tiny="100k", seed=3, num_layers=1)
    assert tiny_dir(other, tmp_path) != tiny_dir(cfg, tmp_path)
    assert load_policy(other, tmp_path).model.config.num_hidden_layers == 1
    with pytest.raises(KeyError, match="valid sizes"):
        load_policy(PolicyConfig(tiny="1t"), tmp_path)
    with pytest.raises(KeyError, match="valid dtypes"):
        load_policy(PolicyConfig(dtype="int8"), tmp_path)


def test_local_path_loading_and_errors(tmp_path, policy):
    policy.model.save_pretrained(tmp_path / "m")
    policy.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_policy(PolicyConfig(path=str(tmp_path / "m")), tmp_path / "cache")
    for a, b in zip(loaded.model.parameters(), policy.model.parameters()):
        assert torch.equal(a, b)
    assert not (tmp_path / "cache").exists()  # a path policy never builds the tiny LM
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_policy(PolicyConfig(path=str(tmp_path / "nowhere")), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_policy(PolicyConfig(path=str(tmp_path / "empty")), tmp_path)


def test_lora_only_adapters_trainable(cache):
    pol = load_policy(PolicyConfig(tiny="100k", lora=LoraConfig(enabled=True, r=8)), cache)
    trainable = {n: p.numel() for n, p in pol.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # per adapted 64 -> 64 projection: A 8x64 + B 64x8 = 1,024; q, k, v, o in 2 layers: 8 * 1,024 = 8,192
    assert sum(trainable.values()) == 8_192
    assert pol.fast_path_reason() is None  # LoRA is merged on the fly by the fast decoder
    again = load_policy(PolicyConfig(tiny="100k", lora=LoraConfig(enabled=True, r=8)), cache)
    for a, b in zip(pol.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)  # adapter init is seeded
    with torch.no_grad():
        for n, p in pol.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    fast = pol.generate([[5, 6, 7], [8]], max_new_tokens=6, temperature=0.0, stop_ids=[])
    pol.fast = False  # the generic loop over the PEFT model's forward
    slow = pol.generate([[5, 6, 7], [8]], max_new_tokens=6, temperature=0.0, stop_ids=[])
    assert torch.equal(fast.tokens, slow.tokens)
    torch.testing.assert_close(fast.logprobs, slow.logprobs, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="not modules of this model"):
        load_policy(
            PolicyConfig(tiny="100k", lora=LoraConfig(enabled=True, target_modules=["c_attn"])), cache
        )


def test_text_helpers(policy):
    # <|im_start|>=2, bytes at 4 + b, <|im_end|>=3
    ids = policy.encode_chat([{"role": "user", "content": "hi"}])
    assert ids == [2] + [4 + c for c in b"user\nhi"] + [3, 4 + 10, 2] + [4 + c for c in b"assistant\n"]
    assert policy.encode("ab") == [4 + 97, 4 + 98]
    assert policy.decode([4 + 97, 3, 0]) == "a"
    assert policy.decode(torch.tensor([4 + 97, 3]), skip_special_tokens=False) == "a<|im_end|>"
    assert (policy.pad_id, policy.eos_id, policy.stop_ids) == (0, 1, [1, 3])


def test_token_logprobs_by_hand_on_a_uniform_model(cache):
    pol = load_policy(PolicyConfig(tiny="100k", seed=1), cache)
    with torch.no_grad():
        pol.model.get_input_embeddings().weight.zero_()  # tied head -> all logits 0 -> uniform over 260
    ids, mask = _right_pad([[5, 6, 7], [8, 9]])
    lp, ent = pol.token_logprobs(ids, mask, return_entropy=True)
    # log p = -log 260 = -5.560682 on real positions 1..; 0 at position 0 and on padding
    u = -math.log(260)
    torch.testing.assert_close(lp, torch.tensor([[0.0, u, u], [0.0, u, 0.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, torch.tensor([[0.0, -u, -u], [0.0, -u, 0.0]]), atol=1e-5, rtol=0)


def test_token_logprobs_match_manual_softmax_and_have_grad(policy):
    ids, mask = _right_pad([[5, 6, 7, 8], [9, 10]])
    lp = policy.token_logprobs(ids, mask, temperature=0.5)
    logits = policy.model(input_ids=ids, attention_mask=mask).logits.float() / 0.5
    manual = torch.log_softmax(logits, -1)[0, torch.arange(3), ids[0, 1:]]
    torch.testing.assert_close(lp[0, 1:], manual, atol=1e-5, rtol=0)
    assert lp[1, 2:].abs().sum() == 0
    lp.sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("fast", [True, False])
def test_generate_logprobs_agree_with_token_logprobs(policy, fast):
    policy.fast = fast
    try:
        prompts = [policy.encode_chat([{"role": "user", "content": t}]) for t in ("hi", "play x at 3", "o")]
        gen = policy.generate(
            prompts, max_new_tokens=10, temperature=0.7, generator=torch.Generator().manual_seed(0)
        )
    finally:
        policy.fast = True
    ids, mask = _right_pad([p + gen.completion(i) for i, p in enumerate(prompts)])
    with torch.no_grad():
        lp = policy.token_logprobs(ids, mask, temperature=0.7)
    for i, p in enumerate(prompts):
        n = int(gen.lengths[i])
        torch.testing.assert_close(gen.logprobs[i, :n], lp[i, len(p) : len(p) + n], atol=1e-4, rtol=0)
        assert gen.finish_reasons[i] == ("stop" if gen.tokens[i, n - 1].item() in (1, 3) else "length")


def test_fast_and_fallback_greedy_agree_and_model_mode_is_kept(policy):
    prompts = [[5, 6, 7], [8]]
    fast = policy.generate(prompts, max_new_tokens=8, temperature=0.0, stop_ids=[])
    policy.fast = False
    policy.model.train()
    try:
        assert policy.fast_path_reason() == "disabled (fast=False)"
        slow = policy.generate(prompts, max_new_tokens=8, temperature=0.0, stop_ids=[])
        assert policy.model.training  # restored after the eval-mode fallback
    finally:
        policy.fast = True
        policy.model.eval()
    assert torch.equal(fast.tokens, slow.tokens)
    torch.testing.assert_close(fast.logprobs, slow.logprobs, atol=1e-4, rtol=0)


def test_bf16_policy_falls_back(cache):
    pol = load_policy(PolicyConfig(tiny="100k", dtype="bfloat16"), cache)
    assert "float32" in pol.fast_path_reason()
    gen = pol.generate([[5, 6]], max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    assert gen.tokens.shape[0] == 1 and 1 <= int(gen.lengths[0]) <= 4
