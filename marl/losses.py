"""Policy-gradient objectives, KL estimators and loss aggregation.

The math lives in pure functions over ``(N, T)`` tensors with explicit scalar
arguments; :class:`LossConfig` only exists to carry YAML settings to
:func:`total_loss`. Formulas follow ``REFERENCES.md`` ("Policy losses, KL,
aggregation").

Shape legend: ``N`` rows (samples), ``T`` tokens. ``mask`` is 1 on tokens that
carry a gradient (completion tokens) and 0 on prompt and padding positions.

Micro-batching. A batch may be split into micro-batches (:func:`micro_batches`)
whose losses are back-propagated one after the other. The aggregation
denominators (token count, sequence count, ``T_max``) are computed once over the
*full* batch (:func:`aggregation_norm`) and passed to every micro-batch, so the
sum of the micro-batch losses equals the full-batch loss, and so do the gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

# A log-ratio beyond this is numerically meaningless (e^20 ~ 5e8) and only risks
# inf/NaN; it is clamped before exponentiation (verl clamps at the same value).
MAX_LOG_RATIO = 20.0

OBJECTIVES = ("ppo_clip", "gspo", "reinforce")
AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _check_name(kind: str, name: str, valid: Sequence[str]) -> None:
    if name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(valid)}")


@dataclass
class LossConfig:
    """Settings of one agent's policy loss (composed into the run config)."""

    objective: str = "ppo_clip"
    """Policy objective: ppo_clip | gspo | reinforce."""
    clip_low: float = 0.2
    """PPO ε_low: the ratio is clipped below at 1 − ε_low (PPO paper: 0.2)."""
    clip_high: float = 0.28
    """PPO ε_high: the ratio is clipped above at 1 + ε_high (DAPO clip-higher: 0.28)."""
    dual_clip: float | None = 3.0
    """Dual-clip constant c > 1 bounding the loss of A < 0 tokens at −A·c (ppo_clip only); None disables."""
    gspo_clip_low: float = 3e-4
    """GSPO lower bound on the sequence ratio: 1 − gspo_clip_low (GSPO paper: 3e-4)."""
    gspo_clip_high: float = 4e-4
    """GSPO upper bound on the sequence ratio: 1 + gspo_clip_high (GSPO paper: 4e-4)."""
    kl_coef: float = 0.0
    """β, weight of the KL penalty to the frozen reference; 0 disables the reference model."""
    kl_estimator: str = "k3"
    """KL estimator: k1 | k2 | k3 (k3 is unbiased, low variance and >= 0)."""
    aggregation: str = "token-mean"
    """Aggregation: token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (the loss subtracts entropy_coef · entropy); 0 disables it."""
    sum_norm_max_len: int | None = None
    """T_max of seq-mean-token-sum-norm (Dr. GRPO: the generation budget); None: longest row of the batch."""

    def __post_init__(self) -> None:
        _check_name("objective", self.objective, OBJECTIVES)
        _check_name("kl_estimator", self.kl_estimator, tuple(KL_ESTIMATORS))
        _check_name("aggregation", self.aggregation, AGGREGATIONS)
        for name in ("clip_low", "gspo_clip_low"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"{name} ({value}) must be in [0, 1) so that the lower ratio bound 1 − {name} > 0"
                )
        for name in ("clip_high", "gspo_clip_high"):
            value = getattr(self, name)
            if value < 0.0:
                raise ValueError(f"{name} ({value}) must be >= 0; the upper ratio bound is 1 + {name}")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            raise ValueError(f"dual_clip ({self.dual_clip}) must be > 1 (paper: 3.0) or None to disable it")
        if self.kl_coef < 0.0:
            raise ValueError(f"kl_coef ({self.kl_coef}) must be >= 0; set 0 to disable the KL penalty")
        if self.sum_norm_max_len is not None and self.sum_norm_max_len <= 0:
            raise ValueError(f"sum_norm_max_len ({self.sum_norm_max_len}) must be > 0 or None")


# ----------------------------------------------------------------------------------------------
# Policy objectives (per-token losses, to be minimised)
# ----------------------------------------------------------------------------------------------


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    count = float(mask.sum())
    return float((x * mask).sum()) / count if count > 0 else 0.0


