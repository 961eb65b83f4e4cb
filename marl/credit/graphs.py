"""Credit for a policy that samples communication graphs (Graph-GRPO and the REINFORCE baselines).

A graph sample ``k`` is a vector of edge decisions ``a_k`` in {0, 1}^E over the candidate edges of
its query (the same E candidates for every graph of a query), with per-edge log-probabilities
``log p_e(a_ke)`` and ``log pi(G_k) = sum_e log p_e(a_ke)``. Its utility is the outcome score less
the token cost (MaAS, Zhang et al. 2025, "Multi-agent Architecture Search via Agentic Supernet"):

    u_k = score_k - lambda * tokens_k

The K graphs of one query form a group. Graph-GRPO ("Graph-GRPO: group-relative policy
optimisation of multi-agent communication topologies", the seed paper of ``topologies/``) gives:

- graph level:  ``A_k = (u_k - mean_K u) / (std_K u + eps)``, loss ``-sum_k A_k log pi(G_k)``;
- edge level:   ``S_e = mean of u_k over the graphs of the group that contain e``,
  ``A_e = (S_e - mean_e S) / (std_e S + eps)`` over the edges present in at least one graph of the
  group, loss ``-sum_e A_e log p_e(a_e)``.

Variant, not in the paper (``credit.topology.edge_credit: contrast``; the rule's default ``mean`` is
the formula above and stays available): the spec's ``S_e`` beside its mirror for absent edges, as the
per-edge contrast ``C_e = (S_e^+ - S_e^-) / (std_K u + eps)``, ``S_e^+`` /
``S_e^-`` the mean utility of the group's graphs with / without ``e``, credited ``+C_e`` to present
and ``-C_e`` to absent decisions. For independent Bernoulli edges the exact policy gradient on edge
``e``'s logit is ``p_e (1 - p_e) (E[u | a_e = 1] - E[u | a_e = 0])``; ``C_e`` estimates that
difference, so its sign can say "drop this edge" for every edge at once (the mean rule's ``A_e`` sums
to about 0 over the edges, so it cannot ask for fewer edges overall). The shipped edge-level configs
use it (``configs/topologies/graph_grpo.yaml``; chosen on the training queries,
``benchmarks/results/topologies.md``).

REINFORCE without a baseline (GPTSwarm, Zhuge et al. ICML 2024; AgentPrune, Zhang et al. ICLR 2025;
G-Designer, Zhang et al. ICML 2025) uses ``A_k = u_k``. The policy is kept near a reference edge
distribution with the KL of independent Bernoulli edges (:func:`edge_kl`).

A graph may also hold a per-graph decision beside its edges (a sampled agent order, which masks some
candidate edges: the graph node's ``data["allowed"]`` (E,) says which edges it could contain). That
decision gets the graph-level advantage, whatever the edges' rule (:func:`decision_advantages`:
``A_k`` of the graph-level rule, ``u_k`` for REINFORCE); the contrast rule then compares, for each
edge, only the graphs that allowed it (a masked edge was not a decision: it gets 0 and counts on
neither side).

Shape legend: ``K`` graph samples (of all queries together), ``E`` candidate edges.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from marl.credit.config import CreditConfig, CreditResult
from marl.credit.groups import GroupIds, group_codes, safe_divide
from marl.credit.outcome import grpo_advantages
from marl.credit.rules import node_key
from marl.tree import TurnTree


def token_cost_utility(scores: np.ndarray, tokens: np.ndarray, lam: float) -> np.ndarray:
    """MaAS utility ``u_k = score_k - lam * tokens_k``: (K,), (K,) -> (K,) float64."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.float64)
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and tokens {t.shape} must have the same shape")
    if lam < 0:
        raise ValueError(f"token cost lambda ({lam}) must be >= 0")
    return s - lam * t


