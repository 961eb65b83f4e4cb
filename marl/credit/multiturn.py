"""Multi-turn and multi-agent credit: per-turn advantages over trajectories of turns.

A *trajectory* is the sequence of one player's turns in one episode (ids: ``trajectory_ids``),
ordered by ``turn_order`` (any integers, distinct inside a trajectory). All functions are pure
and vectorised over samples; the only loops run over positions inside the longest trajectory.

Shape legend: ``N`` turns (samples), ``B`` episodes, ``A`` agents.
"""

from __future__ import annotations

import numpy as np

from marl.credit.groups import (
    GroupIds,
    check_finite,
    discounted_prefix_sum_exclusive,
    discounted_suffix_sum,
    group_codes,
    group_deviation,
    segment_rank,
    sort_by_segment,
    unique_sorted,
)
from marl.credit.outcome import grpo_advantages, rloo_advantages


def _vec(x: np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name} must be 1-D of length {n}, got shape {a.shape}")
    check_finite(a, name)
    return a


def discounted_returns(
    rewards: np.ndarray, trajectory_ids: GroupIds, turn_order: np.ndarray, *, gamma: float = 1.0
) -> np.ndarray:
    """Reward-to-go inside each trajectory: ``R_t = sum_{k >= t} gamma^(k - t) r_k``."""
    r = _vec(rewards, "reward")
    codes, _ = group_codes(trajectory_ids, r.shape[0])
    return discounted_suffix_sum(r, codes, np.asarray(turn_order), gamma=gamma)


def returns_to_go(
    rewards: np.ndarray, trajectory_ids: GroupIds, turn_order: np.ndarray, *, gamma: float = 1.0
) -> np.ndarray:
    """Return-to-go of each turn in its trajectory, ``G_k = sum_{j >= k} gamma^(j - k) r_j``.

    The same quantity as :func:`discounted_returns`, summed forward from turn ``k`` with explicit
    powers ``gamma^d``: an outcome paid on a trajectory's last turn reaches turn ``k`` as exactly
    ``gamma^(turns left) * r`` (the recursion ``r_k + gamma * G_{k+1}`` rounds once per turn). This is
    what an outcome rule judges each turn of a multi-turn scenario by. One vectorised step per offset
    ``d`` (the loop runs over the longest trajectory, never over samples).
    """
    r = _vec(rewards, "reward")
    codes, _ = group_codes(trajectory_ids, r.shape[0])
    perm, rank, is_last = sort_by_segment(codes, np.asarray(turn_order))
    rs = r[perm]
    ends = np.flatnonzero(is_last)
    left = np.repeat(ends, np.diff(np.concatenate([[-1], ends]))) - np.arange(rs.shape[0])  # turns after
    out = rs.copy()
    powers = np.power(float(gamma), np.arange(int(left.max(initial=0)) + 1))
    for d in range(1, powers.shape[0]):
        pos = np.flatnonzero(left >= d)
        out[pos] += rs[pos + d] * powers[d]
    res = np.empty_like(out)
    res[perm] = out
    return res


