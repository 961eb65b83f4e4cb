"""Credit-assignment throughput: GRPO over 1M samples and MARS² shaping + path-level over 1M nodes.

    python benchmarks/bench_credit.py [--n 1000000] [--repeats 7]

Prints the median wall time of several runs for:
  1. ``grpo_advantages`` over N samples in groups of 8 with arbitrary, non-contiguous, shuffled group
     ids (random 64-bit hashes, and sparse integer ids), plus the whole ``CreditAssigner`` GRPO path
     over a TurnTree;
  2. ``tree_shaped_rewards`` + ``path_level_advantages`` over a forest of N nodes, plus the whole
     ``CreditAssigner("mars2_tree")`` path over a TurnTree;
and, for scale, a plain Python/verl-style loop on a smaller size and a numpy reshape over contiguous
groups. Targets on the 2-core dev box: GRPO <= 0.1 s, shaping + path-level <= 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl.credit import (  # noqa: E402
    CreditAssigner,
    CreditConfig,
    grpo_advantages,
    path_level_advantages,
    tree_shaped_rewards,
)
from marl.tree import TurnTree  # noqa: E402


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def verl_style_grpo(scores: list[float], index: list[int], eps: float = 1e-6) -> list[float]:
    """The per-sample Python loop of verl's default ``compute_grpo_outcome_advantage`` (dict of lists)."""
    import torch

    id2score: dict[int, list[float]] = defaultdict(list)
    for s, i in zip(scores, index):
        id2score[i].append(s)
    id2mean, id2std = {}, {}
    for i, vals in id2score.items():
        t = torch.tensor(vals)
        id2mean[i] = t.mean() if len(vals) > 1 else torch.tensor(0.0)
        id2std[i] = t.std() if len(vals) > 1 else torch.tensor(1.0)
    return [float((s - id2mean[i]) / (id2std[i] + eps)) for s, i in zip(scores, index)]


def loop_shaping(r: np.ndarray, parent: np.ndarray, lam: float, gamma: float) -> np.ndarray:
    """Per-node Python loop over the MARS² definition (children lists built first)."""
    children: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(parent.tolist()):
        if p >= 0:
            children[p].append(i)
    out = r.copy()
    rl = r.tolist()
    pl = parent.tolist()
    for i in range(len(rl)):
        p = pl[i]
        if p < 0:
            continue
        sib = children[p]
        n_sib = len(sib) - 1
        sib_mean = (sum(rl[j] for j in sib) - rl[i]) / n_sib if n_sib else None
        if pl[p] >= 0:
            b = (1 - lam) * rl[p] + lam * sib_mean if n_sib else rl[p]
        elif n_sib:
            b = sib_mean
        else:
            continue
        out[i] = rl[i] + gamma * (rl[i] - b)
    return out