def _log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log ρ_t = log π_θ − log π_old on masked tokens, 0 elsewhere, clamped to ±MAX_LOG_RATIO."""
    log_ratio = torch.where(mask > 0, logprobs - old_logprobs, torch.zeros_like(logprobs))
    return log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def _clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high)), then min(·, −A·c) where A < 0 if c is given."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    stats = {"clip_frac": _masked_mean((clipped > unclipped).float(), mask)}
    if dual_clip is not None:
        dual = -advantages * dual_clip
        dual_active = (advantages < 0) & (dual < loss)
        loss = torch.where(advantages < 0, torch.minimum(loss, dual), loss)
        stats["dual_clip_frac"] = _masked_mean(dual_active.float(), mask)
    else:
        stats["dual_clip_frac"] = 0.0
    return loss, stats


def _ratio_stats(log_ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Token ratio mean and approx KL(π_old ‖ π_θ) ≈ mean((ρ − 1) − log ρ) (Schulman's k3)."""
    log_ratio = log_ratio.detach()
    ratio = log_ratio.exp()
    return {
        "ratio_mean": _masked_mean(ratio, mask),
        "approx_kl": _masked_mean((ratio - 1.0) - log_ratio, mask),
    }


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with asymmetric bounds and optional dual clip, per token.

    ρ_t = exp(log π_θ − log π_old);
    L_t = max(−A ρ_t, −A·clip(ρ_t, 1 − ε_low, 1 + ε_high))   (Schulman et al. 2017, PPO;
    ε_high > ε_low is DAPO's clip-higher, Yu et al. 2025);
    for A < 0 and c given: L_t = min(L_t, −A·c)   (dual clip, Ye et al. 2020, "Mastering
    Complex Control in MOBA Games with Deep RL").

    Args: ``logprobs``, ``old_logprobs``, ``advantages``, ``mask`` are (N, T). Returns the
    (N, T) loss (0 where ``mask`` is 0) and float stats ``clip_frac`` (tokens whose gradient
    the clip removes), ``dual_clip_frac``, ``ratio_mean``, ``approx_kl``.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)
    loss, stats = _clipped_surrogate(log_ratio.exp(), advantages, mask, clip_low, clip_high, dual_clip)
    stats.update(_ratio_stats(log_ratio, mask))
    return loss * mask, stats


def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO sequence-ratio clipped surrogate, in the paper's GSPO-token form, per token.

    s_i = exp((1/|o_i|) Σ_t M_t log ρ_{i,t}) is the length-normalised sequence ratio
    (Zheng et al. 2025, "Group Sequence Policy Optimization"). GSPO-token (eq. 13 there):
    s_{i,t} = sg[s_i] · π_θ(y_t)/sg[π_θ(y_t)], whose *value* is s_i on every token of row i
    and whose gradient is s_i·∇log π_θ(y_t); L_{i,t} = max(−A s_{i,t}, −A·clip(s_{i,t},
    1 − ε_low, 1 + ε_high)). With a per-sequence A and seq-mean-token-mean aggregation this
    is exactly GSPO (same value and gradient); other aggregations reweight tokens.
    The clip therefore acts per sequence: all tokens of a clipped row lose their gradient.
    The paper's bounds are ε_low = 3e-4, ε_high = 4e-4. No dual clip.

    Args: (N, T) tensors as in :func:`ppo_clip_loss`. A row with no masked token has s_i = 1.
    Returns the (N, T) loss (0 where ``mask`` is 0) and stats ``clip_frac`` (masked tokens in
    clipped rows), ``seq_ratio_mean`` (mean of s_i over rows with tokens), ``ratio_mean``
    and ``approx_kl`` (token level, for comparison with PPO).
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)
    lengths = mask.sum(dim=-1)  # (N,)
    seq_log_ratio = log_ratio.sum(dim=-1) / lengths.clamp(min=1.0)  # (N,)
    # value: log s_i on every token; gradient: ∇ log π_θ(y_t)
    token_log_ratio = logprobs - logprobs.detach() + seq_log_ratio.detach().unsqueeze(-1)
    token_log_ratio = torch.where(mask > 0, token_log_ratio, torch.zeros_like(token_log_ratio))
    ratio = token_log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()  # (N, T)
    loss, stats = _clipped_surrogate(ratio, advantages, mask, clip_low, clip_high, None)
    del stats["dual_clip_frac"]
    stats.update(_ratio_stats(log_ratio, mask))
    has_tokens = (lengths > 0).to(logprobs.dtype)
    stats["seq_ratio_mean"] = _masked_mean(seq_log_ratio.detach().exp(), has_tokens)
    return loss * mask, stats


