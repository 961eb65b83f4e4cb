"""MARS² tree credit: tree-consistent reward shaping and the path-level group advantage.

Reference: Li et al. 2026, "MARS²: Scaling Multi-Agent Tree Search via Reinforcement Learning for
Code Generation" (arXiv:2604.14564; code: TsinghuaC3I/MARTI ``tree_reward_shaping_unified``).
Inputs are the tree's struct-of-arrays columns over *all* ``N`` nodes (``parent[i] = -1`` for a
root), so node ids index them directly. Everything is a ``np.bincount`` over parent ids.

Shape legend: ``N`` nodes, ``K`` children.
"""

from __future__ import annotations

import numpy as np

from marl.credit.groups import GroupIds, check_finite
from marl.credit.outcome import grpo_advantages


def _validate(rewards: np.ndarray, parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(parent, dtype=np.int64)
    if r.ndim != 1 or p.shape != r.shape:
        raise ValueError(f"rewards {r.shape} and parent {p.shape} must both be (N,)")
    n = r.shape[0]
    if n and (p.min() < -1 or p.max() >= n):
        bad = int(np.flatnonzero((p < -1) | (p >= n))[0])
        raise ValueError(f"parent[{bad}] = {p[bad]} is not a node id in [-1, {n})")
    nonroot = p >= 0
    check_finite(r[nonroot], "reward", node_ids=np.flatnonzero(nonroot))
    return r, p


def tree_baselines(
    rewards: np.ndarray, parent: np.ndarray, *, lam: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-node MARS² baseline ``b_i`` and whether it exists.

    With parent ``p`` and siblings ``S_i`` (the other children of ``p``, leave-one-out mean
    ``r_S``): ``b_i = (1 - lam) * r_p + lam * r_S`` when ``p`` is not a root and siblings exist;
    ``b_i = r_p`` without siblings; ``b_i = r_S`` when ``p`` is a root (a root is the task, its
    reward is never read, and may be NaN); none for a root node or an only child of a root.
    All baselines use the unshaped rewards. Returns ``(baseline (N,), has_baseline (N,) bool)``.
    """
    r, p = _validate(rewards, parent)
    n = r.shape[0]
    nonroot = np.flatnonzero(p >= 0)
    pp = p[nonroot]
    child_sum = np.bincount(pp, weights=r[nonroot], minlength=n)
    child_cnt = np.bincount(pp, minlength=n)
    n_sib = child_cnt[pp] - 1
    sib_mean = np.where(n_sib > 0, (child_sum[pp] - r[nonroot]) / np.maximum(n_sib, 1), 0.0)
    parent_is_root = p[pp] < 0
    r_parent = np.where(parent_is_root, 0.0, r[pp])  # a root's (maybe NaN) reward is never read
    has_sib = n_sib > 0
    b = np.where(
        parent_is_root,
        sib_mean,
        np.where(has_sib, (1.0 - lam) * r_parent + lam * sib_mean, r_parent),
    )
    baseline = np.full(n, np.nan)
    has = np.zeros(n, dtype=bool)
    baseline[nonroot] = b
    has[nonroot] = ~parent_is_root | has_sib
    baseline[~has] = np.nan
    return baseline, has


def tree_shaped_rewards(
    rewards: np.ndarray, parent: np.ndarray, *, lam: float = 0.5, gamma: float = 0.5
) -> np.ndarray:
    """MARS² tree-consistent reward shaping ``r~_i = r_i + gamma * (r_i - b_i)`` (``b_i`` from
    ``tree_baselines``); nodes without a baseline keep ``r~_i = r_i``.

    Defaults ``lam = gamma = 0.5`` follow MARTI's ``MultiAgentMCTSRewardAllocation`` (alpha = beta
    = 0.5); the paper leaves them as hyperparameters. Roots pass their reward through unchanged.
    """
    r, _ = _validate(rewards, parent)
    b, has = tree_baselines(r, parent, lam=lam)
    out = r.copy()
    out[has] = r[has] + gamma * (r[has] - b[has])
    return out


def path_level_advantages(
    shaped: np.ndarray,
    tree_ids: GroupIds,
    *,
    scale_by_std: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """MARS² path-level group advantage: the group is every (trainable) node of one tree, each
    node's sample being conditioned on its root-to-node path:
    ``A_i = (r~_i - mean_tree) / (std_tree + eps)``. Pass only the sample nodes' shaped rewards and
    their tree ids (``TurnTree.root_of()``); each sample then goes to the agent that produced it.
    """
    return grpo_advantages(shaped, tree_ids, scale_by_std=scale_by_std, unbiased=unbiased, eps=eps)
