"""Diagnostic probes of the topology collapse on the skill-chain testbed (single seed, seconds each).

    python benchmarks/probe_topology_collapse.py signal
    python benchmarks/probe_topology_collapse.py fit --features hash|ordered|roles|roles_only
    python benchmarks/probe_topology_collapse.py single --rule graph|edge|contrast --skills 1,0
    python benchmarks/probe_topology_collapse.py query --rule graph|edge|contrast|reinforce
        --features hash|ordered|roles|roles_only|onehot [--entropy C] [--explore EPS] [--graphs K]

- ``signal``: at the initial policy (p = 0.5 and p = sigmoid(-2)), the within-group spread of the
  graphs' exact success probabilities, the share of groups whose sampled scores are all equal, and the
  mean logit gradient of the edge-level (``mean``) rule against the graph-level rule.
- ``single``: free logits (one per edge) trained on ONE query type (``--skills``, e.g. ``1,0`` = sort
  then parse); prints the exact success probability of the most probable graph against that type's
  oracle. Separates the credit rule from the query conditioning.
- ``query``: the query-conditioned policy on every training query; ``--features onehot`` replaces the
  hashed n-grams with a one-hot of the query's skill sequence (a DIAGNOSTIC that hands the policy the
  query type; not a method), to measure how much of the gap is the features; ``ordered`` and
  ``roles`` are the policy's own alternatives (``topologies.graphs.policy_features``).
- ``fit``: the query-conditioned policy fitted by maximum likelihood (300 Adam steps, lr 0.05, full
  batch) to the oracle graph (best path) of every training query; the held-out accuracy of its most
  probable graph is the ceiling of the policy's input (``--features``), with no RL in the way.
- ``--entropy C`` / ``--explore EPS``: the learner's entropy bonus and epsilon-mixed sampling
  (``topologies.learner``); ``--graphs K``: graphs per query.

The reward of a graph is one Bernoulli draw of its exact success probability
(``topologies.testbed.success_probability``), which has the distribution of one real execution.
Learner, credit functions and policies are the library's; lr 0.1 (free) / 0.05 (query), B = 16, K = 8.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from marl.credit.graphs import (  # noqa: E402
    edge_advantages,
    edge_contrast_advantages,
    graph_advantages,
    reinforce_advantages,
)
from topologies.graphs import (  # noqa: E402
    FreeLogits,
    QueryConditioned,
    graph_space,
    mode_graphs,
    policy_features,
    query_feature_dim,
    role_feature_dim,
    sample_graphs,
)
from topologies.learner import TopologyLearner  # noqa: E402
from topologies.testbed import Testbed, TestbedConfig, oracle_probability, success_probability  # noqa: E402


def advantages(rule: str, s: np.ndarray, a: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """(G,) scores, (G, E) decisions -> (G, E) advantages of the named rule."""
    if rule == "graph":
        return np.repeat(graph_advantages(s, gid)[:, None], a.shape[1], 1)
    if rule == "edge":
        return edge_advantages(s, a, gid)
    if rule == "reinforce":
        return np.repeat(reinforce_advantages(s)[:, None], a.shape[1], 1)
    return edge_contrast_advantages(s, a, gid)


def oracle_paths(space, types: list[tuple[int, ...]], rel: np.ndarray) -> dict[tuple[int, ...], np.ndarray]:
    """Per query type, the edge decisions (E,) of a best path into the final agent (every path of the
    candidate DAG enumerated with networkx; checked against ``oracle_probability``)."""
    full, final = space.to_networkx(np.ones(space.num_edges, bool)), space.num_nodes - 1
    index = {(int(u), int(v)): i for i, (u, v) in enumerate(zip(space.src, space.dst))}
    paths = [np.zeros(space.num_edges, bool)]  # the final agent alone
    for s in range(final):
        for path in nx.all_simple_paths(full, s, final):
            a = np.zeros(space.num_edges, bool)
            a[[index[(u, v)] for u, v in zip(path[:-1], path[1:])]] = True
            paths.append(a)
    out = {}
    for t in types:
        vals = [success_probability(space, a, t, rel) for a in paths]
        assert abs(max(vals) - oracle_probability(space, t, rel)) < 1e-9
        out[t] = paths[int(np.argmax(vals))]
    return out


def probs(space, a: np.ndarray, skills: list[tuple[int, ...]], rel: np.ndarray) -> np.ndarray:
    """(B, K, E) decisions -> (B, K) exact success probabilities."""
    return np.array([[success_probability(space, g, sk, rel) for g in row] for row, sk in zip(a, skills)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("signal", "single", "query", "fit"))
    ap.add_argument("--rule", choices=("graph", "edge", "contrast", "reinforce"), default="graph")
    ap.add_argument("--skills", default="1,0")
    ap.add_argument(
        "--features", choices=("hash", "ordered", "roles", "roles_only", "onehot"), default="hash"
    )
    ap.add_argument("--entropy", type=float, default=0.0, help="entropy bonus coefficient")
    ap.add_argument("--explore", type=float, default=0.0, help="epsilon of the mixed edge sampling")
    ap.add_argument("--graphs", type=int, default=8, help="graphs per query (K)")
    ap.add_argument("--init", type=float, default=0.0, help="initial logit of every edge")
    ap.add_argument("--lr", type=float, default=0.0, help="Adam learning rate (0: 0.1 free, 0.05 query)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kl", type=float, default=0.0, help="beta of the KL to the initial edge distribution")
    ap.add_argument(
        "--kl-ref", type=float, default=None, help="reference logit of every edge (none: initial)"
    )
    ap.add_argument("--by-type", action="store_true", help="query: per query type at the end")
    ap.add_argument("--entropy-schedule", default="constant", help="constant | linear | cosine")
    ap.add_argument("--entropy-final", type=float, default=0.0, help="entropy coefficient at the last step")
    ap.add_argument("--lr-schedule", default="constant", help="constant | linear | cosine")
    ap.add_argument("--lr-final", type=float, default=0.0, help="learning rate at the last step")
    args = ap.parse_args()
    task = Testbed(TestbedConfig())
    space, rel = graph_space(task.num_agents, 2), task.reliability
    b, k, e = 16, args.graphs, space.num_edges
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    gid = np.repeat(np.arange(b), k)

    if args.probe == "signal":
        n = 64
        for init in (0.0, -2.0):
            qs = task.sample_train(rng, n)
            a = sample_graphs(torch.full((n, e), init), k, gen)[0].numpy()
            p = probs(space, a, [q.skills for q in qs], rel)
            s = (rng.random(p.shape) < p).astype(float)
            g_ids = np.repeat(np.arange(n), k)
            pe = 1 / (1 + np.exp(-init))
            grad = {
                r: (advantages(r, s.reshape(-1), a.reshape(-1, e), g_ids).reshape(n, k, e) * (a - pe))
                .sum(1)
                .mean(0)
                for r in ("edge", "graph", "contrast")
            }
            oracle = np.mean([oracle_probability(space, q.skills, rel) for q in qs])
            print(
                f"init logit {init}: {a.sum(-1).mean():.1f} edges/graph, mean P {p.mean():.3f}, best of K "
                f"{p.max(1).mean():.3f}, oracle {oracle:.3f}, within-group std of P {p.std(1).mean():.3f}, "
                f"all-equal groups {np.mean(s.std(1) == 0):.2f}"
            )
            parts = ", ".join(f"{r} {g.mean():+.4f}" for r, g in grad.items())
            print(f"  mean logit gradient (ascent): {parts}")
        return

    if args.probe == "single":
        skills = tuple(int(x) for x in args.skills.split(","))
        pol, lr = FreeLogits(space, init=args.init), 0.1
        print(f"skills {skills}: oracle {oracle_probability(space, skills, rel):.3f}")
    else:
        types = sorted({q.skills for q in task.train + task.heldout})
        kind = "ngram" if args.features == "hash" else args.features
        kind = None if kind == "onehot" else kind
        dim = len(types) if kind is None else 256
        qdim = query_feature_dim(kind, dim) if kind else dim
        node = role_feature_dim(kind) if kind else 0
        pol = QueryConditioned(space, qdim, hidden=64, seed=args.seed, init=args.init, node_dim=node)
        lr = 0.05

    def feats(qs) -> torch.Tensor:
        if args.probe == "single":
            return torch.zeros(len(qs), 1)
        if kind is not None:
            return policy_features([q.text for q in qs], task.agent_names(), kind, dim)
        f = torch.zeros(len(qs), dim)
        f[torch.arange(len(qs)), torch.tensor([types.index(q.skills) for q in qs])] = 1.0
        return f

    def mode_accuracy(qs) -> str:
        with torch.no_grad():
            m = mode_graphs(pol(feats(qs))).numpy()
        acc = np.mean([success_probability(space, g, q.skills, rel) for g, q in zip(m, qs)])
        return f"{acc:.3f} ({m.sum(1).mean():.1f} edges)"

    if args.probe == "fit":
        best = oracle_paths(space, sorted({q.skills for q in task.train + task.heldout}), rel)
        x = feats(task.train)
        y = torch.tensor(np.stack([best[q.skills] for q in task.train]), dtype=torch.float32)
        opt = torch.optim.Adam(pol.parameters(), lr=0.05)
        for _ in range(300):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(pol(x), y)
            opt.zero_grad(), loss.backward(), opt.step()
        print(f"fitted to the oracle graphs: training queries {mode_accuracy(task.train)}, "
              f"held-out {mode_accuracy(task.heldout)}")  # fmt: skip
        return

    learner = TopologyLearner(
        pol, lr=args.lr or lr, kl_coef=args.kl, entropy_coef=args.entropy, explore=args.explore,
        entropy_schedule=args.entropy_schedule, entropy_final=args.entropy_final,
        lr_schedule=args.lr_schedule, lr_final=args.lr_final, kl_ref_logit=args.kl_ref,
    )  # fmt: skip
    for step in range(args.steps + 1):
        learner.set_step(step, args.steps)
        qs = task.sample_train(rng, b)
        if args.probe == "single":
            qs = [task.train[0]] * b  # only its skills are read below
        f = feats(qs)
        with torch.no_grad():
            a = sample_graphs(pol(f), k, gen, explore=args.explore)[0]
        sk = [skills] * b if args.probe == "single" else [q.skills for q in qs]
        p = probs(space, a.numpy(), sk, rel)
        s = (rng.random(p.shape) < p).astype(float).reshape(-1)
        adv = advantages(args.rule, s, a.numpy().reshape(-1, e), gid)
        learner.learn(f, a, torch.as_tensor(adv, dtype=torch.float32).reshape(b, k, e))
        if step % max(1, args.steps // 6) == 0:
            if args.probe == "single":
                with torch.no_grad():
                    m = mode_graphs(pol(f[:1]))[0].numpy()
                pm = success_probability(space, m, skills, rel)
                ev = f"most probable graph P {pm:.3f} ({m.sum()} edges)"
            else:
                ev = f"training queries {mode_accuracy(task.train)}, held-out {mode_accuracy(task.heldout)}"
            print(f"step {step}: sampled P {p.mean():.3f}, {ev}", flush=True)

    if args.by_type and args.probe == "query":
        qs = task.heldout
        with torch.no_grad():
            m = mode_graphs(pol(feats(qs))).numpy()
        names = task.agent_names()
        for t in sorted({q.skills for q in qs}):
            idx = [i for i, q in enumerate(qs) if q.skills == t]
            acc = np.mean([success_probability(space, m[i], t, rel) for i in idx])
            g = m[idx[0]]
            edges = [f"{names[space.node_agent(u)]}{space.node_round(u)}>{names[space.node_agent(v)]}"
                     f"{space.node_round(v)}" for u, v, on in zip(space.src, space.dst, g) if on]  # fmt: skip
            o = oracle_probability(space, t, rel)
            print(f"{'-'.join(names[s] for s in t)}: n {len(idx)}, mode {acc:.3f}, oracle "
                  f"{o:.3f}, {len(edges)} edges: {' '.join(edges)}")  # fmt: skip


if __name__ == "__main__":
    main()
