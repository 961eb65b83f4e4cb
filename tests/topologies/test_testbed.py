"""The skill-chain testbed: exact success probabilities by hand, the oracle against enumerating every
path with networkx, and the engine's empirical accuracy against the exact value."""

import itertools

import networkx as nx
import numpy as np
import pytest

from marl.tree import TurnTree
from topologies.execution import run_graphs
from topologies.graphs import fixed_topology, graph_space, order_mask
from topologies.testbed import Query, Testbed, TestbedConfig, oracle_probability, success_probability

# 2 specialists (parse = 0, sort = 1) + final; p_expert .9, p_novice .2, p_final .5
CFG = TestbedConfig(num_skills=2, min_steps=1, max_steps=2, p_expert=0.9, p_novice=0.2, p_final=0.5)


def _graph(space, edges):
    a = np.zeros(space.num_edges, dtype=bool)
    for u, v in edges:
        a[np.flatnonzero((space.src == u) & (space.dst == v))[0]] = True
    return a


def test_success_probability_by_hand():
    tb = Testbed(CFG)
    s = graph_space(3)  # nodes 0 parse, 1 sort, 2 final
    rel = tb.reliability
    # parse -> sort -> final on (parse, sort): 0.9 * 0.9, the final agent passes the answer on
    assert success_probability(s, _graph(s, [(0, 1), (1, 2)]), (0, 1), rel) == pytest.approx(0.81)
    # the same graph on (sort, parse): parse does sort (0.2), sort does parse (0.2)
    assert success_probability(s, _graph(s, [(0, 1), (1, 2)]), (1, 0), rel) == pytest.approx(0.04)
    # (sort, parse) with sort -> final only: sort does its step (0.9), the final agent parse (0.5)
    assert success_probability(s, _graph(s, [(1, 2)]), (1, 0), rel) == pytest.approx(0.45)
    # final alone does both: 0.25; final hears parse and sort: sort's message (progress 2 after
    # parse -> sort) wins over parse's (progress 1)
    assert success_probability(s, _graph(s, []), (0, 1), rel) == pytest.approx(0.25)
    assert success_probability(s, _graph(s, [(0, 1), (0, 2), (1, 2)]), (0, 1), rel) == pytest.approx(0.81)
    # the final agent of an earlier round also finishes the task: final(r0) -> final(r1) on (parse, sort)
    s2 = graph_space(3, 2)
    assert success_probability(s2, _graph(s2, [(2, 5)]), (0, 1), rel) == pytest.approx(0.25)
    assert success_probability(s2, _graph(s2, [(0, 1), (1, 2), (2, 5)]), (0, 1), rel) == pytest.approx(0.81)
    # ties in progress go to the lowest node id: parse and sort both alone, both -> final, (sort,):
    # parse's message (progress 1, correct with 0.2) wins the tie over sort's (0.9)
    assert success_probability(s, _graph(s, [(0, 2), (1, 2)]), (1,), rel) == pytest.approx(0.2)


def _oracle_by_enumeration(space, skills, rel):
    g = nx.DiGraph(list(zip(space.src.tolist(), space.dst.tolist())))
    final = space.num_nodes - 1
    paths = [[final]] + [p for v in range(final) for p in nx.all_simple_paths(g, v, final)]
    return max(success_probability(space, _graph(space, list(zip(p, p[1:]))), skills, rel) for p in paths)


@pytest.mark.parametrize("rounds", [1, 2])
def test_oracle_equals_the_best_path_found_by_enumeration(rounds):
    tb = Testbed(TestbedConfig(num_skills=3, min_steps=1, max_steps=3))
    s = graph_space(tb.num_agents, rounds)
    for n in (1, 2, 3):
        for skills in itertools.permutations(range(3), n):
            ref = _oracle_by_enumeration(s, skills, tb.reliability)
            assert oracle_probability(s, skills, tb.reliability) == pytest.approx(ref)


def test_no_graph_beats_the_oracle_and_the_best_graph_depends_on_the_query():
    tb = Testbed(TestbedConfig(num_skills=3, min_steps=2, max_steps=3))
    s = graph_space(tb.num_agents, 2)
    rng = np.random.default_rng(0)
    graphs = rng.random((300, s.num_edges)) < rng.random((300, 1))
    for skills in [(0, 1, 2), (2, 1), (1, 0, 2)]:
        orc = oracle_probability(s, skills, tb.reliability)
        assert max(success_probability(s, a, skills, tb.reliability) for a in graphs) <= orc + 1e-12
    # a specialist chain parse -> sort -> sum -> final is the oracle for (0, 1, 2) and poor for (2, 1, 0)
    chain = _graph(s, [(4, 5), (5, 6), (6, 7)])
    assert success_probability(s, chain, (0, 1, 2), tb.reliability) == pytest.approx(0.95**3)
    # on (sum, sort, parse) parse does sum (0.3), sort does sort (0.95), sum does parse (0.3)
    assert success_probability(s, chain, (2, 1, 0), tb.reliability) == pytest.approx(0.3 * 0.95 * 0.3)
    assert oracle_probability(s, (2, 1, 0), tb.reliability) > 0.5


