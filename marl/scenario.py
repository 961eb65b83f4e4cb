"""What every scenario's recipe shares: the run-config fields, building the agents, routing samples
to each agent's own learner, and the metric names.

A scenario is three things (``docs/architecture.md``, "How to add a scenario"):

- a config dataclass that extends :class:`RecipeConfig` with its own blocks;
- an environment or engine, built from explicit arguments (never the whole run config), that grows
  a :class:`~marl.tree.TurnTree` and sets the rewards its nodes earned;
- a recipe module with one visible loop: grow the tree -> ``CreditAssigner`` -> ``tree_to_batches``
  -> :func:`learn_agents` (or :func:`learn_from_buffers`) -> log / evaluate / checkpoint, on the
  :class:`~marl.runner.Runner`.

The core knows no scenario: recipes are found by name in ``marl.recipes.RECIPES``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from marl.agent import Agent, build_agents
from marl.config import AgentConfig, RunSettings
from marl.credit import CreditAssigner, CreditConfig, check_settings
from marl.samples import SampleBuffer
from marl.types import SampleBatch

logger = logging.getLogger(__name__)

PER_AGENT_NORMALIZERS = ("batch_per_agent", "running_per_agent")


@dataclass
class ScenarioConfig:
    """The fields every run config has; a recipe's ``Config`` extends :class:`RecipeConfig` (LLM agents)
    or, when no LLM agent learns (a topology policy over programmatic agents), this class.

    ``MULTI_TURN`` (class attribute) says whether the scenario's samples are turns of multi-turn
    trajectories (self-play: yes; one completion per prompt, a search node: no); the credit
    settings are checked against it.
    """

    MULTI_TURN: ClassVar[bool] = False

    recipe: str = ""
    """Recipe name (selects this schema)."""
    run: RunSettings = field(default_factory=RunSettings)
    """Seed, steps, run directory, checkpoint and eval schedule."""
    credit: CreditConfig = field(default_factory=CreditConfig)
    """Credit rule over the turn tree, its keys and normaliser."""

    def records_rounds(self) -> bool:
        """Whether every turn of this scenario records its round (``data["round"]``), which
        ``credit.time_step: round`` reads; a scenario whose games count rounds says so."""
        return False

    def validate(self) -> None:
        check_settings(self.credit, multi_turn=self.MULTI_TURN)
        if self.credit.time_step == "round" and not self.records_rounds():
            raise ValueError(
                f"credit.time_step is round, but recipe {self.recipe or type(self).__name__!r} records no "
                "rounds for this setup (only the dilemma games count rounds): use credit.time_step=turn"
            )


@dataclass
class RecipeConfig(ScenarioConfig):
    """A scenario whose LLM agents learn: :class:`ScenarioConfig` plus ``agents``."""

    agents: dict[str, AgentConfig] = field(default_factory=dict)
    """Agents by name; each has its own model, optimizer, loss, sampling and normaliser."""

    def validate(self) -> None:
        if not self.agents:
            raise ValueError("agents: declare at least one agent")
        super().validate()
        if self.credit.normalizer in PER_AGENT_NORMALIZERS:
            stacked = sorted(n for n, a in self.agents.items() if a.normalizer.kind != "none")
            if stacked:
                raise ValueError(
                    f"credit.normalizer ({self.credit.normalizer!r}) and agents.{stacked[0]}.normalizer "
                    f"({self.agents[stacked[0]].normalizer.kind!r}) would both normalise {stacked[0]}'s "
                    "advantages; keep one of them"
                )


def make_agents(cfg: RecipeConfig, cache_dir) -> dict[str, Agent]:
    """One agent per ``cfg.agents`` entry (each with its own model, optimizer and RNG), sizes logged.

    ``run.runtime: ray`` puts each agent's learner (and vLLM engine) in Ray actors and returns proxies
    with the same surface (:func:`marl.distributed.make_ray_agents`); the recipe loop does not change.
    """
    if cfg.run.runtime == "ray":
        from marl.distributed import make_ray_agents

        agents = make_ray_agents(
            cfg.agents,
            settings=cfg.run.ray,
            cache_dir=cache_dir,
            total_steps=cfg.run.steps,
            seed=cfg.run.seed,
            threads=cfg.run.threads,
        )
    else:
        agents = build_agents(cfg.agents, cache_dir=cache_dir, total_steps=cfg.run.steps, seed=cfg.run.seed)
    for name, a in agents.items():
        logger.info("agent %s: %d parameters (%d trainable)", name, a.num_params, a.num_trainable)
    return agents


def make_credit(cfg: RecipeConfig) -> CreditAssigner:
    """The run's credit assigner, for the scenario's kind (``cfg.MULTI_TURN``)."""
    return CreditAssigner(cfg.credit, multi_turn=cfg.MULTI_TURN)


def load_latest(cfg: RecipeConfig, runner) -> tuple[dict[str, Agent], int]:
    """The agents of a run with the weights of its latest checkpoint, and that checkpoint's step."""
    agents = make_agents(cfg, runner.cache_dir)
    return agents, runner.load_latest(agents)


