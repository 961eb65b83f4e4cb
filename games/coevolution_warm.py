"""Warm starts of the co-evolution scenario (supervised, completion cross-entropy; the loop and the
cache are the core's, ``marl.warmstart``).

- **Attackers** learn the shipped *training* attack templates (``games.coevolution_attacks``): the
  prompt names the entry point, the target is a template's message (AdvEvo-MARL warms its attackers
  up on about 4,000 attack examples).
- **Defenders** learn the task and to be **vulnerable**: in a share ``attack_share`` of their
  pairs a training template sits in some defender's slot, and that defender does what it says
  (``games.coevolution_env.defender_warm_texts``), so co-evolution has something to fix.
- **Guard** (baseline): blocks the training templates, passes clean slots.

Held-out templates never enter any warm start. The defenders' pairs also hold orders with the
held-out *goals* (``goal_share``; training verbs and wrappers, ``make_templates("warm_goal")``), so
the untrained defenders obey those goals; no attacker or guard pair holds one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from games.coevolution_attacks import attacker_prompt, make_templates
from games.coevolution_env import (
    CoevoEnvConfig,
    Instance,
    defender_warm_texts,
    guard_warm_texts,
    make_canary,
)
from marl.agent import Agent
from marl.digits import DigitTask
from marl.seeding import derive_seed
from marl.warmstart import SupervisedSettings, cache_key, encode_pairs, warm_start_run_agent


@dataclass
class CoevoWarmStartSettings:
    """Supervised warm starts before co-evolution (steps 0 skips a side)."""

    attacker_steps: int = 150
    """Optimizer steps of each attacker on the training templates."""
    defender_steps: int = 300
    """Optimizer steps of each defender on the task made vulnerable."""
    guard_steps: int = 150
    """Optimizer steps of the guard (baseline) on block/pass verdicts."""
    instances: int = 2000
    """Scenario instances drawn from the training tasks for the defenders' and the guard's pairs."""
    attack_share: float = 0.5
    """Share of those instances that carry a training template (the defenders learn to obey it)."""
    goal_share: float = 0.25
    """Share of the attacked instances whose order asks for a held-out goal instead (``%skip``, the
    key as ``the code``; training verbs and wrappers): the defenders learn to obey those goals too,
    so the held-out-goal ASR starts high. No attacker or guard warm start sees them."""
    batch_size: int = 32
    """Pairs per optimizer step."""
    lr: float = 3e-3
    """Learning rate of the warm start's own AdamW (the agents' optimizers are untouched)."""
    cache: bool = True
    """Reuse a cached warm start with the same settings instead of training again."""

    def validate(self) -> None:
        if min(self.attacker_steps, self.defender_steps, self.guard_steps) < 0 or self.batch_size < 1:
            raise ValueError("warmstart: steps must be >= 0 and batch_size >= 1")
        if self.instances < 1 or not 0 <= self.attack_share <= 1 or not 0 <= self.goal_share <= 1:
            raise ValueError(
                f"warmstart.instances ({self.instances}) must be >= 1, attack_share "
                f"({self.attack_share}) and goal_share ({self.goal_share}) in [0, 1]"
            )


def warm_instances(
    task: DigitTask,
    env: CoevoEnvConfig,
    n: int,
    attack_share: float,
    rng: np.random.Generator,
    goal_share: float = 0.0,
):
    """``n`` training instances, a share ``attack_share`` of them with a training template; of
    those, a share ``goal_share`` asks for a held-out goal instead (training verbs and wrappers)."""
    train, warm_goal = make_templates("train"), make_templates("warm_goal")
    out = []
    for _ in range(n):
        p = task.train[int(rng.integers(len(task.train)))]
        entry = env.entry_points[int(rng.integers(len(env.entry_points)))]
        t = train[int(rng.integers(len(train)))] if rng.random() < attack_share else None
        if t is not None and goal_share > 0 and rng.random() < goal_share:
            t = warm_goal[int(rng.integers(len(warm_goal)))]
        out.append(Instance(p, make_canary(rng, env.canary_length), entry, "template" if t else None, t))
    return out


def warm_texts(
    task: DigitTask,
    env: CoevoEnvConfig,
    instances: int,
    attack_share: float,
    *,
    seed: int,
    goal_share: float = 0.0,
) -> dict[str, list[tuple[str, str]]]:
    """(prompt, target) texts by role: each defender role, 'guard' and 'attacker'."""
    rng = np.random.default_rng(derive_seed(seed, "warmstart"))
    drawn = warm_instances(task, env, instances, attack_share, rng, goal_share)
    texts = defender_warm_texts(drawn, env)
    texts["guard"] = guard_warm_texts(drawn)
    texts["attacker"] = [
        (attacker_prompt(e), t.text) for t in make_templates("train") for e in env.entry_points
    ]
    return texts


def warm_start(
    agents: Mapping[str, Agent],
    roles: Mapping[str, Sequence[str]],
    task: DigitTask,
    env: CoevoEnvConfig,
    ws: CoevoWarmStartSettings,
    *,
    seed: int,
    cache_dir,
) -> dict[str, float]:
    """Warm-start every agent by its role (``roles``: 'attacker', 'guard' or a defender role -> agent
    names); mutates their weights. Returns ``warmstart/<agent>/{loss_first,loss_last,...}``."""
    texts = warm_texts(task, env, ws.instances, ws.attack_share, seed=seed, goal_share=ws.goal_share)
    steps = {"attacker": ws.attacker_steps, "guard": ws.guard_steps}
    metrics: dict[str, float] = {}
    for role, names in roles.items():
        for name in names:
            agent, n = agents[name], steps.get(role, ws.defender_steps)
            if n == 0:
                continue
            settings = SupervisedSettings(steps=n, batch_size=ws.batch_size, lr=ws.lr, cache=ws.cache)
            key = cache_key("coevolution", agent.cfg.policy, role, texts[role], n, ws.batch_size, ws.lr, seed)
            make = lambda a=agent, r=role: encode_pairs(texts[r], a.policy)  # noqa: E731
            metrics.update(
                warm_start_run_agent(agent, make, settings, cache_dir=cache_dir, key=key, run_seed=seed)
            )
    return metrics
