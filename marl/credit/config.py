"""Credit-assignment settings (one YAML block per scenario) and the result record of a rule."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CreditConfig:
    """How a scenario turns its scored tree into advantages: the rule, its group key, its normaliser."""

    rule: str = "grpo"
    """Credit rule, a key of ``marl.credit.CREDIT_RULES`` (e.g. grpo, rloo, mars2_tree, mars_turn)."""
    group_key: list[str] = field(default_factory=lambda: ["group"])
    """TurnTree fields forming the group id (GRPO group, SPO prompt, RAE (game, role), AdvEvo functional
    group, GiGPO episode group, Advantage-Alignment common-random-number group)."""
    player_key: list[str] = field(default_factory=lambda: ["agent", "role"])
    """Fields naming a player; a trajectory is (episode, player) ordered by ``turn`` (multi-turn rules)."""
    anchor_key: list[str] = field(default_factory=lambda: ["state_hash"])
    """GiGPO: fields identifying an anchor state; equal anchors inside one group form a step group."""
    normalizer: str = "none"
    """Advantage normaliser, a key of ``marl.credit.NORMALIZERS``: none | batch_per_agent |
    batch_per_role | running_per_agent | running_per_role."""
    eps: float = 1e-6
    """epsilon added to a std before dividing (verl's 1e-6)."""
    unbiased_std: bool = True
    """Group std divides by n - 1 (verl/torch default) instead of n."""
    scale_by_std: bool = True
    """Divide centred rewards by the group std (GRPO, GiGPO, path-level); False gives mean-centring only."""
    gamma: float = 1.0
    """Discount for returns along a trajectory (REINFORCE++, MARS turn, GiGPO (paper 0.95), AA)."""
    lam: float = 0.5
    """MARS² shaping: weight of the sibling mean in the baseline (1 - lam on the parent reward)."""
    shaping_gamma: float = 0.5
    """MARS² shaping strength: r~ = r + shaping_gamma * (r - b) (MARTI default 0.5)."""
    r_max: float = 1.0
    """NGRPO: maximum attainable reward carried by the virtual sample."""
    mc_scale_by_std: bool = False
    """MC-GRPO: also divide the median-centred reward by the group std."""
    whiten_eps: float = 1e-8
    """REINFORCE++ batch whitening epsilon inside sqrt(var + eps) (OpenRLHF's 1e-8)."""
    rae_alpha: float = 0.95
    """SPIRAL RAE: EMA decay of the per-(game, role) baseline."""
    gigpo_omega: float = 1.0
    """GiGPO: weight of the step-level advantage in A = A^E + omega * A^S."""
    aa_beta: float = 1.0
    """Advantage Alignment: strength of the alignment term (tuned per environment in the paper)."""
    spo_rho_min: float = 0.875
    """SPO: lower clip of the KL-adaptive forgetting rate rho."""
    spo_rho_max: float = 0.96
    """SPO: upper clip of rho (also the rate used without a KL estimate)."""
    spo_d_half: float = 0.06
    """SPO: KL at which the tracker's memory halves, rho = 2^(-D / D_half)."""
    spo_init_value: float = 0.5
    """SPO: value of a prompt never seen before (the paper seeds it offline)."""


@dataclass
class CreditResult:
    """Advantages for the selected nodes, aligned with ``nodes``."""

    advantages: np.ndarray | list[np.ndarray]
    """(N_sel,) one scalar per node, or a list of per-token arrays (completion length) for token rules."""
    train_mask: np.ndarray
    """(N_sel,) bool: nodes that enter the gradient (the MC-GRPO pivot does not)."""
    nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(N_sel,) int64 node ids the advantages belong to (set by every rule)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalar diagnostics, keys namespaced ``credit/...``."""