def prefixed(prefix: str, stats: Mapping[str, float]) -> dict[str, float]:
    """``{f"{prefix}/{k}": v}``: metric names are namespaced (``agent/<name>/loss``); timings stay under
    ``time/`` (``time/push_s`` -> ``time/agent/<name>/push_s``)."""
    return {
        (f"time/{prefix}/{k[5:]}" if k.startswith("time/") else f"{prefix}/{k}"): float(v)
        for k, v in stats.items()
    }


def learn_agents(
    agents: Mapping[str, Agent],
    batches: Mapping[str, SampleBatch],
    credit: CreditAssigner,
    *,
    step: int,
) -> dict[str, float]:
    """Each agent learns once from its own batch with its own optimizer; ``agent/<name>/*`` metrics.

    When the credit rule reads the agents' policy KL (SPO), each learner measures it and the
    assigner's KL clock advances.
    """
    metrics: dict[str, float] = {}
    # agents in Ray actors (``learn_async``) all start learning before any result is awaited
    pending = {
        name: _start_learn(agent, batches[name], credit, step)
        for name, agent in agents.items()
        if name in batches
    }
    for name, result in pending.items():
        metrics.update(prefixed(f"agent/{name}", _finish_learn(agents[name], result(), credit)))
    return metrics


def learn_from_buffers(
    agents: Mapping[str, Agent],
    buffers: Mapping[str, SampleBuffer],
    batches: Mapping[str, SampleBatch],
    credit: CreditAssigner,
    *,
    batch_size: int,
    step: int,
) -> dict[str, float]:
    """Route each agent's new samples into its own FIFO buffer, then let it learn on every full batch
    of ``batch_size`` rows the buffer holds (0 or more updates per step). Metrics are those of the
    agent's last update, plus ``learn_calls`` and ``buffer`` (rows left)."""
    for name, batch in batches.items():
        buffers[name].add(batch)
    metrics: dict[str, float] = {}
    for name, agent in agents.items():
        calls = 0
        while len(buffers[name]) >= batch_size:
            stats = _learn(agent, buffers[name].pop(batch_size, pad_id=0), credit, step)
            metrics.update(prefixed(f"agent/{name}", stats))
            calls += 1
        metrics[f"agent/{name}/learn_calls"] = float(calls)
        metrics[f"agent/{name}/buffer"] = float(len(buffers[name]))
    return metrics


def _learn(agent: Agent, batch: SampleBatch, credit: CreditAssigner, step: int) -> dict[str, float]:
    return _finish_learn(agent, _start_learn(agent, batch, credit, step)(), credit)


def _start_learn(agent: Agent, batch: SampleBatch, credit: CreditAssigner, step: int):
    """A function returning the agent's learn statistics: a Ray agent's update starts now and runs while
    the others start theirs; a local agent learns when the function is called."""
    start = getattr(agent, "learn_async", None)
    if start is not None:
        return start(batch, step=step, measure_kl=credit.needs_policy_kl)
    return lambda: agent.learn(batch, step=step, measure_kl=credit.needs_policy_kl)


def _finish_learn(agent: Agent, stats: dict[str, float], credit: CreditAssigner) -> dict[str, float]:
    if credit.needs_policy_kl and "policy_kl" in stats:
        credit.observe_policy_kl(agent.name, stats["policy_kl"])
    return stats
