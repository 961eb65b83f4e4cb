"""The MARS² code-search engine: several agents grow one search tree per coding problem.

Reference: Li et al. 2026, "MARS²: Scaling Multi-Agent Tree Search via Reinforcement Learning for
Code Generation" (arXiv:2604.14564). :func:`grow_trees` adds one ``TurnTree`` root per task and,
round after round, every tree picks ``expansions_per_round`` (parent, agent) pairs
(``search.select``: Thompson sampling over (action, agent) as in AB-MCTS, or UCT); a parent that is
the root means a fresh program, any other node a refinement (statement + parent's program + its
failing tests and messages, ``search.prompts``). All pending prompts of all trees are generated in
one call per agent (:func:`write_programs`) and all programs run in one ``Sandbox.run_many``; a
node's reward is the share of public tests its program passed.

It needs no run config: agents, a sandbox, tasks and a :class:`SearchConfig`::

    from search.engine import SearchConfig, grow_trees
    with Sandbox(SandboxConfig()) as sandbox:
        tree = TurnTree(list(agents))
        roots, info = grow_trees(tree, tasks, agents, sandbox, SearchConfig(), np.random.default_rng(0))

Shape legend: ``B`` trees (tasks), ``N`` nodes, ``A`` agents.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from marl.agent import Agent
from marl.tree import TurnTree
from marl.types import Turn
from search.prompts import STYLES, Failure, extract_program, failures_of, prompt_text
from search.sandbox import Sandbox
from search.select import METHODS, POSTERIORS, add_virtual_loss, arm_stats, forest_draw, select_expansion
from search.tasks import CodeTask

logger = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """How each problem's tree grows: budget, selection rule, prompts."""

    nodes_per_tree: int = 8
    """Programs per tree (node budget; the root is the task and not counted)."""
    expansions_per_round: int = 4
    """Expansions selected per tree before the pending ones are generated and run together."""
    max_depth: int = 3
    """Deepest program node (1 = fresh programs only, 2 = one refinement, ...)."""
    selection: str = "thompson"
    """thompson | uct | independent (fresh programs only, agents drawn uniformly: the no-search baseline)."""
    posterior: str = "beta"
    """Thompson posterior: beta | gaussian."""
    alpha0: float = 1.0
    """Beta prior alpha (pseudo-successes)."""
    beta0: float = 1.0
    """Beta prior beta (pseudo-failures)."""
    prior_mean: float = 0.5
    """Gaussian prior mean of an arm's reward (also UCT's value of an unvisited arm)."""
    prior_strength: float = 1.0
    """Gaussian prior weight in pseudo-observations."""
    noise_std: float = 0.5
    """Gaussian reward noise std."""
    uct_c: float = 1.0
    """UCT exploration constant."""
    action_choice: str = "tree"
    """How a tree without a solution picks its next move: ``tree`` (AB-MCTS: the arms of that tree
    alone) or ``forest`` (first a Thompson draw of (fresh program or refinement, agent) from how often
    each has solved a so-far-unsolved tree of this batch, then the tree's arms pick where to refine)."""
    virtual_loss: bool = True
    """Count a pending expansion as a 0-reward visit so the picks of one round spread out."""
    solved_at: float = 1.0
    """A node with reward >= this is solved and never refined."""
    prompt_style: str = "compact"
    """compact (the tiny LM: completion continues the statement) | chat (instruction-tuned HF models)."""
    prompt_styles: dict[str, str] = field(default_factory=dict)
    """Per-agent override of prompt_style, by agent name."""
    feedback_tests: int = 2
    """Failing tests (with messages) shown in a refinement prompt."""
    feedback_chars: int = 80
    """Longest message shown per failing test."""
    max_prompt_tokens: int = 0
    """Keep only the last this many prompt tokens (0 = no limit)."""

    def validate(self) -> None:
        if self.selection not in METHODS:
            raise ValueError(f"search.selection {self.selection!r} is not one of {', '.join(METHODS)}")
        if self.posterior not in POSTERIORS:
            raise ValueError(f"search.posterior {self.posterior!r} is not one of {', '.join(POSTERIORS)}")
        if self.action_choice not in ("tree", "forest"):
            raise ValueError(f"search.action_choice {self.action_choice!r} is not one of tree, forest")
        for s in [self.prompt_style, *self.prompt_styles.values()]:
            if s not in STYLES:
                raise ValueError(f"prompt style {s!r} is not one of {', '.join(STYLES)}")
        if self.nodes_per_tree < 1 or self.expansions_per_round < 1 or self.max_depth < 1:
            raise ValueError(
                f"nodes_per_tree ({self.nodes_per_tree}), expansions_per_round ({self.expansions_per_round}) "
                f"and max_depth ({self.max_depth}) must be >= 1"
            )


