"""Outcome estimators: one scalar reward per sample, one advantage per sample (broadcast over tokens).

Every function is pure and vectorised: ``rewards`` is ``(N,)`` float, ``group_ids`` is an integer
array ``(N,)`` or a tuple of them (a composite key; see ``marl.credit.groups.group_codes``).
Groups come from ids, never from the order of the list: permuting the samples permutes the
advantages the same way. A group of one gets advantage 0; an all-equal group gets 0, never NaN;
a NaN or infinite reward raises ``ValueError`` naming its index.

Shape legend: ``N`` samples, ``B`` sequences, ``T`` tokens, ``G`` group size.
"""

from __future__ import annotations

import numpy as np

from marl.credit.groups import (
    GroupIds,
    check_finite,
    group_codes,
    group_deviation,
    group_median,
    group_std,
    safe_divide,
    unique_sorted,
    whiten,
)


def _rewards(rewards: np.ndarray) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {r.shape}")
    check_finite(r, "reward")
    return r


def grpo_advantages(
    rewards: np.ndarray,
    group_ids: GroupIds,
    *,
    scale_by_std: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """GRPO group-relative advantage (Shao et al. 2024, DeepSeekMath, Eq. 3).

    ``A_i = (r_i - mean_g) / (std_g + eps)``; ``std_g`` divides by ``n - 1`` when ``unbiased``
    (verl's default) else by ``n``. ``scale_by_std=False`` gives ``A_i = r_i - mean_g``.
    A group of one and an all-equal group give exactly 0.
    """
    r = _rewards(rewards)
    codes, k = group_codes(group_ids, r.shape[0])
    dev, _ = group_deviation(r, codes, k)
    if not scale_by_std:
        return dev
    std = group_std(dev, codes, k, unbiased=unbiased)
    return safe_divide(dev, std, eps)


def dr_grpo_advantages(rewards: np.ndarray, group_ids: GroupIds) -> np.ndarray:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``A_i = r_i - mean_g``.

    No std division (it biases toward easy/hard questions); pair it with the
    ``seq-mean-token-sum-norm`` loss aggregation.
    """
    return grpo_advantages(rewards, group_ids, scale_by_std=False)


def rloo_advantages(rewards: np.ndarray, group_ids: GroupIds) -> np.ndarray:
    """RLOO (Ahmadian et al. 2024; Kool et al. 2019): leave-one-out baseline.

    ``A_i = r_i - mean_{j != i} r_j = n / (n - 1) * (r_i - mean_g)``; a group of one gives 0.
    """
    r = _rewards(rewards)
    codes, k = group_codes(group_ids, r.shape[0])
    dev, n = group_deviation(r, codes, k)
    return np.where(n > 1, dev * n / np.maximum(n - 1, 1), 0.0)


def reinforce_pp_returns(token_rewards: np.ndarray, mask: np.ndarray, *, gamma: float = 1.0) -> np.ndarray:
    """Per-token discounted return ``G_t = r_t + gamma * G_{t'}`` over the valid tokens of each row,
    ``t'`` the next *valid* token after ``t``.

    ``token_rewards`` and ``mask`` are ``(B, T)``; masked positions contribute nothing and get 0. A
    masked gap inside a row (observation or tool tokens of a multi-turn row) is carried through
    undiscounted: the discount counts the policy's own tokens, and an outcome paid after the gap still
    reaches the tokens before it. (verl's ``compute_reinforce_plus_plus_outcome_advantage`` instead
    resets the running return at every masked position, which is the same for one completion
    followed by padding but cuts multi-turn rows at their first observation.)
    """
    r = np.asarray(token_rewards, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if r.shape != m.shape or r.ndim != 2:
        raise ValueError(f"token_rewards {r.shape} and mask {m.shape} must both be (B, T)")
    check_finite(r[m], "token reward")
    r = np.where(m, r, 0.0)
    out = np.zeros_like(r)
    running = np.zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):  # loop over token positions, vectorised over rows
        running = np.where(m[:, t], r[:, t] + gamma * running, running)
        out[:, t] = running
    return np.where(m, out, 0.0)


def reinforce_pp_advantages(
    token_rewards: np.ndarray,
    mask: np.ndarray,
    *,
    gamma: float = 1.0,
    eps: float = 1e-8,
    unbiased: bool = True,
) -> np.ndarray:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): per-token returns whitened over the whole batch.

    ``A_t = (G_t - mean) / sqrt(var + eps)`` with mean and variance over every valid token of the
    batch (``unbiased``: verl's masked whitening, else OpenRLHF's biased one). The token rewards
    carry the outcome at the last token plus any per-token terms (e.g. a KL penalty) the caller
    adds. Returns ``(B, T)``, 0 on masked positions.
    """
    m = np.asarray(mask, dtype=bool)
    g = reinforce_pp_returns(token_rewards, m, gamma=gamma)
    out = np.zeros_like(g)
    if m.any():
        out[m] = whiten(g[m], eps=eps, unbiased=unbiased)
    return out


def reinforce_pp_baseline_advantages(
    rewards: np.ndarray,
    group_ids: GroupIds,
    *,
    weights: np.ndarray | None = None,
    eps: float = 1e-8,
    unbiased: bool = True,
) -> np.ndarray:
    """REINFORCE++-baseline (Hu 2025): ``A_i = r_i - mean_g``, then whitened over the batch.

    ``weights`` (e.g. completion lengths) weight the whitening statistics: with token counts it
    equals the paper's whitening over all tokens of the batch; ``None`` whitens over samples.
    """
    dev = grpo_advantages(rewards, group_ids, scale_by_std=False)
    if dev.size == 0:
        return dev
    return whiten(dev, weights=weights, eps=eps, unbiased=unbiased)


def mc_grpo_advantages(
    rewards: np.ndarray,
    group_ids: GroupIds,
    *,
    scale_by_std: bool = False,
    unbiased: bool = True,
    eps: float = 1e-6,
    tie_break: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MC-GRPO (Kim 2026, arXiv:2601.22582): median-centred advantages for small groups.

    Draw ``G + 1`` samples per prompt; ``A_i = r_i - median_g`` (optionally divided by
    ``std_g + eps`` over all ``G + 1``). In an odd group exactly one sample sits on the median
    rank: this *pivot* gets ``A = 0`` and is excluded from the gradient, so ``G`` samples
    contribute. With ties at the median the pivot is the middle sample of the group sorted by
    (reward, ``tie_break``); ``tie_break`` defaults to the sample index, pass node ids to make the
    mask independent of list order. Other samples tied with the median keep ``A = 0`` but stay in
    the gradient. An even group (not the paper's setting) uses the mean of its two middle values
    and has no pivot. A group of one is its own pivot.

    Returns ``(advantages, in_gradient)``, both ``(N,)``.
    """
    r = _rewards(rewards)
    codes, k = group_codes(group_ids, r.shape[0])
    median, pivot = group_median(r, codes, tie_break)
    adv = r - median
    adv[pivot] = 0.0
    if scale_by_std:
        dev, _ = group_deviation(r, codes, k)
        adv = safe_divide(adv, group_std(dev, codes, k, unbiased=unbiased), eps)
    return adv, ~pivot


def ngrpo_advantages(
    rewards: np.ndarray,
    group_ids: GroupIds,
    r_max: float,
    *,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """NGRPO (Nan et al. 2025, "Negative-enhanced GRPO"): statistics over the group plus a virtual
    sample with the maximum attainable reward ``r_max``.

    ``mean' = (sum_g r + r_max) / (n + 1)``, ``std'`` over the same ``n + 1`` values (``n`` as the
    divisor when ``unbiased``), ``A_i = (r_i - mean') / (std' + eps)``. By design an all-wrong
    group gets *negative* advantages (the paper's point), so the platform's "all-equal group
    gives 0" holds here only for groups at ``r_max``; a single sample is compared with the
    virtual one likewise. Pair with asymmetric clipping (wider for A > 0).
    """
    r = _rewards(rewards)
    if not np.isfinite(r_max):
        raise ValueError(f"r_max must be finite, got {r_max}")
    if r.size and r.max() > r_max:
        i = int(np.argmax(r))
        raise ValueError(f"reward at index {i} is {r[i]} > r_max {r_max}; set r_max to the maximum reward")
    codes, k = group_codes(group_ids, r.shape[0])
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    d = r - r_max  # shift by the virtual sample: a group at r_max is exactly 0
    sums = np.bincount(codes, weights=d, minlength=k)
    mean = sums / (counts + 1.0)  # the virtual sample contributes d = 0
    dev = d - mean[codes]
    ss = np.bincount(codes, weights=dev * dev, minlength=k) + mean * mean  # + virtual (0 - mean)^2
    var = ss / (counts if unbiased else counts + 1.0).clip(min=1.0)
    return safe_divide(dev, np.sqrt(var)[codes], eps)


def public_baseline_advantages(rewards: np.ndarray, functional_group_ids: GroupIds) -> np.ndarray:
    """AdvEvo-MARL public baseline (Pan et al. 2025): agents of one functional group ``f`` share
    ``b_f = mean_{j in f} R_j`` and ``A_i = R_i - b_f``.

    The functional group is a composite key, typically (episode, role). A group of one gives 0.
    """
    return grpo_advantages(rewards, functional_group_ids, scale_by_std=False)


def spo_advantages(rewards: np.ndarray, baselines: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """SPO (Xu & Ding 2025, "Single-stream Policy Optimization", arXiv:2509.13232).

    ``A_i = r_i - v(x_i)`` with ``v`` the tracker's value *before* this batch's update, then
    normalised over the whole batch: ``(A - mean_B) / (std_B + eps)`` (biased std); an all-equal
    batch gives 0.
    """
    r = _rewards(rewards)
    v = np.asarray(baselines, dtype=np.float64)
    if v.shape != r.shape:
        raise ValueError(f"baselines shape {v.shape} != rewards shape {r.shape}")
    check_finite(v, "SPO baseline")
    a = r - v
    if a.size == 0:
        return a
    codes = np.zeros(a.shape[0], dtype=np.int64)
    dev, _ = group_deviation(a, codes, 1)
    return safe_divide(dev, group_std(dev, codes, 1, unbiased=False), eps)


class SPOValueTracker:
    """SPO's persistent per-prompt value ``v(x)``: a discounted Beta posterior (Xu & Ding 2025, Sec. 3).

    Per prompt key: ``alpha <- rho * alpha + sum r``, ``beta <- rho * beta + sum (1 - r)``,
    ``v = alpha / (alpha + beta)``, with the forgetting rate adapted to the policy's KL drift since
    the prompt was last seen, ``rho = clip(2^(-D / D_half), rho_min, rho_max)`` (paper defaults
    ``D_half = 0.06``, ``rho in [0.875, 0.96]``); without a KL estimate ``rho = rho_max``. A new
    prompt starts at ``v = init_value`` with the stationary pseudo-count ``n0 = 1 / (1 - rho_max)``
    (the paper initialises ``v`` offline; ``seed`` installs such estimates). Rewards must lie in
    [0, 1] (success probability). Several samples of one prompt in a batch all see the pre-update
    value and are folded into a single update. Keys are int64 (hash composite keys first).
    """

    def __init__(
        self,
        *,
        rho_min: float = 0.875,
        rho_max: float = 0.96,
        d_half: float = 0.06,
        init_value: float = 0.5,
    ) -> None:
        if not 0.0 < rho_min <= rho_max < 1.0:
            raise ValueError(f"SPO needs 0 < rho_min ({rho_min}) <= rho_max ({rho_max}) < 1")
        if d_half <= 0:
            raise ValueError(f"SPO d_half must be > 0, got {d_half}")
        if not 0.0 <= init_value <= 1.0:
            raise ValueError(f"SPO init_value must be in [0, 1], got {init_value}")
        self.rho_min, self.rho_max, self.d_half, self.init_value = rho_min, rho_max, d_half, init_value
        self.keys = np.zeros(0, np.int64)  # sorted
        self.alpha = np.zeros(0)
        self.beta = np.zeros(0)

    @property
    def n0(self) -> float:
        return 1.0 / (1.0 - self.rho_max)

    def _ensure(self, keys: np.ndarray) -> np.ndarray:
        new = unique_sorted(keys)
        new = new[~np.isin(new, self.keys, assume_unique=True)]
        if new.size:
            all_keys = np.concatenate([self.keys, new])
            order = np.argsort(all_keys, kind="stable")
            a0 = np.full(new.size, self.init_value * self.n0)
            b0 = np.full(new.size, (1.0 - self.init_value) * self.n0)
            self.keys = all_keys[order]
            self.alpha = np.concatenate([self.alpha, a0])[order]
            self.beta = np.concatenate([self.beta, b0])[order]
        return np.searchsorted(self.keys, keys)

    def seed(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Install offline value estimates (e.g. pass rates of the initial policy) for some prompts."""
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if values.min(initial=0.0) < 0 or values.max(initial=1.0) > 1:
            raise ValueError("SPO seed values must be in [0, 1]")
        idx = self._ensure(keys)
        self.alpha[idx] = values * self.n0
        self.beta[idx] = (1.0 - values) * self.n0

    def values(self, keys: np.ndarray) -> np.ndarray:
        """Current ``v(x)`` per key (``init_value`` for unseen keys); does not mutate."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.full(keys.shape[0], self.init_value)
        if self.keys.size:
            pos = np.clip(np.searchsorted(self.keys, keys), 0, self.keys.size - 1)
            hit = self.keys[pos] == keys
            out[hit] = self.alpha[pos[hit]] / (self.alpha[pos[hit]] + self.beta[pos[hit]])
        return out

    def rho(self, policy_kl: np.ndarray | float | None, n: int) -> np.ndarray:
        """Forgetting rate per sample: ``clip(2^(-D / D_half), rho_min, rho_max)``."""
        if policy_kl is None:
            return np.full(n, self.rho_max)
        d = np.broadcast_to(np.asarray(policy_kl, dtype=np.float64), (n,))
        check_finite(d, "policy KL")
        return np.clip(np.exp2(-np.maximum(d, 0.0) / self.d_half), self.rho_min, self.rho_max)

    def update(
        self, keys: np.ndarray, rewards: np.ndarray, policy_kl: np.ndarray | float | None = None
    ) -> None:
        """Fold one batch of rewards into the tracker (mutates)."""
        keys = np.asarray(keys, dtype=np.int64)
        r = _rewards(rewards)
        if r.size and (r.min() < 0.0 or r.max() > 1.0):
            i = int(np.argmax((r < 0) | (r > 1)))
            raise ValueError(f"SPO needs rewards in [0, 1] (a success rate); reward at index {i} is {r[i]}")
        idx = self._ensure(keys)
        rho = self.rho(policy_kl, keys.shape[0])
        # one discount per prompt per batch: the smallest rho among its samples (most drift)
        rho_k = np.ones(self.keys.size)
        np.minimum.at(rho_k, idx, rho)
        touched = np.zeros(self.keys.size, dtype=bool)
        touched[idx] = True
        self.alpha[touched] *= rho_k[touched]
        self.beta[touched] *= rho_k[touched]
        self.alpha += np.bincount(idx, weights=r, minlength=self.keys.size)
        self.beta += np.bincount(idx, weights=1.0 - r, minlength=self.keys.size)

    def state_dict(self) -> dict:
        return {
            "keys": self.keys.copy(),
            "alpha": self.alpha.copy(),
            "beta": self.beta.copy(),
            "hparams": [self.rho_min, self.rho_max, self.d_half, self.init_value],
        }

    def load_state_dict(self, d: dict) -> None:
        self.keys = np.asarray(d["keys"], dtype=np.int64).copy()
        self.alpha = np.asarray(d["alpha"], dtype=np.float64).copy()
        self.beta = np.asarray(d["beta"], dtype=np.float64).copy()
        if not (self.keys.shape == self.alpha.shape == self.beta.shape):
            raise ValueError("SPO state: keys, alpha and beta must have the same length")
