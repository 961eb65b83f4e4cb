"""OpenSpiel adapter: any sequential OpenSpiel game as a ``TextGame``.

Chance nodes are resolved inside the adapter by sampling ``state.chance_outcomes()`` with the
episode's own ``numpy`` generator (seeded at construction), so an episode is a pure function of its
seed and the players' actions. Imperfect information reaches a player only through its own
information-state (or observation) string; the four shipped games have hand-drawn renderers.

Action strings are canonical and short: the action id for board games whose ids are cells or
columns (``"4"``), otherwise OpenSpiel's ``action_to_string`` with blanks as ``_``. A game whose first
decision offers only plain words (``"Call"``, ``"Pass"``, ``"Hit"``) is lower-cased (``"call"``);
notation keeps its case, because case can be all that tells two moves apart (chess ``"bxc4"``, a
pawn, and ``"Bxc4"``, a bishop). Distinct legal actions never share a string: if lower-casing
would merge two of them in some state, that state keeps the original case; if even that merges
them (blanks against ``_``), that state falls back to ids.

Only sequential games are played; ``load_openspiel_game`` refuses a simultaneous-move game with the
YAML that plays it turn by turn (``turn_based_simultaneous_game``), and mean-field games.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyspiel

logger = logging.getLogger(__name__)

# Games whose action ids are the natural move names (cell index, column index).
ID_ACTION_GAMES = frozenset({"tic_tac_toe", "connect_four"})


@functools.lru_cache(maxsize=64)
def _load(name: str, params_json: str) -> pyspiel.Game:
    return pyspiel.load_game(name, json.loads(params_json))


def load_openspiel_game(
    name: str, params: dict[str, Any] | None = None, *, sequential: bool = True
) -> pyspiel.Game:
    """``pyspiel.load_game`` with a cache, validation and errors that name the valid choices.

    With ``sequential`` (the default) a game that is not turn-based is refused with the fix
    (``simultaneous_fix``); ``sequential=False`` loads it anyway (to read its type or player count).
    """
    params = dict(params or {})
    registered = pyspiel.registered_names()
    if name not in registered:
        raise ValueError(
            f"unknown OpenSpiel game {name!r}; valid names: {sorted(registered)} "
            f"(for a PettingZoo env set backend='pettingzoo')"
        )
    try:
        game = _load(name, json.dumps(params, sort_keys=True))
    except pyspiel.SpielError as e:
        raise ValueError(f"OpenSpiel rejected params {params} for {name!r}: {e}") from e
    except TypeError as e:  # a value json cannot carry
        raise ValueError(
            f"OpenSpiel game {name!r}: params {params} must be numbers, strings, bools or maps"
        ) from e
    if sequential:
        dynamics = game.get_type().dynamics
        if dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
            raise ValueError(simultaneous_fix(name, params))
        if dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
            raise ValueError(
                f"OpenSpiel game {name!r} has {dynamics} dynamics (no player to act in turn); only "
                f"sequential (turn-based) games can be played as text: pick a sequential game"
            )
    return game


def simultaneous_fix(name: str, params: dict[str, Any] | None = None) -> str:
    """The refusal of a simultaneous-move game, with the YAML ``game:`` block that plays it turn by turn."""
    inner = json.dumps({"name": name, **dict(params or {})}).replace('"', "")
    return (
        f"OpenSpiel game {name!r} is a simultaneous-move game; text games are turn-based. Play it turn by "
        f"turn (each player chooses without seeing the others' choices of that round) with this YAML: "
        f"game: {{name: turn_based_simultaneous_game, params: {{game: {inner}}}}}"
    )


class OpenSpielGame:
    """One episode of a sequential OpenSpiel game, seen as text (implements ``TextGame``)."""

    def __init__(self, game: pyspiel.Game, seed: int, _state: pyspiel.State | None = None) -> None:
        self.game = game
        gtype = game.get_type()
        self.name: str = gtype.short_name
        self.num_players: int = game.num_players()
        self.perfect_information = gtype.information == pyspiel.GameType.Information.PERFECT_INFORMATION
        self.zero_sum = gtype.utility == pyspiel.GameType.Utility.ZERO_SUM
        self._has_info_state = gtype.provides_information_state_string
        self._has_obs = gtype.provides_observation_string
        self._id_actions = self.name in ID_ACTION_GAMES
        self._has_chance = gtype.chance_mode != pyspiel.GameType.ChanceMode.DETERMINISTIC
        self.rng = np.random.default_rng(seed)
        # (player, action id) of every move in order; player -1 for chance events.
        self.moves: list[tuple[int, int]] = []
        self._legal: dict[str, int] | None = None
        if _state is None:
            self.state = game.new_initial_state()
            self._resolve_chance()
        else:
            self.state = _state

    # --- TextGame -----------------------------------------------------------------------------
    def current_player(self) -> int:
        return -1 if self.state.is_terminal() else int(self.state.current_player())

    def is_terminal(self) -> bool:
        return bool(self.state.is_terminal())

    def returns(self) -> list[float]:
        return [float(r) for r in self.state.returns()]

    def legal_actions(self) -> list[str]:
        return list(self._legal_map())

    def apply(self, action: str) -> None:
        legal = self._legal_map()
        if action not in legal:
            raise ValueError(
                f"illegal action {str(action)[:64]!r} in {self.name} for player {self.current_player()}; "
                f"legal: {list(legal)}"
            )
        player = int(self.state.current_player())
        a = legal[action]
        self.state.apply_action(a)
        self.moves.append((player, a))
        self._legal = None
        self._resolve_chance()

    def observation(self, player: int) -> str:
        if not 0 <= player < self.num_players:
            raise ValueError(f"player must be in [0, {self.num_players}), got {player}")
        render = RENDERERS.get(self.name, _render_generic)
        return render(self, player)

    def state_key(self) -> str:
        return f"{self.name}|{self.current_player()}|{self.state}"

    def clone(self) -> OpenSpielGame:
        other = OpenSpielGame.__new__(OpenSpielGame)
        other.__dict__.update(self.__dict__)
        other.state = self.state.clone()
        if self._has_chance:  # deterministic games never draw from the RNG: share it
            bit_gen = np.random.PCG64(0)
            bit_gen.state = self.rng.bit_generator.state
            other.rng = np.random.Generator(bit_gen)
        other.moves = list(self.moves)
        other._legal = None if self._legal is None else dict(self._legal)
        return other

    # --- OpenSpiel access (used by MCTS and CFR opponents) --------------------------------------
    def openspiel_state(self) -> pyspiel.State:
        """The underlying pyspiel state (do not mutate; clone it)."""
        return self.state

    def action_id(self, action: str) -> int:
        """OpenSpiel action id of a legal action string (``ValueError`` if illegal)."""
        legal = self._legal_map()
        if action not in legal:
            raise ValueError(f"illegal action {str(action)[:64]!r}; legal: {list(legal)}")
        return legal[action]

    def action_from_openspiel(self, action_id: int) -> str:
        """Canonical string of the current player's legal OpenSpiel action ``action_id``."""
        for s, a in self._legal_map().items():
            if a == action_id:
                return s
        raise ValueError(f"OpenSpiel action {action_id} is not legal in {self.name} now")

    # --- internals --------------------------------------------------------------------------------
    def _resolve_chance(self) -> None:
        """Sample chance outcomes with the episode RNG until a player (or the end) is to move."""
        state = self.state
        while state.is_chance_node():
            outcomes = state.chance_outcomes()  # [(action, prob)]
            u = self.rng.random()
            acc = 0.0
            pick = outcomes[-1][0]
            for a, p in outcomes:
                acc += p
                if u < acc:
                    pick = a
                    break
            state.apply_action(pick)
            self.moves.append((-1, pick))

    def _legal_map(self) -> dict[str, int]:
        if self._legal is not None:
            return self._legal
        state = self.state
        if state.is_terminal():
            self._legal = {}
            return self._legal
        ids = state.legal_actions()
        if self._id_actions:
            legal = {str(a): a for a in ids}
        else:
            player = state.current_player()
            raw = [_blanks(state.action_to_string(player, a)) for a in ids]
            legal = {}
            if _lower_case_game(self.game):
                legal = {r.lower(): a for r, a in zip(raw, ids)}
            if len(legal) != len(ids):  # lower-casing merged two actions (or is off): keep the case
                legal = {r: a for r, a in zip(raw, ids)}
            if len(legal) != len(ids) or "" in legal:
                if self.name not in _WARNED:
                    _WARNED.add(self.name)
                    logger.warning("%s: action names collide %s; such states use action ids", self.name, raw)
                legal = {str(a): a for a in ids}
        self._legal = legal
        return legal


