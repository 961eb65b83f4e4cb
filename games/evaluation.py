"""Evaluating game-playing agents: scheduled games against fixed opponents (win/draw/loss, a
Bradley-Terry Elo) and the round robin after training (markdown, JSON and PNG reports)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from games.arena import play_games, plot_mean_returns, round_robin
from games.opponents import Player
from games.parsing import InvalidActionConfig
from games.ratings import fit_bradley_terry
from games.selfplay_env import PromptSettings, llm_player, make_fixed
from games.text import GameConfig, num_players
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


@dataclass
class MatchSettings:
    """What every evaluation game of a run shares: the game, how LLM players see a decision, the rule
    for invalid outputs, and a cache of solved CFR opponents (expensive to rebuild)."""

    game: GameConfig
    prompt: PromptSettings
    invalid: InvalidActionConfig
    cfr_cache: dict[str, Player] | None = None


def evaluate(
    agents: Mapping[str, Agent],
    cfg: EvalConfig,
    match: MatchSettings,
    *,
    seed: int,
) -> dict[str, float]:
    """Each agent against each fixed opponent, ``games_per_seat`` games in each seat (the opponent in
    every other seat of a game of more than two).

    Logs ``eval/AGENT/OPP/{win,draw,loss,nonloss,invalid,return,opp_return}`` (returns: the agent's and
    the opponents' mean), each per-seat statistic the game reports (``stats()``: the dilemmas' ``coop``
    and ``opp_coop``), and ``games/elo/AGENT``: a Bradley–Terry fit
    over these games (1 virtual draw per pair) with the first opponent at 0. A one-player game has no
    opponent: ``eval/AGENT/solo/{return,win,draw,loss,invalid}`` over ``games_per_seat`` games, and the
    same for each fixed player of ``cfg.opponents`` as a reference (``eval/reference/OPP/...``).
    """
    game, prompt, invalid, cfr_cache = match.game, match.prompt, match.invalid, match.cfr_cache
    if num_players(game) == 1:
        return solo_scores(
            agents,
            list(cfg.opponents),
            cfg.games_per_seat,
            cfg.greedy,
            "eval",
            match,
            seed=seed,
        )
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
            w = d = lo = inv = ret = opp_ret = 0.0
            stats: dict[str, float] = {}
            seats = num_players(game)
            for seat in range(seats):
                s = derive_seed(seed, "eval", name, spec, seat)
                opp = make_fixed(spec, game, s, cfr_cache)
                seated: list[Player] = [opp] * seats
                seated[seat] = llm
                recs = play_games(game, seated, n, seed=s, invalid=invalid)
                for r in recs:
                    ret += r.returns[seat]
                    opp_ret += float(np.mean([x for k, x in enumerate(r.returns) if k != seat]))
                    for key, per_seat in r.stats.items():
                        stats[key] = stats.get(key, 0.0) + per_seat[seat]
                        others = [x for k, x in enumerate(per_seat) if k != seat]
                        stats[f"opp_{key}"] = stats.get(f"opp_{key}", 0.0) + float(np.mean(others))
                    sc = r.score(seat)
                    w += sc == 1.0
                    d += sc == 0.5
                    lo += sc == 0.0
                    inv += sum(1 for st, _ in r.invalid if st == seat)
            total = seats * n
            metrics[f"eval/{name}/{spec}/win"] = w / total
            metrics[f"eval/{name}/{spec}/draw"] = d / total
            metrics[f"eval/{name}/{spec}/loss"] = lo / total
            metrics[f"eval/{name}/{spec}/nonloss"] = (w + d) / total
            metrics[f"eval/{name}/{spec}/invalid"] = inv / total
            metrics[f"eval/{name}/{spec}/return"] = ret / total
            metrics[f"eval/{name}/{spec}/opp_return"] = opp_ret / total
            for key, v in stats.items():  # per-seat game statistics (dilemmas: coop, opp_coop)
                metrics[f"eval/{name}/{spec}/{key}"] = v / total
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
    match: MatchSettings,
    *,
    seed: int,
    out_dir: Path,
) -> dict[str, float]:
    """Round robin of the agents and ``cfg.opponents``; writes tournament.{md,json,png} and the payoff
    matrix tournament_returns.png to ``out_dir``.
    In a one-player game: every agent's and every fixed player's score over ``games_per_pair`` games
    of its own (tournament.{md,json}), the fixed players' scores the reference."""
    game, prompt, invalid, cfr_cache = match.game, match.prompt, match.invalid, match.cfr_cache
    if not cfg.opponents:
        return {}
    seed = derive_seed(seed, "final")
    if num_players(game) == 1:
        metrics = solo_scores(
            agents,
            list(cfg.opponents),
            cfg.games_per_pair,
            cfg.greedy,
            "eval/final",
            match,
            seed=seed,
        )
        write_solo_table(metrics, game.name, cfg.games_per_pair, out_dir)
        return metrics
    players: dict[str, Player] = {n: llm_player(n, a, prompt, greedy=cfg.greedy) for n, a in agents.items()}
    for spec in cfg.opponents:
        players[spec] = make_fixed(spec, game, derive_seed(seed, spec), cfr_cache)
    result = round_robin(game, players, cfg.games_per_pair, seed=seed, invalid=invalid)
    md = result.to_markdown()
    (out_dir / "tournament.md").write_text(md)
    result.to_json(out_dir / "tournament.json")
    result.plot(out_dir / "tournament.png")
    plot_mean_returns(result, out_dir / "tournament_returns.png")
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
                metrics[f"eval/final/{name}/{other}/return"] = float(result.mean_return[i, j])
                metrics[f"eval/final/{name}/{other}/opp_return"] = float(result.mean_return[j, i])
        metrics[f"eval/final/{name}/invalid"] = float(result.invalid_outputs.get(name, 0))
    return metrics


