"""Topology policies: acyclic by construction, log pi = sum of per-edge log-probs in any order,
waves = networkx's topological generations, the fixed topologies and pruning, hand-derived values."""

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from topologies.graphs import (
    TOPOLOGIES,
    FreeLogits,
    QueryConditioned,
    active_nodes,
    all_orders,
    batched_levels,
    edge_entropy,
    edge_logprobs,
    fixed_topology,
    graph_logprob,
    graph_space,
    mixed_probs,
    mode_graphs,
    mode_orders,
    order_mask,
    plackett_luce_entropy,
    plackett_luce_kl,
    plackett_luce_logprob,
    policy_features,
    query_feature_dim,
    query_features,
    role_feature_dim,
    role_keywords,
    role_positions,
    sample_graphs,
    sample_ordered_graphs,
    sample_orders,
    waves,
)


def test_graph_space_counts_and_order_mask():
    s = graph_space(4, rounds=3)
    # spatial: 3 rounds x C(4,2) = 18; temporal: 2 transitions x 16 = 32
    assert s.num_edges == 18 + 32 and s.num_nodes == 12
    assert (s.src < s.dst).all()
    assert len({(int(a), int(b)) for a, b in zip(s.src, s.dst)}) == s.num_edges


def test_ten_thousand_sampled_graphs_are_acyclic():
    s = graph_space(5, rounds=2)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2500, s.num_edges, generator=g) * 3
    a, _ = sample_graphs(logits, 4, generator=g)
    graphs = a.reshape(-1, s.num_edges).numpy()
    assert graphs.shape[0] == 10_000
    assert graphs.any(1).all() and not graphs.all(1).all()  # non-trivial graphs
    assert all(nx.is_directed_acyclic_graph(s.to_networkx(row)) for row in graphs)


def test_edge_logprobs_hand_derived():
    # l = ln 3: sigmoid = 3/4, so log p(1) = ln(3/4), log p(0) = ln(1/4); l = 0: ln(1/2) either way
    logits = torch.tensor([math.log(3.0), math.log(3.0), 0.0])
    a = torch.tensor([1, 0, 1])
    lp = edge_logprobs(logits, a)
    assert_close(lp, torch.tensor([math.log(0.75), math.log(0.25), math.log(0.5)]))
    assert_close(graph_logprob(lp), torch.tensor(math.log(0.75 * 0.25 * 0.5)))
    # a forced edge (+inf) has log-prob 0 for its decision
    assert_close(
        edge_logprobs(torch.tensor([float("inf"), float("-inf")]), torch.tensor([1, 0])), torch.zeros(2)
    )


def _sequential_logprob(space, logits, a, order):
    """GPTSwarm-style sampler walked in ``order``: add each edge with its probability unless it closes
    a cycle. Under the order mask no edge is ever rejected, so the result must not depend on order."""
    g = nx.DiGraph()
    g.add_nodes_from(range(space.num_nodes))
    total = 0.0
    for e in order:
        u, v = int(space.src[e]), int(space.dst[e])
        assert not nx.has_path(g, v, u), "the order mask admitted a cycle"
        p = 1.0 / (1.0 + math.exp(-float(logits[e])))
        total += math.log(p) if a[e] else math.log(1.0 - p)
        if a[e]:
            g.add_edge(u, v)
    return total


def test_log_pi_is_the_sum_of_edge_logprobs_in_any_enumeration_order():
    s = graph_space(4, rounds=2)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, s.num_edges, generator=g, dtype=torch.float64)
    a, lp = sample_graphs(logits, 2, generator=g)
    rng = np.random.default_rng(0)
    for b in range(3):
        for k in range(2):
            ref = float(graph_logprob(lp[b, k]))
            for _ in range(5):
                order = rng.permutation(s.num_edges)
                assert math.isclose(
                    _sequential_logprob(s, logits[b], a[b, k].numpy(), order), ref, rel_tol=1e-9
                )


