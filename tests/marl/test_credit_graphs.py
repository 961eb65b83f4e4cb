"""Graph credit (marl.credit.graphs): hand-derived Graph-GRPO graph- and edge-level advantages, the
token-cost utility, the edge KL, a loop reference, and the rules through the CreditAssigner."""

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from marl.credit import CreditAssigner, CreditConfig, TopologySettings
from marl.credit.graphs import (
    decision_advantages,
    edge_advantages,
    edge_contrast_advantages,
    edge_kl,
    graph_advantages,
    graph_decision_advantages,
    reinforce_advantages,
    token_cost_utility,
)
from marl.tree import TurnTree
from marl.types import Turn
from topologies.learner import topology_loss

# one query, three graphs over three candidate edges
U = np.array([1.0, 0.0, 1.0])
A = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0]])


def test_token_cost_utility_hand_derived():
    # u = score - lambda * tokens: 1 - 0.1, 1 - 0.3, 0 - 0.05
    u = token_cost_utility(np.array([1.0, 1.0, 0.0]), np.array([100, 300, 50]), 0.001)
    np.testing.assert_allclose(u, [0.9, 0.7, -0.05])
    with pytest.raises(ValueError, match=">= 0"):
        token_cost_utility(U, U, -1.0)


def test_graph_advantages_hand_derived():
    # mean 2/3, deviations (1/3, -2/3, 1/3), unbiased std sqrt((1/9 + 4/9 + 1/9) / 2) = 1/sqrt(3)
    adv = graph_advantages(U, np.zeros(3, np.int64), eps=0.0)
    s3 = math.sqrt(3.0)
    np.testing.assert_allclose(adv, [s3 / 3, -2 * s3 / 3, s3 / 3])
    # two queries are normalised separately: [1, 0] has deviations +-0.5 and std sqrt(0.5), so
    # A = +-0.5 / sqrt(0.5) = +-1/sqrt(2) (the GRPO golden value); an all-equal group gives 0
    adv = graph_advantages(np.array([1.0, 0.0, 0.5, 0.5]), np.array([7, 7, 9, 9]), eps=0.0)
    np.testing.assert_allclose(adv, [1 / math.sqrt(2.0), -1 / math.sqrt(2.0), 0.0, 0.0])


def test_edge_advantages_hand_derived():
    # S_0 = mean(u_0, u_1) = 0.5, S_1 = mean(u_0, u_2) = 1, S_2 = u_1 = 0
    # mean_e S = 0.5, deviations (0, 0.5, -0.5), unbiased std = sqrt(0.5 / 2) = 0.5: A_e = (0, 1, -1)
    adv = edge_advantages(U, A, np.zeros(3, np.int64), eps=0.0)
    np.testing.assert_allclose(adv, [[0, 1, 0], [0, 0, -1], [0, 1, 0]])
    # biased std sqrt(0.5 / 3): A_e = (0, 0.5, -0.5) / sqrt(1/6)
    adv = edge_advantages(U, A, np.zeros(3, np.int64), unbiased=False, eps=0.0)
    c = 0.5 * math.sqrt(6.0)
    np.testing.assert_allclose(adv, [[0, c, 0], [0, 0, -c], [0, c, 0]])


def test_edge_advantages_skip_edges_no_graph_used_and_separate_queries():
    # edge 2 is in no graph of query 0: it gets no credit and does not enter the mean
    u = np.array([1.0, 0.0, 1.0, 0.0])
    a = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
    adv = edge_advantages(u, a, np.array([0, 0, 5, 5]), eps=0.0)
    # query 0: S = (0.5, 1), mean 0.75, std sqrt(2 * 0.0625 / 1) = 0.25 * sqrt(2): A = (-1, 1) / sqrt(2)
    # query 5: S = (1, 1, 0.5), mean 5/6, deviations (1/6, 1/6, -1/3), std sqrt((1/36 * 2 + 1/9) / 2)
    std5 = math.sqrt((2 / 36 + 1 / 9) / 2)
    r2 = 1 / math.sqrt(2.0)
    np.testing.assert_allclose(
        adv,
        [[-r2, r2, 0], [-r2, 0, 0], [1 / 6 / std5, 1 / 6 / std5, -1 / 3 / std5], [0, 0, -1 / 3 / std5]],
    )


def _loop_edge(u, a, g, unbiased=True, eps=1e-6):
    out = np.zeros(a.shape)
    for q in set(g.tolist()):
        ks = [k for k in range(len(u)) if g[k] == q]
        s = {}
        for e in range(a.shape[1]):
            inside = [u[k] for k in ks if a[k, e]]
            if inside:
                s[e] = sum(inside) / len(inside)
        vals = list(s.values())
        mean = sum(vals) / len(vals) if vals else 0.0
        dd = len(vals) - (1 if unbiased else 0)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / dd) if dd > 0 else 0.0
        for k in ks:
            for e in s:
                if a[k, e] and s[e] != mean:
                    out[k, e] = (s[e] - mean) / (std + eps)
    return out


