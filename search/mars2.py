"""MARS² recipe: several agents grow one search tree per coding problem and learn from it.

Reference: Li et al. 2026, "MARS²: Scaling Multi-Agent Tree Search via Reinforcement Learning for
Code Generation" (arXiv:2604.14564). Each step:

1. grow: one tree per sampled training problem (``search.engine.grow_trees``: selection over
   (action, agent), one generation call per agent and one sandbox batch per round); a node's reward
   is the share of public tests its program passed.
2. credit: the core's rule (``mars2_tree`` by default: tree-consistent shaping, then path-level
   group advantages over each tree).
3. route and learn: ``tree_to_batches`` sends each node to the agent that wrote it, into that
   agent's own FIFO buffer; an agent learns (own optimizer, own normaliser) on every full batch of
   ``train_batch`` samples, so a rarely chosen agent still trains on full batches.
4. evaluate (held-out tasks, private tests), log, checkpoint (agents, buffers, selection and task
   RNGs, credit state).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from marl.agent import Agent
from marl.credit import CreditConfig
from marl.runner import Runner
from marl.samples import SampleBuffer, tree_to_batches
from marl.scenario import RecipeConfig, learn_from_buffers, load_latest, make_agents, make_credit
from marl.seeding import derive_seed
from marl.tree import TurnTree
from search.engine import SearchConfig, generate, grow_trees, style_of
from search.export import draw_tree, save_tree_json
from search.loaders import CodeTasksConfig, load_tasks
from search.metrics import family_metrics, program_nodes, tree_metrics
from search.prompts import extract_program, prompt_text
from search.sandbox import Sandbox, SandboxConfig
from search.tasks import CodeTask, task_families
from search.warmstart import WarmStartConfig, warm_start

logger = logging.getLogger(__name__)


@dataclass
class Mars2Config(RecipeConfig):
    """Run config of the MARS² search recipe."""

    recipe: str = "mars2"
    """Recipe name (selects this schema)."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="mars2_tree"))
    """Credit rule (MARS² tree shaping + path-level advantages by default)."""
    tasks: CodeTasksConfig = field(default_factory=CodeTasksConfig)
    """Code tasks and their train/held-out split."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """Tree budget, selection and prompts."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """The sandbox that runs the programs."""
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Supervised warm start on the training references."""
    problems_per_step: int = 8
    """Training problems (trees) per step."""
    train_batch: int = 64
    """Samples per learning call of an agent (taken from its buffer, oldest first)."""
    buffer_capacity: int = 1024
    """Most samples an agent's buffer keeps (the oldest are dropped)."""
    eval_tasks: int = 0
    """Held-out tasks per evaluation (0 = all)."""
    eval_nodes_per_tree: int = 0
    """Node budget of the evaluation search (0 = search.nodes_per_tree)."""
    export_trees: int = 1
    """Held-out search trees exported (JSON + PNG) per evaluation."""

    def validate(self) -> None:
        super().validate()
        if self.problems_per_step < 1 or self.train_batch < 1:
            raise ValueError(
                f"problems_per_step ({self.problems_per_step}) and train_batch ({self.train_batch}) "
                "must be >= 1"
            )
        if self.buffer_capacity < self.train_batch:
            raise ValueError(
                f"buffer_capacity ({self.buffer_capacity}) must be >= train_batch ({self.train_batch})"
            )
        unknown = sorted(set(self.warmstart.steps_per_agent) - set(self.agents))
        if unknown:
            raise ValueError(
                f"warmstart.steps_per_agent names unknown agents {unknown}; agents: {sorted(self.agents)}"
            )
        unknown = sorted(set(self.search.prompt_styles) - set(self.agents))
        if unknown:
            raise ValueError(
                f"search.prompt_styles names unknown agents {unknown}; agents: {sorted(self.agents)}"
            )


Config = Mars2Config


def evaluate(
    agents: dict[str, Agent],
    heldout: list[CodeTask],
    sandbox: Sandbox,
    cfg: Mars2Config,
    *,
    step: int = 0,
    export_dir: Path | None = None,
) -> dict[str, float]:
    """Held-out private-test metrics: each agent alone (one greedy program per task: pass@1) and
    the joint search at fixed weights (pass@1 by best public score, pass@N, shares)."""
    tasks = heldout if cfg.eval_tasks <= 0 else heldout[: cfg.eval_tasks]
    families = task_families(tasks)  # per-family figures too, when the tasks have families
    out: dict[str, float] = {}
    for name, agent in agents.items():
        style = style_of(cfg.search, name)
        prompts = agent.policy.encode_prompts(
            [prompt_text(t, None, [], style, max_tests=0, max_chars=0) for t in tasks],
            cfg.search.max_prompt_tokens,
        )
        gen = generate(agent, prompts, None, greedy=True)
        progs = [
            extract_program(t.prompt, agent.policy.decode(gen.completion(i)), t.entry_point, style)
            for i, t in enumerate(tasks)
        ]
        res = sandbox.run_many([(p, t) for p, t in zip(progs, tasks)], "private")
        ok = np.array([r.status == "passed" for r in res])
        out[f"eval/{name}/pass@1"] = float(ok.mean())
        for fam in families:
            out[f"eval/{name}/{fam}/pass@1"] = float(ok[[t.meta["family"] == fam for t in tasks]].mean())
    tree = TurnTree(list(agents))
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "eval-select", step))
    gens = {n: torch.Generator().manual_seed(derive_seed(cfg.run.seed, "eval-gen", n, step)) for n in agents}
    budget = cfg.eval_nodes_per_tree or cfg.search.nodes_per_tree
    roots, _ = grow_trees(tree, tasks, agents, sandbox, cfg.search, rng, budget=budget, generators=gens)
    nodes = program_nodes(tree, roots)
    task_of = {int(r): t for r, t in zip(roots, tasks)}
    priv = sandbox.run_many(
        [(tree.payloads[i].data["program"], task_of[int(tree.root_of()[i])]) for i in nodes], "private"
    )
    private_pass = np.array([r.status == "passed" for r in priv], dtype=bool)
    for i, ok in zip(nodes.tolist(), private_pass.tolist()):
        tree.payloads[i].data["private_pass"] = bool(ok)
    out.update(tree_metrics(tree, roots, private_pass, prefix="eval/search"))
    out.update(family_metrics(tree, roots, tasks, private_pass, "eval/search"))
    if export_dir is not None:
        for r in roots[: cfg.export_trees].tolist():
            stem = export_dir / f"step_{step:07d}_tree_{r}"
            save_tree_json(tree, r, stem.with_suffix(".json"))
            draw_tree(tree, r, stem.with_suffix(".png"), title=f"{task_of[r].task_id} (step {step})")
    return out


