"""The execution engine: one batched call per agent per wave across all graphs and queries, waves =
networkx topological generations, the tree layout, token counts and the decision node."""

import networkx as nx
import numpy as np
import pytest
import torch

from marl.tree import TurnTree
from topologies.execution import run_graphs
from topologies.graphs import active_nodes, graph_space, order_mask, sample_graphs, sample_ordered_graphs
from topologies.testbed import Message, Testbed, TestbedConfig


class Counting:
    """Wraps an agent and records every batched call it gets."""

    def __init__(self, agent):
        self.agent, self.name, self.batches = agent, agent.name, []

    def respond(self, queries, inboxes):
        self.batches.append(len(queries))
        return self.agent.respond(queries, inboxes)


def _setup(b=3, k=5, rounds=2, seed=0):
    tb = Testbed(TestbedConfig(train_queries=8, heldout_queries=4))
    space = graph_space(tb.num_agents, rounds)
    agents = [Counting(a) for a in tb.agents(np.random.default_rng(seed))]
    a, lp = sample_graphs(torch.zeros(b, space.num_edges), k, generator=torch.Generator().manual_seed(seed))
    return tb, space, agents, a.numpy(), lp.numpy()


def test_one_batched_call_per_agent_per_wave():
    tb, space, agents, a, lp = _setup()
    tree = TurnTree()
    ex = run_graphs(tree, space, agents, tb.train[:3], a, lp, Testbed.score)
    # expected: for each global wave w, the agents that have at least one node in wave w of some graph
    final = np.array([space.num_nodes - 1])
    waves_of = {}
    for b in range(3):
        for k in range(5):
            act = active_nodes(space, a[b, k], final)
            g = space.to_networkx(a[b, k]).subgraph(np.flatnonzero(act).tolist())
            for w, nodes in enumerate(nx.topological_generations(g)):
                for v in nodes:
                    waves_of.setdefault(w, []).append(v % space.num_agents)
    for i, ag in enumerate(agents):
        assert len(ag.batches) == sum(i in set(v) for v in waves_of.values())
        assert sum(ag.batches) == sum(v.count(i) for v in waves_of.values())
    assert ex.batched_calls == sum(len(set(v)) for v in waves_of.values())
    assert ex.batched_calls < ex.calls.sum()  # calls of many graphs shared each batch


def test_tree_layout_waves_and_tokens():
    tb, space, agents, a, lp = _setup(b=2, k=4)
    tree = TurnTree()
    ex = run_graphs(tree, space, agents, tb.train[:2], a, lp, Testbed.score)
    final = np.array([space.num_nodes - 1])
    for b in range(2):
        root = tree.parent[ex.graph_nodes[b, 0]]
        assert root >= 0 and tree.parent[root] == -1 and (tree.parent[ex.graph_nodes[b]] == root).all()
        for k in range(4):
            g = int(ex.graph_nodes[b, k])
            gp = tree.payloads[g]
            assert tree.agent_names[tree.agent[g]] == "topology"
            np.testing.assert_array_equal(gp.completion_ids, a[b, k].astype(np.int32))
            np.testing.assert_allclose(gp.logprobs, lp[b, k], rtol=1e-6)
            calls = tree.children(g)
            act = active_nodes(space, a[b, k], final)
            assert sorted(tree.payloads[c].data["node"] for c in calls) == np.flatnonzero(act).tolist()
            # the wave recorded on each call is its topological generation
            sub = space.to_networkx(a[b, k]).subgraph(np.flatnonzero(act).tolist())
            gen = {v: w for w, nodes in enumerate(nx.topological_generations(sub)) for v in nodes}
            for c in calls:
                d = tree.payloads[c].data
                assert tree.turn[c] == gen[d["node"]]
                assert tree.agent_names[tree.agent[c]] == agents[d["node"] % space.num_agents].name
                assert d["sources"] == sorted(sub.predecessors(d["node"]))
            tok = sum(
                tree.payloads[c].data["prompt_tokens"] + tree.payloads[c].data["completion_tokens"]
                for c in calls
            )
            assert gp.data["tokens"] == tok == ex.tokens[b, k] and ex.calls[b, k] == len(calls)
            assert (tree.reward[calls] == ex.scores[b, k]).all() and tree.reward[g] == ex.scores[b, k]


class Fixed:
    """Answers a fixed text per node id of the last round (for the vote)."""

    def __init__(self, name, answer):
        self.name, self.answer = name, answer

    def respond(self, queries, inboxes):
        return [Message(self.answer, 0, True, 3, 2) for _ in queries]


