"""Elo ratings as a Bradley–Terry fit of a win/draw/loss table, with bootstrap confidence intervals.

Bradley & Terry 1952: P(i beats j) = p_i / (p_i + p_j). On the Elo scale e_i = 400·log10(p_i),
so P(i beats j) = 1 / (1 + 10^((e_j − e_i)/400)). A draw counts as half a win for each side (the
usual convention of BayesElo / FIDE scores). The maximum-likelihood strengths are found with
Hunter's (2004) minorization–maximization update

    p_i ← W_i / Σ_{j≠i} N_ij / (p_i + p_j),

with W_i the total score of i and N_ij the games between i and j. The MLE exists only if the
"scored against" graph is strongly connected (Zermelo 1929, Ford 1957); ``prior_draws`` adds that
many virtual drawn games to every pair, which always makes it exist and shrinks small samples.

Tables are ``wins[i, j]`` = games i won against j and ``draws[i, j]`` (symmetric); shapes are
``(A, A)`` or, for vectorised bootstrap fits, ``(..., A, A)``.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

ELO_SCALE = 400.0  # Elo points per factor 10 in strength


def elo_win_probability(elo_i: float, elo_j: float) -> float:
    """Expected score of i against j: 1 / (1 + 10^((e_j − e_i)/400)) (Elo 1978; Bradley–Terry)."""
    return 1.0 / (1.0 + 10.0 ** ((elo_j - elo_i) / ELO_SCALE))


def _check_table(wins: np.ndarray, draws: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    wins = np.asarray(wins, dtype=np.float64)
    if wins.ndim < 2 or wins.shape[-1] != wins.shape[-2]:
        raise ValueError(f"wins must be a square (..., A, A) table, got shape {wins.shape}")
    draws = np.zeros_like(wins) if draws is None else np.asarray(draws, dtype=np.float64)
    if draws.shape != wins.shape:
        raise ValueError(f"draws shape {draws.shape} must equal wins shape {wins.shape}")
    if (wins < 0).any() or (draws < 0).any():
        raise ValueError("wins and draws must be non-negative counts")
    if not np.allclose(draws, np.swapaxes(draws, -1, -2)):
        raise ValueError("draws must be symmetric: draws[i, j] == draws[j, i]")
    return wins, draws


def _scores(wins: np.ndarray, draws: np.ndarray, prior_draws: float) -> np.ndarray:
    """Score matrix S[i, j] = wins + draws/2 + prior/2 off the diagonal; N = S + S^T."""
    A = wins.shape[-1]
    off = 1.0 - np.eye(A)
    return (wins + 0.5 * draws + 0.5 * prior_draws) * off


def _strongly_connected(S: np.ndarray) -> bool:
    """Is every player reachable from every other along 'i scored against j' edges? S: (A, A)."""
    A = S.shape[0]
    reach = (S > 0) | np.eye(A, dtype=bool)
    for k in range(A):  # Warshall transitive closure
        reach = reach | (reach[:, k : k + 1] & reach[k : k + 1, :])
    return bool(reach.all())


def _mm_log_strengths(S: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Hunter's MM iteration on (..., A, A) scores; returns natural-log strengths with mean 0."""
    N = S + np.swapaxes(S, -1, -2)  # (..., A, A) games per pair
    W = S.sum(-1)  # (..., A) total score
    logp = np.zeros(S.shape[:-1])
    for _ in range(max_iter):
        p = np.exp(logp)
        denom = (N / (p[..., :, None] + p[..., None, :])).sum(-1)
        with np.errstate(divide="ignore"):
            new = np.log(np.maximum(W, 1e-300)) - np.log(denom)
        new -= new.mean(-1, keepdims=True)
        delta = np.abs(new - logp).max()
        logp = new
        if delta < tol:
            return logp
    logger.warning(
        "Bradley-Terry MM did not reach tol %.1e in %d iterations (last step %.2e)", tol, max_iter, delta
    )
    return logp


