"""Topology recipe: learn who talks to whom in a team of agents (Graph-GRPO and the baselines).

Each step samples ``queries_per_step`` training queries; the topology policy samples ``K`` graphs per
query (``topologies.graphs``); the team runs over all of them in batched waves
(``topologies.execution``), growing one ``TurnTree`` (query root -> K graph nodes -> agent calls) with
each graph's score as reward; the core's credit rule (``credit.rule``: ``graph_grpo_edge``,
``graph_grpo``, ``graph_reinforce``; ``credit.topology.token_cost`` for u = score - lambda * tokens)
gives the graph nodes their advantages, and the topology policy learns from them with its own Adam
optimizer (``topologies.learner``). Evaluation runs each held-out query once over the policy's most
probable graph (edges with p > 0.5; ``policy.eval_graph: sample`` draws one) and reports the accuracy,
its exact expectation and the oracle (``topologies.testbed``), tokens and calls per query.

The team is the testbed's programmatic agents (``task.kind: testbed``), or the ``agents`` block's LLM
agents in order (the last is the final agent) on a ``topologies.tasks`` task: each call is a node under
its graph node, ``agent_credit`` gives it an advantage from its graph's score, and each agent learns
from its own calls in the same step as the policy (joint learning; ``docs/topologies.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from marl.config import AgentConfig
from marl.credit import CreditAssigner, CreditConfig
from marl.credit.graphs import graph_decision_advantages
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.scenario import ScenarioConfig, learn_agents, make_agents, make_credit, prefixed
from marl.seeding import derive_seed
from marl.tree import TurnTree
from topologies.execution import DECISIONS, run_graphs
from topologies.graphs import (
    PL_EXACT_MAX,
    GraphSpace,
    graph_space,
    mode_graphs,
    order_mask,
    ordered_mode_graphs,
    plackett_luce_entropy,
    sample_graphs,
    sample_ordered_graphs,
    sample_orders,
)
from topologies.learner import TopologyLearner, edge_advantages_table
from topologies.lm_team import LMWarmStart, warm_start_team
from topologies.pictures import draw_policy
from topologies.policy import PolicySettings, features, make_policy
from topologies.report import method_rows, method_table
from topologies.tasks import TaskConfig, make_task
from topologies.team import TeamSettings, check_team, edge_names, lm_members, member_names
from topologies.testbed import oracle_probability, success_probability

logger = logging.getLogger(__name__)


@dataclass
class TopologyConfig(ScenarioConfig):
    """Run config of the topology recipe."""

    recipe: str = "topology"
    """Recipe name (selects this schema)."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="graph_grpo_edge"))
    """Credit rule over the graph nodes (Graph-GRPO edge level by default) and its token cost."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The task: the skill-chain testbed and its programmatic team (kind testbed), or a task for the
    LLM agents (relay | jsonl | humaneval, ``topologies.tasks``)."""
    agents: dict[str, AgentConfig] = field(default_factory=dict)
    """LLM team members in team order (the last is the final agent), each with its own model and
    optimizer; empty: the testbed's programmatic team."""
    agent_credit: CreditConfig = field(
        default_factory=lambda: CreditConfig(rule="grpo", group_key=["group", "agent"])
    )
    """Credit rule over the LLM agents' calls (an outcome rule; the reward of a call is its graph's
    score); the default compares the calls of one agent for one query across its K graphs."""
    warm_start: LMWarmStart = field(default_factory=LMWarmStart)
    """Optional supervised warm start of the LLM agents on what each can do alone (steps 0: none; the
    testbed's programmatic team has no LLM agent to warm)."""
    team: TeamSettings = field(default_factory=TeamSettings)
    """Rounds and decision node."""
    policy: PolicySettings = field(default_factory=PolicySettings)
    """The topology policy."""
    queries_per_step: int = 16
    """Training queries per step (B)."""
    graphs_per_query: int = 8
    """Graphs sampled per query (K, the group)."""
    eval_queries: int = 0
    """Held-out queries per evaluation (0 = all)."""

    def validate(self) -> None:
        super().validate()
        check_team(self.task, self.agents, self.agent_credit)
        if self.team.decision not in DECISIONS:
            raise ValueError(f"team.decision ({self.team.decision!r}) must be one of {DECISIONS}")
        self.policy.validate()
        if self.queries_per_step < 1 or self.graphs_per_query < 1 or self.team.rounds < 1:
            raise ValueError(
                f"queries_per_step ({self.queries_per_step}), graphs_per_query ({self.graphs_per_query}) "
                f"and team.rounds ({self.team.rounds}) must be >= 1"
            )


