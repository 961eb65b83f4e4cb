"""Tests for marl.credit.multiturn: MARS, SPIRAL RAE, GiGPO, Advantage Alignment."""

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.credit.multiturn import (
    advantage_alignment_credit,
    co_player_sum,
    discounted_returns,
    gigpo_advantages,
    loo_return_advantages,
    mars_turn_advantages,
    returns_to_go,
    role_conditioned_advantages,
)

S2 = np.sqrt(2.0)


def _norm(vals, eps=1e-6):
    m = sum(vals) / len(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return [(v - m) / (sd + eps) for v in vals]


# ----------------------------------------------------------------------------- MARS
def test_mars_turn_hand_values():
    # game 0: player 0 moves at turns 0, 2, 4 receiving [0, 0, 1]; player 1 at turns 1, 3 receiving [0, -1]
    # (listed out of order). Centre per (game, player): p0 mean 1/3 -> [-1/3, -1/3, 2/3];
    # p1 mean -1/2 -> [1/2, -1/2]. gamma = 1 reward-to-go: p0 [0, 1/3, 2/3], p1 [0, -1/2].
    r = np.array([1.0, 0.0, 0.0, -1.0, 0.0])
    turn = np.array([4, 0, 1, 3, 2])
    player = np.array([0, 0, 1, 1, 0])
    game = np.zeros(5, np.int64)
    adv = mars_turn_advantages(r, game, player, turn, gamma=1.0, normalize=False)
    np.testing.assert_allclose(adv, [2 / 3, 0.0, 0.0, -0.5, 1 / 3], atol=1e-12)
    # gamma = 0.5: p0 A(4) = 2/3, A(2) = -1/3 + 0.5*2/3 = 0, A(0) = -1/3 + 0 = -1/3
    adv = mars_turn_advantages(r, game, player, turn, gamma=0.5, normalize=False)
    np.testing.assert_allclose(adv[[1, 4, 0]], [-1 / 3, 0.0, 2 / 3], atol=1e-12)
    # normalise per player (gamma = 1): p0 [0, 1/3, 2/3] -> mean 1/3, std 1/3 -> [-1, 0, 1];
    # p1 [0, -1/2] -> mean -1/4, std 0.35355 -> [0.7071, -0.7071]
    adv = mars_turn_advantages(r, game, player, turn, gamma=1.0, eps=0.0)
    np.testing.assert_allclose(adv, [1.0, -1.0, 1 / S2, -1 / S2, 0.0], atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(-2, 2)), min_size=1, max_size=20),
    st.sampled_from([1.0, 0.8]),
)
def test_mars_turn_matches_loop(items, gamma):
    game = np.array([g for g, _, _ in items], dtype=np.int64)
    player = np.array([p for _, p, _ in items], dtype=np.int64)
    r = np.array([float(v) for _, _, v in items])
    turn = np.arange(len(items)) * 2 + 3  # later samples later in the game
    adv = np.zeros(len(r))
    for i in range(len(r)):
        mine = [j for j in range(len(r)) if game[j] == game[i] and player[j] == player[i]]
        m = sum(r[j] for j in mine) / len(mine)
        later = [j for j in mine if turn[j] >= turn[i]]
        adv[i] = sum(gamma ** mine.index(j) / gamma ** mine.index(i) * (r[j] - m) for j in later)
    expected = np.zeros(len(r))
    for p in set(player.tolist()):
        idx = [i for i in range(len(r)) if player[i] == p]
        expected[idx] = _norm([adv[i] for i in idx])
    got = mars_turn_advantages(r, game, player, turn, gamma=gamma)
    np.testing.assert_allclose(got, expected, atol=1e-6)


