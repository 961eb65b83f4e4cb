"""Self-play recipe: LLM agents learn board and card games by playing them, many games at once.

Each step plays ``sum(matchup.games)`` games together (``games.selfplay_env.play_step`` on the arena
engine): every learner decision becomes a node of the step's ``TurnTree`` (G games from one start
share a root, a game is one path), with the reward the game paid it. Credit is the core's
(``marl.credit``: ``mars_turn`` by default, ``spiral_rae``, ``grpo``, ...; an outcome rule judges each
turn by its return-to-go, discounted by ``credit.gamma``); the samples are routed to each agent's own
optimizer. Fixed opponents (random, MCTS, CFR) and frozen league snapshots play the other seats;
evaluation and the final round robin are ``games.evaluation``'s.

Shape legend: ``B`` games of a step, ``G`` games per start (group size), ``N`` tree nodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from games.dilemmas import STRATEGIES
from games.evaluation import EvalConfig, FinalTournamentConfig, MatchSettings, evaluate, final_tournament
from games.league import PROMPT_FORMATS, SnapshotPool
from games.opponents import Player, check_opponent
from games.parsing import InvalidActionConfig
from games.prompts import check_agent_budgets
from games.selfplay_env import (
    FIXED_OPPONENT,
    LeagueConfig,
    MatchupConfig,
    PromptSettings,
    game_round,
    make_fixed,
    play_step,
    player_kind,
    seat_rotations,
    step_metrics,
)
from games.selfplay_warm import ImitationWarmStart, imitation_warm_start
from games.text import GameConfig, check_playable, make_game, num_players
from marl.credit import CreditConfig, key_fields
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.scenario import RecipeConfig, learn_agents, load_latest, make_agents, make_credit
from marl.seeding import derive_seed
from marl.tree import TurnTree


@dataclass
class SelfPlayConfig(RecipeConfig):
    """Run config of the self-play recipe."""

    MULTI_TURN = True

    recipe: str = "selfplay"
    """Recipe name (selects this schema)."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="mars_turn"))
    """Credit rule over the turn tree (MARS turn-level by default), its keys and normaliser."""
    game: GameConfig = field(default_factory=GameConfig)
    """The game, its backend, prompt style and whether sampling is masked to legal actions."""
    prompt_format: str = "state"
    """'state' (shortest faithful view: board cells / information state + seat) or 'game' (games.prompts
    in game.prompt_style)."""
    invalid: InvalidActionConfig = field(default_factory=InvalidActionConfig)
    """What an unparseable output costs (forfeit or retry) and its penalty."""
    matchups: list[MatchupConfig] = field(default_factory=list)
    """The training games of one step."""
    group_size: int = 1
    """G: games from one start (same game seed, same seats) that share a tree root."""
    league: LeagueConfig = field(default_factory=LeagueConfig)
    """Snapshot pool of the learners."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Scheduled evaluation against fixed opponents."""
    final: FinalTournamentConfig = field(default_factory=FinalTournamentConfig)
    """Round robin after training."""
    warmstart: ImitationWarmStart = field(default_factory=ImitationWarmStart)
    """Optional imitation of a fixed teacher before the first step (``games.selfplay_warm``)."""

    def validate(self) -> None:
        super().validate()
        self.warmstart.validate()
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format {self.prompt_format!r} is not one of {list(PROMPT_FORMATS)}")
        if not self.matchups:
            raise ValueError(
                "matchups: declare at least one, e.g. [{players: [NAME, NAME], games: 128}] for self-play"
            )
        if self.group_size < 1:
            raise ValueError(f"group_size ({self.group_size}) must be >= 1")
        check_playable(self.game)
        seats = num_players(self.game)
        for i, m in enumerate(self.matchups):
            where = f"matchups[{i}]"
            if len(m.players) != seats:
                raise ValueError(
                    f"{where}: {m.players} fills {len(m.players)} seats; {self.game.name} has {seats} "
                    f"(one player spec per seat)"
                )
            for spec in m.players:
                player_kind(spec, list(self.agents), where)
            if not any(s in self.agents for s in m.players):
                raise ValueError(
                    f"{where}: {m.players} has no learning agent (agents: {sorted(self.agents)})"
                )
            rot = len(seat_rotations(m.players))
            if m.games < 1 or m.games % (rot * self.group_size):
                raise ValueError(
                    f"{where}.games ({m.games}) must be a positive multiple of seat rotations ({rot}) x "
                    f"group_size ({self.group_size})"
                )
        fixed = [
            s for m in self.matchups for s in m.players if player_kind(s, list(self.agents))[0] == "fixed"
        ]
        for spec in [*self.eval.opponents, *self.final.opponents]:
            if not FIXED_OPPONENT.fullmatch(spec.strip().lower()):
                raise ValueError(
                    f"opponent {spec!r} must be 'random', 'mcts-N', 'cfr-N' or a dilemma strategy "
                    f"({', '.join(STRATEGIES)})"
                )
        teacher = [self.warmstart.teacher] if self.warmstart.teacher else []
        for spec in dict.fromkeys([*fixed, *self.eval.opponents, *self.final.opponents, *teacher]):
            check_opponent(spec, self.game)
        if self.final.opponents and seats > 2:
            raise ValueError(
                f"final.opponents: the final round robin pairs two players; {self.game.name} has {seats} "
                "seats: set final.opponents: [] (eval.opponents still play it)"
            )
        check_agent_budgets(self.game, self.agents)
        if self.final.opponents and (self.final.games_per_pair < 2 or self.final.games_per_pair % 2):
            raise ValueError(f"final.games_per_pair ({self.final.games_per_pair}) must be even and >= 2")
        if self.eval.games_per_seat < 1:
            raise ValueError(f"eval.games_per_seat ({self.eval.games_per_seat}) must be >= 1")

    def records_rounds(self) -> bool:
        """The game counts rounds (``games.selfplay_env.game_round``), so the recorder records them."""
        return game_round(make_game(self.game, 0)) is not None

    @property
    def prompt(self) -> PromptSettings:
        """How the learners see a decision."""
        return PromptSettings(self.prompt_format, self.game.prompt_style, self.game.constrained_sampling)


