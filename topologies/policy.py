"""The topology policy's settings, its construction and its input (``policy:`` of a topology config)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from topologies.graphs import (
    ORDERS,
    TOPOLOGIES,
    FixedPolicy,
    FreeLogits,
    GraphSpace,
    QueryConditioned,
    policy_features,
    query_feature_dim,
    role_feature_dim,
)
from topologies.learner import check_schedules, check_settings

POLICY_KINDS = ("query", "free", "fixed")


@dataclass
class PolicySettings:
    """The topology policy and its optimizer."""

    kind: str = "query"
    """query (role embeddings x hashed query n-grams, bilinear) | free (one logit per edge,
    GPTSwarm/AgentPrune) | fixed (a hand-designed topology)."""
    features: str = "roles"
    """kind query: ngram (hashed 1-3-grams) | ordered (+ skip-bigrams) | roles (ordered + where each
    agent's role is mentioned in the query) | roles_only (``topologies.graphs.policy_features``)."""
    topology: str = "complete"
    """kind fixed: chain | star | layered | complete | random | debate | single."""
    layers: int = 3
    """kind fixed, topology layered: number of layers."""
    feature_dim: int = 256
    """Hashed n-gram buckets of the query features."""
    hidden: int = 64
    """kind query: rank of the bilinear scorer."""
    init_logit: float = 0.0
    """Initial logit of every learned edge (0: p = 0.5, GPTSwarm's start; negative: sparser graphs)."""
    lr: float = 0.1
    """Adam learning rate (GPTSwarm's 0.1)."""
    kl_coef: float = 0.0
    """beta of the KL to the reference edge distribution (Graph-GRPO's reference; see kl_reference);
    a learned order gets the same beta on its KL to the initial order (initial) or the uniform order
    (sparse)."""
    kl_reference: str = "initial"
    """The KL's reference: initial (a frozen copy of the initial policy) | sparse (p_ref =
    sigmoid(kl_ref_logit) on every edge, a sparsity prior)."""
    kl_ref_logit: float = -2.0
    """kl_reference sparse: the reference logit of every edge (-2: p_ref = 0.12)."""
    entropy_coef: float = 0.0
    """Entropy bonus on the edge Bernoullis and a learned order's Plackett-Luce distribution (0: none,
    as in GPTSwarm / G-Designer / Graph-GRPO)."""
    entropy_schedule: str = "constant"
    """constant | linear | cosine: decay of the entropy bonus from entropy_coef at step 0 to
    entropy_final at the last step (``topologies.learner.scheduled``)."""
    entropy_final: float = 0.0
    """Entropy bonus at the last step (a decaying schedule only)."""
    lr_schedule: str = "constant"
    """constant | linear | cosine: decay of the learning rate from lr to lr_final."""
    lr_final: float = 0.0
    """Learning rate at the last step (a decaying schedule only)."""
    explore: float = 0.0
    """Epsilon of the mixed edge sampling q = eps + (1 - 2 eps) p (0: none); log-probs are those of q."""
    prune_rate: float = 0.0
    """kind free: fraction of edges AgentPrune's one-shot magnitude pruning removes (paper: 0.25)."""
    prune_at: int = 0
    """Step after which the pruning happens (0: never)."""
    eval_graph: str = "mode"
    """Evaluation graph: mode (edges with p > 0.5, GPTSwarm's rule) | sample (one draw; for random)."""
    order: str = "fixed"
    """Agent order that keeps graphs acyclic: fixed (spatial edges i -> j for i < j, the role order) |
    learned (kind query: per graph a Plackett-Luce order of the non-final agents masks spatial edges
    in both directions; ``topologies.graphs.sample_ordered_graphs``)."""

    def validate(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"policy.kind ({self.kind!r}) must be one of {POLICY_KINDS}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"policy.topology ({self.topology!r}) must be one of {TOPOLOGIES}")
        check_settings(self.features, self.entropy_coef, self.explore, "policy.")
        check_schedules(self.entropy_schedule, self.entropy_final, self.lr_schedule, self.lr_final, "policy.")
        if self.kl_reference not in ("initial", "sparse"):
            raise ValueError(f"policy.kl_reference ({self.kl_reference!r}) must be initial or sparse")
        if self.eval_graph not in ("mode", "sample"):
            raise ValueError(f"policy.eval_graph ({self.eval_graph!r}) must be mode or sample")
        if not 0.0 <= self.prune_rate < 1.0:
            raise ValueError(f"policy.prune_rate ({self.prune_rate}) must be in [0, 1)")
        if self.prune_rate > 0 and self.kind != "free":
            raise ValueError(f"policy.prune_rate ({self.prune_rate}) needs policy.kind free")
        if self.order not in ORDERS:
            raise ValueError(f"policy.order ({self.order!r}) must be one of {ORDERS}")
        if self.order == "learned" and self.kind != "query":
            raise ValueError(f"policy.order learned needs policy.kind query (got {self.kind!r})")


def make_policy(cfg: PolicySettings, space: GraphSpace, seed: int) -> torch.nn.Module:
    """The topology policy the settings name."""
    if cfg.kind == "query":
        dim, node = query_feature_dim(cfg.features, cfg.feature_dim), role_feature_dim(cfg.features)
        kw = dict(hidden=cfg.hidden, seed=seed, init=cfg.init_logit, node_dim=node)
        return QueryConditioned(space, dim, **kw, order=cfg.order == "learned")
    if cfg.kind == "free":
        return FreeLogits(space, init=cfg.init_logit)
    return FixedPolicy(space, cfg.topology, layers=cfg.layers)


def features(cfg: PolicySettings, names: list[str], queries) -> torch.Tensor:
    """The policy's input for these queries (``policy.features``; the roles are the team members' names)."""
    return policy_features([q.text for q in queries], names, cfg.features, cfg.feature_dim)
