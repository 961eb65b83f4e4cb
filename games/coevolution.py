"""Co-evolution recipe (AdvEvo-MARL): attackers learn to break a multi-agent system while its agents
learn to do their task and resist, each agent with its own model and optimizer, no external guard.

Each step draws ``tasks_per_step`` instances (a training task, a canary, an entry point, an attack
source) and plays ``group_size`` episodes of each (``games.coevolution_env.play_round``: one root
per instance, attacker -> planner -> solver -> checker paths, success decided by code). Credit is
the core's: the AdvEvo public baseline per functional group (``credit.rule: advevo``, the tree's
``role`` is the functional group) or per-agent GRPO (``rule: grpo``, ``group_key: [group, agent]``),
chosen in YAML. Schedules: ``simultaneous`` (both sides learn every step) or ``alternating`` (one
side learns ``freeze_steps`` steps while the other is frozen: iterated best response). Attacker
snapshots join a league (``games.league.SnapshotPool``); a share of the attacks come from them,
and evaluation measures the defenders against each. Baselines are configs of the same recipe
(``attack_source: none`` task-only defenders, ``templates`` a fixed attack set, ``guard`` an
external guard agent, ``env.self_verify`` a self-verification prompt).

Why here: the attack/defence game is a game between agents (DESIGN.md puts it in ``games/``) and
reuses ``games/league.py``; like self-play it is a recipe module beside its environment
(``coevolution_env``), templates (``coevolution_attacks``), league, warm start and evaluation modules, so
the top-level layout stays the user's. Docs: ``docs/coevolution.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from games.coevolution_env import (
    DEFENDER_ROLES,
    SCHEDULES,
    CoevoEnvConfig,
    CoevoLeagueSettings,
    FrozenActor,
    RewardSettings,
    ScheduleSettings,
    learning_side,
    play_round,
)
from games.coevolution_eval import CoevoEvalSettings, evaluate, results_table
from games.coevolution_league import attack_sources, defender_team, draw_instances, has_signal, round_metrics
from games.coevolution_warm import CoevoWarmStartSettings, warm_start
from games.league import SnapshotPool
from marl.credit import CreditConfig
from marl.digits import DigitTask
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.scenario import RecipeConfig, learn_agents, load_latest, make_agents, make_credit
from marl.seeding import derive_seed
from marl.tree import TurnTree

logger = logging.getLogger(__name__)
ATTACK_SOURCES = ("agents", "templates", "none")


@dataclass
class CoevolutionConfig(RecipeConfig):
    """Run config of the co-evolution recipe."""

    recipe: str = "coevolution"
    """Recipe name (selects this schema)."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="advevo", group_key=["role"]))
    """Credit rule: advevo (public baseline per functional group, the tree's role) or per-agent grpo."""
    env: CoevoEnvConfig = field(default_factory=CoevoEnvConfig)
    """The defenders' system, the task, the canary and the entry points."""
    rewards: RewardSettings = field(default_factory=RewardSettings)
    """Task score, safety penalty, attack and guard rewards."""
    defenders: dict[str, str] = field(default_factory=lambda: {r: r for r in DEFENDER_ROLES})
    """Defender role (planner, solver, checker) -> agent name."""
    attackers: list[str] = field(default_factory=lambda: ["attacker"])
    """Attacker agent names (attack_source: agents)."""
    guard: str = ""
    """Agent name of an external guard that screens the entry slot ('' = none; a baseline)."""
    attack_source: str = "agents"
    """agents (co-evolution) | templates (a fixed set: the training templates) | none (task only)."""
    attack_fraction: float = 0.5
    """Share of training instances that carry an attack."""
    tasks_per_step: int = 16
    """Instances (roots) per step."""
    group_size: int = 4
    """Episodes per instance (G)."""
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    """Simultaneous or alternating updates."""
    league: CoevoLeagueSettings = field(default_factory=CoevoLeagueSettings)
    """Attacker snapshots."""
    warmstart: CoevoWarmStartSettings = field(default_factory=CoevoWarmStartSettings)
    """Supervised warm starts of a fresh run."""
    eval: CoevoEvalSettings = field(default_factory=CoevoEvalSettings)
    """What an evaluation plays."""
    skip_silent: bool = True
    """An agent whose advantages in a step are all 0 (no learning signal: e.g. every attack failed)
    does not update that step. With the update, AdamW would still move it along its momentum (the
    gradient is 0, the first moment is not) for about 1 / (1 - beta1) steps."""

    def validate(self) -> None:
        super().validate()
        if set(self.defenders) != set(DEFENDER_ROLES):
            raise ValueError(f"defenders {dict(self.defenders)} must map exactly the roles {DEFENDER_ROLES}")
        if self.attack_source not in ATTACK_SOURCES:
            raise ValueError(f"attack_source {self.attack_source!r} is not one of {ATTACK_SOURCES}")
        if (self.attack_source == "agents") != bool(self.attackers):
            raise ValueError(
                f"attack_source {self.attack_source!r} with attackers {list(self.attackers)}: attacker "
                "agents play only with attack_source: agents, which needs at least one"
            )
        named = [*self.defenders.values(), *self.attackers, *([self.guard] if self.guard else [])]
        unknown = sorted(set(named) - set(self.agents))
        if unknown or len(set(named)) != len(named) or set(named) != set(self.agents):
            raise ValueError(
                f"every agent plays exactly one part: agents {sorted(self.agents)}, defenders "
                f"{list(self.defenders.values())}, attackers {list(self.attackers)}, guard {self.guard!r}"
            )
        if self.schedule.mode not in SCHEDULES or self.schedule.first not in ("attackers", "defenders"):
            raise ValueError(
                f"schedule.mode {self.schedule.mode!r} must be one of {SCHEDULES} and schedule.first "
                f"{self.schedule.first!r} attackers or defenders"
            )
        if self.schedule.freeze_steps < 1 or self.tasks_per_step < 1 or self.group_size < 1:
            raise ValueError("schedule.freeze_steps, tasks_per_step and group_size must be >= 1")
        lg = self.league
        if not all(0 <= x <= 1 for x in (self.attack_fraction, lg.opponent_fraction, lg.defender_fraction)):
            raise ValueError(
                "attack_fraction, league.opponent_fraction and league.defender_fraction must be in [0, 1]"
            )
        if lg.defender_fraction > 0 and self.attack_source != "agents":
            raise ValueError(
                f"league.defender_fraction {lg.defender_fraction} needs attacker agents (attack_source: "
                f"agents, not {self.attack_source!r}): frozen defender teams only give attackers a signal"
            )


