"""The topology policy as a learner: a policy that writes no tokens, with its own optimizer.

It learns from the advantages the core's credit rule gave its graph nodes (``marl.credit.graphs``):
one advantage per graph (graph-level, REINFORCE) or per edge decision (edge-level), with the loss

    L = -(1/G) sum_k sum_e A_ke log q_e(a_ke)  +  beta * (1/B) sum_b KL(pi(.|q_b) || pi_ref(.|q_b))
        - c_H * (1/B) sum_b sum_e H(p_e(.|q_b))

over the ``G`` graphs of the step (a graph-level advantage is the same on every edge of its graph,
so its term is ``-A_k log pi(G_k)``) and the ``B`` queries, ``pi_ref`` a frozen copy of the initial
policy, or with ``kl_ref_logit = l_ref`` the same Bernoulli ``sigmoid(l_ref)`` on every edge (a
sparsity prior for ``l_ref < 0``) (``marl.credit.graphs.edge_kl``). ``q_e`` is the distribution
the graphs were drawn from: ``p_e = sigmoid(l_e)``, or with ``explore = eps > 0`` the mixed
``eps + (1 - 2 eps) p_e`` (``topologies.graphs.mixed_probs``). ``H`` is the entropy of each edge's
Bernoulli ``p_e`` (``topologies.graphs.edge_entropy``), an entropy bonus with coefficient ``c_H``
(``entropy_coef``) that keeps the logits from saturating. ``c_H`` and the Adam learning rate may
follow a schedule over the run (:func:`scheduled`: constant, linear or cosine decay from the start
value to a final value). Edges a policy forces (fixed topologies, pruned edges) have
log-probability 0, entropy 0 and no gradient.

With a learned agent order (``topologies.graphs.sample_ordered_graphs``) graph ``k`` is the pair
(order ``pi_k``, edges): its edge terms run over the edges ``pi_k`` allows (a masked edge has
log-probability 0), and the order adds the Plackett-Luce term with the graph's graph-level advantage
``A_k`` (``marl.credit.graphs.decision_advantages``: Graph-GRPO's group-relative ``A_k``, or
``u_k`` for REINFORCE), whatever the edges' credit::

    L_order = -(1/G) sum_k A_k log PL(pi_k | s(q_k))                      (:func:`order_loss`)

The edges' KL and entropy bonus stay on their Bernoullis (every candidate edge, masked or not), and
the order gets its own, with the same coefficients and schedule::

    L_order_reg = beta * (1/B) sum_b KL(PL(s(q_b)) || PL_ref)  -  c_H * (1/B) sum_b H(PL(s(q_b)))

``PL_ref`` the initial policy's order (``kl_reference: initial``), or for a fixed reference
(``kl_ref_logit``: the sparse edge prior) the uniform order, where ``KL = log M! - H``
(``topologies.graphs.plackett_luce_kl``, ``plackett_luce_entropy``: exact sums over the ``M!``
orders for ``M <= 7``, chain-rule estimates over the sampled orders above). Without them a saturated
order gets no gradient from the graph-level advantage (every graph of a group has the same order), so
a wrong order stays (``benchmarks/results/topologies.md``).

Shape legend: ``B`` queries, ``K`` graphs per query, ``E`` candidate edges, ``D`` query features.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from marl.credit.graphs import edge_kl
from topologies.graphs import (
    FEATURES,
    edge_entropy,
    edge_logprobs,
    plackett_luce_entropy,
    plackett_luce_kl,
    plackett_luce_logprob,
)

SCHEDULES = ("constant", "linear", "cosine")


def scheduled(kind: str, start: float, final: float, step: int, total: int) -> float:
    """The value of a schedule at ``step`` of ``total`` (``t = min(step / total, 1)``): ``constant``
    keeps ``start``; ``linear`` is ``final + (start - final) (1 - t)``; ``cosine`` is
    ``final + (start - final) (1 + cos(pi t)) / 2``. Both decays give ``start`` at step 0 and
    ``final`` from step ``total`` on."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule ({kind!r}) must be one of {SCHEDULES}")
    if total < 1 or step < 0:
        raise ValueError(f"schedule needs total >= 1 and step >= 0 (got step {step}, total {total})")
    if kind == "constant":
        return float(start)
    t = min(step / total, 1.0)
    w = 1.0 - t if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
    return float(final + (start - final) * w)


