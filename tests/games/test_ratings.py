"""Bradley-Terry Elo with hand-derived values, and the bootstrap."""

import numpy as np
import pytest

from games.ratings import (
    _mm_log_strengths,
    _scores,
    bootstrap_ci,
    bootstrap_ratings,
    elo_win_probability,
    fit_bradley_terry,
)

LOG3 = 400 * np.log10(3)  # 190.848...


def test_elo_win_probability():
    # 400 points = a factor 10 in strength: 10 / (10 + 1)
    assert elo_win_probability(1400, 1000) == pytest.approx(10 / 11)
    assert elo_win_probability(1000, 1000) == 0.5


def test_two_players_three_wins_one_loss():
    # MLE: p0 / (p0 + p1) = 3/4 -> p0 / p1 = 3 -> gap 400·log10(3) ≈ 190.85, centred on 1000
    elo = fit_bradley_terry(np.array([[0, 3], [1, 0]]))
    np.testing.assert_allclose(elo, [1000 + LOG3 / 2, 1000 - LOG3 / 2], atol=1e-6)
    assert elo[0] - elo[1] == pytest.approx(190.8485, abs=1e-4)


def test_draws_count_half_and_prior_adds_virtual_draws():
    # 1 win, 0 losses, 2 draws: scores 1 + 1 = 2 vs 0 + 1 = 1 -> ratio 2 -> 400·log10 2 ≈ 120.41
    elo = fit_bradley_terry(np.array([[0, 1], [0, 0]]), np.array([[0, 2], [2, 0]]))
    assert elo[0] - elo[1] == pytest.approx(400 * np.log10(2), abs=1e-6)
    # 3-1 plus one virtual draw: 3.5 vs 1.5 -> ratio 7/3 -> ≈ 147.19
    elo = fit_bradley_terry(np.array([[0, 3], [1, 0]]), prior_draws=1.0)
    assert elo[0] - elo[1] == pytest.approx(400 * np.log10(7 / 3), abs=1e-6)


def test_three_players_consistent_with_strengths_4_2_1():
    # With p = (4, 2, 1): P(0>1) = 2/3, P(1>2) = 2/3, P(0>2) = 4/5. Data 2-1, 2-1, 4-1 meets the
    # likelihood equations W_i = Σ_j n_ij p_i/(p_i+p_j) exactly (6 = 3·2/3 + 5·4/5; 3 = 1 + 2; 2 = 1 + 1),
    # so the fit is p ∝ (4, 2, 1): gaps of 400·log10 2 ≈ 120.41, the middle player at the mean.
    wins = np.array([[0, 2, 4], [1, 0, 2], [1, 1, 0]])
    elo = fit_bradley_terry(wins)
    g = 400 * np.log10(2)
    np.testing.assert_allclose(elo, [1000 + g, 1000, 1000 - g], atol=1e-6)
    # anchoring the weakest player at 0 shifts everything
    np.testing.assert_allclose(fit_bradley_terry(wins, base=0.0, anchor=2), [2 * g, g, 0.0], atol=1e-6)


def test_mle_missing_without_prior_names_the_fix():
    with pytest.raises(ValueError, match="prior_draws > 0"):
        fit_bradley_terry(np.array([[0, 5], [0, 0]]))
    # a cycle 0 > 1 > 2 > 0 is strongly connected: the MLE exists (all equal by symmetry)
    np.testing.assert_allclose(fit_bradley_terry(np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])), [1000] * 3)


def test_table_validation():
    with pytest.raises(ValueError, match="square"):
        fit_bradley_terry(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        fit_bradley_terry(np.zeros((2, 2)), np.array([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="prior_draws > 0"):
        bootstrap_ci(np.array([[0, 3], [1, 0]]), prior_draws=0.0)


def test_vectorised_fit_matches_one_at_a_time():
    rng = np.random.default_rng(0)
    wins = rng.integers(0, 6, size=(7, 4, 4)).astype(float)
    S = _scores(wins, np.zeros_like(wins), 1.0)
    batched = _mm_log_strengths(S, 10_000, 1e-12)
    for k in range(7):
        single = fit_bradley_terry(wins[k], prior_draws=1.0, base=0.0)
        np.testing.assert_allclose(400 * batched[k] / np.log(10), single, atol=1e-6)


def test_bootstrap_reproducible_and_brackets_the_fit():
    wins = np.array([[0, 14, 9], [5, 0, 8], [10, 11, 0]])
    draws = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    a = bootstrap_ratings(wins, draws, n_boot=300, seed=3)
    b = bootstrap_ratings(wins, draws, n_boot=300, seed=3)
    assert a.shape == (300, 3) and np.array_equal(a, b)
    np.testing.assert_allclose(a.mean(1), 1000)  # every resample is centred
    lo, hi = bootstrap_ci(wins, draws, n_boot=300, seed=3)
    fit = fit_bradley_terry(wins, draws, prior_draws=1.0)
    assert np.all(lo < fit) and np.all(fit < hi)


def test_bootstrap_degenerate_when_no_variation():
    # every game won by player 0: each resample is the same table, so the interval is a point
    lo, hi = bootstrap_ci(np.array([[0, 10], [0, 0]]), n_boot=50)
    np.testing.assert_allclose(lo, hi)
    # and equals the fit with one virtual draw: 10.5 vs 0.5 -> gap 400·log10 21 ≈ 528.9
    assert lo[0] - lo[1] == pytest.approx(400 * np.log10(21), abs=1e-4)
