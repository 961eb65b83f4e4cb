"""Per-agent (or per-role) advantage normalisers, batch and running.

Agents with different reward scales should not share one normaliser: MARS normalises advantages
per player and Dr. MAS (agent-wise normalisation for multi-agent LLM RL) per agent. A normaliser
maps advantages ``(N,)`` and integer keys ``(N,)`` (the agent or role of each sample) to
normalised advantages ``(N,)``. Running normalisers keep per-key statistics across batches and
save/restore them with checkpoints (``state_dict`` / ``load_state_dict``, plain numpy).

Shape legend: ``N`` samples, ``A`` agents (keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from marl.credit.groups import (
    check_finite,
    group_codes,
    group_deviation,
    group_std,
    safe_divide,
    unique_sorted,
)


class Normalizer(Protocol):
    """Normalises advantages per key; ``key_field`` names the TurnTree field giving the keys."""

    key_field: str | None

    def __call__(self, advantages: np.ndarray, keys: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, d: dict) -> None: ...


def batch_normalize_per_key(
    advantages: np.ndarray, keys: np.ndarray, *, unbiased: bool = False, eps: float = 1e-6
) -> np.ndarray:
    """Per-key batch normalisation ``(A - mean_a) / (std_a + eps)`` over the samples of key ``a``
    (MARS agent-specific normalisation; Dr. MAS per-agent normalisation). Biased std by default
    (a batch statistic, as in MARS); a key with one sample or all-equal advantages gives 0.
    """
    a = np.asarray(advantages, dtype=np.float64)
    check_finite(a, "advantage")
    codes, k = group_codes(np.asarray(keys), a.shape[0])
    dev, _ = group_deviation(a, codes, k)
    return safe_divide(dev, group_std(dev, codes, k, unbiased=unbiased), eps)


class IdentityNormalizer:
    """No normalisation."""

    key_field: str | None = None

    def __call__(self, advantages: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return np.asarray(advantages, dtype=np.float64)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        return None


class BatchNormalizer:
    """Stateless per-key batch normalisation (see ``batch_normalize_per_key``)."""

    def __init__(self, key_field: str = "agent", *, eps: float = 1e-6, unbiased: bool = False) -> None:
        self.key_field = key_field
        self.eps = eps
        self.unbiased = unbiased

    def __call__(self, advantages: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return batch_normalize_per_key(advantages, keys, unbiased=self.unbiased, eps=self.eps)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        return None


class RunningNormalizer:
    """Per-key running mean/std of advantages (Chan et al. parallel update, exact over all batches).

    Each call first folds the batch into the per-key statistics, then returns
    ``(A - mean_a) / (std_a + eps)`` (``center=False`` only divides). Keys are int64 (agent or role
    index); the statistics survive checkpoints via ``state_dict``.
    """

    def __init__(self, key_field: str = "agent", *, eps: float = 1e-6, center: bool = True) -> None:
        self.key_field = key_field
        self.eps = eps
        self.center = center
        self.keys = np.zeros(0, np.int64)  # sorted
        self.count = np.zeros(0)
        self.mean = np.zeros(0)
        self.m2 = np.zeros(0)

    def update(self, values: np.ndarray, keys: np.ndarray) -> None:
        """Fold a batch into the statistics (mutates)."""
        x = np.asarray(values, dtype=np.float64)
        check_finite(x, "advantage")
        k = np.asarray(keys, dtype=np.int64)
        if k.shape != x.shape:
            raise ValueError(f"keys shape {k.shape} != values shape {x.shape}")
        new = unique_sorted(k)
        new = new[~np.isin(new, self.keys, assume_unique=True)]
        if new.size:
            all_keys = np.concatenate([self.keys, new])
            order = np.argsort(all_keys, kind="stable")
            z = np.zeros(new.size)
            self.keys = all_keys[order]
            self.count = np.concatenate([self.count, z])[order]
            self.mean = np.concatenate([self.mean, z])[order]
            self.m2 = np.concatenate([self.m2, z])[order]
        idx = np.searchsorted(self.keys, k)
        m = self.keys.size
        n_b = np.bincount(idx, minlength=m).astype(np.float64)
        dev, _ = group_deviation(x, idx, m)
        mean_b = np.zeros(m)
        mean_b[idx] = x - dev  # the batch mean of each key
        m2_b = np.bincount(idx, weights=dev * dev, minlength=m)
        tot = self.count + n_b
        seen = n_b > 0
        delta = mean_b - self.mean
        safe_tot = np.where(tot > 0, tot, 1.0)
        self.mean = np.where(seen, self.mean + delta * (n_b / safe_tot), self.mean)
        self.m2 = np.where(seen, self.m2 + m2_b + delta * delta * (self.count * n_b / safe_tot), self.m2)
        self.count = tot

    def stats(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Running (mean, std) per key (population std; 0 for an unseen key)."""
        k = np.asarray(keys, dtype=np.int64)
        mean = np.zeros(k.shape)
        var = np.zeros(k.shape)
        if self.keys.size:
            pos = np.clip(np.searchsorted(self.keys, k), 0, self.keys.size - 1)
            hit = self.keys[pos] == k
            mean[hit] = self.mean[pos[hit]]
            var[hit] = self.m2[pos[hit]] / np.maximum(self.count[pos[hit]], 1.0)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def __call__(self, advantages: np.ndarray, keys: np.ndarray) -> np.ndarray:
        a = np.asarray(advantages, dtype=np.float64)
        self.update(a, keys)
        mean, std = self.stats(keys)
        num = a - mean if self.center else a
        return num / (std + self.eps)

    def state_dict(self) -> dict:
        return {
            "keys": self.keys.copy(),
            "count": self.count.copy(),
            "mean": self.mean.copy(),
            "m2": self.m2.copy(),
        }

    def load_state_dict(self, d: dict) -> None:
        self.keys = np.asarray(d["keys"], dtype=np.int64).copy()
        self.count = np.asarray(d["count"], dtype=np.float64).copy()
        self.mean = np.asarray(d["mean"], dtype=np.float64).copy()
        self.m2 = np.asarray(d["m2"], dtype=np.float64).copy()


# name -> factory(eps) ; the key field is part of the name
NORMALIZERS: dict[str, Callable[[float], Normalizer]] = {
    "none": lambda eps: IdentityNormalizer(),
    "batch_per_agent": lambda eps: BatchNormalizer("agent", eps=eps),
    "batch_per_role": lambda eps: BatchNormalizer("role", eps=eps),
    "running_per_agent": lambda eps: RunningNormalizer("agent", eps=eps),
    "running_per_role": lambda eps: RunningNormalizer("role", eps=eps),
}


def make_normalizer(name: str, *, eps: float = 1e-6) -> Normalizer:
    """Build a normaliser by config name; an unknown name lists the valid ones."""
    if name not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {name!r}; valid names: {sorted(NORMALIZERS)}")
    return NORMALIZERS[name](eps)
