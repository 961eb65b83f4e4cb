"""Search metrics on hand-built forests."""

import math

import numpy as np
from numpy.testing import assert_allclose

from search.metrics import (
    agent_shares,
    best_nodes,
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
