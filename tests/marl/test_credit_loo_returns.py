"""Rule ``loo_returns`` (the leave-one-out baseline across common-random-number episodes) and rule
``advantage_alignment`` built on it, on a hand-made IPD tree with values derived by hand."""

from __future__ import annotations

import numpy as np
import pytest

from marl.credit import CreditAssigner, CreditConfig
from marl.credit.config import AdvantageAlignmentSettings
from marl.credit.registry import get_spec, key_fields
from marl.tree import TurnTree
from marl.types import Turn


def _turn() -> Turn:
    return Turn(
        prompt_ids=np.array([1, 2], dtype=np.int32),
        completion_ids=np.array([3], dtype=np.int32),
        logprobs=np.array([-0.1], dtype=np.float32),
        data={},
    )


def _ipd_tree() -> TurnTree:
    """One CRN group (one root), two episodes of a 2-round IPD, both seats played by agent ``lm``.

    Turn order in each episode: seat 0, seat 1, seat 0, seat 1. Rewards per turn (what the round
    paid): episode 0 plays CD then DD -> seat 0 [0, 1], seat 1 [5, 1]; episode 1 plays CC, CC ->
    both [3, 3]. Episodes are added shuffled: episode 1's nodes first.
    """
    t = TurnTree(["lm"])
    root = t.add_nodes(-1, group=7)[0]
    rewards = {0: [(0, 0.0), (1, 5.0), (0, 1.0), (1, 1.0)], 1: [(0, 3.0), (1, 3.0), (0, 3.0), (1, 3.0)]}
    for ep in (1, 0):
        node = root
        for k, (seat, r) in enumerate(rewards[ep]):
            node = t.add_nodes(
                node, agent=0, role=seat, episode=100 + ep, turn=k, reward=r, payloads=[_turn()]
            )[0]
    return t


def _by(tree: TurnTree, res) -> dict[tuple[int, int, int], float]:
    """(episode, seat, turn) -> advantage."""
    n = res.nodes
    return {
        (int(tree.episode[i]) - 100, int(tree.role[i]), int(tree.turn[i])): float(a)
        for i, a in zip(n, np.asarray(res.advantages))
    }


def test_loo_returns_by_hand():
    # gamma 0.5. Discounted returns per (episode, seat) at steps 0, 1:
    #   ep0 s0: [0 + 0.5*1, 1] = [0.5, 1];  ep0 s1: [5 + 0.5*1, 1] = [5.5, 1]
    #   ep1 s0, s1: [3 + 0.5*3, 3] = [4.5, 3]
    # Two episodes in the CRN group, so the leave-one-out mean is the other episode:
    #   s0: ep0 [0.5-4.5, 1-3] = [-4, -2], ep1 [4, 2];  s1: ep0 [5.5-4.5, 1-3] = [1, -2], ep1 [-1, 2]
    t = _ipd_tree()
    res = CreditAssigner(CreditConfig(rule="loo_returns", group_key=["root"], gamma=0.5), multi_turn=True)(t)
    got = _by(t, res)
    want = {
        (0, 0, 0): -4.0, (0, 0, 2): -2.0, (1, 0, 0): 4.0, (1, 0, 2): 2.0,
        (0, 1, 1): 1.0, (0, 1, 3): -2.0, (1, 1, 1): -1.0, (1, 1, 3): 2.0,
    }  # fmt: skip
    assert got == pytest.approx(want)


def test_advantage_alignment_reads_the_loo_advantages_by_hand():
    # A*_t = A1_t + beta * (sum_{k<t} gamma^(t-k) A1_k) * A2_t, beta 2, gamma 0.5, with A1, A2 the
    # loo_returns advantages above (A2: the co-player's at the same step of the same episode).
    #   step 0: A* = A1_0 (no past):   ep0 s0 -4, ep0 s1 1, ep1 s0 4, ep1 s1 -1
    #   step 1: ep0 s0: -2 + 2 * (0.5 * -4) * (-2) = 6     ep0 s1: -2 + 2 * (0.5 * 1) * (-2) = -4
    #           ep1 s0:  2 + 2 * (0.5 * 4) * 2 = 10        ep1 s1:  2 + 2 * (0.5 * -1) * 2 = 0
    t = _ipd_tree()
    cfg = CreditConfig(
        rule="advantage_alignment",
        group_key=["root"],
        gamma=0.5,
        advantage_alignment=AdvantageAlignmentSettings(beta=2.0),
    )
    got = _by(t, CreditAssigner(cfg, multi_turn=True)(t))
    want = {
        (0, 0, 0): -4.0, (0, 1, 1): 1.0, (1, 0, 0): 4.0, (1, 1, 1): -1.0,
        (0, 0, 2): 6.0, (0, 1, 3): -4.0, (1, 0, 2): 10.0, (1, 1, 3): 0.0,
    }  # fmt: skip
    assert got == pytest.approx(want)


def test_loo_returns_spec_reads_keys_and_refuses_what_it_does_not_read():
    spec = get_spec("loo_returns")
    assert spec.reward == "turn" and set(spec.reads()) == {"group_key", "player_key", "gamma", "time_step"}
    assert key_fields(CreditConfig(rule="loo_returns", group_key=["root"])) == {"root", "agent", "role"}
    with pytest.raises(ValueError, match="does not read"):
        CreditAssigner(CreditConfig(rule="loo_returns", scale_by_std=False))
    with pytest.raises(ValueError, match="single-turn"):
        CreditAssigner(CreditConfig(rule="loo_returns"), multi_turn=False)
