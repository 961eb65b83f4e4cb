"""The ``marl tournament`` command: a round robin between any players, with Elo and reports.

Players are listed by spec:
  - ``random``, ``mcts-N`` (OpenSpiel MCTS with N simulations), ``cfr-N`` (CFR average policy after N
    iterations, for poker); in the social dilemmas (``games.dilemmas``) also ``always-cooperate``,
    ``always-defect``, ``tit-for-tat``, ``grim-trigger``;
  - ``run:PATH`` or ``run:PATH:AGENT``: an agent of a self-play run directory, with the weights of its
    latest checkpoint and the prompt format, legal-action mask and sampling settings it trained with;
    PATH may be a glob (``run:runs/tictactoe/*``): the most recently modified matching run is used;
  - ``hf:PATH``: a local Hugging Face causal LM directory, prompted with this config's
    ``prompt_format`` / ``game.prompt_style`` and ``game.constrained_sampling``.

Every pairing plays ``games_per_pair`` games, half with each player in seat 0 (``games.arena.
round_robin``); the win/draw/loss cross-table and Bradley–Terry Elo ratings with bootstrap confidence
intervals are written as markdown, JSON and a PNG.

``TournamentConfig.validate`` refuses, before anything is built or played: a game the adapters
cannot play (simultaneous-move, no action mask), a game that is not for exactly two players (a
one-player game such as blackjack has no opponent to beat, so no win, draw or Elo), a fixed
player that cannot play the game (MCTS on hidden cards, CFR on a PettingZoo env), a ``run:``
spec that matches no run directory (naming the command that trains it), a run without a
checkpoint, and a run that trained on another game: the full game spec (backend, name, every
parameter with its default) of the run's saved config must equal the tournament's, so a model
trained on 3x3 hex is never rated on 11x11.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model

from games.arena import TournamentResult, plot_mean_returns, round_robin
from games.league import PROMPT_FORMATS, LLMPlayer
from games.opponents import DEFAULT_CFR_CACHE, Player, check_opponent, make_opponent
from games.parsing import InvalidActionConfig
from games.prompts import check_action_budget, policy_tokenizer
from games.text import GameConfig, check_playable, format_spec, game_spec, num_players
from marl.policies import PolicyConfig, load_policy

logger = logging.getLogger(__name__)

SPEC_KINDS = (
    "random",
    "mcts-N",
    "cfr-N",
    "run:PATH[:AGENT]",
    "hf:PATH",
    "a dilemma strategy (always-cooperate, always-defect, tit-for-tat, grim-trigger)",
)


@dataclass
class TournamentConfig:
    """A round robin between any players and where its reports go."""

    recipe: str = "tournament"
    """Config kind (selects this schema); run it with ``marl tournament CONFIG``."""
    game: GameConfig = field(default_factory=GameConfig)
    """The game (and, for hf: players, the prompt style and legal-action mask)."""
    players: list[str] = field(default_factory=list)
    """Player specs: random, mcts-N, cfr-N, run:PATH[:AGENT], hf:PATH (at least two)."""
    games_per_pair: int = 200
    """Games per pairing, even: half with each player in seat 0."""
    seed: int = 0
    """Seed of the game deals, the players' randomness and the bootstrap."""
    greedy: bool = True
    """LLM players play their most likely action (else they sample at their temperature)."""
    prompt_format: str = "game"
    """hf: players: 'game' (games.prompts in game.prompt_style) or 'state' (shortest state text)."""
    max_new_tokens: int = 16
    """hf: players: completion budget per decision."""
    invalid: InvalidActionConfig = field(default_factory=InvalidActionConfig)
    """What an unparseable output costs."""
    n_boot: int = 1000
    """Bootstrap resamples for the Elo confidence intervals."""
    prior_draws: float = 1.0
    """Virtual draws added to every pair (keeps the Bradley-Terry fit finite)."""
    anchor: str = ""
    """Player name pinned at Elo 1000 (empty: ratings have mean 1000)."""
    out_dir: str = "tournaments"
    """Parent folder of the report folder."""
    name: str = ""
    """Report folder name under out_dir; empty = '<game>-<timestamp>'."""
    cache_dir: str = ""
    """Where tiny LMs of run: players are built; empty = '<run dir>/../.cache', where training built them."""
    cfr_cache_dir: str = DEFAULT_CFR_CACHE
    """Where solved CFR policies are cached."""
    threads: int = 0
    """torch intra-op threads; 0 = leave torch's default."""

    def validate(self) -> None:
        if len(self.players) < 2:
            raise ValueError(f"players: a round robin needs at least two, got {self.players}")
        if len(set(self.players)) != len(self.players):
            raise ValueError(f"players: {self.players} lists a player twice")
        if self.games_per_pair < 2 or self.games_per_pair % 2:
            raise ValueError(f"games_per_pair ({self.games_per_pair}) must be even and >= 2")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format {self.prompt_format!r} is not one of {list(PROMPT_FORMATS)}")
        for spec in self.players:
            if not (spec.startswith(("run:", "hf:")) or _fixed_ok(spec)):
                raise ValueError(f"unknown player spec {spec!r}; valid kinds: {', '.join(SPEC_KINDS)}")
        check_tournament_game(self.game)
        for spec in self.players:
            if not spec.startswith(("run:", "hf:")):
                check_opponent(spec, self.game)

    def check_players(self) -> None:
        """``ConfigError`` naming the fix unless every run: / hf: player exists and has the completion
        budget the game needs (checked when the tournament starts, before any game; ``validate`` checks
        what the config says without looking for the runs, so the config resolves before they exist)."""
        from marl.config import ConfigError

        try:
            self._check_llm_players()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _check_llm_players(self) -> None:
        for spec in self.players:
            if spec.startswith("run:"):
                path, agent_name, run_cfg = find_run(spec, self.game)
                acfg = run_cfg.agents[agent_name]
                check_action_budget(
                    run_cfg.game,
                    policy_tokenizer(acfg.policy),
                    acfg.sampling.max_new_tokens,
                    where=f"agents.{agent_name}.sampling.max_new_tokens of run {path}",
                )
            elif spec.startswith("hf:"):
                policy = PolicyConfig(path=spec[len("hf:") :])
                try:
                    tokenizer = policy_tokenizer(policy)
                except (OSError, ValueError) as e:
                    raise ValueError(f"player {spec!r}: {e}") from None
                check_action_budget(self.game, tokenizer, self.max_new_tokens, where="max_new_tokens")