# ----------------------------------------------------------------------------- SPIRAL RAE
def test_rae_hand_values_and_update():
    # empty table: b = 0 -> A = R; key 1 gets mean(1, -1) = 0 -> b stays 0; key 2: 0.95*0 + 0.05*1 = 0.05
    adv, k, v = role_conditioned_advantages(
        np.array([1.0, -1.0, 1.0]), np.array([1, 1, 2]), np.zeros(0, np.int64), np.zeros(0)
    )
    np.testing.assert_allclose(adv, [1.0, -1.0, 1.0])
    assert k.tolist() == [1, 2]
    np.testing.assert_allclose(v, [0.0, 0.05])
    # next batch, key 2 wins again: A = 1 - 0.05 = 0.95 (pre-update b); b = 0.95*0.05 + 0.05*1 = 0.0975
    adv, k, v = role_conditioned_advantages(np.array([1.0]), np.array([2]), k, v)
    np.testing.assert_allclose(adv, [0.95])
    np.testing.assert_allclose(v, [0.0, 0.0975])


def test_rae_is_order_free_within_a_batch():
    r = np.array([1.0, -1.0, 0.5, 0.25])
    keys = np.array([3, 3, 3, 9])
    bk, bv = np.array([3, 9]), np.array([0.2, -0.4])
    a1, k1, v1 = role_conditioned_advantages(r, keys, bk, bv)
    perm = [2, 0, 3, 1]
    a2, k2, v2 = role_conditioned_advantages(r[perm], keys[perm], bk, bv)
    np.testing.assert_allclose(a2, a1[perm])
    np.testing.assert_allclose(v2, v1)


# ----------------------------------------------------------------------------- GiGPO
def test_gigpo_hand_values():
    # one group, two episodes (gamma 0.5, omega 1):
    #   episode A: t0 state s1 r=0, t1 state s2 r=1 -> return 1; discounted R: t1 = 1, t0 = 0.5
    #   episode B: t0 state s1 r=0, t1 state s3 r=0 -> return 0; R: 0, 0
    # A^E: [1, 0] -> +-0.7071.  Step group s1 = {A.t0 (0.5), B.t0 (0)} -> +-0.7071; s2, s3 alone -> 0.
    # final: A.t0 = 1.4142, A.t1 = 0.7071, B.t0 = -1.4142, B.t1 = -0.7071
    r = np.array([0.0, 1.0, 0.0, 0.0])
    ep = np.array([10, 10, 20, 20])
    grp = np.zeros(4, np.int64)
    anchor = np.array([111, 222, 111, 333])
    turn = np.array([0, 1, 0, 1])
    adv = gigpo_advantages(r, ep, grp, anchor, turn, gamma=0.5, omega=1.0, eps=0.0)
    np.testing.assert_allclose(adv, [S2, 1 / S2, -S2, -1 / S2])
    # omega = 0 leaves the episode advantage only
    adv0 = gigpo_advantages(r, ep, grp, anchor, turn, gamma=0.5, omega=0.0, eps=0.0)
    np.testing.assert_allclose(adv0, [1 / S2, 1 / S2, -1 / S2, -1 / S2])


def test_gigpo_anchor_in_other_group_is_a_different_step_group():
    # same state hash in two different groups must not be pooled: each step group is a singleton -> A^S = 0
    r = np.array([1.0, 0.0])
    adv = gigpo_advantages(r, np.array([0, 1]), np.array([5, 6]), np.array([9, 9]), np.array([0, 0]))
    np.testing.assert_allclose(adv, [0.0, 0.0])  # every episode is alone in its group too


