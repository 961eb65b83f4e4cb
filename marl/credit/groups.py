"""Group ids and segment statistics: the vectorised kernels every credit rule is built on.

A *group* is any set of samples that share an id. Ids are integers taken from node fields
(prompt, agent, role, turn, state hash, parent, ...), never from list order: they may be
non-contiguous, unsorted and negative, or a tuple of such arrays forming a composite key.
``group_codes`` turns them into dense codes ``0 <= code < K`` and every statistic below is a
``np.bincount``/sort over those codes, so no Python loop ever runs over samples.

Shape legend: ``N`` samples (nodes), ``K`` groups (codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GroupIds = np.ndarray | Sequence[np.ndarray] | tuple

# Dense bincount is used directly when the id range is at most this multiple of the sample
# count (plus a small constant); wider ranges are ranked by one sort first.
_DENSE_RANGE_FACTOR = 2


def check_finite(values: np.ndarray, name: str = "rewards", node_ids: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` naming the first NaN/inf entry (by node id when ``node_ids`` is given)."""
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        where = f"node {int(np.asarray(node_ids).ravel()[i])}" if node_ids is not None else f"index {i}"
        raise ValueError(
            f"{name} at {where} is {float(values.ravel()[i])}; every sample needs a finite value "
            f"({int(bad.sum())} non-finite in total). Set it (TurnTree.set_reward) or leave the node out."
        )


