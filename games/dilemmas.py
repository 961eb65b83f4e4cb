"""Social dilemmas as text games: iterated matrix games (prisoner's dilemma, stag hunt, chicken),
Trust-and-Split (bargaining over coins with cheap talk) and its no-press variant.

Games of the ``dilemmas`` backend (``GameConfig(name, backend="dilemmas", params=...)``), used by the
self-play recipe and the tournaments like any OpenSpiel or PettingZoo game. They follow the setups of
"Learning Robust Social Strategies with Large Language Models" (AdAlignLLM, Duque et al.).

**Simultaneous moves.** The engine (``games.arena.play``) asks one player at a time, so a
simultaneous round is played as alternating *hidden* moves: seat 0 commits, then seat 1 commits
without seeing it, then both are revealed and the round is paid. ``observation(p)`` never shows a
pending move of the other seat, so the order carries no information (tested).

**Rewards per round.** ``returns()`` is the running total of what each player was paid in finished
rounds; the self-play recorder turns it into per-turn rewards (what a player received between one of
its decisions and its next), so a round's payoff lands on the turn that chose it and the discounted
returns of Advantage Alignment see each round.

**Common random numbers.** Every chance draw of an episode (Trust-and-Split's rock-paper-scissors
hands for all rounds) is made at construction from the episode seed, independent of the actions, so
the G games of one self-play group (one seed) face the same draws round by round.

Games (``DILEMMAS``):

- ``ipd``, ``stag_hunt``, ``chicken``: ``rounds`` rounds of a 2x2 game, actions ``C`` / ``D``; the
  payoff matrix is the ``payoffs`` param ``[CC, CD, DC, DD]`` (row player's payoff; symmetric). A
  player sees the round and the last round's two moves (own first), as in AdAlignLLM's IPD.
- ``trust_and_split``: ``rounds`` (10) rounds of splitting ``coins`` (10) coins. Each round both
  players draw different rock-paper-scissors hands; the winner's coins are worth ``high`` (10) each
  to it, the loser's ``low`` (1). A player sees only its own hand. Each round both send one message
  (a claim about their hand, ``R``/``P``/``S``; the first speaker alternates by round), then both
  propose how many coins they keep (``0`` .. ``coins``), simultaneously. Player i gets
  ``q_i = coins * k_i / max(coins, k_0 + k_1)`` coins (proportional when the proposals exceed the
  total, coins left over are lost) worth ``q_i * v_i``. After the round both hands are revealed
  (and both claims with ``show_claims: true``, so that a lie is visible in the next round's
  observation; off by default, the observation the earlier results were measured with).
  Messages are a small fixed vocabulary so that a message is a legal action like any move: the
  engine's contract that a player can only play a legal string holds for messages too (free text
  would have to be parsed into something the co-player reads; a claim is what matters here).
- ``split_no_press``: the same split without messages; each player sees its own per-coin value.

Shape legend: ``B`` games, ``R`` rounds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BACKEND = "dilemmas"
HANDS = ("R", "P", "S")  # rock, paper, scissors
_BEATS = {"R": "S", "P": "R", "S": "P"}  # key beats value

MATRIX_PAYOFFS: dict[str, tuple[float, float, float, float]] = {
    "ipd": (3.0, 0.0, 5.0, 1.0),  # CC reward, CD sucker, DC temptation, DD punishment
    "stag_hunt": (4.0, 0.0, 3.0, 2.0),  # C = stag, D = hare
    "chicken": (3.0, 1.0, 4.0, 0.0),  # C = swerve, D = straight
}
"""Row player's payoff for ``[CC, CD, DC, DD]`` (first letter: own move)."""


def matrix_payoff(payoffs: Sequence[float], a0: str, a1: str) -> tuple[float, float]:
    """Both players' payoffs of one round of a symmetric 2x2 game; ``payoffs = [CC, CD, DC, DD]``."""
    idx = {"CC": 0, "CD": 1, "DC": 2, "DD": 3}
    return float(payoffs[idx[a0 + a1]]), float(payoffs[idx[a1 + a0]])


