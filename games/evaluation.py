"""Evaluating game-playing agents: scheduled games against fixed opponents (win/draw/loss, a
Bradley-Terry Elo) and the round robin after training (markdown, JSON and PNG reports)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from games.arena import play_games, round_robin
from games.opponents import Player
from games.parsing import InvalidActionConfig
from games.ratings import fit_bradley_terry
from games.selfplay_env import PromptSettings, llm_player, make_fixed
from games.text import GameConfig
from marl.agent import Agent
from marl.seeding import derive_seed

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Games against fixed opponents on the run's eval schedule (logged as eval/AGENT/OPP/...)."""

    opponents: list[str] = field(default_factory=lambda: ["random"])
    """Fixed opponents: 'random', 'mcts-N', 'cfr-N'."""
    games_per_seat: int = 100
    """Games per opponent with the agent in each seat."""
    greedy: bool = True
    """Agents play their most likely action (else they sample with their training temperature)."""


@dataclass
class FinalTournamentConfig:
    """The round robin played after the last step: markdown, JSON and PNG in the run directory."""

    opponents: list[str] = field(default_factory=lambda: ["random"])
    """Fixed opponents joining the agents: 'random', 'mcts-N', 'cfr-N' (empty list: no tournament)."""
    games_per_pair: int = 400
    """Games per pairing (even: half with each player in seat 0)."""
    greedy: bool = True
    """Agents play their most likely action."""


def evaluate(
    agents: Mapping[str, Agent],
    cfg: EvalConfig,
    *,
    game: GameConfig,
    prompt: PromptSettings,
    invalid: InvalidActionConfig,
    seed: int,
    cfr_cache: dict[str, Player] | None = None,
) -> dict[str, float]:
    """Each agent against each fixed opponent, ``games_per_seat`` games in each seat.

    Logs ``eval/AGENT/OPP/{win,draw,loss,nonloss,invalid}`` and ``games/elo/AGENT``: a Bradley–Terry fit
    over these games (1 virtual draw per pair) with the first opponent at 0.
    """
    metrics: dict[str, float] = {}
    opp_specs = list(cfg.opponents)
    names = list(agents) + opp_specs
    A = len(names)
    wins, draws = np.zeros((A, A)), np.zeros((A, A))
    n = cfg.games_per_seat
    for i, (name, agent) in enumerate(agents.items()):
        llm = llm_player(name, agent, prompt, greedy=cfg.greedy)
        for k, spec in enumerate(opp_specs):
            j = len(agents) + k
            w = d = lo = inv = 0.0
            for seat in range(2):
                s = derive_seed(seed, "eval", name, spec, seat)
                opp = make_fixed(spec, game, s, cfr_cache)
                seated = [llm, opp] if seat == 0 else [opp, llm]
                recs = play_games(game, seated, n, seed=s, invalid=invalid)
                for r in recs:
                    sc = r.score(seat)
                    w += sc == 1.0
                    d += sc == 0.5
                    lo += sc == 0.0
                    inv += sum(1 for st, _ in r.invalid if st == seat)
            total = 2 * n
            metrics[f"eval/{name}/{spec}/win"] = w / total
            metrics[f"eval/{name}/{spec}/draw"] = d / total
            metrics[f"eval/{name}/{spec}/loss"] = lo / total
            metrics[f"eval/{name}/{spec}/nonloss"] = (w + d) / total
            metrics[f"eval/{name}/{spec}/invalid"] = inv / total
            wins[i, j], wins[j, i] = w, lo
            draws[i, j] = draws[j, i] = d
    if opp_specs:
        elo = fit_bradley_terry(wins, draws, prior_draws=1.0, base=0.0, anchor=len(agents))
        for i, name in enumerate(agents):
            metrics[f"games/elo/{name}"] = float(elo[i])
    return metrics


def final_tournament(
    agents: Mapping[str, Agent],
    cfg: FinalTournamentConfig,
    *,
    game: GameConfig,
    prompt: PromptSettings,
    invalid: InvalidActionConfig,
    seed: int,
    out_dir: Path,
    cfr_cache: dict[str, Player] | None = None,
) -> dict[str, float]:
    """Round robin of the agents and ``cfg.opponents``; writes tournament.{md,json,png} to ``out_dir``."""
    if not cfg.opponents:
        return {}
    seed = derive_seed(seed, "final")
    players: dict[str, Player] = {n: llm_player(n, a, prompt, greedy=cfg.greedy) for n, a in agents.items()}
    for spec in cfg.opponents:
        players[spec] = make_fixed(spec, game, derive_seed(seed, spec), cfr_cache)
    result = round_robin(game, players, cfg.games_per_pair, seed=seed, invalid=invalid)
    md = result.to_markdown()
    (out_dir / "tournament.md").write_text(md)
    result.to_json(out_dir / "tournament.json")
    result.plot(out_dir / "tournament.png")
    logger.info("final tournament (%s):\n%s", out_dir / "tournament.md", md)
    metrics: dict[str, float] = {}
    for i, name in enumerate(result.names):
        if name not in agents:
            continue
        metrics[f"games/elo/final/{name}"] = float(result.elo[i])
        for j, other in enumerate(result.names):
            if j != i and other not in agents:
                w, d, lo = result.wdl(i, j)
                total = max(w + d + lo, 1)
                metrics[f"eval/final/{name}/{other}/nonloss"] = (w + d) / total
                metrics[f"eval/final/{name}/{other}/win"] = w / total
        metrics[f"eval/final/{name}/invalid"] = float(result.invalid_outputs.get(name, 0))
    return metrics