def test_edge_advantages_match_a_loop_on_random_groups():
    rng = np.random.default_rng(0)
    for _ in range(30):
        k, e = rng.integers(1, 12), rng.integers(1, 7)
        u = rng.choice([0.0, 1.0, 0.25], size=k)
        a = rng.integers(0, 2, size=(k, e))
        g = rng.integers(-3, 3, size=k)
        np.testing.assert_allclose(edge_advantages(u, a, g), _loop_edge(u, a, g), atol=1e-9)
    with pytest.raises(ValueError, match="0 or 1"):
        edge_advantages(U, A * 2, np.zeros(3, np.int64))


def test_reinforce_has_no_baseline():
    np.testing.assert_array_equal(reinforce_advantages(U), U)


def test_edge_kl_hand_derived():
    # p = 1/2, q = 3/4: KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3); equal logits: 0
    kl = edge_kl(torch.tensor([0.0, 1.0]), torch.tensor([math.log(3.0), 1.0]))
    assert_close(kl, torch.tensor(0.5 * math.log(4.0 / 3.0)))


def _graph_tree(tokens=(100, 300, 50)):
    tree = TurnTree(["topology", "worker"])
    root = tree.add_nodes(-1)[0]
    payloads = [
        Turn(np.zeros(0, np.int32), a.astype(np.int32), np.zeros(3, np.float32), data={"tokens": t})
        for a, t in zip(A, tokens)
    ]
    graphs = tree.add_nodes(np.full(3, root), agent="topology", reward=U, payloads=payloads)
    # a worker call under graph 0: the rule is given the graph nodes only
    tree.add_nodes(graphs[0], agent="worker", reward=1.0, payloads=payloads[0])
    return tree, graphs


def test_rules_through_the_credit_assigner():
    tree, graphs = _graph_tree()
    res = CreditAssigner(CreditConfig(rule="graph_grpo", eps=0.0), multi_turn=False)(tree, graphs)
    s3 = math.sqrt(3.0)
    np.testing.assert_allclose(res.advantages, [s3 / 3, -2 * s3 / 3, s3 / 3])
    res = CreditAssigner(CreditConfig(rule="graph_grpo_edge", eps=0.0), multi_turn=False)(tree, graphs)
    np.testing.assert_allclose(np.stack(res.advantages), [[0, 1, 0], [0, 0, -1], [0, 1, 0]])
    res = CreditAssigner(CreditConfig(rule="graph_reinforce"), multi_turn=False)(tree, graphs)
    np.testing.assert_allclose(res.advantages, U)
    # with a token cost the rule compares u = (0.9, -0.3, 0.95)
    cfg = CreditConfig(rule="graph_reinforce", topology=TopologySettings(token_cost=0.001))
    res = CreditAssigner(cfg, multi_turn=False)(tree, graphs)
    np.testing.assert_allclose(res.advantages, [0.9, -0.3, 0.95])