def reinforce_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain REINFORCE (Williams 1992): L_t = −A_t · log π_θ(y_t), no ratio and no clip.

    ``old_logprobs`` only feeds the ``ratio_mean`` / ``approx_kl`` stats (how far the policy
    moved since sampling); it does not enter the loss. Returns the (N, T) loss (0 where
    ``mask`` is 0) and stats (``clip_frac`` is always 0).
    """
    mask = mask.to(logprobs.dtype)
    safe_logprobs = torch.where(mask > 0, logprobs, torch.zeros_like(logprobs))
    loss = -advantages * safe_logprobs
    stats = {"clip_frac": 0.0}
    stats.update(_ratio_stats(_log_ratio(logprobs, old_logprobs, mask), mask))
    return loss * mask, stats


def policy_loss_per_token(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    objective: str,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token policy loss (N, T) of the named objective and its float stats.

    ``objective`` is ``ppo_clip`` (:func:`ppo_clip_loss`), ``gspo`` (:func:`gspo_loss`; the
    bounds passed here are its sequence-ratio bounds and ``dual_clip`` is ignored) or
    ``reinforce`` (:func:`reinforce_loss`; bounds ignored).
    """
    _check_name("objective", objective, OBJECTIVES)
    _check_shapes(logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if objective == "ppo_clip":
        return ppo_clip_loss(
            logprobs,
            old_logprobs,
            advantages,
            mask,
            clip_low=clip_low,
            clip_high=clip_high,
            dual_clip=dual_clip,
        )
    if objective == "gspo":
        return gspo_loss(logprobs, old_logprobs, advantages, mask, clip_low=clip_low, clip_high=clip_high)
    return reinforce_loss(logprobs, old_logprobs, advantages, mask)


def _check_shapes(reference: torch.Tensor, **others: torch.Tensor) -> None:
    if reference.dim() != 2:
        raise ValueError(f"logprobs must be (N, T), got shape {tuple(reference.shape)}")
    for name, tensor in others.items():
        if tuple(tensor.shape) != tuple(reference.shape):
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but logprobs has {tuple(reference.shape)}; "
                "every per-token tensor must be (N, T) and aligned with logprobs"
            )


# ----------------------------------------------------------------------------------------------
# KL to the frozen reference
# ----------------------------------------------------------------------------------------------


def kl_k1(delta: torch.Tensor) -> torch.Tensor:
    """k1 = −δ with δ = log π_ref − log π_θ (Schulman 2020, "Approximating KL Divergence")."""
    return -delta


def kl_k2(delta: torch.Tensor) -> torch.Tensor:
    """k2 = ½ δ² with δ = log π_ref − log π_θ (Schulman 2020)."""
    return 0.5 * delta.square()


def kl_k3(delta: torch.Tensor) -> torch.Tensor:
    """k3 = e^δ − δ − 1 with δ = log π_ref − log π_θ; unbiased, >= 0 (Schulman 2020; GRPO)."""
    return torch.expm1(delta) - delta


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, *, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) on tokens sampled from π_θ, shape (N, T).

    δ = log π_ref − log π_θ; k1 = −δ, k2 = ½δ², k3 = e^δ − δ − 1 (Schulman 2020). Padding
    positions are not masked here: multiply by the mask or use :func:`aggregate`.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}; valid names: {', '.join(KL_ESTIMATORS)}")
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"ref_logprobs has shape {tuple(ref_logprobs.shape)} but logprobs has {tuple(logprobs.shape)}"
        )
    return KL_ESTIMATORS[estimator](ref_logprobs - logprobs)


# ----------------------------------------------------------------------------------------------
# Aggregation with global counts
# ----------------------------------------------------------------------------------------------


@dataclass
class AggregationNorm:
    """Denominators of the aggregation modes, computed ONCE over the full batch."""

    total_tokens: float
    """Σ M over the full batch (token-mean)."""
    num_seqs: int
    """Rows of the full batch with at least one masked token (the seq-mean modes' B)."""
    max_len: int
    """T_max of seq-mean-token-sum-norm: longest row's token count, or a configured constant."""

    def __post_init__(self) -> None:
        if self.total_tokens < 0 or self.num_seqs < 0 or self.max_len < 0:
            raise ValueError(
                f"AggregationNorm counts must be >= 0, got total_tokens={self.total_tokens}, "
                f"num_seqs={self.num_seqs}, max_len={self.max_len}"
            )


