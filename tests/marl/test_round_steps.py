"""``credit.time_step: round`` (AdAlignLLM's grouping): a player's turns of one round are one time step
of rules ``loo_returns`` and ``advantage_alignment``. Hand-derived values on a 2-round game with two
turns per player and round, and the identity with the per-turn rule when a round has one turn."""

from __future__ import annotations

import numpy as np
import pytest

from marl.credit import CreditAssigner, CreditConfig
from marl.credit.config import AdvantageAlignmentSettings
from marl.credit.multiturn import round_steps
from marl.tree import TurnTree
from marl.types import Turn


def _turn(rnd: int | None) -> Turn:
    return Turn(
        prompt_ids=np.array([1, 2], dtype=np.int32),
        completion_ids=np.array([3], dtype=np.int32),
        logprobs=np.array([-0.1], dtype=np.float32),
        data={} if rnd is None else {"round": rnd},
    )


# Trust-and-Split-like episodes of 2 rounds: per round both seats send a message, then both propose;
# the round's payoff is paid on the proposal. (seat, round, reward) in time order; turn = list index.
EPISODES = {
    0: [(0, 0, 0.0), (1, 0, 0.0), (0, 0, 10.0), (1, 0, 1.0),
        (1, 1, 0.0), (0, 1, 0.0), (0, 1, 2.0), (1, 1, 6.0)],
    # seat 1's round-1 message carries -1 (a penalty), its proposal 8: its round reward is 7
    1: [(0, 0, 0.0), (1, 0, 0.0), (0, 0, 4.0), (1, 0, 3.0),
        (1, 1, -1.0), (0, 1, 0.0), (0, 1, 0.0), (1, 1, 8.0)],
}  # fmt: skip


def _tree(episodes: dict, *, with_rounds: bool = True) -> TurnTree:
    """One CRN group (one root) holding the episodes, added in reverse order (episode 1 first)."""
    t = TurnTree(["lm"])
    root = t.add_nodes(-1, group=3)[0]
    for ep in sorted(episodes, reverse=True):
        node = root
        for k, (seat, rnd, r) in enumerate(episodes[ep]):
            node = t.add_nodes(
                node,
                agent=0,
                role=seat,
                episode=100 + ep,
                turn=k,
                reward=r,
                payloads=[_turn(rnd if with_rounds else None)],
            )[0]
    return t


def _by(tree: TurnTree, res) -> dict[tuple[int, int, int], float]:
    """(episode, seat, turn) -> advantage."""
    return {
        (int(tree.episode[i]) - 100, int(tree.role[i]), int(tree.turn[i])): float(a)
        for i, a in zip(res.nodes, np.asarray(res.advantages))
    }


def _cfg(rule: str, time_step: str, **kw) -> CreditConfig:
    return CreditConfig(rule=rule, group_key=["root"], gamma=0.5, time_step=time_step, **kw)


# Round rewards (the sum over the round's two turns):
#   ep0 s0 [10, 2], ep0 s1 [1, 6], ep1 s0 [4, 0], ep1 s1 [3, -1 + 8 = 7]
# Returns per round, gamma 0.5 per round: G_0 = r_0 + 0.5 r_1, G_1 = r_1
#   ep0 s0 [11, 2], ep0 s1 [4, 6], ep1 s0 [4, 0], ep1 s1 [6.5, 7]
# Leave-one-out per (CRN group, seat, round); two episodes, so the baseline is the other episode:
#   s0: ep0 [11 - 4, 2 - 0] = [7, 2], ep1 [-7, -2];  s1: ep0 [4 - 6.5, 6 - 7] = [-2.5, -1], ep1 [2.5, 1]
LOO = {(0, 0): [7.0, 2.0], (1, 0): [-7.0, -2.0], (0, 1): [-2.5, -1.0], (1, 1): [2.5, 1.0]}
# Advantage Alignment per round, beta 2: A*_0 = A1_0; A*_1 = A1_1 + 2 * (0.5 * A1_0) * A2_1
#   ep0 s0:  2 + 2 * (0.5 * 7) * (-1)   = -5     ep0 s1: -1 + 2 * (0.5 * -2.5) * 2  = -6
#   ep1 s0: -2 + 2 * (0.5 * -7) * 1     = -9     ep1 s1:  1 + 2 * (0.5 * 2.5) * (-2) = -4
AA = {(0, 0): [7.0, -5.0], (1, 0): [-7.0, -9.0], (0, 1): [-2.5, -6.0], (1, 1): [2.5, -4.0]}


