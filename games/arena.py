"""Batched play between any players, round-robin tournaments, and their reports (markdown, JSON, PNG).

``play`` is the game engine every scenario shares: it advances all games together; each round it
gathers every pending decision, groups them by player object (so one LLM sitting in both seats of
self-play gets one batched call), calls ``act`` once per player, parses each output with
``parse_action`` and applies it. Unparseable output follows ``InvalidActionConfig``: retry (ask again
next round) or forfeit (offender gets the penalty, the opponent the win). A misbehaving model can lose
games; it cannot crash the run. A hook sees every batch of decisions before it is applied (self-play
records its learners' decisions into the turn tree there). ``play_games`` plays ``n`` seeded games
between fixed seats.

``round_robin`` plays every pairing equally often in both seats (the two halves share game seeds,
so chance games such as poker are dealt identically with the seats swapped), then fits Bradley–Terry
Elo ratings with bootstrap confidence intervals (``games.ratings``).

Shape legend: ``B`` games, ``A`` players of a tournament.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.opponents import Player
from games.parsing import InvalidActionConfig, forfeit_returns, parse_action
from games.ratings import bootstrap_ci, fit_bradley_terry
from games.text import GameConfig, TextGame, make_game

logger = logging.getLogger(__name__)

RAW_KEEP = 200  # characters of an invalid output kept in the record


@dataclass
class GameRecord:
    """One finished game: who sat where, what was played, what went wrong, the final returns."""

    seed: int
    seats: list[str]  # player name per seat
    returns: list[float] = field(default_factory=list)
    moves: list[tuple[int, str]] = field(default_factory=list)  # (seat, action) in order
    invalid: list[tuple[int, str]] = field(
        default_factory=list
    )  # (seat, output[:RAW_KEEP]) per invalid output
    forfeit: int = -1  # seat that forfeited, -1 if the game ended by its rules
    num_decisions: int = 0  # outputs requested, invalid ones included
    stats: dict[str, list[float]] = field(default_factory=dict)  # per-seat game statistics (``stats()``)

    def score(self, seat: int) -> float:
        """1 for a win (strictly best return), 0.5 for a draw (tied best), 0 for a loss. In a one-player
        game (blackjack) the house is the other side: a positive return wins, 0 draws, a negative loses."""
        mine = self.returns[seat]
        best_other = max((r for s, r in enumerate(self.returns) if s != seat), default=0.0)
        return 1.0 if mine > best_other else 0.5 if mine == best_other else 0.0


def _seeds(seed: int, n: int) -> list[int]:
    return [int(s) for s in np.random.default_rng([seed, 0]).integers(0, 2**31 - 1, size=n)]


TurnHook = Callable[[Player, list[int], list[int], list[str], list[str | None]], None]
"""``hook(player, games, seats, outputs, actions)``: called after each batched ``act`` with the game
indices, the seats, the raw outputs and their parsed actions (None = invalid), before any is
applied, so the games still show the states the player saw."""


def play(
    games: Sequence[TextGame],
    seats: Sequence[Sequence[Player]],
    rng: np.random.Generator,
    invalid: InvalidActionConfig | None = None,
    *,
    on_turns: TurnHook | None = None,
) -> list[GameRecord]:
    """Play the games to the end, all advancing together (mutates them); one record per game.

    ``seats[b][p]`` is the player in seat ``p`` of game ``b``. Each round gathers every active
    game's pending decision and groups them by player object, so one player answers all of its
    pending decisions in one ``act`` call (a learner in both seats of self-play included); each
    output goes through ``parse_action`` (never raises, never returns an illegal action), then
    ``invalid``'s rule: retry (ask again next round) or forfeit (offender gets the penalty, the
    others share its opposite). A misbehaving player can lose games; it cannot crash the run.
    ``on_turns`` sees every batch of decisions (see ``TurnHook``): self-play records a learner's
    decisions into its turn tree there.
    """
    invalid = invalid or InvalidActionConfig()
    records = [
        GameRecord(seed=getattr(g, "seed", -1), seats=[p.name for p in seats[b]]) for b, g in enumerate(games)
    ]
    for b, g in enumerate(games):
        if len(seats[b]) != g.num_players:
            raise ValueError(
                f"{g.name} has {g.num_players} seats but game {b} was given {len(seats[b])} players; "
                "pass one player per seat"
            )
    attempts = [0] * len(games)
    active = [b for b in range(len(games)) if not games[b].is_terminal()]
    while active:
        groups: dict[int, list[int]] = {}  # id(player) -> game indices, in game order
        for b in active:
            groups.setdefault(id(seats[b][games[b].current_player()]), []).append(b)
        done: set[int] = set()
        for idx in groups.values():
            turn_seats = [games[b].current_player() for b in idx]
            player = seats[idx[0]][turn_seats[0]]
            legal = [games[b].legal_actions() for b in idx]
            outputs = player.act([games[b] for b in idx], turn_seats, rng)
            if len(outputs) != len(idx):
                raise ValueError(
                    f"player {player.name!r} returned {len(outputs)} outputs for {len(idx)} decisions"
                )
            actions = [parse_action(raw, ok) for raw, ok in zip(outputs, legal)]
            if on_turns is not None:
                on_turns(player, idx, turn_seats, list(outputs), actions)
            for b, seat, raw, action in zip(idx, turn_seats, outputs, actions):
                g, rec = games[b], records[b]
                rec.num_decisions += 1
                if action is None:
                    rec.invalid.append((seat, str(raw)[:RAW_KEEP]))
                    attempts[b] += 1
                    if attempts[b] >= invalid.max_attempts:
                        rec.forfeit = seat
                        rec.returns = forfeit_returns(g.num_players, seat, invalid.penalty)
                        done.add(b)
                    continue
                attempts[b] = 0
                g.apply(action)
                rec.moves.append((seat, action))
                if g.is_terminal():
                    rec.returns = g.returns()
                    rec.stats = game_stats(g)
                    done.add(b)
        active = [b for b in active if b not in done]
    for b, g in enumerate(games):
        if not records[b].returns:  # terminal from the start
            records[b].returns = g.returns()
    return records


def game_stats(game: TextGame) -> dict[str, list[float]]:
    """Per-seat statistics a game reports about a finished episode (the social dilemmas' ``coop``
    rate), from its optional ``stats()``; ``{}`` for games without one."""
    fn = getattr(game, "stats", None)
    return dict(fn()) if callable(fn) else {}


def play_games(
    game_cfg: GameConfig | str,
    players: Sequence[Player],
    n_games: int,
    seed: int = 0,
    invalid: InvalidActionConfig | None = None,
) -> list[GameRecord]:
    """Play ``n_games`` (B) games, ``players[s]`` in seat s, all advancing together; one record per game.

    Game b is ``make_game(game_cfg, seeds[b])`` with seeds drawn from ``seed``; players' randomness
    comes from one generator also derived from ``seed``, so the same seed replays the same games.
    """
    if n_games < 0:
        raise ValueError(f"n_games must be >= 0, got {n_games}")
    seeds = _seeds(seed, n_games)
    games = [make_game(game_cfg, s) for s in seeds]
    if games and len(players) != games[0].num_players:
        raise ValueError(
            f"{games[0].name} has {games[0].num_players} seats but {len(players)} players were given; "
            f"pass one player per seat"
        )
    t0 = time.perf_counter()
    records = play(games, [players] * n_games, np.random.default_rng([seed, 1]), invalid)
    for rec, s in zip(records, seeds):
        rec.seed = s
    decisions = sum(r.num_decisions for r in records)
    dt = time.perf_counter() - t0
    logger.info(
        "played %d games, %d decisions, %.0f decisions/s", n_games, decisions, decisions / max(dt, 1e-9)
    )
    return records


@dataclass
class TournamentResult:
    """Cross-table and ratings of a round robin. ``wins[i, j]``: games i won against j."""

    game: str
    names: list[str]
    games_per_pair: int
    wins: np.ndarray  # (A, A)
    draws: np.ndarray  # (A, A), symmetric
    mean_return: np.ndarray  # (A, A) mean return of i against j
    elo: np.ndarray  # (A,)
    elo_lo: np.ndarray  # (A,)
    elo_hi: np.ndarray  # (A,)
    alpha: float = 0.05
    prior_draws: float = 1.0
    first_seat_score: float = 0.5  # points won by seat 0 over all games (1 win, 0.5 draw)
    invalid_outputs: dict[str, int] = field(default_factory=dict)
    forfeits: dict[str, int] = field(default_factory=dict)

    def wdl(self, i: int, j: int) -> tuple[int, int, int]:
        """(wins, draws, losses) of player i against player j."""
        return int(self.wins[i, j]), int(self.draws[i, j]), int(self.wins[j, i])

    def totals(self, i: int) -> tuple[int, int, int]:
        return int(self.wins[i].sum()), int(self.draws[i].sum()), int(self.wins[:, i].sum())

    def order(self) -> list[int]:
        return sorted(range(len(self.names)), key=lambda i: -self.elo[i])

    def to_dict(self) -> dict[str, Any]:
        A = len(self.names)
        return {
            "game": self.game,
            "games_per_pair": self.games_per_pair,
            "alpha": self.alpha,
            "prior_draws": self.prior_draws,
            "first_seat_score": self.first_seat_score,
            "players": [
                {
                    "name": self.names[i],
                    "elo": float(self.elo[i]),
                    "elo_lo": float(self.elo_lo[i]),
                    "elo_hi": float(self.elo_hi[i]),
                    "wins": self.totals(i)[0],
                    "draws": self.totals(i)[1],
                    "losses": self.totals(i)[2],
                    "invalid_outputs": self.invalid_outputs.get(self.names[i], 0),
                    "forfeits": self.forfeits.get(self.names[i], 0),
                }
                for i in self.order()
            ],
            "cross_table": {
                self.names[i]: {
                    self.names[j]: dict(
                        zip(("w", "d", "l"), self.wdl(i, j)), mean_return=float(self.mean_return[i, j])
                    )
                    for j in range(A)
                    if j != i
                }
                for i in range(A)
            },
        }

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def to_markdown(self) -> str:
        conf = int(round(100 * (1 - self.alpha)))
        lines = [
            f"## Tournament: {self.game}",
            "",
            f"{self.games_per_pair} games per pairing, half in each seat; Elo from a Bradley-Terry fit "
            f"(draws = half a win, {self.prior_draws:g} virtual draw(s) per pair), {conf}% bootstrap CI; "
            f"seat 0 scored {self.first_seat_score:.3f}.",
            "",
            f"| rank | player | Elo | {conf}% CI | W | D | L |",
            "|---:|---|---:|---|---:|---:|---:|",
        ]
        for rank, i in enumerate(self.order(), 1):
            w, d, l = self.totals(i)
            lines.append(
                f"| {rank} | {self.names[i]} | {self.elo[i]:.0f} "
                f"| [{self.elo_lo[i]:.0f}, {self.elo_hi[i]:.0f}] | {w} | {d} | {l} |"
            )
        order = self.order()
        lines += ["", "Cross-table (row against column, W/D/L):", ""]
        lines.append("| | " + " | ".join(self.names[j] for j in order) + " |")
        lines.append("|---|" + "---|" * len(order))
        for i in order:
            cells = ["—" if i == j else "/".join(map(str, self.wdl(i, j))) for j in order]
            lines.append(f"| {self.names[i]} | " + " | ".join(cells) + " |")
        lines += ["", "Mean return of row against column:", ""]
        lines.append("| | " + " | ".join(self.names[j] for j in order) + " |")
        lines.append("|---|" + "---|" * len(order))
        for i in order:
            cells = ["—" if i == j else f"{self.mean_return[i, j]:.2f}" for j in order]
            lines.append(f"| {self.names[i]} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | os.PathLike) -> None:
        """PNG: score-rate heatmap with W/D/L labels, and Elo with its confidence interval."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = self.order()
        A = len(order)
        games = self.wins + self.wins.T + self.draws
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(games > 0, (self.wins + 0.5 * self.draws) / games, np.nan)
        rate = rate[np.ix_(order, order)]
        labels = [self.names[i] for i in order]
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(5 + 1.6 * A, 1.5 + 0.7 * A))
        im = ax0.imshow(rate, vmin=0, vmax=1, cmap="RdYlGn")
        for r, i in enumerate(order):
            for c, j in enumerate(order):
                if i != j:
                    ax0.text(c, r, "/".join(map(str, self.wdl(i, j))), ha="center", va="center", fontsize=8)
        ax0.set_xticks(range(A), labels, rotation=45, ha="right")
        ax0.set_yticks(range(A), labels)
        ax0.set_title(f"{self.game}: score of row vs column (W/D/L)")
        fig.colorbar(im, ax=ax0, fraction=0.046)
        y = np.arange(A)
        elo = self.elo[order]
        # a bootstrap interval need not contain the point estimate; draw the part that reaches past it
        err = np.clip(np.vstack([elo - self.elo_lo[order], self.elo_hi[order] - elo]), 0.0, None)
        ax1.errorbar(elo, y, xerr=err, fmt="o", capsize=4)
        ax1.set_yticks(y, labels)
        ax1.invert_yaxis()
        ax1.set_xlabel(f"Elo ({int(round(100 * (1 - self.alpha)))}% bootstrap CI)")
        ax1.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def plot_mean_returns(result: TournamentResult, path: str | os.PathLike) -> None:
    """PNG: the payoff matrix of a round robin, the mean return of row against column, annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = result.order()
    A = len(order)
    m = result.mean_return[np.ix_(order, order)].astype(float)
    m[np.eye(A, dtype=bool)] = np.nan
    labels = [result.names[i] for i in order]
    fig, ax = plt.subplots(figsize=(3 + 1.1 * A, 2 + 0.8 * A))
    im = ax.imshow(m, cmap="viridis")
    for r in range(A):
        for c in range(A):
            if r != c:
                ax.text(c, r, f"{m[r, c]:.1f}", ha="center", va="center", fontsize=8, color="w")
    ax.set_xticks(range(A), labels, rotation=45, ha="right")
    ax.set_yticks(range(A), labels)
    ax.set_title(f"{result.game}: mean return of row against column")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def round_robin(
    game_cfg: GameConfig | str,
    players: dict[str, Player],
    games_per_pair: int,
    seed: int = 0,
    invalid: InvalidActionConfig | None = None,
    n_boot: int = 1000,
    prior_draws: float = 1.0,
    alpha: float = 0.05,
    anchor: str | None = None,
    base: float = 1000.0,
) -> TournamentResult:
    """Every pairing plays ``games_per_pair`` games (even; half with each player in seat 0), then Elo + CIs.

    Two-player games only. Ratings have mean ``base`` or put player ``anchor`` at ``base``.
    """
    names = list(players)
    A = len(names)
    if A < 2:
        raise ValueError(f"a round robin needs at least 2 players, got {names}")
    if games_per_pair < 2 or games_per_pair % 2:
        raise ValueError(
            f"games_per_pair ({games_per_pair}) must be even and >= 2 so both seats play equally"
        )
    if anchor is not None and anchor not in players:
        raise ValueError(f"anchor {anchor!r} is not a player; players: {names}")
    probe = make_game(game_cfg, 0)
    if probe.num_players != 2:
        raise ValueError(f"round_robin needs a two-player game; {probe.name} has {probe.num_players} players")
    half = games_per_pair // 2
    wins = np.zeros((A, A))
    draws = np.zeros((A, A))
    ret_sum = np.zeros((A, A))
    seat0_points = 0.0
    n_played = 0
    invalid_outputs = dict.fromkeys(names, 0)
    forfeits = dict.fromkeys(names, 0)
    game_name = game_cfg if isinstance(game_cfg, str) else game_cfg.name
    for i in range(A):
        for j in range(i + 1, A):
            pair_seed = int(np.random.default_rng([seed, i, j]).integers(2**31 - 1))
            for seat_order in ((i, j), (j, i)):
                seated = [players[names[k]] for k in seat_order]
                records = play_games(game_cfg, seated, half, seed=pair_seed, invalid=invalid)
                for rec in records:
                    a, b = seat_order
                    s = rec.score(0)
                    if s == 1.0:
                        wins[a, b] += 1
                    elif s == 0.0:
                        wins[b, a] += 1
                    else:
                        draws[a, b] += 1
                        draws[b, a] += 1
                    ret_sum[a, b] += rec.returns[0]
                    ret_sum[b, a] += rec.returns[1]
                    seat0_points += s
                    n_played += 1
                    for seat, _ in rec.invalid:
                        invalid_outputs[names[seat_order[seat]]] += 1
                    if rec.forfeit >= 0:
                        forfeits[names[seat_order[rec.forfeit]]] += 1
    anchor_idx = None if anchor is None else names.index(anchor)
    elo = fit_bradley_terry(wins, draws, prior_draws=prior_draws, base=base, anchor=anchor_idx)
    lo, hi = bootstrap_ci(
        wins,
        draws,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        prior_draws=prior_draws,
        base=base,
        anchor=anchor_idx,
    )
    off = 1 - np.eye(A)
    result = TournamentResult(
        game=game_name,
        names=names,
        games_per_pair=games_per_pair,
        wins=wins,
        draws=draws,
        mean_return=ret_sum / games_per_pair * off,
        elo=elo,
        elo_lo=lo,
        elo_hi=hi,
        alpha=alpha,
        prior_draws=prior_draws,
        first_seat_score=seat0_points / max(n_played, 1),
        invalid_outputs=invalid_outputs,
        forfeits=forfeits,
    )
    logger.info("tournament %s: %s", game_name, {names[k]: round(float(elo[k])) for k in range(A)})
    return result