def test_majority_vote_and_last_agent_decision():
    space = graph_space(3)
    a = np.zeros((1, 1, space.num_edges), dtype=bool)  # no edges: all three answer alone
    agents = [Fixed("x", "A"), Fixed("y", "B"), Fixed("z", "B")]
    lp = np.zeros(a.shape)
    ex = run_graphs(
        TurnTree(), space, agents, ["q"], a, lp, lambda q, ans: float(ans == "B"), decision="majority"
    )
    assert ex.answers == [["B"]] and ex.calls[0, 0] == 3 and ex.tokens[0, 0] == 15
    agents[2] = Fixed("z", "C")  # a three-way tie: the first answer in node order
    ex = run_graphs(TurnTree(), space, agents, ["q"], a, lp, lambda q, ans: 1.0, decision="majority")
    assert ex.answers == [["A"]]
    # decision "last": only the final agent runs when nobody talks to it
    ex = run_graphs(TurnTree(), space, agents, ["q"], a, lp, lambda q, ans: 1.0)
    assert ex.answers == [["C"]] and ex.calls[0, 0] == 1


def test_a_batch_judge_scores_every_graph_in_one_call_with_the_same_values():
    tb, space, agents, a, lp = _setup(b=3, k=5)
    seen = []

    def score_many(pairs):
        seen.append(list(pairs))
        return [Testbed.score(q, ans) for q, ans in pairs]

    one = run_graphs(TurnTree(), space, agents, tb.train[:3], a, lp, Testbed.score)
    agents2 = [Counting(x.agent) for x in agents]
    many = run_graphs(TurnTree(), space, agents2, tb.train[:3], a, lp, Testbed.score, score_many=score_many)
    assert len(seen) == 1 and len(seen[0]) == 3 * 5
    # the pairs come query-major, graph-minor: pair b * K + k is graph k of query b
    assert [q for q, _ in seen[0]] == [tb.train[b] for b in range(3) for _ in range(5)]
    assert [ans for _, ans in seen[0]] == [many.answers[b][k] for b in range(3) for k in range(5)]
    np.testing.assert_array_equal(
        many.scores, [[Testbed.score(tb.train[b], many.answers[b][k]) for k in range(5)] for b in range(3)]
    )
    assert one.scores.shape == many.scores.shape == (3, 5)
    # a judge that drops or adds a verdict is refused, not reshaped into the wrong graphs
    for wrong in (lambda pairs: [1.0] * (len(pairs) - 1), lambda pairs: [1.0] * (len(pairs) + 5)):
        with pytest.raises(ValueError, match="score_many returned"):
            run_graphs(TurnTree(), space, agents2, tb.train[:3], a, lp, Testbed.score, score_many=wrong)


def test_learned_orders_run_in_networkx_waves_and_are_kept_on_the_graph_nodes():
    tb = Testbed(TestbedConfig(train_queries=8, heldout_queries=4))
    space = graph_space(tb.num_agents, 2, order="learned")
    agents = [Counting(a) for a in tb.agents(np.random.default_rng(0))]
    g = torch.Generator().manual_seed(0)
    a, lp, orders, olp = sample_ordered_graphs(
        space, torch.zeros(3, space.num_edges), torch.zeros(3, 4), 5, g
    )
    a = a.numpy()
    assert (a[..., space.src > space.dst]).any()  # some graphs run against node id order
    tree = TurnTree()
    ex = run_graphs(tree, space, agents, tb.train[:3], a, lp.numpy(), Testbed.score,
                    orders=orders.numpy(), order_logprobs=olp.numpy())  # fmt: skip
    final = np.array([space.num_nodes - 1])
    waves_of = {}
    for b in range(3):
        for k in range(5):
            gn = int(ex.graph_nodes[b, k])
            data = tree.payloads[gn].data
            assert data["order"] == orders[b, k].tolist() and data["order_logprob"] == pytest.approx(
                float(olp[b, k])
            )
            np.testing.assert_array_equal(data["allowed"], order_mask(space, orders[b, k].numpy()))
            act = active_nodes(space, a[b, k], final)
            gens = list(
                nx.topological_generations(space.to_networkx(a[b, k]).subgraph(np.flatnonzero(act).tolist()))
            )
            wave = {v: w for w, nodes in enumerate(gens) for v in nodes}
            for w, nodes in enumerate(gens):
                for v in nodes:
                    waves_of.setdefault(w, []).append(v % space.num_agents)
            calls = np.flatnonzero(tree.parent == gn)
            assert {tree.payloads[c].data["node"]: int(tree.turn[c]) for c in calls} == wave
    assert ex.batched_calls == sum(len(set(v)) for v in waves_of.values())
    with pytest.raises(ValueError, match="allowed"):  # an edge its order masks
        bad = orders.numpy().copy()
        bad[..., :] = bad[..., ::-1]
        run_graphs(TurnTree(), space, agents, tb.train[:3], a, lp.numpy(), Testbed.score,
                   orders=bad, order_logprobs=olp.numpy())  # fmt: skip