def evaluate(
    learner: TopologyLearner, task, space: GraphSpace, cfg: TopologyConfig, seed: int, agents=None
) -> dict[str, float]:
    """Held-out accuracy (one execution per query), its exact expectation and the oracle (testbed),
    tokens and calls per query, the mean probability of every edge (``topology/<edge>/p``) and, with a
    learned order, the mean entropy of the order (``topology/order_entropy``). LLM
    agents decode greedily; their team's accuracy over the empty graph is ``eval/accuracy_no_edges``."""
    queries = task.heldout if cfg.eval_queries <= 0 else task.heldout[: cfg.eval_queries]
    feats = features(cfg.policy, member_names(task, cfg.agents), queries)
    with torch.no_grad():
        logits = learner.policy(feats)
        ordered = getattr(learner.policy, "learns_order", False)  # a fixed row of a learned run: i < j
        scores = learner.policy.order_scores(feats) if ordered else None
    gen = torch.Generator().manual_seed(seed % 2**63)
    if cfg.policy.eval_graph == "sample":
        a = (
            sample_ordered_graphs(space, logits, scores, 1, gen) if ordered else sample_graphs(logits, 1, gen)
        )[0]
        a = a[:, 0]
    else:
        a = ordered_mode_graphs(space, logits, scores) if ordered else mode_graphs(logits)
    a = a.numpy()
    team = lm_members(agents, task, greedy=True) if agents else task.agents(np.random.default_rng(seed))
    judge = dict(decision=cfg.team.decision, score_many=getattr(task, "score_many", None))
    ex = run_graphs(TurnTree(), space, team, queries, a[:, None], 0.0 * a[:, None], task.score, **judge)
    out = {
        "eval/accuracy": float(ex.scores.mean()),
        "eval/prompt_tokens": float(ex.prompt_tokens.mean()),
        "eval/completion_tokens": float(ex.completion_tokens.mean()),
        "eval/tokens_per_query": float(ex.tokens.mean()),
        "eval/calls_per_query": float(ex.calls.mean()),
        "eval/edges": float(a.sum(1).mean()),
    }
    if agents:
        none = np.zeros_like(a)[:, None]
        alone = run_graphs(TurnTree(), space, team, queries, none, none.astype(float), task.score, **judge)
        out["eval/accuracy_no_edges"] = float(alone.scores.mean())
    elif cfg.team.decision == "last":  # the exact values are those of the final-agent decision
        rel = task.reliability
        out["eval/expected_accuracy"] = float(np.mean([success_probability(space, g, q.skills, rel)
                                                       for g, q in zip(a, queries)]))  # fmt: skip
        oracle = {s: oracle_probability(space, s, rel) for s in {q.skills for q in queries}}
        out["eval/oracle"] = float(np.mean([oracle[q.skills] for q in queries]))
    if ordered:  # how spread the order still is: log (A - 1)! for a uniform order, 0 for a saturated one
        many = scores.shape[-1] > PL_EXACT_MAX  # then a chain-rule estimate over 64 sampled orders
        drawn = sample_orders(scores, 64, torch.Generator().manual_seed(seed % 2**63)) if many else None
        out["topology/order_entropy"] = float(plackett_luce_entropy(scores, drawn).mean())
    p = torch.sigmoid(logits).mean(0).tolist()
    out.update({f"topology/{n}/p": v for n, v in zip(edge_names(space, member_names(task, cfg.agents)), p)})
    return out


