"""The ``marl tournament`` command: a round robin between any players, with Elo and reports.

Players are listed by spec:
  - ``random``, ``mcts-N`` (OpenSpiel MCTS with N simulations), ``cfr-N`` (CFR average policy after N
    iterations, for poker);
  - ``run:PATH`` or ``run:PATH:AGENT``: an agent of a self-play run directory, with the weights of its
    latest checkpoint and the prompt format, legal-action mask and sampling settings it trained with;
    PATH may be a glob (``run:runs/tictactoe/*``): the most recently modified matching run is used;
  - ``hf:PATH``: a local Hugging Face causal LM directory, prompted with this config's
    ``prompt_format`` / ``game.prompt_style`` and ``game.constrained_sampling``.

Every pairing plays ``games_per_pair`` games, half with each player in seat 0 (``games.arena.
round_robin``); the win/draw/loss cross-table and Bradley–Terry Elo ratings with bootstrap confidence
intervals are written as markdown, JSON and a PNG.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model

from games.arena import TournamentResult, round_robin
from games.league import PROMPT_FORMATS, LLMPlayer
from games.opponents import DEFAULT_CFR_CACHE, Player, make_opponent
from games.parsing import InvalidActionConfig
from games.text import GameConfig
from marl.policies import PolicyConfig, load_policy

logger = logging.getLogger(__name__)

SPEC_KINDS = ("random", "mcts-N", "cfr-N", "run:PATH[:AGENT]", "hf:PATH")


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


def _fixed_ok(spec: str) -> bool:
    import re

    return re.fullmatch(r"(random|mcts[-_]?\d*|cfr[-_]?\d*)", spec.strip().lower()) is not None


def _runs(pattern: str) -> list[Path]:
    """Run directories (holding config.yaml) matching a path or glob, oldest first by modification time."""
    import glob

    hits = [Path(p) for p in glob.glob(pattern)] if glob.has_magic(pattern) else [Path(pattern)]
    hits = [p for p in hits if (p / "config.yaml").is_file()]
    return sorted(hits, key=lambda p: (p.stat().st_mtime, str(p)))


def run_player(spec: str, cfg: TournamentConfig) -> tuple[str, Player]:
    """``run:PATH[:AGENT]`` -> (display name, LLM player with the run's latest weights and settings)."""
    from games.selfplay import SelfPlayConfig
    from games.selfplay_env import llm_player
    from marl.agent import Agent
    from marl.config import load_config, peek_yaml_key

    body = spec[len("run:") :]
    path, agent_name = body, None
    if not _runs(path) and ":" in body:
        path, agent_name = body.rsplit(":", 1)
    found = _runs(path)
    if not found:
        raise FileNotFoundError(
            f"{spec}: no run directory (with config.yaml) matches {path!r}; train it first"
        )
    path = found[-1]
    saved = path / "config.yaml"
    recipe = peek_yaml_key(saved, "recipe")
    if recipe != "selfplay":
        raise ValueError(f"{spec}: run {path} is a {recipe!r} run; only selfplay runs play games")
    run_cfg = load_config(SelfPlayConfig, [saved])
    if agent_name is None:
        if len(run_cfg.agents) != 1:
            raise ValueError(
                f"{spec}: the run has agents {sorted(run_cfg.agents)}; name one as run:PATH:AGENT"
            )
        agent_name = next(iter(run_cfg.agents))
    if agent_name not in run_cfg.agents:
        raise ValueError(f"{spec}: no agent {agent_name!r} in the run; agents: {sorted(run_cfg.agents)}")
    if (run_cfg.game.name, run_cfg.game.backend) != (cfg.game.name, cfg.game.backend):
        raise ValueError(
            f"{spec}: the run trained on {run_cfg.game.backend}:{run_cfg.game.name}, this tournament plays "
            f"{cfg.game.backend}:{cfg.game.name}"
        )
    latest = path / "checkpoints" / "latest"
    if not latest.is_file():
        raise FileNotFoundError(f"{spec}: no checkpoint in {path / 'checkpoints'}; train the run first")
    weights = path / "checkpoints" / latest.read_text().strip() / "agents" / agent_name / "model.safetensors"
    acfg = run_cfg.agents[agent_name]
    cache = cfg.cache_dir or run_cfg.run.cache_dir or path.parent / ".cache"
    agent = Agent(agent_name, acfg, cache_dir=cache, total_steps=1, seed=0)
    load_model(agent.model, str(weights), strict=True)
    agent.model.eval()
    name = f"{path.name}/{agent_name}"
    return name, llm_player(name, agent, run_cfg.prompt, greedy=cfg.greedy)


def hf_player(spec: str, cfg: TournamentConfig) -> tuple[str, Player]:
    """``hf:PATH`` -> (display name, LLM player over that Hugging Face model directory)."""
    path = spec[len("hf:") :]
    policy = load_policy(PolicyConfig(path=path), cfg.cache_dir or ".")
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
    """Display name -> player for every spec of the config (names must come out distinct)."""
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
    logger.info("tournament of %d players in %.1fs -> %s", len(players), time.perf_counter() - t0, out)
    return result, out


def run(cfg: TournamentConfig) -> str:
    """The ``marl tournament`` command: play, write the reports, return the summary to print."""
    result, out = run_tournament(cfg)
    return (
        f"{result.to_markdown()}\nreports: {out / 'tournament.md'}  {out / 'tournament.json'}  "
        f"{out / 'tournament.png'}"
    )


Config = TournamentConfig
