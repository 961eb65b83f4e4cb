"""Inspect a search tree: export one tree of a ``TurnTree`` to JSON and draw it to a PNG.

Each node record holds its id, parent, depth, agent name, reward and, from the payload, the
program, action, test status and failing-test messages the search stored in ``Turn.data``.
The picture puts depth on the vertical axis, colours nodes by agent and labels them with their
reward (a thick border marks nodes that pass every public test).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from marl.tree import TurnTree

DATA_KEYS = ("program", "action", "status", "passed", "total", "failures", "private_pass", "task_id")


def tree_nodes(tree: TurnTree, root: int) -> np.ndarray:
    """Node ids of the tree rooted at ``root`` in creation order."""
    if tree.parent[root] >= 0:
        raise ValueError(f"node {root} is not a root (parent {int(tree.parent[root])})")
    return np.flatnonzero(tree.root_of() == root)


def tree_to_dict(tree: TurnTree, root: int) -> dict[str, Any]:
    """A JSON-ready record of one search tree: ``{"root", "agents", "nodes": [...]}``."""
    nodes = []
    for i in tree_nodes(tree, root).tolist():
        r = float(tree.reward[i])
        a = int(tree.agent[i])
        rec: dict[str, Any] = {
            "id": i,
            "parent": int(tree.parent[i]),
            "depth": int(tree.depth[i]),
            "agent": tree.agent_names[a] if a >= 0 else None,
            "reward": None if math.isnan(r) else r,
        }
        p = tree.payloads[i]
        if p is not None:
            rec["text"] = p.text
            rec["finish_reason"] = p.finish_reason
            rec["completion_tokens"] = len(p.completion_ids)
            for k in DATA_KEYS:
                if k in p.data:
                    v = p.data[k]
                    rec[k] = [list(x) for x in v] if k == "failures" else v
        nodes.append(rec)
    return {"root": int(root), "agents": list(tree.agent_names), "nodes": nodes}


def save_tree_json(tree: TurnTree, root: int, path: str | Path) -> Path:
    """Write ``tree_to_dict`` to ``path`` (indented JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree_to_dict(tree, root), indent=1, default=_plain))
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def layout(parent: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, float]]:
    """Tidy layered positions: leaves spread left to right in depth-first order, a parent centred
    over its children, ``y = -depth``."""
    ids = [int(i) for i in ids]
    kids: dict[int, list[int]] = {i: [] for i in ids}
    root = None
    for i in ids:
        p = int(parent[i])
        if p in kids:
            kids[p].append(i)
        else:
            root = i
    pos: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    def place(v: int, d: int) -> float:  # depth-first; trees are shallow
        if not kids[v]:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(c, d + 1) for c in kids[v]]
            x = (xs[0] + xs[-1]) / 2
        pos[v] = (x, -float(d))
        return x

    if root is not None:
        place(root, 0)
    return pos


def draw_tree(tree: TurnTree, root: int, path: str | Path, *, title: str = "") -> Path:
    """Draw one search tree to a PNG with networkx + matplotlib (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    ids = tree_nodes(tree, root)
    g = nx.DiGraph()
    g.add_nodes_from(ids.tolist())
    g.add_edges_from((int(tree.parent[i]), int(i)) for i in ids.tolist() if tree.parent[i] >= 0)
    pos = layout(tree.parent, ids)
    cmap = plt.get_cmap("tab10")
    colors, labels, widths = [], {}, []
    for i in ids.tolist():
        a = int(tree.agent[i])
        colors.append("lightgray" if a < 0 else cmap(a % 10))
        r = float(tree.reward[i])
        labels[i] = "task" if a < 0 else f"{r:.2f}"
        widths.append(3.0 if (not math.isnan(r) and r >= 1.0) else 0.5)
    width = max(4.0, 0.7 * (max((x for x, _ in pos.values()), default=0) + 1))
    height = max(2.5, 1.2 * (int(tree.depth[ids].max()) + 1))
    fig, ax = plt.subplots(figsize=(min(width, 40), height))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=False, edge_color="gray")
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_color=colors, edgecolors="black", linewidths=widths, node_size=450
    )
    nx.draw_networkx_labels(g, pos, labels=labels, ax=ax, font_size=7)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=cmap(k % 10), label=name)
        for k, name in enumerate(tree.agent_names)
    ]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right")
    ax.set_title(title or f"search tree {root}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