def train(cfg: SelfPlayConfig, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: play (grow tree) → credit → per-agent learn → league → log."""
    seed = cfg.run.seed
    agents = make_agents(cfg, runner.cache_dir)
    credit = make_credit(cfg)
    league = SnapshotPool({n: a.policy for n, a in agents.items()}, cfg.league.max_per_agent)
    rng = np.random.default_rng(derive_seed(seed, "games"))
    cfr_cache: dict[str, Player] = {}
    extra = {"credit": credit, "rng": rng, "league": league}
    env = dict(
        game=cfg.game,
        matchups=cfg.matchups,
        group_size=cfg.group_size,
        invalid=cfg.invalid,
        prompt=cfg.prompt,
        hash_states="state_hash" in key_fields(cfg.credit),
    )
    match = MatchSettings(cfg.game, cfg.prompt, cfg.invalid, cfr_cache)

    start = runner.restore(agents, extra=extra)
    if start == 0:
        ws, cache = cfg.warmstart, runner.cache_dir
        warm = imitation_warm_start(agents, cfg.game, cfg.prompt, ws, seed=seed, cache_dir=cache)
        if warm:
            runner.log(0, warm)
        for name in agents:
            league.add(name, 0)
        if runner.should_eval(0):
            runner.log(0, evaluate(agents, cfg.eval, match, seed=derive_seed(seed, "eval", 0)))
    fixed_specs = sorted({s for m in cfg.matchups for s in m.players if FIXED_OPPONENT.fullmatch(s.lower())})
    for step in runner.steps(start):
        t0 = time.perf_counter()
        # 1. play every game of the step together; each learner decision becomes a tree node
        fixed = {
            s: make_fixed(s, cfg.game, derive_seed(seed, "opponent", step, s), cfr_cache) for s in fixed_specs
        }
        tree = TurnTree(list(agents))
        played = play_step(tree, agents, fixed, league, rng, **env)
        t_play = time.perf_counter() - t0
        # 2. credit on the whole tree; a forced move (the mask left one action) teaches nothing
        result = credit(tree)
        keep = result.train_mask & ~np.isin(result.nodes, played.forced_nodes)
        batches = tree_to_batches(tree, result.nodes, result.advantages, keep, pad_id=0)
        # 3. each agent learns from its own turns with its own optimizer
        metrics: dict[str, float] = dict(result.metrics)
        metrics.update(learn_agents(agents, batches, credit, step=step))
        t_learn = time.perf_counter() - t0 - t_play
        # 4. league: frozen snapshots join the opponent pool
        if cfg.league.every > 0 and step % cfg.league.every == 0:
            for name in agents:
                league.add(name, step)
        # 5. metrics, evaluation, checkpoint
        metrics.update(step_metrics(played, agents))
        metrics["train/decisions_per_s"] = (played.decisions + played.opponent_decisions) / max(t_play, 1e-9)
        metrics["train/games_per_s"] = len(played.games) / max(t_play, 1e-9)
        metrics["time/play_s"], metrics["time/learn_s"] = t_play, t_learn
        metrics["games/league_size"] = float(len(league))
        if runner.should_eval(step):
            metrics.update(evaluate(agents, cfg.eval, match, seed=derive_seed(seed, "eval", step)))
        if step == cfg.run.steps:
            metrics.update(final_tournament(agents, cfg.final, match, seed=seed, out_dir=runner.dir))
        runner.end_step(step, metrics, agents, extra)
    return runner.finish(agents)


def evaluate_run(cfg: SelfPlayConfig, runner: Runner) -> dict[str, float]:
    """Scheduled-evaluation metrics of the agents in the run's latest checkpoint."""
    agents, step = load_latest(cfg, runner)
    match = MatchSettings(cfg.game, cfg.prompt, cfg.invalid)
    return evaluate(agents, cfg.eval, match, seed=derive_seed(cfg.run.seed, "eval", step))


Config = SelfPlayConfig

RETIRED_KEYS = {
    "turn_reward": "rewards are what the game paid; an outcome rule (grpo, ...) judges each turn by its "
    "return-to-go and the turn rules (mars_turn, ...) read the turn rewards: remove the key",
    "outcome_gamma": "use 'credit.gamma' (the discount of the return-to-go an outcome rule judges "
    "each turn by)",
}
"""Keys of earlier versions of this config and what replaced them."""

SMOKE_OVERRIDES = ["run.steps=2", "run.eval_every=1", "eval.games_per_seat=2", "final.games_per_pair=2"]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