def test_gigpo_episode_spanning_groups_is_an_error():
    with pytest.raises(ValueError, match="spans several groups"):
        gigpo_advantages(np.zeros(2), np.array([0, 0]), np.array([1, 2]), np.array([0, 0]), np.array([0, 1]))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 2), st.sampled_from([0.0, 1.0, 0.5])),
        min_size=1,
        max_size=20,
    )
)
def test_gigpo_matches_loop(items):
    grp = np.array([g for g, _, _, _ in items], dtype=np.int64)
    ep = grp * 10 + np.array([e for _, e, _, _ in items])  # episodes nest inside groups
    anchor = np.array([a for _, _, a, _ in items], dtype=np.int64)
    r = np.array([v for _, _, _, v in items])
    turn = np.arange(len(items))
    gamma, eps = 0.9, 1e-6
    eps_ids = sorted(set(ep.tolist()))
    ret = {e: sum(r[j] for j in range(len(r)) if ep[j] == e) for e in eps_ids}
    a_e = {}
    for e in eps_ids:
        g = grp[list(ep).index(e)]
        peers = [ret[f] for f in eps_ids if grp[list(ep).index(f)] == g]
        a_e[e] = _norm(peers, eps)[[f for f in eps_ids if grp[list(ep).index(f)] == g].index(e)]
    disc = np.zeros(len(r))
    for i in range(len(r)):
        later = [j for j in range(len(r)) if ep[j] == ep[i] and turn[j] >= turn[i]]
        disc[i] = sum(gamma ** later.index(j) * r[j] for j in later)
    expected = np.zeros(len(r))
    for i in range(len(r)):
        peers = [j for j in range(len(r)) if grp[j] == grp[i] and anchor[j] == anchor[i]]
        a_s = _norm([disc[j] for j in peers], eps)[peers.index(i)] if len(peers) > 1 else 0.0
        expected[i] = a_e[ep[i]] + a_s
    got = gigpo_advantages(r, ep, grp, anchor, turn, gamma=gamma, omega=1.0, eps=eps)
    np.testing.assert_allclose(got, expected, atol=1e-6)


# ----------------------------------------------------------------------------- Advantage Alignment
def test_advantage_alignment_credit_hand_values():
    # own A1 = [1, 2, -1] at turns 0..2, co-player A2 = [0.5, 1, 2], beta 0.5, gamma 0.5:
    # S_0 = 0, S_1 = 0.5*(0 + 1) = 0.5, S_2 = 0.5*(0.5 + 2) = 1.25 (= 0.25*1 + 0.5*2)
    # credit = [1 + 0.5*0*0.5, 2 + 0.5*0.5*1, -1 + 0.5*1.25*2] = [1, 2.25, 0.25]
    a1 = np.array([-1.0, 1.0, 2.0])  # given out of order: turns [2, 0, 1]
    a2 = np.array([2.0, 0.5, 1.0])
    out = advantage_alignment_credit(a1, a2, np.zeros(3, np.int64), np.array([2, 0, 1]), beta=0.5, gamma=0.5)
    np.testing.assert_allclose(out, [0.25, 1.0, 2.25])


def test_loo_returns_and_co_player_hand_values():
    # three episodes from one seed, returns at step 0: [3, 1, 2] -> [3 - 1.5, 1 - 2.5, 2 - 2] = [1.5, -1.5, 0]
    out = loo_return_advantages(np.array([3.0, 1.0, 2.0]), np.zeros(3, np.int64), np.zeros(3, np.int64))
    np.testing.assert_allclose(out, [1.5, -1.5, 0.0])
    # episode 0 with players p0, p1, two steps each: the co-player value at the same step
    vals = np.array([1.0, 2.0, 10.0, 20.0])
    ep = np.zeros(4, np.int64)
    traj = np.array([0, 0, 1, 1])
    rank = np.array([0, 1, 0, 1])
    np.testing.assert_allclose(co_player_sum(vals, ep, traj, rank), [10.0, 20.0, 1.0, 2.0])


def test_discounted_returns_hand_values():
    # trajectory [r0, r1, r2] = [1, 0, 2] with gamma 0.5: R2 = 2, R1 = 0 + 1 = 1, R0 = 1 + 0.5 = 1.5
    out = discounted_returns(np.array([1.0, 0.0, 2.0]), np.zeros(3, np.int64), np.array([0, 1, 2]), gamma=0.5)
    np.testing.assert_allclose(out, [1.5, 1.0, 2.0])