def check_tournament_game(game: GameConfig) -> None:
    """``ValueError`` unless ``game`` can be played (``check_playable``) by exactly two players."""
    check_playable(game)
    n = num_players(game)
    if n == 1:
        raise ValueError(
            f"game {game.name!r} is a one-player game; a tournament rates players by the games they win "
            f"against each other, and alone at the table nobody wins or loses against anyone (its "
            f"returns are scores, not results of a match). marl tournament needs a two-player game; "
            f"compare one-player agents by their mean return in their runs' evaluation instead"
        )
    if n != 2:
        raise ValueError(
            f"game {game.name!r} has {n} players; marl tournament plays two-player games only (each "
            f"pairing of the round robin fills both seats)"
        )


def _fixed_ok(spec: str) -> bool:
    from games.dilemmas import STRATEGIES

    key = spec.strip().lower()
    return key in STRATEGIES or re.fullmatch(r"(random|mcts[-_]?\d*|cfr[-_]?\d*)", key) is not None


def _runs(pattern: str) -> list[Path]:
    """Run directories (holding config.yaml) matching a path or glob, oldest first by modification time."""
    hits = [Path(p) for p in glob.glob(pattern)] if glob.has_magic(pattern) else [Path(pattern)]
    hits = [p for p in hits if (p / "config.yaml").is_file()]
    return sorted(hits, key=lambda p: (p.stat().st_mtime, str(p)))


CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def train_hint(pattern: str, game: GameConfig | None = None, configs_dir: Path = CONFIGS_DIR) -> str:
    """The command that creates run directories matching ``pattern``: ``marl train CONFIG``.

    A shipped self-play config whose ``run.out_dir`` is the folder of ``pattern`` (the one training
    ``game``, if several) is named; otherwise the generic command with ``run.out_dir`` set.
    """
    import yaml

    folder = os.path.normpath(os.path.dirname(pattern) or ".")
    name = os.path.basename(pattern)
    found: list[tuple[bool, str]] = []
    for path in sorted(configs_dir.rglob("*.yaml")) if configs_dir.is_dir() else []:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict) or data.get("recipe") != "selfplay":
            continue
        run = data.get("run") or {}
        if not isinstance(run, dict) or os.path.normpath(str(run.get("out_dir", "runs"))) != folder:
            continue
        gblock = data.get("game") or {}
        same = game is not None and isinstance(gblock, dict) and gblock.get("name") == game.name
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
        found.append((same, shown))
    if found:
        found.sort(key=lambda x: not x[0])
        return f"train it first: marl train {found[0][1]}"
    target = f"run.out_dir={folder}" + ("" if glob.has_magic(name) else f" run.name={name}")
    return f"train it first: marl train CONFIG {target} (a selfplay config)"


def find_run(spec: str, game: GameConfig) -> tuple[Path, str, Any]:
    """``run:PATH[:AGENT]`` -> (run directory, agent name, the run's SelfPlayConfig), checked.

    ``ValueError`` naming the fix when nothing matches PATH (with the command that trains it), the run
    is not a self-play run, has no such agent or no checkpoint, or trained on another game than
    ``game``: the two full game specs (``games.text.game_spec``) are shown side by side.
    """
    from games.selfplay import RETIRED_KEYS, SelfPlayConfig
    from marl.config import ConfigError, load_config, peek_yaml_key
    from marl.credit.config import RETIRED_KEYS as CREDIT_RETIRED_KEYS

    body = spec[len("run:") :]
    path, agent_name = body, None
    if not _runs(path) and ":" in body:
        path, agent_name = body.rsplit(":", 1)
    found = _runs(path)
    if not found:
        raise ValueError(
            f"player {spec!r}: no run directory (a folder with config.yaml) matches {path!r}; "
            f"{train_hint(path, game)}"
        )
    run_dir = found[-1]
    saved = run_dir / "config.yaml"
    recipe = peek_yaml_key(saved, "recipe")
    if recipe != "selfplay":
        raise ValueError(f"player {spec!r}: run {run_dir} is a {recipe!r} run; only selfplay runs play games")
    try:
        run_cfg = load_config(SelfPlayConfig, [saved], retired={**CREDIT_RETIRED_KEYS, **RETIRED_KEYS})
    except ConfigError as e:
        raise ValueError(f"player {spec!r}: the saved config of run {run_dir} does not load: {e}") from None
    if agent_name is None:
        if len(run_cfg.agents) != 1:
            raise ValueError(
                f"player {spec!r}: the run has agents {sorted(run_cfg.agents)}; name one as run:PATH:AGENT"
            )
        agent_name = next(iter(run_cfg.agents))
    if agent_name not in run_cfg.agents:
        raise ValueError(
            f"player {spec!r}: no agent {agent_name!r} in the run; agents: {sorted(run_cfg.agents)}"
        )
    theirs, ours = game_spec(run_cfg.game), game_spec(game)
    if theirs != ours:
        raise ValueError(
            f"player {spec!r}: the run trained on a different game than this tournament plays:\n"
            f"  run {run_dir}: {format_spec(theirs)}\n"
            f"  tournament:    {format_spec(ours)}\n"
            f"set the tournament's game: block to the run's (name, backend and params), or pick a run of "
            f"this game"
        )
    latest = run_dir / "checkpoints" / "latest"
    if not latest.is_file():
        raise ValueError(
            f"player {spec!r}: no checkpoint in {run_dir / 'checkpoints'}; train the run first "
            f"(marl train --resume {run_dir})"
        )
    return run_dir, agent_name, run_cfg


