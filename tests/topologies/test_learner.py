"""The topology policy's loss by hand, the advantage table, and a learning step with the KL term."""

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from topologies.graphs import FixedPolicy, FreeLogits, QueryConditioned, graph_space, order_mask
from topologies.learner import (
    TopologyLearner,
    check_schedules,
    edge_advantages_table,
    order_loss,
    scheduled,
    topology_loss,
)


def test_topology_loss_hand_derived():
    # one query, two graphs over two edges with logits (ln 3, 0): p = (3/4, 1/2)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    a = torch.tensor([[[1, 0], [0, 1]]])
    adv = torch.tensor([[[2.0, 0.0], [-1.0, 1.0]]])
    # graph 0: -(2 ln 3/4); graph 1: -(-1 ln 1/4 + 1 ln 1/2); mean over the two graphs
    want = (-(2 * math.log(0.75)) - (-math.log(0.25) + math.log(0.5))) / 2
    assert_close(topology_loss(logits, a, adv), torch.tensor(want))
    # a forced edge contributes nothing
    forced = torch.tensor([[float("inf"), 0.0]])
    assert_close(topology_loss(forced, a[:, :1], adv[:, :1]), torch.tensor(0.0))


def test_advantage_table_spreads_graph_level_advantages():
    np.testing.assert_array_equal(
        edge_advantages_table(np.array([1.0, -2.0]), 2, 3).numpy(), [[1, 1, 1], [-2, -2, -2]]
    )
    per_edge = [np.array([0.0, 1.0]), np.array([2.0, 0.0])]
    np.testing.assert_array_equal(edge_advantages_table(per_edge, 2, 2).numpy(), [[0, 1], [2, 0]])
    with pytest.raises(ValueError, match="expected"):
        edge_advantages_table(per_edge, 3, 2)


def test_a_learning_step_moves_the_logits_and_measures_the_kl():
    s = graph_space(3)
    learner = TopologyLearner(FreeLogits(s), lr=0.1, kl_coef=0.5)
    feats = torch.zeros(1, 4)
    a = torch.tensor([[[1, 0, 0]]])
    adv = torch.tensor([[[1.0, 0.0, 0.0]]])
    first = learner.learn(feats, a, adv)
    assert first["kl"] == 0.0 and first["grad_norm"] > 0  # starts at the reference
    second = learner.learn(feats, a, adv)
    assert second["kl"] > 0
    assert learner.policy.logit[0] > 0 and learner.policy.logit[1] == 0  # edge 0 pushed up only
    # a fixed topology has nothing to learn, yet its loss is computed the same way
    fixed = TopologyLearner(FixedPolicy(s, "chain"), lr=0.1)
    assert fixed.optimizer is None and fixed.learn(feats, a, adv)["grad_norm"] == 0.0


def test_topology_loss_with_mixed_sampling_hand_derived():
    # eps = 0.1, logits (ln 3, 0): q(1) = (0.7, 0.5), q(0) = (0.3, 0.5)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    a = torch.tensor([[[1, 0], [0, 1]]])
    adv = torch.tensor([[[2.0, 0.0], [-1.0, 1.0]]])
    want = (-(2 * math.log(0.7)) - (-math.log(0.3) + math.log(0.5))) / 2
    assert_close(topology_loss(logits, a, adv, explore=0.1), torch.tensor(want))


def test_the_entropy_bonus_pulls_saturated_logits_back():
    s = graph_space(3)
    pol = FreeLogits(s)
    with torch.no_grad():
        pol.logit[:] = torch.tensor([4.0, -4.0, 0.0])
    learner = TopologyLearner(pol, lr=0.1, entropy_coef=0.1)
    zero = torch.zeros(1, 1, 3)
    out = learner.learn(torch.zeros(1, 4), torch.zeros(1, 1, 3, dtype=torch.long), zero)
    # no advantage: the only gradient is the entropy's, dH/dl = -l p (1 - p), towards 0
    h = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (1 / (1 + math.exp(-4.0)),) * 2]
    assert math.isclose(out["entropy"], h[0] + h[1] + math.log(2.0), rel_tol=1e-5)
    assert math.isclose(out["loss"], -0.1 * out["entropy"], rel_tol=1e-5)
    assert pol.logit[0] < 4.0 and pol.logit[1] > -4.0 and pol.logit[2] == 0.0
    with pytest.raises(ValueError, match="entropy_coef"):
        TopologyLearner(FreeLogits(s), lr=0.1, entropy_coef=-1.0)


