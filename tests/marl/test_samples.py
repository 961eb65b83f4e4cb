"""Tests for marl.samples.tree_to_batches: padding, masks, log-probs, advantages, routing."""

import numpy as np
import pytest
import torch

from marl.samples import tree_to_batches
from marl.tree import TurnTree
from marl.types import Turn


def _turn(prompt, completion, lp):
    return Turn(
        prompt_ids=np.array(prompt, dtype=np.int32),
        completion_ids=np.array(completion, dtype=np.int32),
        logprobs=np.array(lp, dtype=np.float32),
    )


def _tree():
    t = TurnTree(["x", "y"])
    t.add_nodes(-1)
    t.add_nodes(
        0,
        agent=["y", "x", "y"],
        payloads=[
            _turn([5, 6], [7], [-0.5]),
            _turn([5], [8, 9, 10], [-1, -2, -3]),
            _turn([5, 6, 7], [11, 12], [-4, -5]),
        ],
    )
    return t


def test_scalar_advantages_layout():
    t = _tree()
    out = tree_to_batches(t, np.array([1, 2, 3]), np.array([0.5, -1.0, 2.0]), pad_id=99)
    assert sorted(out) == ["x", "y"]
    y = out["y"]
    # rows in the order of `nodes`: node 1 ([5, 6] + [7]) then node 3 ([5, 6, 7] + [11, 12]); T = 5
    assert y.node_ids.tolist() == [1, 3]
    assert y.input_ids.tolist() == [[5, 6, 7, 99, 99], [5, 6, 7, 11, 12]]
    assert y.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert y.loss_mask.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 1]]
    torch.testing.assert_close(y.old_logprobs, torch.tensor([[0, 0, -0.5, 0, 0], [0, 0, 0, -4, -5.0]]))
    torch.testing.assert_close(y.advantages, torch.tensor([[0, 0, 0.5, 0, 0], [0, 0, 0, 2.0, 2.0]]))
    x = out["x"]
    assert x.input_ids.tolist() == [[5, 8, 9, 10]]
    torch.testing.assert_close(x.advantages, torch.tensor([[0, -1.0, -1.0, -1.0]]))
    assert x.input_ids.dtype == torch.int64 and x.loss_mask.dtype == torch.float32
    assert len(x) == 1


def test_per_token_advantages_and_train_mask():
    t = _tree()
    adv = [np.array([0.1]), np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])]
    out = tree_to_batches(t, np.array([1, 2, 3]), adv, train_mask=np.array([True, True, False]))
    # node 3 is out of the gradient (e.g. an MC-GRPO pivot): dropped entirely
    assert out["y"].node_ids.tolist() == [1]
    torch.testing.assert_close(out["x"].advantages, torch.tensor([[0, 1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="node 2"):
        tree_to_batches(t, np.array([2]), [np.array([1.0, 2.0])])


def test_routing_follows_the_node_agent_only():
    # same prompt, same group, same role, listed in any order: only the agent field decides the batch
    t = _tree()
    out = tree_to_batches(t, np.array([3, 2, 1]), np.array([3.0, 2.0, 1.0]))
    assert out["y"].node_ids.tolist() == [3, 1]
    assert out["x"].node_ids.tolist() == [2]


def test_errors_name_the_node():
    t = _tree()
    with pytest.raises(ValueError, match="node 0 has no agent"):
        tree_to_batches(t, np.array([0]), np.array([1.0]))
    t.add_nodes(1, agent="x")  # node 4: agent but no payload
    with pytest.raises(ValueError, match="node 4 .* no payload"):
        tree_to_batches(t, np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="node 2 has a non-finite advantage"):
        tree_to_batches(t, np.array([1, 2]), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        tree_to_batches(t, np.array([1, 2]), np.array([0.0]))