def _build(cfg: TopologyConfig) -> tuple[Any, GraphSpace, TopologyLearner]:
    task = make_task(cfg.task)
    space = graph_space(len(cfg.agents) if cfg.agents else task.num_agents, cfg.team.rounds, cfg.policy.order)
    policy = make_policy(cfg.policy, space, derive_seed(cfg.run.seed, "policy") % 2**31)
    p = cfg.policy
    kw = dict(kl_coef=p.kl_coef, entropy_coef=p.entropy_coef, explore=p.explore)
    kw |= dict(entropy_schedule=p.entropy_schedule, entropy_final=p.entropy_final)
    kw |= dict(lr_schedule=p.lr_schedule, lr_final=p.lr_final)
    kw["kl_ref_logit"] = p.kl_ref_logit if p.kl_reference == "sparse" else None
    return task, space, TopologyLearner(policy, lr=p.lr, **kw)


def train(cfg: TopologyConfig, runner: Runner) -> dict[str, float]:
    """The whole loop: sample graphs -> run the team -> credit on the graph nodes -> the policy learns;
    with LLM agents, also credit on their calls -> each agent learns from its own calls."""
    task, space, learner = _build(cfg)
    agents = make_agents(cfg, runner.cache_dir) if cfg.agents else {}
    credit = make_credit(cfg)
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "task"))
    team_rng = np.random.default_rng(derive_seed(cfg.run.seed, "team"))
    graphs = torch.Generator().manual_seed(derive_seed(cfg.run.seed, "graphs") % 2**63)
    team = lm_members(agents, task) if agents else task.agents(team_rng)
    names = member_names(task, cfg.agents)
    extra = {"credit": credit, "rng": rng, "team_rng": team_rng, "graphs": graphs, "topology": learner}
    agent_credit = CreditAssigner(cfg.agent_credit, multi_turn=False)
    if agents:
        extra["agent_credit"] = agent_credit
    b, k, e = cfg.queries_per_step, cfg.graphs_per_query, space.num_edges
    learned_order = space.learned_order
    seen = 0
    start = runner.restore(agents, extra=extra)
    warm = {}
    if start == 0 and agents and cfg.warm_start.steps > 0:
        ws = cfg.warm_start
        warm = warm_start_team(agents, task, ws, seed=cfg.run.seed, cache_dir=runner.cache_dir)
    if start == 0 and runner.should_eval(0):
        seed = derive_seed(cfg.run.seed, "eval", 0)
        runner.log(0, {**warm, **evaluate(learner, task, space, cfg, seed, agents)})
    for step in runner.steps(start):
        # 1. sample K graphs per query and run the team over all of them (one call per agent per wave)
        queries = task.sample_train(rng, b)
        feats = features(cfg.policy, names, queries)
        order = {}  # a learned order: each graph's order, its log PL, and later its advantage
        with torch.no_grad():
            if learned_order:
                out = sample_ordered_graphs(space, learner.policy(feats), learner.policy.order_scores(feats),
                                            k, graphs, explore=cfg.policy.explore)  # fmt: skip
                a, lp, order["orders"], olp = out
                order["allowed"] = torch.from_numpy(order_mask(space, order["orders"].numpy()))
                judge_order = dict(orders=order["orders"].numpy(), order_logprobs=olp.numpy())
            else:
                a, lp = sample_graphs(learner.policy(feats), k, graphs, explore=cfg.policy.explore)
                judge_order = {}
        tree = TurnTree()
        judge = dict(decision=cfg.team.decision, score_many=getattr(task, "score_many", None))
        ex = run_graphs(tree, space, team, queries, a.numpy(), lp.numpy(), task.score, **judge, **judge_order)
        seen += b
        # 2. credit on the graph nodes (the core's rule), 3. the topology policy learns from it
        gn = ex.graph_nodes.reshape(-1)
        result = credit(tree, gn)
        adv = edge_advantages_table(result.advantages, b * k, e).reshape(b, k, e)
        if learned_order:  # the order: the graph-level advantage of the rule's family
            oadv = graph_decision_advantages(tree, gn, credit.rewards(tree, gn), cfg.credit)
            order["order_advantages"] = torch.as_tensor(oadv, dtype=torch.float32).reshape(b, k)
        sched = learner.set_step(step - 1, cfg.run.steps)  # the first update: the start values
        learned = learner.learn(feats, a, adv, **order)
        metrics = {**result.metrics, **prefixed("agent/topology", {**sched, **learned})}
        if cfg.policy.prune_rate > 0 and step == cfg.policy.prune_at:
            metrics["topology/pruned_edges"] = float(learner.policy.prune(cfg.policy.prune_rate))
        if agents:  # 2'. credit on the LLM calls (graph score as reward), 3'. each agent learns its own
            calls = np.flatnonzero(np.isin(tree.parent, ex.graph_nodes.reshape(-1)))
            res = agent_credit(tree, calls)
            batches = tree_to_batches(tree, res.nodes, res.advantages, res.train_mask, pad_id=0)
            metrics.update(prefixed("team", res.metrics))
            metrics.update(learn_agents(agents, batches, agent_credit, step=step))
        metrics.update(
            {
                "train/accuracy": float(ex.scores.mean()),
                "train/tokens_per_query": float(ex.tokens.mean()),
                "train/calls_per_query": float(ex.calls.mean()),
                "train/batched_calls": float(ex.batched_calls),
                "train/queries_seen": float(start * b + seen),
                "train/edges": float(a.sum(-1).float().mean()),
            }
        )
        # 4. evaluate, log, checkpoint
        if runner.should_eval(step):
            seed = derive_seed(cfg.run.seed, "eval", step)
            metrics.update(evaluate(learner, task, space, cfg, seed, agents))
        runner.end_step(step, metrics, agents, extra)
    seed = derive_seed(cfg.run.seed, "eval", cfg.run.steps)  # the last evaluation's seed: same numbers
    rows = method_rows(evaluate, learner, task, space, cfg, seed, agents)
    method = f"{cfg.policy.kind} policy, {cfg.credit.rule}"
    if learned_order:
        method += ", learned order"
    table = method_table(rows, method, cfg.run.steps * b, any_order=learned_order)
    (runner.dir / "results.md").write_text(table)
    logger.info("method table (%s):\n%s", runner.dir / "results.md", table)
    draw_policy(learner.policy, task, space, features(cfg.policy, names, task.heldout), names, runner.dir)
    if hasattr(task, "close"):  # a sandbox (humaneval)
        task.close()
    return runner.finish(agents)


def evaluate_run(cfg: TopologyConfig, runner: Runner) -> dict[str, float]:
    """Held-out metrics of the topology policy (and the LLM agents) in the run's latest checkpoint."""
    from marl.rundir import Checkpointer

    task, space, learner = _build(cfg)
    agents = make_agents(cfg, runner.cache_dir) if cfg.agents else {}
    path = runner.ckpt.latest()
    if path is None:
        raise FileNotFoundError(f"{runner.dir}: no complete checkpoint")
    state = Checkpointer.load(path, agents)
    learner.load_state_dict(state["extra"]["topology"]["state_dict"])
    out = evaluate(learner, task, space, cfg, derive_seed(cfg.run.seed, "eval", int(state["step"])), agents)
    if hasattr(task, "close"):
        task.close()
    return out


Config = TopologyConfig

SMOKE_OVERRIDES = [
    "run.steps=2",
    "run.eval_every=1",
    "queries_per_step=4",
    "graphs_per_query=4",
    "task.train_queries=16",
    "task.heldout_queries=16",
    "eval_queries=4",
    "policy.prune_at=2",
    "warm_start.steps=2",
    "warm_start.examples=8",
]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
