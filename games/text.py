"""The text-game protocol, the game config, the shipped game defaults and the ``make_game`` registry.

A ``TextGame`` is one episode of a turn-based game seen through text: the player to act, a legible
observation for any player, the legal actions as short canonical strings, ``apply(action_string)``,
the final returns and a text key of the full state. Two adapters implement it:
``games.openspiel_game.OpenSpielGame`` (any sequential OpenSpiel game, chance sampled from the
episode's seeded RNG) and ``games.pettingzoo_game.PettingZooGame`` (PettingZoo AEC classic envs,
legal actions from their action masks).

What the adapters cannot play is refused at construction with the fix: simultaneous-move games
(OpenSpiel: the YAML that plays them turn by turn), mean-field games, PettingZoo envs without an
action mask. ``check_playable``, ``num_players``, ``is_simultaneous`` and ``game_spec`` answer
these questions for a ``GameConfig`` before any episode starts (for config-time checks).

Shape legend: ``B`` episodes, ``A`` agents (players).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

BACKENDS = ("openspiel", "pettingzoo", "dilemmas")
PROMPT_STYLES = ("compact", "chat")


@runtime_checkable
class TextGame(Protocol):
    """One episode of a turn-based game, seen as text. Chance is resolved inside with the episode RNG."""

    num_players: int
    name: str

    def current_player(self) -> int:
        """Index of the player to act; -1 when the episode is over."""
        ...

    def observation(self, player: int) -> str:
        """What ``player`` sees, drawn legibly (board, own cards, public history)."""
        ...

    def legal_actions(self) -> list[str]:
        """Canonical short strings of the current player's legal actions (empty when terminal)."""
        ...

    def apply(self, action: str) -> None:
        """Play ``action`` for the current player; ``ValueError`` when it is not a legal string."""
        ...

    def is_terminal(self) -> bool: ...

    def returns(self) -> list[float]:
        """Returns per player so far (the final returns once terminal)."""
        ...

    def state_key(self) -> str:
        """Hashable text of the full state (incl. hidden information), for anchor-state grouping."""
        ...

    def clone(self) -> TextGame:
        """An independent copy, RNG included: the same actions give the same continuation."""
        ...


