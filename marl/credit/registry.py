"""The glue scenarios call: config names -> credit rules (what each reads, where its rewards come
from), and the stateful ``CreditAssigner``.

A scenario picks its rule, keys and normaliser in YAML (``CreditConfig``), grows a tree, sets the
raw rewards the environment paid on each node, and calls ``CreditAssigner(cfg, multi_turn=...)(tree)``;
the result feeds ``marl.samples.tree_to_batches``. The scenario never needs to know what the rule
reads: the rule's ``RuleSpec`` says it (``key_fields`` lists the tree fields its keys use, so a
scenario fills ``state_hash`` only when some rule reads it), and the assigner turns the raw rewards
into what the rule compares (``RuleSpec.reward``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from marl.credit.config import CreditConfig, CreditResult, check_settings
from marl.credit.graphs import rule_graph_grpo, rule_graph_grpo_edge, rule_graph_reinforce
from marl.credit.groups import check_finite
from marl.credit.multiturn import returns_to_go
from marl.credit.normalizers import NORMALIZERS, Normalizer, make_normalizer
from marl.credit.rules import (
    Rule,
    node_key,
    rule_advantage_alignment,
    rule_advevo,
    rule_dr_grpo,
    rule_gigpo,
    rule_grpo,
    rule_loo_returns,
    rule_mars2_tree,
    rule_mars_turn,
    rule_mc_grpo,
    rule_ngrpo,
    rule_reinforce_pp,
    rule_reinforce_pp_baseline,
    rule_rloo,
    rule_spiral_rae,
    rule_spo,
    sample_rewards,
    spo_tracker,
)
from marl.tree import TurnTree

logger = logging.getLogger(__name__)

REWARD_KINDS = ("outcome", "turn", "tree")


@dataclass(frozen=True)
class RuleSpec:
    """A credit rule and what it reads.

    ``reward``: what the rule compares. ``outcome``: one scalar per sample; in a multi-turn scenario
    each turn is judged by its player's discounted return-to-go from that turn
    ``G_k = sum_{j >= k} gamma^(j-k) r_j`` (so an outcome paid on the last turn reaches every turn,
    ``gamma^(turns left)`` times). ``turn``: the raw per-turn rewards, which the rule turns into
    returns itself (MARS, GiGPO, Advantage Alignment). ``tree``: the rule reads the rewards of whole
    trees (MARS² shaping). ``settings``: top-level ``CreditConfig`` fields it reads; ``block``: its
    sub-block; ``inputs``: what else it needs from the run (``policy_kl``: each agent's per-update
    policy KL, measured by the learner).
    """

    fn: Rule
    reward: str
    settings: tuple[str, ...] = ("group_key",)
    block: str | None = None
    inputs: tuple[str, ...] = ()

    def reads(self, multi_turn: bool | None = None) -> tuple[str, ...]:
        """Config fields this rule reads (``multi_turn`` None: in either kind of scenario)."""
        extra = ("player_key", "gamma") if self.reward == "outcome" and multi_turn is not False else ()
        return (*self.settings, *((self.block,) if self.block else ()), *extra)


_STD = ("eps", "unbiased_std")
RULES: dict[str, RuleSpec] = {
    "grpo": RuleSpec(rule_grpo, "outcome", ("group_key", "scale_by_std", *_STD)),
    "dr_grpo": RuleSpec(rule_dr_grpo, "outcome"),
    "rloo": RuleSpec(rule_rloo, "outcome"),
    "reinforce_pp": RuleSpec(rule_reinforce_pp, "outcome", (), "reinforce_pp"),
    "reinforce_pp_baseline": RuleSpec(rule_reinforce_pp_baseline, "outcome", ("group_key",), "reinforce_pp"),
    "mc_grpo": RuleSpec(rule_mc_grpo, "outcome", ("group_key", *_STD), "mc_grpo"),
    "ngrpo": RuleSpec(rule_ngrpo, "outcome", ("group_key", *_STD), "ngrpo"),
    "spo": RuleSpec(rule_spo, "outcome", ("group_key", "eps"), "spo", ("policy_kl",)),
    "advevo": RuleSpec(rule_advevo, "outcome"),
    "mars_turn": RuleSpec(rule_mars_turn, "turn", ("player_key", "gamma", *_STD)),
    "spiral_rae": RuleSpec(rule_spiral_rae, "outcome", ("group_key",), "spiral_rae"),
    "gigpo": RuleSpec(
        rule_gigpo, "turn", ("group_key", "player_key", "gamma", "scale_by_std", *_STD), "gigpo"
    ),
    "advantage_alignment": RuleSpec(
        rule_advantage_alignment,
        "turn",
        ("group_key", "player_key", "gamma", "time_step"),
        "advantage_alignment",
    ),
    "mars2_tree": RuleSpec(rule_mars2_tree, "tree", ("scale_by_std", *_STD), "mars2"),
    "graph_grpo": RuleSpec(rule_graph_grpo, "outcome", ("group_key", *_STD), "topology"),
    "graph_grpo_edge": RuleSpec(rule_graph_grpo_edge, "outcome", ("group_key", *_STD), "topology"),
    "graph_reinforce": RuleSpec(rule_graph_reinforce, "outcome", (), "topology"),
    "loo_returns": RuleSpec(rule_loo_returns, "turn", ("group_key", "player_key", "gamma", "time_step")),
}
"""Config name -> rule. The one place a ``credit.rule`` string becomes code."""

CREDIT_RULES: dict[str, Rule] = {name: spec.fn for name, spec in RULES.items()}
"""Config name -> rule function (the ``fn`` of ``RULES``)."""


def get_spec(name: str) -> RuleSpec:
    """A rule's entry by config name; an unknown name lists the valid ones."""
    if name not in RULES:
        raise ValueError(f"unknown credit rule {name!r}; valid names: {sorted(RULES)}")
    return RULES[name]


