"""The core's supervised warm start: the loss, the batches, the settings."""

import pytest
import torch

from marl.warmstart import SupervisedSettings, collate, completion_cross_entropy


def test_completion_cross_entropy_hand_value():
    # only completion tokens (positions 2, 3) count: -(-2 - 3) / 2 = 2.5
    lp = torch.tensor([[0.0, -1.0, -2.0, -3.0]])
    m = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(completion_cross_entropy(lp, m), torch.tensor(2.5))


def test_collate_masks_completion_only():
    ids, att, lm = collate([([5, 6], [7]), ([8], [9, 10])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 10]]
    assert att.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert lm.tolist() == [[0, 0, 1], [0, 1, 1]]


def test_supervised_settings_reject_bad_values():
    SupervisedSettings().validate()
    for bad in (dict(steps=-1), dict(batch_size=0), dict(lr=0.0), dict(optimizer="sgd")):
        with pytest.raises(ValueError):
            SupervisedSettings(**bad).validate()
    assert SupervisedSettings(steps=7).steps_for("anyone") == 7
