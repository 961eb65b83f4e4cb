"""Communication graphs over a team of agents: the candidate edges, the topology policies that
sample graphs for a batch of queries, and the fixed topologies of the literature.

The unrolled graph has one node per (round, agent): node ``t * A + i`` is agent ``i`` in round
``t`` (``A`` agents, ``R`` rounds). Candidate edges (``GraphSpace``):

- spatial, inside a round: ``(t, i) -> (t, j)`` for ``i < j`` (the fixed role order: an agent only
  hears agents earlier in the order, so the final agent ``A - 1`` can hear everyone);
- temporal, round ``t - 1`` to ``t``: ``(t-1, i) -> (t, j)`` for every ``i, j``.

Every candidate edge goes from an earlier to a later node id, so **every** subset of candidate
edges is a DAG: acyclicity holds by construction (an order mask), no per-edge cycle check is made,
and the probability of a graph does not depend on the order edges are enumerated in (GPTSwarm's
sampler, which rejects an edge that would close a cycle, depends on that order; here nothing is
rejected).

**Learned order** (``graph_space(..., order="learned")``): the spatial candidates are every ordered
pair ``(t, i) -> (t, j)``, ``i != j``, except out of the final agent, and each graph first draws an
order ``pi`` of the ``A - 1`` non-final agents (the final agent stays last) from a Plackett-Luce
distribution with per-agent scores ``s_i(q)`` (:func:`sample_orders`); ``pi`` masks the spatial
candidates (:func:`order_mask`: ``i -> j`` allowed iff ``i`` comes before ``j``, in every round), a
masked edge is not drawn and has log-probability 0, so every sampled graph is again a DAG (``(round,
position in pi)`` is a topological order), and::

    log PL(pi) = sum_k [ s_{pi_k} - log sum_{j >= k} exp(s_{pi_j}) ]      (Plackett 1975, Luce 1959)
    log pi(G)  = log PL(pi) + sum_{e allowed by pi} log p_e(a_e)

exact for the (order, edges) pair as sampled. The learner's entropy bonus and KL act on the order as
on the edges, through :func:`plackett_luce_entropy` and :func:`plackett_luce_kl` (exact over all
``M!`` orders for ``M <= 7``, chain-rule estimates over the sampled orders above). Node ids are then
no longer a topological order; the functions below that walk a graph (:func:`active_nodes`,
:func:`batched_levels`) do not assume they are.

A policy gives one logit ``l_e`` per candidate edge and query; edges are independent Bernoulli
draws with ``p_e = sigmoid(l_e)``, so with ``a_e`` in {0, 1}::

    log p_e(a_e) = a_e log sigmoid(l_e) + (1 - a_e) log sigmoid(-l_e)
    log pi(G)    = sum_e log p_e(a_e)                       (references: Graph-GRPO, GPTSwarm)

Every candidate edge has its own logit (each round its own spatial edges; AgentPrune shares them
across rounds), and edges are drawn independently. The most probable graph keeps the edges with
``p_e > 0.5`` (GPTSwarm's test-time rule).

Parameterisations: :class:`FreeLogits` (one logit per (kind, i, j), GPTSwarm / AgentPrune, with
AgentPrune's one-shot magnitude pruning) and :class:`QueryConditioned` (role embeddings and hashed
n-gram features of the query, a bilinear scorer, optionally a per-edge bilinear form over where
each end's role is mentioned in the query, :func:`role_positions`; G-Designer and Graph-GRPO
condition on the query).

Exploration (:func:`sample_graphs`): ``explore = eps`` draws every learned edge from the mixed
``q_e = eps + (1 - 2 eps) p_e`` and returns the log-probs of that distribution, so ``log pi(G)`` is
exact for the graph as sampled; :func:`edge_entropy` is the per-edge Bernoulli entropy the learner's
entropy bonus adds.
:func:`fixed_topology` gives the hand-designed graphs (chain, star, layered, complete, random,
debate, single).

Shape legend: ``B`` queries, ``K`` graphs per query, ``A`` agents, ``E`` candidate edges,
``N`` nodes of the unrolled graph (``R * A``), ``D`` query features, ``H`` hidden size.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marl.seeding import stable_hash

SPATIAL, TEMPORAL = 0, 1
TOPOLOGIES = ("chain", "star", "layered", "complete", "random", "debate", "single")


@dataclass(frozen=True)
class GraphSpace:
    """The candidate edges of ``num_agents`` agents over ``rounds`` rounds (see the module docstring).

    ``src``, ``dst``: (E,) node ids of the unrolled graph, ``src < dst`` under the fixed order; ``kind``: (E,)
    SPATIAL or TEMPORAL; ``pair``: (E,) the flat index ``kind * A * A + i * A + j`` of its agent pair
    (``i``, ``j`` the agents at its ends), the slot a round-shared parameterisation would read.
    """

    num_agents: int
    rounds: int
    src: np.ndarray
    dst: np.ndarray
    kind: np.ndarray
    pair: np.ndarray
    learned_order: bool = False
    """Spatial candidates in both directions, masked per graph by a sampled agent order (see the
    module docstring); ``src < dst`` then holds for the temporal edges only."""

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def num_nodes(self) -> int:
        return self.num_agents * self.rounds

    def node_agent(self, node: np.ndarray | int) -> np.ndarray:
        """Agent index of unrolled node id(s)."""
        return np.asarray(node) % self.num_agents

    def node_round(self, node: np.ndarray | int) -> np.ndarray:
        """Round of unrolled node id(s)."""
        return np.asarray(node) // self.num_agents

    def final_nodes(self) -> np.ndarray:
        """The agents of the last round (the candidates of a majority vote)."""
        return (self.rounds - 1) * self.num_agents + np.arange(self.num_agents)

    def adjacency(self, a: np.ndarray) -> np.ndarray:
        """(N, N) bool adjacency of one graph from its edge decisions ``a`` (E,)."""
        adj = np.zeros((self.num_nodes, self.num_nodes), dtype=bool)
        on = np.asarray(a, dtype=bool)
        adj[self.src[on], self.dst[on]] = True
        return adj

    def to_networkx(self, a: np.ndarray) -> nx.DiGraph:
        """One graph as a ``networkx.DiGraph`` over all ``N`` nodes."""
        g = nx.DiGraph()
        g.add_nodes_from(range(self.num_nodes))
        on = np.asarray(a, dtype=bool)
        g.add_edges_from(zip(self.src[on].tolist(), self.dst[on].tolist()))
        return g


ORDERS = ("fixed", "learned")


def graph_space(num_agents: int, rounds: int = 1, order: str = "fixed") -> GraphSpace:
    """Candidate edges under the fixed role order (spatial ``i < j``), or for ``order = "learned"``
    every spatial ``i -> j`` with ``i != j`` and ``i`` not the final agent (masked per graph by a
    sampled order, :func:`order_mask`), plus all temporal edges."""
    if num_agents < 1 or rounds < 1:
        raise ValueError(f"num_agents ({num_agents}) and rounds ({rounds}) must be >= 1")
    if order not in ORDERS:
        raise ValueError(f"order ({order!r}) must be one of {ORDERS}")
    a = num_agents
    learned = order == "learned"
    src, dst, kind, pair = [], [], [], []
    for t in range(rounds):
        for i in range(a):
            for j in range(a) if learned and i < a - 1 else range(i + 1, a):
                if j == i:
                    continue
                src.append(t * a + i), dst.append(t * a + j), kind.append(SPATIAL), pair.append(i * a + j)
        if t > 0:
            for i in range(a):
                for j in range(a):
                    src.append((t - 1) * a + i), dst.append(t * a + j), kind.append(TEMPORAL)
                    pair.append(a * a + i * a + j)
    as_i64 = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return GraphSpace(a, rounds, as_i64(src), as_i64(dst), as_i64(kind), as_i64(pair), learned)


# ----------------------------------------------------------------------------- the math
def mixed_probs(logits: torch.Tensor, explore: float = 0.0) -> torch.Tensor:
    """Sampling probability of every edge with epsilon mixing: ``q_e = eps + (1 - 2 eps) sigmoid(l_e)``
    (``eps`` = ``explore`` in [0, 0.5)), so ``eps <= q_e <= 1 - eps``; a forced edge (infinite logit)
    keeps ``q_e`` = 0 or 1. ``explore = 0`` is the plain ``sigmoid(l_e)``."""
    _check_explore(explore)
    p = torch.sigmoid(logits)
    if explore == 0:
        return p
    return torch.where(torch.isfinite(logits), explore + (1 - 2 * explore) * p, p)


def _check_explore(explore: float) -> None:
    if not 0.0 <= explore < 0.5:
        raise ValueError(f"exploration epsilon ({explore}) must be in [0, 0.5)")


def edge_logprobs(logits: torch.Tensor, a: torch.Tensor, explore: float = 0.0) -> torch.Tensor:
    """``log p_e(a_e) = a_e log sigmoid(l_e) + (1 - a_e) log sigmoid(-l_e)``, elementwise.

    ``logits`` (..., E) broadcast against ``a`` (..., E) in {0, 1}. An infinite logit is a forced
    edge: its decision has log-probability 0 (and -inf for the impossible one). With ``explore = eps
    > 0`` they are the log-probs of the mixed distribution the graphs are drawn from
    (:func:`mixed_probs`): ``log q_e(1) = log(eps + (1 - 2 eps) sigmoid(l_e))``, ``log q_e(0) =
    log(eps + (1 - 2 eps) sigmoid(-l_e))``, so ``log pi(G)`` stays the exact log-probability of the
    sampled graph.
    """
    _check_explore(explore)
    a = a.to(torch.bool)
    if explore == 0:
        lp_on = -F.softplus(-logits)
        lp_off = -F.softplus(logits)
        return torch.where(a, lp_on, lp_off)
    lp_on = torch.log(explore + (1 - 2 * explore) * torch.sigmoid(logits))
    lp_off = torch.log(explore + (1 - 2 * explore) * torch.sigmoid(-logits))
    mixed = torch.where(a, lp_on, lp_off)
    return torch.where(torch.isfinite(logits), mixed, edge_logprobs(logits, a))


def edge_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each edge's Bernoulli ``p = sigmoid(l)``, elementwise, in nats:
    ``H = -p log p - (1 - p) log(1 - p) = p softplus(-l) + (1 - p) softplus(l)``; 0 for a forced
    edge (infinite logit); ``log 2`` at ``l = 0``."""
    p = torch.sigmoid(logits)
    h = p * F.softplus(-logits) + (1 - p) * F.softplus(logits)
    return torch.where(torch.isfinite(logits), h, torch.zeros_like(h))