@dataclass
class GameConfig:
    """Which game to play, through which library, with which parameters and prompt style."""

    name: str = "tic_tac_toe"
    """OpenSpiel game name (see pyspiel.registered_names()) or PettingZoo classic env (e.g. tictactoe_v3)."""
    backend: str = "openspiel"
    """Library that runs the rules: 'openspiel', 'pettingzoo' or 'dilemmas' (games.dilemmas: ipd, stag_hunt,
    chicken, trust_and_split, split_no_press)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Game parameters for pyspiel.load_game or the PettingZoo env constructor, e.g. {'rows': 6}."""
    prompt_style: str = "compact"
    """'compact' (one short string, for the tiny LM) or 'chat' (messages for a HF chat template)."""
    constrained_sampling: bool = False
    """Mask logits so a policy can only spell a legal action (prompts.legal_action_token_mask)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"GameConfig.backend must be one of {list(BACKENDS)}, got {self.backend!r}; "
                f"set backend to 'openspiel' for OpenSpiel names, 'pettingzoo' for PettingZoo classic envs"
            )
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"GameConfig.prompt_style must be one of {list(PROMPT_STYLES)}, got {self.prompt_style!r}"
            )


# Shipped defaults: a YAML ``game:`` block may name one of these or spell out a full GameConfig.
GAMES: dict[str, GameConfig] = {
    "tic_tac_toe": GameConfig("tic_tac_toe", "openspiel", {}, "compact"),
    "connect_four": GameConfig("connect_four", "openspiel", {}, "compact"),
    "kuhn_poker": GameConfig("kuhn_poker", "openspiel", {}, "compact"),
    "leduc_poker": GameConfig("leduc_poker", "openspiel", {}, "compact"),
    "tictactoe_v3": GameConfig("tictactoe_v3", "pettingzoo", {}, "compact"),
    "connect_four_v3": GameConfig("connect_four_v3", "pettingzoo", {}, "compact"),
}


def game_config(name: str) -> GameConfig:
    """A fresh copy of a shipped default config; the error lists the shipped names."""
    if name not in GAMES:
        raise ValueError(
            f"unknown shipped game {name!r}; valid names: {sorted(GAMES)}. For any other OpenSpiel or "
            f"PettingZoo game pass a full GameConfig(name=..., backend=...)"
        )
    cfg = GAMES[name]
    return GameConfig(cfg.name, cfg.backend, dict(cfg.params), cfg.prompt_style, cfg.constrained_sampling)


def make_game(cfg: GameConfig | str, seed: int) -> TextGame:
    """Start one episode of ``cfg`` whose chance events come from ``seed``.

    ``cfg`` may be a shipped name (a key of ``GAMES``). Unknown names raise ``ValueError`` listing
    the valid names of the backend.
    """
    if isinstance(cfg, str):
        cfg = game_config(cfg)
    if cfg.backend == "openspiel":
        from games.openspiel_game import OpenSpielGame, load_openspiel_game

        return OpenSpielGame(load_openspiel_game(cfg.name, cfg.params), seed=seed)
    if cfg.backend == "pettingzoo":
        from games.pettingzoo_game import PettingZooGame

        return PettingZooGame(cfg.name, cfg.params, seed=seed)
    if cfg.backend == "dilemmas":
        from games.dilemmas import make_dilemma

        return make_dilemma(cfg.name, cfg.params, seed)
    raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {list(BACKENDS)}")


def _cfg(cfg: GameConfig | str) -> GameConfig:
    return game_config(cfg) if isinstance(cfg, str) else cfg


def num_players(cfg: GameConfig | str) -> int:
    """Seats of ``cfg``'s game (1 for blackjack, 2 for chess, 4 for bridge), read from the library.

    Works for games the adapters refuse (simultaneous-move ones), so a recipe can tell a one-player
    game apart before it builds anything: ``num_players(cfg) == 1``.
    """
    cfg = _cfg(cfg)
    if cfg.backend == "openspiel":
        from games.openspiel_game import load_openspiel_game

        return int(load_openspiel_game(cfg.name, cfg.params, sequential=False).num_players())
    if cfg.backend == "pettingzoo":
        from games.pettingzoo_game import make_pettingzoo_env

        return len(make_pettingzoo_env(cfg.name, cfg.params).possible_agents)
    if cfg.backend == "dilemmas":
        from games.dilemmas import make_dilemma

        return make_dilemma(cfg.name, cfg.params, 0).num_players
    raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {list(BACKENDS)}")


def is_simultaneous(cfg: GameConfig | str) -> bool:
    """Whether all players of ``cfg``'s game move at once (OpenSpiel SIMULTANEOUS dynamics; a PettingZoo
    env that declares itself parallelizable, such as rps_v2). Such games cannot be played as text."""
    cfg = _cfg(cfg)
    if cfg.backend == "openspiel":
        import pyspiel

        from games.openspiel_game import load_openspiel_game

        game = load_openspiel_game(cfg.name, cfg.params, sequential=False)
        return game.get_type().dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS
    if cfg.backend == "pettingzoo":
        from games.pettingzoo_game import make_pettingzoo_env

        return bool(make_pettingzoo_env(cfg.name, cfg.params).metadata.get("is_parallelizable", False))
    if cfg.backend == "dilemmas":
        return False  # simultaneous rounds are played as alternating hidden moves (games.dilemmas)
    raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {list(BACKENDS)}")


def simultaneous_message(cfg: GameConfig | str) -> str:
    """Why a simultaneous-move ``cfg`` is refused and, for OpenSpiel, the YAML ``game:`` block that plays
    it turn by turn (``game.params`` of ``turn_based_simultaneous_game``)."""
    cfg = _cfg(cfg)
    if cfg.backend == "openspiel":
        from games.openspiel_game import simultaneous_fix

        return simultaneous_fix(cfg.name, cfg.params)
    return (
        f"PettingZoo env {cfg.name!r} is a simultaneous-move game; text games are turn-based and "
        f"PettingZoo has no turn-based wrapper for it: play an OpenSpiel game instead (backend: openspiel)"
    )


def check_playable(cfg: GameConfig | str) -> None:
    """``ValueError`` naming the game and the fix unless ``cfg`` can be played as text by these adapters.

    Refuses unknown names or params, simultaneous-move games (with the YAML that plays them turn
    by turn), mean-field games and PettingZoo envs without an action mask. It builds one episode.
    """
    cfg = _cfg(cfg)
    if cfg.backend in BACKENDS and is_simultaneous(cfg):
        raise ValueError(simultaneous_message(cfg))
    make_game(cfg, seed=0)


def game_spec(cfg: GameConfig | str) -> dict[str, Any]:
    """``{"backend", "name", "params"}`` with every parameter resolved (defaults filled in).

    Two configs play the same game exactly when their specs are equal: ``{}`` and ``{"board_size": 11}``
    are the same hex, ``{"board_size": 3}`` is not. OpenSpiel params come from the loaded game;
    PettingZoo params are the env constructor's defaults updated with ``cfg.params`` (display-only
    arguments such as ``render_mode`` left out).
    """
    cfg = _cfg(cfg)
    if cfg.backend == "openspiel":
        from games.openspiel_game import load_openspiel_game

        game = load_openspiel_game(cfg.name, cfg.params, sequential=False)
        params = {k: _plain(v) for k, v in game.get_parameters().items()}
    elif cfg.backend == "pettingzoo":
        from games.pettingzoo_game import pettingzoo_params

        params = pettingzoo_params(cfg.name, cfg.params)
    elif cfg.backend == "dilemmas":
        from games.dilemmas import dilemma_params

        params = dilemma_params(cfg.name, cfg.params)
    else:
        raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {list(BACKENDS)}")
    return {"backend": cfg.backend, "name": cfg.name, "params": dict(sorted(params.items()))}


def _plain(value: Any) -> Any:
    """OpenSpiel parameter values (nested games are dicts) as plain comparable Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    return value


def format_spec(spec: dict[str, Any]) -> str:
    """``backend:name(k=v, ...)``, for error messages."""
    params = ", ".join(f"{k}={v}" for k, v in spec["params"].items())
    return f"{spec['backend']}:{spec['name']}({params})"