def _blanks(text: str) -> str:
    """Action name with each run of blanks as one ``_`` (no leading or trailing blank)."""
    return "_".join(text.split())


_PLAIN_WORDS = re.compile(r"[A-Za-z]+(?:_[A-Za-z]+)*")
_LOWER_CASE: dict[str, bool] = {}
_WARNED: set[str] = set()  # games whose name collisions were logged once


def _lower_case_game(game: pyspiel.Game) -> bool:
    """Whether ``game``'s action names are lower-cased: its first decision offers only plain words.

    Decided once per game (and params) on the state reached by taking the first outcome of every
    chance node, so the answer does not depend on an episode's seed.
    """
    key = str(game)
    if key not in _LOWER_CASE:
        state = game.new_initial_state()
        while state.is_chance_node():
            state.apply_action(state.chance_outcomes()[0][0])
        words = False
        if not state.is_terminal() and not state.is_simultaneous_node():
            p = state.current_player()
            names = [_blanks(state.action_to_string(p, a)) for a in state.legal_actions()]
            words = bool(names) and all(_PLAIN_WORDS.fullmatch(n) for n in names)
        _LOWER_CASE[key] = words
    return _LOWER_CASE[key]


# --- renderers: (game, player) -> observation text ------------------------------------------------
def _render_generic(g: OpenSpielGame, player: int) -> str:
    state = g.state
    if g.perfect_information:
        body = state.observation_string(player) if g._has_obs else str(state)
    elif g._has_info_state:
        body = state.information_state_string(player)
    elif g._has_obs:
        body = state.observation_string(player)
    else:
        raise ValueError(f"{g.name} provides neither information-state nor observation strings")
    return f"You are player {player}.\n{body}"