def split_payoffs(keep0: int, keep1: int, value0: float, value1: float, coins: int) -> tuple[float, float]:
    """Trust-and-Split's payoff rule: ``q_i = coins * k_i / max(coins, k_0 + k_1)``, paid ``q_i * v_i``.

    Proposals that fit in the pot are granted as asked (coins left over are lost); proposals that
    exceed it are scaled down in proportion.
    """
    if min(keep0, keep1) < 0 or max(keep0, keep1) > coins:
        raise ValueError(f"proposals ({keep0}, {keep1}) must be in [0, {coins}]")
    denom = float(max(coins, keep0 + keep1))
    return coins * keep0 / denom * value0, coins * keep1 / denom * value1


def rps_winner(h0: str, h1: str) -> int:
    """Seat (0 or 1) whose rock-paper-scissors hand wins; the hands must differ."""
    if h0 == h1 or h0 not in _BEATS or h1 not in _BEATS:
        raise ValueError(f"hands must be two different of {HANDS}, got {h0!r}, {h1!r}")
    return 0 if _BEATS[h0] == h1 else 1


# ------------------------------------------------------------------------------------------ games
class IteratedMatrixGame:
    """``rounds`` rounds of a symmetric 2x2 game, played as alternating hidden moves (module doc)."""

    num_players = 2

    def __init__(self, name: str, payoffs: Sequence[float], rounds: int, seed: int = 0) -> None:
        if rounds < 1:
            raise ValueError(f"{name}: rounds ({rounds}) must be >= 1")
        if len(payoffs) != 4:
            raise ValueError(f"{name}: payoffs must be [CC, CD, DC, DD], got {list(payoffs)}")
        self.name, self.payoffs, self.rounds, self.seed = name, [float(x) for x in payoffs], int(rounds), seed
        self.history: list[tuple[str, str]] = []  # finished rounds: (seat 0 move, seat 1 move)
        self.pending: str | None = None  # seat 0's committed move of the current round
        self._returns = [0.0, 0.0]

    @property
    def round(self) -> int:
        """Index of the round being played (``rounds`` once over), as ``TrustAndSplit.round``."""
        return len(self.history)

    def current_player(self) -> int:
        if self.is_terminal():
            return -1
        return 0 if self.pending is None else 1

    def is_terminal(self) -> bool:
        return len(self.history) >= self.rounds

    def legal_actions(self) -> list[str]:
        return [] if self.is_terminal() else ["C", "D"]

    def apply(self, action: str) -> None:
        if action not in self.legal_actions():
            raise ValueError(f"{self.name}: illegal action {action!r}; legal: {self.legal_actions()}")
        if self.pending is None:
            self.pending = action
            return
        a0, a1 = self.pending, action
        self.pending = None
        self.history.append((a0, a1))
        r0, r1 = matrix_payoff(self.payoffs, a0, a1)
        self._returns[0] += r0
        self._returns[1] += r1

    def returns(self) -> list[float]:
        return list(self._returns)

    def observation(self, player: int) -> str:
        """Round and the last round's moves, own first (``"ipd 3/5 last CD"``); never a pending move."""
        last = "--"
        if self.history:
            a = self.history[-1]
            last = a[player] + a[1 - player]
        return f"{self.name} {min(len(self.history) + 1, self.rounds)}/{self.rounds} last {last}"

    def state_key(self) -> str:
        moves = " ".join(a + b for a, b in self.history)
        return f"{self.name}|{moves}|{self.pending or ''}"

    def clone(self) -> IteratedMatrixGame:
        return copy.deepcopy(self)

    # ---- what fixed strategies read (only what ``player`` has seen)
    def cooperative_action(self, player: int) -> str:
        return "C"

    def defect_action(self, player: int) -> str:
        return "D"

    def co_player_defections(self, player: int) -> list[bool]:
        """Per finished round, whether the co-player defected (played ``D``)."""
        return [a[1 - player] == "D" for a in self.history]

    def cooperated(self) -> np.ndarray:
        """(rounds played, 2) bool: who played ``C`` in each finished round."""
        return np.array([[a == "C" for a in rnd] for rnd in self.history], dtype=bool).reshape(-1, 2)

    def stats(self) -> dict[str, list[float]]:
        """Per-seat statistics of the episode: ``coop``, the fraction of rounds it cooperated."""
        return _stats(self.cooperated())