def test_the_graph_distribution_sums_to_one():
    assert graph_space(3, rounds=1).num_edges == 3  # 8 graphs
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    graphs = torch.tensor(list(itertools.product([0, 1], repeat=3)))
    total = graph_logprob(edge_logprobs(logits, graphs)).exp().sum()
    assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_sampling_frequencies_match_the_edge_probabilities():
    s = graph_space(3)
    logits = torch.tensor([[math.log(3.0), 0.0, -math.log(3.0)]])
    a, _ = sample_graphs(logits, 20_000, generator=torch.Generator().manual_seed(0))
    assert_close(
        a.double().mean((0, 1)), torch.tensor([0.75, 0.5, 0.25], dtype=torch.float64), atol=0.015, rtol=0
    )
    assert s.num_edges == 3


def test_waves_equal_networkx_topological_generations():
    s = graph_space(4, rounds=2)
    chain = fixed_topology(s, "chain") > 0
    # chain in each round + i -> i temporal: 0 -> 1 -> 2 -> 3 and 0 -> 4, 1 -> 5, ...
    assert [w.tolist() for w in waves(s, chain.numpy())] == [[0], [1, 4], [2, 5], [3, 6], [7]]
    g = torch.Generator().manual_seed(3)
    a, _ = sample_graphs(torch.zeros(1, s.num_edges), 50, generator=g)
    for row in a[0].numpy():
        ref = [sorted(w) for w in nx.topological_generations(s.to_networkx(row))]
        assert [w.tolist() for w in waves(s, row)] == ref


def _edges(space, logits):
    on = (logits > 0).numpy()
    return sorted(zip(space.src[on].tolist(), space.dst[on].tolist()))


def test_fixed_topologies_by_hand():
    s = graph_space(4)
    assert _edges(s, fixed_topology(s, "chain")) == [(0, 1), (1, 2), (2, 3)]
    assert _edges(s, fixed_topology(s, "star")) == [(0, 1), (0, 2), (0, 3)]
    assert _edges(s, fixed_topology(s, "complete")) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    # 4 agents in 3 layers: [0, 1], [2], [3]
    assert _edges(s, fixed_topology(s, "layered", layers=3)) == [(0, 2), (1, 2), (2, 3)]
    assert _edges(s, fixed_topology(s, "single")) == [] == _edges(s, fixed_topology(s, "debate"))
    assert (fixed_topology(s, "random") == 0).all()
    s2 = graph_space(2, rounds=2)  # debate: every temporal edge 0,1 -> 2,3
    assert _edges(s2, fixed_topology(s2, "debate")) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    with pytest.raises(ValueError, match="valid names"):
        fixed_topology(s, "ring")


def test_free_logits_prune_the_lowest_edges():
    s = graph_space(3)  # edges (0,1), (0,2), (1,2)
    pol = FreeLogits(s)
    with torch.no_grad():
        pol.logit[:] = torch.tensor([0.5, -2.0, 1.0])
    assert pol.prune(0.34) == 1  # floor(0.34 * 3) = 1: the lowest, (0, 2)
    lg = pol(torch.zeros(2, 4))
    assert lg.shape == (2, 3) and torch.isinf(lg[:, 1]).all() and (lg[:, 1] < 0).all()
    assert mode_graphs(lg)[0].tolist() == [True, False, True]
    assert pol.prune(0.5) == 1  # half of the 2 left: (0, 1)
    assert mode_graphs(pol(torch.zeros(1, 4)))[0].tolist() == [False, False, True]


def test_query_conditioned_logits_depend_on_the_query_and_learn():
    s = graph_space(4, rounds=2)
    pol = QueryConditioned(s, feature_dim=32, hidden=8, seed=0)
    f = query_features(["needs parse then sum", "needs sort then format"], dim=32)
    assert_close(f.norm(dim=1), torch.ones(2))
    assert_close(f, query_features(["needs parse then sum", "needs sort then format"], dim=32))
    lg = pol(f)
    assert lg.shape == (2, s.num_edges) and not torch.allclose(lg[0], lg[1])
    # raise edge 0 for the first query only, by gradient ascent on its log-prob
    opt = torch.optim.Adam(pol.parameters(), lr=0.05)
    for _ in range(100):
        lg = pol(f)
        loss = -(edge_logprobs(lg[0, 0], torch.tensor(1)) + edge_logprobs(lg[1, 0], torch.tensor(0)))
        opt.zero_grad(), loss.backward(), opt.step()
    lg = pol(f)
    assert lg[0, 0] > 2 and lg[1, 0] < -2