def graph_logprob(edge_lp: torch.Tensor) -> torch.Tensor:
    """``log pi(G) = sum_e log p_e(a_e)`` over the last axis: (..., E) -> (...)."""
    return edge_lp.sum(-1)


def sample_graphs(
    logits: torch.Tensor, k: int, generator: torch.Generator | None = None, explore: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """K graphs per query: ``a ~ Bernoulli(q)``, independently per edge, ``q = sigmoid(logits)`` or,
    with ``explore = eps > 0``, the mixed ``q = eps + (1 - 2 eps) sigmoid(logits)`` (:func:`mixed_probs`).

    ``logits`` (B, E) -> ``a`` (B, K, E) bool and per-edge log-probs (B, K, E) of that distribution
    (no gradient).
    """
    with torch.no_grad():
        p = mixed_probs(logits, explore)[:, None, :].expand(-1, k, -1)
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype)
        a = u < p
        return a, edge_logprobs(logits[:, None, :], a, explore)


def mode_graphs(logits: torch.Tensor) -> torch.Tensor:
    """The most probable graph per query, (B, E) bool: the edges with ``p_e > 0.5`` (``l_e > 0``)."""
    return logits > 0


# ----------------------------------------------------------------------------- a learned agent order
def plackett_luce_logprob(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``log PL(pi | s) = sum_k [ s_{pi_k} - log sum_{j >= k} exp(s_{pi_j}) ]`` (Plackett 1975; Luce
    1959): the probability of drawing the items first to last, each from the softmax of the scores of
    the items not drawn yet. ``scores`` (..., M) broadcast against ``order`` (..., M), a permutation of
    ``0 .. M-1`` (first item first) -> (...)."""
    shape = torch.broadcast_shapes(scores.shape[:-1], order.shape[:-1])
    s = scores.expand(*shape, scores.shape[-1]).gather(-1, order.expand(*shape, order.shape[-1]))
    tail = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # log sum_{j >= k} exp(s_{pi_j})
    return (s - tail).sum(-1)


def sample_orders(scores: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K Plackett-Luce orders per query by the Gumbel trick (sorting ``s_i + g_i``, ``g_i`` i.i.d.
    Gumbel(0, 1), in decreasing order draws exactly from PL(s); Yellott 1977): scores (B, M) ->
    (B, K, M) long, first item first (no gradient)."""
    with torch.no_grad():
        s = scores[:, None, :].expand(-1, k, -1)
        u = torch.rand(s.shape, generator=generator, dtype=s.dtype).clamp_min(torch.finfo(s.dtype).tiny)
        return torch.argsort(s - torch.log(-torch.log(u)), dim=-1, descending=True, stable=True)


def mode_orders(scores: torch.Tensor) -> torch.Tensor:
    """The most probable order per query, (B, M) -> (B, M): the scores in decreasing order (ties: the
    lower index first)."""
    return torch.argsort(scores, dim=-1, descending=True, stable=True)


def order_mask(space: GraphSpace, order: np.ndarray) -> np.ndarray:
    """Which candidate edges an order of the non-final agents allows: (..., A - 1) -> (..., E) bool.
    A temporal edge is always allowed; a spatial ``i -> j`` iff ``i`` comes before ``j`` in the order,
    the final agent ``A - 1`` being after everyone (so ``i -> final`` is always allowed)."""
    order = np.asarray(order, dtype=np.int64)
    a = space.num_agents
    if order.shape[-1] != a - 1:
        raise ValueError(f"an order of {order.shape[-1]} agents; the space has {a - 1} non-final agents")
    rank = np.full((*order.shape[:-1], a), a - 1, dtype=np.int64)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(a - 1), order.shape), axis=-1)
    i, j = space.node_agent(space.src), space.node_agent(space.dst)
    return (space.kind == TEMPORAL) | (rank[..., i] < rank[..., j])