def check_settings(features: str, entropy_coef: float, explore: float, prefix: str = "") -> None:
    """ValueError unless ``features`` is a kind of ``topologies.graphs.policy_features``,
    ``entropy_coef >= 0`` and ``0 <= explore < 0.5``."""
    if features not in FEATURES:
        raise ValueError(f"{prefix}features ({features!r}) must be one of {FEATURES}")
    if not entropy_coef >= 0:
        raise ValueError(f"{prefix}entropy_coef ({entropy_coef}) must be >= 0")
    if not 0.0 <= explore < 0.5:
        raise ValueError(f"{prefix}explore ({explore}) must be in [0, 0.5)")


def check_schedules(
    entropy_schedule: str, entropy_final: float, lr_schedule: str, lr_final: float, prefix: str = ""
) -> None:
    """ValueError unless both schedules are one of ``SCHEDULES``, ``entropy_final >= 0`` and
    ``lr_final >= 0``."""
    for name, kind in (("entropy_schedule", entropy_schedule), ("lr_schedule", lr_schedule)):
        if kind not in SCHEDULES:
            raise ValueError(f"{prefix}{name} ({kind!r}) must be one of {SCHEDULES}")
    if not entropy_final >= 0:
        raise ValueError(f"{prefix}entropy_final ({entropy_final}) must be >= 0")
    if not lr_final >= 0:
        raise ValueError(f"{prefix}lr_final ({lr_final}) must be >= 0")


def topology_loss(
    logits: torch.Tensor, decisions: torch.Tensor, advantages: torch.Tensor, explore: float = 0.0
) -> torch.Tensor:
    """``-(1/(B K)) sum_{b,k,e} A_bke log q_e(a_bke)``: logits (B, E), or (B, K, E) per graph (masked
    by its order), decisions and advantages (B, K, E) -> scalar; ``q`` the sampling distribution
    (``explore``: its epsilon mixing). A forced or masked edge (infinite logit) contributes 0."""
    if logits.dim() == 2:
        logits = logits[:, None, :]
    lp = edge_logprobs(logits, decisions, explore)
    lp = torch.where(torch.isfinite(logits), lp, torch.zeros_like(lp))
    return -(advantages * lp).sum(-1).mean()


