"""Non-LLM players: uniform random, OpenSpiel MCTS, a CFR average policy cached on disk, and the fixed
strategies of the social dilemmas (``games.dilemmas.STRATEGIES``: always-cooperate, always-defect,
tit-for-tat, grim-trigger, honest, fair).

Every player implements the batched ``Player`` protocol: ``act(games, players, rng)`` returns one
output string per pending decision. LLM players implement the same protocol elsewhere and may return
free text; ``arena.play_games`` parses every output.

MCTS and CFR need the OpenSpiel state behind a game: ``OpenSpielGame`` exposes it directly, and
``PettingZooGame`` replays its moves into the OpenSpiel twin where one exists (tic-tac-toe, connect
four); anything else raises an error that names the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from games.text import TextGame

logger = logging.getLogger(__name__)

DEFAULT_CFR_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "marl-tree", "cfr")


@runtime_checkable
class Player(Protocol):
    """A batched player: one output per (game, seat) pair, all in one call."""

    name: str

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        """Outputs for ``players[i]`` to act in ``games[i]`` (``players[i]`` is the player to act)."""
        ...


class RandomPlayer:
    """Uniformly random legal action, drawn from the ``rng`` passed to ``act``."""

    def __init__(self, name: str = "random") -> None:
        self.name = name

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        out = []
        for g in games:
            legal = g.legal_actions()
            out.append(legal[int(rng.integers(len(legal)))])
        return out


def _openspiel_view(game: TextGame, who: str):
    get = getattr(game, "openspiel_state", None)
    if get is None:
        raise ValueError(
            f"{who} needs an OpenSpiel state, and {type(game).__name__} "
            f"{getattr(game, 'name', '?')!r} has none; play the OpenSpiel version of the game "
            f"(backend='openspiel')"
        )
    return get()


class MCTSPlayer:
    """OpenSpiel's ``MCTSBot`` (UCT, random-rollout evaluator, solver on) with ``num_simulations`` per move.

    Kocsis & Szepesvári 2006 (UCT): child score Q/N + uct_c·sqrt(ln N_parent / N). Perfect-information
    games only (MCTS on the true state would see hidden cards); use ``CFRPlayer`` for poker.
    Deterministic given ``seed`` and the sequence of calls; the ``rng`` of ``act`` is not used.
    """

    def __init__(
        self,
        num_simulations: int = 400,
        seed: int = 0,
        uct_c: float = 2.0,
        n_rollouts: int = 1,
        name: str | None = None,
    ) -> None:
        if num_simulations < 1:
            raise ValueError(f"MCTSPlayer.num_simulations must be >= 1, got {num_simulations}")
        self.num_simulations = int(num_simulations)
        self.uct_c = float(uct_c)
        self.n_rollouts = int(n_rollouts)
        self.name = name or f"mcts{self.num_simulations}"
        self._random_state = np.random.RandomState(seed)
        self._bots: dict[str, Any] = {}

    def _bot(self, state):
        import pyspiel
        from open_spiel.python.algorithms import mcts

        game = state.get_game()
        key = str(game)
        if key not in self._bots:
            info = game.get_type().information
            if info != pyspiel.GameType.Information.PERFECT_INFORMATION:
                raise ValueError(
                    f"MCTSPlayer needs a perfect-information game, {game.get_type().short_name} is not "
                    f"(MCTS would read hidden cards); use CFRPlayer or RandomPlayer for it"
                )
            evaluator = mcts.RandomRolloutEvaluator(self.n_rollouts, self._random_state)
            self._bots[key] = mcts.MCTSBot(
                game, self.uct_c, self.num_simulations, evaluator, solve=True, random_state=self._random_state
            )
        return self._bots[key]

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        out = []
        for g in games:
            state = _openspiel_view(g, "MCTSPlayer")
            action = self._bot(state).step(state)
            out.append(g.action_from_openspiel(int(action)))
        return out


def _cache_path(
    cache_dir: str | os.PathLike, game_name: str, params: dict[str, Any], iterations: int
) -> Path:
    tag = "".join(f"_{k}-{v}" for k, v in sorted(params.items()))
    tag = re.sub(r"[^\w.-]", "", tag)
    return Path(cache_dir) / f"{game_name}{tag}_cfr{iterations}.json"


def cfr_average_policy(
    game_name: str,
    iterations: int = 1000,
    params: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = DEFAULT_CFR_CACHE,
) -> dict[str, Any]:
    """CFR average policy of an OpenSpiel game, computed once with ``pyspiel.CFRSolver`` and cached as JSON.

    Zinkevich et al. 2007: regret matching at every information set; the *average* strategy converges
    to a Nash equilibrium in two-player zero-sum games, exploitability O(1/sqrt(T)). Returns
    ``{"game", "params", "iterations", "nash_conv", "table": {info_state: {action_id: prob}}}``; the
    file is keyed by game, params and iterations (``cache_dir=None`` disables the cache), and a cached
    file is used only if the game, params and iterations stored inside match too (two params that
    differ only in characters a file name drops share a file name).
    """
    import pyspiel
    from open_spiel.python import policy as os_policy

    from games.openspiel_game import load_openspiel_game

    if iterations < 1:
        raise ValueError(f"CFR iterations must be >= 1, got {iterations}")
    params = dict(params or {})
    path = _cache_path(cache_dir, game_name, params, iterations) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            data = json.loads(path.read_text())
            same = (data.get("game"), data.get("params"), data.get("iterations")) == (
                game_name,
                params,
                iterations,
            )
            if same:
                data["table"] = {k: {int(a): p for a, p in v.items()} for k, v in data["table"].items()}
                logger.info("loaded CFR policy %s", path)
                return data
            logger.warning("CFR cache %s does not match; recomputing", path)
        except (OSError, ValueError, KeyError) as e:
            logger.warning("CFR cache %s unreadable (%s); recomputing", path, e)

    game = load_openspiel_game(game_name, params)
    t0 = time.perf_counter()
    solver = pyspiel.CFRSolver(game)
    for _ in range(iterations):
        solver.evaluate_and_update_policy()
    avg = solver.average_policy()
    table = {}
    for state in os_policy.TabularPolicy(game).states:  # every decision state, one per info set
        table[state.information_state_string()] = {
            int(a): float(p) for a, p in avg.action_probabilities(state).items()
        }
    nash_conv = float(pyspiel.nash_conv(game, avg))
    logger.info(
        "CFR %s x%d: %d info sets, NashConv %.4g, %.1fs",
        game_name,
        iterations,
        len(table),
        nash_conv,
        time.perf_counter() - t0,
    )
    data = {
        "game": game_name,
        "params": params,
        "iterations": iterations,
        "nash_conv": nash_conv,
        "table": table,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f)
        os.replace(f.name, path)
    return data


class CFRPlayer:
    """Samples from the CFR average policy of ``game_name`` (computed once, cached on disk)."""

    def __init__(
        self,
        game_name: str,
        iterations: int = 1000,
        cache_dir: str | os.PathLike | None = DEFAULT_CFR_CACHE,
        params: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.game_name = game_name
        self.iterations = int(iterations)
        self.name = name or f"cfr{self.iterations}"
        data = cfr_average_policy(game_name, self.iterations, params, cache_dir)
        self.table: dict[str, dict[int, float]] = data["table"]
        self.nash_conv: float = data["nash_conv"]

    def action_probabilities(self, info_state: str) -> dict[int, float]:
        if info_state not in self.table:
            raise ValueError(
                f"CFRPlayer({self.game_name!r}) has no policy for information state {info_state[:80]!r}; "
                f"is it playing the game (and params) it was solved for?"
            )
        return self.table[info_state]

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        out = []
        for g, p in zip(games, players):
            if getattr(g, "name", None) != self.game_name:
                raise ValueError(
                    f"CFRPlayer was solved for {self.game_name!r} "
                    f"but asked to play {getattr(g, 'name', '?')!r}"
                )
            state = _openspiel_view(g, "CFRPlayer")
            probs = self.action_probabilities(state.information_state_string(p))
            actions = list(probs)
            weights = np.array([probs[a] for a in actions], dtype=np.float64)
            weights /= weights.sum()
            out.append(g.action_from_openspiel(actions[int(rng.choice(len(actions), p=weights))]))
        return out


OPPONENTS = {"random": RandomPlayer, "mcts": MCTSPlayer, "cfr": CFRPlayer}


def check_opponent(spec: str, game: Any) -> None:
    """``ValueError`` now, not at the first move, when fixed opponent ``spec`` cannot play ``game``.

    ``game`` is a ``games.text.GameConfig``. 'random' plays anything; 'mcts-N' needs a
    perfect-information OpenSpiel game (or a PettingZoo env with an OpenSpiel twin): on hidden cards it
    would read the opponent's hand; 'cfr-N' solves an OpenSpiel game (backend 'openspiel').
    """
    from games.dilemmas import STRATEGIES
    from games.openspiel_game import load_openspiel_game
    from games.pettingzoo_game import OPENSPIEL_TWINS

    if spec.strip().lower() in STRATEGIES:
        if game.backend != "dilemmas":
            raise ValueError(
                f"opponent {spec!r} is a social-dilemma strategy; it plays the 'dilemmas' backend's games, "
                f"not {game.backend}:{game.name}"
            )
        return
    m = re.fullmatch(r"([a-z]+)[-_]?(\d*)", spec.strip().lower())
    if m is None or m.group(1) not in OPPONENTS:
        raise ValueError(
            f"unknown opponent {spec!r}; valid: {sorted(OPPONENTS)} (optionally with '-N'), "
            f"and for the dilemma games {sorted(STRATEGIES)}"
        )
    kind = m.group(1)
    if kind == "random":
        return
    if game.backend == "dilemmas":
        raise ValueError(f"opponent {spec!r} cannot play {game.name!r}: use 'random' or {sorted(STRATEGIES)}")
    if game.backend == "pettingzoo":
        if kind == "cfr" or game.name not in OPENSPIEL_TWINS:
            what = "CFR solves OpenSpiel games only" if kind == "cfr" else "it has no OpenSpiel twin"
            raise ValueError(
                f"opponent {spec!r} cannot play PettingZoo env {game.name!r}: {what} (envs with a twin, "
                f"for MCTS: {sorted(OPENSPIEL_TWINS)}); play the OpenSpiel version (backend: openspiel) "
                f"or use 'random'"
            )
        os_name, params = OPENSPIEL_TWINS[game.name][0], {}
    else:
        os_name, params = game.name, dict(game.params)
    if kind == "mcts":
        import pyspiel

        info = load_openspiel_game(os_name, params).get_type().information
        if info != pyspiel.GameType.Information.PERFECT_INFORMATION:
            raise ValueError(
                f"opponent {spec!r}: MCTS needs a perfect-information game and {game.name!r} is not (MCTS "
                f"would read the hidden cards); use 'cfr-N' or 'random' against it"
            )


def make_opponent(
    spec: str,
    game_name: str,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = DEFAULT_CFR_CACHE,
    params: dict[str, Any] | None = None,
) -> Player:
    """A YAML string to a player: 'random', 'mcts' / 'mcts-400' / 'mcts400', 'cfr' / 'cfr-1000', or a
    social-dilemma strategy (``games.dilemmas.STRATEGIES``)."""
    from games.dilemmas import STRATEGIES, StrategyPlayer

    if spec.strip().lower() in STRATEGIES:
        return StrategyPlayer(spec.strip().lower())
    m = re.fullmatch(r"([a-z]+)[-_]?(\d*)", spec.strip().lower())
    if m is None or m.group(1) not in OPPONENTS:
        raise ValueError(f"unknown opponent {spec!r}; valid: {sorted(OPPONENTS)} (optionally with '-N')")
    kind, n = m.group(1), m.group(2)
    if kind == "random":
        if n:
            raise ValueError(f"opponent 'random' takes no number, got {spec!r}")
        return RandomPlayer()
    if kind == "mcts":
        return MCTSPlayer(int(n) if n else 400, seed=seed)
    return CFRPlayer(game_name, int(n) if n else 1000, cache_dir=cache_dir, params=params)