def test_edge_entropy_hand_derived():
    # l = 0: p = 1/2, H = ln 2; l = ln 3: p = 3/4, H = -(3/4 ln 3/4 + 1/4 ln 1/4); forced edges: 0
    h = edge_entropy(torch.tensor([0.0, math.log(3.0), float("inf"), float("-inf")]))
    want = [math.log(2.0), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 0.0, 0.0]
    assert_close(h, torch.tensor(want))
    # symmetric in the logit, and finite far out
    assert_close(edge_entropy(torch.tensor([-math.log(3.0)])), torch.tensor(want[1:2]))
    assert torch.isfinite(edge_entropy(torch.tensor([80.0, -80.0]))).all()


def test_mixed_logprobs_hand_derived_and_sum_to_one():
    # eps = 0.1, l = ln 3: q(1) = 0.1 + 0.8 * 3/4 = 0.7, q(0) = 0.3; l = 0: 1/2; forced: exact 0
    logits = torch.tensor([math.log(3.0), math.log(3.0), 0.0, float("inf"), float("-inf")])
    lp = edge_logprobs(logits, torch.tensor([1, 0, 1, 1, 0]), explore=0.1)
    assert_close(lp, torch.tensor([math.log(0.7), math.log(0.3), math.log(0.5), 0.0, 0.0]))
    assert_close(mixed_probs(logits, 0.1), torch.tensor([0.7, 0.7, 0.5, 1.0, 0.0]))
    # a saturated edge keeps probability eps of the other decision
    lp_sat = edge_logprobs(torch.tensor([-50.0]), torch.tensor([1]), explore=0.1)
    assert_close(lp_sat, torch.tensor([math.log(0.1)]))
    # pi(G) over all 2^E graphs of a small space sums to 1 under the mixed distribution
    s = graph_space(3, rounds=1)
    lg = torch.tensor([2.0, -1.0, float("inf")])
    graphs = torch.tensor(list(itertools.product([0, 1], repeat=s.num_edges)))
    assert_close(graph_logprob(edge_logprobs(lg, graphs, explore=0.2)).exp().sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="epsilon"):
        edge_logprobs(lg, graphs, explore=0.5)


def test_mixed_sampling_draws_the_mixed_probabilities_and_stays_acyclic():
    s = graph_space(5, rounds=2)
    lg = torch.full((1, s.num_edges), -30.0)
    lg[0, 0], lg[0, 1] = 30.0, float("-inf")  # a saturated on edge and a forced-off edge
    a, lp = sample_graphs(lg, 20_000, generator=torch.Generator().manual_seed(0), explore=0.1)
    freq = a[0].float().mean(0)
    assert abs(freq[0] - 0.9) < 0.01 and freq[1] == 0 and abs(freq[2:].mean() - 0.1) < 0.005
    assert_close(lp, edge_logprobs(lg[:, None, :], a, explore=0.1))
    assert all(nx.is_directed_acyclic_graph(s.to_networkx(g)) for g in a[0, :200].numpy())


def test_role_positions_on_a_tiny_example():
    roles = ["parse", "sort", "sum", "format", "final"]
    f = role_positions(["task 17: please now sort then parse then sum", "no role here"], roles, max_rank=3)
    assert f.shape == (2, 5, 7)
    # sort first (rank 0, 2nd from the end), parse second, sum last; format and final never mentioned
    want = {1: [1, 1, 0, 0, 0, 0, 1], 0: [1, 0, 1, 0, 0, 1, 0], 2: [1, 0, 0, 1, 1, 0, 0]}
    for i, row in want.items():
        assert f[0, i].tolist() == row
    assert not f[0, 3:].any() and not f[1].any()
    # rank buckets clip at max_rank - 1; a word two roles share points at neither
    g = role_positions(["sum format sort parse"], roles, max_rank=2)
    assert g[0, 0].tolist() == [1, 0, 1, 1, 0] and g[0, 2].tolist() == [1, 1, 0, 0, 1]
    assert role_keywords(["math expert", "code expert", "the judge"]) == [{"math"}, {"code"}, {"judge"}]
    assert not role_positions(["an expert"], ["math expert", "code expert"]).any()