def aggregation_norm(mask: torch.Tensor, *, max_len: int | None = None) -> AggregationNorm:
    """Global denominators of a full batch's (N, T) loss mask.

    ``total_tokens`` = Σ M; ``num_seqs`` = rows with Σ_t M > 0 (fully masked rows, e.g. a
    MC-GRPO pivot, carry no gradient and do not dilute the mean); ``max_len`` = the given
    constant (Dr. GRPO divides by the generation budget) or else max_i Σ_t M_i, the longest
    row's token count in the *full* batch (so it cannot depend on the split).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (N, T), got shape {tuple(mask.shape)}")
    lengths = mask.detach().to(torch.float64).sum(dim=-1)  # (N,)
    total = float(lengths.sum())
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is not None and max_len < longest:
        raise ValueError(
            f"max_len ({max_len}) is shorter than the longest row ({longest} tokens); "
            "raise sum_norm_max_len to at least the generation budget or leave it None"
        )
    if total == 0:
        logger.warning("aggregation_norm: the mask has no tokens; the loss will be 0 with a zero gradient")
    return AggregationNorm(
        total_tokens=total,
        num_seqs=int((lengths > 0).sum()),
        max_len=longest if max_len is None else int(max_len),
    )


def aggregate(loss: torch.Tensor, mask: torch.Tensor, *, mode: str, norm: AggregationNorm) -> torch.Tensor:
    """Reduce a token loss L (N, T) with mask M (N, T) to a scalar, using global counts.

    token-mean:              Σ L M / Σ M                          (DAPO)
    seq-mean-token-sum:      (1/B) Σ_i Σ_t L M
    seq-mean-token-mean:     (1/B) Σ_i (Σ_t L M / |o_i|)           (GRPO, GSPO)
    seq-mean-token-sum-norm: Σ L M / (B · T_max)                   (Dr. GRPO)
    Σ M, B and T_max come from ``norm`` (the full batch); |o_i| = Σ_t M_i is row-local. All
    four are sums over rows divided by global constants, so summing this over micro-batches
    gives the full-batch value. A zero denominator gives 0 (still attached to the graph).
    """
    _check_name("aggregation", mode, AGGREGATIONS)
    if loss.shape != mask.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but loss has {tuple(loss.shape)}")
    mask = mask.to(loss.dtype)
    masked = torch.where(mask > 0, loss, torch.zeros_like(loss)) * mask
    if mode == "token-mean":
        return masked.sum() / max(norm.total_tokens, 1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum() / max(norm.num_seqs, 1)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)  # (N,)
        return per_seq.sum() / max(norm.num_seqs, 1)
    return masked.sum() / max(norm.num_seqs * norm.max_len, 1)


# ----------------------------------------------------------------------------------------------
# Micro-batches by token budget
# ----------------------------------------------------------------------------------------------


def micro_batches(lengths: Sequence[int] | np.ndarray | torch.Tensor, token_budget: int) -> list[np.ndarray]:
    """Group row indices so that each group's rows × (longest row in it) <= ``token_budget``.

    Rows are sorted by length, longest first (ties by index, so the result is deterministic),
    and cut greedily into consecutive groups; for sorted rows this greedy cut gives the
    fewest groups. A row longer than the budget gets a micro-batch of its own. Returns a
    list of int64 index arrays (each sorted ascending), longest group first, covering every
    row exactly once. ``lengths`` (N,) are the padded-to lengths (prompt + completion).
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget ({token_budget}) must be > 0")
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    lens = np.asarray(lengths)
    if lens.ndim != 1:
        raise ValueError(f"lengths must be 1-D (N,), got shape {lens.shape}")
    if lens.size and (lens.min() < 0 or not np.all(lens == np.round(lens))):
        raise ValueError("lengths must be non-negative integers")
    lens = lens.astype(np.int64)
    order = np.lexsort((np.arange(lens.size), -lens))  # longest first, then by index
    groups: list[np.ndarray] = []
    start = 0
    while start < order.size:
        longest = int(lens[order[start]])
        rows = max(1, token_budget // longest) if longest > 0 else order.size - start
        if longest > token_budget:
            logger.debug("row %d (%d tokens) exceeds token_budget %d", order[start], longest, token_budget)
        groups.append(np.sort(order[start : start + rows]))
        start += rows
    return groups


# ----------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------


def clip_grad_norm(parameters: torch.Tensor | Sequence[torch.Tensor], max_norm: float | None) -> float:
    """Scale gradients in place so that their global L2 norm is at most ``max_norm``; return the norm.

    ‖g‖ = sqrt(Σ_p ‖g_p‖²) over all parameters with a gradient; if ‖g‖ > max_norm every g_p
    is multiplied by max_norm/(‖g‖ + 1e-6) (Pascanu et al. 2013; as ``torch.nn.utils.clip_grad_norm_``).
    ``max_norm`` None (or inf) only measures. Returns the norm *before* clipping (log it). A
    non-finite norm is returned as is and the gradients are left untouched, so the caller
    can skip the step.
    """
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm ({max_norm}) must be > 0, or None to only measure the gradient norm")
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        norm_value = float(norm)
        if not np.isfinite(norm_value):
            logger.warning("gradient norm is %s; gradients left unclipped", norm_value)
            return norm_value
        if max_norm is not None and norm_value > max_norm:
            scale = max_norm / (norm_value + 1e-6)
            for g in grads:
                g.mul_(scale)
    return norm_value


# ----------------------------------------------------------------------------------------------
# Everything together
# ----------------------------------------------------------------------------------------------


def total_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    norm: AggregationNorm,
    ref_logprobs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss of one (micro-)batch: agg(L^pg) + β·agg(KL) − c_H·agg(H).

    Each term is aggregated with ``cfg.aggregation`` and the full-batch ``norm``, so the
    sum over micro-batches equals the full-batch loss. The KL term (GRPO's KL-in-loss) uses
    ``cfg.kl_estimator`` against ``ref_logprobs``; it is required when ``cfg.kl_coef > 0``.
    ``entropy`` (N, T) is the policy's per-token entropy, required when
    ``cfg.entropy_coef != 0``. Stats: the objective's stats plus ``pg_loss``, ``kl``,
    ``entropy`` (each this micro-batch's aggregated contribution) and ``loss``.
    """
    if cfg.objective == "gspo":
        clip_low, clip_high = cfg.gspo_clip_low, cfg.gspo_clip_high
    else:
        clip_low, clip_high = cfg.clip_low, cfg.clip_high
    pg, stats = policy_loss_per_token(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        objective=cfg.objective,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=cfg.dual_clip,
    )
    pg_loss = aggregate(pg, mask, mode=cfg.aggregation, norm=norm)
    loss = pg_loss
    stats["pg_loss"] = float(pg_loss.detach())
    if cfg.kl_coef > 0 and ref_logprobs is None:
        raise ValueError(f"kl_coef ({cfg.kl_coef}) > 0 needs ref_logprobs; pass them or set kl_coef=0")
    if ref_logprobs is not None:
        _check_shapes(logprobs, ref_logprobs=ref_logprobs)
        # zero both sides off the mask so garbage padding (e.g. -inf) cannot turn into NaN gradients
        on = mask > 0
        zero = torch.zeros_like(logprobs)
        kl_tok = kl_per_token(
            torch.where(on, logprobs, zero), torch.where(on, ref_logprobs, zero), estimator=cfg.kl_estimator
        )
        kl = aggregate(kl_tok if cfg.kl_coef > 0 else kl_tok.detach(), mask, mode=cfg.aggregation, norm=norm)
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * kl
        stats["kl"] = float(kl.detach())
    if cfg.entropy_coef != 0:
        if entropy is None:
            raise ValueError(
                f"entropy_coef ({cfg.entropy_coef}) != 0 needs the per-token entropy; pass it or set 0"
            )
        _check_shapes(logprobs, entropy=entropy)
        ent = aggregate(entropy, mask, mode=cfg.aggregation, norm=norm)
        loss = loss - cfg.entropy_coef * ent
        stats["entropy"] = float(ent.detach())
    elif entropy is not None:
        stats["entropy"] = float(aggregate(entropy.detach(), mask, mode=cfg.aggregation, norm=norm))
    stats["loss"] = float(loss.detach())
    return loss, stats