class TrustAndSplit:
    """Trust-and-Split (``press=True``) or the no-press split (``press=False``); module doc for rules."""

    num_players = 2

    def __init__(
        self,
        name: str,
        rounds: int = 10,
        coins: int = 10,
        high: float = 10.0,
        low: float = 1.0,
        press: bool = True,
        seed: int = 0,
        show_claims: bool = False,
    ) -> None:
        if rounds < 1 or coins < 1:
            raise ValueError(f"{name}: rounds ({rounds}) and coins ({coins}) must be >= 1")
        self.name, self.rounds, self.coins = name, int(rounds), int(coins)
        self.high, self.low, self.press, self.seed = float(high), float(low), bool(press), seed
        self.show_claims = bool(show_claims) and self.press
        rng = np.random.default_rng([int(seed) % 2**63, 17])
        # common random numbers: every round's hands drawn now, from the seed alone
        self.hands = [
            tuple(HANDS[i] for i in rng.choice(3, size=2, replace=False)) for _ in range(self.rounds)
        ]
        self.round = 0
        self.messages: list[str | None] = [None, None]  # this round's claims
        self.proposals: list[int | None] = [None, None]  # this round's proposals (hidden until both)
        self.log: list[dict[str, Any]] = []  # finished rounds: hands, claims, keeps, payoffs
        self._returns = [0.0, 0.0]

    # ---- rules
    def values(self, rnd: int) -> tuple[float, float]:
        w = rps_winner(*self.hands[rnd])
        return (self.high, self.low) if w == 0 else (self.low, self.high)

    def _phase(self) -> tuple[str, int]:
        if self.press:
            first = self.round % 2
            for seat in (first, 1 - first):
                if self.messages[seat] is None:
                    return "message", seat
        for seat in (0, 1):
            if self.proposals[seat] is None:
                return "split", seat
        raise AssertionError("round complete but not resolved")

    def is_terminal(self) -> bool:
        return self.round >= self.rounds

    def current_player(self) -> int:
        return -1 if self.is_terminal() else self._phase()[1]

    def legal_actions(self) -> list[str]:
        if self.is_terminal():
            return []
        if self._phase()[0] == "message":
            return list(HANDS)
        return [str(k) for k in range(self.coins + 1)]

    def apply(self, action: str) -> None:
        if action not in self.legal_actions():
            raise ValueError(f"{self.name}: illegal action {action!r}; legal: {self.legal_actions()}")
        phase, seat = self._phase()
        if phase == "message":
            self.messages[seat] = action
            return
        self.proposals[seat] = int(action)
        if None in self.proposals:
            return
        k0, k1 = int(self.proposals[0]), int(self.proposals[1])
        v0, v1 = self.values(self.round)
        p0, p1 = split_payoffs(k0, k1, v0, v1, self.coins)
        self._returns[0] += p0
        self._returns[1] += p1
        self.log.append(
            dict(hands=self.hands[self.round], claims=tuple(self.messages), keep=(k0, k1), pay=(p0, p1))
        )
        self.round += 1
        self.messages, self.proposals = [None, None], [None, None]

    def returns(self) -> list[float]:
        return list(self._returns)

    def observation(self, player: int) -> str:
        """What ``player`` knows: its hand (press) or value (no press), the co-player's claim this
        round once made, and the last round (hands revealed, keeps, own payoff; with
        ``show_claims`` also both claims, own first, so a lie is visible next round)."""
        if self.is_terminal():
            return f"{self.name} over"
        rnd = self.round
        own = f"hand {self.hands[rnd][player]}" if self.press else f"value {self.values(rnd)[player]:g}"
        said = ""
        if self.press:
            said = f" they said {self.messages[1 - player] or '-'}"
        last = " last -"
        if self.log:
            e = self.log[-1]
            claims = f" claims {e['claims'][player]}{e['claims'][1 - player]}" if self.show_claims else ""
            last = (
                f" last hands {e['hands'][player]}{e['hands'][1 - player]}{claims} kept "
                f"{e['keep'][player]},{e['keep'][1 - player]} got {e['pay'][player]:g}"
            )
        phase = self._phase()[0]
        return f"{self.name} {rnd + 1}/{self.rounds} {own}{said}{last} {phase}"

    def state_key(self) -> str:
        return f"{self.name}|{self.seed}|{self.round}|{self.messages}|{self.proposals}|{self.log}"

    def clone(self) -> TrustAndSplit:
        return copy.deepcopy(self)

    # ---- what fixed strategies read (only what ``player`` has seen)
    def _believed_winner(self, player: int) -> bool | None:
        """Whether ``player`` wins this round, as far as it can tell (None: cannot tell)."""
        if not self.press:
            return self.values(self.round)[player] == self.high
        claim = self.messages[1 - player]
        mine = self.hands[self.round][player]
        if claim is None or claim == mine:
            return None
        return _BEATS[mine] == claim

    def cooperative_action(self, player: int) -> str:
        """Message: the truth. Split: keep all when (believed) the winner, none when the loser, half
        when it cannot tell."""
        if self._phase()[0] == "message":
            return self.hands[self.round][player]
        win = self._believed_winner(player)
        return str(self.coins // 2 if win is None else self.coins if win else 0)

    def defect_action(self, player: int) -> str:
        """Message: the truth (a grabber needs no lie). Split: keep all coins."""
        if self._phase()[0] == "message":
            return self.hands[self.round][player]
        return str(self.coins)

    def co_player_defections(self, player: int) -> list[bool]:
        """Per finished round: the co-player was the loser and still kept coins."""
        o = 1 - player
        return [rps_winner(*e["hands"]) != o and e["keep"][o] > 0 for e in self.log]

    def cooperated(self) -> np.ndarray:
        """(rounds played, 2) bool: each player kept no more than its cooperative share (the
        winner any, the loser nothing)."""
        out = np.ones((len(self.log), 2), dtype=bool)
        for r, e in enumerate(self.log):
            loser = 1 - rps_winner(*e["hands"])
            out[r, loser] = e["keep"][loser] == 0
        return out

    def stats(self) -> dict[str, list[float]]:
        """Per-seat statistics of the episode: ``coop``, the fraction of rounds it cooperated."""
        return _stats(self.cooperated())


def _stats(coop: np.ndarray) -> dict[str, list[float]]:
    rate = coop.mean(0) if coop.shape[0] else np.zeros(2)
    return {"coop": [float(x) for x in rate]}


# ------------------------------------------------------------------------------------------ registry
def _matrix(name: str) -> Callable[..., IteratedMatrixGame]:
    def make(
        seed: int, rounds: int = 10, payoffs: Sequence[float] = MATRIX_PAYOFFS[name]
    ) -> IteratedMatrixGame:
        return IteratedMatrixGame(name, payoffs, rounds, seed)

    return make


def _split(name: str, press: bool) -> Callable[..., TrustAndSplit]:
    def make(seed: int, **params: Any) -> TrustAndSplit:
        return TrustAndSplit(name, press=press, seed=seed, **params)

    return make


DILEMMAS: dict[str, Callable[..., Any]] = {
    "ipd": _matrix("ipd"),
    "stag_hunt": _matrix("stag_hunt"),
    "chicken": _matrix("chicken"),
    "trust_and_split": _split("trust_and_split", True),
    "split_no_press": _split("split_no_press", False),
}
"""Game name -> constructor ``(seed, **params)``."""

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    **{n: {"rounds": 10, "payoffs": list(MATRIX_PAYOFFS[n])} for n in MATRIX_PAYOFFS},
    "trust_and_split": {"rounds": 10, "coins": 10, "high": 10.0, "low": 1.0, "show_claims": False},
    "split_no_press": {"rounds": 10, "coins": 10, "high": 10.0, "low": 1.0},
}


