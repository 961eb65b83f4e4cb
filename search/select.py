"""Where the shared search tree grows next, and which agent grows it.

One arm per possible move at a node ``v``: ``(GEN, a)`` — agent ``a`` writes a new child of ``v``
(a fresh program when ``v`` is the root, a refinement of ``v``'s program otherwise) — and
``(CONT, c)`` — descend into the existing child ``c`` and decide again there. Selection starts at
the root and follows the best arm until a GEN arm wins, as in AB-MCTS (Inoue et al. 2025,
"Wider or Deeper? Scaling LLM Inference-Time Compute with Adaptive Branching Tree Search",
arXiv:2503.04412), whose multi-LLM variant puts the choice of model into the same Thompson draw.

Arm statistics are read off the tree (rewards in [0, 1], NaN = unscored):

* ``(GEN, a)`` at ``v``: the rewards of the children of ``v`` written by ``a``
  (``n`` of them, sum ``s``): what "let ``a`` expand here" has produced so far.
* ``(CONT, c)``: the rewards of every scored node in ``c``'s subtree (``c`` included).

Scores per arm (the largest wins; ties are broken uniformly at random with the seeded generator):

* Thompson sampling, Beta posterior: ``θ ~ Beta(α0 + s, β0 + n − s)`` (rewards as fractional
  successes).
* Thompson sampling, Gaussian posterior of the mean with known noise ``σ``:
  ``θ ~ N((κ0·μ0 + s)/(κ0 + n), σ² / (κ0 + n))``.
* UCT (Kocsis & Szepesvári 2006) with one virtual visit at the prior value ``q0``:
  ``(q0 + s)/(1 + n) + c·sqrt(ln(1 + N_v) / (1 + n))`` with ``N_v`` the scored nodes under ``v``.

A node is *expandable* when its depth is below ``max_depth`` and it is not solved (reward below
``solved_at``; the root always is); a CONT arm exists only towards a child whose subtree still
holds an expandable node. Everything here is a pure function over the tree's arrays
(``parent``, ``depth``, ``agent``, ``reward``, all ``(N,)``); nothing mutates the tree.

Shape legend: ``N`` nodes, ``A`` agents, ``K`` children.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl.tree import children_csr, depth_levels, subtree_sum

METHODS = ("thompson", "uct", "independent")
ACTIONS = ("any", "fresh", "refine")
POSTERIORS = ("beta", "gaussian")


# ----------------------------------------------------------------------------- arm scores
def beta_thompson(
    successes: np.ndarray,
    trials: np.ndarray,
    rng: np.random.Generator,
    *,
    alpha0: float = 1.0,
    beta0: float = 1.0,
) -> np.ndarray:
    """One Thompson draw per arm from ``Beta(alpha0 + s, beta0 + n - s)`` (AB-MCTS-A's Beta model).

    ``successes`` ``s`` may be fractional (summed rewards in [0, 1]); ``trials`` ``n >= s``.
    """
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if alpha0 <= 0 or beta0 <= 0:
        raise ValueError(f"Beta prior alpha0 ({alpha0}) and beta0 ({beta0}) must be > 0")
    if np.any(s < -1e-9) or np.any(n - s < -1e-9):
        raise ValueError(f"need 0 <= successes <= trials, got successes={s} trials={n}")
    return rng.beta(alpha0 + s, beta0 + np.maximum(n - s, 0.0))


def gaussian_thompson(
    sums: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    prior_mean: float = 0.5,
    prior_strength: float = 1.0,
    noise_std: float = 0.5,
) -> np.ndarray:
    """One Thompson draw per arm from the Gaussian posterior of the mean reward with known noise
    ``σ``: ``N((κ0·μ0 + Σr)/(κ0 + n), σ²/(κ0 + n))`` (``κ0`` = ``prior_strength`` pseudo-observations
    at ``μ0`` = ``prior_mean``)."""
    if prior_strength <= 0 or noise_std <= 0:
        raise ValueError(f"prior_strength ({prior_strength}) and noise_std ({noise_std}) must be > 0")
    s = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    k = prior_strength + n
    return rng.normal((prior_strength * prior_mean + s) / k, noise_std / np.sqrt(k))


def uct_scores(
    sums: np.ndarray, counts: np.ndarray, parent_visits: float, *, c: float = 1.0, prior_value: float = 0.5
) -> np.ndarray:
    """UCT with one virtual visit at ``prior_value`` ``q0``:
    ``(q0 + Σr)/(1 + n) + c·sqrt(ln(1 + N) / (1 + n))``."""
    s = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    return (prior_value + s) / (1.0 + n) + c * np.sqrt(np.log1p(max(parent_visits, 0.0)) / (1.0 + n))


def argmax_random_tie(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest score; ties are broken uniformly at random."""
    scores = np.asarray(scores, dtype=np.float64)
    best = np.flatnonzero(scores == scores.max())
    return int(best[0]) if best.size == 1 else int(rng.choice(best))


# ----------------------------------------------------------------------------- tree statistics
@dataclass
class ArmStats:
    """Per-node statistics every selection of one round reads (computed once per round)."""

    parent: np.ndarray  # (N,) int64
    depth: np.ndarray  # (N,) int64
    gen_sum: np.ndarray  # (N, A) summed rewards of v's children written by agent a
    gen_count: np.ndarray  # (N, A) number of those children
    sub_sum: np.ndarray  # (N,) summed rewards over the subtree (scored nodes)
    sub_count: np.ndarray  # (N,) scored nodes in the subtree
    expandable: np.ndarray  # (N,) bool
    open_below: np.ndarray  # (N,) bool: an expandable node in the subtree (itself included)
    child_order: np.ndarray  # (N - roots,) children grouped by parent (CSR order)
    child_offsets: np.ndarray  # (N + 1,)

    def children(self, v: int) -> np.ndarray:
        return self.child_order[self.child_offsets[v] : self.child_offsets[v + 1]]


def arm_stats(
    parent: np.ndarray,
    depth: np.ndarray,
    agent: np.ndarray,
    reward: np.ndarray,
    n_agents: int,
    *,
    max_depth: int,
    solved_at: float = 1.0,
) -> ArmStats:
    """Statistics of every GEN and CONT arm of a forest of search trees (pure; see module doc).

    ``reward`` is NaN for roots (the task) and for unscored nodes; those count in no statistic.
    Rewards must lie in [0, 1] for the Beta posterior.
    """
    parent = np.asarray(parent, dtype=np.int64)
    depth = np.asarray(depth, dtype=np.int64)
    agent = np.asarray(agent, dtype=np.int64)
    reward = np.asarray(reward, dtype=np.float64)
    n = parent.shape[0]
    if not (depth.shape == agent.shape == reward.shape == (n,)):
        raise ValueError(
            f"parent, depth, agent, reward must all be (N,), got {parent.shape} {depth.shape} "
            f"{agent.shape} {reward.shape}"
        )
    if max_depth < 1:
        raise ValueError(f"max_depth ({max_depth}) must be >= 1 (depth 1 = fresh programs under the root)")
    scored = ~np.isnan(reward)
    r = np.where(scored, reward, 0.0)
    if np.any((r < 0) | (r > 1)):
        raise ValueError(f"search rewards must lie in [0, 1]; got min {r.min()} max {r.max()}")
    child = np.flatnonzero((parent >= 0) & scored & (agent >= 0))
    gen_sum = np.zeros((n, n_agents))
    gen_count = np.zeros((n, n_agents))
    np.add.at(gen_sum, (parent[child], agent[child]), r[child])
    np.add.at(gen_count, (parent[child], agent[child]), 1.0)
    levels = depth_levels(depth)
    sub_sum = subtree_sum(parent, r, by_depth=levels)
    sub_count = subtree_sum(parent, scored.astype(np.float64), by_depth=levels)
    expandable = (depth < max_depth) & ((parent < 0) | (scored & (r < solved_at)))
    open_below = subtree_sum(parent, expandable.astype(np.float64), by_depth=levels) > 0
    order, offsets = children_csr(parent)
    return ArmStats(
        parent, depth, gen_sum, gen_count, sub_sum, sub_count, expandable, open_below, order, offsets
    )


def add_virtual_loss(stats: ArmStats, node: int, agent: int) -> None:
    """Count a pending expansion ``(node, agent)`` as a visit with reward 0 (mutates ``stats``): the
    GEN arm ``(node, agent)`` and every CONT arm on the path from the root to ``node`` gain one
    unscored-as-zero observation, so the next picks of the same round spread out (virtual loss, as
    in parallel MCTS)."""
    stats.gen_count[node, agent] += 1.0
    u = int(node)
    while u >= 0:
        stats.sub_count[u] += 1.0
        u = int(stats.parent[u])


def forest_draw(
    evidence: dict[tuple[str, int], list[float]], rng: np.random.Generator, *, refine_ok: bool = True
) -> tuple[str, int]:
    """Thompson draw of ``(action, agent)`` from forest-level counts ``evidence[(action, agent)] =
    [solved, tried]``: one ``Beta(1 + s, 1 + n - s)`` draw per arm, the largest wins. ``action`` is
    ``fresh`` or ``refine``; refinement arms take part only when ``refine_ok`` (the tree has programs)."""
    arms = [k for k in evidence if refine_ok or k[0] == "fresh"]
    if not arms:
        raise ValueError("forest_draw needs at least one fresh-program arm in evidence")
    draws = [rng.beta(1.0 + evidence[k][0], 1.0 + evidence[k][1] - evidence[k][0]) for k in arms]
    return arms[int(np.argmax(draws))]


def select_expansion(
    stats: ArmStats,
    root: int,
    rng: np.random.Generator,
    *,
    method: str = "thompson",
    posterior: str = "beta",
    alpha0: float = 1.0,
    beta0: float = 1.0,
    prior_mean: float = 0.5,
    prior_strength: float = 1.0,
    noise_std: float = 0.5,
    uct_c: float = 1.0,
    agents: np.ndarray | None = None,
    action: str = "any",
) -> tuple[int, int]:
    """Pick one expansion of the tree rooted at ``root``: returns ``(parent node, agent index)``.

    ``method``: ``thompson`` (posterior ``beta`` or ``gaussian``), ``uct``, or ``independent``
    (always a fresh program under the root by a uniformly drawn agent: the no-search baseline).
    ``agents`` restricts which agent indices may expand (default: all ``A``).
    Descends from the root taking the best arm (module doc) until a GEN arm wins. ``action``
    ``fresh`` keeps only the root's GEN arms (a fresh program), ``refine`` only its CONT arms (a
    refinement somewhere below; a fresh program when no child is open); ``any`` all of them.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; valid names: {list(ACTIONS)}")
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; valid names: {list(METHODS)}")
    if posterior not in POSTERIORS:
        raise ValueError(f"unknown posterior {posterior!r}; valid names: {list(POSTERIORS)}")
    if stats.parent[root] >= 0:
        raise ValueError(f"node {root} is not a root (its parent is {int(stats.parent[root])})")
    allowed = np.arange(stats.gen_sum.shape[1]) if agents is None else np.asarray(agents, dtype=np.int64)
    if allowed.size == 0:
        raise ValueError("no agent may expand: pass at least one agent index")
    if method == "independent":
        return int(root), int(allowed[rng.integers(allowed.size)])
    v = int(root)
    while True:
        kids = stats.children(v)
        kids = kids[stats.open_below[kids]]
        gen_ok = bool(stats.expandable[v])
        if v == root and action == "fresh":
            kids = kids[:0]
        elif v == root and action == "refine" and kids.size:
            gen_ok = False
        n_gen = allowed.size if gen_ok else 0
        if n_gen + kids.size == 0:  # only reachable for a closed root (cannot happen: roots expand)
            raise RuntimeError(f"node {v} has no arm: nothing to expand below it")
        sums = np.concatenate([stats.gen_sum[v, allowed] if gen_ok else np.zeros(0), stats.sub_sum[kids]])
        counts = np.concatenate(
            [stats.gen_count[v, allowed] if gen_ok else np.zeros(0), stats.sub_count[kids]]
        )
        if method == "uct":
            scores = uct_scores(sums, counts, float(stats.sub_count[v]), c=uct_c, prior_value=prior_mean)
        elif posterior == "beta":
            scores = beta_thompson(sums, counts, rng, alpha0=alpha0, beta0=beta0)
        else:
            scores = gaussian_thompson(
                sums, counts, rng, prior_mean=prior_mean, prior_strength=prior_strength, noise_std=noise_std
            )
        k = argmax_random_tie(scores, rng)
        if k < n_gen:
            return v, int(allowed[k])
        v = int(kids[k - n_gen])
