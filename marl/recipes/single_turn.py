"""First recipe: several agents learn a verifiable single-turn task side by side.

Each step, every agent samples ``prompts_per_step`` training problems, answers each
``group_size`` times in one batched generation call, the answers are scored exactly,
and the turn tree (one root per problem, G children) goes through the core's credit
rule (GRPO by default) and is routed back to each agent's own optimizer. Agents
differ in size, learning rate, or anything else their own config block says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from marl.agent import Agent
from marl.agent import build_agents as make_agents
from marl.config import AgentConfig, RunSettings
from marl.credit import CreditAssigner, CreditConfig
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.seeding import derive_seed
from marl.tasks import DigitTask, DigitTaskConfig, Problem
from marl.tree import TurnTree
from marl.types import Turn

logger = logging.getLogger(__name__)


@dataclass
class SingleTurnConfig:
    """Run config of the single-turn recipe."""

    recipe: str = "single_turn"
    """Recipe name (selects this schema)."""
    run: RunSettings = field(default_factory=RunSettings)
    """Seed, steps, run directory, checkpoint and eval schedule."""
    agents: dict[str, AgentConfig] = field(default_factory=dict)
    """Agents by name; each has its own model, optimizer, loss, sampling and normaliser."""
    credit: CreditConfig = field(default_factory=CreditConfig)
    """Credit rule, group key and normaliser for the turn tree."""
    task: DigitTaskConfig = field(default_factory=DigitTaskConfig)
    """The digit task and its train/held-out split."""
    prompts_per_step: int = 32
    """Training problems each agent samples per step."""
    group_size: int = 8
    """Completions per problem (G)."""
    eval_prompts: int = 0
    """Held-out problems used per evaluation (0 = all of them)."""

    def validate(self) -> None:
        if not self.agents:
            raise ValueError("agents: declare at least one agent")
        if self.group_size < 1 or self.prompts_per_step < 1:
            raise ValueError(
                f"group_size ({self.group_size}) and prompts_per_step ({self.prompts_per_step}) must be >= 1"
            )


def _score(agent: Agent, gen, problems: list[Problem]) -> tuple[np.ndarray, list[str]]:
    texts = [agent.policy.decode(gen.completion(i), skip_special_tokens=True) for i in range(len(problems))]
    rewards = np.array([DigitTask.reward(t, p) for t, p in zip(texts, problems)], dtype=np.float64)
    return rewards, texts


def rollout(
    agent: Agent, tree: TurnTree, problems: list[Problem], group_size: int, task: DigitTask | None = None
):
    """Add one root per problem and ``group_size`` scored completions under it (one generation call).

    With a constrained task, each payload records the token ids the sampler allowed, so the
    learner scores the completion under the same restricted distribution.
    """
    enc, stop = agent.policy.encode, agent.policy.eos_id
    processor = task.processor(enc, stop) if task is not None else None
    roots = tree.add_nodes(np.full(len(problems), -1), agent=-1)
    prompt_ids = [agent.policy.encode(p.prompt) for p in problems]
    rep = np.repeat(np.arange(len(problems)), group_size)  # (B*G,)
    gen = agent.act([prompt_ids[i] for i in rep], logits_processor=processor)
    rewards, _ = _score(agent, gen, [problems[i] for i in rep])
    payloads = [
        Turn(
            prompt_ids=np.asarray(prompt_ids[i], dtype=np.int32),
            completion_ids=np.asarray(gen.completion(j), dtype=np.int32),
            logprobs=gen.logprobs[j, : int(gen.lengths[j])].numpy().astype(np.float32),
            finish_reason=gen.finish_reasons[j],
            data={}
            if processor is None
            else {"allowed_ids": task.allowed_ids(enc, stop, int(gen.lengths[j]))},
        )
        for j, i in enumerate(rep)
    ]
    tree.add_nodes(roots[rep], agent=agent.name, reward=rewards, terminal=True, payloads=payloads)
    return rewards, gen


def evaluate(agents: dict[str, Agent], task: DigitTask, n: int = 0) -> dict[str, float]:
    """Greedy success rate of every agent on the held-out problems."""
    problems = task.heldout if n <= 0 else task.heldout[:n]
    out = {}
    for name, agent in agents.items():
        prompts = [agent.policy.encode(p.prompt) for p in problems]
        gen = agent.act(
            prompts, greedy=True, logits_processor=task.processor(agent.policy.encode, agent.policy.eos_id)
        )
        rewards, _ = _score(agent, gen, problems)
        out[f"eval/{name}/success"] = float(rewards.mean())
    return out


def train(cfg: SingleTurnConfig, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: grow tree → rewards → credit → per-agent learn → log → checkpoint."""
    seed = cfg.run.seed
    agents = build_agents(cfg, runner)
    for name, a in agents.items():
        logger.info("agent %s: %d parameters (%d trainable)", name, a.num_params, a.num_trainable)
    credit = CreditAssigner(cfg.credit)
    task = DigitTask(cfg.task)
    rng = np.random.default_rng(derive_seed(seed, "task"))

    start = runner.restore(agents, extra={"credit": credit, "rng": rng})
    if start == 0:
        runner.log(0, evaluate(agents, task, cfg.eval_prompts))
    last: dict[str, float] = {}
    for step in runner.steps(start):
        # 1. grow the tree: one root per problem, G completions under it, per agent
        tree = TurnTree(list(agents))
        metrics: dict[str, float] = {}
        for name, agent in agents.items():
            problems = task.sample_train(rng, cfg.prompts_per_step)
            rewards, gen = rollout(agent, tree, problems, cfg.group_size, task)
            metrics[f"train/{name}/reward"] = float(rewards.mean())
            metrics[f"train/{name}/completion_len"] = float(gen.lengths.float().mean())
        # 3. credit, on the whole tree, then routing by each node's agent
        result = credit(tree)
        batches = tree_to_batches(tree, result.nodes, result.advantages, result.train_mask, pad_id=0)
        # 4. each agent learns from its own samples with its own optimizer
        for name, agent in agents.items():
            if name in batches:
                for k, v in agent.learn(batches[name]).items():
                    metrics[f"agent/{name}/{k}"] = v
        # 5. evaluate, log, checkpoint
        if runner.should_eval(step):
            metrics.update(evaluate(agents, task, cfg.eval_prompts))
        runner.log(step, metrics)
        runner.maybe_checkpoint(step, agents, extra={"credit": credit, "rng": rng})
        last = metrics
    runner.finish(agents)
    return last


def build_agents(cfg: SingleTurnConfig, runner: Runner) -> dict[str, Agent]:
    return make_agents(cfg.agents, cache_dir=runner.cache_dir, total_steps=cfg.run.steps, seed=cfg.run.seed)


def evaluate_run(cfg: SingleTurnConfig, runner: Runner) -> dict[str, float]:
    """Held-out success of the agents in the run's latest checkpoint."""
    agents = build_agents(cfg, runner)
    runner.load_latest(agents)
    return evaluate(agents, DigitTask(cfg.task), cfg.eval_prompts)


Config = SingleTurnConfig

SMOKE_OVERRIDES = ["run.steps=2", "prompts_per_step=4", "group_size=8", "eval_prompts=8", "run.eval_every=1"]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