def train(cfg: CoevolutionConfig, runner: Runner) -> dict[str, float]:
    """The whole loop: play (grow tree) -> credit -> per-agent learn (by schedule) -> league -> log."""
    seed = cfg.run.seed
    agents = make_agents(cfg, runner.cache_dir)
    credit = make_credit(cfg)
    task = DigitTask(cfg.env.task)
    defenders = {r: agents[n] for r, n in cfg.defenders.items()}
    guard = agents[cfg.guard] if cfg.guard else None
    side_of = {n: "attackers" for n in cfg.attackers} | {
        n: "defenders" for n in agents if n not in cfg.attackers
    }
    league = SnapshotPool({n: agents[n].policy for n in agents}, cfg.league.max_per_agent)
    rng = np.random.default_rng(derive_seed(seed, "instances"))
    frozen_gen = torch.Generator().manual_seed(derive_seed(seed, "frozen") % 2**63)
    extra = {"credit": credit, "rng": rng, "league": league, "frozen_gen": frozen_gen}

    def eval_now(step: int) -> dict[str, float]:
        untrained = {r: FrozenActor(s.policy, defenders[r], frozen_gen, s.name) for r, s in initial.items()}
        srcs = attack_sources(cfg, agents, league, frozen_gen)
        return evaluate(
            defenders,
            srcs,
            guard,
            task,
            cfg.env,
            cfg.eval,
            seed=derive_seed(seed, "eval"),
            untrained=untrained,
        )

    start = runner.restore(agents, extra=extra)
    if start == 0:
        roles = {"attacker": cfg.attackers, "guard": [cfg.guard] if cfg.guard else []}
        roles |= {r: [n] for r, n in cfg.defenders.items()}
        ws = warm_start(agents, roles, task, cfg.env, cfg.warmstart, seed=seed, cache_dir=runner.cache_dir)
        for name in agents:
            league.add(name, 0)
        runner.log(0, ws)
    initial = {r: league.snapshots(n)[0] for r, n in cfg.defenders.items()}
    if start == 0 and runner.should_eval(0):
        runner.log(0, eval_now(0))
    metrics: dict[str, float] = {}
    for step in runner.steps(start):
        t0 = time.perf_counter()
        # 1. play: every pending call of one agent in one act call; each call a tree node
        instances = draw_instances(cfg, task, league, rng)
        tree = TurnTree(list(agents))
        srcs = attack_sources(cfg, agents, league, frozen_gen)
        # the live defenders' instances first (one call when no frozen team plays: the same stream),
        # then each frozen defender team's (league.defender_fraction), all in one tree
        teams = sorted({i.defender_step for i in instances if i.defender_step is not None})
        rounds = {}
        for team_step in [None, *teams]:
            sub = [i for i in instances if i.defender_step == team_step]
            if not sub:
                continue
            team = defenders
            if team_step is not None:
                team = defender_team(cfg, agents, league, team_step, frozen_gen)
            rounds[team_step] = play_round(
                tree,
                sub,
                cfg.group_size,
                defenders=team,
                attackers=srcs,
                guard=guard,
                env=cfg.env,
                rewards=cfg.rewards,
            )
        t_play = time.perf_counter() - t0
        # 2. credit on the whole tree (public baseline or GRPO), 3. routing by each node's agent
        result = credit(tree)
        batches = tree_to_batches(tree, result.nodes, result.advantages, result.train_mask, pad_id=0)
        side = learning_side(cfg.schedule, step)
        batches = {n: b for n, b in batches.items() if side in ("both", side_of[n])}
        silent = [n for n, b in batches.items() if not has_signal(b)] if cfg.skip_silent else []
        batches = {n: b for n, b in batches.items() if n not in silent}
        # 4. each learning agent updates from its own nodes with its own optimizer
        metrics = dict(result.metrics)
        metrics.update({f"agent/{n}/silent": 1.0 for n in silent})
        metrics.update(learn_agents(agents, batches, credit, step=step))
        # 5. league: frozen attacker (and defender team) snapshots join the opponent pool
        if cfg.league.every > 0 and step % cfg.league.every == 0:
            joining = [*cfg.attackers, *(cfg.defenders.values() if cfg.league.defender_fraction > 0 else [])]
            for name in joining:
                league.add(name, step)
        metrics.update(round_metrics(rounds, instances, cfg))
        metrics["time/play_s"], metrics["time/learn_s"] = t_play, time.perf_counter() - t0 - t_play
        metrics["train/learning_attackers"] = float(side in ("both", "attackers"))
        if runner.should_eval(step):
            metrics.update(eval_now(step))
        if step == cfg.run.steps:
            write_results(runner, metrics, cfg)
        runner.end_step(step, metrics, agents, extra)
    return runner.finish(agents)


