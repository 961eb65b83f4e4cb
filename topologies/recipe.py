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

The team is the testbed's programmatic agents (``task``); the config has no ``agents`` block (LLM team
members are not wired into the recipe yet: ``topologies.lm_team``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from marl.credit import CreditConfig
from marl.runner import Runner
from marl.scenario import ScenarioConfig, make_credit, prefixed
from marl.seeding import derive_seed
from marl.tree import TurnTree
from topologies.execution import DECISIONS, run_graphs
from topologies.graphs import (
    TOPOLOGIES,
    FixedPolicy,
    FreeLogits,
    GraphSpace,
    QueryConditioned,
    graph_space,
    mode_graphs,
    policy_features,
    query_feature_dim,
    role_feature_dim,
    sample_graphs,
)
from topologies.learner import TopologyLearner, check_settings, edge_advantages_table
from topologies.testbed import Testbed, TestbedConfig, oracle_probability, success_probability

logger = logging.getLogger(__name__)

POLICY_KINDS = ("query", "free", "fixed")


@dataclass
class TeamSettings:
    """How the team talks: rounds of the unrolled graph and the decision node."""

    rounds: int = 2
    """Rounds (spatial edges inside a round, temporal edges from round t-1 to t)."""
    decision: str = "last"
    """Who answers: last (the final agent of the last round) | majority (vote of the last round)."""


@dataclass
class PolicySettings:
    """The topology policy and its optimizer."""

    kind: str = "query"
    """query (role embeddings x hashed query n-grams, bilinear) | free (one logit per edge,
    GPTSwarm/AgentPrune) | fixed (a hand-designed topology)."""
    features: str = "roles"
    """kind query: ngram (hashed 1-3-grams) | ordered (+ skip-bigrams) | roles (ordered + where each
    agent's role is mentioned in the query) | roles_only (``topologies.graphs.policy_features``)."""
    topology: str = "complete"
    """kind fixed: chain | star | layered | complete | random | debate | single."""
    layers: int = 3
    """kind fixed, topology layered: number of layers."""
    feature_dim: int = 256
    """Hashed n-gram buckets of the query features."""
    hidden: int = 64
    """kind query: rank of the bilinear scorer."""
    init_logit: float = 0.0
    """Initial logit of every learned edge (0: p = 0.5, GPTSwarm's start; negative: sparser graphs)."""
    lr: float = 0.1
    """Adam learning rate (GPTSwarm's 0.1)."""
    kl_coef: float = 0.0
    """beta of the KL to the initial edge distribution (Graph-GRPO's reference)."""
    entropy_coef: float = 0.0
    """Entropy bonus on the edge Bernoullis (0: none, as in GPTSwarm / G-Designer / Graph-GRPO)."""
    explore: float = 0.0
    """Epsilon of the mixed edge sampling q = eps + (1 - 2 eps) p (0: none); log-probs are those of q."""
    prune_rate: float = 0.0
    """kind free: fraction of edges AgentPrune's one-shot magnitude pruning removes (paper: 0.25)."""
    prune_at: int = 0
    """Step after which the pruning happens (0: never)."""
    eval_graph: str = "mode"
    """Evaluation graph: mode (edges with p > 0.5, GPTSwarm's rule) | sample (one draw; for random)."""