def mars_turn_advantages(
    rewards: np.ndarray,
    game_ids: GroupIds,
    player_ids: GroupIds,
    turn_order: np.ndarray,
    *,
    gamma: float = 1.0,
    normalize: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """MARS turn-level advantage with agent-specific normalisation (Yuan et al. 2025, "MARS:
    Reinforcing Multi-Agent Reasoning of LLMs through Self-Play in Strategic Games").

    ``r_k^p`` is what player ``p`` receives between its ``k``-th move and its next. Centre per
    (game, player): ``r~ = r - mean_{(game, p)} r``; reward-to-go ``A_k^p = sum_{j >= k}
    gamma^(j - k) r~_j^p`` over that player's turns of that game; then, when ``normalize``,
    ``(A - mean_p) / (std_p + eps)`` over all turns of player ``p`` in the batch.
    """
    r = _vec(rewards, "reward")
    n = r.shape[0]
    game = game_ids if isinstance(game_ids, (tuple, list)) else (game_ids,)
    player = player_ids if isinstance(player_ids, (tuple, list)) else (player_ids,)
    traj_codes, k = group_codes((*game, *player), n)
    centred, _ = group_deviation(r, traj_codes, k)
    adv = discounted_suffix_sum(centred, traj_codes, np.asarray(turn_order), gamma=gamma)
    if normalize:
        adv = grpo_advantages(adv, player_ids, unbiased=unbiased, eps=eps)
    return adv


def role_conditioned_advantages(
    rewards: np.ndarray,
    role_keys: np.ndarray,
    baseline_keys: np.ndarray,
    baseline_values: np.ndarray,
    *,
    alpha: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SPIRAL role-conditioned advantage estimation, RAE (Liu et al. 2025, arXiv:2506.24119).

    One running baseline per (game, role) key: ``A = R - b`` with ``b`` *before* the update, then
    ``b <- alpha * b + (1 - alpha) * R`` (``alpha = 0.95``, ``b`` starts at 0). Samples of one key
    in the same batch all use the same pre-update ``b`` and the update uses their mean reward
    (order-free). ``role_keys`` are int64 keys (hash composite keys first); the baseline table is
    ``(baseline_keys sorted, baseline_values)``.

    Returns ``(advantages, new_keys, new_values)``; the inputs are not mutated.
    """
    r = _vec(rewards, "reward")
    keys = np.asarray(role_keys, dtype=np.int64)
    if keys.shape != r.shape:
        raise ValueError(f"role_keys shape {keys.shape} != rewards shape {r.shape}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"RAE alpha must be in [0, 1), got {alpha}")
    bk = np.asarray(baseline_keys, dtype=np.int64)
    bv = np.asarray(baseline_values, dtype=np.float64)
    all_keys = unique_sorted(np.concatenate([bk, keys]))
    values = np.zeros(all_keys.shape[0])
    values[np.searchsorted(all_keys, bk)] = bv
    idx = np.searchsorted(all_keys, keys)
    adv = r - values[idx]
    counts = np.bincount(idx, minlength=all_keys.shape[0])
    mean_r = np.bincount(idx, weights=r, minlength=all_keys.shape[0]) / np.maximum(counts, 1)
    seen = counts > 0
    values[seen] = alpha * values[seen] + (1.0 - alpha) * mean_r[seen]
    return adv, all_keys, values


def gigpo_advantages(
    step_rewards: np.ndarray,
    episode_ids: GroupIds,
    group_ids: GroupIds,
    anchor_ids: GroupIds,
    turn_order: np.ndarray,
    *,
    gamma: float = 0.95,
    omega: float = 1.0,
    scale_by_std: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM Agent Training").

    Episode level: ``R(tau) = sum_t r_t``; ``A^E`` is the GRPO advantage of the episode return among
    the episodes of its group (every step of an episode gets its episode's ``A^E``). Step level:
    discounted returns ``R_t = sum_{k >= t} gamma^(k - t) r_k`` along the episode; steps of one
    group whose observation is identical (same ``anchor_ids``: the "anchor state") form a step
    group, ``A^S = (R_t - mean_step_group) / F`` with ``F = std + eps`` (``scale_by_std``, the
    paper's mean-std norm) or ``F = 1``; a singleton step group gives ``A^S = 0``. Final
    ``A = A^E + omega * A^S`` (paper: ``gamma = 0.95``, ``omega = 1``).
    """
    r = _vec(step_rewards, "reward")
    n = r.shape[0]
    ep_codes, n_ep = group_codes(episode_ids, n)
    g_codes, _ = group_codes(group_ids, n)
    # every episode must sit in one group
    g_min = np.full(n_ep, np.iinfo(np.int64).max)
    g_max = np.full(n_ep, np.iinfo(np.int64).min)
    np.minimum.at(g_min, ep_codes, g_codes)
    np.maximum.at(g_max, ep_codes, g_codes)
    if np.any(g_min[ep_codes] != g_max[ep_codes]):
        i = int(np.flatnonzero(g_min[ep_codes] != g_max[ep_codes])[0])
        raise ValueError(
            f"GiGPO: the episode of sample {i} spans several groups; an episode needs one group id"
        )
    ep_return = np.bincount(ep_codes, weights=r, minlength=n_ep)
    present = np.bincount(ep_codes, minlength=n_ep) > 0
    ep_ids = np.flatnonzero(present)
    a_ep = np.zeros(n_ep)
    a_ep[ep_ids] = grpo_advantages(
        ep_return[ep_ids], g_min[ep_ids], scale_by_std=scale_by_std, unbiased=unbiased, eps=eps
    )
    returns = discounted_suffix_sum(r, ep_codes, np.asarray(turn_order), gamma=gamma)
    anchors = anchor_ids if isinstance(anchor_ids, (tuple, list)) else (anchor_ids,)
    a_step = grpo_advantages(
        returns, (g_codes, *anchors), scale_by_std=scale_by_std, unbiased=unbiased, eps=eps
    )
    return a_ep[ep_codes] + omega * a_step


def round_steps(
    rewards: np.ndarray, trajectory_ids: GroupIds, round_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One time step per round: the turns of one trajectory that share a round id become one step.

    AdAlignLLM's grouping (Duque et al., "Learning Robust Social Strategies with Large Language
    Models"): a round in which a player speaks several times (a message, then a proposal) is one time
    step of its discounted returns, of the leave-one-out baseline and of the alignment term. The step's
    reward is the sum of its turns' rewards, ``r_{i,R} = sum_{k in R} r_{i,k}``; the step-level
    functions (:func:`discounted_returns`, :func:`loo_return_advantages`,
    :func:`advantage_alignment_credit`) then run on the steps, ordered by round, and every turn of a
    step receives the step's advantage. With one turn per round the steps are the turns.

    Returns ``(step_rewards, first, inverse)``: ``step_rewards`` (S,) the summed rewards of each step;
    ``first`` (S,) the index of each step's first turn in sample order (its trajectory ids and round
    are the step's); ``inverse`` (N,) the step of each turn, so ``x_step[inverse]`` hands a per-step
    value to each of its turns.
    """
    r = _vec(rewards, "reward")
    n = r.shape[0]
    traj = trajectory_ids if isinstance(trajectory_ids, (tuple, list)) else (trajectory_ids,)
    codes, _ = group_codes((*traj, np.asarray(round_ids)), n)
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    step_rewards = np.bincount(inverse, weights=r, minlength=first.shape[0])
    return step_rewards, first.astype(np.int64), inverse.astype(np.int64)


def loo_return_advantages(
    returns: np.ndarray, crn_group_ids: GroupIds, trajectory_rank: np.ndarray
) -> np.ndarray:
    """Advantage Alignment's leave-one-out baseline across episodes sharing common random numbers.

    Per time step ``t`` and CRN group (same seed, same player): ``A_{i,t} = G_{i,t} -
    mean_{j != i} G_{j,t}`` (RLOO over the group key (crn group, t)); a lone episode gives 0.
    Rule ``loo_returns`` uses it alone (the self-interested, "naive" learner of AdAlignLLM);
    rule ``advantage_alignment`` uses it as both ``A^1`` and ``A^2``.
    """
    g = _vec(returns, "return")
    crn = crn_group_ids if isinstance(crn_group_ids, (tuple, list)) else (crn_group_ids,)
    return rloo_advantages(g, (*crn, np.asarray(trajectory_rank)))


def advantage_alignment_credit(
    own_advantages: np.ndarray,
    co_player_advantages: np.ndarray,
    trajectory_ids: GroupIds,
    turn_order: np.ndarray,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> np.ndarray:
    """Advantage Alignment credit (Duque et al. 2025, "Advantage Alignment Algorithms", ICLR).

    ``A*_t = A^1_t + beta * (sum_{k < t} gamma^(t - k) A^1_k) * A^2_t`` with ``A^1`` the agent's own
    advantages along its trajectory and ``A^2`` the co-player's advantage at the same step. The
    paper writes an extra ``gamma`` factor in front of the sum (``beta * gamma * ...``); it is
    absorbed into ``beta`` here, as in the project reference.
    """
    a1 = _vec(own_advantages, "own advantage")
    a2 = _vec(co_player_advantages, "co-player advantage", a1.shape[0])
    codes, _ = group_codes(trajectory_ids, a1.shape[0])
    past = discounted_prefix_sum_exclusive(a1, codes, np.asarray(turn_order), gamma=gamma)
    return a1 + beta * past * a2


def co_player_sum(
    values: np.ndarray, episode_ids: GroupIds, trajectory_ids: GroupIds, trajectory_rank: np.ndarray
) -> np.ndarray:
    """For each sample, the sum of ``values`` over the *other* trajectories' samples of the same
    episode at the same trajectory rank (the co-player(s) at the same step; 0 if none)."""
    v = _vec(values, "value")
    n = v.shape[0]
    ep = episode_ids if isinstance(episode_ids, (tuple, list)) else (episode_ids,)
    step_codes, k = group_codes((*ep, np.asarray(trajectory_rank)), n)
    total = np.bincount(step_codes, weights=v, minlength=k)
    traj = trajectory_ids if isinstance(trajectory_ids, (tuple, list)) else (trajectory_ids,)
    own_codes, k2 = group_codes((*ep, *traj, np.asarray(trajectory_rank)), n)
    own = np.bincount(own_codes, weights=v, minlength=k2)[own_codes]
    return total[step_codes] - own


__all__ = [
    "advantage_alignment_credit",
    "co_player_sum",
    "discounted_returns",
    "gigpo_advantages",
    "loo_return_advantages",
    "mars_turn_advantages",
    "role_conditioned_advantages",
    "round_steps",
    "segment_rank",
]