def get_rule(name: str) -> Rule:
    """Look a rule up by config name; an unknown name lists the valid ones."""
    return get_spec(name).fn


def key_fields(cfg: CreditConfig, *, multi_turn: bool = True) -> set[str]:
    """Tree fields the chosen rule's keys read (a scenario fills ``state_hash`` only when listed)."""
    reads = set(get_spec(cfg.rule).reads(multi_turn))
    out: set[str] = set()
    if "group_key" in reads:
        out.update(cfg.group_key)
    if "player_key" in reads:
        out.update(cfg.player_key)
    if "gigpo" in reads:
        out.update(cfg.gigpo.anchor_key)
    return out


def default_sample_nodes(tree: TurnTree) -> np.ndarray:
    """Every node that has an agent (>= 0) and a payload: the trainable samples."""
    return np.flatnonzero((tree.agent >= 0) & tree.has_payload()).astype(np.int64)


class CreditAssigner:
    """Holds a scenario's credit settings and the stateful parts (SPO values, RAE baselines, the
    agents' KL clocks, running normalisers) across iterations; ``state_dict``/``load_state_dict``
    for checkpoints.

    ``multi_turn``: the scenario's kind. ``True``: samples are turns of trajectories (episode,
    ``player_key``) ordered by ``turn``, and an outcome rule compares each turn's return-to-go.
    ``False``: one sample per trajectory; rules over turns are refused. ``None`` (a direct caller
    that does not say): any rule, outcome rules compare the node rewards as they are.
    """

    def __init__(self, cfg: CreditConfig, *, multi_turn: bool | None = None) -> None:
        check_settings(cfg, multi_turn=multi_turn)
        self.cfg = cfg
        self.spec = get_spec(cfg.rule)
        self.rule = self.spec.fn
        self.multi_turn = multi_turn
        if cfg.normalizer not in NORMALIZERS:
            raise ValueError(f"unknown normalizer {cfg.normalizer!r}; valid names: {sorted(NORMALIZERS)}")
        self.normalizer: Normalizer = make_normalizer(cfg.normalizer, eps=cfg.eps)
        if cfg.eps < 0:
            raise ValueError(f"eps must be >= 0, got {cfg.eps}")
        self._state: dict[str, Any] = {}

    @property
    def needs_policy_kl(self) -> bool:
        """Whether the rule reads each agent's per-update policy KL (``observe_policy_kl``)."""
        return "policy_kl" in self.spec.inputs

    def observe_policy_kl(self, agent: str, kl: float) -> None:
        """Add one learner update's policy KL of ``agent`` to its KL clock (mutates)."""
        check_finite(np.asarray([kl], dtype=np.float64), "policy KL")
        clock = self._state.setdefault("kl_clock", {})
        clock[agent] = clock.get(agent, 0.0) + max(float(kl), 0.0)

    def rewards(self, tree: TurnTree, nodes: np.ndarray) -> np.ndarray:
        """What the rule compares for each sample node (see ``RuleSpec``): the node's reward, or in a
        multi-turn scenario, for an outcome rule, its player's discounted return-to-go."""
        r = sample_rewards(tree, nodes)
        if self.multi_turn and self.spec.reward == "outcome":
            traj = (tree.episode[nodes], *node_key(tree, nodes, self.cfg.player_key))
            r = returns_to_go(r, traj, tree.turn[nodes], gamma=self.cfg.gamma)
        return r

    def __call__(self, tree: TurnTree, nodes: np.ndarray | None = None) -> CreditResult:
        """Advantages for ``nodes`` (default: every node with an agent and a payload)."""
        nodes = default_sample_nodes(tree) if nodes is None else np.asarray(nodes, dtype=np.int64).reshape(-1)
        if nodes.size:
            if nodes.min() < 0 or nodes.max() >= len(tree):
                raise IndexError(f"nodes must be ids in [0, {len(tree)}), got {nodes.min()}..{nodes.max()}")
            if np.bincount(nodes, minlength=len(tree)).max() > 1:
                raise ValueError("nodes contains duplicate ids; each sample must appear once")
        res = self.rule(tree, nodes, self.rewards(tree, nodes), self.cfg, self._state)
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
        for k in ("kl_clock", "spo_seen"):
            if k in self._state:
                d[k] = {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in self._state[k].items()}
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
        for k in ("spo", "rae", "kl_clock", "spo_seen"):
            self._state.pop(k, None)
        for k in ("kl_clock", "spo_seen"):
            if k in d:
                self._state[k] = {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in d[k].items()}
        if "spo" in d:
            tracker = spo_tracker(self.cfg)
            tracker.load_state_dict(d["spo"])
            self._state["spo"] = tracker
        if "rae" in d:
            self._state["rae"] = {
                "keys": np.asarray(d["rae"]["keys"], dtype=np.int64).copy(),
                "values": np.asarray(d["rae"]["values"], dtype=np.float64).copy(),
            }