def run_player(spec: str, cfg: TournamentConfig) -> tuple[str, Player]:
    """``run:PATH[:AGENT]`` -> (display name, LLM player with the run's latest weights and settings)."""
    from games.selfplay_env import llm_player
    from marl.agent import Agent

    path, agent_name, run_cfg = find_run(spec, cfg.game)
    latest = path / "checkpoints" / "latest"
    weights = path / "checkpoints" / latest.read_text().strip() / "agents" / agent_name / "model.safetensors"
    acfg = run_cfg.agents[agent_name]
    cache = cfg.cache_dir or run_cfg.run.cache_dir or path.parent / ".cache"
    agent = Agent(agent_name, acfg, cache_dir=cache, total_steps=1, seed=0)
    load_model(agent.model, str(weights), strict=True)
    agent.model.eval()
    check_action_budget(
        run_cfg.game,
        agent.policy.tokenizer,
        acfg.sampling.max_new_tokens,
        where=f"agents.{agent_name}.sampling.max_new_tokens of run {path}",
    )
    name = f"{path.name}/{agent_name}"
    return name, llm_player(name, agent, run_cfg.prompt, greedy=cfg.greedy)


def hf_player(spec: str, cfg: TournamentConfig) -> tuple[str, Player]:
    """``hf:PATH`` -> (display name, LLM player over that Hugging Face model directory)."""
    path = spec[len("hf:") :]
    policy = load_policy(PolicyConfig(path=path), cfg.cache_dir or ".")
    check_action_budget(cfg.game, policy.tokenizer, cfg.max_new_tokens, where="max_new_tokens")
    name = Path(path).name or path
    player = LLMPlayer(
        name,
        policy,
        prompt_format=cfg.prompt_format,
        prompt_style=cfg.game.prompt_style,
        constrained=cfg.game.constrained_sampling,
        greedy=cfg.greedy,
        max_new_tokens=cfg.max_new_tokens,
    )
    return name, player


def make_players(cfg: TournamentConfig) -> dict[str, Player]:
    """Display name -> player for every spec of the config (names must come out distinct).

    A player the config cannot build raises ``marl.config.ConfigError`` (a ``ValueError``) naming the
    spec, so the CLI reports it as a config error rather than a traceback.
    """
    from marl.config import ConfigError

    try:
        return _make_players(cfg)
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"players: {e}") from None


def _make_players(cfg: TournamentConfig) -> dict[str, Player]:
    players: dict[str, Player] = {}
    for k, spec in enumerate(cfg.players):
        if spec.startswith("run:"):
            name, player = run_player(spec, cfg)
        elif spec.startswith("hf:"):
            name, player = hf_player(spec, cfg)
        else:
            name = spec
            player = make_opponent(
                spec,
                cfg.game.name,
                seed=(cfg.seed + 1000 * k) % 2**32,
                cache_dir=cfg.cfr_cache_dir,
                params=dict(cfg.game.params),
            )
            player.name = spec
        if name in players:
            raise ValueError(f"two players are both named {name!r}; list each run agent once")
        players[name] = player
    return players


def run_tournament(cfg: TournamentConfig) -> tuple[TournamentResult, Path]:
    """Play the round robin and write ``tournament.{md,json,png}`` into the report folder."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    players = make_players(cfg)
    t0 = time.perf_counter()
    result = round_robin(
        cfg.game,
        players,
        cfg.games_per_pair,
        seed=cfg.seed,
        invalid=cfg.invalid,
        n_boot=cfg.n_boot,
        prior_draws=cfg.prior_draws,
        anchor=cfg.anchor or None,
    )
    out = Path(cfg.out_dir) / (cfg.name or f"{cfg.game.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tournament.md").write_text(result.to_markdown())
    result.to_json(out / "tournament.json")
    result.plot(out / "tournament.png")
    plot_mean_returns(result, out / "tournament_returns.png")
    logger.info("tournament of %d players in %.1fs -> %s", len(players), time.perf_counter() - t0, out)
    return result, out


def run(cfg: TournamentConfig) -> str:
    """The ``marl tournament`` command: check the players, play, write the reports, return the summary."""
    cfg.check_players()
    result, out = run_tournament(cfg)
    return (
        f"{result.to_markdown()}\nreports: {out / 'tournament.md'}  {out / 'tournament.json'}  "
        f"{out / 'tournament.png'}  {out / 'tournament_returns.png'}"
    )


Config = TournamentConfig