def graph_advantages(
    utilities: np.ndarray, group_ids: GroupIds, *, unbiased: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """Graph-GRPO graph-level advantage ``A_k = (u_k - mean_g u) / (std_g u + eps)`` over the K
    graphs of each query (group ``g``); the GRPO formula (Shao et al. 2024) applied to graphs. A group
    of one or an all-equal group gives exactly 0."""
    return grpo_advantages(utilities, group_ids, scale_by_std=True, unbiased=unbiased, eps=eps)


def _edge_sums(
    utilities: np.ndarray, decisions: np.ndarray, group_ids: GroupIds
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Checked (K,) utilities and (K, E) 0/1 decisions, group codes and count, and per group and edge
    the number of graphs containing the edge and the sum of their utilities."""
    u = np.asarray(utilities, dtype=np.float64).reshape(-1)
    a = np.asarray(decisions)
    if a.ndim != 2 or a.shape[0] != u.shape[0]:
        raise ValueError(f"decisions must be (K, E) with K = {u.shape[0]} utilities, got shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("decisions must be 0 or 1 (edge absent / present)")
    a = a.astype(np.float64)
    codes, ng = group_codes(group_ids, u.shape[0])
    count = np.zeros((ng, a.shape[1]))
    total = np.zeros((ng, a.shape[1]))
    np.add.at(count, codes, a)
    np.add.at(total, codes, a * u[:, None])
    return u, a, codes, ng, count, total


def edge_advantages(
    utilities: np.ndarray,
    decisions: np.ndarray,
    group_ids: GroupIds,
    *,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> np.ndarray:
    """Graph-GRPO edge-level credit: (K,) utilities, (K, E) decisions -> (K, E) advantages.

    Inside each group ``g`` (the graphs of one query): ``S_ge = mean{u_k : k in g, a_ke = 1}`` for
    every edge present in at least one of them, ``A_ge = (S_ge - mean_e S_g) / (std_e S_g + eps)``
    (``std`` over those edges, ``n - 1`` when ``unbiased``; fewer than two such edges, or all equal,
    give 0). The edge's advantage goes to every sampled decision that put it in a graph:
    ``out[k, e] = A_ge if a_ke = 1 else 0``, so ``-(1/K) sum_k sum_e out[k, e] log p_e(a_ke)`` is the
    paper's ``-sum_e A_e log p_e`` with each edge weighted by how often it was sampled.
    """
    u, a, codes, ng, count, total = _edge_sums(utilities, decisions, group_ids)
    present = count > 0
    s = np.divide(total, count, out=np.zeros_like(total), where=present)
    m = present.sum(1)  # edges present per group
    mean = np.divide(s.sum(1), m, out=np.zeros(ng), where=m > 0)
    dev = np.where(present, s - mean[:, None], 0.0)
    denom = m - (1 if unbiased else 0)
    std = np.sqrt(np.divide((dev * dev).sum(1), denom, out=np.zeros(ng), where=denom > 0))
    adv = safe_divide(dev, std[:, None], eps)
    return adv[codes] * a


def edge_contrast_advantages(
    utilities: np.ndarray,
    decisions: np.ndarray,
    group_ids: GroupIds,
    *,
    unbiased: bool = True,
    eps: float = 1e-6,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Per-edge contrast credit (optional variant, see the module docstring): (K,) utilities, (K, E)
    decisions -> (K, E) advantages.

    Inside each group ``g``: ``C_ge = (S_ge^+ - S_ge^-) / (std_g u + eps)`` with ``S_ge^+`` (``S_ge^-``)
    the mean utility of the group's graphs that contain (do not contain) ``e``; 0 when every graph of
    the group agrees on ``e`` or all utilities are equal. ``out[k, e] = C_ge if a_ke = 1 else -C_ge``,
    so the loss ``-sum_e out log p_e(a_e)`` moves ``e``'s logit towards the sign of ``C_ge`` from both
    kinds of decision. ``allowed`` (K, E) bool (a per-graph mask, e.g. an agent order): ``S_ge^-``
    averages only the graphs that allowed ``e`` and left it out, and ``out[k, e] = 0`` where graph
    ``k`` did not allow ``e``; the normaliser ``std_g u`` stays that of the whole group.
    """
    u, a, codes, ng, cnt_on, tot_on = _edge_sums(utilities, decisions, group_ids)
    n = np.bincount(codes, minlength=ng).astype(np.float64)
    tot = np.bincount(codes, weights=u, minlength=ng)
    if allowed is None:
        cnt_off, tot_off = n[:, None] - cnt_on, tot[:, None] - tot_on
    else:
        ok = np.asarray(allowed, dtype=bool)
        if ok.shape != a.shape or (a.astype(bool) & ~ok).any():
            raise ValueError(f"allowed {ok.shape} must be (K, E) = {a.shape} and hold every present edge")
        cnt_ok, tot_ok = np.zeros_like(cnt_on), np.zeros_like(tot_on)
        np.add.at(cnt_ok, codes, ok.astype(np.float64))
        np.add.at(tot_ok, codes, ok * u[:, None])
        cnt_off, tot_off = cnt_ok - cnt_on, tot_ok - tot_on
    both = (cnt_on > 0) & (cnt_off > 0)
    s_on = np.divide(tot_on, cnt_on, out=np.zeros_like(tot_on), where=both)
    s_off = np.divide(tot_off, cnt_off, out=np.zeros_like(tot_off), where=both)
    mean = tot / np.maximum(n, 1)
    dev = u - mean[codes]
    denom = n - (1 if unbiased else 0)
    sq = np.bincount(codes, weights=dev * dev, minlength=ng)
    var = np.divide(sq, denom, out=np.zeros(ng), where=denom > 0)
    c = safe_divide(s_on - s_off, np.sqrt(var)[:, None], eps)
    if allowed is None:
        return c[codes] * (2.0 * a - 1.0)
    return c[codes] * (2.0 * a - 1.0) * ok


def reinforce_advantages(utilities: np.ndarray) -> np.ndarray:
    """REINFORCE without a baseline (GPTSwarm, G-Designer): ``A_k = u_k``, loss
    ``-sum_k u_k log pi(G_k)``. (K,) -> (K,) float64."""
    return np.asarray(utilities, dtype=np.float64).copy()


def edge_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) of two independent-Bernoulli edge distributions, summed over edges.

    ``KL = sum_e p_e log(p_e / q_e) + (1 - p_e) log((1 - p_e) / (1 - q_e))``, ``p = sigmoid(l)``,
    ``q = sigmoid(l_ref)``: (..., E) -> (...). Graph-GRPO keeps its edge policy near a reference.
    """
    p = torch.sigmoid(logits)
    lp, lq = -F.softplus(-logits), -F.softplus(-ref_logits)
    l1p, l1q = -F.softplus(logits), -F.softplus(ref_logits)
    return (p * (lp - lq) + (1 - p) * (l1p - l1q)).sum(-1)


def decision_advantages(
    rule: str, utilities: np.ndarray, group_ids: GroupIds, *, unbiased: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """The advantage of a per-graph decision made beside the edges (a sampled agent order): the
    graph-level credit of ``rule``'s family, (K,) -> (K,). ``graph_reinforce``: ``u_k``
    (:func:`reinforce_advantages`); ``graph_grpo`` and ``graph_grpo_edge``: Graph-GRPO's
    ``A_k = (u_k - mean_g u) / (std_g u + eps)`` (:func:`graph_advantages`), since one decision per
    graph has no edge to be credited by."""
    if rule == "graph_reinforce":
        return reinforce_advantages(utilities)
    if rule in ("graph_grpo", "graph_grpo_edge"):
        return graph_advantages(utilities, group_ids, unbiased=unbiased, eps=eps)
    raise ValueError(f"rule ({rule!r}) must be graph_grpo, graph_grpo_edge or graph_reinforce")


# ----------------------------------------------------------------------------- tree adapters
def graph_utilities(tree: TurnTree, nodes: np.ndarray, scores: np.ndarray, lam: float) -> np.ndarray:
    """(K,) utilities ``u = score - lam * tokens`` of graph nodes; with ``lam > 0`` each graph node's
    payload must hold the tokens its agents' calls used as ``data["tokens"]``."""
    if lam == 0:
        return token_cost_utility(scores, np.zeros(nodes.shape[0]), 0.0)
    tokens = np.zeros(nodes.shape[0])
    for j, i in enumerate(nodes.tolist()):  # payloads live in a Python list
        p = tree.payloads[i]
        if p is None or "tokens" not in p.data:
            raise ValueError(f"node {i}: credit.topology.token_cost > 0 needs data['tokens'] on graph nodes")
        tokens[j] = float(p.data["tokens"])
    return token_cost_utility(scores, tokens, lam)


def graph_decisions(tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
    """(K, E) edge decisions of graph nodes: a graph node's payload holds one 0/1 token per candidate
    edge as ``completion_ids`` (their log-probs as ``logprobs``), the same E for all of them."""
    rows = []
    for i in nodes.tolist():
        p = tree.payloads[i]
        if p is None:
            raise ValueError(f"node {i} has no payload; a graph node holds its edge decisions")
        rows.append(np.asarray(p.completion_ids).reshape(-1))
    lens = sorted({r.shape[0] for r in rows})
    if len(lens) > 1:
        raise ValueError(f"graph nodes hold edge decisions of different lengths {lens}; need one edge space")
    return np.stack(rows) if rows else np.zeros((0, 0), np.int64)


def graph_allowed(tree: TurnTree, nodes: np.ndarray) -> np.ndarray | None:
    """(K, E) bool: the edges each graph node could contain (``data["allowed"]``, written when a
    per-graph order masks some), or None when no graph node holds a mask."""
    rows = [
        tree.payloads[i].data.get("allowed") if tree.payloads[i] is not None else None for i in nodes.tolist()
    ]
    if all(r is None for r in rows):
        return None
    if any(r is None for r in rows):
        raise ValueError("some graph nodes hold data['allowed'] and others do not; need one kind of graph")
    return np.stack([np.asarray(r, dtype=bool) for r in rows])


def graph_decision_advantages(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig
) -> np.ndarray:
    """(K,) :func:`decision_advantages` of graph nodes under ``cfg`` (its rule, group key and token
    cost); ``r`` the nodes' rewards (``CreditAssigner.rewards``)."""
    u = graph_utilities(tree, nodes, r, cfg.topology.token_cost)
    groups = node_key(tree, nodes, cfg.group_key)
    return decision_advantages(cfg.rule, u, groups, unbiased=cfg.unbiased_std, eps=cfg.eps)


def rule_graph_grpo(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    u = graph_utilities(tree, nodes, r, cfg.topology.token_cost)
    adv = graph_advantages(u, node_key(tree, nodes, cfg.group_key), unbiased=cfg.unbiased_std, eps=cfg.eps)
    res = CreditResult(nodes=nodes, advantages=adv, train_mask=np.ones(nodes.shape[0], bool))
    res.metrics["credit/utility_mean"] = float(u.mean()) if u.size else 0.0
    return res


def rule_graph_grpo_edge(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    u = graph_utilities(tree, nodes, r, cfg.topology.token_cost)
    a = graph_decisions(tree, nodes)
    groups, kw = node_key(tree, nodes, cfg.group_key), dict(unbiased=cfg.unbiased_std, eps=cfg.eps)
    if cfg.topology.edge_credit == "contrast":
        allowed = graph_allowed(tree, nodes)
        adv = edge_contrast_advantages(
            u, a, groups, **kw, **({} if allowed is None else {"allowed": allowed})
        )
    else:  # S_e reads present edges only, which a mask cannot change
        adv = edge_advantages(u, a, groups, **kw)
    res = CreditResult(nodes=nodes, advantages=list(adv), train_mask=np.ones(nodes.shape[0], bool))
    res.metrics["credit/utility_mean"] = float(u.mean()) if u.size else 0.0
    return res


def rule_graph_reinforce(
    tree: TurnTree, nodes: np.ndarray, r: np.ndarray, cfg: CreditConfig, state: dict
) -> CreditResult:
    u = graph_utilities(tree, nodes, r, cfg.topology.token_cost)
    res = CreditResult(
        nodes=nodes, advantages=reinforce_advantages(u), train_mask=np.ones(nodes.shape[0], bool)
    )
    res.metrics["credit/utility_mean"] = float(u.mean()) if u.size else 0.0
    return res