def _grid_rows(g: OpenSpielGame) -> list[str]:
    return [r for r in g.state.observation_string(0).split("\n") if r]


def _render_tic_tac_toe(g: OpenSpielGame, player: int) -> str:
    rows = _grid_rows(g)
    ncol = len(rows[0])
    lines = []
    for r, row in enumerate(rows):
        cells = [ch if ch != "." else str(r * ncol + c) for c, ch in enumerate(row)]
        lines.append(" " + " | ".join(cells))
    sep = "\n" + "+".join(["---"] * ncol) + "\n"
    mark = "xo"[player]
    return f"You play {mark}. Board (free cells show their number):\n" + sep.join(lines)


def _render_connect_four(g: OpenSpielGame, player: int) -> str:
    rows = _grid_rows(g)
    ncol = len(rows[0])
    header = " " + " ".join(str(c % 10) for c in range(ncol))
    body = "\n".join("|" + " ".join(row) + "|" for row in rows)
    mark = "xo"[player]
    return f"You play {mark}. Board (columns numbered, pieces fall to the bottom):\n{header}\n{body}"


_KUHN_VERBS = {0: "passed", 1: "bet"}
_LEDUC_VERBS = {0: "folded", 1: "called", 2: "raised"}


def _card_name(rank: int, n_ranks: int) -> str:
    names = "JQKA" if n_ranks <= 4 else "23456789TJQKA"[-n_ranks:]
    return names[rank] if 0 <= rank < len(names) else str(rank)


def _render_kuhn(g: OpenSpielGame, player: int) -> str:
    n = g.num_players
    deals = [a for p, a in g.moves if p == -1]
    ranks = " < ".join(_card_name(r, n + 1) for r in range(n + 1))
    card = _card_name(deals[player], n + 1) if player < len(deals) else "?"
    bets = [(p, a) for p, a in g.moves if p >= 0]
    hist = ", ".join(f"player {p} {_KUHN_VERBS.get(a, a)}" for p, a in bets) or "none yet"
    pot = n + sum(a == 1 for _, a in bets)
    return (
        f"Kuhn poker. You are player {player}. Your card: {card} (deck {ranks}; one card each).\n"
        f"Betting so far: {hist}.\nPot: {pot} chips."
    )


def _render_leduc(g: OpenSpielGame, player: int) -> str:
    state = g.state
    n = g.num_players
    n_ranks = n + 1  # two suits per rank; rank = card // 2
    private = state.private_card(player)
    card = _card_name(private // 2, n_ranks) if private >= 0 else "?"
    public = state.public_card()
    pub = _card_name(public // 2, n_ranks) if public >= 0 else "not revealed yet"
    rounds: list[list[str]] = [[]]
    deals_seen = 0
    for p, a in g.moves:
        if p == -1:
            deals_seen += 1
            if deals_seen > n:  # the public card opens round 2
                rounds.append([])
        else:
            rounds[-1].append(f"player {p} {_LEDUC_VERBS.get(a, a)}")
    lines = [
        f"Leduc hold'em. You are player {player}. Your private card: {card} "
        f"(deck: two each of {', '.join(_card_name(r, n_ranks) for r in range(n_ranks))}).",
        f"Public card: {pub}.",
    ]
    for i, acts in enumerate(rounds):
        lines.append(f"Round {i + 1} betting: {', '.join(acts) or 'none yet'}.")
    money = state.money()
    lines.append(
        f"Pot: {state.pot()} chips. Chips left: "
        + ", ".join(f"player {p} {int(m)}" for p, m in enumerate(money))
    )
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[OpenSpielGame, int], str]] = {
    "tic_tac_toe": _render_tic_tac_toe,
    "connect_four": _render_connect_four,
    "kuhn_poker": _render_kuhn,
    "leduc_poker": _render_leduc,
}
