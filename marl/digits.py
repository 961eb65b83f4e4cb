"""A verifiable single-turn task shipped with the core: operations on short digit lists.

A prompt is ``"<op> d1 d2 ... dn="`` (for example ``"max 3 8 1="``) and the answer is a
digit string (``"8"``). Every digit tuple of length ``n`` is one problem; a seeded
permutation splits the ``10**n`` tuples into train and held-out prompts, so held-out
success measures generalisation, not memory. Rewards are exact matches of the
completion (decoded up to its stop token, surrounding spaces stripped) with the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

OPS: dict[str, Callable[[Sequence[int]], str]] = {
    "first": lambda d: str(d[0]),
    "last": lambda d: str(d[-1]),
    "max": lambda d: str(max(d)),
    "min": lambda d: str(min(d)),
    "sum": lambda d: str(sum(d) % 10),
    "copy": lambda d: "".join(map(str, d)),
    "reverse": lambda d: "".join(map(str, reversed(d))),
    "sort": lambda d: "".join(map(str, sorted(d))),
}


@dataclass
class DigitTaskConfig:
    """Which digit task to train on and how it is split."""

    ops: list[str] = field(default_factory=lambda: ["max"])
    """Operations mixed in the task (keys of marl.digits.OPS)."""
    num_digits: int = 3
    """Digits per prompt; the problem set is every tuple of this many digits."""
    heldout_fraction: float = 0.2
    """Fraction of tuples (per op) kept out of training for evaluation."""
    split_seed: int = 1234
    """Seed of the train/held-out split (independent of the run seed)."""
    constrain: bool = True
    """Sample answers only from the answer alphabet: digits for the answer's length, then a stop token."""

    def validate(self) -> None:
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops {list(self.ops)}: each must be one of {', '.join(OPS)}")
        if not 1 <= self.num_digits <= 6:
            raise ValueError(f"num_digits ({self.num_digits}) must be in 1..6")
        if self.constrain and len({answer_length(o, self.num_digits) for o in self.ops}) > 1:
            raise ValueError(
                f"constrain=true needs ops whose answers have one length; {list(self.ops)} mix lengths "
                "(split them into runs or set constrain=false)"
            )
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction ({self.heldout_fraction}) must be in (0, 1)")


@dataclass(frozen=True)
class Problem:
    pid: int  # unique id over (op, tuple)
    prompt: str
    answer: str
    op: str


def answer_length(op: str, num_digits: int) -> int:
    return num_digits if op in ("copy", "reverse", "sort") else 1


def answer_format_allowed_ids(
    digit_ids: list[int], stop_id: int, length: int, completion_len: int
) -> np.ndarray:
    """``(Tc, 10)`` token ids the answer-format processor allowed at each completion position
    (-1 padded), for scoring the samples under the distribution they were drawn from."""
    allowed = np.full((completion_len, len(digit_ids)), -1, dtype=np.int64)
    allowed[: min(length, completion_len)] = digit_ids
    if completion_len > length:
        allowed[length:, 0] = stop_id
    return allowed


def answer_format_processor(digit_ids: list[int], stop_id: int, length: int):
    """Logits processor forcing ``length`` digits then ``stop_id`` (the same format for every row).

    Like a legal-move mask in games: the format is fixed, the model chooses the content.
    Allowed tokens keep their logit, all others get ``-inf``.
    """
    digit_ids_t = torch.as_tensor(digit_ids, dtype=torch.long)

    def process(step: int, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        masked = torch.full_like(logits, float("-inf"))
        if step < length:
            masked[:, digit_ids_t] = logits[:, digit_ids_t]
        else:
            masked[:, stop_id] = logits[:, stop_id]
        return masked

    return process


class DigitTask:
    """The problem set with its train/held-out split."""

    def __init__(self, cfg: DigitTaskConfig):
        cfg.validate()
        self.cfg = cfg
        n = cfg.num_digits
        tuples = np.array(np.unravel_index(np.arange(10**n), (10,) * n)).T  # (10^n, n)
        perm = np.random.default_rng(cfg.split_seed).permutation(len(tuples))
        n_held = max(1, int(round(cfg.heldout_fraction * len(tuples))))
        held = set(perm[:n_held].tolist())
        self.train: list[Problem] = []
        self.heldout: list[Problem] = []
        for k, op in enumerate(cfg.ops):
            for i, d in enumerate(tuples.tolist()):
                p = Problem(k * 10**n + i, f"{op} {' '.join(map(str, d))}=", OPS[op](d), op)
                (self.heldout if i in held else self.train).append(p)

    @property
    def answer_length(self) -> int:
        return max(answer_length(o, self.cfg.num_digits) for o in self.cfg.ops)

    @staticmethod
    def digit_ids(encode) -> list[int]:
        ids = []
        for d in range(10):
            enc = encode(str(d))
            if len(enc) != 1:
                raise ValueError(f"constrain=true needs one token per digit; '{d}' encodes to {enc}")
            ids.append(enc[0])
        return ids

    def processor(self, encode, stop_id: int):
        """The answer-format logits processor for a tokenizer (``encode(str) -> ids``), or None."""
        if not self.cfg.constrain:
            return None
        return answer_format_processor(self.digit_ids(encode), stop_id, self.answer_length)

    def allowed_ids(self, encode, stop_id: int, completion_len: int) -> np.ndarray | None:
        """What :meth:`processor` allowed at each of ``completion_len`` positions, or None."""
        if not self.cfg.constrain:
            return None
        return answer_format_allowed_ids(self.digit_ids(encode), stop_id, self.answer_length, completion_len)

    def sample_train(self, rng: np.random.Generator, n: int) -> list[Problem]:
        idx = rng.integers(0, len(self.train), size=n)
        return [self.train[i] for i in idx]

    @staticmethod
    def reward(completion_text: str, problem: Problem) -> float:
        """1.0 for an exact answer, else 0.0."""
        return 1.0 if completion_text.strip() == problem.answer else 0.0
