import numpy as np
import pytest
import torch

from marl.digits import (
    OPS,
    DigitTask,
    DigitTaskConfig,
    answer_format_allowed_ids,
    answer_format_processor,
)


def test_ops_hand_values():
    d = (3, 8, 1)
    assert [OPS[o](d) for o in ("first", "last", "max", "min", "sum", "copy", "reverse", "sort")] == [
        "3",
        "1",
        "8",
        "1",
        "2",
        "381",
        "183",
        "138",  # sum: 3+8+1 = 12 -> 2 (mod 10)
    ]


def test_split_is_disjoint_deterministic_and_sized():
    t = DigitTask(DigitTaskConfig(ops=["max", "min"], num_digits=3, heldout_fraction=0.2))
    # 1000 tuples per op, 200 held out per op
    assert len(t.heldout) == 400 and len(t.train) == 1600
    assert not {p.prompt for p in t.train} & {p.prompt for p in t.heldout}
    assert [p.prompt for p in DigitTask(t.cfg).heldout] == [p.prompt for p in t.heldout]
    p = (
        next(p for p in t.train if p.prompt == "max 3 8 1=")
        if any(p.prompt == "max 3 8 1=" for p in t.train)
        else next(p for p in t.heldout if p.prompt == "max 3 8 1=")
    )
    assert p.answer == "8"


def test_reward_is_exact_match():
    t = DigitTask(DigitTaskConfig())
    p = t.train[0]
    assert DigitTask.reward(p.answer, p) == 1.0
    assert DigitTask.reward(f" {p.answer} ", p) == 1.0
    assert DigitTask.reward(p.answer + "0", p) == 0.0
    assert DigitTask.reward("", p) == 0.0


def test_mixed_answer_lengths_rejected_when_constrained():
    with pytest.raises(ValueError, match="one length"):
        DigitTask(DigitTaskConfig(ops=["max", "copy"], constrain=True))
    DigitTask(DigitTaskConfig(ops=["max", "copy"], constrain=False))


def test_processor_and_allowed_ids_agree():
    digits, stop = list(range(10, 20)), 1
    proc = answer_format_processor(digits, stop, length=2)
    logits = torch.zeros(3, 25)
    for step in range(3):
        out = proc(step, torch.zeros(3, step, dtype=torch.long), logits)
        allowed_by_proc = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
        allowed = answer_format_allowed_ids(digits, stop, length=2, completion_len=3)[step]
        assert allowed_by_proc == {int(a) for a in allowed if a >= 0}
    np.testing.assert_array_equal(answer_format_allowed_ids(digits, stop, 2, 3)[2], [1] + [-1] * 9)
