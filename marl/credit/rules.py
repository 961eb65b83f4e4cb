"""Tree adapters: each rule reads the TurnTree fields it needs and calls the pure math.

Signature of every rule: ``rule(tree, nodes, rewards, cfg, state) -> CreditResult`` where ``nodes``
are the trainable sample ids, ``rewards`` their rewards as the rule's registry entry asks for them
(``marl.credit.registry.RULES``: the node's own reward, or in a multi-turn scenario the return-to-go
an outcome rule judges a turn by), and ``state`` the mutable dict a ``CreditAssigner`` keeps across
calls (SPO tracker, RAE baselines, the agents' KL clocks). What each rule reads is declared in its
registry entry, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from marl.credit.config import CreditConfig, CreditResult
from marl.credit.groups import check_finite, group_codes, segment_rank
from marl.credit.multiturn import (
    advantage_alignment_credit,
    co_player_sum,
    discounted_returns,
    gigpo_advantages,
    loo_return_advantages,
    mars_turn_advantages,
    role_conditioned_advantages,
    round_steps,
)
from marl.credit.outcome import (
    SPOValueTracker,
    dr_grpo_advantages,
    grpo_advantages,
    mc_grpo_advantages,
    ngrpo_advantages,
    public_baseline_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    rloo_advantages,
    spo_advantages,
)
from marl.credit.treeshaping import path_level_advantages, tree_shaped_rewards
from marl.seeding import stable_hash
from marl.tree import KEY_FIELDS, TurnTree

Rule = Callable[[TurnTree, np.ndarray, np.ndarray, CreditConfig, dict], CreditResult]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash_key_columns(cols: tuple[np.ndarray, ...]) -> np.ndarray:
    """A stable int64 key per row of a composite key (a single column is returned unchanged).

    Used where keys must persist across batches (SPO, RAE); ``group_codes`` is for within-batch.
    """
    if len(cols) == 1:
        return np.asarray(cols[0], dtype=np.int64)
    h = np.full(np.asarray(cols[0]).shape[0], 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in cols:
            h = _mix64(
                h ^ _mix64(np.asarray(c, dtype=np.int64).view(np.uint64) + np.uint64(0x632BE59BD9B4E019))
            )
    return h.view(np.int64)


def node_key(tree: TurnTree, nodes: np.ndarray, fields: list[str]) -> tuple[np.ndarray, ...]:
    """The key columns ``fields`` of the given nodes (a composite group id)."""
    if len(fields) == 0:
        raise ValueError(f"a key needs at least one field; valid fields: {list(KEY_FIELDS)}")
    bad = [f for f in fields if f not in KEY_FIELDS]
    if bad:
        raise ValueError(f"key fields {bad} are not integer node fields; valid fields: {list(KEY_FIELDS)}")
    return tuple(np.asarray(tree.field(f))[nodes] for f in fields)


def sample_rewards(tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
    """Rewards of the sample nodes; a NaN (unset) or infinite reward raises naming the node."""
    r = np.asarray(tree.reward[nodes], dtype=np.float64)
    check_finite(r, "reward", node_ids=nodes)
    return r


def _result(nodes: np.ndarray, adv: Any, mask: np.ndarray | None = None) -> CreditResult:
    m = np.ones(nodes.shape[0], dtype=bool) if mask is None else mask
    return CreditResult(nodes=nodes, advantages=adv, train_mask=m)


def _trajectory(tree: TurnTree, nodes: np.ndarray, cfg: CreditConfig) -> tuple[np.ndarray, ...]:
    return (tree.episode[nodes], *node_key(tree, nodes, cfg.player_key))


# ----------------------------------------------------------------------------- outcome rules
def rule_grpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    g = node_key(tree, nodes, cfg.group_key)
    return _result(
        nodes, grpo_advantages(r, g, scale_by_std=cfg.scale_by_std, unbiased=cfg.unbiased_std, eps=cfg.eps)
    )


def rule_dr_grpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    return _result(nodes, dr_grpo_advantages(r, node_key(tree, nodes, cfg.group_key)))


def rule_rloo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    return _result(nodes, rloo_advantages(r, node_key(tree, nodes, cfg.group_key)))


def rule_ngrpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    adv = ngrpo_advantages(
        r, node_key(tree, nodes, cfg.group_key), cfg.ngrpo.r_max, unbiased=cfg.unbiased_std, eps=cfg.eps
    )
    return _result(nodes, adv)


def rule_mc_grpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    adv, mask = mc_grpo_advantages(
        r,
        node_key(tree, nodes, cfg.group_key),
        scale_by_std=cfg.mc_grpo.scale_by_std,
        unbiased=cfg.unbiased_std,
        eps=cfg.eps,
        tie_break=nodes,
    )
    return _result(nodes, adv, mask)


def rule_advevo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    return _result(nodes, public_baseline_advantages(r, node_key(tree, nodes, cfg.group_key)))


def _completion_lengths(tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
    lens = np.empty(nodes.shape[0], dtype=np.int64)
    for j, i in enumerate(nodes.tolist()):  # payloads live in a Python list
        p = tree.payloads[i]
        if p is None:
            raise ValueError(f"node {i} has no payload; this rule needs its completion tokens")
        lens[j] = len(p.completion_ids)
    return lens


def rule_reinforce_pp_baseline(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    w = _completion_lengths(tree, nodes).astype(np.float64)
    if nodes.size and w.sum() == 0:
        w = None  # no tokens at all: whiten over samples
    adv = reinforce_pp_baseline_advantages(
        r,
        node_key(tree, nodes, cfg.group_key),
        weights=w,
        eps=cfg.reinforce_pp.whiten_eps,
        unbiased=cfg.reinforce_pp.unbiased,
    )
    return _result(nodes, adv)


def rule_reinforce_pp(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    lens = _completion_lengths(tree, nodes)
    if nodes.size and lens.min() == 0:
        i = int(nodes[np.argmin(lens)])
        raise ValueError(f"node {i} has an empty completion; REINFORCE++ puts the reward on its last token")
    b, t = nodes.shape[0], int(lens.max(initial=0))
    mask = np.arange(t)[None, :] < lens[:, None]
    tok = np.zeros((b, t))
    tok[np.arange(b), lens - 1] = r
    for j, i in enumerate(nodes.tolist()):
        extra = tree.payloads[i].data.get("token_rewards")
        if extra is not None:
            extra = np.asarray(extra, dtype=np.float64).reshape(-1)
            if extra.shape[0] != lens[j]:
                raise ValueError(f"node {i}: token_rewards has {extra.shape[0]} entries for {lens[j]} tokens")
            tok[j, : lens[j]] += extra
    adv = reinforce_pp_advantages(
        tok,
        mask,
        gamma=cfg.reinforce_pp.gamma,
        eps=cfg.reinforce_pp.whiten_eps,
        unbiased=cfg.reinforce_pp.unbiased,
    )
    return _result(nodes, [adv[j, : lens[j]].copy() for j in range(b)])


def spo_tracker(cfg: CreditConfig) -> SPOValueTracker:
    """A fresh SPO value tracker with the config's settings."""
    return SPOValueTracker(
        rho_min=cfg.spo.rho_min, rho_max=cfg.spo.rho_max, d_half=cfg.spo.d_half, init_value=cfg.spo.init_value
    )