def test_ordered_query_features_add_the_skip_bigrams():
    from marl.seeding import stable_hash

    grams = ["<s>", "a", "b", "</s>", "<s> a", "a b", "b </s>", "<s> a b", "a b </s>", "a < b"]
    want = np.zeros(16, dtype=np.float32)
    for g in grams:
        h = stable_hash(g)
        want[h % 16] += 1.0 if (h >> 32) & 1 else -1.0
    want /= np.linalg.norm(want)
    assert_close(query_features(["A, b"], 16, ordered=True)[0], torch.from_numpy(want))
    assert not torch.allclose(query_features(["a b"], 16, ordered=True), query_features(["a b"], 16))


def test_query_conditioned_with_role_features():
    s = graph_space(3, rounds=1)  # edges (0,1), (0,2), (1,2)
    roles, texts = ["parse", "sort", "final"], ["sort then parse", "nothing"]
    f = policy_features(texts, roles, "roles", dim=8, max_rank=2)
    assert f.shape == (2, 8 + 3 * role_feature_dim("roles", 2))
    plain = QueryConditioned(s, feature_dim=8, hidden=4, seed=3)
    pol = QueryConditioned(s, feature_dim=8, hidden=4, seed=3, node_dim=5)
    assert not pol.node_proj.any() and not pol.pair.any()  # both start at zero
    # W = 0 at the start: the same logits as the policy without role features
    assert_close(pol(f), plain(f[:, :8]))
    with torch.no_grad():  # edge (0 -> 1): + 2 when parse is mentioned right after sort
        pol.pair[0, 1 + 2, 1 + 1] = 2.0  # x_parse[rank 1], x_sort[rank 0]
        pol.pair[1, 0, 0] = -1.0  # edge (0 -> 2): a constant -1 (both x start with 1)
    diff = pol(f) - plain(f[:, :8])
    assert_close(diff, torch.tensor([[2.0, -1.0, 0.0], [0.0, -1.0, 0.0]]))
    with pytest.raises(ValueError, match="width"):
        pol(f[:, :8])
    with pytest.raises(ValueError, match="features"):
        policy_features(texts, roles, "bert")


def test_query_conditioned_logits_edge_by_edge_and_roles_only():
    s = graph_space(3, rounds=2)
    roles, texts = ["parse", "sort", "final"], ["sort then parse", "parse only", "nothing"]
    f = policy_features(texts, roles, "roles_only", max_rank=2)
    assert f.shape == (3, 3 * 5) and query_feature_dim("roles_only", 256) == 0
    pol = QueryConditioned(s, feature_dim=0, hidden=4, seed=1, node_dim=5)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        pol.node_proj.copy_(torch.randn(pol.node_proj.shape, generator=g))
        pol.pair.copy_(torch.randn(pol.pair.shape, generator=g))
    lg = pol(f)
    nodes = f.reshape(3, 3, 5)
    for b in range(3):
        h = pol.node_proj @ f[b]  # no query part: h = Q vec(f)
        for e in range(s.num_edges):
            u, v, k = int(s.src[e]), int(s.dst[e]), int(s.kind[e])
            xu = torch.cat([torch.ones(1), nodes[b, u % 3]])
            xv = torch.cat([torch.ones(1), nodes[b, v % 3]])
            want = pol.bias[e] + (h * pol.src[k, u] * pol.dst[k, v]).sum() + xu @ pol.pair[e] @ xv
            assert_close(lg[b, e], want)
    # a query that names no role: the bias plus the constant part of W_e (x = [1, 0, ...])
    assert_close(lg[2], pol.bias + pol.pair[:, 0, 0])


