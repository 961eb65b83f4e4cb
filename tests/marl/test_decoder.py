"""Sampling math and the fast decoder, checked against hand-derived values and the HF forward / generate."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import marl.policies.decoder as decoder
from marl.policies import (
    UnsupportedModel,
    fast_generate,
    fast_unsupported_reason,
    hf_generate,
    left_pad,
    positions_from_mask,
    sample_next,
)
from marl.policies.tiny import build_tiny_lm, quiet_hf

STOP = [1, 3]
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [11, 12], [13, 14, 15, 16], [20] * 5, [7]]


# --------------------------------------------------------------------------- sample_next


def test_greedy_picks_argmax_with_untempered_logprob():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    tok, lp = sample_next(logits, 0.0, 1.0, None)
    # log p(1) = 3 - log(e^1 + e^3 + e^2) = 3 - log(30.1929) = -0.407606
    assert tok.tolist() == [1]
    torch.testing.assert_close(lp, torch.tensor([-0.407606]), atol=1e-5, rtol=0)


def test_top_p_nucleus_and_renormalised_logprobs():
    # p = [0.5, 0.2, 0.3]; sorted 0.5 (tok 0), 0.3 (tok 2), 0.2 (tok 1); mass before each: 0, 0.5, 0.8.
    # top_p = 0.6 keeps tokens 0 and 2 (0 and 0.5 < 0.6), renormalised to [0.625, 0.375].
    n = 4000
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.3]])).expand(n, 3)
    tok, lp = sample_next(logits, 1.0, 0.6, torch.Generator().manual_seed(0))
    assert set(tok.tolist()) == {0, 2}
    expected = torch.where(tok == 0, torch.tensor(math.log(0.625)), torch.tensor(math.log(0.375)))
    torch.testing.assert_close(lp, expected, atol=1e-6, rtol=0)
    # frequency of token 0 ~ 0.625, std sqrt(0.625 * 0.375 / 4000) = 0.0077
    assert abs((tok == 0).float().mean().item() - 0.625) < 0.04
    # top_p = 0.5: mass before token 2 is 0.5, not < 0.5, so only token 0 survives with prob 1
    tok, lp = sample_next(logits[:10], 1.0, 0.5, torch.Generator().manual_seed(0))
    assert tok.tolist() == [0] * 10
    torch.testing.assert_close(lp, torch.zeros(10), atol=1e-6, rtol=0)


def test_temperature_scales_the_distribution():
    # p = [0.8, 0.2], T = 2: p' ~ sqrt(p) = [0.894, 0.447] -> [2/3, 1/3]
    n = 3000
    logits = torch.log(torch.tensor([[0.8, 0.2]])).expand(n, 2)
    tok, lp = sample_next(logits, 2.0, 1.0, torch.Generator().manual_seed(1))
    expected = torch.where(tok == 0, torch.tensor(math.log(2 / 3)), torch.tensor(math.log(1 / 3)))
    torch.testing.assert_close(lp, expected, atol=1e-6, rtol=0)
    assert abs((tok == 0).float().mean().item() - 2 / 3) < 0.05  # 5.8 std


def test_zero_probability_tokens_are_never_drawn():
    n = 2000
    logits = torch.tensor([[0.0, -math.inf, 0.0, -math.inf]]).expand(n, 4)
    tok, lp = sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(2))
    assert set(tok.tolist()) == {0, 2}
    torch.testing.assert_close(lp, torch.full((n,), math.log(0.5)), atol=1e-6, rtol=0)
    tok, _ = sample_next(logits, 1.0, 0.99, torch.Generator().manual_seed(2))
    assert set(tok.tolist()) <= {0, 2}


def test_same_generator_state_same_tokens():
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    a = sample_next(logits, 1.0, 0.9, torch.Generator().manual_seed(5))
    b = sample_next(logits, 1.0, 0.9, torch.Generator().manual_seed(5))
    c = sample_next(logits, 1.0, 0.9, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sample_argument_errors():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), -1.0, 1.0, None)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(torch.zeros(1, 3), 1.0, 0.0, None)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(torch.zeros(1, 3), 1.0, 1.5, None)


# --------------------------------------------------------------------------- helpers


def test_left_pad_and_positions():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    with pytest.raises(ValueError, match="empty"):
        left_pad([], 0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        left_pad([[1], []], 0)


# --------------------------------------------------------------------------- models


def _peaked(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random weights with std 0.3, so next-token distributions are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


ARCH_OVERRIDES = {
    "qwen2": None,
    "llama": {"num_key_value_heads": 1},  # grouped-query attention: 2 query heads share 1 kv head
    "gpt2": {"max_position_embeddings": 512},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    with quiet_hf():
        for arch, ov in ARCH_OVERRIDES.items():
            path = build_tiny_lm("100k", 0, root / arch, arch=arch, overrides=ov)
            out[arch] = _peaked(AutoModelForCausalLM.from_pretrained(path))
    return out


def _reference_logprobs(model, prompts, gen, temperature=1.0) -> torch.Tensor:
    """HF forward on right-padded prompt + completion: log softmax(logits / T) of each completion token."""
    seqs = [list(p) + gen.completion(i) for i, p in enumerate(prompts)]
    t = max(map(len, seqs))
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    logp = torch.log_softmax(logits.float() / temperature, -1)
    out = torch.zeros_like(gen.logprobs)
    for i, p in enumerate(prompts):
        n = int(gen.lengths[i])
        pos = torch.arange(len(p) - 1, len(p) - 1 + n)
        out[i, :n] = logp[i, pos, ids[i, pos + 1]]
    return out


def _check_padding(gen, pad_id=0):
    for i in range(len(gen.finish_reasons)):
        n = int(gen.lengths[i])
        assert (gen.tokens[i, n:] == pad_id).all()
        assert (gen.logprobs[i, n:] == 0).all()


@pytest.mark.parametrize("arch", list(ARCH_OVERRIDES))
def test_fast_logprobs_match_hf_forward_left_padded(models, arch):
    model = models[arch]
    assert fast_unsupported_reason(model) is None
    gen = fast_generate(
        model,
        PROMPTS,
        pad_id=0,
        max_new_tokens=12,
        temperature=0.8,
        generator=torch.Generator().manual_seed(0),
        stop_ids=STOP,
    )
    assert gen.tokens.shape[0] == len(PROMPTS) and gen.logprobs.dtype == torch.float32
    torch.testing.assert_close(gen.logprobs, _reference_logprobs(model, PROMPTS, gen, 0.8), atol=1e-4, rtol=0)
    _check_padding(gen)


@pytest.mark.parametrize("arch", list(ARCH_OVERRIDES))
def test_fast_greedy_equals_hf_generate(models, arch):
    model = models[arch]
    gen = fast_generate(model, PROMPTS, pad_id=0, max_new_tokens=16, temperature=0.0, stop_ids=[])
    ids, mask = left_pad(PROMPTS, 0)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=16,
        min_new_tokens=16,
        pad_token_id=0,
    )
    assert torch.equal(gen.tokens, out[:, ids.shape[1] :])
    assert gen.finish_reasons == ["length"] * len(PROMPTS)
    # greedy log-probs are the untempered ones
    torch.testing.assert_close(gen.logprobs, _reference_logprobs(model, PROMPTS, gen), atol=1e-4, rtol=0)


def test_hf_fallback_loop_matches_forward(models):
    model = models["qwen2"]
    gen = hf_generate(
        model,
        PROMPTS,
        pad_id=0,
        max_new_tokens=10,
        temperature=1.0,
        generator=torch.Generator().manual_seed(3),
        stop_ids=STOP,
    )
    torch.testing.assert_close(gen.logprobs, _reference_logprobs(model, PROMPTS, gen), atol=1e-4, rtol=0)
    _check_padding(gen)
    fast = fast_generate(model, PROMPTS, pad_id=0, max_new_tokens=10, temperature=0.0, stop_ids=[])
    slow = hf_generate(model, PROMPTS, pad_id=0, max_new_tokens=10, temperature=0.0, stop_ids=[])
    assert torch.equal(fast.tokens, slow.tokens)


def _forced_stop_processor(stop_at: list, seen: list):
    """Row i is forced to emit eos (id 1) at step stop_at[i]; rows with None may never stop."""
    n_rows = len(stop_at)

    def proc(step, toks, logits):
        assert toks.shape == (n_rows, step) and logits.shape[0] == n_rows
        seen.append(step)
        logits = logits.clone()
        logits[:, STOP] = -math.inf
        for i, s in enumerate(stop_at):
            if s == step:
                logits[i] = -math.inf
                logits[i, 1] = 0.0
        return logits

    return proc


@pytest.mark.parametrize(
    "n, rule",
    [
        (12, lambda i: None if i % 3 == 0 else i % 5),  # compacts once (12 -> 6 rows)
        (40, lambda i: None if i % 5 == 0 else i % 9),  # compacts twice (40 -> 20 -> 8 rows)
    ],
)
def test_stop_tokens_processor_row_order_and_compaction(models, n, rule):
    model = models["llama"]
    prompts = [[4 + (i * 7) % 50] * (1 + (i * 5) % 7) for i in range(n)]  # lengths 1..7, unsorted
    stop_at = [rule(i) for i in range(n)]
    seen: list[int] = []
    kw = dict(pad_id=0, max_new_tokens=12, temperature=0.0, stop_ids=STOP)
    gen = fast_generate(model, prompts, logits_processor=_forced_stop_processor(stop_at, seen), **kw)
    ref = hf_generate(model, prompts, logits_processor=_forced_stop_processor(stop_at, []), **kw)
    # row i forced to stop at step s -> length s + 1, "stop"; the others run all 12 steps
    assert gen.lengths.tolist() == [12 if s is None else s + 1 for s in stop_at]
    assert gen.finish_reasons == ["length" if s is None else "stop" for s in stop_at]
    for i, s in enumerate(stop_at):
        if s is not None:
            assert gen.tokens[i, s].item() == 1 and gen.logprobs[i, s].item() == 0.0  # forced: p = 1
    _check_padding(gen)
    assert torch.equal(gen.tokens, ref.tokens)
    # log-probs are those of the processed distribution (stop tokens banned), as in the generic loop
    torch.testing.assert_close(gen.logprobs, ref.logprobs, atol=1e-4, rtol=0)
    assert seen == list(range(12))


def test_prefill_chunks_and_decode_groups(models, monkeypatch):
    model = models["qwen2"]
    prompts = [[5 + i] * (1 + (i * 3) % 11) for i in range(10)]
    want = fast_generate(model, prompts, pad_id=0, max_new_tokens=8, temperature=0.0, stop_ids=[])
    monkeypatch.setattr(decoder, "_PREFILL_CHUNK_TOKENS", 16)  # several prefill chunks
    monkeypatch.setattr(decoder, "_MIN_GROUP_ROWS", 3)  # several decode groups
    monkeypatch.setattr(decoder, "_GROUP_CACHE_BYTES", 1)
    monkeypatch.setattr(decoder, "_GROUP_MAX_WEIGHT_BYTES", 1 << 30)
    assert len(decoder._prefill_chunks(sorted((len(p) for p in prompts), reverse=True), 16)) > 2
    got = fast_generate(model, prompts, pad_id=0, max_new_tokens=8, temperature=0.0, stop_ids=[])
    assert torch.equal(got.tokens, want.tokens)
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
    sampled = fast_generate(
        model, prompts, pad_id=0, max_new_tokens=8, generator=torch.Generator().manual_seed(0), stop_ids=STOP
    )
    torch.testing.assert_close(
        sampled.logprobs, _reference_logprobs(model, prompts, sampled), atol=1e-4, rtol=0
    )


def test_prefill_chunks_split_sorted_rows():
    # lengths 10, 8, 3, 3, 1 with a 16-token budget: 16 // 10 = 1 row, then 16 // 8 = 2 rows (8, 3),
    # then 16 // 3 = 5 rows (3, 1)
    assert decoder._prefill_chunks([10, 8, 3, 3, 1], 16) == [(0, 1, 10), (1, 3, 8), (3, 5, 3)]


def test_determinism_and_top_p_logprobs(models):
    model = models["gpt2"]
    kw = dict(pad_id=0, max_new_tokens=10, stop_ids=STOP)
    a = fast_generate(model, PROMPTS, generator=torch.Generator().manual_seed(9), **kw)
    b = fast_generate(model, PROMPTS, generator=torch.Generator().manual_seed(9), **kw)
    c = fast_generate(model, PROMPTS, generator=torch.Generator().manual_seed(10), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)
    # nucleus log-probs are renormalised: log p_nucleus(x) = log p(x) - log(mass) >= log p(x)
    d = fast_generate(model, PROMPTS, top_p=0.7, generator=torch.Generator().manual_seed(9), **kw)
    full = _reference_logprobs(model, PROMPTS, d)
    real = torch.arange(d.tokens.shape[1])[None] < d.lengths[:, None]
    assert (d.logprobs[real] >= full[real] - 1e-5).all()
    assert (d.logprobs[real] > full[real] + 1e-3).any()


def test_fast_path_reads_live_weights(models):
    model = models["qwen2"]
    before = fast_generate(model, PROMPTS, pad_id=0, max_new_tokens=6, temperature=0.0, stop_ids=[])
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        saved = emb.clone()
        emb.mul_(1.7)  # what an optimizer step does: in place
    try:
        after = fast_generate(model, PROMPTS, pad_id=0, max_new_tokens=6, temperature=0.0, stop_ids=[])
        torch.testing.assert_close(
            after.logprobs, _reference_logprobs(model, PROMPTS, after), atol=1e-4, rtol=0
        )
        assert not torch.allclose(after.logprobs, before.logprobs)
    finally:
        with torch.no_grad():
            emb.copy_(saved)


def test_lora_adapters_merged_on_the_fly(tmp_path):
    from peft import LoraConfig, get_peft_model

    with quiet_hf():
        base = _peaked(AutoModelForCausalLM.from_pretrained(build_tiny_lm("100k", 0, tmp_path / "m")))
    torch.manual_seed(0)
    peft = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)  # B = 0 at init would make the adapters a no-op
    peft.eval()
    assert fast_unsupported_reason(peft) is None
    gen = fast_generate(
        peft, PROMPTS, pad_id=0, max_new_tokens=8, generator=torch.Generator().manual_seed(0), stop_ids=STOP
    )
    torch.testing.assert_close(gen.logprobs, _reference_logprobs(peft, PROMPTS, gen), atol=1e-4, rtol=0)
    with peft.disable_adapter():
        no_lora = _reference_logprobs(peft, PROMPTS, gen)
    assert not torch.allclose(no_lora, gen.logprobs, atol=1e-3)


def test_unsupported_models_and_argument_errors(models, tmp_path):
    with quiet_hf():
        bf16 = AutoModelForCausalLM.from_pretrained(
            build_tiny_lm("100k", 0, tmp_path / "b"), dtype=torch.bfloat16
        )
    assert "float32" in fast_unsupported_reason(bf16)
    with pytest.raises(UnsupportedModel):
        fast_generate(bf16, PROMPTS, pad_id=0, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        fast_generate(models["qwen2"], PROMPTS, pad_id=0, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        fast_generate(models["gpt2"], [[5] * 500], pad_id=0, max_new_tokens=20)  # 500 + 20 > 512