def order_loss(scores: torch.Tensor, orders: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``-(1/(B K)) sum_{b,k} A_bk log PL(pi_bk | s_b)``: scores (B, M), orders (B, K, M) (first item
    first), graph-level advantages (B, K) -> scalar (``topologies.graphs.plackett_luce_logprob``)."""
    return -(advantages * plackett_luce_logprob(scores[:, None, :], orders)).mean()


def edge_advantages_table(advantages, num_graphs: int, num_edges: int) -> torch.Tensor:
    """The credit result's advantages as (G, E): a per-graph scalar is spread over its edges, a list of
    per-edge arrays is stacked."""
    if isinstance(advantages, list):
        out = np.stack(advantages) if advantages else np.zeros((0, num_edges))
    else:
        out = np.repeat(np.asarray(advantages, dtype=np.float64)[:, None], num_edges, axis=1)
    if out.shape != (num_graphs, num_edges):
        raise ValueError(f"advantages of shape {out.shape}, expected ({num_graphs}, {num_edges})")
    return torch.as_tensor(out, dtype=torch.float32)


class TopologyLearner:
    """A topology policy, its frozen reference and its own Adam optimizer; ``state_dict`` for checkpoints."""

    def __init__(
        self,
        policy: nn.Module,
        *,
        lr: float,
        kl_coef: float = 0.0,
        entropy_coef: float = 0.0,
        explore: float = 0.0,
        entropy_schedule: str = "constant",
        entropy_final: float = 0.0,
        lr_schedule: str = "constant",
        lr_final: float = 0.0,
        kl_ref_logit: float | None = None,
    ) -> None:
        check_settings(FEATURES[0], entropy_coef, explore)
        check_schedules(entropy_schedule, entropy_final, lr_schedule, lr_final)
        self.policy = policy
        self.kl_coef = kl_coef
        self.entropy_start = self.entropy_coef = entropy_coef
        self.entropy_schedule, self.entropy_final = entropy_schedule, entropy_final
        self.lr_start, self.lr_schedule, self.lr_final = lr, lr_schedule, lr_final
        self.explore = explore
        self.kl_ref_logit = kl_ref_logit
        use_copy = kl_coef > 0 and kl_ref_logit is None
        self.reference = copy.deepcopy(policy).requires_grad_(False) if use_copy else None
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr) if params else None

    def set_step(self, step: int, total: int) -> dict[str, float]:
        """Set the entropy coefficient and the learning rate of step ``step`` of ``total``
        (:func:`scheduled`); returns both."""
        start, final = self.entropy_start, self.entropy_final
        self.entropy_coef = scheduled(self.entropy_schedule, start, final, step, total)
        lr = scheduled(self.lr_schedule, self.lr_start, self.lr_final, step, total)
        if self.optimizer is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        return {"entropy_coef": self.entropy_coef, "lr": lr}

    def learn(
        self,
        feats: torch.Tensor,
        decisions: torch.Tensor,
        advantages: torch.Tensor,
        *,
        orders: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        order_advantages: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One optimizer step on the graphs of one step: feats (B, D), decisions and advantages
        (B, K, E), drawn with this learner's ``explore``. Returns ``loss``, ``pg_loss``, ``kl``,
        ``entropy`` (mean over queries of the summed edge entropies) and ``grad_norm``. A learned
        order: ``orders`` (B, K, A - 1), the edges each allowed (B, K, E) bool, and the graphs'
        graph-level advantages (B, K); adds ``order_loss`` (included in ``pg_loss``), ``order_entropy``
        (mean over queries of ``H(PL)``) and ``order_kl`` (0 without a KL); ``entropy`` and ``kl``
        stay the edges'."""
        logits = self.policy(feats)
        extra = {}
        if orders is None:
            pg = topology_loss(logits, decisions, advantages, self.explore)
        else:
            masked = logits[:, None, :].expand_as(allowed).masked_fill(~allowed, float("-inf"))
            scores = self.policy.order_scores(feats)
            lo = order_loss(scores, orders, order_advantages)
            pg = topology_loss(masked, decisions, advantages, self.explore) + lo
        ent = edge_entropy(logits).sum(-1).mean()
        kl = torch.zeros(())
        if self.kl_coef > 0:
            with torch.no_grad():
                if self.reference is not None:
                    ref = self.reference(feats)
                else:  # a fixed reference: the same logit on every edge
                    ref = torch.full_like(logits, float(self.kl_ref_logit))
            ok = torch.isfinite(logits) & torch.isfinite(ref)
            kl = edge_kl(logits.masked_fill(~ok, 0.0), ref.masked_fill(~ok, 0.0)).mean()
        loss = pg + self.kl_coef * kl - self.entropy_coef * ent
        if orders is not None:  # the order's entropy bonus and KL, with the edges' coefficients
            ent_o = plackett_luce_entropy(scores, orders).mean()
            kl_o = torch.zeros(())
            if self.kl_coef > 0:
                with torch.no_grad():  # the initial policy's scores, or equal scores: the uniform order
                    ref = self.reference
                    ref_s = ref.order_scores(feats) if ref is not None else torch.zeros_like(scores)
                kl_o = plackett_luce_kl(scores, ref_s, orders).mean()
            loss = loss + self.kl_coef * kl_o - self.entropy_coef * ent_o
            extra = {"order_loss": lo, "order_entropy": ent_o, "order_kl": kl_o}
            extra = {k: float(v.detach()) for k, v in extra.items()}
        grad_norm = 0.0
        if self.optimizer is not None:
            self.optimizer.zero_grad()
            loss.backward()
            grads = [p.grad.norm() for p in self.policy.parameters() if p.grad is not None]
            grad_norm = float(torch.stack(grads).norm()) if grads else 0.0
            self.optimizer.step()
        loss, pg, kl, ent = (float(x.detach()) for x in (loss, pg, kl, ent))
        return {"loss": loss, "pg_loss": pg, "kl": kl, "entropy": ent, "grad_norm": grad_norm, **extra}

    def state_dict(self) -> dict:
        d = {"policy": self.policy.state_dict()}
        if self.optimizer is not None:
            d["optimizer"] = self.optimizer.state_dict()
        if self.reference is not None:
            d["reference"] = self.reference.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        self.policy.load_state_dict(d["policy"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(d["optimizer"])
        if self.reference is not None:
            self.reference.load_state_dict(d["reference"])