# ----------------------------------------------------------------------------- a learned agent order
def test_plackett_luce_logprob_hand_derived():
    # exp(s) = (1, 2, 3): P(2, 0, 1) = 3/6 * 1/3 * 2/2 = 1/6; P(0, 1, 2) = 1/6 * 2/5 * 3/3 = 1/15
    s = torch.log(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    orders = torch.tensor([[2, 0, 1], [0, 1, 2]])
    assert_close(plackett_luce_logprob(s, orders).exp(), torch.tensor([1 / 6, 1 / 15], dtype=torch.float64))
    every = torch.tensor(list(itertools.permutations(range(3))))
    assert_close(plackett_luce_logprob(s, every).exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # the mode sorts the scores: (2, 1, 0) with 3/6 * 2/3 = 1/3, the most probable of the six
    assert mode_orders(s[None]).tolist() == [[2, 1, 0]]
    assert_close(plackett_luce_logprob(s, every).exp().max(), torch.tensor(1 / 3, dtype=torch.float64))


def test_plackett_luce_entropy_hand_derived():
    f64 = dict(dtype=torch.float64)
    # M = 2 is a Bernoulli: scores (ln 3, 0) put item 0 first with 3/4, H = -(3/4 ln 3/4 + 1/4 ln 1/4)
    h2 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert_close(plackett_luce_entropy(torch.tensor([math.log(3.0), 0.0], **f64)), torch.tensor(h2, **f64))
    # M = 3, exp(s) = (2, 1, 1): item 0 first (1/2), then 1/2 each: P(0,1,2) = P(0,2,1) = 1/4; item 1
    # first (1/4), then 0 with 2/3: P(1,0,2) = 1/6, P(1,2,0) = 1/12; item 2 first likewise
    s3 = torch.log(torch.tensor([2.0, 1.0, 1.0], **f64))
    h3 = 2 * (1 / 4) * math.log(4) + 2 * (1 / 6) * math.log(6) + 2 * (1 / 12) * math.log(12)
    assert_close(plackett_luce_entropy(s3), torch.tensor(h3, **f64))
    # equal scores: the uniform order, H = log M!; batched over queries
    eq = torch.zeros(2, 4, **f64)
    assert_close(plackett_luce_entropy(eq), torch.full((2,), math.log(24), **f64))
    # the KL to the uniform order (equal reference scores) is log M! - H
    s = torch.tensor([[1.5, -0.3, 0.2, 0.0], [4.0, 0.0, 0.0, -2.0]], **f64)
    assert_close(plackett_luce_kl(s, torch.zeros(4, **f64)), math.log(24) - plackett_luce_entropy(s))
    assert_close(plackett_luce_kl(s, s), torch.zeros(2, **f64))


def test_plackett_luce_chain_rule_estimates_are_unbiased():
    # the chain-rule estimate for one order, weighted by P(order) over all 3! orders, is H (and the KL)
    f64 = dict(dtype=torch.float64)
    s = torch.tensor([0.7, -1.2, 0.4], **f64)
    r = torch.tensor([-0.5, 0.0, 1.1], **f64)
    every = all_orders(3)
    p = plackett_luce_logprob(s, every).exp()
    per_order = torch.stack([plackett_luce_entropy(s, o[None], exact_max=0) for o in every])
    assert_close((p * per_order).sum(), plackett_luce_entropy(s))
    per_order = torch.stack([plackett_luce_kl(s, r, o[None], exact_max=0) for o in every])
    assert_close((p * per_order).sum(), plackett_luce_kl(s, r))
    # one order of M = 2: H(first draw) only (the last draw is certain)
    s2 = torch.tensor([math.log(3.0), 0.0], **f64)
    one = plackett_luce_entropy(s2, torch.tensor([[1, 0]]), exact_max=0)
    assert_close(one, torch.tensor(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), **f64))
    with pytest.raises(ValueError, match="sampled orders"):
        plackett_luce_entropy(torch.zeros(8))


def test_the_plackett_luce_entropy_gradient_pulls_a_saturated_score_back():
    # M = 2: H(p), p = sigmoid(s0 - s1); dH/ds0 = -(s0 - s1) p (1 - p) = -ln 3 * 3/16 at (ln 3, 0)
    s = torch.tensor([math.log(3.0), 0.0], dtype=torch.float64, requires_grad=True)
    plackett_luce_entropy(s).backward()
    assert_close(s.grad, torch.tensor([-1.0, 1.0], dtype=torch.float64) * math.log(3.0) * 3 / 16)
    # M = 4 with one score far ahead (first with p = 0.993): ascending H lowers it, raises the others
    s = torch.tensor([5.0, 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    plackett_luce_entropy(s).backward()
    assert s.grad[0] < -0.01 and (s.grad[1:] > 0).all()
    assert_close(s.grad.sum(), torch.tensor(0.0, dtype=torch.float64))  # a shift of all scores: no change


def test_sampled_orders_follow_plackett_luce():
    s = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))
    o = sample_orders(s, 20_000, torch.Generator().manual_seed(0))[0]
    first = torch.bincount(o[:, 0], minlength=3).double() / o.shape[0]
    assert_close(first, torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64), atol=0.015, rtol=0)
    assert abs(float((o == torch.tensor([2, 1, 0])).all(1).double().mean()) - 1 / 3) < 0.015