def _to_elo(logp: np.ndarray, base: float, anchor: int | None) -> np.ndarray:
    elo = ELO_SCALE * logp / np.log(10.0)
    ref = elo.mean(-1, keepdims=True) if anchor is None else elo[..., anchor : anchor + 1]
    return elo - ref + base


def fit_bradley_terry(
    wins: np.ndarray,
    draws: np.ndarray | None = None,
    prior_draws: float = 0.0,
    base: float = 1000.0,
    anchor: int | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> np.ndarray:
    """Elo ratings (A,) maximising the Bradley–Terry likelihood of the table (Hunter 2004 MM).

    Draws are half a win each; ``prior_draws`` virtual draws are added to every pair. Ratings are
    centred so their mean is ``base``, or so that player ``anchor`` sits at ``base`` (e.g. random = 0).
    Example: 3 wins and 1 loss between two players give p_0/p_1 = 3, an Elo gap of 400·log10 3 ≈ 190.8.
    Raises ``ValueError`` when the MLE does not exist (someone won or lost everything) and
    ``prior_draws`` is 0.
    """
    wins, draws = _check_table(wins, draws)
    if wins.ndim != 2:
        raise ValueError(f"fit_bradley_terry takes one (A, A) table, got shape {wins.shape}")
    if prior_draws < 0:
        raise ValueError(f"prior_draws must be >= 0, got {prior_draws}")
    A = wins.shape[0]
    if anchor is not None and not 0 <= anchor < A:
        raise ValueError(f"anchor must be a player index in [0, {A}), got {anchor}")
    if A == 1:
        return np.array([base])
    S = _scores(wins, draws, prior_draws)
    if not _strongly_connected(S):
        raise ValueError(
            "Bradley-Terry MLE does not exist: some players won (or lost) every game against the rest "
            f"(scores {S.sum(1).tolist()}); set prior_draws > 0 (e.g. 1) or play more games"
        )
    return _to_elo(_mm_log_strengths(S, max_iter, tol), base, anchor)


def bootstrap_ratings(
    wins: np.ndarray,
    draws: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    prior_draws: float = 1.0,
    base: float = 1000.0,
    anchor: int | None = None,
    max_iter: int = 10_000,
    tol: float = 1e-8,
) -> np.ndarray:
    """Elo ratings of ``n_boot`` resampled tables, (n_boot, A).

    Non-parametric bootstrap of games within each pairing: the n_ij games of pair (i, j) are redrawn
    with replacement, i.e. (wins_ij, draws_ij, wins_ji) ~ Multinomial(n_ij, observed frequencies);
    each resample is refitted (all at once, vectorised over the resamples).
    """
    wins, draws = _check_table(wins, draws)
    if prior_draws <= 0:
        raise ValueError(
            f"bootstrap needs prior_draws > 0 (got {prior_draws}): a resample can make a player win or lose "
            "every game, where the Bradley-Terry MLE does not exist; use e.g. prior_draws=1"
        )
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    A = wins.shape[0]
    rng = np.random.default_rng(seed)
    bw = np.zeros((n_boot, A, A))
    bd = np.zeros((n_boot, A, A))
    for i in range(A):
        for j in range(i + 1, A):
            counts = np.array([wins[i, j], draws[i, j], wins[j, i]])
            n = int(round(counts.sum()))
            if n == 0:
                continue
            draw = rng.multinomial(n, counts / counts.sum(), size=n_boot)  # (n_boot, 3)
            bw[:, i, j], bd[:, i, j], bw[:, j, i] = draw[:, 0], draw[:, 1], draw[:, 2]
            bd[:, j, i] = draw[:, 1]
    S = _scores(bw, bd, prior_draws)
    return _to_elo(_mm_log_strengths(S, max_iter, tol), base, anchor)


def bootstrap_ci(
    wins: np.ndarray,
    draws: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    prior_draws: float = 1.0,
    base: float = 1000.0,
    anchor: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap (1 − alpha) confidence interval per player: (lo (A,), hi (A,))."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    samples = bootstrap_ratings(wins, draws, n_boot, seed, prior_draws, base, anchor)
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi
