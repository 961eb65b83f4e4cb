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
from marl.digits import DigitTask, DigitTaskConfig, Problem
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.scenario import RecipeConfig, learn_agents, load_latest, make_agents, make_credit
from marl.seeding import derive_seed
from marl.tree import TurnTree

logger = logging.getLogger(__name__)


@dataclass
class SingleTurnConfig(RecipeConfig):
    """Run config of the single-turn recipe."""

    recipe: str = "single_turn"
    """Recipe name (selects this schema)."""
    task: DigitTaskConfig = field(default_factory=DigitTaskConfig)
    """The digit task and its train/held-out split."""
    prompts_per_step: int = 32
    """Training problems each agent samples per step."""
    group_size: int = 8
    """Completions per problem (G)."""
    eval_prompts: int = 0
    """Held-out problems used per evaluation (0 = all of them)."""

    def validate(self) -> None:
        super().validate()
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
    prompt_ids = agent.policy.encode_prompts([p.prompt for p in problems])
    rep = np.repeat(np.arange(len(problems)), group_size)  # (B*G,)
    gen = agent.act([prompt_ids[i] for i in rep], logits_processor=processor)
    rewards, _ = _score(agent, gen, [problems[i] for i in rep])
    allowed = [None if processor is None else task.allowed_ids(enc, stop, int(n)) for n in gen.lengths]
    payloads = [
        gen.turn(j, prompt_ids[i], data=None if a is None else {"allowed_ids": a})
        for j, (i, a) in enumerate(zip(rep, allowed))
    ]
    tree.add_nodes(roots[rep], agent=agent.name, reward=rewards, terminal=True, payloads=payloads)
    return rewards, gen


def evaluate(agents: dict[str, Agent], task: DigitTask, n: int = 0) -> dict[str, float]:
    """Greedy success rate of every agent on the held-out problems."""
    problems = task.heldout if n <= 0 else task.heldout[:n]
    out = {}
    for name, agent in agents.items():
        prompts = agent.policy.encode_prompts([p.prompt for p in problems])
        gen = agent.act(
            prompts, greedy=True, logits_processor=task.processor(agent.policy.encode, agent.policy.eos_id)
        )
        rewards, _ = _score(agent, gen, problems)
        out[f"eval/{name}/success"] = float(rewards.mean())
    return out


def train(cfg: SingleTurnConfig, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: grow tree → rewards → credit → per-agent learn → log → checkpoint."""
    agents = make_agents(cfg, runner.cache_dir)
    credit = make_credit(cfg)
    task = DigitTask(cfg.task)
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "task"))
    extra = {"credit": credit, "rng": rng}

    start = runner.restore(agents, extra=extra)
    if start == 0 and runner.should_eval(0):
        runner.log(0, evaluate(agents, task, cfg.eval_prompts))
    for step in runner.steps(start):
        # 1. grow the tree: one root per problem, G scored completions under it, per agent
        tree = TurnTree(list(agents))
        metrics: dict[str, float] = {}
        for name, agent in agents.items():
            problems = task.sample_train(rng, cfg.prompts_per_step)
            rewards, gen = rollout(agent, tree, problems, cfg.group_size, task)
            metrics[f"train/{name}/reward"] = float(rewards.mean())
            metrics[f"train/{name}/completion_len"] = float(gen.lengths.float().mean())
        # 2. credit on the whole tree, 3. routing by each node's agent
        result = credit(tree)
        metrics.update(result.metrics)
        batches = tree_to_batches(tree, result.nodes, result.advantages, result.train_mask, pad_id=0)
        # 4. each agent learns from its own samples with its own optimizer
        metrics.update(learn_agents(agents, batches, credit, step=step))
        # 5. evaluate, log, checkpoint
        if runner.should_eval(step):
            metrics.update(evaluate(agents, task, cfg.eval_prompts))
        runner.end_step(step, metrics, agents, extra)
    return runner.finish(agents)


def evaluate_run(cfg: SingleTurnConfig, runner: Runner) -> dict[str, float]:
    """Held-out success of the agents in the run's latest checkpoint."""
    agents, _ = load_latest(cfg, runner)
    return evaluate(agents, DigitTask(cfg.task), cfg.eval_prompts)


Config = SingleTurnConfig

SMOKE_OVERRIDES = ["run.steps=2", "prompts_per_step=4", "group_size=8", "eval_prompts=8", "run.eval_every=1"]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