def _per_turn(per_round: dict) -> dict[tuple[int, int, int], float]:
    """Each turn gets its round's value."""
    return {
        (ep, seat, k): per_round[(ep, seat)][rnd]
        for ep, turns in EPISODES.items()
        for k, (seat, rnd, _) in enumerate(turns)
    }


def test_round_steps_sums_each_rounds_rewards_by_hand():
    # trajectory 5: turns 0, 1 in round 0, turn 2 in round 1; trajectory 6: turns 3, 4 in round 0
    r = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    step_r, first, inverse = round_steps(r, np.array([5, 5, 5, 6, 6]), np.array([0, 0, 1, 0, 0]))
    assert sorted(step_r.tolist()) == [3.0, 4.0, 24.0]
    np.testing.assert_array_equal(step_r[inverse], [3.0, 3.0, 4.0, 24.0, 24.0])
    assert sorted(first.tolist()) == [0, 2, 3]  # each step's first turn


def test_loo_returns_per_round_by_hand():
    t = _tree(EPISODES)
    got = _by(t, CreditAssigner(_cfg("loo_returns", "round"), multi_turn=True)(t))
    assert got == pytest.approx(_per_turn(LOO))


def test_advantage_alignment_per_round_by_hand():
    t = _tree(EPISODES)
    cfg = _cfg("advantage_alignment", "round", advantage_alignment=AdvantageAlignmentSettings(beta=2.0))
    got = _by(t, CreditAssigner(cfg, multi_turn=True)(t))
    assert got == pytest.approx(_per_turn(AA))
    # per turn the same tree gives other values (the message and the proposal are two steps)
    per_turn = _by(t, CreditAssigner(_cfg("advantage_alignment", "turn", **_aa2()), multi_turn=True)(t))
    assert per_turn != pytest.approx(got)


def _aa2() -> dict:
    return {"advantage_alignment": AdvantageAlignmentSettings(beta=2.0)}


@pytest.mark.parametrize("rule", ["loo_returns", "advantage_alignment"])
def test_one_turn_per_round_equals_the_per_turn_rule(rule):
    # a random IPD-like batch: 2 CRN groups (roots) of 3 episodes, 4 rounds, seats alternate; each
    # round is one turn per seat, so per round and per turn are the same steps
    rng = np.random.default_rng(0)
    t = TurnTree(["lm"])
    for g in range(2):
        root = t.add_nodes(-1, group=g)[0]
        for ep in rng.permutation(3):
            node = root
            for k in range(8):
                node = t.add_nodes(
                    node,
                    agent=0,
                    role=k % 2,
                    episode=10 * g + int(ep),
                    turn=k,
                    reward=float(rng.integers(0, 6)),
                    payloads=[_turn(k // 2)],
                )[0]
    kw = _aa2() if rule == "advantage_alignment" else {}
    a = CreditAssigner(_cfg(rule, "turn", **kw), multi_turn=True)(t)
    b = CreditAssigner(_cfg(rule, "round", **kw), multi_turn=True)(t)
    np.testing.assert_array_equal(a.nodes, b.nodes)
    np.testing.assert_allclose(np.asarray(b.advantages), np.asarray(a.advantages), rtol=1e-12, atol=1e-12)
    assert np.abs(np.asarray(a.advantages)).max() > 0


def test_round_step_needs_the_round_in_the_payload_and_a_valid_name():
    t = _tree(EPISODES, with_rounds=False)
    with pytest.raises(ValueError, match="no round in its payload"):
        CreditAssigner(_cfg("loo_returns", "round"), multi_turn=True)(t)
    with pytest.raises(ValueError, match="must be turn or round"):
        CreditAssigner(_cfg("loo_returns", "rounds"), multi_turn=True)
    with pytest.raises(ValueError, match="does not read"):  # an outcome rule has no time step
        CreditAssigner(CreditConfig(rule="grpo", time_step="round"), multi_turn=True)