def test_schedules_hand_derived():
    # linear: final + (start - final) (1 - t); cosine: final + (start - final) (1 + cos(pi t)) / 2
    assert scheduled("constant", 0.05, 0.0, 7, 10) == 0.05
    assert math.isclose(scheduled("linear", 0.05, 0.01, 0, 4), 0.05)
    assert math.isclose(scheduled("linear", 0.05, 0.01, 1, 4), 0.01 + 0.04 * 0.75)
    assert math.isclose(scheduled("linear", 0.05, 0.01, 4, 4), 0.01)
    assert math.isclose(scheduled("linear", 0.05, 0.01, 9, 4), 0.01)  # stays at the final value
    assert math.isclose(scheduled("cosine", 0.2, 0.0, 1, 4), 0.2 * (1 + math.sqrt(0.5)) / 2)
    assert math.isclose(scheduled("cosine", 0.2, 0.0, 2, 4), 0.1)
    assert math.isclose(scheduled("cosine", 0.2, 0.0, 4, 4), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        scheduled("step", 1.0, 0.0, 0, 4)
    with pytest.raises(ValueError, match="total"):
        scheduled("linear", 1.0, 0.0, 0, 0)
    with pytest.raises(ValueError, match="entropy_final"):
        check_schedules("linear", -0.1, "constant", 0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        check_schedules("linear", 0.0, "exp", 0.0)


def test_set_step_sets_the_entropy_coefficient_and_the_learning_rate():
    s = graph_space(3)
    learner = TopologyLearner(
        FreeLogits(s), lr=0.1, entropy_coef=0.05, entropy_schedule="linear",
        lr_schedule="cosine", lr_final=0.02,
    )  # fmt: skip
    out = learner.set_step(5, 10)
    assert math.isclose(out["entropy_coef"], 0.025) and math.isclose(learner.entropy_coef, 0.025)
    assert math.isclose(out["lr"], 0.06) and math.isclose(learner.optimizer.param_groups[0]["lr"], 0.06)
    # the entropy term of the loss uses the scheduled coefficient: at the end it is gone
    learner.set_step(10, 10)
    zero = torch.zeros(1, 1, 3)
    res = learner.learn(torch.zeros(1, 4), torch.zeros(1, 1, 3, dtype=torch.long), zero)
    assert res["loss"] == 0.0 and res["entropy"] > 0


def test_kl_to_a_sparse_reference_hand_derived():
    # p = 1/2 on each of the 3 edges, p_ref = q = sigmoid(-2):
    # KL = 3 [1/2 ln(1/2 / q) + 1/2 ln(1/2 / (1 - q))]
    s = graph_space(3)
    learner = TopologyLearner(FreeLogits(s), lr=0.1, kl_coef=0.5, kl_ref_logit=-2.0)
    assert learner.reference is None
    q = 1 / (1 + math.exp(2.0))
    want = 3 * (0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q)))
    out = learner.learn(torch.zeros(1, 4), torch.zeros(1, 1, 3, dtype=torch.long), torch.zeros(1, 1, 3))
    assert math.isclose(out["kl"], want, rel_tol=1e-5)
    assert math.isclose(out["loss"], 0.5 * want, rel_tol=1e-5)
    assert (learner.policy.logit < 0).all()  # pulled towards the sparse reference