def test_order_mask_by_hand():
    s = graph_space(4, rounds=1, order="learned")  # agents 0, 1, 2 and the final agent 3
    # spatial candidates: every i -> j, i != j, except out of the final agent: 3 * 3 = 9
    assert s.num_edges == 9 and s.learned_order and not (s.src < s.dst).all()
    allowed = order_mask(s, np.array([2, 0, 1]))
    assert sorted(zip(s.src[allowed].tolist(), s.dst[allowed].tolist())) == [
        (0, 1), (0, 3), (1, 3), (2, 0), (2, 1), (2, 3)
    ]  # fmt: skip
    t = graph_space(3, rounds=2, order="learned")  # temporal edges are never masked
    m = order_mask(t, np.array([[1, 0], [0, 1]]))
    assert m[:, t.kind == 1].all() and m.sum(1).tolist() == [9 + 2 * 3, 9 + 2 * 3]


def test_ten_thousand_sampled_ordered_graphs_are_acyclic():
    s = graph_space(5, rounds=2, order="learned")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2500, s.num_edges, generator=g) * 3
    scores = torch.randn(2500, 4, generator=g) * 2
    a, lp, orders, olp = sample_ordered_graphs(s, logits, scores, 4, g)
    graphs = a.reshape(-1, s.num_edges).numpy()
    assert graphs.shape[0] == 10_000 and not (graphs & ~order_mask(s, orders.reshape(-1, 4).numpy())).any()
    backwards = graphs[:, s.src > s.dst].any(1)  # node ids are not a topological order of these
    assert backwards.mean() > 0.5 and len({tuple(o) for o in orders.reshape(-1, 4).tolist()}) == 24
    assert all(nx.is_directed_acyclic_graph(s.to_networkx(row)) for row in graphs)
    assert_close(olp, plackett_luce_logprob(scores[:, None, :], orders))


def test_ordered_log_pi_is_log_pl_plus_the_allowed_edges_in_any_enumeration_order():
    s = graph_space(4, rounds=2, order="learned")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, s.num_edges, generator=g, dtype=torch.float64)
    scores = torch.randn(3, 3, generator=g, dtype=torch.float64)
    a, lp, orders, olp = sample_ordered_graphs(s, logits, scores, 2, g)
    rng = np.random.default_rng(0)
    for b in range(3):
        for k in range(2):
            allowed = order_mask(s, orders[b, k].numpy())
            assert (lp[b, k, ~torch.from_numpy(allowed)] == 0).all()  # masked: not drawn, log-prob 0
            # log PL by hand: the items first to last, each a softmax over those not drawn yet
            o, pl = orders[b, k].tolist(), 0.0
            for i in range(3):
                pl += float(scores[b, o[i]] - torch.logsumexp(scores[b, o[i:]], 0))
            ref = float(olp[b, k] + graph_logprob(lp[b, k]))
            for _ in range(5):
                edges = rng.permutation(np.flatnonzero(allowed))
                total = pl + _sequential_logprob(s, logits[b], a[b, k].numpy(), edges)
                assert math.isclose(total, ref, rel_tol=1e-9)


