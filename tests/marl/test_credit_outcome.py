"""Tests for marl.credit.outcome: hand-derived values, loop equivalence and the group properties."""

import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.credit.outcome import (
    SPOValueTracker,
    dr_grpo_advantages,
    grpo_advantages,
    mc_grpo_advantages,
    ngrpo_advantages,
    public_baseline_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    reinforce_pp_returns,
    rloo_advantages,
    spo_advantages,
)

IDS = [-(10**12), -3, 0, 7, 10**9 + 7, 2**40]
REWARD = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(-10, 10, allow_nan=False))
SAMPLES = st.lists(st.tuples(st.sampled_from(IDS), REWARD), min_size=1, max_size=24)
S2 = np.sqrt(2.0)


def _split(samples):
    return np.array([r for _, r in samples]), np.array([g for g, _ in samples], dtype=np.int64)


# ----------------------------------------------------------------------------- naive references
def loop_grpo(r, g, scale=True, unbiased=True, eps=1e-6):
    out = []
    for i in range(len(r)):
        members = [r[j] for j in range(len(r)) if g[j] == g[i]]
        m = sum(members) / len(members)
        if not scale:
            out.append(r[i] - m)
            continue
        if len(members) == 1 or (unbiased and len(members) < 2):
            sd = 0.0
        else:
            sd = statistics.stdev(members) if unbiased else statistics.pstdev(members)
        out.append((r[i] - m) / (sd + eps))
    return np.array(out)


def loop_rloo(r, g):
    out = []
    for i in range(len(r)):
        others = [r[j] for j in range(len(r)) if g[j] == g[i] and j != i]
        out.append(r[i] - sum(others) / len(others) if others else 0.0)
    return np.array(out)


def loop_ngrpo(r, g, r_max, unbiased=True, eps=1e-6):
    out = []
    for i in range(len(r)):
        aug = [r[j] for j in range(len(r)) if g[j] == g[i]] + [r_max]
        m = sum(aug) / len(aug)
        sd = statistics.stdev(aug) if unbiased else statistics.pstdev(aug)
        out.append((r[i] - m) / (sd + eps))
    return np.array(out)


def loop_mc_grpo(r, g):
    adv, keep = [], []
    for i in range(len(r)):
        idx = sorted([j for j in range(len(r)) if g[j] == g[i]], key=lambda j: (r[j], j))
        n = len(idx)
        med = statistics.median([r[j] for j in idx])
        pivot = idx[n // 2] if n % 2 == 1 else None
        adv.append(0.0 if i == pivot else r[i] - med)
        keep.append(i != pivot)
    return np.array(adv), np.array(keep)


# ----------------------------------------------------------------------------- golden / hand values
def test_grpo_golden_value():
    # REFERENCES.md: rewards [1, 0, 0, 1], groups [a, a, b, b]: std = 0.7071 in each group
    adv = grpo_advantages(np.array([1.0, 0.0, 0.0, 1.0]), np.array([0, 0, 1, 1]), eps=0.0)
    np.testing.assert_allclose(adv, [1 / S2, -1 / S2, -1 / S2, 1 / S2])


def test_grpo_variants_hand_values():
    r = np.array([1.0, 0.0, 0.0, 1.0])
    g = np.array([0, 0, 1, 1])
    # biased std over [1, 0] is 0.5 -> A = +-0.5 / 0.5 = +-1
    np.testing.assert_allclose(grpo_advantages(r, g, unbiased=False, eps=0.0), [1, -1, -1, 1])
    # eps enters the denominator: 0.5 / (0.5 + 0.5) = 0.5
    np.testing.assert_allclose(grpo_advantages(r, g, unbiased=False, eps=0.5), [0.5, -0.5, -0.5, 0.5])
    # no std: r - mean = +-0.5
    np.testing.assert_allclose(grpo_advantages(r, g, scale_by_std=False), [0.5, -0.5, -0.5, 0.5])


def test_grpo_non_contiguous_ids_and_singleton():
    # group 42: [3, 2] mean 2.5, unbiased std sqrt(0.5) -> +-0.5/0.7071 = +-0.7071
    # group -1: [1, 5] mean 3, unbiased std sqrt(8) -> +-2/2.8284 = +-0.7071
    # group 10**12: [4] alone -> 0
    r = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    g = np.array([42, -1, 42, -1, 10**12])
    np.testing.assert_allclose(grpo_advantages(r, g, eps=0.0), [1 / S2, -1 / S2, -1 / S2, 1 / S2, 0.0])


def test_grpo_composite_key():
    # (prompt, agent) = (0,0), (0,0), (0,1), (0,1): [1, 0] -> +-0.7071, [2, 4] -> -+0.7071
    r = np.array([1.0, 0.0, 2.0, 4.0])
    adv = grpo_advantages(r, (np.zeros(4, np.int64), np.array([0, 0, 1, 1])), eps=0.0)
    np.testing.assert_allclose(adv, [1 / S2, -1 / S2, -1 / S2, 1 / S2])


def test_dr_grpo_hand_value():
    # [1, 0, 0]: mean 1/3 -> [2/3, -1/3, -1/3]
    np.testing.assert_allclose(
        dr_grpo_advantages(np.array([1.0, 0, 0]), np.zeros(3, np.int64)), [2 / 3, -1 / 3, -1 / 3]
    )


def test_rloo_golden_value():
    # REFERENCES.md: [1, 0, 0] in one group -> [1 - 0, 0 - 0.5, 0 - 0.5]
    np.testing.assert_allclose(rloo_advantages(np.array([1.0, 0, 0]), np.zeros(3, np.int64)), [1, -0.5, -0.5])


def test_reinforce_pp_hand_values():
    # row 0: rewards [0, 0, 1], gamma 0.5 -> G = [0.25, 0.5, 1]; row 1: [0, 2] (+ a masked slot) -> [1, 2]
    tok = np.array([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    np.testing.assert_allclose(
        reinforce_pp_returns(tok, mask, gamma=0.5), [[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]
    )
    # whiten over the 5 valid tokens [0.25, 0.5, 1, 1, 2]: mean 0.95, squared deviations sum to 1.8;
    # biased var 1.8 / 5 = 0.36 (std 0.6), unbiased 1.8 / 4 = 0.45
    dev = np.array([[-0.7, -0.45, 0.05], [0.05, 1.05, 0.0]])
    adv = reinforce_pp_advantages(tok, mask, gamma=0.5, eps=0.0, unbiased=False)
    expected = dev / 0.6
    expected[1, 2] = 0.0
    np.testing.assert_allclose(adv, expected, atol=1e-12)
    expected = dev / np.sqrt(0.45)
    expected[1, 2] = 0.0
    np.testing.assert_allclose(reinforce_pp_advantages(tok, mask, gamma=0.5, eps=0.0), expected, atol=1e-12)


def test_reinforce_pp_returns_carry_through_masked_gaps_undiscounted():
    # a multi-turn row: policy tokens at 0, 1, an observation at 2, 3 (masked), policy tokens at 4, 5;
    # reward 1 on the last token, gamma 0.5. The discount counts policy tokens only:
    # G5 = 1, G4 = 0.5, (gap carries 0.5 through), G1 = 0 + 0.5 * 0.5 = 0.25, G0 = 0.125
    tok = np.array([[0.0, 0.0, 9.0, 9.0, 0.0, 1.0]])  # rewards under the mask are ignored
    mask = np.array([[1, 1, 0, 0, 1, 1]], dtype=bool)
    np.testing.assert_allclose(
        reinforce_pp_returns(tok, mask, gamma=0.5), [[0.125, 0.25, 0.0, 0.0, 0.5, 1.0]]
    )


def test_reinforce_pp_baseline_hand_values():
    r = np.array([1.0, 0.0, 0.0, 1.0])
    g = np.array([0, 0, 1, 1])
    # r - mean_g = [0.5, -0.5, -0.5, 0.5]; batch mean 0, squared deviations 1.0:
    # biased var 0.25 -> [1, -1, -1, 1]; unbiased var 1/3 -> dev * sqrt(3)
    np.testing.assert_allclose(
        reinforce_pp_baseline_advantages(r, g, eps=0.0, unbiased=False), [1, -1, -1, 1]
    )
    np.testing.assert_allclose(
        reinforce_pp_baseline_advantages(r, g, eps=0.0), np.sqrt(3) * np.array([0.5, -0.5, -0.5, 0.5])
    )
    # token weights [1, 1, 1, 3]: mean (0.5 - 0.5 - 0.5 + 1.5)/6 = 1/6; dev [1/3, -2/3, -2/3, 1/3];
    # biased var (1/9 + 4/9 + 4/9 + 3/9)/6 = 2/9 -> A = dev / sqrt(2/9) = [0.7071, -1.4142, -1.4142, 0.7071]
    w = np.array([1, 1, 1, 3])
    adv = reinforce_pp_baseline_advantages(r, g, weights=w, eps=0.0, unbiased=False)
    np.testing.assert_allclose(adv, [1 / S2, -S2, -S2, 1 / S2])


def test_mc_grpo_hand_values():
    # group 0 [0.2, 0.9, 0.5]: median 0.5 (sample 2 is the pivot) -> [-0.3, 0.4, 0]
    # group 1 [0, 1, 1]: median 1; tied middle values 1 at samples 4, 5 -> pivot is 4 -> [-1, 0, 0]
    # group 2 [1, 3] (even): median 2, no pivot -> [-1, 1]
    r = np.array([0.2, 0.9, 0.5, 0.0, 1.0, 1.0, 1.0, 3.0])
    g = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    adv, keep = mc_grpo_advantages(r, g)
    np.testing.assert_allclose(adv, [-0.3, 0.4, 0.0, -1.0, 0.0, 0.0, -1.0, 1.0], atol=1e-12)
    assert keep.tolist() == [True, True, False, True, False, True, True, True]
    # with std: group 0 mean 1.6/3, unbiased var ((-1/3)^2 + (11/30)^2 + (-1/30)^2)/2 = 0.37/3
    adv, _ = mc_grpo_advantages(r[:3], g[:3], scale_by_std=True, eps=0.0)
    sd = np.sqrt(0.37 / 3)
    np.testing.assert_allclose(adv, [-0.3 / sd, 0.4 / sd, 0.0])


def test_ngrpo_hand_values():
    # all wrong [0, 0, 0] + virtual 1: mean 0.25, unbiased var (3*0.0625 + 0.5625)/3 = 0.25 -> A = -0.5
    r = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    g = np.array([0, 0, 0, 1, 1, 2, 2])
    adv = ngrpo_advantages(r, g, 1.0, eps=0.0)
    # group 1 [1, 0] + 1: mean 2/3, var (1/9 + 4/9 + 1/9)/2 = 1/3 -> [(1/3)/0.57735, (-2/3)/0.57735]
    # group 2 [1, 1] + 1: all at r_max -> 0
    sd = np.sqrt(1 / 3)
    np.testing.assert_allclose(adv, [-0.5, -0.5, -0.5, (1 / 3) / sd, (-2 / 3) / sd, 0.0, 0.0])
    with pytest.raises(ValueError, match="r_max"):
        ngrpo_advantages(np.array([2.0]), np.array([0]), 1.0)


def test_public_baseline_hand_values():
    # functional groups (episode 0, role 0): [1, 3] mean 2 -> [-1, 1]; (0, 1): [5, 2] mean 3.5 -> [1.5, -1.5]
    r = np.array([1.0, 3.0, 5.0, 2.0])
    adv = public_baseline_advantages(r, (np.zeros(4, np.int64), np.array([0, 0, 1, 1])))
    np.testing.assert_allclose(adv, [-1, 1, 1.5, -1.5])


def test_spo_advantages_hand_values():
    # r - v = [0.5, -0.5, 0.75, 0.25]; mean 0.25; dev [0.25, -0.75, 0.5, 0]; biased var 0.875/4 = 0.21875
    adv = spo_advantages(np.array([1.0, 0, 1, 1]), np.array([0.5, 0.5, 0.25, 0.75]), eps=0.0)
    np.testing.assert_allclose(adv, np.array([0.25, -0.75, 0.5, 0.0]) / np.sqrt(0.21875))


def test_spo_tracker_updates_like_the_paper():
    tr = SPOValueTracker()  # rho in [0.875, 0.96], D_half 0.06, v0 = 0.5 with n0 = 1/(1-0.96) = 25
    np.testing.assert_allclose(tr.values(np.array([7])), [0.5])
    tr.update(np.array([7]), np.array([1.0]))  # no KL: rho = 0.96 -> a = 0.96*12.5 + 1 = 13, b = 12
    np.testing.assert_allclose(tr.values(np.array([7])), [13 / 25])
    tr2 = SPOValueTracker()
    tr2.update(
        np.array([7]), np.array([1.0]), policy_kl=0.01
    )  # rho = 2^(-0.01/0.06) = 0.8909 (inside the clip)
    rho = 2 ** (-1 / 6)
    np.testing.assert_allclose(tr2.values(np.array([7])), [(rho * 12.5 + 1) / (rho * 25 + 1)])
    tr3 = SPOValueTracker()
    tr3.update(np.array([7]), np.array([0.0]), policy_kl=1.0)  # 2^(-16.7) clipped up to 0.875
    np.testing.assert_allclose(tr3.values(np.array([7])), [(0.875 * 12.5) / (0.875 * 25 + 1)])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tr.update(np.array([1]), np.array([2.0]))
    # checkpoint round trip
    tr4 = SPOValueTracker()
    tr4.load_state_dict(tr.state_dict())
    np.testing.assert_allclose(tr4.values(np.array([7, 8])), tr.values(np.array([7, 8])))


# ----------------------------------------------------------------------------- loop equivalence
@settings(max_examples=80, deadline=None)
@given(SAMPLES, st.booleans(), st.booleans())
def test_grpo_matches_loop(samples, scale, unbiased):
    r, g = _split(samples)
    got = grpo_advantages(r, g, scale_by_std=scale, unbiased=unbiased, eps=1e-6)
    np.testing.assert_allclose(got, loop_grpo(r, g, scale, unbiased, 1e-6), atol=1e-7, rtol=1e-6)


@settings(max_examples=80, deadline=None)
@given(SAMPLES)
def test_rloo_and_dr_grpo_match_loop(samples):
    r, g = _split(samples)
    np.testing.assert_allclose(rloo_advantages(r, g), loop_rloo(r, g), atol=1e-9)
    np.testing.assert_allclose(dr_grpo_advantages(r, g), loop_grpo(r, g, scale=False), atol=1e-9)
    np.testing.assert_allclose(public_baseline_advantages(r, g), loop_grpo(r, g, scale=False), atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(SAMPLES, st.booleans())
def test_ngrpo_matches_loop(samples, unbiased):
    r, g = _split(samples)
    r_max = float(r.max()) + 1.0
    np.testing.assert_allclose(
        ngrpo_advantages(r, g, r_max, unbiased=unbiased),
        loop_ngrpo(r, g, r_max, unbiased),
        atol=1e-7,
        rtol=1e-6,
    )


@settings(max_examples=80, deadline=None)
@given(SAMPLES)
def test_mc_grpo_matches_loop(samples):
    r, g = _split(samples)
    adv, keep = mc_grpo_advantages(r, g)
    ref_adv, ref_keep = loop_mc_grpo(r, g)
    np.testing.assert_allclose(adv, ref_adv, atol=1e-9)
    assert keep.tolist() == ref_keep.tolist()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(REWARD, min_size=1, max_size=6), min_size=1, max_size=5), st.sampled_from([1.0, 0.9])
)
def test_reinforce_pp_matches_loop(rows, gamma):
    b, t = len(rows), max(len(x) for x in rows)
    tok = np.zeros((b, t))
    mask = np.zeros((b, t), dtype=bool)
    for i, x in enumerate(rows):
        tok[i, : len(x)] = x
        mask[i, : len(x)] = True
    ref = []
    for x in rows:
        g, running = [], 0.0
        for v in reversed(x):
            running = v + gamma * running
            g.append(running)
        ref.extend(reversed(g))
    mean = sum(ref) / len(ref)
    var = sum((v - mean) ** 2 for v in ref) / max(len(ref) - 1, 1)  # unbiased, as verl
    var = var if len(ref) > 1 else 0.0
    expected = [(v - mean) / np.sqrt(var + 1e-8) for v in ref]
    got = reinforce_pp_advantages(tok, mask, gamma=gamma, eps=1e-8)
    np.testing.assert_allclose(got[mask], expected, atol=1e-6, rtol=1e-6)
    assert np.all(got[~mask] == 0)


# ----------------------------------------------------------------------------- properties
RULES = {
    "grpo": lambda r, g: grpo_advantages(r, g),
    "grpo_biased": lambda r, g: grpo_advantages(r, g, unbiased=False, eps=0.0),
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "mc_grpo": lambda r, g: mc_grpo_advantages(r, g)[0],
    "mc_grpo_std": lambda r, g: mc_grpo_advantages(r, g, scale_by_std=True, eps=0.0)[0],
    "advevo": public_baseline_advantages,
    "reinforce_pp_baseline": lambda r, g: reinforce_pp_baseline_advantages(r, g),
}


@pytest.mark.parametrize("name", sorted(RULES))
@settings(max_examples=30, deadline=None)
@given(samples=SAMPLES, rnd=st.randoms(use_true_random=False))
def test_permuting_samples_permutes_advantages(name, samples, rnd):
    r, g = _split(samples)
    # make rewards distinct so the MC-GRPO pivot (ties broken by index) is well defined under permutation
    r = r + np.arange(len(r)) * 1e-3
    perm = list(range(len(r)))
    rnd.shuffle(perm)
    a = RULES[name](r, g)
    b = RULES[name](r[perm], g[perm])
    np.testing.assert_allclose(b, a[perm], atol=1e-9)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("value", [0.0, 0.1, 1.0, -3.7])
def test_all_equal_group_gives_zero_without_nan(name, value):
    r = np.full(5, value)
    adv = RULES[name](r, np.full(5, 11))
    assert np.all(adv == 0.0), adv


@pytest.mark.parametrize("name", sorted(RULES))
def test_group_of_one_gives_zero(name):
    adv = RULES[name](np.array([0.3, 5.0, 1.0]), np.array([1, 2, 3]))
    assert np.all(adv == 0.0), adv


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_reward_is_rejected_naming_the_sample(name, bad):
    with pytest.raises(ValueError, match=f"index 2 is {float(bad)};") as err:
        RULES[name](np.array([0.0, 1.0, bad]), np.array([0, 0, 0]))
    assert "np." not in str(err.value)  # plain numbers (nan, inf), not numpy reprs


def test_ngrpo_properties():
    # all-equal at r_max gives 0; a lone wrong sample is compared with the virtual r_max sample
    assert np.all(ngrpo_advantages(np.ones(4), np.zeros(4, np.int64), 1.0) == 0.0)
    # [0] + virtual 1: mean 0.5, unbiased std 0.7071 -> -0.7071
    np.testing.assert_allclose(ngrpo_advantages(np.array([0.0]), np.array([3]), 1.0, eps=0.0), [-1 / S2])
    with pytest.raises(ValueError, match="index 1"):
        ngrpo_advantages(np.array([0.0, np.nan]), np.array([0, 0]), 1.0)


@settings(max_examples=60, deadline=None)
@given(SAMPLES, st.lists(st.integers(1, 5), min_size=24, max_size=24))
def test_reinforce_pp_baseline_matches_loop(samples, lengths):
    r, g = _split(samples)
    w = np.array(lengths[: len(r)], dtype=np.float64)
    centred = loop_grpo(r, g, scale=False)
    tokens = [c for c, k in zip(centred, w) for _ in range(int(k))]  # whiten every token of the batch
    mean = sum(tokens) / len(tokens)
    var = sum((x - mean) ** 2 for x in tokens) / (len(tokens) - 1) if len(tokens) > 1 else 0.0
    expected = (centred - mean) / np.sqrt(var + 1e-8)
    np.testing.assert_allclose(
        reinforce_pp_baseline_advantages(r, g, weights=w), expected, atol=1e-6, rtol=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.0, 1.0, 0.5])), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([None, 0.0, 0.01, 0.5]),
)
def test_spo_tracker_matches_per_prompt_loop(batches, kl):
    tr = SPOValueTracker()
    ab: dict[int, list[float]] = {}
    n0 = 1 / (1 - 0.96)
    rho = 0.96 if kl is None else min(max(2 ** (-kl / 0.06), 0.875), 0.96)
    for batch in batches:
        keys = np.array([k for k, _ in batch], dtype=np.int64)
        rewards = np.array([v for _, v in batch])
        before = tr.values(keys)
        for k, v in zip(keys.tolist(), before):
            a, b = ab.get(k, [0.5 * n0, 0.5 * n0])
            assert v == pytest.approx(a / (a + b))  # every sample sees the pre-update value
        tr.update(keys, rewards, kl)
        for k in set(keys.tolist()):
            a, b = ab.get(k, [0.5 * n0, 0.5 * n0])
            rs = [v for kk, v in batch if kk == k]
            ab[k] = [rho * a + sum(rs), rho * b + sum(1 - x for x in rs)]
    ks = np.array(sorted(ab))
    np.testing.assert_allclose(tr.values(ks), [ab[k][0] / sum(ab[k]) for k in ks.tolist()])
