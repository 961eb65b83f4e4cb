"""End to end on a hand-built MARS²-style tree: 10 nodes, three agents, shaping -> path-level
advantages -> per-agent batches."""

import numpy as np
import torch

from marl.credit import CreditAssigner, CreditConfig, Mars2Settings, tree_shaped_rewards
from marl.samples import tree_to_batches
from marl.tree import TurnTree
from marl.types import Turn

# node: parent, agent, reward          (node 0 is the task root: no agent, no reward)
#  1: 0, A, 0.2    2: 0, B, 0.6    3: 0, C, 0.4
#  4: 1, A, 0.5    5: 1, B, 0.3    6: 2, C, 1.0
#  7: 4, A, 0.9    8: 6, B, 0.8    9: 6, C, 1.0
PARENT = [-1, 0, 0, 0, 1, 1, 2, 4, 6, 6]
AGENT = [None, "A", "B", "C", "A", "B", "C", "A", "B", "C"]
REWARD = [np.nan, 0.2, 0.6, 0.4, 0.5, 0.3, 1.0, 0.9, 0.8, 1.0]

# Shaping with lam = 0.5, gamma = 0.5, baselines from unshaped rewards:
#  1: parent is the root, siblings {2, 3}: b = (0.6+0.4)/2 = 0.5  -> 0.2 + 0.5*(0.2-0.5) = 0.05
#  2: siblings {1, 3}: b = 0.3                                   -> 0.6 + 0.5*0.3     = 0.75
#  3: siblings {1, 2}: b = 0.4                                   -> 0.4 + 0            = 0.4
#  4: parent 1 (0.2), sibling {5}: b = 0.5*0.2 + 0.5*0.3 = 0.25  -> 0.5 + 0.5*0.25    = 0.625
#  5: parent 1, sibling {4}: b = 0.5*0.2 + 0.5*0.5 = 0.35        -> 0.3 + 0.5*(-0.05) = 0.275
#  6: parent 2 (0.6), no sibling: b = 0.6                        -> 1.0 + 0.5*0.4     = 1.2
#  7: parent 4 (0.5), no sibling: b = 0.5                        -> 0.9 + 0.5*0.4     = 1.1
#  8: parent 6 (1.0), sibling {9}: b = 0.5*1.0 + 0.5*1.0 = 1.0   -> 0.8 + 0.5*(-0.2)  = 0.7
#  9: parent 6, sibling {8}: b = 0.5*1.0 + 0.5*0.8 = 0.9         -> 1.0 + 0.5*0.1     = 1.05
SHAPED = [0.05, 0.75, 0.4, 0.625, 0.275, 1.2, 1.1, 0.7, 1.05]
# Path-level group = the 9 sample nodes of the tree: sum 6.15 -> mean 41/60; sum of squared deviations
# 1.23125 -> unbiased var 1.23125/8 = 197/1280 -> std 0.392309. A_i = (shaped_i - 41/60) / std:
PATH_ADV = [-1.614374, 0.169934, -0.722220, -0.148692, -1.040847, 1.316990, 1.062088, 0.042484, 0.934638]


def _build():
    t = TurnTree()
    for i, (p, a, r) in enumerate(zip(PARENT, AGENT, REWARD)):
        payload = None
        if a is not None:
            # prompt = [task, node] token ids, completion = 1 + i % 3 tokens
            prompt = np.array([0, i], dtype=np.int32)
            comp = np.arange(100 + i, 100 + i + 1 + i % 3, dtype=np.int32)
            payload = Turn(
                prompt_ids=prompt, completion_ids=comp, logprobs=np.full(len(comp), -0.1 * i, np.float32)
            )
        t.add_nodes(p, agent=-1 if a is None else a, reward=r, payloads=[payload])
    return t


def test_shaping_path_advantages_and_routing_end_to_end():
    t = _build()
    assert len(t) == 10 and t.agent_names == ["A", "B", "C"]
    np.testing.assert_allclose(
        tree_shaped_rewards(t.reward, t.parent, lam=0.5, gamma=0.5)[1:], SHAPED, atol=1e-12
    )

    cfg = CreditConfig(rule="mars2_tree", mars2=Mars2Settings(lam=0.5, shaping_gamma=0.5), eps=0.0)
    res = CreditAssigner(cfg)(t)
    assert res.nodes.tolist() == list(range(1, 10))
    np.testing.assert_allclose(res.advantages, PATH_ADV, atol=1e-6)
    assert abs(res.advantages.mean()) < 1e-12  # one group: centred

    batches = tree_to_batches(t, res.nodes, res.advantages, res.train_mask)
    assert sorted(batches) == ["A", "B", "C"]
    expected_nodes = {"A": [1, 4, 7], "B": [2, 5, 8], "C": [3, 6, 9]}
    for name, ids in expected_nodes.items():
        b = batches[name]
        assert b.node_ids.tolist() == ids  # each sample goes to the agent that produced it
        for row, i in enumerate(ids):
            n_comp = 1 + i % 3
            mask = b.loss_mask[row].bool()
            assert int(mask.sum()) == n_comp
            torch.testing.assert_close(
                b.advantages[row][mask], torch.full((n_comp,), PATH_ADV[i - 1], dtype=torch.float32)
            )
            assert float(b.advantages[row][~mask].abs().sum()) == 0.0
            torch.testing.assert_close(b.old_logprobs[row][mask], torch.full((n_comp,), -0.1 * i))


def test_two_trees_are_two_path_groups_and_agent_normalisation():
    t = _build()
    # a second task: root 10 with two answers by A (1.0) and C (0.0): shaped 1.5 / -0.5 -> +-0.7071
    root = t.add_nodes(-1)[0]
    turn = Turn(
        prompt_ids=np.array([1], np.int32),
        completion_ids=np.array([2], np.int32),
        logprobs=np.array([-1.0], np.float32),
    )
    t.add_nodes(root, agent=["A", "C"], reward=[1.0, 0.0], payloads=[turn, turn])
    res = CreditAssigner(CreditConfig(rule="mars2_tree", eps=0.0))(t)
    np.testing.assert_allclose(res.advantages[:9], PATH_ADV, atol=1e-6)  # the first tree is unaffected
    np.testing.assert_allclose(res.advantages[9:], [1 / np.sqrt(2), -1 / np.sqrt(2)])
    # per-agent batch normalisation on top: every agent's advantages end up with mean 0, std 1
    res = CreditAssigner(CreditConfig(rule="mars2_tree", normalizer="batch_per_agent", eps=0.0))(t)
    for a in range(3):
        adv = res.advantages[t.agent[res.nodes] == a]
        assert abs(adv.mean()) < 1e-12 and abs(adv.std() - 1.0) < 1e-9