def train(cfg: Mars2Config, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: grow trees → rewards → credit → per-agent buffers → learn → log."""
    seed = cfg.run.seed
    agents = make_agents(cfg, runner.cache_dir)
    credit = make_credit(cfg)
    train_tasks, heldout = load_tasks(cfg.tasks)
    logger.info("%d training tasks, %d held-out tasks", len(train_tasks), len(heldout))
    task_rng = np.random.default_rng(derive_seed(seed, "tasks"))
    select_rng = np.random.default_rng(derive_seed(seed, "select"))
    buffers = {name: SampleBuffer(cfg.buffer_capacity) for name in agents}
    extra = {"credit": credit, "task_rng": task_rng, "select_rng": select_rng}
    extra.update({f"buffer/{n}": b for n, b in buffers.items()})
    export_dir = runner.dir / "trees"
    with Sandbox(cfg.sandbox) as sandbox:
        start = runner.restore(agents, extra=extra)
        if start == 0:
            row = {}
            if cfg.warmstart.enabled:
                row = warm_start(
                    agents,
                    train_tasks,
                    sandbox,
                    cfg.warmstart,
                    cfg.search,
                    seed=seed,
                    cache_dir=runner.cache_dir,
                )
            if runner.should_eval(0):
                row.update(evaluate(agents, heldout, sandbox, cfg, step=0, export_dir=export_dir))
            runner.log(0, row)
        for step in runner.steps(start):
            t0 = time.perf_counter()
            # 1. grow one tree per sampled training problem (batched per agent, one sandbox batch per round)
            idx = task_rng.choice(
                len(train_tasks), size=min(cfg.problems_per_step, len(train_tasks)), replace=False
            )
            problems = [train_tasks[i] for i in sorted(idx.tolist())]
            tree = TurnTree(list(agents))
            roots, metrics = grow_trees(tree, problems, agents, sandbox, cfg.search, select_rng)
            metrics.update(tree_metrics(tree, roots, None, prefix="search"))
            nodes = program_nodes(tree, roots)
            for name in agents:
                mine = nodes[tree.agent[nodes] == tree.agent_index(name)]
                if mine.size:
                    metrics[f"train/{name}/reward"] = float(tree.reward[mine].mean())
            # 2. credit on the whole forest
            result = credit(tree)
            metrics.update(result.metrics)
            # 3. route each node to the agent that wrote it, through that agent's buffer; 4. learn
            batches = tree_to_batches(tree, result.nodes, result.advantages, result.train_mask, pad_id=0)
            metrics.update(
                learn_from_buffers(agents, buffers, batches, credit, batch_size=cfg.train_batch, step=step)
            )
            metrics["search/nodes_per_s"] = metrics["search/nodes"] / max(time.perf_counter() - t0, 1e-9)
            # 5. evaluate, log, checkpoint
            if runner.should_eval(step):
                metrics.update(evaluate(agents, heldout, sandbox, cfg, step=step, export_dir=export_dir))
            runner.end_step(step, metrics, agents, extra)
    return runner.finish(agents)


def evaluate_run(cfg: Mars2Config, runner: Runner) -> dict[str, float]:
    """Held-out metrics of the agents in the run's latest checkpoint."""
    agents, step = load_latest(cfg, runner)
    _, heldout = load_tasks(cfg.tasks)
    with Sandbox(cfg.sandbox) as sandbox:
        return evaluate(agents, heldout, sandbox, cfg, step=step)


SMOKE_OVERRIDES = [
    "run.steps=2",
    "run.eval_every=1",
    "problems_per_step=4",
    "train_batch=4",
    "search.nodes_per_tree=4",
    "search.expansions_per_round=2",
    "eval_tasks=4",
    "eval_nodes_per_tree=2",
    "tasks.n_train=8",
    "tasks.n_heldout=4",
    "warmstart.steps=4",
    "warmstart.steps_per_agent={}",
    "warmstart.max_param=0",
    "warmstart.batch_size=4",
    "search.max_prompt_tokens=256",
    "warmstart.refine_fraction=0",
]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests): a short
warm start on 8 training tasks (it moves every weight; tiny LMs pass no HumanEval test, so there the
RL advantages are all 0) and prompts cut to their last 256 tokens."""
