"""Search metrics over the program nodes of a forest of search trees (pure functions).

Inputs are per program node (every non-root node): ``tree`` (its root id, ``(N,)``), ``public``
(share of public tests passed, the search reward), ``private_pass`` (bool: passes every private
test), ``agent`` (index). ``trees`` lists every tree's root id, so a tree without any program
counts as a failure. Nodes are in creation order (node ids are a topological, chronological order).

* pass@1: per tree, the node with the best public score (ties: the earliest) is submitted and
  judged on the private tests; the mean over trees.
* pass@N: per tree, whether any node passes the private tests; the mean over trees.
* shares: per agent, its share of the nodes and of the successful nodes.
* nodes to first success: per tree, the 1-based position (creation order) of the first
  successful node, NaN when none.

Shape legend: ``N`` program nodes, ``B`` trees, ``A`` agents.
"""

from __future__ import annotations

import numpy as np

from marl.tree import TurnTree
from search.tasks import CodeTask, task_families


def _tree_index(tree: np.ndarray, trees: np.ndarray) -> np.ndarray:
    trees = np.asarray(trees, dtype=np.int64)
    order = np.argsort(trees, kind="stable")
    pos = np.searchsorted(trees[order], tree)
    pos = np.minimum(pos, max(trees.size - 1, 0))
    if tree.size and (trees.size == 0 or np.any(trees[order][pos] != tree)):
        raise ValueError("every node's tree id must be listed in trees")
    return order[pos]


def best_nodes(tree: np.ndarray, public: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """(B,) index (into the node arrays) of each tree's best node by public score, earliest on ties;
    -1 for a tree without nodes."""
    tree = np.asarray(tree, dtype=np.int64)
    public = np.asarray(public, dtype=np.float64)
    b = _tree_index(tree, trees)
    n = tree.size
    # sort by (tree, -public, position): the first row of each tree is its best node
    order = np.lexsort((np.arange(n), -public, b))
    first = np.ones(n, dtype=bool)
    first[1:] = b[order][1:] != b[order][:-1]
    out = np.full(np.asarray(trees).size, -1, dtype=np.int64)
    out[b[order][first]] = order[first]
    return out


def pass_at_1(tree: np.ndarray, public: np.ndarray, private_pass: np.ndarray, trees: np.ndarray) -> float:
    """Mean over trees of whether the best-by-public node passes the private tests."""
    best = best_nodes(tree, public, trees)
    if best.size == 0:
        return 0.0
    ok = np.asarray(private_pass, dtype=bool)
    hit = np.zeros(best.size, dtype=bool)
    has = best >= 0
    hit[has] = ok[best[has]]
    return float(hit.mean())


def pass_at_n(tree: np.ndarray, private_pass: np.ndarray, trees: np.ndarray) -> float:
    """Mean over trees of whether any node passes the private tests."""
    trees = np.asarray(trees, dtype=np.int64)
    if trees.size == 0:
        return 0.0
    b = _tree_index(np.asarray(tree, dtype=np.int64), trees)
    hit = np.zeros(trees.size, dtype=bool)
    hit[b[np.asarray(private_pass, dtype=bool)]] = True
    return float(hit.mean())


def agent_shares(agent: np.ndarray, success: np.ndarray, n_agents: int) -> tuple[np.ndarray, np.ndarray]:
    """((A,) share of nodes, (A,) share of successful nodes) per agent; zeros when there are none."""
    agent = np.asarray(agent, dtype=np.int64)
    success = np.asarray(success, dtype=bool)
    nodes = np.bincount(agent, minlength=n_agents).astype(np.float64)
    wins = np.bincount(agent[success], minlength=n_agents).astype(np.float64)
    return nodes / max(nodes.sum(), 1.0), wins / max(wins.sum(), 1.0)


def nodes_to_first_success(tree: np.ndarray, success: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """(B,) 1-based creation-order position of each tree's first successful node; NaN when none."""
    tree = np.asarray(tree, dtype=np.int64)
    b = _tree_index(tree, trees)
    n_trees = np.asarray(trees).size
    rank = np.zeros(tree.size, dtype=np.int64)
    order = np.lexsort((np.arange(tree.size), b))  # nodes grouped by tree, creation order inside
    counts = np.bincount(b, minlength=n_trees)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank[order] = np.arange(tree.size) - starts[b[order]] + 1
    out = np.full(n_trees, np.inf)
    s = np.asarray(success, dtype=bool)
    np.minimum.at(out, b[s], rank[s].astype(np.float64))
    out[np.isinf(out)] = np.nan
    return out


def search_summary(
    tree: np.ndarray,
    public: np.ndarray,
    private_pass: np.ndarray,
    agent: np.ndarray,
    trees: np.ndarray,
    agent_names: list[str],
    prefix: str = "search",
) -> dict[str, float]:
    """pass@1, pass@N, per-agent shares of nodes and successes (private), nodes to first success."""
    out = {
        f"{prefix}/pass@1": pass_at_1(tree, public, private_pass, trees),
        f"{prefix}/pass@N": pass_at_n(tree, private_pass, trees),
    }
    node_share, win_share = agent_shares(agent, private_pass, len(agent_names))
    for i, name in enumerate(agent_names):
        out[f"{prefix}/{name}/node_share"] = float(node_share[i])
        out[f"{prefix}/{name}/success_share"] = float(win_share[i])
    first = nodes_to_first_success(tree, private_pass, trees)
    out[f"{prefix}/nodes_to_first_success"] = (
        float(np.nanmean(first)) if np.isfinite(first).any() else float("nan")
    )
    return out


# ----------------------------------------------------------------------------- forests of search trees
def program_nodes(tree: TurnTree, roots: np.ndarray) -> np.ndarray:
    """Program (non-root) node ids of the given trees, in creation order."""
    in_play = np.zeros(len(tree), dtype=bool)
    in_play[roots] = True
    return np.flatnonzero(in_play[tree.root_of()] & (tree.parent >= 0))


def tree_metrics(
    tree: TurnTree, roots: np.ndarray, private_pass: np.ndarray | None, prefix: str
) -> dict[str, float]:
    """pass@1 / pass@N / shares / nodes-to-first-success of the trees (private tests when given,
    else "passes every public test" stands in for success)."""
    nodes = program_nodes(tree, roots)
    public = tree.reward[nodes]
    success = public >= 1.0 if private_pass is None else private_pass
    return search_summary(
        tree.root_of()[nodes], public, success, tree.agent[nodes], roots, tree.agent_names, prefix=prefix
    )


def family_metrics(
    tree: TurnTree, roots: np.ndarray, tasks: list[CodeTask], private_pass: np.ndarray, prefix: str
) -> dict[str, float]:
    """``{prefix}/{family}/pass@1`` and ``pass@N`` of the trees of each task family (``roots[i]`` is
    the tree of ``tasks[i]``, ``private_pass`` follows ``program_nodes(tree, roots)``); {} when the
    tasks have no families."""
    nodes = program_nodes(tree, roots)
    out = {}
    for fam in task_families(tasks):
        sub = roots[[t.meta["family"] == fam for t in tasks]]
        m = tree_metrics(tree, sub, private_pass[np.isin(nodes, program_nodes(tree, sub))], "s")
        out[f"{prefix}/{fam}/pass@1"], out[f"{prefix}/{fam}/pass@N"] = m["s/pass@1"], m["s/pass@N"]
    return out
