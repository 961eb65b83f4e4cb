"""Credit-assignment settings (one YAML block per scenario) and the result record of a rule.

The top level of ``CreditConfig`` holds what several rules share (the rule, its keys, the
normaliser, ``eps``, the std convention, the trajectory discount); each rule's own settings live in
its sub-block (``credit.spo.*``, ``credit.mars2.*``, ...). A setting that the chosen rule does not
read is an error at config time, naming the rule and what it reads (``check_settings``, from the
rule's entry in ``marl.credit.registry.RULES``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Mars2Settings:
    """MARS² tree-consistent reward shaping (rule ``mars2_tree``)."""

    lam: float = 0.5
    """Weight of the sibling mean in the baseline (1 - lam on the parent reward)."""
    shaping_gamma: float = 0.5
    """Shaping strength: r~ = r + shaping_gamma * (r - b) (MARTI default 0.5)."""


@dataclass
class NgrpoSettings:
    """NGRPO's virtual sample (rule ``ngrpo``)."""

    r_max: float = 1.0
    """Maximum attainable reward carried by the virtual sample."""


@dataclass
class McGrpoSettings:
    """Median-centred GRPO (rule ``mc_grpo``)."""

    scale_by_std: bool = False
    """Also divide the median-centred reward by the group std."""


@dataclass
class ReinforcePPSettings:
    """REINFORCE++ batch whitening and token discount (rules ``reinforce_pp``, ``reinforce_pp_baseline``)."""

    gamma: float = 1.0
    """reinforce_pp: discount of the per-token return G_t = r_t + gamma * G_{t+1}."""
    whiten_eps: float = 1e-8
    """Epsilon inside sqrt(var + eps) of the batch whitening (OpenRLHF's 1e-8)."""
    unbiased: bool = True
    """Batch variance divides by n - 1, as verl's ``masked_whiten`` (False: by n, as OpenRLHF)."""


@dataclass
class SpiralRaeSettings:
    """SPIRAL's role-conditioned advantage estimation (rule ``spiral_rae``)."""

    alpha: float = 0.95
    """EMA decay of the per-(game, role) baseline."""


@dataclass
class GigpoSettings:
    """GiGPO's step groups (rule ``gigpo``)."""

    omega: float = 1.0
    """Weight of the step-level advantage in A = A^E + omega * A^S."""
    anchor_key: list[str] = field(default_factory=lambda: ["state_hash"])
    """Fields identifying an anchor state; equal anchors inside one group form a step group."""


@dataclass
class AdvantageAlignmentSettings:
    """Advantage Alignment (rule ``advantage_alignment``)."""

    beta: float = 1.0
    """Strength of the alignment term (tuned per environment in the paper; AdAlignLLM uses 2)."""


@dataclass
class SpoSettings:
    """SPO's persistent per-prompt value tracker (rule ``spo``)."""

    rho_min: float = 0.875
    """Lower clip of the KL-adaptive forgetting rate rho."""
    rho_max: float = 0.96
    """Upper clip of rho (also the rate of a prompt the agent's policy has not moved since)."""
    d_half: float = 0.06
    """KL at which the tracker's memory halves, rho = 2^(-D / D_half); D is the sampling agent's
    accumulated per-update KL since it last saw the prompt (measured by the learner)."""
    init_value: float = 0.5
    """Value of a prompt never seen before (the paper seeds it offline)."""


@dataclass
class TopologySettings:
    """Graph credit (rules ``graph_grpo``, ``graph_grpo_edge``, ``graph_reinforce``)."""

    token_cost: float = 0.0
    """lambda of the utility u = score - lambda * tokens (MaAS); 0 scores the outcome alone."""
    edge_credit: str = "mean"
    """Rule graph_grpo_edge: mean (the paper's A_e = S_e centred and scaled across edges) | contrast
    (optional variant, not the paper's: (S_e^+ - S_e^-) / std u between the group's graphs with and
    without e, +/- on present / absent decisions; ``marl.credit.graphs.edge_contrast_advantages``)."""

    def validate(self) -> None:
        if not self.token_cost >= 0:  # NaN too
            raise ValueError(f"credit.topology.token_cost ({self.token_cost}) must be >= 0 (cost per token)")
        if self.edge_credit not in ("mean", "contrast"):
            raise ValueError(f"credit.topology.edge_credit ({self.edge_credit!r}) must be mean or contrast")