def style_of(search: SearchConfig, name: str) -> str:
    """Agent ``name``'s prompt style (its override in ``prompt_styles``, else ``prompt_style``)."""
    return search.prompt_styles.get(name, search.prompt_style)


def generate(agent: Agent, prompts: list[list[int]], generator: torch.Generator | None, greedy: bool):
    """Training: the agent's own ``act`` (its generator). Evaluation: the same sampling settings
    with a separate generator (or none, greedy), so evaluating never shifts the training streams."""
    if generator is None and not greedy:
        return agent.act(prompts)
    return agent.act(prompts, greedy=greedy, generator=generator)


def write_programs(
    agent: Agent,
    style: str,
    requests: list[tuple[CodeTask, str | None, list[Failure]]],
    search: SearchConfig,
    generator: torch.Generator | None,
) -> tuple[list[Turn], list[str]]:
    """One batched generation of ``agent``: for each (task, parent program or None, the parent's
    failures) a fresh program (no parent) or a refinement. Returns each expansion's turn (prompt,
    completion, log-probabilities) and the program to run."""
    prompts = agent.policy.encode_prompts(
        [
            prompt_text(
                task, parent, fails, style, max_tests=search.feedback_tests, max_chars=search.feedback_chars
            )
            for task, parent, fails in requests
        ],
        search.max_prompt_tokens,
    )
    gen = generate(agent, prompts, generator, greedy=False)
    turns, programs = [], []
    for k, (task, _, _) in enumerate(requests):
        text = agent.policy.decode(gen.completion(k), skip_special_tokens=True)
        programs.append(extract_program(task.prompt, text, task.entry_point, style))
        turns.append(gen.turn(k, prompts[k], text=text))
    return turns, programs


def add_program_nodes(
    tree: TurnTree,
    parents: np.ndarray,
    agents: list[str],
    payloads: list[Turn],
    rewards: np.ndarray,
) -> np.ndarray:
    """Append scored program nodes (mutates): ``parents`` (K,), agent names, payloads, rewards in [0, 1]."""
    return tree.add_nodes(
        np.asarray(parents, dtype=np.int64),
        agent=np.asarray(agents, dtype=object),
        reward=np.asarray(rewards, dtype=np.float64),
        terminal=False,
        payloads=payloads,
    )