@dataclass
class TopologyConfig(ScenarioConfig):
    """Run config of the topology recipe."""

    recipe: str = "topology"
    """Recipe name (selects this schema)."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="graph_grpo_edge"))
    """Credit rule over the graph nodes (Graph-GRPO edge level by default) and its token cost."""
    task: TestbedConfig = field(default_factory=TestbedConfig)
    """The skill-chain testbed and its programmatic team."""
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
        if self.team.decision not in DECISIONS:
            raise ValueError(f"team.decision ({self.team.decision!r}) must be one of {DECISIONS}")
        if self.policy.kind not in POLICY_KINDS:
            raise ValueError(f"policy.kind ({self.policy.kind!r}) must be one of {POLICY_KINDS}")
        if self.policy.topology not in TOPOLOGIES:
            raise ValueError(f"policy.topology ({self.policy.topology!r}) must be one of {TOPOLOGIES}")
        check_settings(self.policy.features, self.policy.entropy_coef, self.policy.explore, "policy.")
        if self.policy.eval_graph not in ("mode", "sample"):
            raise ValueError(f"policy.eval_graph ({self.policy.eval_graph!r}) must be mode or sample")
        if not 0.0 <= self.policy.prune_rate < 1.0:
            raise ValueError(f"policy.prune_rate ({self.policy.prune_rate}) must be in [0, 1)")
        if self.policy.prune_rate > 0 and self.policy.kind != "free":
            raise ValueError(f"policy.prune_rate ({self.policy.prune_rate}) needs policy.kind free")
        if self.queries_per_step < 1 or self.graphs_per_query < 1 or self.team.rounds < 1:
            raise ValueError(
                f"queries_per_step ({self.queries_per_step}), graphs_per_query ({self.graphs_per_query}) "
                f"and team.rounds ({self.team.rounds}) must be >= 1"
            )


def make_policy(cfg: PolicySettings, space: GraphSpace, seed: int) -> torch.nn.Module:
    """The topology policy the settings name."""
    if cfg.kind == "query":
        dim, node = query_feature_dim(cfg.features, cfg.feature_dim), role_feature_dim(cfg.features)
        return QueryConditioned(space, dim, hidden=cfg.hidden, seed=seed, init=cfg.init_logit, node_dim=node)
    if cfg.kind == "free":
        return FreeLogits(space, init=cfg.init_logit)
    return FixedPolicy(space, cfg.topology, layers=cfg.layers)


def features(cfg: PolicySettings, task: Testbed, queries) -> torch.Tensor:
    """The policy's input for these queries (``policy.features``; the roles are the agents' names)."""
    return policy_features([q.text for q in queries], task.agent_names(), cfg.features, cfg.feature_dim)


def edge_names(space: GraphSpace, names: list[str]) -> list[str]:
    """``r<round of the target>:<agent>><agent>`` per candidate edge; ``>>`` marks a temporal edge from
    the previous round (``r1:sort>final``, ``r1:sum>>parse``)."""
    a = space.num_agents
    return [
        f"r{int(v) // a}:{names[int(u) % a]}{'>' if int(u) // a == int(v) // a else '>>'}{names[int(v) % a]}"
        for u, v in zip(space.src, space.dst)
    ]


def evaluate(
    learner: TopologyLearner, task: Testbed, space: GraphSpace, cfg: TopologyConfig, seed: int
) -> dict[str, float]:
    """Held-out accuracy (one execution per query), its exact expectation and the oracle, tokens and
    calls per query, and the mean probability of every edge (``topology/p/<edge>``)."""
    queries = task.heldout if cfg.eval_queries <= 0 else task.heldout[: cfg.eval_queries]
    feats = features(cfg.policy, task, queries)
    with torch.no_grad():
        logits = learner.policy(feats)
    gen = torch.Generator().manual_seed(seed % 2**63)
    a = sample_graphs(logits, 1, gen)[0][:, 0] if cfg.policy.eval_graph == "sample" else mode_graphs(logits)
    a = a.numpy()
    team = task.agents(np.random.default_rng(seed))
    ex = run_graphs(TurnTree(), space, team, queries, a[:, None], np.zeros(a.shape)[:, None], task.score,
                    decision=cfg.team.decision)  # fmt: skip
    out = {
        "eval/accuracy": float(ex.scores.mean()),
        "eval/prompt_tokens": float(ex.prompt_tokens.mean()),
        "eval/completion_tokens": float(ex.completion_tokens.mean()),
        "eval/tokens_per_query": float(ex.tokens.mean()),
        "eval/calls_per_query": float(ex.calls.mean()),
        "eval/edges": float(a.sum(1).mean()),
    }
    if cfg.team.decision == "last":  # the exact values are those of the final-agent decision
        rel = task.reliability
        out["eval/expected_accuracy"] = float(np.mean([success_probability(space, g, q.skills, rel)
                                                       for g, q in zip(a, queries)]))  # fmt: skip
        oracle = {s: oracle_probability(space, s, rel) for s in {q.skills for q in queries}}
        out["eval/oracle"] = float(np.mean([oracle[q.skills] for q in queries]))
    p = torch.sigmoid(logits).mean(0).tolist()
    out.update({f"topology/{n}/p": v for n, v in zip(edge_names(space, task.agent_names()), p)})
    return out


def _build(cfg: TopologyConfig) -> tuple[Testbed, GraphSpace, TopologyLearner]:
    task = Testbed(cfg.task)
    space = graph_space(task.num_agents, cfg.team.rounds)
    policy = make_policy(cfg.policy, space, derive_seed(cfg.run.seed, "policy") % 2**31)
    p = cfg.policy
    kw = dict(kl_coef=p.kl_coef, entropy_coef=p.entropy_coef, explore=p.explore)
    return task, space, TopologyLearner(policy, lr=p.lr, **kw)


def train(cfg: TopologyConfig, runner: Runner) -> dict[str, float]:
    """The whole loop: sample graphs -> run the team -> credit on the graph nodes -> the policy learns."""
    task, space, learner = _build(cfg)
    credit = make_credit(cfg)
    rng = np.random.default_rng(derive_seed(cfg.run.seed, "task"))
    team_rng = np.random.default_rng(derive_seed(cfg.run.seed, "team"))
    graphs = torch.Generator().manual_seed(derive_seed(cfg.run.seed, "graphs") % 2**63)
    team = task.agents(team_rng)
    extra = {"credit": credit, "rng": rng, "team_rng": team_rng, "graphs": graphs, "topology": learner}
    b, k, e = cfg.queries_per_step, cfg.graphs_per_query, space.num_edges
    seen = 0
    start = runner.restore({}, extra=extra)
    if start == 0 and runner.should_eval(0):
        runner.log(0, evaluate(learner, task, space, cfg, derive_seed(cfg.run.seed, "eval", 0)))
    for step in runner.steps(start):
        # 1. sample K graphs per query and run the team over all of them (one call per agent per wave)
        queries = task.sample_train(rng, b)
        feats = features(cfg.policy, task, queries)
        with torch.no_grad():
            a, lp = sample_graphs(learner.policy(feats), k, graphs, explore=cfg.policy.explore)
        tree = TurnTree()
        ex = run_graphs(
            tree, space, team, queries, a.numpy(), lp.numpy(), task.score, decision=cfg.team.decision
        )
        seen += b
        # 2. credit on the graph nodes (the core's rule), 3. the topology policy learns from it
        result = credit(tree, ex.graph_nodes.reshape(-1))
        adv = edge_advantages_table(result.advantages, b * k, e).reshape(b, k, e)
        metrics = {**result.metrics, **prefixed("agent/topology", learner.learn(feats, a, adv))}
        if cfg.policy.prune_rate > 0 and step == cfg.policy.prune_at:
            metrics["topology/pruned_edges"] = float(learner.policy.prune(cfg.policy.prune_rate))
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
            metrics.update(evaluate(learner, task, space, cfg, derive_seed(cfg.run.seed, "eval", step)))
        runner.end_step(step, metrics, {}, extra)
    draw(learner, task, space, cfg, runner.dir)
    return runner.finish({})


def draw(learner: TopologyLearner, task: Testbed, space: GraphSpace, cfg: TopologyConfig, out) -> None:
    """Heat map of the mean edge probabilities per held-out query type and the most probable graph of
    the first held-out query, into the run directory."""
    from topologies.pictures import draw_graph, edge_heatmap

    feats = features(cfg.policy, task, task.heldout)
    with torch.no_grad():
        p = torch.sigmoid(learner.policy(feats)).numpy()
    types = sorted({q.skills for q in task.heldout})
    rows = np.stack([p[[q.skills == t for q in task.heldout]].mean(0) for t in types])
    names = task.agent_names()
    label = lambda t: " > ".join(names[s] for s in t)  # noqa: E731
    edge_heatmap(rows, [label(t) for t in types], edge_names(space, names), out / "topology_heatmap.png")
    q = task.heldout[0]
    draw_graph(space, p[0] > 0.5, names, f"most probable graph: {q.text}", out / "topology_graph.png")


def evaluate_run(cfg: TopologyConfig, runner: Runner) -> dict[str, float]:
    """Held-out metrics of the topology policy in the run's latest checkpoint."""
    from marl.rundir import Checkpointer

    task, space, learner = _build(cfg)
    path = runner.ckpt.latest()
    if path is None:
        raise FileNotFoundError(f"{runner.dir}: no complete checkpoint")
    state = Checkpointer.load(path, {})
    learner.load_state_dict(state["extra"]["topology"]["state_dict"])
    return evaluate(learner, task, space, cfg, derive_seed(cfg.run.seed, "eval", int(state["step"])))


Config = TopologyConfig

SMOKE_OVERRIDES = [
    "run.steps=2",
    "run.eval_every=1",
    "queries_per_step=4",
    "graphs_per_query=4",
    "task.train_queries=16",
    "task.heldout_queries=16",
    "policy.prune_at=2",
]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