def test_returns_to_go_hand_values_and_exact_powers():
    # two trajectories given shuffled: A = turns [0, 1, 2] rewards [1, 0, 2]; B = turns [3, 7] rewards [0, -1]
    # gamma 0.5: A -> [1 + 0 + 0.25 * 2, 0 + 0.5 * 2, 2] = [1.5, 1, 2]; B -> [0 + 0.5 * -1, -1] = [-0.5, -1]
    r = np.array([2.0, 0.0, 1.0, -1.0, 0.0])
    traj = np.array([0, 1, 0, 1, 0])
    turn = np.array([2, 3, 0, 7, 1])
    np.testing.assert_allclose(returns_to_go(r, traj, turn, gamma=0.5), [2.0, -0.5, 1.5, -1.0, 1.0])
    # an outcome paid on the last turn reaches turn k as exactly gamma^(turns left) * R, bit for bit
    gamma, n = 0.6, 9
    r = np.zeros(n)
    r[-1] = -1.0
    out = returns_to_go(r, np.zeros(n, np.int64), np.arange(n), gamma=gamma)
    assert out.tolist() == (-1.0 * np.power(gamma, np.arange(n)[::-1])).tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.floats(-2, 2)), min_size=1, max_size=20),
    st.sampled_from([1.0, 0.9, 0.5]),
)
def test_returns_to_go_equals_the_recursion(items, gamma):
    traj = np.array([t for t, _ in items])
    r = np.array([x for _, x in items])
    turn = np.arange(len(items))[::-1].copy()  # any distinct order inside each trajectory
    np.testing.assert_allclose(
        returns_to_go(r, traj, turn, gamma=gamma), discounted_returns(r, traj, turn, gamma=gamma), atol=1e-12
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda r: mars_turn_advantages(r, np.zeros(3, np.int64), np.zeros(3, np.int64), np.arange(3)),
        lambda r: gigpo_advantages(
            r, np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3), np.arange(3)
        ),
        lambda r: role_conditioned_advantages(r, np.zeros(3, np.int64), np.zeros(0, np.int64), np.zeros(0))[
            0
        ],
        lambda r: discounted_returns(r, np.zeros(3, np.int64), np.arange(3)),
    ],
)
def test_non_finite_reward_is_rejected(fn):
    with pytest.raises(ValueError, match="index 1"):
        fn(np.array([0.0, np.nan, 1.0]))


