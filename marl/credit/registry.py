"""The glue scenarios call: config names -> credit rules, and the stateful ``CreditAssigner``.

A scenario picks its rule, group key and normaliser in YAML (``CreditConfig``), grows a tree, sets
rewards, and calls ``CreditAssigner(cfg)(tree)``; the result feeds ``marl.samples.tree_to_batches``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from marl.credit.config import CreditConfig, CreditResult
from marl.credit.groups import check_finite
from marl.credit.normalizers import NORMALIZERS, Normalizer, make_normalizer
from marl.credit.outcome import SPOValueTracker
from marl.credit.rules import (
    Rule,
    rule_advantage_alignment,
    rule_advevo,
    rule_dr_grpo,
    rule_gigpo,
    rule_grpo,
    rule_mars2_tree,
    rule_mars_turn,
    rule_mc_grpo,
    rule_ngrpo,
    rule_reinforce_pp,
    rule_reinforce_pp_baseline,
    rule_rloo,
    rule_spiral_rae,
    rule_spo,
)
from marl.tree import TurnTree

logger = logging.getLogger(__name__)

CREDIT_RULES: dict[str, Rule] = {
    "grpo": rule_grpo,
    "dr_grpo": rule_dr_grpo,
    "rloo": rule_rloo,
    "reinforce_pp": rule_reinforce_pp,
    "reinforce_pp_baseline": rule_reinforce_pp_baseline,
    "mc_grpo": rule_mc_grpo,
    "ngrpo": rule_ngrpo,
    "spo": rule_spo,
    "advevo": rule_advevo,
    "mars_turn": rule_mars_turn,
    "spiral_rae": rule_spiral_rae,
    "gigpo": rule_gigpo,
    "advantage_alignment": rule_advantage_alignment,
    "mars2_tree": rule_mars2_tree,
}


def get_rule(name: str) -> Rule:
    """Look a rule up by config name; an unknown name lists the valid ones."""
    if name not in CREDIT_RULES:
        raise ValueError(f"unknown credit rule {name!r}; valid names: {sorted(CREDIT_RULES)}")
    return CREDIT_RULES[name]


def default_sample_nodes(tree: TurnTree) -> np.ndarray:
    """Every node that has an agent (>= 0) and a payload: the trainable samples."""
    return np.flatnonzero((tree.agent >= 0) & tree.has_payload()).astype(np.int64)


class CreditAssigner:
    """Holds a scenario's credit settings and the stateful parts (SPO values, RAE baselines,
    running normalisers) across iterations; ``state_dict``/``load_state_dict`` for checkpoints."""

    def __init__(self, cfg: CreditConfig) -> None:
        self.cfg = cfg
        self.rule = get_rule(cfg.rule)
        if cfg.normalizer not in NORMALIZERS:
            raise ValueError(f"unknown normalizer {cfg.normalizer!r}; valid names: {sorted(NORMALIZERS)}")
        self.normalizer: Normalizer = make_normalizer(cfg.normalizer, eps=cfg.eps)
        if cfg.eps < 0:
            raise ValueError(f"eps must be >= 0, got {cfg.eps}")
        self._state: dict[str, Any] = {}

    def __call__(
        self, tree: TurnTree, nodes: np.ndarray | None = None, *, policy_kl: float | np.ndarray | None = None
    ) -> CreditResult:
        """Advantages for ``nodes`` (default: every node with an agent and a payload).

        ``policy_kl`` (SPO only): the policy's KL drift since the prompts were last seen, a scalar or
        one value per node; it sets the value tracker's forgetting rate.
        """
        nodes = default_sample_nodes(tree) if nodes is None else np.asarray(nodes, dtype=np.int64).reshape(-1)
        if nodes.size:
            if nodes.min() < 0 or nodes.max() >= len(tree):
                raise IndexError(f"nodes must be ids in [0, {len(tree)}), got {nodes.min()}..{nodes.max()}")
            if np.bincount(nodes, minlength=len(tree)).max() > 1:
                raise ValueError("nodes contains duplicate ids; each sample must appear once")
        self._state["inputs"] = {"policy_kl": policy_kl}
        try:
            res = self.rule(tree, nodes, self.cfg, self._state)
        finally:
            self._state.pop("inputs", None)
        if res.nodes.size == 0:
            res.nodes = nodes
        if len(res.advantages) != nodes.size or np.shape(res.train_mask) != (nodes.size,):
            raise ValueError(
                f"credit rule {self.cfg.rule!r} returned {len(res.advantages)} advantages and a "
                f"train_mask of shape {np.shape(res.train_mask)} for {nodes.size} nodes; need one per node"
            )
        res.advantages = self._normalize(tree, res)
        self._add_metrics(res)
        return res

    def _normalize(self, tree: TurnTree, res: CreditResult) -> np.ndarray | list[np.ndarray]:
        field = self.normalizer.key_field
        if field is None:
            return res.advantages
        keep = res.train_mask
        keys = np.asarray(tree.field(field))[res.nodes]
        if isinstance(res.advantages, list):  # per-token: every token counts once
            lens = np.array([a.shape[0] for a in res.advantages], dtype=np.int64)
            kept = [a for a, k in zip(res.advantages, keep) if k]
            flat = np.concatenate(kept) if kept else np.zeros(0)
            normed = self.normalizer(flat, np.repeat(keys[keep], lens[keep]))
            out, pos = [], 0
            for a, k in zip(res.advantages, keep):
                if k:
                    out.append(normed[pos : pos + a.shape[0]])
                    pos += a.shape[0]
                else:
                    out.append(np.zeros_like(a))
            return out
        adv = np.asarray(res.advantages, dtype=np.float64)
        out = np.zeros_like(adv)
        out[keep] = self.normalizer(adv[keep], keys[keep])  # pivots stay 0 and out of the stats
        return out

    @staticmethod
    def _add_metrics(res: CreditResult) -> None:
        adv = res.advantages
        flat = np.concatenate(adv) if isinstance(adv, list) and adv else np.asarray(adv, dtype=np.float64)
        flat = flat.reshape(-1)
        check_finite(flat, "advantage")
        res.metrics.update(
            {
                "credit/samples": float(res.nodes.shape[0]),
                "credit/in_gradient": float(res.train_mask.sum()),
                "credit/adv_mean": float(flat.mean()) if flat.size else 0.0,
                "credit/adv_std": float(flat.std()) if flat.size else 0.0,
                "credit/adv_zero_frac": float((flat == 0).mean()) if flat.size else 0.0,
            }
        )

    def state_dict(self) -> dict:
        """Plain, picklable state: SPO tracker, RAE baselines and the normaliser's statistics."""
        d: dict[str, Any] = {"rule": self.cfg.rule, "normalizer": self.normalizer.state_dict()}
        if "spo" in self._state:
            d["spo"] = self._state["spo"].state_dict()
        if "rae" in self._state:
            d["rae"] = {k: v.copy() for k, v in self._state["rae"].items()}
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore ``state_dict`` output (mutates)."""
        if d.get("rule") != self.cfg.rule:
            raise ValueError(
                f"checkpoint credit state is for rule {d.get('rule')!r}, config says {self.cfg.rule!r}"
            )
        self.normalizer.load_state_dict(d.get("normalizer", {}))
        self._state.pop("spo", None)
        self._state.pop("rae", None)
        if "spo" in d:
            tracker = SPOValueTracker(
                rho_min=self.cfg.spo_rho_min,
                rho_max=self.cfg.spo_rho_max,
                d_half=self.cfg.spo_d_half,
                init_value=self.cfg.spo_init_value,
            )
            tracker.load_state_dict(d["spo"])
            self._state["spo"] = tracker
        if "rae" in d:
            self._state["rae"] = {
                "keys": np.asarray(d["rae"]["keys"], dtype=np.int64).copy(),
                "values": np.asarray(d["rae"]["values"], dtype=np.float64).copy(),
            }