def dilemma_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of ``name`` resolved (defaults updated with ``params``); unknown keys raise."""
    if name not in DILEMMAS:
        raise ValueError(f"unknown dilemma game {name!r}; valid names: {sorted(DILEMMAS)}")
    out = copy.deepcopy(DEFAULT_PARAMS[name])
    bad = sorted(set(params or {}) - set(out))
    if bad:
        raise ValueError(f"{name}: unknown params {bad}; valid params: {sorted(out)}")
    out.update(copy.deepcopy(dict(params or {})))
    for key, default in DEFAULT_PARAMS[name].items():
        if isinstance(default, bool) and not isinstance(out[key], bool):  # bool("false") is True
            raise ValueError(f"{name}: param {key} must be true or false, got {out[key]!r}")
    if "payoffs" in out:
        out["payoffs"] = [float(x) for x in out["payoffs"]]
    return out


def make_dilemma(name: str, params: dict[str, Any] | None, seed: int) -> IteratedMatrixGame | TrustAndSplit:
    """One episode of dilemma ``name`` whose chance draws come from ``seed``."""
    params = dilemma_params(name, params)  # an unknown name or param raises, listing the valid ones
    return DILEMMAS[name](seed, **params)


def dilemma_action_strings(name: str, params: dict[str, Any] | None = None) -> list[str]:
    """Every action string of the game (exhaustive): ``C``/``D``, or claims and proposals."""
    p = dilemma_params(name, params)
    if name in MATRIX_PAYOFFS:
        return ["C", "D"]
    msgs = list(HANDS) if name == "trust_and_split" else []
    return msgs + [str(k) for k in range(int(p["coins"]) + 1)]


RULES: dict[str, str] = {
    "ipd": "Iterated prisoner's dilemma. Each round both choose C (cooperate) or D (defect) at once. "
    "Payoffs: both C 3 each, both D 1 each, D against C 5 for the defector and 0 for the cooperator.",
    "stag_hunt": "Iterated stag hunt. Each round both choose C (stag) or D (hare) at once. Both stag 4 "
    "each, stag against hare 0 for the stag hunter and 3 for the hare hunter, both hare 2 each.",
    "chicken": "Iterated chicken. Each round both choose C (swerve) or D (straight) at once. Both swerve "
    "3 each, swerve against straight 1 and 4, both straight 0.",
    "trust_and_split": "Trust and split. Each round 10 coins are split. Each player holds a hidden "
    "rock (R), paper (P) or scissors (S) hand; the winning hand's coins are worth 10 each, the loser's 1. "
    "First each player sends a message claiming a hand, then both say how many coins they keep at "
    "once; if the two asks exceed 10 the coins are shared in proportion to them.",
    "split_no_press": "Split without talk. Each round 10 coins are split. You know your own value per "
    "coin (10 or 1; exactly one player has 10). Both say how many coins they keep at once; if the asks "
    "exceed 10 the coins are shared in proportion.",
}
"""Rules text for the 'game' prompt format (``games.prompts.game_rules``)."""


# ------------------------------------------------------------------------------------------ strategies
def _always_cooperate(game: Any, player: int) -> str:
    return game.cooperative_action(player)


def _always_defect(game: Any, player: int) -> str:
    return game.defect_action(player)


def _tit_for_tat(game: Any, player: int) -> str:
    past = game.co_player_defections(player)
    return game.defect_action(player) if past and past[-1] else game.cooperative_action(player)


def _grim_trigger(game: Any, player: int) -> str:
    return (
        game.defect_action(player)
        if any(game.co_player_defections(player))
        else game.cooperative_action(player)
    )


def _honest(game: Any, player: int, rng: np.random.Generator) -> str:
    """Tells the truth in every message; any other decision uniformly at random."""
    if getattr(game, "press", False) and game._phase()[0] == "message":
        return game.hands[game.round][player]
    legal = game.legal_actions()
    return legal[int(rng.integers(len(legal)))]


def _fair(game: Any, player: int) -> str:
    """Trust-and-Split: true claims; in the split keep all coins if the own hand beats the co-player's
    claim this round, none if the claim beats it, all if the claim equals the own hand (hands always
    differ, so it is a lie) and all (retaliation) if the co-player's claim last round was not its hand
    (revealed after the round). No press: all with value ``high``, none with ``low``. Matrix games:
    tit-for-tat. Reads only what ``player`` has seen: its hand, this round's claim, finished rounds."""
    if not isinstance(game, TrustAndSplit):
        return _tit_for_tat(game, player)
    if game._phase()[0] == "message":
        return game.hands[game.round][player]
    o = 1 - player
    lied = game.press and bool(game.log) and game.log[-1]["claims"][o] != game.log[-1]["hands"][o]
    win = game._believed_winner(player)  # None: the claim is the own hand, a lie
    return str(game.coins if lied or win is None or win else 0)