def test_edge_contrast_hand_derived():
    # one group, u = (1, 1, 0, 0): std (n - 1) = sqrt(1/3); edge 0 is in the two wins: S+ - S- = 1;
    # edge 1 in graph 0 only: 1 - 1/3; edge 2 in no graph: 0. A second group of equal utilities: 0.
    u = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    a = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]])
    out = edge_contrast_advantages(u, a, np.array([0, 0, 0, 0, 1, 1]), eps=0.0)
    c0, c1 = 1.0 / math.sqrt(1 / 3), (2 / 3) / math.sqrt(1 / 3)
    want = [[c0, c1, 0], [c0, -c1, 0], [-c0, -c1, 0], [-c0, -c1, 0], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_allclose(out, want)
    # the loss -sum A log p_e(a_e) moves each logit with the sign of E[u | a_e = 1] - E[u | a_e = 0]
    # (the exact policy gradient is p (1 - p) times that): edges 0 and 1 go up, edge 2 gets nothing
    logits = torch.zeros(1, 3, requires_grad=True)
    adv = torch.as_tensor(out[:4], dtype=torch.float32)[None]
    topology_loss(logits, torch.as_tensor(a[:4])[None], adv).backward()
    assert logits.grad[0, 0] < 0 and logits.grad[0, 1] < 0 and logits.grad[0, 2] == 0


def test_edge_contrast_through_the_credit_assigner():
    # U = (1, 0, 1), std (n - 1) = 1/sqrt(3); S+ - S-: edge 0 0.5 - 1, edge 1 1 - 0, edge 2 0 - 1
    tree, graphs = _graph_tree()
    cfg = CreditConfig(rule="graph_grpo_edge", eps=0.0, topology=TopologySettings(edge_credit="contrast"))
    res = CreditAssigner(cfg, multi_turn=False)(tree, graphs)
    s3 = math.sqrt(3.0)
    want = [[-s3 / 2, s3, s3], [-s3 / 2, -s3, -s3], [s3 / 2, s3, s3]]
    np.testing.assert_allclose(np.stack(res.advantages), want)
    with pytest.raises(ValueError, match="edge_credit"):
        CreditConfig(rule="graph_grpo_edge", topology=TopologySettings(edge_credit="sum")).validate()
    with pytest.raises(ValueError, match="edge_credit is set"):
        CreditConfig(rule="graph_grpo", topology=TopologySettings(edge_credit="contrast")).validate()


def test_token_cost_is_refused_by_rules_that_do_not_read_it():
    with pytest.raises(ValueError, match="credit.topology is set"):
        CreditAssigner(CreditConfig(rule="grpo", topology=TopologySettings(token_cost=0.1)), multi_turn=False)


def test_token_cost_needs_the_token_counts():
    tree = TurnTree(["topology"])
    root = tree.add_nodes(-1)[0]
    p = Turn(np.zeros(0, np.int32), np.ones(2, np.int32), np.zeros(2, np.float32))
    g = tree.add_nodes([root, root], agent="topology", reward=[1.0, 0.0], payloads=[p, p])
    cfg = CreditConfig(rule="graph_grpo", topology=TopologySettings(token_cost=0.1))
    with pytest.raises(ValueError, match="data\\['tokens'\\]"):
        CreditAssigner(cfg, multi_turn=False)(tree, g)


def test_edge_contrast_with_a_per_graph_mask_hand_derived():
    # u = (1, 0, 0, 1), std (n - 1) = sqrt(1/3). Edge 0 in graphs 0, 1 (S+ = 1/2); graph 3 did not
    # allow it, so S- is graph 2's 0 (without the mask: (0 + 1) / 2, a contrast of 0), C = 0.5 / std,
    # and graph 3 gets 0 on it. Edge 1 is allowed in graph 0 only, which took it: no contrast.
    u = np.array([1.0, 0.0, 0.0, 1.0])
    a = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])
    allowed = np.array([[1, 1], [1, 0], [1, 0], [0, 0]], dtype=bool)
    c = 0.5 / math.sqrt(1 / 3)
    out = edge_contrast_advantages(u, a, np.zeros(4, np.int64), eps=0.0, allowed=allowed)
    np.testing.assert_allclose(out, [[c, 0], [c, 0], [-c, 0], [0, 0]])
    np.testing.assert_allclose(edge_contrast_advantages(u, a, np.zeros(4, np.int64), eps=0.0)[:, 0], 0.0)
    # an all-true mask is the rule without one
    full = np.ones_like(A, dtype=bool)
    groups = np.zeros(3, np.int64)
    np.testing.assert_allclose(
        edge_contrast_advantages(U, A, groups, allowed=full), edge_contrast_advantages(U, A, groups)
    )
    with pytest.raises(ValueError, match="allowed"):
        edge_contrast_advantages(U, A, groups, allowed=~full)  # a present edge its graph did not allow


def test_a_per_graph_decision_gets_the_graph_level_advantage():
    # U = (1, 0, 1): Graph-GRPO's A = (1/3, -2/3, 1/3) / std (n - 1) = 1/sqrt(3); REINFORCE: u itself
    s3 = math.sqrt(3.0)
    groups = np.zeros(3, np.int64)
    for rule in ("graph_grpo", "graph_grpo_edge"):
        np.testing.assert_allclose(
            decision_advantages(rule, U, groups, eps=0.0), [s3 / 3, -2 * s3 / 3, s3 / 3]
        )
    np.testing.assert_allclose(decision_advantages("graph_reinforce", U, groups), U)
    with pytest.raises(ValueError, match="rule"):
        decision_advantages("grpo", U, groups)
    # through the tree: the graph nodes' masks reach the contrast rule, the order gets A_k
    tree, graphs = _graph_tree()
    for i, g in enumerate(graphs.tolist()):
        tree.payloads[g].data["allowed"] = np.array([True, True, i != 0])  # graph 0 could not take edge 2
    cfg = CreditConfig(rule="graph_grpo_edge", eps=0.0, topology=TopologySettings(edge_credit="contrast"))
    assigner = CreditAssigner(cfg, multi_turn=False)
    res = assigner(tree, graphs)
    # edge 2 is in graph 1 (u = 0) and allowed but absent in graph 2 only (u = 1): C = -sqrt(3) as
    # without the mask, but graph 0, which could not take it, gets 0 instead of +sqrt(3)
    want = [[-s3 / 2, s3, 0], [-s3 / 2, -s3, -s3], [s3 / 2, s3, s3]]
    np.testing.assert_allclose(np.stack(res.advantages), want)
    got = graph_decision_advantages(tree, graphs, assigner.rewards(tree, graphs), cfg)
    np.testing.assert_allclose(got, [s3 / 3, -2 * s3 / 3, s3 / 3])