def solo_scores(
    agents: Mapping[str, Agent],
    references: list[str],
    n: int,
    greedy: bool,
    prefix: str,
    match: MatchSettings,
    *,
    seed: int,
) -> dict[str, float]:
    """A one-player game: each agent plays ``n`` games alone (``{prefix}/AGENT/solo/...``), each fixed
    player of ``references`` too (``{prefix}/reference/SPEC/...``): mean return, win / draw / loss
    (the sign of the return, ``GameRecord.score``) and invalid outputs per game."""
    game, prompt, invalid, cfr_cache = match.game, match.prompt, match.invalid, match.cfr_cache
    players: list[tuple[str, Player]] = [
        (f"{n_}/solo", llm_player(n_, a, prompt, greedy=greedy)) for n_, a in agents.items()
    ]
    players += [
        (f"reference/{spec}", make_fixed(spec, game, derive_seed(seed, "solo", spec), cfr_cache))
        for spec in references
    ]
    metrics: dict[str, float] = {}
    for key, player in players:
        recs = play_games(game, [player], n, seed=derive_seed(seed, "solo", key), invalid=invalid)
        scores = np.array([r.score(0) for r in recs])
        metrics[f"{prefix}/{key}/return"] = float(np.mean([r.returns[0] for r in recs]))
        metrics[f"{prefix}/{key}/win"] = float((scores == 1.0).mean())
        metrics[f"{prefix}/{key}/draw"] = float((scores == 0.5).mean())
        metrics[f"{prefix}/{key}/loss"] = float((scores == 0.0).mean())
        metrics[f"{prefix}/{key}/invalid"] = float(sum(len(r.invalid) for r in recs)) / max(n, 1)
    return metrics


def write_solo_table(metrics: Mapping[str, float], game: str, n: int, out_dir: Path) -> None:
    """tournament.md / tournament.json of a one-player game's final scores, best mean return first."""
    rows = {}
    for k, v in metrics.items():
        head, _, stat = k.rpartition("/")
        rows.setdefault(head.split("/", 2)[-1], {})[stat] = v
    order = sorted(rows, key=lambda r: -rows[r]["return"])
    lines = [
        f"## Scores: {game} (one player, {n} games each; reference = a fixed player)",
        "",
        "| rank | player | mean return | win | draw | loss | invalid / game |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(order, 1):
        m = rows[r]
        stats = " | ".join(f"{m[k]:.3f}" for k in ("return", "win", "draw", "loss"))
        lines.append(f"| {i} | {r} | {stats} | {m['invalid']:.2f} |")
    md = "\n".join(lines) + "\n"
    (out_dir / "tournament.md").write_text(md)
    (out_dir / "tournament.json").write_text(
        json.dumps({"game": game, "games_each": n, "players": rows}, indent=2)
    )
    logger.info("final scores (%s):\n%s", out_dir / "tournament.md", md)