def write_results(runner: Runner, metrics: dict[str, float], cfg: CoevolutionConfig) -> None:
    """The results table: ``results.md`` in the run directory, and in the log."""
    md = results_table(metrics, f"{runner.dir.name}: attack_source={cfg.attack_source}, seed {cfg.run.seed}")
    (runner.dir / "results.md").write_text(md)
    logger.info("results (%s):\n%s", runner.dir / "results.md", md)


def evaluate_run(cfg: CoevolutionConfig, runner: Runner) -> dict[str, float]:
    """Held-out ASR and task accuracy of the agents in the run's latest checkpoint."""
    agents, _ = load_latest(cfg, runner)
    defenders = {r: agents[n] for r, n in cfg.defenders.items()}
    srcs = {n: agents[n] for n in cfg.attackers}
    guard = agents[cfg.guard] if cfg.guard else None
    return evaluate(
        defenders,
        srcs,
        guard,
        DigitTask(cfg.env.task),
        cfg.env,
        cfg.eval,
        seed=derive_seed(cfg.run.seed, "eval"),
    )


Config = CoevolutionConfig

SMOKE_OVERRIDES = [
    "run.steps=2",
    "run.eval_every=1",
    "tasks_per_step=4",
    "group_size=2",
    "eval.tasks=6",
    "warmstart.instances=32",
    "warmstart.attacker_steps=2",
    "warmstart.defender_steps=2",
    "warmstart.guard_steps=2",
    "warmstart.batch_size=8",
    "schedule.freeze_steps=1",
    "league.every=1",
    "attack_fraction=1.0",
    "skip_silent=false",  # a toy run rarely has a signal: update anyway, so every learner path runs
]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
