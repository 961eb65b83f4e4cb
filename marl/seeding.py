"""Seeds and random-state capture, so the same seed gives the same metrics bit for bit on CPU."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch's global RNG (library code should
    still prefer explicit generators derived with :func:`derive_seed`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the legacy global RNG
    torch.manual_seed(seed)


def derive_seed(seed: int, *names: str | int) -> int:
    """A stable 63-bit seed for a named stream, e.g. ``derive_seed(run_seed, "agent", "small")``."""
    ss = np.random.SeedSequence([int(seed) % 2**63] + [_stable_int(n) for n in names])
    return int(
        ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1, 2**31], dtype=np.uint64)
    )


def _stable_int(x: str | int) -> int:
    if isinstance(x, int):
        return x % 2**32
    h = 2166136261
    for b in str(x).encode():
        h = ((h ^ b) * 16777619) % 2**32
    return h


def global_rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch global RNG states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])


def stable_hash(text: str) -> int:
    """A process-independent int64 hash of ``text`` (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)
