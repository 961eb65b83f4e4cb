"""Tests for marl.credit.normalizers: per-agent batch and running normalisation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.credit.normalizers import (
    NORMALIZERS,
    BatchNormalizer,
    RunningNormalizer,
    batch_normalize_per_key,
    make_normalizer,
)


def test_batch_normalize_per_key_hand_values():
    # agent 3: [1, 3] -> mean 2, biased std 1 -> [-1, 1]; agent 8: [10, 10, 16] -> mean 12,
    # biased std sqrt((4 + 4 + 16)/3) = sqrt(8) -> [-2, -2, 4]/2.8284; agent 5 alone -> 0
    a = np.array([1.0, 10.0, 3.0, 10.0, 16.0, 7.0])
    keys = np.array([3, 8, 3, 8, 8, 5])
    out = batch_normalize_per_key(a, keys, eps=0.0)
    s8 = np.sqrt(8.0)
    np.testing.assert_allclose(out, [-1.0, -2 / s8, 1.0, -2 / s8, 4 / s8, 0.0])
    # agents never mix: scaling one agent's advantages leaves the other's output unchanged
    b = a.copy()
    b[keys == 8] *= 100
    np.testing.assert_allclose(batch_normalize_per_key(b, keys, eps=0.0)[keys == 3], out[keys == 3])


def test_batch_normalizer_all_equal_gives_zero():
    assert np.all(BatchNormalizer()(np.full(4, 0.1), np.zeros(4, np.int64)) == 0.0)


def test_running_normalizer_two_batches_hand_values():
    rn = RunningNormalizer("agent", eps=0.0)
    # batch 1, agent 0: [1, 3] -> mean 2, population var 1 -> [-1, 1]
    np.testing.assert_allclose(rn(np.array([1.0, 3.0]), np.array([0, 0])), [-1.0, 1.0])
    # batch 2, agent 0: [5] -> stats over [1, 3, 5]: mean 3, var 8/3 -> (5 - 3)/1.63299
    np.testing.assert_allclose(rn(np.array([5.0]), np.array([0])), [2 / np.sqrt(8 / 3)])
    mean, std = rn.stats(np.array([0, 9]))
    np.testing.assert_allclose(mean, [3.0, 0.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), 0.0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.floats(-50, 50, allow_nan=False)), min_size=1, max_size=10),
        min_size=1,
        max_size=5,
    )
)
def test_running_stats_equal_full_history_stats(batches):
    rn = RunningNormalizer("role")
    seen: dict[int, list[float]] = {}
    for batch in batches:
        keys = np.array([k for k, _ in batch], dtype=np.int64)
        vals = np.array([v for _, v in batch])
        rn.update(vals, keys)
        for k, v in batch:
            seen.setdefault(k, []).append(v)
    ks = np.array(sorted(seen))
    mean, std = rn.stats(ks)
    np.testing.assert_allclose(mean, [np.mean(seen[k]) for k in ks], atol=1e-9)
    np.testing.assert_allclose(std, [np.std(seen[k]) for k in ks], atol=1e-7)


def test_running_normalizer_state_round_trip():
    rn = RunningNormalizer("agent")
    rn.update(np.array([1.0, 2.0, 4.0]), np.array([0, 1, 1]))
    other = RunningNormalizer("agent")
    other.load_state_dict(rn.state_dict())
    a = np.array([3.0, -1.0])
    k = np.array([1, 0])
    np.testing.assert_allclose(other(a, k), rn(a, k))


def test_registry_of_normalizers():
    assert set(NORMALIZERS) >= {"none", "batch_per_agent", "running_per_agent", "running_per_role"}
    assert make_normalizer("running_per_role").key_field == "role"
    assert make_normalizer("none").key_field is None
    with pytest.raises(ValueError, match="valid names"):
        make_normalizer("layer_norm")


def test_non_finite_advantage_rejected():
    with pytest.raises(ValueError, match="index 1"):
        batch_normalize_per_key(np.array([0.0, np.nan]), np.array([0, 0]))
