"""Pictures of a learned topology: a heat map of edge probabilities per query type and a drawing of
the most probable graph of one query (networkx + matplotlib, written into the run directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from topologies.graphs import GraphSpace


def edge_heatmap(probs: np.ndarray, rows: list[str], edges: list[str], path: Path) -> Path:
    """Heat map of ``probs`` (R, E): one row per query type, one column per candidate edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(edges)), max(3, 0.25 * len(rows) + 1.5)))
    im = ax.imshow(probs, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(edges)), edges, rotation=90, fontsize=6)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    ax.set_title("edge probability per query type")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_graph(space: GraphSpace, a: np.ndarray, names: list[str], title: str, path: Path) -> Path:
    """The graph ``a`` (E,) over the unrolled nodes: agents left to right, rounds top to bottom;
    spatial edges solid, temporal edges dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = space.to_networkx(a)
    pos = {v: (int(space.node_agent(v)), -int(space.node_round(v))) for v in g.nodes}
    labels = {v: f"{names[int(space.node_agent(v))]}\nr{int(space.node_round(v))}" for v in g.nodes}
    on = np.asarray(a, dtype=bool)
    spatial = [(int(u), int(v)) for u, v, k in zip(space.src[on], space.dst[on], space.kind[on]) if k == 0]
    temporal = [(int(u), int(v)) for u, v, k in zip(space.src[on], space.dst[on], space.kind[on]) if k == 1]
    fig, ax = plt.subplots(figsize=(1.6 * space.num_agents + 1, 1.6 * space.rounds + 1))
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color="#cfe3f7", node_size=900)
    nx.draw_networkx_labels(g, pos, labels, ax=ax, font_size=7)
    nx.draw_networkx_edges(g, pos, spatial, ax=ax, arrows=True, connectionstyle="arc3,rad=0.2")
    nx.draw_networkx_edges(g, pos, temporal, ax=ax, arrows=True, style="dashed", edge_color="#888888")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_policy(policy, task, space: GraphSpace, feats, names: list[str], out: Path) -> None:
    """Heat map of the policy's mean edge probabilities per held-out query type (the testbed's skill
    sequences; one row of all held-out queries for other tasks) and the most probable graph of the
    first held-out query (under a learned order: its most probable order), into the folder ``out``;
    ``feats`` is the policy's input for ``task.heldout``."""
    import torch

    from topologies.graphs import mode_orders, order_mask
    from topologies.team import edge_names
    from topologies.testbed import Testbed

    with torch.no_grad():
        p = torch.sigmoid(policy(feats)).numpy()
        order = (
            mode_orders(policy.order_scores(feats[:1]))[0].numpy()
            if getattr(policy, "learns_order", False)
            else None
        )
    if isinstance(task, Testbed):
        types = sorted({q.skills for q in task.heldout})
        rows = np.stack([p[[q.skills == t for q in task.heldout]].mean(0) for t in types])
        labels = [" > ".join(names[s] for s in t) for t in types]
    else:
        rows, labels = p.mean(0, keepdims=True), ["all held-out queries"]
    edge_heatmap(rows, labels, edge_names(space, names), out / "topology_heatmap.png")
    a, title = p[0] > 0.5, f"most probable graph: {task.heldout[0].text}"
    if order is not None:  # a learned order: the most probable order masks the edges
        a &= order_mask(space, order)
        title += f"\norder: {' > '.join(names[i] for i in order)} > {names[-1]}"
    draw_graph(space, a, names, title, out / "topology_graph.png")