def test_levels_of_ordered_graphs_equal_networkx_topological_generations():
    s = graph_space(5, rounds=2, order="learned")
    g = torch.Generator().manual_seed(4)
    a, _, _, _ = sample_ordered_graphs(s, torch.zeros(1, s.num_edges), torch.zeros(1, 4), 100, g)
    a = a[0].numpy()
    for decide in (np.array([s.num_nodes - 1]), s.final_nodes()):
        level = batched_levels(s, a, decide)
        for row, lv in zip(a, level):
            act = active_nodes(s, row, decide)
            ref_act = set(decide.tolist()).union(*(nx.ancestors(s.to_networkx(row), int(v)) for v in decide))
            assert set(np.flatnonzero(act).tolist()) == ref_act and ((lv >= 0) == act).all()
            gens = [
                sorted(w) for w in nx.topological_generations(s.to_networkx(row).subgraph(sorted(ref_act)))
            ]
            assert [w.tolist() for w in waves(s, row, act)] == gens
            assert [sorted(np.flatnonzero(lv == i).tolist()) for i in range(len(gens))] == gens


def test_fixed_topologies_in_a_learned_order_space_are_the_fixed_order_ones():
    f, s = graph_space(5, rounds=2), graph_space(5, rounds=2, order="learned")
    for name in TOPOLOGIES:
        lf, ls = fixed_topology(f, name), fixed_topology(s, name)
        assert _edges(f, lf) == _edges(s, ls), name
        assert torch.isfinite(ls).sum() == torch.isfinite(lf).sum(), name  # random: p = 0.5 on the same edges


def test_query_conditioned_order_scores_start_uniform_and_learn():
    texts = ["sort then parse", "parse then sort"]
    roles = ["parse", "sort", "sum", "final"]
    s = graph_space(4, rounds=2, order="learned")
    pol = QueryConditioned(s, 64, hidden=8, node_dim=role_feature_dim("roles"), order=True)
    feats = policy_features(texts, roles, "roles", 64)
    assert pol(feats).shape == (2, s.num_edges) and (pol.order_scores(feats) == 0).all()
    want = torch.tensor([[1, 0, 2], [0, 1, 2]])  # sort first for the first query, parse for the second
    opt = torch.optim.Adam(pol.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        (-plackett_luce_logprob(pol.order_scores(feats), want).sum()).backward()
        opt.step()
    assert mode_orders(pol.order_scores(feats)).tolist() == want.tolist()
    with pytest.raises(ValueError, match="order head"):
        QueryConditioned(s, 64, hidden=8).order_scores(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="order"):
        graph_space(3, order="random")


def test_a_team_with_one_or_two_agents_has_a_single_order():
    """Zero or one non-final agent: one possible order, log PL 0, entropy and KL 0, graphs acyclic."""
    for agents in (1, 2):
        space = graph_space(agents, 2, order="learned")
        policy = QueryConditioned(space, 8, hidden=4, order=True)
        feats = torch.randn(3, 8)
        scores = policy.order_scores(feats)
        a, _, orders, lpl = sample_ordered_graphs(
            space, policy(feats), scores, 4, torch.Generator().manual_seed(0)
        )
        assert orders.shape == (3, 4, agents - 1) and torch.equal(lpl, torch.zeros(3, 4))
        assert torch.equal(plackett_luce_entropy(scores).abs(), torch.zeros(3))
        assert torch.equal(plackett_luce_kl(scores, torch.zeros_like(scores)).abs(), torch.zeros(3))
        assert all(
            nx.is_directed_acyclic_graph(space.to_networkx(g.numpy())) for g in a.reshape(-1, space.num_edges)
        )
