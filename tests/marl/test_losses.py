"""Tests for marl/losses.py: hand-derived values for every objective, KL estimator and
aggregation mode, micro-batch packing, and micro-batch split equality (values and gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from marl.losses import (
    AGGREGATIONS,
    AggregationNorm,
    LossConfig,
    aggregate,
    aggregation_norm,
    clip_grad_norm,
    gspo_loss,
    kl_per_token,
    micro_batches,
    policy_loss_per_token,
    total_loss,
)

LN2 = math.log(2.0)


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _ppo(lp, old, adv, mask, *, clip_low=0.2, clip_high=0.28, dual_clip=None):
    return policy_loss_per_token(
        lp, old, adv, mask, objective="ppo_clip", clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip
    )


# ------------------------------------------------------------------------------------------
# PPO clip
# ------------------------------------------------------------------------------------------


def test_ppo_clip_hand_values_and_gradients():
    # ε_low = 0.2, ε_high = 0.28: ratios are clipped to [0.8, 1.28]. old log-prob 0, so ρ = e^lp.
    ratios = [1.1, 1.5, 0.5, 0.5, 1.5, 1.0]
    adv = _t([[1.0, 1.0, 1.0, -2.0, -2.0, 7.0]])
    mask = _t([[1, 1, 1, 1, 1, 0]])  # last token is padding
    lp = torch.log(_t([ratios])).requires_grad_(True)
    old = torch.zeros(1, 6)
    loss, stats = _ppo(lp, old, adv, mask)
    # token 0: A=+1, ρ=1.1 inside          -> max(-1.1, -1.1)            = -1.1
    # token 1: A=+1, ρ=1.5 > 1.28          -> max(-1.5, -1.28)           = -1.28 (clipped)
    # token 2: A=+1, ρ=0.5 < 0.8           -> max(-0.5, -0.8)            = -0.5  (not clipped: pessimistic)
    # token 3: A=-2, ρ=0.5 < 0.8           -> max(2*0.5, 2*0.8)=max(1,1.6)= 1.6  (clipped)
    # token 4: A=-2, ρ=1.5 > 1.28          -> max(3.0, 2.56)             = 3.0   (not clipped)
    # token 5: padding                     -> 0
    assert_close(loss, _t([[-1.1, -1.28, -0.5, 1.6, 3.0, 0.0]]))
    # dL/dlp = dL/dρ · ρ = -A ρ where the unclipped branch is active, 0 where the clip is:
    # token 0: -1.1; token 1: 0; token 2: -0.5; token 3: 0; token 4: 2*1.5 = 3.0; padding: 0
    loss.sum().backward()
    assert_close(lp.grad, _t([[-1.1, 0.0, -0.5, 0.0, 3.0, 0.0]]))
    # clip_frac = 2 clipped of 5 masked tokens; ratio_mean = (1.1+1.5+0.5+0.5+1.5)/5 = 1.02
    assert stats["clip_frac"] == pytest.approx(0.4)
    assert stats["ratio_mean"] == pytest.approx(1.02, rel=1e-6)
    # approx_kl = mean((ρ-1) - ln ρ) over the 5 masked tokens
    expected_kl = sum((r - 1) - math.log(r) for r in ratios[:5]) / 5
    assert stats["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert stats["dual_clip_frac"] == 0.0


def test_ppo_clip_asymmetric_bounds():
    # A=+1, ρ=1.25. Clip-higher (ε_high=0.28): 1.25 < 1.28 is inside -> L = -1.25, gradient -1.25.
    # Symmetric ε=0.2: clip(1.25) = 1.2 -> max(-1.25, -1.2) = -1.2, gradient 0.
    # A=-1, ρ=0.85: ε_low=0.2 keeps it inside ([0.8, ...]) -> L = 0.85; with ε_low=0.1 the bound is 0.9:
    # max(0.85, 0.9) = 0.9 (clipped).
    lp = torch.log(_t([[1.25, 0.85]]))
    adv, mask, old = _t([[1.0, -1.0]]), torch.ones(1, 2), torch.zeros(1, 2)
    loss_high, _ = _ppo(lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    loss_sym, _ = _ppo(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    loss_tight_low, stats = _ppo(lp, old, adv, mask, clip_low=0.1, clip_high=0.28)
    assert_close(loss_high, _t([[-1.25, 0.85]]))
    assert_close(loss_sym, _t([[-1.2, 0.85]]))
    assert_close(loss_tight_low, _t([[-1.25, 0.9]]))
    assert stats["clip_frac"] == pytest.approx(0.5)


def test_ppo_dual_clip():
    # c = 3, bounds [0.8, 1.28].
    # token 0: A=-2, ρ=4: max(8, 2.56) = 8, dual: min(8, 2*3=6) = 6 (dual active, gradient 0)
    # token 1: A=-2, ρ=2: max(4, 2.56) = 4, min(4, 6) = 4 (dual inactive, gradient -Aρ = 4)
    # token 2: A=+1, ρ=4: max(-4, -1.28) = -1.28 (dual clip never applies to A>0)
    lp = torch.log(_t([[4.0, 2.0, 4.0]])).requires_grad_(True)
    adv, mask, old = _t([[-2.0, -2.0, 1.0]]), torch.ones(1, 3), torch.zeros(1, 3)
    loss, stats = _ppo(lp, old, adv, mask, dual_clip=3.0)
    assert_close(loss, _t([[6.0, 4.0, -1.28]]))
    loss.sum().backward()
    assert_close(lp.grad, _t([[0.0, 4.0, 0.0]]))
    assert stats["dual_clip_frac"] == pytest.approx(1 / 3)
    # without dual clip token 0 is 8
    loss_nodual, _ = _ppo(lp.detach(), old, adv, mask, dual_clip=None)
    assert_close(loss_nodual, _t([[8.0, 4.0, -1.28]]))


def test_ppo_padding_garbage_does_not_leak():
    # padding positions hold -inf / huge values; loss and gradient there must be exactly 0, no NaN.
    lp = _t([[0.0, -float("inf")]]).requires_grad_(True)
    old = _t([[0.0, 50.0]])
    adv = _t([[1.0, 1.0]])
    mask = _t([[1, 0]])
    loss, _ = _ppo(lp, old, adv, mask, dual_clip=3.0)
    assert_close(loss, _t([[-1.0, 0.0]]))  # ρ=1, A=1 -> -1
    loss.sum().backward()
    assert torch.isfinite(lp.grad).all()
    assert_close(lp.grad, _t([[-1.0, 0.0]]))


# ------------------------------------------------------------------------------------------
# GSPO
# ------------------------------------------------------------------------------------------


def test_gspo_sequence_ratio_and_clipping():
    # paper bounds: s clipped to [1 - 3e-4, 1 + 4e-4] = [0.9997, 1.0004]; old log-probs 0.
    # row 0: log ρ = [0.1, 0.3] -> s = e^0.2 = 1.22140, A=+1 -> max(-1.2214, -1.0004) = -1.0004 (clipped)
    # row 1: log ρ = [2e-4, -2e-4], 3rd token masked -> s = e^0 = 1, A=+1 -> -1 (inside)
    # row 2: log ρ = [-0.1, -0.3] -> s = e^-0.2 = 0.81873, A=-1 -> max(0.8187, 0.9997) = 0.9997 (clipped)
    # row 3: log ρ = [0.1, 0.3] -> s = 1.2214, A=-1 -> max(1.2214, 1.0004) = 1.2214 (not clipped)
    lp = _t([[0.1, 0.3, 0.0], [2e-4, -2e-4, 5.0], [-0.1, -0.3, 0.0], [0.1, 0.3, 0.0]]).requires_grad_(True)
    old = torch.zeros(4, 3)
    mask = _t([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]])
    adv = _t([[1.0] * 3, [1.0] * 3, [-1.0] * 3, [-1.0] * 3])
    loss, stats = policy_loss_per_token(
        lp, old, adv, mask, objective="gspo", clip_low=3e-4, clip_high=4e-4, dual_clip=3.0
    )
    e = math.exp(0.2)
    expected = _t([[-1.0004, -1.0004, 0.0], [-1.0, -1.0, 0.0], [0.9997, 0.9997, 0.0], [e, e, 0.0]])
    assert_close(loss, expected)
    # GSPO-token gradient: d/dlp_t of exp(lp_t - sg(lp_t) + sg(log s)) = s, so dL/dlp_t = -A·s if not clipped
    # row 0, 2: clipped -> 0; row 1: -1·1 = -1 per token; row 3: +1·e^0.2 per token.
    loss.sum().backward()
    assert_close(lp.grad, _t([[0.0, 0.0, 0.0], [-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [e, e, 0.0]]))
    # clipped tokens: rows 0 and 2 -> 4 of 8 masked tokens
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["seq_ratio_mean"] == pytest.approx((e + 1.0 + 1 / e + e) / 4, rel=1e-5)


def test_gspo_token_form_matches_sequence_level_gspo():
    # With one advantage per sequence and seq-mean-token-mean, GSPO-token equals the sequence-level
    # objective J = -(1/B) Σ_i max(-A_i s_i, -A_i clip(s_i)) in value AND gradient (GSPO paper, eq. 13-14).
    gen = torch.Generator().manual_seed(0)
    n, t = 5, 6
    lp0 = -torch.rand(n, t, generator=gen)
    old = lp0 + 0.05 * torch.randn(n, t, generator=gen)
    mask = torch.ones(n, t)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    adv = torch.randn(n, 1, generator=gen).expand(n, t).contiguous()
    norm = aggregation_norm(mask)

    lp = lp0.clone().requires_grad_(True)
    tok, _ = gspo_loss(lp, old, adv, mask, clip_low=0.02, clip_high=0.03)
    got = aggregate(tok, mask, mode="seq-mean-token-mean", norm=norm)
    got.backward()

    lp_ref = lp0.clone().requires_grad_(True)
    s = torch.exp(((lp_ref - old) * mask).sum(-1) / mask.sum(-1))  # (N,)
    a = adv[:, 0]
    ref = torch.maximum(-a * s, -a * s.clamp(1 - 0.02, 1 + 0.03)).mean()
    ref.backward()
    assert_close(got, ref)
    assert_close(lp.grad, lp_ref.grad)


# ------------------------------------------------------------------------------------------
# REINFORCE
# ------------------------------------------------------------------------------------------


def test_reinforce_hand_values():
    # L = -A log π: token 0: -2·ln 0.5 = 2 ln 2 = 1.3863; token 1: -(-1)·ln 0.25 = -2 ln 2; padding: 0.
    # dL/dlp = -A: [-2, 1, 0]. No ratio: old log-probs do not change the loss.
    lp = torch.log(_t([[0.5, 0.25, 1.0]])).requires_grad_(True)
    adv = _t([[2.0, -1.0, 3.0]])
    mask = _t([[1, 1, 0]])
    for old in (torch.zeros(1, 3), _t([[-3.0, 1.0, 0.0]])):
        loss, stats = policy_loss_per_token(
            lp, old, adv, mask, objective="reinforce", clip_low=0.2, clip_high=0.28, dual_clip=3.0
        )
        assert_close(loss, _t([[2 * LN2, -2 * LN2, 0.0]]))
        assert stats["clip_frac"] == 0.0
    loss.sum().backward()
    assert_close(lp.grad, _t([[-2.0, 1.0, 0.0]]))


# ------------------------------------------------------------------------------------------
# KL estimators
# ------------------------------------------------------------------------------------------


def test_kl_estimators_hand_values():
    # column 0: π = 0.5, π_ref = 0.25 -> δ = ln(0.25/0.5) = -ln 2
    #   k1 = ln 2 = 0.69315; k2 = ½ ln²2 = 0.24023; k3 = e^{-ln2} + ln 2 - 1 = 0.5 + 0.69315 - 1 = 0.19315
    # column 1: π = 0.25, π_ref = 0.5 -> δ = +ln 2
    #   k1 = -ln 2; k2 = 0.24023; k3 = 2 - ln 2 - 1 = 0.30685
    # column 2: π = π_ref -> δ = 0 -> all three are 0 (REFERENCES golden value for k3)
    lp = torch.log(_t([[0.5, 0.25, 0.3]]))
    ref = torch.log(_t([[0.25, 0.5, 0.3]]))
    assert_close(kl_per_token(lp, ref, estimator="k1"), _t([[LN2, -LN2, 0.0]]))
    assert_close(kl_per_token(lp, ref, estimator="k2"), _t([[0.5 * LN2**2, 0.5 * LN2**2, 0.0]]))
    assert_close(kl_per_token(lp, ref, estimator="k3"), _t([[0.5 + LN2 - 1, 2 - LN2 - 1, 0.0]]))
    assert kl_per_token(lp, lp.clone(), estimator="k3").abs().max().item() == 0.0


def test_kl_k3_gradient():
    # d k3 / d lp = d(e^δ - δ - 1)/dδ · dδ/dlp = (e^δ - 1)·(-1) = 1 - e^δ; at δ = -ln 2: 1 - 0.5 = 0.5
    lp = torch.log(_t([[0.5]])).requires_grad_(True)
    kl_per_token(lp, torch.log(_t([[0.25]])), estimator="k3").sum().backward()
    assert_close(lp.grad, _t([[0.5]]))


def test_kl_unknown_estimator_lists_names():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_per_token(torch.zeros(1, 1), torch.zeros(1, 1), estimator="k4")


# ------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------

# rows: [1, 2, 3 | pad] (3 tokens), [4 | pad pad pad] (1 token), fully masked row (0 tokens)
_L = _t([[1.0, 2.0, 3.0, 99.0], [4.0, 99.0, 99.0, 99.0], [50.0, 50.0, 50.0, 50.0]])
_M = _t([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_aggregation_norm_counts():
    # Σ M = 4; rows with tokens = 2 (the empty row is not counted); longest row = 3 tokens
    norm = aggregation_norm(_M)
    assert (norm.total_tokens, norm.num_seqs, norm.max_len) == (4.0, 2, 3)
    assert aggregation_norm(_M, max_len=8).max_len == 8
    with pytest.raises(ValueError, match="longest row"):
        aggregation_norm(_M, max_len=2)


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("token-mean", 10 / 4),  # (1+2+3+4)/4 = 2.5
        ("seq-mean-token-sum", 10 / 2),  # (6 + 4)/2 = 5
        ("seq-mean-token-mean", (6 / 3 + 4 / 1) / 2),  # (2 + 4)/2 = 3
        ("seq-mean-token-sum-norm", 10 / (2 * 3)),  # ΣLM/(B·T_max) = 10/6 = 1.6667
    ],
)
def test_aggregation_modes_hand_values(mode, expected):
    out = aggregate(_L, _M, mode=mode, norm=aggregation_norm(_M))
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_sum_norm_with_configured_max_len():
    # Dr. GRPO with a generation budget of 5: 10 / (2·5) = 1.0
    out = aggregate(_L, _M, mode="seq-mean-token-sum-norm", norm=aggregation_norm(_M, max_len=5))
    assert out.item() == pytest.approx(1.0)


def test_aggregate_uses_global_counts_not_local():
    # row 1 alone with the full-batch norm: token-mean = 4 / 4 (global Σ M) = 1, not 4 / 1
    norm = aggregation_norm(_M)
    assert aggregate(_L[1:2], _M[1:2], mode="token-mean", norm=norm).item() == pytest.approx(1.0)
    # seq-mean-token-sum: 4 / 2 (global B) = 2
    assert aggregate(_L[1:2], _M[1:2], mode="seq-mean-token-sum", norm=norm).item() == pytest.approx(2.0)


def test_aggregate_empty_mask_is_zero_not_nan():
    mask = torch.zeros(2, 3)
    loss = torch.ones(2, 3, requires_grad=True)
    for mode in AGGREGATIONS:
        out = aggregate(loss, mask, mode=mode, norm=aggregation_norm(mask))
        assert out.item() == 0.0


def test_aggregate_rejects_bad_input():
    norm = aggregation_norm(_M)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(_L, _M, mode="mean", norm=norm)
    with pytest.raises(ValueError, match="shape"):
        aggregate(_L, _M[:, :2], mode="token-mean", norm=norm)
    with pytest.raises(ValueError, match=">= 0"):
        AggregationNorm(total_tokens=-1.0, num_seqs=1, max_len=1)


# ------------------------------------------------------------------------------------------
# Micro-batches
# ------------------------------------------------------------------------------------------


def test_micro_batches_hand_example():
    # lengths [5, 3, 8, 2, 3], budget 10. Longest first (ties by index): 2(8), 0(5), 1(3), 4(3), 3(2).
    # group 1: longest 8 -> 10//8 = 1 row -> [2]
    # group 2: longest 5 -> 10//5 = 2 rows -> rows 0, 1 (2×5 = 10 <= 10)
    # group 3: longest 3 -> 10//3 = 3 rows, only 4 and 3 left -> [3, 4] (2×3 = 6)
    groups = micro_batches([5, 3, 8, 2, 3], 10)
    assert [g.tolist() for g in groups] == [[2], [0, 1], [3, 4]]


def test_micro_batches_over_long_row_alone():
    assert [g.tolist() for g in micro_batches([12, 1, 1], 10)] == [[0], [1, 2]]
    assert [g.tolist() for g in micro_batches(torch.tensor([3, 3, 3]), 100)] == [[0, 1, 2]]


def test_micro_batches_budget_property_and_determinism():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 30)))
        budget = int(rng.integers(1, 120))
        groups = micro_batches(lengths, budget)
        flat = np.concatenate(groups)
        assert sorted(flat.tolist()) == list(range(len(lengths)))  # every row exactly once
        for g in groups:
            assert len(g) == 1 or len(g) * lengths[g].max() <= budget
        assert [g.tolist() for g in micro_batches(lengths, budget)] == [g.tolist() for g in groups]


def test_micro_batches_rejects_bad_budget():
    with pytest.raises(ValueError, match="token_budget"):
        micro_batches([1, 2], 0)


# ------------------------------------------------------------------------------------------
# Micro-batch split equality (values and gradients)
# ------------------------------------------------------------------------------------------


def _random_batch(seed: int, n: int = 7, t: int = 9):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    lengths[2] = 0  # one fully masked row
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    lp = -torch.rand(n, t, generator=gen) * 2
    old = lp + 0.3 * torch.randn(n, t, generator=gen)
    ref = lp + 0.3 * torch.randn(n, t, generator=gen)
    adv = torch.randn(n, 1, generator=gen).expand(n, t) + 0.1 * torch.randn(n, t, generator=gen)
    ent = torch.rand(n, t, generator=gen)
    return lp, old, ref, adv * mask, ent, mask, lengths


@pytest.mark.parametrize("objective", ["ppo_clip", "gspo", "reinforce"])
@pytest.mark.parametrize("mode", list(AGGREGATIONS))
def test_micro_batch_split_equals_full_batch(objective, mode):
    lp0, old, ref, adv, ent, mask, lengths = _random_batch(1)
    cfg = LossConfig(
        objective=objective,
        aggregation=mode,
        kl_coef=0.05,
        entropy_coef=0.01,
        gspo_clip_low=0.02,
        gspo_clip_high=0.03,
    )
    norm = aggregation_norm(mask)

    lp_full = lp0.clone().requires_grad_(True)
    full, _ = total_loss(lp_full, old, adv, mask, cfg, norm, ref_logprobs=ref, entropy=ent)
    full.backward()

    lp_split = lp0.clone().requires_grad_(True)
    acc = torch.zeros(())
    groups = micro_batches(lengths, token_budget=12)
    assert len(groups) > 2
    for idx in groups:
        width = max(int(lengths[idx].max()), 1)  # trim padding to this micro-batch's width
        rows = torch.as_tensor(idx)
        part, _ = total_loss(
            lp_split[rows, :width],
            old[rows, :width],
            adv[rows, :width],
            mask[rows, :width],
            cfg,
            norm,
            ref_logprobs=ref[rows, :width],
            entropy=ent[rows, :width],
        )
        part.backward()
        acc = acc + part.detach()
    assert_close(acc, full.detach(), rtol=1e-5, atol=1e-6)
    assert_close(lp_split.grad, lp_full.grad, rtol=1e-5, atol=1e-7)


class _TinyPolicy(torch.nn.Module):
    """Embedding + linear head: log π(token_t | token_t) as a stand-in causal LM."""

    def __init__(self, vocab: int = 6, dim: int = 4):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, T) -> (N, T) log-probs and entropy
        logp_all = torch.log_softmax(self.head(self.emb(ids)), dim=-1)  # (N, T, V)
        nxt = torch.roll(ids, -1, dims=1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp_all.gather(-1, nxt[..., None])[..., 0], ent


def test_micro_batch_parameter_gradients_equal_full_batch():
    torch.manual_seed(0)
    model = _TinyPolicy()
    _, _, _, adv, _, mask, lengths = _random_batch(2)
    ids = torch.randint(0, 6, mask.shape)
    with torch.no_grad():
        old = model(ids)[0] + 0.2 * torch.randn(mask.shape)
        ref = model(ids)[0] + 0.2 * torch.randn(mask.shape)
    cfg = LossConfig(aggregation="seq-mean-token-mean", kl_coef=0.1, entropy_coef=0.01)
    norm = aggregation_norm(mask)

    model.zero_grad()
    lp, ent = model(ids)
    full, _ = total_loss(lp, old, adv, mask, cfg, norm, ref_logprobs=ref, entropy=ent)
    full.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    for idx in micro_batches(lengths, token_budget=10):
        rows = torch.as_tensor(idx)
        lp, ent = model(ids[rows])
        part, _ = total_loss(
            lp, old[rows], adv[rows], mask[rows], cfg, norm, ref_logprobs=ref[rows], entropy=ent
        )
        part.backward()
    for p, g in zip(model.parameters(), full_grads):
        assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------
# total_loss, config, gradient clipping
# ------------------------------------------------------------------------------------------


def test_total_loss_hand_value():
    # one row, two tokens, ρ = 1, A = 1 -> PPO L = [-1, -1] -> token-mean -1
    # π = 0.5, π_ref = 0.25 -> k3 = 0.5 + ln 2 - 1 = 0.19315 per token -> mean 0.19315
    # entropy [0.7, 0.3] -> mean 0.5
    # total = -1 + 0.1·0.19315 - 0.01·0.5 = -0.985685
    lp = torch.log(_t([[0.5, 0.5]]))
    ref = torch.log(_t([[0.25, 0.25]]))
    mask = torch.ones(1, 2)
    cfg = LossConfig(kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01)
    loss, stats = total_loss(
        lp,
        lp.clone(),
        torch.ones(1, 2),
        mask,
        cfg,
        aggregation_norm(mask),
        ref_logprobs=ref,
        entropy=_t([[0.7, 0.3]]),
    )
    k3 = 0.5 + LN2 - 1
    assert loss.item() == pytest.approx(-1 + 0.1 * k3 - 0.01 * 0.5, rel=1e-6)
    assert stats["pg_loss"] == pytest.approx(-1.0)
    assert stats["kl"] == pytest.approx(k3, rel=1e-5)
    assert stats["entropy"] == pytest.approx(0.5)
    assert stats["loss"] == pytest.approx(loss.item())
    assert all(isinstance(v, float) for v in stats.values())


def test_total_loss_requires_reference_and_entropy():
    x, mask = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        total_loss(x, x, x, mask, LossConfig(kl_coef=0.1), aggregation_norm(mask))
    with pytest.raises(ValueError, match="entropy"):
        total_loss(x, x, x, mask, LossConfig(entropy_coef=0.1), aggregation_norm(mask))


def test_total_loss_gspo_uses_gspo_bounds():
    # s = e^0.2 = 1.2214, A = 1: with GSPO bounds the loss is -(1 + 4e-4) = -1.0004, not -1.28 (PPO bounds)
    lp, mask = _t([[0.1, 0.3]]), torch.ones(1, 2)
    loss, _ = total_loss(
        lp, torch.zeros(1, 2), torch.ones(1, 2), mask, LossConfig(objective="gspo"), aggregation_norm(mask)
    )
    assert loss.item() == pytest.approx(-1.0004, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"objective": "ppo"}, "ppo_clip, gspo, reinforce"),
        ({"kl_estimator": "k5"}, "k1, k2, k3"),
        ({"aggregation": "sum"}, "seq-mean-token-sum-norm"),
        ({"clip_low": -0.1}, "clip_low"),
        ({"clip_low": 1.0}, "clip_low"),
        ({"clip_high": -0.1}, "clip_high"),
        ({"dual_clip": 1.0}, "dual_clip"),
        ({"kl_coef": -1.0}, "kl_coef"),
        ({"sum_norm_max_len": 0}, "sum_norm_max_len"),
    ],
)
def test_loss_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def test_loss_config_defaults_and_omegaconf():
    from omegaconf import OmegaConf

    cfg = LossConfig()
    assert (cfg.clip_low, cfg.clip_high, cfg.dual_clip) == (0.2, 0.28, 3.0)
    assert (cfg.gspo_clip_low, cfg.gspo_clip_high) == (3e-4, 4e-4)
    merged = OmegaConf.merge(OmegaConf.structured(LossConfig), {"dual_clip": None, "objective": "gspo"})
    assert OmegaConf.to_object(merged) == LossConfig(dual_clip=None, objective="gspo")


def test_clip_grad_norm():
    # grads [3] and [4]: ‖g‖ = sqrt(9 + 16) = 5; max_norm 1 scales by 1/5 -> [0.6], [0.8]
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    a.grad, b.grad = _t([3.0]), _t([4.0])
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    assert_close(a.grad, _t([0.6]))
    assert_close(b.grad, _t([0.8]))
    # below the limit or max_norm=None: untouched, norm returned
    assert clip_grad_norm([a, b], None) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)
    assert_close(a.grad, _t([0.6]))
    # non-finite: returned, gradients left as they are
    a.grad = _t([float("nan")])
    assert math.isnan(clip_grad_norm([a, b], 1.0))
    assert_close(b.grad, _t([0.8]))
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm([a], 0.0)


def test_total_loss_padding_garbage_gives_finite_gradients():
    # -inf log-probs on padding (a masked-out position) must not produce NaN through the KL or the loss
    lp = _t([[math.log(0.5), -float("inf")]]).requires_grad_(True)
    ref = _t([[math.log(0.25), -float("inf")]])
    mask = _t([[1, 0]])
    for objective in ("ppo_clip", "gspo", "reinforce"):
        lp.grad = None
        cfg = LossConfig(objective=objective, kl_coef=0.1)
        loss, _ = total_loss(
            lp, lp.detach(), torch.ones(1, 2), mask, cfg, aggregation_norm(mask), ref_logprobs=ref
        )
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
        assert lp.grad[0, 1].item() == 0.0