def _as_int_column(ids: np.ndarray, n: int | None) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"group ids must be 1-D, got shape {a.shape}")
    if a.dtype == bool:
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(
            f"group ids must be integers, got dtype {a.dtype}; build them from integer node fields "
            "(group, agent, role, turn, state_hash, parent, ...)"
        )
    if n is not None and a.shape[0] != n:
        raise ValueError(f"group id column has {a.shape[0]} entries but there are {n} samples")
    return a.astype(np.int64, copy=False)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values via one sort (``np.unique`` takes a slow hash path on numpy 2.x when
    most values are distinct)."""
    s = np.sort(np.asarray(values).reshape(-1))
    if s.size == 0:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _factorize(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank codes of an int64 column by one argsort: equal values share a code."""
    perm = np.argsort(a)
    s = a[perm]
    new = np.empty(s.size, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    ranks = np.cumsum(new) - 1
    codes = np.empty(s.size, dtype=np.int64)
    codes[perm] = ranks
    return codes, int(ranks[-1]) + 1


def _codes_one(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense-ish codes for one int64 column: ``a - min`` when the range is small, else ranks."""
    n = a.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), 0
    lo, hi = int(a.min()), int(a.max())
    span = hi - lo + 1
    if span <= _DENSE_RANGE_FACTOR * n + 1024:
        return a - lo, span
    return _factorize(a)


def group_codes(group_ids: GroupIds, n: int | None = None) -> tuple[np.ndarray, int]:
    """Map group ids (an int array or a tuple of int arrays, a composite key) to codes.

    Returns ``(codes, K)`` with ``codes`` of shape ``(N,)`` in ``[0, K)``; two samples share a code
    iff they share every id column. ``K`` is an upper bound on the number of groups: some codes
    may be unused (their count is 0), which every statistic here tolerates.
    """
    if isinstance(group_ids, np.ndarray) and group_ids.ndim == 1:
        cols = [group_ids]
    elif isinstance(group_ids, (tuple, list)) and len(group_ids) > 0 and np.ndim(group_ids[0]) == 1:
        cols = list(group_ids)
    else:
        cols = [np.asarray(group_ids)]
    cols = [_as_int_column(c, n) for c in cols]
    n0 = cols[0].shape[0]
    for c in cols[1:]:
        if c.shape[0] != n0:
            raise ValueError(f"composite group key columns differ in length: {[len(c) for c in cols]}")
    codes, k = _codes_one(cols[0])
    for c in cols[1:]:
        c_codes, c_k = _codes_one(c)
        if k * c_k >= 2**62:  # re-compact before the mixed-radix product could overflow
            codes, k = _codes_one(codes)
        codes = codes * c_k + c_codes
        k = k * c_k
        if k > _DENSE_RANGE_FACTOR * n0 + 1024:
            codes, k = _codes_one(codes)
    return codes, k


def segment_count(codes: np.ndarray, k: int) -> np.ndarray:
    """Number of samples per code, shape ``(K,)``."""
    return np.bincount(codes, minlength=k)


def segment_sum(values: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Sum of ``values`` per code, shape ``(K,)`` (float64)."""
    return np.bincount(codes, weights=values, minlength=k)


def group_deviation(values: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Deviation from the group mean, ``d_i = x_i - mean_g(i)``, and the group sizes per sample.

    Values are first shifted by one member of their own group, so an all-equal group gives
    deviations that are exactly 0 (never a tiny rounding residue that a small std would blow up),
    and the sums are better conditioned.
    """
    values = np.asarray(values, dtype=np.float64)
    ref = np.zeros(k)
    ref[codes] = values  # any member of the group: last write wins, all are members
    shifted = values - ref[codes]
    counts = np.bincount(codes, minlength=k)
    mean_shifted = np.bincount(codes, weights=shifted, minlength=k) / np.maximum(counts, 1)
    return shifted - mean_shifted[codes], counts[codes]


def group_std(deviation: np.ndarray, codes: np.ndarray, k: int, *, unbiased: bool = True) -> np.ndarray:
    """Per-sample std of its group from deviations: ``sqrt(sum d^2 / (n - ddof))``; 0 when n <= ddof."""
    counts = np.bincount(codes, minlength=k)
    ss = np.bincount(codes, weights=deviation * deviation, minlength=k)
    denom = counts - (1 if unbiased else 0)
    var = np.where(denom > 0, ss / np.maximum(denom, 1), 0.0)
    return np.sqrt(var)[codes]


def safe_divide(numerator: np.ndarray, denominator: np.ndarray, eps: float) -> np.ndarray:
    """``numerator / (denominator + eps)``, and exactly 0 where the numerator is 0 (no 0/0 = NaN)."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    np.divide(numerator, denominator + eps, out=out, where=numerator != 0)
    return out


def whiten(
    values: np.ndarray, *, weights: np.ndarray | None = None, eps: float = 1e-8, unbiased: bool = True
) -> np.ndarray:
    """Batch whitening ``(x - mean) / sqrt(var + eps)`` with the (weighted) variance.

    The masked whitening used by REINFORCE++: with ``weights`` = token counts it equals whitening
    every token of a sequence-constant advantage. ``unbiased`` (verl's ``masked_whiten``, default)
    divides the squared deviations by ``W - 1`` (``W`` = total weight, the token count), else by ``W``
    (OpenRLHF); with ``W <= 1`` the unbiased variance is taken as 0 (one token deviates by 0).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape:
        raise ValueError(f"whiten: weights shape {w.shape} != values shape {x.shape}")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"whiten: total weight is {total}; need at least one weighted entry")
    shifted = x - x.flat[0]
    mean = (w * shifted).sum() / total
    dev = shifted - mean
    ss = (w * dev * dev).sum()
    if unbiased:
        var = ss / (total - 1.0) if total > 1.0 else 0.0
    else:
        var = ss / total
    return dev / np.sqrt(var + eps)


def sort_by_segment(codes: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort samples by (code, order) and rank them inside each segment.

    Returns ``(perm, rank, is_last)`` in *sorted* positions: ``perm`` sorts the samples,
    ``rank[j]`` is the 0-based position of sorted sample ``j`` in its segment and ``is_last[j]``
    says whether it ends its segment. Two samples of one segment with the same ``order`` are an
    error (the sequence would be ambiguous).
    """
    order = np.asarray(order)
    perm = np.lexsort((order, codes))
    sc = codes[perm]
    so = order[perm]
    n = sc.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = sc[1:] != sc[:-1]
    dup = ~new[1:] & (so[1:] == so[:-1])
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        raise ValueError(
            f"samples {int(perm[j])} and {int(perm[j + 1])} are in the same sequence with the same "
            f"turn order {so[j].item()!r}; each sequence (trajectory) needs distinct turn indices"
        )
    starts = np.flatnonzero(new)
    seg_of = np.cumsum(new) - 1
    rank = np.arange(n) - starts[seg_of]
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = new[1:]
    return perm, rank, is_last


def _levels(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(rank))])
    return by_rank, bounds


def discounted_suffix_sum(
    values: np.ndarray, codes: np.ndarray, order: np.ndarray, *, gamma: float
) -> np.ndarray:
    """Reward-to-go inside each sequence: ``y_k = sum_{j >= k} gamma^(j-k) x_j``.

    Sequences are the segments of ``codes``, ordered by ``order``. One vectorised step per
    position (the loop runs over the longest sequence's length, never over samples), with the
    same arithmetic as the textbook backward recursion ``y_k = x_k + gamma * y_{k+1}``.
    """
    x = np.asarray(values, dtype=np.float64)
    perm, rank, is_last = sort_by_segment(codes, order)
    y = x[perm].copy()
    if y.size:
        by_rank, bounds = _levels(rank)
        for r in range(len(bounds) - 2, -1, -1):
            pos = by_rank[bounds[r] : bounds[r + 1]]
            pos = pos[~is_last[pos]]
            y[pos] += gamma * y[pos + 1]
    out = np.empty_like(y)
    out[perm] = y
    return out


def discounted_prefix_sum_exclusive(
    values: np.ndarray, codes: np.ndarray, order: np.ndarray, *, gamma: float
) -> np.ndarray:
    """Discounted sum of the *earlier* entries of each sequence: ``S_t = sum_{k<t} gamma^(t-k) x_k``.

    Forward recursion ``S_0 = 0``, ``S_t = gamma * (S_{t-1} + x_{t-1})``, one vectorised step per
    position.
    """
    x = np.asarray(values, dtype=np.float64)
    perm, rank, _ = sort_by_segment(codes, order)
    xs = x[perm]
    s = np.zeros_like(xs)
    if s.size:
        by_rank, bounds = _levels(rank)
        for r in range(1, len(bounds) - 1):
            pos = by_rank[bounds[r] : bounds[r + 1]]
            s[pos] = gamma * (s[pos - 1] + xs[pos - 1])
    out = np.empty_like(s)
    out[perm] = s
    return out


def segment_rank(codes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """0-based position of each sample inside its sequence (segment of ``codes`` sorted by ``order``)."""
    perm, rank, _ = sort_by_segment(codes, order)
    out = np.empty_like(rank)
    out[perm] = rank
    return out


def group_median(
    values: np.ndarray, codes: np.ndarray, tie_break: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample median of its group and the pivot mask.

    The median of an odd group is its middle value and the *pivot* is the member at the middle
    position when the group is sorted by (value, ``tie_break``) (``tie_break`` defaults to the
    sample index; pass node ids to make the choice independent of list order). An even group's
    median is the mean of its two middle values and it has no pivot.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    tb = np.arange(n) if tie_break is None else np.asarray(tie_break)
    perm = np.lexsort((tb, x, codes))
    sc = codes[perm]
    new = np.ones(n, dtype=bool)
    new[1:] = sc[1:] != sc[:-1]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    lo = starts + (sizes - 1) // 2
    hi = starts + sizes // 2
    xs = x[perm]
    med_seg = 0.5 * (xs[lo] + xs[hi])
    seg_of = np.cumsum(new) - 1
    median = np.empty(n)
    median[perm] = med_seg[seg_of]
    pivot = np.zeros(n, dtype=bool)
    odd = sizes % 2 == 1
    pivot[perm[lo[odd]]] = True
    return median, pivot
