"""Tests for marl.credit.groups: group codes, segment statistics, sequence sums."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.credit.groups import (
    check_finite,
    discounted_prefix_sum_exclusive,
    discounted_suffix_sum,
    group_codes,
    group_deviation,
    group_median,
    group_std,
    segment_rank,
    whiten,
)

IDS = [-(10**12), -3, 0, 7, 10**9 + 7, 2**40]


def _same_partition(codes: np.ndarray, ids: list) -> bool:
    n = len(ids)
    return all((codes[i] == codes[j]) == (ids[i] == ids[j]) for i in range(n) for j in range(n))


def test_group_codes_sparse_ids_partition_like_the_ids():
    ids = np.array([10**15, -5, 10**15, 3, -5])  # range far wider than N: compacted with np.unique
    codes, k = group_codes(ids)
    assert codes.min() >= 0 and codes.max() < k
    assert _same_partition(codes, ids.tolist())


def test_group_codes_composite_key():
    prompt = np.array([0, 0, 0, 1])
    agent = np.array([2, 5, 2, 2])
    codes, _ = group_codes((prompt, agent))
    # (0,2) (0,5) (0,2) (1,2): samples 0 and 2 share a group, the others are alone
    assert codes[0] == codes[2]
    assert len({codes[0], codes[1], codes[3]}) == 3


def test_group_codes_rejects_float_ids_and_length_mismatch():
    with pytest.raises(TypeError, match="integers"):
        group_codes(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="length"):
        group_codes((np.array([0, 1]), np.array([0, 1, 2])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)), min_size=1, max_size=30))
def test_group_codes_composite_matches_tuple_equality(pairs):
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    codes, k = group_codes((a, b))
    assert codes.max() < k
    assert _same_partition(codes, pairs)


def test_group_deviation_all_equal_is_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in floating point; the shift by a group member makes the deviation exactly 0
    dev, n = group_deviation(np.array([0.1, 0.1, 0.1]), np.zeros(3, np.int64), 1)
    assert np.all(dev == 0.0)
    assert n.tolist() == [3, 3, 3]


def test_group_std_hand_values():
    # group 0: [1, 3] -> deviations [-1, 1]; unbiased var = 2/1 -> std sqrt(2); biased var = 1 -> 1
    # group 1: [5] alone -> std 0 either way
    codes = np.array([0, 0, 1])
    dev, _ = group_deviation(np.array([1.0, 3.0, 5.0]), codes, 2)
    np.testing.assert_allclose(group_std(dev, codes, 2, unbiased=True), [np.sqrt(2), np.sqrt(2), 0.0])
    np.testing.assert_allclose(group_std(dev, codes, 2, unbiased=False), [1.0, 1.0, 0.0])


def test_group_median_and_pivot():
    # group 0: [0.2, 0.9, 0.5] -> median 0.5, pivot is the sample holding 0.5 (index 2)
    # group 1: [1, 3] (even) -> median 2, no pivot
    # group 2: [4, 4, 4] at indices 5, 6, 7 -> median 4; sorted by (value, index) the middle one is 6
    x = np.array([0.2, 0.9, 0.5, 1.0, 3.0, 4.0, 4.0, 4.0])
    codes = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    med, piv = group_median(x, codes)
    np.testing.assert_allclose(med, [0.5, 0.5, 0.5, 2.0, 2.0, 4.0, 4.0, 4.0])
    assert np.flatnonzero(piv).tolist() == [2, 6]
    # a tie-break key (e.g. node ids) decides instead of the index: ids [.., 30, 20, 10] -> middle is id 20
    _, piv = group_median(x, codes, tie_break=np.array([0, 1, 2, 3, 4, 30, 20, 10]))
    assert np.flatnonzero(piv).tolist() == [2, 6]
    _, piv = group_median(x[5:], codes[5:], tie_break=np.array([5, 30, 1]))
    assert np.flatnonzero(piv).tolist() == [0]  # ids sorted 1, 5, 30 -> middle id 5 -> position 0


def test_whiten_hand_values():
    x = np.array([1.0, 2.0, 3.0, 6.0])
    # mean 3, squared deviations 4 + 1 + 0 + 9 = 14: unbiased var 14 / 3 (verl), biased 14 / 4 (OpenRLHF)
    np.testing.assert_allclose(whiten(x, eps=0.0), (x - 3) / np.sqrt(14 / 3))
    np.testing.assert_allclose(whiten(x, eps=0.0, unbiased=False), (x - 3) / np.sqrt(3.5))
    # weights [1, 1, 1, 3] = token counts, W = 6: mean (1+2+3+18)/6 = 4, sum w*dev^2 = 9+4+1+3*4 = 26
    w = np.array([1, 1, 1, 3])
    np.testing.assert_allclose(whiten(x, weights=w, eps=0.0), (x - 4) / np.sqrt(26 / 5))
    np.testing.assert_allclose(whiten(x, weights=w, eps=0.0, unbiased=False), (x - 4) / np.sqrt(26 / 6))
    # one token: the unbiased variance is taken as 0, so the single deviation 0 stays 0
    np.testing.assert_allclose(whiten(np.array([5.0]), eps=1e-8), [0.0])


def test_whiten_matches_verl_masked_whiten_loop():
    # verl's masked_whiten: (x - mean) * rsqrt(var * n / (n - 1) + 1e-8) over the masked tokens
    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 50):
        x = rng.normal(size=n)
        mean = x.sum() / n
        var = ((x - mean) ** 2).sum() / n * n / (n - 1)
        np.testing.assert_allclose(whiten(x), (x - mean) / np.sqrt(var + 1e-8), rtol=1e-12)


def test_discounted_sums_hand_values_with_shuffled_order():
    # one sequence given out of order: by turn [0, 5, 9] the values are [1, 2, 4]; gamma = 0.5
    # suffix: y(9) = 4, y(5) = 2 + 0.5*4 = 4, y(0) = 1 + 0.5*4 = 3
    # exclusive prefix: S(0) = 0, S(5) = 0.5*(0 + 1) = 0.5, S(9) = 0.5*(0.5 + 2) = 1.25
    vals = np.array([4.0, 1.0, 2.0])
    turn = np.array([9, 0, 5])
    codes = np.zeros(3, np.int64)
    np.testing.assert_allclose(discounted_suffix_sum(vals, codes, turn, gamma=0.5), [4.0, 3.0, 4.0])
    np.testing.assert_allclose(
        discounted_prefix_sum_exclusive(vals, codes, turn, gamma=0.5), [1.25, 0.0, 0.5]
    )
    assert segment_rank(codes, turn).tolist() == [2, 0, 1]


def test_duplicate_turn_inside_a_sequence_is_an_error():
    with pytest.raises(ValueError, match="same turn order"):
        discounted_suffix_sum(np.ones(2), np.zeros(2, np.int64), np.array([3, 3]), gamma=1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(-5, 5, allow_nan=False)),
        min_size=1,
        max_size=25,
    ),
    st.sampled_from([1.0, 0.9, 0.5, 0.0]),
    st.randoms(use_true_random=False),
)
def test_discounted_sums_match_python_loop(items, gamma, rnd):
    seq = np.array([s for s, _ in items], dtype=np.int64)
    x = np.array([v for _, v in items])
    turn = np.arange(len(items)) * 3 + 1
    perm = list(range(len(items)))
    rnd.shuffle(perm)  # present samples in random list order; the turn decides the sequence order
    seq, x, turn = seq[perm], x[perm], turn[perm]
    suffix = np.zeros(len(x))
    prefix = np.zeros(len(x))
    for i in range(len(x)):
        for j in range(len(x)):
            if seq[j] == seq[i]:
                lag = int(
                    np.sum((seq == seq[i]) & (turn > min(turn[i], turn[j])) & (turn <= max(turn[i], turn[j])))
                )
                if turn[j] >= turn[i]:
                    suffix[i] += gamma**lag * x[j]
                else:
                    prefix[i] += gamma**lag * x[j]
    codes, _ = group_codes(seq)
    np.testing.assert_allclose(discounted_suffix_sum(x, codes, turn, gamma=gamma), suffix, atol=1e-9)
    np.testing.assert_allclose(
        discounted_prefix_sum_exclusive(x, codes, turn, gamma=gamma), prefix, atol=1e-9
    )


def test_check_finite_names_the_node():
    with pytest.raises(ValueError, match="node 42"):
        check_finite(np.array([0.0, np.nan]), "reward", node_ids=np.array([7, 42]))
    with pytest.raises(ValueError, match="index 1"):
        check_finite(np.array([0.0, np.inf]), "reward")