def test_all_equal_and_singleton_give_zero():
    # MARS: a (game, player) with all-equal rewards centres to 0 everywhere
    assert np.all(
        mars_turn_advantages(np.full(3, 0.7), np.zeros(3, np.int64), np.zeros(3, np.int64), np.arange(3)) == 0
    )
    # GiGPO: one episode alone in its group, every anchor a singleton -> 0
    assert np.all(
        gigpo_advantages(
            np.array([0.3, 1.0]), np.zeros(2, np.int64), np.zeros(2, np.int64), np.array([1, 2]), np.arange(2)
        )
        == 0
    )
    # AA: a single episode of a seed group has no leave-one-out peer -> 0
    assert np.all(loo_return_advantages(np.array([4.0]), np.array([0]), np.array([0])) == 0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.integers(-2, 2)), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([0.0, 0.5, 0.95]),
)
def test_rae_matches_sequential_loop(batches, alpha):
    keys_t, vals_t = np.zeros(0, np.int64), np.zeros(0)
    b: dict[int, float] = {}
    for batch in batches:
        keys = np.array([k for k, _ in batch], dtype=np.int64)
        r = np.array([float(v) for _, v in batch])
        adv, keys_t, vals_t = role_conditioned_advantages(r, keys, keys_t, vals_t, alpha=alpha)
        np.testing.assert_allclose(adv, [v - b.get(k, 0.0) for k, v in zip(keys.tolist(), r)])
        for k in set(keys.tolist()):
            rs = [float(v) for kk, v in batch if kk == k]
            b[k] = alpha * b.get(k, 0.0) + (1 - alpha) * sum(rs) / len(rs)
    np.testing.assert_allclose(vals_t, [b[k] for k in keys_t.tolist()])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(-2, 2)), min_size=1, max_size=16),
    st.sampled_from([1.0, 0.5]),
    st.sampled_from([0.0, 0.7]),
)
def test_advantage_alignment_pipeline_matches_loop(items, gamma, beta):
    # episodes 0..3 (seed group = episode // 2), two players; each (episode, player) is a trajectory
    ep = np.array([e for e, _, _ in items], dtype=np.int64)
    pl = np.array([p for _, p, _ in items], dtype=np.int64)
    r = np.array([float(v) for _, _, v in items])
    turn = np.arange(len(items))
    seed = ep // 2
    n = len(r)
    traj = [[j for j in range(n) if ep[j] == ep[i] and pl[j] == pl[i]] for i in range(n)]
    rank = [traj[i].index(i) for i in range(n)]
    ret = [sum(gamma ** (traj[i].index(j) - rank[i]) * r[j] for j in traj[i][rank[i] :]) for i in range(n)]
    own = []
    for i in range(n):
        peers = [
            j for j in range(n) if seed[j] == seed[i] and pl[j] == pl[i] and rank[j] == rank[i] and j != i
        ]
        own.append(ret[i] - sum(ret[j] for j in peers) / len(peers) if peers else 0.0)
    co = [
        sum(own[j] for j in range(n) if ep[j] == ep[i] and pl[j] != pl[i] and rank[j] == rank[i])
        for i in range(n)
    ]
    expected = [
        own[i] + beta * sum(gamma ** (rank[i] - rank[j]) * own[j] for j in traj[i][: rank[i]]) * co[i]
        for i in range(n)
    ]
    from marl.credit.groups import group_codes, segment_rank

    codes, _ = group_codes((ep, pl))
    rk = segment_rank(codes, turn)
    assert rk.tolist() == rank
    g = discounted_returns(r, (ep, pl), turn, gamma=gamma)
    np.testing.assert_allclose(g, ret, atol=1e-9)
    a = loo_return_advantages(g, (seed, pl), rk)
    np.testing.assert_allclose(a, own, atol=1e-9)
    c = co_player_sum(a, ep, (ep, pl), rk)
    np.testing.assert_allclose(c, co, atol=1e-9)
    np.testing.assert_allclose(
        advantage_alignment_credit(a, c, (ep, pl), turn, beta=beta, gamma=gamma), expected, atol=1e-9
    )


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 2), st.integers(-2, 2)),
        min_size=1,
        max_size=16,
    ),
    st.randoms(use_true_random=False),
)
def test_multiturn_rules_are_permutation_equivariant(items, rnd):
    ep = np.array([e for e, _, _, _ in items], dtype=np.int64)
    pl = np.array([p for _, p, _, _ in items], dtype=np.int64)
    anchor = np.array([a for _, _, a, _ in items], dtype=np.int64)
    r = np.array([float(v) for _, _, _, v in items])
    turn = np.arange(len(items)) * 5
    perm = list(range(len(r)))
    rnd.shuffle(perm)
    co = rnd.sample([0.5, -1.0, 2.0, 0.0] * 4, len(r))
    co = np.array(co)
    fns = [
        lambda r, ep, pl, an, t, co: mars_turn_advantages(r, ep, pl, t, gamma=0.9),
        lambda r, ep, pl, an, t, co: gigpo_advantages(r, (ep, pl), np.zeros_like(ep), an, t, gamma=0.9),
        lambda r, ep, pl, an, t, co: advantage_alignment_credit(r, co, (ep, pl), t, beta=0.5, gamma=0.9),
    ]
    for fn in fns:
        a = fn(r, ep, pl, anchor, turn, co)
        b = fn(r[perm], ep[perm], pl[perm], anchor[perm], turn[perm], co[perm])
        np.testing.assert_allclose(b, a[perm], atol=1e-9)