def random_forest(n: int, tree_size: int, rng: np.random.Generator) -> np.ndarray:
    """Parent array of n // tree_size trees; every node's parent is an earlier node of its tree."""
    local = np.arange(n) % tree_size
    base = np.arange(n) - local
    u = rng.random(n)
    parent = base + np.floor(u * local).astype(np.int64)
    parent[local == 0] = -1
    return parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--loop-n", type=int, default=100_000, help="size for the slow Python loop references")
    args = ap.parse_args()
    n, reps = args.n, args.repeats
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}; N = {n:,}; median of {reps} runs (shared 2-core CPU: may be pessimistic)")

    # ------------------------------------------------------------------ 1. GRPO
    g = 8
    rewards = rng.integers(0, 2, n).astype(np.float64)
    hashes = rng.integers(-(2**62), 2**62, n // g).repeat(g)
    rng.shuffle(hashes)
    sparse = (rng.permutation(n // g) * 7919 + 13).repeat(g)
    rng.shuffle(sparse)
    t_hash = timeit(lambda: grpo_advantages(rewards, hashes), reps)
    t_sparse = timeit(lambda: grpo_advantages(rewards, sparse), reps)
    t_reshape = timeit(
        lambda: (
            (rewards.reshape(-1, g) - rewards.reshape(-1, g).mean(1, keepdims=True))
            / (rewards.reshape(-1, g).std(1, ddof=1, keepdims=True) + 1e-6)
        ).reshape(-1),
        reps,
    )
    print("\n[GRPO] groups of 8, shuffled non-contiguous ids")
    print(f"  grpo_advantages, random 64-bit hash ids     : {t_hash:8.4f} s   (target <= 0.1 s)")
    print(f"  grpo_advantages, sparse int ids (x7919+13)  : {t_sparse:8.4f} s")
    print(f"  numpy reshape, contiguous groups (reference): {t_reshape:8.4f} s")

    tree = TurnTree(["a"])
    roots = tree.add_nodes(np.full(n // g, -1))
    kids = tree.add_nodes(np.repeat(roots, g), agent=0, reward=rewards)
    perm = rng.permutation(kids)
    ca = CreditAssigner(CreditConfig(rule="grpo"))
    t_assigner = timeit(lambda: ca(tree, perm), reps)
    print(f"  CreditAssigner('grpo') over a TurnTree, shuffled sample order: {t_assigner:8.4f} s")

    m = args.loop_n
    sc, ix = rewards[:m].tolist(), hashes[:m].tolist()
    t_loop = timeit(lambda: verl_style_grpo(sc, ix), 1)
    print(f"  verl-style Python loop on {m:,} samples      : {t_loop:8.4f} s  (~{t_loop * n / m:.1f} s at N)")

    # ------------------------------------------------------------------ 2. MARS² shaping + path-level
    tree_size = 100
    parent = random_forest(n, tree_size, rng)
    tree_ids = np.arange(n) - np.arange(n) % tree_size  # the root of every node
    r = rng.random(n)
    r[parent < 0] = np.nan  # the task roots carry no reward
    sample = np.flatnonzero(parent >= 0)

    def shaping_and_path() -> np.ndarray:
        shaped = tree_shaped_rewards(r, parent, lam=0.5, gamma=0.5)
        return path_level_advantages(shaped[sample], tree_ids[sample])

    t_tree = timeit(shaping_and_path, reps)
    print(f"\n[MARS²] forest of {n:,} nodes ({n // tree_size:,} trees of {tree_size})")
    print(f"  tree_shaped_rewards + path_level_advantages : {t_tree:8.4f} s   (target <= 1 s)")

    t0 = time.perf_counter()
    ftree = TurnTree(["a", "b", "c"])
    depth_of = np.zeros(n, np.int64)
    for i in range(1, tree_size):  # nodes with the same local index can be appended together
        idx = np.flatnonzero(np.arange(n) % tree_size == i)
        depth_of[idx] = depth_of[parent[idx]] + 1
    order = np.argsort(depth_of, kind="stable")
    new_id = np.empty(n, np.int64)
    new_id[order] = np.arange(n)
    bounds = np.searchsorted(depth_of[order], np.arange(depth_of.max() + 2))
    for d in range(len(bounds) - 1):
        lvl = order[bounds[d] : bounds[d + 1]]
        par = np.where(parent[lvl] >= 0, new_id[np.maximum(parent[lvl], 0)], -1)
        ftree.add_nodes(par, agent=np.where(par >= 0, lvl % 3, -1), reward=r[lvl])
    t_build = time.perf_counter() - t0
    nodes = np.flatnonzero(ftree.parent >= 0)
    ca2 = CreditAssigner(CreditConfig(rule="mars2_tree"))
    t_assigner2 = timeit(lambda: ca2(ftree, nodes), reps)
    print(
        f"  CreditAssigner('mars2_tree') over a TurnTree: {t_assigner2:8.4f} s   "
        f"(tree built level by level in {t_build:.2f} s, {ftree.depth.max() + 1} levels)"
    )
    t_sub = timeit(lambda: ftree.subtree_sum(np.ones(n)), 3)
    print(f"  TurnTree.subtree_sum over {n:,} nodes         : {t_sub:8.4f} s")

    lp = parent[:m]
    lr = r[:m]
    t_loop_tree = timeit(lambda: loop_shaping(lr, lp, 0.5, 0.5), 1)
    print(f"  Python loop shaping on {m:,} nodes : {t_loop_tree:8.4f} s  (~{t_loop_tree * n / m:.1f} s at N)")


if __name__ == "__main__":
    main()
