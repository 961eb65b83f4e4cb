"""Credit assignment on the shared turn tree: pure, vectorised rules, normalisers and the registry.

See ``marl.credit.outcome`` (GRPO family, SPO), ``marl.credit.multiturn`` (MARS, SPIRAL, GiGPO,
Advantage Alignment), ``marl.credit.treeshaping`` (MARS²), ``marl.credit.normalizers`` and
``marl.credit.registry`` (``CreditConfig``, ``CREDIT_RULES``, ``CreditAssigner``).
"""

from marl.credit.config import CreditConfig, CreditResult
from marl.credit.groups import check_finite, group_codes, whiten
from marl.credit.multiturn import (
    advantage_alignment_credit,
    co_player_sum,
    discounted_returns,
    gigpo_advantages,
    loo_return_advantages,
    mars_turn_advantages,
    role_conditioned_advantages,
)
from marl.credit.normalizers import (
    NORMALIZERS,
    BatchNormalizer,
    IdentityNormalizer,
    Normalizer,
    RunningNormalizer,
    batch_normalize_per_key,
    make_normalizer,
)
from marl.credit.outcome import (
    SPOValueTracker,
    dr_grpo_advantages,
    grpo_advantages,
    mc_grpo_advantages,
    ngrpo_advantages,
    public_baseline_advantages,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    reinforce_pp_returns,
    rloo_advantages,
    spo_advantages,
)
from marl.credit.registry import CREDIT_RULES, CreditAssigner, default_sample_nodes, get_rule
from marl.credit.treeshaping import path_level_advantages, tree_baselines, tree_shaped_rewards

__all__ = [
    "CREDIT_RULES",
    "NORMALIZERS",
    "BatchNormalizer",
    "CreditAssigner",
    "CreditConfig",
    "CreditResult",
    "IdentityNormalizer",
    "Normalizer",
    "RunningNormalizer",
    "SPOValueTracker",
    "advantage_alignment_credit",
    "batch_normalize_per_key",
    "check_finite",
    "co_player_sum",
    "default_sample_nodes",
    "discounted_returns",
    "dr_grpo_advantages",
    "get_rule",
    "gigpo_advantages",
    "group_codes",
    "grpo_advantages",
    "loo_return_advantages",
    "make_normalizer",
    "mars_turn_advantages",
    "mc_grpo_advantages",
    "ngrpo_advantages",
    "path_level_advantages",
    "public_baseline_advantages",
    "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages",
    "reinforce_pp_returns",
    "rloo_advantages",
    "role_conditioned_advantages",
    "spo_advantages",
    "tree_baselines",
    "tree_shaped_rewards",
    "whiten",
]
