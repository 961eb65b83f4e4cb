"""Selection over (action, agent) on hand-built (and shuffled) trees."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from marl.tree import subtree_sum
from search.select import (
    arm_stats,
    beta_thompson,
    forest_draw,
    gaussian_thompson,
    select_expansion,
    uct_scores,
)

# Hand-built tree (max_depth 2, agents 0 and 1):
#   0 (root, task)
#   ├── 1 agent 0, r 0.5
#   │   └── 4 agent 1, r 0.25   (depth 2 = max_depth: never expanded)
#   ├── 2 agent 1, r 1.0        (solved: never refined)
#   └── 3 agent 0, r 0.0
PARENT = np.array([-1, 0, 0, 0, 1])
DEPTH = np.array([0, 1, 1, 1, 2])
AGENT = np.array([-1, 0, 1, 0, 1])
REWARD = np.array([np.nan, 0.5, 1.0, 0.0, 0.25])


def test_arm_stats_hand_built_tree():
    s = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    # GEN at root: agent 0 wrote nodes 1 (0.5) and 3 (0.0); agent 1 wrote node 2 (1.0)
    assert_allclose(s.gen_sum[0], [0.5, 1.0])
    assert_allclose(s.gen_count[0], [2, 1])
    # GEN at node 1: agent 1 wrote node 4 (0.25)
    assert_allclose(s.gen_sum[1], [0.0, 0.25])
    # subtree of 1 = {1, 4}: 0.5 + 0.25; of the root: all four programs
    assert_allclose(s.sub_sum, [1.75, 0.75, 1.0, 0.0, 0.25])
    assert_allclose(s.sub_count, [4, 2, 1, 1, 1])
    assert s.expandable.tolist() == [True, True, False, True, False]
    assert s.open_below.tolist() == [True, True, False, True, False]
    assert s.children(0).tolist() == [1, 2, 3]


def test_arm_stats_shuffled_tree_permutes_with_the_ids():
    perm = np.array([3, 0, 4, 1, 2])  # new id of old node i is perm[i]
    inv = np.argsort(perm)
    parent = np.where(PARENT[inv] >= 0, perm[np.maximum(PARENT[inv], 0)], -1)
    s = arm_stats(parent, DEPTH[inv], AGENT[inv], REWARD[inv], 2, max_depth=2)
    ref = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    assert_allclose(s.sub_sum[perm], ref.sub_sum)
    assert_allclose(s.gen_sum[perm], ref.gen_sum)
    assert (s.open_below[perm] == ref.open_below).all()


def test_subtree_totals_matches_naive_loop():
    rng = np.random.default_rng(0)
    n = 40
    parent = np.array([-1] + [int(rng.integers(i)) for i in range(1, n)])
    depth = np.zeros(n, dtype=int)
    for i in range(1, n):
        depth[i] = depth[parent[i]] + 1
    v = rng.random(n)
    naive = v.copy()
    for i in range(n - 1, 0, -1):  # children have larger ids than parents
        naive[parent[i]] += naive[i]
    assert_allclose(subtree_sum(parent, v, depth=depth), naive)


def test_uct_scores_hand_values():
    # arm 0: (0.5 + 1)/(1 + 2) + sqrt(ln 3 / 3) = 0.5 + sqrt(0.366204) = 0.5 + 0.605148 = 1.105148
    # arm 1: (0.5 + 0)/(1 + 0) + sqrt(ln 3 / 1) = 0.5 + 1.048147 = 1.548147
    assert_allclose(
        uct_scores([1.0, 0.0], [2, 0], 2, c=1.0, prior_value=0.5), [1.105148, 1.548147], atol=1e-6
    )


def test_beta_and_gaussian_posteriors_moments():
    rng = np.random.default_rng(1)
    # Beta(1 + 3, 1 + 4 - 3) = Beta(4, 2): mean 4/6, var = 4*2/(6^2*7) = 0.031746
    x = beta_thompson(np.full(40000, 3.0), np.full(40000, 4.0), rng)
    assert abs(x.mean() - 4 / 6) < 0.005 and abs(x.var() - 8 / 252) < 0.002
    # Gaussian: mean (1*0.5 + 2)/(1 + 3) = 0.625, std 0.5/sqrt(4) = 0.25
    g = gaussian_thompson(np.full(40000, 2.0), np.full(40000, 3.0), rng, prior_mean=0.5, noise_std=0.5)
    assert abs(g.mean() - 0.625) < 0.005 and abs(g.std() - 0.25) < 0.005
    with pytest.raises(ValueError, match="successes <= trials"):
        beta_thompson(np.array([2.0]), np.array([1.0]), rng)


def test_uct_greedy_descends_past_solved_and_full_nodes():
    s = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    rng = np.random.default_rng(0)
    # c = 0, only agent 0: root arms GEN a0 (0.5+0.5)/3 = 0.333, CONT 1 (0.5+0.75)/3 = 0.417,
    # CONT 3 (0.5+0)/2 = 0.25; node 2 is solved (no arm). Descend into 1; there node 4 is at
    # max depth (no arm), so GEN by agent 0 under node 1 = refine node 1.
    assert select_expansion(s, 0, rng, method="uct", uct_c=0.0, agents=[0]) == (1, 0)
    # both agents: GEN a1 at the root scores (0.5 + 1)/2 = 0.75, the best arm
    assert select_expansion(s, 0, rng, method="uct", uct_c=0.0) == (0, 1)


def test_thompson_choice_frequency_matches_posterior():
    # root -> one solved child by agent 0 (r = 1): GEN a0 ~ Beta(2, 1), GEN a1 ~ Beta(1, 1), no CONT
    # arm (solved). P(a0 wins) = P(U < X), X ~ Beta(2, 1) = E[X] = 2/3.
    s = arm_stats(
        np.array([-1, 0]), np.array([0, 1]), np.array([-1, 0]), np.array([np.nan, 1.0]), 2, max_depth=3
    )
    rng = np.random.default_rng(3)
    picks = [select_expansion(s, 0, rng) for _ in range(3000)]
    assert all(v == 0 for v, _ in picks)
    frac = np.mean([a == 0 for _, a in picks])
    assert abs(frac - 2 / 3) < 0.04, frac


def test_independent_always_fresh_and_seeded():
    s = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    a = [select_expansion(s, 0, np.random.default_rng(5), method="independent") for _ in range(3)]
    assert len(set(a)) == 1 and a[0][0] == 0
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    seq1 = [select_expansion(s, 0, r1) for _ in range(20)]
    seq2 = [select_expansion(s, 0, r2) for _ in range(20)]
    assert seq1 == seq2
    # Thompson never refines the solved node 2 nor the depth-limited node 4
    assert all(v in (0, 1, 3) for v, _ in seq1)


def test_action_fresh_or_refine_restricts_the_root_arms():
    s = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    # uct, c = 0, agent 0 only: unrestricted the root's best arm is CONT 1 (0.417 > GEN a0 0.333)
    assert select_expansion(s, 0, np.random.default_rng(0), method="uct", uct_c=0.0, agents=[0]) == (1, 0)
    # fresh: only the root's GEN arms are left
    fresh = select_expansion(
        s, 0, np.random.default_rng(0), method="uct", uct_c=0.0, agents=[0], action="fresh"
    )
    assert fresh == (0, 0)
    # refine: only CONT arms at the root (open children 1 and 3; 2 is solved), never a fresh program
    rng = np.random.default_rng(1)
    picks = {select_expansion(s, 0, rng, action="refine")[0] for _ in range(300)}
    assert picks == {1, 3}
    assert {select_expansion(s, 0, rng, action="fresh")[0] for _ in range(100)} == {0}
    # a root with no open child: refine falls back to a fresh program
    lone = arm_stats(
        np.array([-1, 0]), np.array([0, 1]), np.array([-1, 0]), np.array([np.nan, 1.0]), 2, max_depth=3
    )
    assert select_expansion(lone, 0, rng, action="refine")[0] == 0
    with pytest.raises(ValueError, match="valid names"):
        select_expansion(s, 0, rng, action="deeper")


def test_errors_name_the_rule():
    s = arm_stats(PARENT, DEPTH, AGENT, REWARD, 2, max_depth=2)
    with pytest.raises(ValueError, match="valid names"):
        select_expansion(s, 0, np.random.default_rng(0), method="greedy")
    with pytest.raises(ValueError, match="not a root"):
        select_expansion(s, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        arm_stats(PARENT, DEPTH, AGENT, np.array([np.nan, 2.0, 0, 0, 0]), 2, max_depth=2)
    assert math.isfinite(uct_scores([0.0], [0], 0)[0])


def test_forest_draw_follows_the_batch_evidence():
    rng = np.random.default_rng(0)
    # agent 0's fresh programs solved 9 of 10 unsolved trees, agent 1's 0 of 10; refinements 1 of 20 each
    ev = {
        ("fresh", 0): [9.0, 10.0],
        ("fresh", 1): [0.0, 10.0],
        ("refine", 0): [1.0, 20.0],
        ("refine", 1): [1.0, 20.0],
    }
    picks = [forest_draw(ev, rng) for _ in range(400)]
    # P(Beta(10, 2) < max of Beta(1, 11), Beta(2, 20), Beta(2, 20)) is well under 1 %
    assert sum(p == ("fresh", 0) for p in picks) >= 390
    # a tree without programs can only get a fresh program, by either agent
    assert {forest_draw(ev, rng, refine_ok=False)[0] for _ in range(50)} == {"fresh"}
    # no evidence: every arm is Beta(1, 1), so each of the four wins about a quarter of the draws
    flat = {k: [0.0, 0.0] for k in ev}
    counts = {k: 0 for k in ev}
    for _ in range(4000):
        counts[forest_draw(flat, rng)] += 1
    assert all(900 < c < 1100 for c in counts.values())
    with pytest.raises(ValueError, match="fresh"):
        forest_draw({("refine", 0): [0.0, 0.0]}, rng, refine_ok=False)