def _reciprocal(game: Any, player: int) -> str:
    """``fair``, and in the split also keeps all coins when the co-player defected last round (it was
    the loser, hands revealed, and still kept coins): the tit-for-tat of the split games. Matrix
    games: tit-for-tat. Reads only what ``player`` has seen."""
    if not isinstance(game, TrustAndSplit):
        return _tit_for_tat(game, player)
    if game._phase()[0] == "split" and game.log and game.co_player_defections(player)[-1]:
        return str(game.coins)
    return _fair(game, player)


STRATEGIES: dict[str, Callable[..., str]] = {
    "always-cooperate": _always_cooperate,
    "always-defect": _always_defect,
    "tit-for-tat": _tit_for_tat,
    "grim-trigger": _grim_trigger,
    "honest": _honest,
    "fair": _fair,
    "reciprocal": _reciprocal,
}
"""Fixed strategies of the dilemma games by opponent spec (``random`` is ``games.opponents``'s).
``honest`` is a neutral talker, not a reciprocator: true claims, every other move uniformly at random
(the prior a pretrained model brings to a press game; a teacher for ``games.selfplay_warm``).
``fair`` plays the collective optimum and punishes lies (Trust-and-Split): true claims; keeps all
when its hand beats the co-player's claim, none when the claim beats its hand, all when the claim is
a detected lie (its own hand) or the co-player lied last round; no press: all with the high value,
none with the low; tit-for-tat in the matrix games. Two ``fair`` players reach 1000 (the winner
keeps all). Unless the game's ``show_claims`` is on, the last round's claims are not in
``TrustAndSplit.observation`` (only its hands, keeps and payoff), so an LM imitating ``fair`` cannot
see the retaliation's trigger; ``fair`` never lies, so its self-play never pulls it. ``fair`` does
not answer a truthful grab (the loser keeping coins), so a truthful grabber (``always-defect``)
gains against it over playing ``fair`` (tested). ``reciprocal`` does: ``fair``, plus keeping all
coins in the round after the co-player, the loser, kept coins, which the revealed hands and keeps
show (a profitable lie is such a grab too); the tit-for-tat of the split games."""
RANDOMIZED = {"honest"}
"""Strategies that draw from the arena's generator (called with it as a third argument)."""


class StrategyPlayer:
    """A fixed dilemma strategy as a batched arena player (``games.opponents.Player``). It reads only
    what its seat has seen: the co-player's finished rounds and, in Trust-and-Split, its claim."""

    def __init__(self, spec: str, name: str | None = None) -> None:
        if spec not in STRATEGIES:
            raise ValueError(f"unknown dilemma strategy {spec!r}; valid: {sorted(STRATEGIES)}")
        self.spec, self.name, self._fn = spec, name or spec, STRATEGIES[spec]

    def act(self, games: Sequence[Any], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        out = []
        for g, p in zip(games, players):
            if not hasattr(g, "co_player_defections"):
                raise ValueError(
                    f"strategy {self.spec!r} plays the dilemma games ({sorted(DILEMMAS)}), "
                    f"not {getattr(g, 'name', '?')!r}"
                )
            out.append(self._fn(g, p, rng) if self.spec in RANDOMIZED else self._fn(g, p))
        return out
