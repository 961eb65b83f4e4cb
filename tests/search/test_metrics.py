"""Search metrics on hand-built forests."""

import math

import numpy as np
from numpy.testing import assert_allclose

from marl.tree import TurnTree
from search.metrics import (
    agent_shares,
    best_nodes,
    family_metrics,
    nodes_to_first_success,
    pass_at_1,
    pass_at_n,
    search_summary,
)

# Three trees (roots 0, 10, 20); program nodes in creation order:
#   tree 0 : public [0.5, 1.0, 1.0]  private [F, F, T]   agents [0, 1, 0]
#   tree 10: public [0.0, 0.5]       private [F, T]      agents [1, 1]
#   tree 20: no programs
TREE = np.array([0, 10, 0, 0, 10])
PUBLIC = np.array([0.5, 0.0, 1.0, 1.0, 0.5])
PRIVATE = np.array([False, False, False, True, True])
AGENT = np.array([0, 1, 1, 0, 1])
TREES = np.array([0, 10, 20])


def test_best_nodes_earliest_on_ties():
    # tree 0: nodes at positions 2 and 3 both score 1.0, the earlier (index 2) wins;
    # tree 10: position 4 (0.5) beats position 1 (0.0); tree 20 has none (-1)
    assert best_nodes(TREE, PUBLIC, TREES).tolist() == [2, 4, -1]


def test_pass_at_1_and_n():
    # pass@1: tree 0 submits index 2 (private F), tree 10 index 4 (T), tree 20 nothing -> 1/3
    assert math.isclose(pass_at_1(TREE, PUBLIC, PRIVATE, TREES), 1 / 3)
    # pass@N: trees 0 and 10 have a private pass -> 2/3
    assert math.isclose(pass_at_n(TREE, PRIVATE, TREES), 2 / 3)


def test_shares_and_first_success():
    node, win = agent_shares(AGENT, PRIVATE, 2)
    # agent 0 wrote 2 of 5 nodes and 1 of the 2 successes
    assert_allclose(node, [0.4, 0.6])
    assert_allclose(win, [0.5, 0.5])
    # tree 0: its 3rd node (index 3) is the first private success; tree 10: its 2nd; tree 20: none
    first = nodes_to_first_success(TREE, PRIVATE, TREES)
    assert first[:2].tolist() == [3.0, 2.0] and math.isnan(first[2])


def test_summary_keys():
    out = search_summary(TREE, PUBLIC, PRIVATE, AGENT, TREES, ["a", "b"], prefix="eval/search")
    assert math.isclose(out["eval/search/pass@1"], 1 / 3)
    assert math.isclose(out["eval/search/nodes_to_first_success"], 2.5)  # mean of 3 and 2
    assert math.isclose(out["eval/search/b/node_share"], 0.6)


def _programs(tree: TurnTree, parents, agents, rewards) -> None:
    """Scored program nodes under ``parents`` (no payloads: the metrics read only the arrays)."""
    tree.add_nodes(np.asarray(parents), agent=np.asarray(agents, dtype=object), reward=np.asarray(rewards))


def test_family_metrics_split_the_trees_by_task_family():
    from types import SimpleNamespace

    tree = TurnTree(["a", "b"])
    r0 = tree.add_nodes([-1])
    _programs(tree, [0, 0], ["a", "b"], [1.0, 0.0])  # nodes 1, 2
    _programs(tree, [2], ["b"], [0.5])  # node 3 refines node 2
    r4 = tree.add_nodes([-1])
    _programs(tree, [4, 4], ["a", "a"], [0.0, 1.0])  # nodes 5, 6
    roots = np.concatenate([r0, r4])
    tasks = [SimpleNamespace(meta={"family": "arith"}), SimpleNamespace(meta={"family": "shown"})]
    private = np.array([False, True, True, False, True])  # nodes 1, 2, 3, 5, 6
    m = family_metrics(tree, roots, tasks, private, "x")
    # arith: the best node by public reward is node 1, which fails privately; nodes 2 and 3 pass
    # shown: the best node is node 6, which passes
    assert m == {"x/arith/pass@1": 0.0, "x/arith/pass@N": 1.0, "x/shown/pass@1": 1.0, "x/shown/pass@N": 1.0}
    assert family_metrics(tree, roots, tasks[:1] * 2, private, "x") == {}  # one family: nothing to split