@dataclass
class CreditConfig:
    """How a scenario turns its scored tree into advantages: the rule, its keys, its normaliser."""

    rule: str = "grpo"
    """Credit rule, a key of ``marl.credit.RULES`` (e.g. grpo, rloo, mars2_tree, mars_turn)."""
    group_key: list[str] = field(default_factory=lambda: ["group"])
    """TurnTree fields forming the group id (GRPO group, SPO prompt, RAE (game, role), AdvEvo functional
    group, GiGPO episode group, Advantage-Alignment common-random-number group)."""
    player_key: list[str] = field(default_factory=lambda: ["agent", "role"])
    """Fields naming a player; a trajectory is (episode, player) ordered by ``turn`` (multi-turn)."""
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
    """Discount along a player's turns: the returns of multi-turn rules (MARS turn, GiGPO (paper 0.95),
    Advantage Alignment) and, in multi-turn scenarios, the return-to-go an outcome rule (GRPO, RLOO,
    ...) judges each turn by."""
    time_step: str = "turn"
    """Time step of rules loo_returns and advantage_alignment: turn (each of a player's turns is one
    step, gamma per turn) | round (AdAlignLLM: a player's turns of one round are one step, with the
    round's summed reward, one discount, one leave-one-out baseline and one alignment term per round;
    needs each turn's round in its payload, ``data["round"]``, as the dilemma games record it)."""
    mars2: Mars2Settings = field(default_factory=Mars2Settings)
    """Rule mars2_tree."""
    ngrpo: NgrpoSettings = field(default_factory=NgrpoSettings)
    """Rule ngrpo."""
    mc_grpo: McGrpoSettings = field(default_factory=McGrpoSettings)
    """Rule mc_grpo."""
    reinforce_pp: ReinforcePPSettings = field(default_factory=ReinforcePPSettings)
    """Rules reinforce_pp and reinforce_pp_baseline."""
    spiral_rae: SpiralRaeSettings = field(default_factory=SpiralRaeSettings)
    """Rule spiral_rae."""
    gigpo: GigpoSettings = field(default_factory=GigpoSettings)
    """Rule gigpo."""
    advantage_alignment: AdvantageAlignmentSettings = field(default_factory=AdvantageAlignmentSettings)
    """Rule advantage_alignment."""
    spo: SpoSettings = field(default_factory=SpoSettings)
    """Rule spo."""
    topology: TopologySettings = field(default_factory=TopologySettings)
    """Rules graph_grpo, graph_grpo_edge and graph_reinforce."""

    def validate(self) -> None:
        check_settings(self)
        self.topology.validate()
        if self.topology.edge_credit != "mean" and self.rule != "graph_grpo_edge":
            raise ValueError(
                f"credit.topology.edge_credit is set, but rule {self.rule!r} does not read it "
                "(only graph_grpo_edge does); remove it"
            )


def check_settings(cfg: CreditConfig, *, multi_turn: bool | None = None) -> None:
    """Reject settings the chosen rule does not read (a value other than the default), naming the rule.

    ``multi_turn`` (the scenario's kind, when known): ``False`` also rejects rules that need
    multi-turn trajectories and the trajectory settings (``gamma``, ``player_key``) of outcome
    rules; ``None`` accepts what either kind of scenario would read.
    """
    from marl.credit.registry import get_spec

    spec = get_spec(cfg.rule)
    if cfg.eps < 0:
        raise ValueError(f"credit.eps ({cfg.eps}) must be >= 0")
    if not 0.0 < cfg.gamma <= 1.0:
        raise ValueError(f"credit.gamma ({cfg.gamma}) must be in (0, 1]")
    if cfg.time_step not in ("turn", "round"):
        raise ValueError(f"credit.time_step ({cfg.time_step!r}) must be turn or round")
    if multi_turn is False and spec.reward == "turn":
        raise ValueError(
            f"credit.rule {cfg.rule!r} assigns credit along a player's turns; this scenario has "
            "single-turn samples: choose an outcome rule (grpo, rloo, ...)"
        )
    reads = set(spec.reads(multi_turn))
    defaults = CreditConfig()
    for f in dataclasses.fields(CreditConfig):
        if f.name in reads or f.name in ("rule", "normalizer"):
            continue
        if getattr(cfg, f.name) != getattr(defaults, f.name):
            raise ValueError(
                f"credit.{f.name} is set, but rule {cfg.rule!r} does not read it "
                f"(it reads: {', '.join(sorted(reads)) or 'only the rewards'}); remove it"
            )


RETIRED_KEYS: dict[str, str] = {
    "credit.lam": "credit.mars2.lam",
    "credit.shaping_gamma": "credit.mars2.shaping_gamma",
    "credit.r_max": "credit.ngrpo.r_max",
    "credit.mc_scale_by_std": "credit.mc_grpo.scale_by_std",
    "credit.whiten_eps": "credit.reinforce_pp.whiten_eps",
    "credit.rae_alpha": "credit.spiral_rae.alpha",
    "credit.gigpo_omega": "credit.gigpo.omega",
    "credit.anchor_key": "credit.gigpo.anchor_key",
    "credit.aa_beta": "credit.advantage_alignment.beta",
    "credit.spo_rho_min": "credit.spo.rho_min",
    "credit.spo_rho_max": "credit.spo.rho_max",
    "credit.spo_d_half": "credit.spo.d_half",
    "credit.spo_init_value": "credit.spo.init_value",
}
"""Credit keys of earlier versions -> where the setting lives now (a config that uses one is told)."""


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