def test_engine_accuracy_matches_the_exact_probability():
    tb = Testbed(TestbedConfig(num_skills=3, min_steps=1, max_steps=3))
    s = graph_space(tb.num_agents, 2)
    rng = np.random.default_rng(1)
    graphs = [(fixed_topology(s, "complete") > 0).numpy()] + list(rng.random((7, s.num_edges)) < 0.5)
    n = 3000
    for i, a in enumerate(graphs):
        skills = tuple(int(x) for x in rng.permutation(3)[: 2 + i % 2])
        q = Query("task", skills, "ok")
        exact = success_probability(s, a, skills, tb.reliability)
        ex = run_graphs(
            TurnTree(),
            s,
            tb.agents(np.random.default_rng(i)),
            [q],
            np.broadcast_to(a, (1, n, s.num_edges)),
            np.zeros((1, n, s.num_edges)),
            Testbed.score,
        )
        assert abs(ex.scores.mean() - exact) <= 4 * np.sqrt(exact * (1 - exact) / n) + 1e-9, (i, skills)


def test_queries_are_seeded_and_name_their_skills_in_order():
    a, b = Testbed(TestbedConfig(seed=3)), Testbed(TestbedConfig(seed=3))
    assert a.train == b.train and a.heldout != Testbed(TestbedConfig(seed=4)).heldout
    for q in a.train[:20]:
        names = [w for w in q.text.split() if w in ("parse", "sort", "sum", "format")]
        assert tuple(("parse", "sort", "sum", "format").index(w) for w in names) == q.skills
    with pytest.raises(ValueError, match="max_steps"):
        TestbedConfig(num_skills=2, max_steps=3).validate()


# ----------------------------------------------------------------------------- a learned agent order
def test_success_probability_when_node_ids_are_not_a_topological_order():
    tb = Testbed(CFG)
    s = graph_space(3, order="learned")  # nodes 0 parse, 1 sort, 2 final; sort -> parse is a candidate
    rel = tb.reliability
    # sort -> parse -> final on (sort, parse): 0.9 * 0.9; walked in id order, parse would run first
    assert success_probability(s, _graph(s, [(1, 0), (0, 2)]), (1, 0), rel) == pytest.approx(0.81)
    # the fixed order cannot: its best is sort -> final (0.9 * 0.5)
    assert oracle_probability(graph_space(3), (1, 0), rel) == pytest.approx(0.45)
    assert oracle_probability(s, (1, 0), rel) == pytest.approx(0.81)
    # ties still go to the lowest node id, whatever order masked the edges: parse and sort alone, both
    # -> final, on (sort,): parse's message (node 0, correct with 0.2) wins over sort's (0.9)
    assert order_mask(s, np.array([1, 0]))[[1, 3, 2]].all()  # edges 1 -> 2, 0 -> 2 under "sort first"
    assert success_probability(s, _graph(s, [(1, 2), (0, 2)]), (1,), rel) == pytest.approx(0.2)
    s2 = graph_space(3, 2, order="learned")  # and across rounds: sort(r1) -> parse(r1) -> final(r1)
    assert success_probability(s2, _graph(s2, [(4, 3), (3, 5)]), (1, 0), rel) == pytest.approx(0.81)


def _oracle_any_order_by_enumeration(space, skills, rel):
    """Every order of the non-final agents, every path of its masked candidate DAG into the final node."""
    final, best = space.num_nodes - 1, 0.0
    for order in itertools.permutations(range(space.num_agents - 1)):
        on = order_mask(space, np.array(order))
        g = nx.DiGraph(list(zip(space.src[on].tolist(), space.dst[on].tolist())))
        g.add_nodes_from(range(space.num_nodes))
        paths = [[final]] + [p for v in range(final) for p in nx.all_simple_paths(g, v, final)]
        for p in paths:
            best = max(best, success_probability(space, _graph(space, list(zip(p, p[1:]))), skills, rel))
    return best


@pytest.mark.parametrize("rounds", [1, 2])
def test_any_order_oracle_equals_the_best_order_and_path_found_by_enumeration(rounds):
    tb = Testbed(TestbedConfig(num_skills=3, min_steps=1, max_steps=3))
    s = graph_space(tb.num_agents, rounds, order="learned")
    fixed = graph_space(tb.num_agents, rounds)
    for skills in [(0,), (2, 1), (1, 0, 2), (2, 1, 0)]:
        ref = _oracle_any_order_by_enumeration(s, skills, tb.reliability)
        assert oracle_probability(s, skills, tb.reliability) == pytest.approx(ref)
        assert ref >= oracle_probability(fixed, skills, tb.reliability) - 1e-12
    # against the fixed order it gains where the skills run against the role order (one round)
    assert oracle_probability(s, (2, 1, 0), tb.reliability) > oracle_probability(
        fixed, (2, 1, 0), tb.reliability
    )


def test_engine_accuracy_matches_the_exact_probability_under_learned_orders():
    tb = Testbed(TestbedConfig(num_skills=3, min_steps=1, max_steps=3))
    s = graph_space(tb.num_agents, 2, order="learned")
    rng = np.random.default_rng(2)
    n = 1500
    for i, order in enumerate([(2, 1, 0), (1, 2, 0), (2, 0, 1)]):
        a = (rng.random(s.num_edges) < 0.5) & order_mask(s, np.array(order))
        assert (a & (s.src > s.dst)).any()  # a graph whose node ids are not a topological order
        skills = tuple(int(x) for x in rng.permutation(3)[: 2 + i % 2])
        exact = success_probability(s, a, skills, tb.reliability)
        ex = run_graphs(
            TurnTree(),
            s,
            tb.agents(np.random.default_rng(i)),
            [Query("task", skills, "ok")],
            np.broadcast_to(a, (1, n, s.num_edges)),
            np.zeros((1, n, s.num_edges)),
            Testbed.score,
        )
        assert abs(ex.scores.mean() - exact) <= 4 * np.sqrt(exact * (1 - exact) / n) + 1e-9, (i, skills)