def test_order_loss_hand_derived():
    # exp(s) = (1, 2, 3): PL(2, 0, 1) = 1/6, PL(0, 1, 2) = 1/15; advantages (1, -1), mean over the graphs
    s = torch.log(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    orders = torch.tensor([[[2, 0, 1], [0, 1, 2]]])
    adv = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    want = -(math.log(1 / 6) - math.log(1 / 15)) / 2
    assert_close(order_loss(s, orders, adv), torch.tensor(want, dtype=torch.float64))


def test_a_learning_step_with_a_learned_order():
    s = graph_space(3, rounds=1, order="learned")  # edges 0 -> 1, 0 -> 2, 1 -> 0, 1 -> 2
    pol = QueryConditioned(s, 4, hidden=4, order=True)
    learner = TopologyLearner(pol, lr=0.1)
    feats = torch.ones(1, 4)
    orders = torch.tensor([[[1, 0], [0, 1]]])  # graph 0: sort first (1 -> 0 allowed), graph 1: parse first
    allowed = torch.from_numpy(order_mask(s, orders.numpy()))
    a = torch.tensor([[[0, 1, 1, 0], [1, 0, 0, 1]]]).bool() & allowed
    adv = torch.ones(1, 2, 4)
    before = pol(feats).detach().clone()
    out = learner.learn(
        feats, a, adv, orders=orders, allowed=allowed, order_advantages=torch.tensor([[1.0, -1.0]])
    )
    # uniform start: -(1 ln 1/2 - 1 ln 1/2) / 2 = 0; the order then moves towards graph 0's (sort first)
    assert out["order_loss"] == pytest.approx(0.0, abs=1e-6)
    sc = pol.order_scores(feats)[0]
    assert sc[1] > sc[0]
    assert pol.bias.grad[0] < 0 and pol.bias.grad[2] < 0  # 0 -> 1 present in graph 1, 1 -> 0 in graph 0
    # a masked decision is no decision: whatever advantage it is given, the loss does not change
    masked = pol(feats)[:, None, :].expand(1, 2, 4).masked_fill(~allowed, float("-inf"))
    other = adv.masked_fill(~allowed, 7.0)
    assert_close(topology_loss(masked, a, other), topology_loss(masked, a, adv))
    assert (pol(feats).detach() != before).any()


def _saturated_order_learner(first: float, **kw) -> tuple[TopologyLearner, QueryConditioned]:
    """A learned-order policy over 4 agents whose order puts agent 0 first with score ``first``."""
    s = graph_space(4, rounds=1, order="learned")
    pol = QueryConditioned(s, 4, hidden=4, order=True)
    with torch.no_grad():
        pol.order_bias[:] = torch.tensor([first, 0.0, 0.0])
    return TopologyLearner(pol, lr=0.1, **kw), pol


def _step_without_advantages(learner: TopologyLearner, steps: int = 1) -> dict[str, float]:
    s = graph_space(4, rounds=1, order="learned")
    feats = torch.zeros(1, 4)
    orders = torch.tensor([[[0, 1, 2], [0, 2, 1]]])
    allowed = torch.from_numpy(order_mask(s, orders.numpy()))
    zero = torch.zeros(1, 2, s.num_edges)
    kw = dict(orders=orders, allowed=allowed, order_advantages=torch.zeros(1, 2))
    for _ in range(steps):
        out = learner.learn(feats, torch.zeros_like(allowed), zero, **kw)
    return out


def test_the_order_gets_the_entropy_bonus_and_the_kl_to_the_uniform_order():
    # scores (ln 2, 0, 0): H = 1/2 ln 4 + 1/3 ln 6 + 1/6 ln 12 (by hand in test_graphs); sparse KL: log 3! - H
    learner, pol = _saturated_order_learner(math.log(2.0), entropy_coef=0.05, kl_coef=0.05, kl_ref_logit=-2.0)
    out = _step_without_advantages(learner)
    h = 0.5 * math.log(4) + math.log(6) / 3 + math.log(12) / 6
    assert out["order_entropy"] == pytest.approx(h, rel=1e-6)
    assert out["order_kl"] == pytest.approx(math.log(6) - h, rel=1e-6)
    # no advantage: the edges' terms plus -0.05 H + 0.05 (log 3! - H) are the whole loss
    edges = 0.05 * out["kl"] - 0.05 * out["entropy"]
    assert out["loss"] == pytest.approx(edges - 0.05 * h + 0.05 * (math.log(6) - h), rel=1e-5)
    # the initial reference: the frozen initial scores, so the KL starts at 0
    learner, pol = _saturated_order_learner(math.log(2.0), kl_coef=0.05)
    assert _step_without_advantages(learner)["order_kl"] == pytest.approx(0.0, abs=1e-7)


def test_the_order_regularisers_pull_a_saturated_order_back():
    # agent 0 first with p = e^5 / (e^5 + 2) = 0.987 and no advantage: only the entropy bonus (and the
    # KL to the uniform order) move the scores; without them nothing moves
    first = lambda pol: float(torch.softmax(pol.order_bias.detach(), 0)[0])  # noqa: E731
    learner, pol = _saturated_order_learner(5.0, entropy_coef=0.05)
    _step_without_advantages(learner, steps=10)
    assert first(pol) < 0.95
    learner, pol = _saturated_order_learner(5.0, entropy_coef=0.05, kl_coef=0.05, kl_ref_logit=-2.0)
    _step_without_advantages(learner, steps=10)
    assert first(pol) < 0.95
    learner, pol = _saturated_order_learner(5.0)
    _step_without_advantages(learner, steps=10)
    assert first(pol) == pytest.approx(math.exp(5) / (math.exp(5) + 2), rel=1e-6)