def agent_codes(tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
    """(N,) int64 stable code of each node's agent *name* (not its index in this tree)."""
    codes = np.array([stable_hash(n) for n in tree.agent_names], dtype=np.int64)
    a = tree.agent[nodes]
    return np.where(a >= 0, codes[np.maximum(a, 0)] if codes.size else 0, -1)


def rule_spo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    """SPO with its KL-adaptive forgetting rate. ``state["kl_clock"][agent]`` is the agent's summed
    per-update policy KL (fed by ``CreditAssigner.observe_policy_kl``); the drift ``D`` of a sample is
    the clock of its agent now minus its reading when that agent last saw the prompt (0 the first time)."""
    tracker = state.get("spo")
    if tracker is None:
        tracker = state["spo"] = spo_tracker(cfg)
    keys = hash_key_columns(node_key(tree, nodes, cfg.group_key))
    clock_of = state.get("kl_clock", {})
    clock = np.array([clock_of.get(tree.agent_names[a], 0.0) if a >= 0 else 0.0 for a in tree.agent[nodes]])
    seen = state.setdefault("spo_seen", {"keys": np.zeros(0, np.int64), "clock": np.zeros(0)})
    seen_key = hash_key_columns((keys, agent_codes(tree, nodes)))
    pos = np.clip(np.searchsorted(seen["keys"], seen_key), 0, max(seen["keys"].size - 1, 0))
    hit = seen["keys"][pos] == seen_key if seen["keys"].size else np.zeros(nodes.shape[0], bool)
    drift = np.where(hit, clock - (seen["clock"][pos] if seen["keys"].size else 0.0), 0.0)
    baseline = tracker.values(keys)
    adv = spo_advantages(r, baseline, eps=cfg.eps)
    tracker.update(keys, r, drift)
    new_keys, last = np.unique(seen_key[::-1], return_index=True)  # one reading per (prompt, agent)
    merged = np.concatenate([seen["keys"][~np.isin(seen["keys"], new_keys)], new_keys])
    readings = np.concatenate([seen["clock"][~np.isin(seen["keys"], new_keys)], clock[::-1][last]])
    order = np.argsort(merged, kind="stable")
    state["spo_seen"] = {"keys": merged[order], "clock": readings[order]}
    res = _result(nodes, adv)
    res.metrics["credit/spo_value_mean"] = float(baseline.mean()) if baseline.size else 0.0
    res.metrics["credit/spo_drift_mean"] = float(drift.mean()) if drift.size else 0.0
    return res


# ----------------------------------------------------------------------------- multi-turn rules
def rule_spiral_rae(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    keys = hash_key_columns(node_key(tree, nodes, cfg.group_key))
    table = state.get("rae", {"keys": np.zeros(0, np.int64), "values": np.zeros(0)})
    adv, k, v = role_conditioned_advantages(
        r, keys, table["keys"], table["values"], alpha=cfg.spiral_rae.alpha
    )
    state["rae"] = {"keys": k, "values": v}
    return _result(nodes, adv)


def rule_mars_turn(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    adv = mars_turn_advantages(
        r,
        (tree.episode[nodes],),
        node_key(tree, nodes, cfg.player_key),
        tree.turn[nodes],
        gamma=cfg.gamma,
        normalize=True,
        unbiased=cfg.unbiased_std,
        eps=cfg.eps,
    )
    return _result(nodes, adv)


def rule_gigpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    adv = gigpo_advantages(
        r,
        _trajectory(tree, nodes, cfg),
        node_key(tree, nodes, cfg.group_key),
        node_key(tree, nodes, cfg.gigpo.anchor_key),
        tree.turn[nodes],
        gamma=cfg.gamma,
        omega=cfg.gigpo.omega,
        scale_by_std=cfg.scale_by_std,
        unbiased=cfg.unbiased_std,
        eps=cfg.eps,
    )
    return _result(nodes, adv)


def turn_rounds(tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
    """(N,) the round of each node, from its payload's ``data["round"]`` (the dilemma games record it)."""
    out = np.empty(nodes.shape[0], dtype=np.int64)
    for j, i in enumerate(nodes.tolist()):
        p = tree.payloads[i]
        rnd = None if p is None or p.data is None else p.data.get("round")
        if rnd is None:
            raise ValueError(
                f"credit.time_step is round, but node {i} has no round in its payload (data['round']); "
                "the dilemma games record it, other games have no rounds: use credit.time_step=turn"
            )
        out[j] = int(rnd)
    return out


def _loo_own(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Each time step's leave-one-out advantage of its discounted return, and the step's trajectory,
    order (turn or round), rank in its trajectory, one node per step and the step of each node
    (``None`` with one step per turn: the steps are ``nodes``)."""
    traj = _trajectory(tree, nodes, cfg)
    steps, inverse = nodes, None
    if cfg.time_step == "round":
        rounds = turn_rounds(tree, nodes)
        r, first, inverse = round_steps(r, traj, rounds)
        steps, traj, order = nodes[first], tuple(c[first] for c in traj), rounds[first]
    else:
        order = tree.turn[nodes]
    codes, _ = group_codes(traj, steps.shape[0])
    rank = segment_rank(codes, order)
    returns = discounted_returns(r, traj, order, gamma=cfg.gamma)
    player = node_key(tree, steps, cfg.player_key)
    own = loo_return_advantages(returns, (*node_key(tree, steps, cfg.group_key), *player), rank)
    return own, traj, order, rank, steps, inverse


def rule_loo_returns(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    own, *_, inverse = _loo_own(tree, nodes, r, cfg)
    return _result(nodes, own if inverse is None else own[inverse])


def rule_advantage_alignment(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    own, traj, order, rank, steps, inverse = _loo_own(tree, nodes, r, cfg)
    co = co_player_sum(own, (tree.episode[steps],), traj, rank)
    adv = advantage_alignment_credit(own, co, traj, order, beta=cfg.advantage_alignment.beta, gamma=cfg.gamma)
    return _result(nodes, adv if inverse is None else adv[inverse])


# ----------------------------------------------------------------------------- tree rules
def rule_mars2_tree(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    root = tree.root_of()
    in_play = np.zeros(len(tree), dtype=bool)
    in_play[root[nodes]] = True
    sub = np.flatnonzero(in_play[root])  # every node of the sample nodes' trees, sorted
    par = tree.parent[sub]
    nonroot = par >= 0
    check_finite(tree.reward[sub][nonroot], "reward", node_ids=sub[nonroot])
    par_sub = np.where(nonroot, np.searchsorted(sub, np.maximum(par, 0)), -1)
    shaped = tree_shaped_rewards(tree.reward[sub], par_sub, lam=cfg.mars2.lam, gamma=cfg.mars2.shaping_gamma)
    sample_shaped = shaped[np.searchsorted(sub, nodes)]
    check_finite(sample_shaped, "reward", node_ids=nodes)  # a root used as a sample needs a reward
    adv = path_level_advantages(
        sample_shaped, root[nodes], scale_by_std=cfg.scale_by_std, unbiased=cfg.unbiased_std, eps=cfg.eps
    )
    res = _result(nodes, adv)
    res.metrics["credit/shaped_reward_mean"] = float(sample_shaped.mean()) if nodes.size else 0.0
    return res