def grow_trees(
    tree: TurnTree,
    tasks: list[CodeTask],
    agents: dict[str, Agent],
    sandbox: Sandbox,
    search: SearchConfig,
    rng: np.random.Generator,
    *,
    budget: int | None = None,
    generators: dict[str, torch.Generator] | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Add one root per task and grow every tree to ``budget`` program nodes (mutates ``tree``).

    Returns the root ids ``(B,)`` and timing/shape metrics. Node payloads carry
    ``data = {program, action, status, passed, total, failures, task_id}``.
    """
    budget = search.nodes_per_tree if budget is None else budget
    names = list(agents)
    agent_idx = np.array([tree.agent_index(n) for n in names], dtype=np.int64)
    roots = tree.add_nodes(np.full(len(tasks), -1), agent=-1)
    left = np.full(len(tasks), budget, dtype=np.int64)
    t_gen = t_run = 0.0
    n_refine = 0
    # forest-level evidence (action_choice=forest): [solved, tried] of the picks made in trees without a
    # solution yet, per (fresh program or refinement, agent)
    forest = search.action_choice == "forest" and search.selection != "independent"
    solves = {(act, int(a)): [0.0, 0.0] for act in ("fresh", "refine") for a in agent_idx}
    while left.sum() > 0:
        # 1. select: (parent, agent) pairs for every tree, from one snapshot of the arm statistics
        stats = arm_stats(
            tree.parent,
            tree.depth,
            tree.agent,
            tree.reward,
            len(tree.agent_names),
            max_depth=search.max_depth,
            solved_at=search.solved_at,
        )
        picks: list[tuple[int, int, int]] = []  # (tree b, parent node, agent index)
        contested: dict[int, tuple[str, int]] = {}  # pick index -> (action, agent) it counts for (forest)
        unsolved = has_programs = np.zeros(len(roots), dtype=bool)
        if forest:
            ro, prog = tree.root_of(), tree.parent >= 0
            has_programs = np.isin(roots, ro[prog])
            unsolved = ~np.isin(roots, ro[prog & (tree.reward >= search.solved_at)])
        for b, root in enumerate(roots.tolist()):
            for _ in range(int(min(search.expansions_per_round, left[b]))):
                action, allowed = "any", agent_idx
                if unsolved[b]:  # forest: (action, agent) drawn from what has been solving such trees
                    action, agent = forest_draw(solves, rng, refine_ok=bool(has_programs[b]))
                    allowed = np.array([agent], dtype=np.int64)
                v, a = select_expansion(
                    stats,
                    root,
                    rng,
                    method=search.selection,
                    posterior=search.posterior,
                    alpha0=search.alpha0,
                    beta0=search.beta0,
                    prior_mean=search.prior_mean,
                    prior_strength=search.prior_strength,
                    noise_std=search.noise_std,
                    uct_c=search.uct_c,
                    agents=allowed,
                    action=action,
                )
                if unsolved[b]:
                    contested[len(picks)] = ("refine" if v != root else "fresh", a)
                if search.virtual_loss:
                    add_virtual_loss(stats, v, a)
                picks.append((b, v, a))
            left[b] -= min(search.expansions_per_round, left[b])
        # 2. prompts, one batched generation call per agent
        programs: list[str] = [""] * len(picks)
        payloads: list[Turn | None] = [None] * len(picks)
        t0 = time.perf_counter()
        for name in names:
            a = tree.agent_index(name)
            rows = [j for j, p in enumerate(picks) if p[2] == a]
            if not rows:
                continue
            requests = []
            for j in rows:
                b, v, _ = picks[j]
                parent_prog, fails = None, []
                if tree.parent[v] >= 0:
                    d = tree.payloads[v].data
                    parent_prog = d["program"]
                    fails = [Failure(n_, m) for n_, m in d["failures"]]
                requests.append((tasks[b], parent_prog, fails))
            gen_turns, gen_programs = write_programs(
                agents[name],
                style_of(search, name),
                requests,
                search,
                None if generators is None else generators[name],
            )
            for k, j in enumerate(rows):
                payloads[j], programs[j] = gen_turns[k], gen_programs[k]
        t1 = time.perf_counter()
        # 3. run every program of the round in one sandbox batch; reward = share of public tests passed
        results = sandbox.run_many([(programs[j], tasks[p[0]]) for j, p in enumerate(picks)], "public")
        t2 = time.perf_counter()
        t_gen += t1 - t0
        t_run += t2 - t1
        rewards = np.array([r.fraction for r in results], dtype=np.float64)
        for j, kind in contested.items():
            solves[kind][0] += float(rewards[j] >= search.solved_at)
            solves[kind][1] += 1.0
        for j, ((b, v, _), res) in enumerate(zip(picks, results)):
            refine = bool(tree.parent[v] >= 0)
            n_refine += refine
            payloads[j].data = {
                "program": programs[j],
                "action": "refine" if refine else "generate",
                "status": res.status,
                "passed": res.passed,
                "total": res.total,
                "failures": [(f.name, f.message) for f in failures_of(res)],
                "task_id": tasks[b].task_id,
            }
        add_program_nodes(
            tree,
            np.array([v for _, v, _ in picks], dtype=np.int64),
            [tree.agent_names[a] for _, _, a in picks],
            payloads,
            rewards,
        )
    n_nodes = int(budget * len(tasks))
    info = {
        "search/gen_s": t_gen,
        "search/sandbox_s": t_run,
        "search/refine_frac": n_refine / max(n_nodes, 1),
        "search/nodes": float(n_nodes),
    }
    return roots, info
