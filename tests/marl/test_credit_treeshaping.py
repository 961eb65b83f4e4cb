"""Tests for marl.credit.treeshaping: MARS² tree-consistent shaping and path-level advantages."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.credit.treeshaping import path_level_advantages, tree_baselines, tree_shaped_rewards


def loop_shaped(r, parent, lam, gamma):
    """Textbook per-node loop over the REFERENCES.md definition."""
    n = len(r)
    out = list(r)
    for i in range(n):
        p = parent[i]
        if p < 0:
            continue
        sibs = [j for j in range(n) if parent[j] == p and j != i]
        sib_mean = sum(r[j] for j in sibs) / len(sibs) if sibs else None
        if parent[p] >= 0:  # parent is not a root
            b = (1 - lam) * r[p] + lam * sib_mean if sibs else r[p]
        elif sibs:
            b = sib_mean
        else:
            continue
        out[i] = r[i] + gamma * (r[i] - b)
    return np.array(out)


def test_shaping_hand_values():
    # root 0 (NaN reward: the task itself); children 1 (0.2), 2 (0.6);
    # node 3 (0.5) under 1; nodes 4 (1.0), 5 (0.0) under 2
    # lam = 0.5, gamma = 0.5
    #  1: parent is root, sibling {2} -> b = 0.6 -> 0.2 + 0.5*(0.2 - 0.6) = 0.0
    #  2: parent is root, sibling {1} -> b = 0.2 -> 0.6 + 0.5*0.4 = 0.8
    #  3: parent 1 not root, no sibling -> b = r_1 = 0.2 -> 0.5 + 0.5*0.3 = 0.65
    #  4: parent 2, sibling {5}: b = 0.5*0.6 + 0.5*0.0 = 0.3 -> 1.0 + 0.5*0.7 = 1.35
    #  5: parent 2, sibling {4}: b = 0.5*0.6 + 0.5*1.0 = 0.8 -> 0.0 + 0.5*(-0.8) = -0.4
    r = np.array([np.nan, 0.2, 0.6, 0.5, 1.0, 0.0])
    parent = np.array([-1, 0, 0, 1, 2, 2])
    shaped = tree_shaped_rewards(r, parent, lam=0.5, gamma=0.5)
    np.testing.assert_allclose(shaped[1:], [0.0, 0.8, 0.65, 1.35, -0.4], atol=1e-12)
    assert np.isnan(shaped[0])  # the root passes through
    b, has = tree_baselines(r, parent, lam=0.5)
    assert has.tolist() == [False, True, True, True, True, True]
    np.testing.assert_allclose(b[1:], [0.6, 0.2, 0.2, 0.3, 0.8], atol=1e-12)


def test_only_child_of_root_and_lam_extremes():
    # an only child of a root has no baseline: unchanged
    np.testing.assert_allclose(tree_shaped_rewards(np.array([0.0, 0.7]), np.array([-1, 0]))[1], 0.7)
    # lam = 0 uses the parent only, lam = 1 the siblings only (node 2: parent 1 (0.4), sibling 3 (1.0))
    r = np.array([0.0, 0.4, 0.8, 1.0])
    parent = np.array([-1, 0, 1, 1])
    b0, _ = tree_baselines(r, parent, lam=0.0)
    b1, _ = tree_baselines(r, parent, lam=1.0)
    assert b0[2] == pytest.approx(0.4) and b1[2] == pytest.approx(1.0)


def test_shaping_uses_unshaped_rewards_of_parents():
    # root 0 with children 1 (1.0) and 3 (0.0); node 2 (0.0) is the only child of 1; lam = 0, gamma = 1.
    # r~_1 = 1 + (1 - 0) = 2 (baseline: sibling 3). Node 2's baseline is the *unshaped* r_1 = 1, so
    # r~_2 = 0 + (0 - 1) = -1 (using the shaped parent would give -2)
    r = np.array([0.0, 1.0, 0.0, 0.0])
    parent = np.array([-1, 0, 1, 0])
    shaped = tree_shaped_rewards(r, parent, lam=0.0, gamma=1.0)
    # r~_1 = 1 + (1 - 0) = 2 (sibling 3 at 0); r~_2 = 0 + (0 - r_1) = -1 (not 0 - 2)
    np.testing.assert_allclose(shaped[1:3], [2.0, -1.0])


def test_nan_reward_on_a_non_root_names_the_node():
    with pytest.raises(ValueError, match="node 2"):
        tree_shaped_rewards(np.array([np.nan, 0.0, np.nan]), np.array([-1, 0, 0]))


def test_path_level_hand_values():
    # tree 7: shaped [1, 0] -> +-0.7071; tree 9: [0.3] alone -> 0
    adv = path_level_advantages(np.array([1.0, 0.0, 0.3]), np.array([7, 7, 9]), eps=0.0)
    np.testing.assert_allclose(adv, [1 / np.sqrt(2), -1 / np.sqrt(2), 0.0])


@st.composite
def random_forest(draw):
    n = draw(st.integers(1, 25))
    parent = [-1]
    for i in range(1, n):
        parent.append(draw(st.integers(-1, i - 1)))
    r = [draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])) for _ in range(n)]
    return np.array(r), np.array(parent)


@settings(max_examples=80, deadline=None)
@given(random_forest(), st.sampled_from([0.0, 0.3, 0.5, 1.0]), st.sampled_from([0.0, 0.5, 1.0]))
def test_shaping_matches_loop(forest, lam, gamma):
    r, parent = forest
    np.testing.assert_allclose(
        tree_shaped_rewards(r, parent, lam=lam, gamma=gamma), loop_shaped(r, parent, lam, gamma), atol=1e-9
    )


@settings(max_examples=40, deadline=None)
@given(random_forest(), st.randoms(use_true_random=False))
def test_shaping_is_invariant_to_relabelling_nodes(forest, rnd):
    # relabel node ids by a permutation that keeps parents before children is not needed: shaping reads
    # parent ids only, so any relabelling (with parent ids mapped along) permutes the output the same way
    r, parent = forest
    n = len(r)
    perm = list(range(n))
    rnd.shuffle(perm)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)  # new id of old node
    new_parent = np.where(parent[perm] >= 0, inv[np.maximum(parent[perm], 0)], -1)
    a = tree_shaped_rewards(r, parent)
    b = tree_shaped_rewards(r[perm], new_parent)
    np.testing.assert_allclose(b, a[perm], atol=1e-12)