def sample_ordered_graphs(
    space: GraphSpace,
    logits: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    explore: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """K graphs per query under a learned order: ``pi ~ PL(scores)`` (:func:`sample_orders`), then
    every edge ``pi`` allows ``~ Bernoulli(q_e)`` as in :func:`sample_graphs`; a masked edge is absent
    with log-probability 0. ``logits`` (B, E), ``scores`` (B, A - 1) -> decisions (B, K, E) bool,
    per-edge log-probs (B, K, E), orders (B, K, A - 1) and their ``log PL`` (B, K) (no gradient)."""
    with torch.no_grad():
        orders = sample_orders(scores, k, generator)
        allowed = torch.from_numpy(order_mask(space, orders.numpy()))
        lg = logits[:, None, :].expand(-1, k, -1).masked_fill(~allowed, float("-inf"))
        p = mixed_probs(lg, explore)
        a = torch.rand(p.shape, generator=generator, dtype=p.dtype) < p
        return a, edge_logprobs(lg, a, explore), orders, plackett_luce_logprob(scores[:, None, :], orders)


PL_EXACT_MAX = 7
"""Up to this many items the Plackett-Luce entropy and KL are exact sums over all ``M!`` orders
(7! = 5040); above it, chain-rule estimates over sampled orders."""


@functools.lru_cache(maxsize=8)
def all_orders(m: int) -> torch.Tensor:
    """Every permutation of ``0 .. m-1``, (m!, m) long, in lexicographic order (cached: do not mutate)."""
    perms = list(itertools.permutations(range(m)))  # m = 0: one empty order
    return torch.tensor(perms, dtype=torch.long).reshape(len(perms), m)


def _stage_log_softmax(scores: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Per order and stage ``t``, the log-softmax of the scores of the items not drawn yet
    (``pi_t, ..., pi_{M-1}``): scores (..., M), orders (..., K, M) -> (..., K, M stages, M positions of
    the order), 0 at the positions already drawn (``j < t``)."""
    m = scores.shape[-1]
    shape = torch.broadcast_shapes(scores.shape[:-1], orders.shape[:-2])
    s = scores[..., None, :].expand(*shape, orders.shape[-2], m)
    s = s.gather(-1, orders.expand(*shape, *orders.shape[-2:]))  # (..., K, M) in drawing order
    left = torch.ones(m, m, dtype=torch.bool).triu()  # stage t (row), position j >= t (column)
    lp = s[..., None, :].masked_fill(~left, float("-inf")).log_softmax(-1)
    return lp.masked_fill(~left, 0.0)


def plackett_luce_entropy(
    scores: torch.Tensor, orders: torch.Tensor | None = None, exact_max: int = PL_EXACT_MAX
) -> torch.Tensor:
    """Entropy of ``PL(s)`` in nats, differentiable: scores (..., M) -> (...).

    ``M <= exact_max``: exact, ``H = -sum_pi P(pi) log P(pi)`` over all ``M!`` orders (``log M!`` for
    equal scores). Larger ``M`` needs ``orders`` (..., K, M) drawn from ``PL(s)`` and gives the chain
    rule estimate ``(1/K) sum_k sum_t H(softmax(s_{pi_t}, ..., s_{pi_{M-1}}))`` (the entropy of each
    draw given the items drawn before it), unbiased for ``H``; its gradient is that of the sampled
    terms only (the dependence of the draws on ``s`` is left out), so it is an estimate too."""
    m = scores.shape[-1]
    if m <= exact_max:
        lp = plackett_luce_logprob(scores[..., None, :], all_orders(m).to(scores.device))  # (..., M!)
        return -(lp.exp() * lp).sum(-1)
    if orders is None:
        raise ValueError(f"H of {m} > {exact_max} items is estimated from sampled orders: pass orders")
    lp = _stage_log_softmax(scores, orders)
    return -(lp.exp() * lp).sum((-2, -1)).mean(-1)


def plackett_luce_kl(
    scores: torch.Tensor,
    ref_scores: torch.Tensor,
    orders: torch.Tensor | None = None,
    exact_max: int = PL_EXACT_MAX,
) -> torch.Tensor:
    """``KL(PL(s) || PL(r))`` in nats, differentiable in ``s``: scores and reference scores (..., M) ->
    (...). Equal reference scores are the uniform order, ``KL = log M! - H(PL(s))``.

    ``M <= exact_max``: exact, ``sum_pi P(pi) (log P(pi) - log P_ref(pi))``. Larger ``M``: the chain
    rule estimate over ``orders`` (..., K, M) drawn from ``PL(s)``, ``(1/K) sum_k sum_t
    KL(softmax(s_{pi_t..}) || softmax(r_{pi_t..}))``, unbiased, as in :func:`plackett_luce_entropy`."""
    m = scores.shape[-1]
    if m <= exact_max:
        every = all_orders(m).to(scores.device)
        lp = plackett_luce_logprob(scores[..., None, :], every)
        return (lp.exp() * (lp - plackett_luce_logprob(ref_scores[..., None, :], every))).sum(-1)
    if orders is None:
        raise ValueError(f"the KL of {m} > {exact_max} items is estimated from sampled orders: pass orders")
    lp = _stage_log_softmax(scores, orders)
    lq = _stage_log_softmax(ref_scores, orders)
    return (lp.exp() * (lp - lq)).sum((-2, -1)).mean(-1)


def ordered_mode_graphs(space: GraphSpace, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The graph a learned-order policy uses at test time, (B, E) bool: the most probable order
    (:func:`mode_orders`) and, among the edges it allows, those with ``p_e > 0.5``."""
    allowed = torch.from_numpy(order_mask(space, mode_orders(scores).numpy()))
    return (logits > 0) & allowed


def waves(space: GraphSpace, a: np.ndarray, active: np.ndarray | None = None) -> list[np.ndarray]:
    """Execution waves of one graph: the ``networkx.topological_generations`` of its active nodes
    (``active`` (N,) bool, default all), each wave sorted by node id."""
    g = space.to_networkx(a)
    if active is not None:
        g = g.subgraph(np.flatnonzero(active).tolist())
    return [np.array(sorted(w), dtype=np.int64) for w in nx.topological_generations(g)]


def active_nodes(space: GraphSpace, a: np.ndarray, decide: np.ndarray) -> np.ndarray:
    """(N,) bool: the decision nodes and every node with a path to one (the nodes that run)."""
    if space.learned_order:  # node ids are not a topological order
        return batched_levels(space, np.asarray(a, dtype=bool)[None], decide)[0] >= 0
    adj = space.adjacency(a)
    act = np.zeros(space.num_nodes, dtype=bool)
    act[decide] = True
    for v in range(space.num_nodes - 1, -1, -1):  # edges go to higher ids: one backward sweep
        if not act[v] and (adj[v] & act).any():
            act[v] = True
    return act


def batched_levels(space: GraphSpace, a: np.ndarray, decide: np.ndarray) -> np.ndarray:
    """Wave of every node of many graphs at once: (G, E) decisions -> (G, N) int, -1 for a node that
    does not run. The nodes that run are ``decide`` and their ancestors (as :func:`active_nodes`); a
    running node's wave is the length of the longest path reaching it from a running source, which is
    its index in ``networkx.topological_generations`` of the running subgraph (the tests hold the two
    equal). Under the fixed order (node ids are topological): one vectorised pass over the ``N`` nodes
    in each direction; under a learned order: fixed-point sweeps over the edges (at most ``N``)."""
    a = np.asarray(a, dtype=bool)
    g, n = a.shape[0], space.num_nodes
    if space.learned_order:
        return _levels_any_order(space, a, decide)
    act = np.zeros((g, n), dtype=bool)
    act[:, decide] = True
    for v in range(n - 1, -1, -1):
        out = np.flatnonzero(space.src == v)
        if out.size:
            act[:, v] |= (a[:, out] & act[:, space.dst[out]]).any(1)
    level = np.full((g, n), -1, dtype=np.int64)
    for v in range(n):
        inc = np.flatnonzero(space.dst == v)
        lv = np.zeros(g, dtype=np.int64)
        if inc.size:
            lv = np.where(a[:, inc], level[:, space.src[inc]], -1).max(1) + 1
        level[:, v] = np.where(act[:, v], lv, -1)
    return level


def _levels_any_order(space: GraphSpace, a: np.ndarray, decide: np.ndarray) -> np.ndarray:
    """:func:`batched_levels` for graphs whose node ids need not be a topological order: the running
    set grows backwards from ``decide`` and the longest-path depth forwards, one relaxation over every
    edge per sweep, until nothing changes (at most ``N`` sweeps each: the graphs are DAGs)."""
    g, n = a.shape[0], space.num_nodes
    adj = np.zeros((g, n, n), dtype=bool)
    adj[:, space.src, space.dst] = a
    act = np.zeros((g, n), dtype=bool)
    act[:, decide] = True
    for _ in range(n):
        new = act | (adj & act[:, None, :]).any(2)
        if (new == act).all():
            break
        act = new
    adj &= act[:, :, None] & act[:, None, :]
    level = np.where(act, 0, -1)
    for _ in range(n):
        new = np.where(act, np.where(adj, level[:, :, None] + 1, 0).max(1), -1)
        if (new == level).all():
            break
        level = new
    return level.astype(np.int64)


# ----------------------------------------------------------------------------- query features
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def query_features(texts: list[str], dim: int = 64, *, ordered: bool = False) -> torch.Tensor:
    """Hashed word 1-, 2- and 3-gram features (with start and end markers) of each query, signed
    (feature hashing, Weinberger et al. 2009) and L2-normalised: (B,) texts -> (B, D). Computed
    offline, no encoder download. ``ordered``: also every ordered word pair ``w_i < w_j`` (``i < j``,
    any distance: skip-bigrams), which says which of two words comes first however far apart."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for b, text in enumerate(texts):
        words = ["<s>", *_words(text), "</s>"]
        grams = [" ".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)]
        if ordered:
            inner = words[1:-1]
            grams += [f"{x} < {y}" for i, x in enumerate(inner) for y in inner[i + 1 :]]
        for g in grams:
            h = stable_hash(g)
            out[b, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(out[b])
        if n > 0:
            out[b] /= n
    return torch.from_numpy(out)


ROLE_STOPWORDS = frozenset({"the", "and", "for", "you", "are", "who", "with", "that", "agent", "role"})


def role_keywords(roles: list[str]) -> list[set[str]]:
    """Per role, the words of its text (lower case, at least 3 characters, not in ``ROLE_STOPWORDS``)
    that no other role's text contains: the words whose mention in a query points at that role."""
    words = [{w for w in _words(r) if len(w) >= 3 and w not in ROLE_STOPWORDS} for r in roles]
    return [w - set().union(*(o for j, o in enumerate(words) if j != i)) for i, w in enumerate(words)]


def role_positions(texts: list[str], roles: list[str], max_rank: int = 4) -> torch.Tensor:
    """Where each role is mentioned in each query, as per-agent features (B,) texts, (A,) role texts
    -> (B, A, 1 + 2 * max_rank) (G-Designer gives each agent node a feature of its role; this one is
    the role's place in the query).

    A role is mentioned at the first query word that is one of its :func:`role_keywords`. The ``n``
    mentioned roles of a query are ranked by that position (``r = 0`` first; ties: lower agent index).
    A mentioned role's row is ``[1, onehot(min(r, max_rank - 1)), onehot(min(n - 1 - r, max_rank -
    1))]`` (mentioned, rank from the start, rank from the end); a role never mentioned (the final
    agent of the testbed, or any role of a query that names none) has a zero row, so the policy falls
    back to its query features and biases.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank ({max_rank}) must be >= 1")
    keys = role_keywords(roles)
    out = np.zeros((len(texts), len(roles), 1 + 2 * max_rank), dtype=np.float32)
    for b, text in enumerate(texts):
        words = _words(text)
        first = {}
        for i, kw in enumerate(keys):
            pos = [t for t, w in enumerate(words) if w in kw]
            if pos:
                first[i] = pos[0]
        order = sorted(first, key=lambda i: (first[i], i))
        n = len(order)
        for r, i in enumerate(order):
            out[b, i, 0] = 1.0
            out[b, i, 1 + min(r, max_rank - 1)] = 1.0
            out[b, i, 1 + max_rank + min(n - 1 - r, max_rank - 1)] = 1.0
    return torch.from_numpy(out)


FEATURES = ("ngram", "ordered", "roles", "roles_only")


def policy_features(
    texts: list[str], roles: list[str], kind: str = "ngram", dim: int = 256, max_rank: int = 4
) -> torch.Tensor:
    """The input of a topology policy, (B, D) or (B, D + A * F): ``ngram``: :func:`query_features`;
    ``ordered``: with skip-bigrams; ``roles``: the ordered query features followed by the flattened
    :func:`role_positions` (``F = 1 + 2 * max_rank`` per agent; :class:`QueryConditioned` with
    ``node_dim = F`` splits them off again); ``roles_only``: the role positions alone (``D = 0``: a
    query that names no role gets the bias logits, i.e. one graph for all such queries)."""
    if kind not in FEATURES:
        raise ValueError(f"features ({kind!r}) must be one of {FEATURES}")
    if kind == "roles_only":
        return role_positions(texts, roles, max_rank).reshape(len(texts), -1)
    q = query_features(texts, dim, ordered=kind != "ngram")
    if kind != "roles":
        return q
    return torch.cat([q, role_positions(texts, roles, max_rank).reshape(len(texts), -1)], dim=1)


def role_feature_dim(kind: str, max_rank: int = 4) -> int:
    """Per-agent features ``F`` that :func:`policy_features` of ``kind`` appends (0: none)."""
    return 1 + 2 * max_rank if kind in ("roles", "roles_only") else 0


def query_feature_dim(kind: str, dim: int) -> int:
    """Width ``D`` of the query part of :func:`policy_features` of ``kind`` (0 for ``roles_only``)."""
    return 0 if kind == "roles_only" else dim


# ----------------------------------------------------------------------------- policies
class FreeLogits(nn.Module):
    """One free logit per candidate edge, the same for every query (GPTSwarm, AgentPrune).

    Every round has its own spatial logits (AgentPrune shares them across rounds). ``prune(rate)``:
    AgentPrune's one-shot magnitude pruning, which removes for good the fraction ``rate`` of the
    still-allowed candidate edges with the lowest logits.
    """

    def __init__(self, space: GraphSpace, init: float = 0.0) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((space.num_edges,), float(init)))
        self.register_buffer("pruned", torch.zeros(space.num_edges, dtype=torch.bool))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, E) edge logits (the features are ignored)."""
        lg = self.logit.masked_fill(self.pruned, float("-inf"))
        return lg[None, :].expand(feats.shape[0], -1)

    @torch.no_grad()
    def prune(self, rate: float) -> int:
        """Prune the ``rate`` fraction (rounded down) of the allowed edges with the lowest logits
        (mutates); returns how many were pruned."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"pruning rate ({rate}) must be in [0, 1)")
        lg = self.logit.masked_fill(self.pruned, float("inf"))
        n = int(rate * int((~self.pruned).sum()))
        if n:
            self.pruned[torch.argsort(lg, stable=True)[:n]] = True
        return n


class QueryConditioned(nn.Module):
    """Query-conditioned edge logits from role embeddings, the query's features and (optionally) a
    feature vector per agent.

    ``h = P phi(q)`` (H,) projects the hashed query features; every node of the unrolled graph (an
    agent in a round) has a source and a target role embedding per edge kind, ``S_k, T_k`` (N, H),
    and an edge ``e = (u -> v)`` of kind ``k`` scores::

        l_e(q) = b_e + sum_h h_h S_kuh T_kvh  +  x_u^T W_e x_v

    the first part a bilinear scorer between the two roles gated by the query, so every edge's logit
    is its own (factorised) linear function of the query features. With ``node_dim = F > 0`` the last
    ``A * F`` input columns are per-agent features ``f_i`` (:func:`role_positions`). They enter twice:
    the query summary becomes ``h = P phi(q) + Q vec(f)`` (every edge sees where every role is
    mentioned, as a query node that reads all role nodes), and ``x_u = [1, f_agent(u)]`` with ``W_e``
    (F+1, F+1) each edge's own bilinear form over its two ends (e.g. "the target's role is mentioned
    right after the source's"). ``Q`` and ``W`` start at zero, so the initial logits are those of the
    policy without agent features, and a zero ``f`` (no role mentioned) leaves ``b_e`` + the query
    part. With ``P = 0`` and ``W = 0`` it reduces to free logits ``b`` (initialised to ``init``).
    ``feature_dim`` may be 0 (agent features only).

    ``order = True`` (a learned agent order, :func:`sample_ordered_graphs`) adds a Plackett-Luce score
    per non-final agent from the same inputs, :meth:`order_scores`::

        s_i(q) = c_i + h . r_i  +  v . f_i

    ``c`` (A-1,), ``r`` (A-1, H) and ``v`` (F,) (shared by the agents: "a role mentioned first goes
    first") all start at zero, so the initial order is uniform.
    """

    def __init__(
        self,
        space: GraphSpace,
        feature_dim: int,
        hidden: int = 64,
        seed: int = 0,
        init: float = 0.0,
        node_dim: int = 0,
        order: bool = False,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        n = space.num_nodes
        self.feature_dim, self.node_dim, self.num_agents = feature_dim, node_dim, space.num_agents
        for name in ("src", "dst", "kind"):
            self.register_buffer(f"e_{name}", torch.as_tensor(getattr(space, name)))
        self.register_buffer("e_src_agent", torch.as_tensor(space.node_agent(space.src)))
        self.register_buffer("e_dst_agent", torch.as_tensor(space.node_agent(space.dst)))
        self.proj = nn.Parameter(torch.randn(hidden, feature_dim, generator=g) / max(feature_dim, 1) ** 0.5)
        self.src = nn.Parameter(torch.randn(2, n, hidden, generator=g) / hidden**0.5)
        self.dst = nn.Parameter(torch.randn(2, n, hidden, generator=g) / hidden**0.5)
        self.bias = nn.Parameter(torch.full((space.num_edges,), float(init)))
        if node_dim:
            self.node_proj = nn.Parameter(torch.zeros(hidden, space.num_agents * node_dim))
            self.pair = nn.Parameter(torch.zeros(space.num_edges, node_dim + 1, node_dim + 1))
        self.learns_order = bool(order)
        if order:
            self.order_bias = nn.Parameter(torch.zeros(space.num_agents - 1))
            self.order_role = nn.Parameter(torch.zeros(space.num_agents - 1, hidden))
            if node_dim:
                self.order_feat = nn.Parameter(torch.zeros(node_dim))

    def _summary(self, feats: torch.Tensor) -> torch.Tensor:
        """The query summary ``h`` (B, H)."""
        want = self.feature_dim + self.num_agents * self.node_dim
        if feats.shape[-1] != want:
            raise ValueError(f"features of width {feats.shape[-1]}, expected {want}")
        q = feats[:, : self.feature_dim]
        h = q @ self.proj.T  # (B, H)
        if self.node_dim:
            h = h + feats[:, self.feature_dim :] @ self.node_proj.T
        return h

    def order_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D + A * F) -> (B, A - 1) Plackett-Luce scores of the non-final agents (``order=True``)."""
        if not self.learns_order:
            raise ValueError("this policy was built without an order head (order=False)")
        out = self._summary(feats) @ self.order_role.T + self.order_bias
        if self.node_dim:
            f = feats[:, self.feature_dim :].reshape(feats.shape[0], self.num_agents, self.node_dim)
            out = out + f[:, :-1] @ self.order_feat
        return out

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) or, with ``node_dim = F``, (B, D + A * F) -> (B, E) edge logits."""
        h = self._summary(feats)
        pair = self.src[self.e_kind, self.e_src] * self.dst[self.e_kind, self.e_dst]  # (E, H)
        out = h @ pair.T + self.bias
        if self.node_dim:
            f = feats[:, self.feature_dim :].reshape(feats.shape[0], self.num_agents, self.node_dim)
            x = torch.cat([torch.ones_like(f[..., :1]), f], dim=-1)  # (B, A, F + 1)
            xu, xv = x[:, self.e_src_agent], x[:, self.e_dst_agent]  # (B, E, F + 1)
            out = out + torch.einsum("bef,efg,beg->be", xu, self.pair, xv)
        return out


class FixedPolicy(nn.Module):
    """A hand-designed topology as a policy without parameters (``fixed_topology``'s logits)."""

    def __init__(self, space: GraphSpace, name: str, *, layers: int = 3) -> None:
        super().__init__()
        self.register_buffer("logits", fixed_topology(space, name, layers=layers))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, E), the same for every query."""
        return self.logits[None, :].expand(feats.shape[0], -1)


def fixed_topology(space: GraphSpace, name: str, *, layers: int = 3) -> torch.Tensor:
    """(E,) logits of a hand-designed topology: +inf on its edges, -inf elsewhere (``random``: 0 on
    every candidate edge, a fresh graph with ``p = 0.5`` per edge for every query). The final agent
    is ``A - 1``.

    - ``chain``: ``i -> i+1`` in each round; temporal ``i -> i`` (each agent keeps its own thread).
    - ``star``: hub-and-spoke, agent 0 talks to every other agent (temporal ``i -> i``). AgentPrune's
      released "star" is in fact a complete DAG; this one is a real star.
    - ``layered``: agents split into ``layers`` consecutive groups, each group talks to the next
      (temporal ``i -> i``).
    - ``complete``: every spatial edge ``i < j`` and every temporal edge.
    - ``debate``: no spatial edges; every temporal edge (each agent reads all answers of the previous
      round; with one round the agents answer alone).
    - ``single``: no edges (with the ``last`` decision only the final agent runs).

    In a learned-order space (:func:`graph_space`) they use the fixed role order: spatial ``i < j``
    only (``random``: ``-inf`` on the others), so they stay acyclic without an order.
    """
    a = space.num_agents
    i, j = space.node_agent(space.src), space.node_agent(space.dst)
    sp, tm = space.kind == SPATIAL, space.kind == TEMPORAL
    if space.learned_order:
        sp = sp & (i < j)
    same = tm & (i == j)
    if name == "random":
        if space.learned_order:
            return torch.where(torch.as_tensor(sp | tm), 0.0, float("-inf"))
        return torch.zeros(space.num_edges)
    if name == "chain":
        on = (sp & (j == i + 1)) | same
    elif name == "star":
        on = (sp & (i == 0)) | same
    elif name == "layered":
        layer = np.zeros(a, dtype=np.int64)
        for n, grp in enumerate(np.array_split(np.arange(a), min(layers, a))):
            layer[grp] = n
        on = (sp & (layer[j] == layer[i] + 1)) | same
    elif name == "complete":
        on = sp | tm
    elif name == "debate":
        on = tm.copy()
    elif name == "single":
        on = np.zeros(space.num_edges, dtype=bool)
    else:
        raise ValueError(f"unknown topology {name!r}; valid names: {', '.join(TOPOLOGIES)}")
    out = torch.full((space.num_edges,), float("-inf"))
    out[torch.as_tensor(on)] = float("inf")
    return out
