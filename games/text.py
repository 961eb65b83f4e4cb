"""The text-game protocol, the game config, the shipped game defaults and the ``make_game`` registry.

A ``TextGame`` is one episode of a turn-based game seen through text: the player to act, a legible
observation for any player, the legal actions as short canonical strings, ``apply(action_string)``,
the final returns and a text key of the full state. Two adapters implement it:
``games.openspiel_game.OpenSpielGame`` (any sequential OpenSpiel game, chance sampled from the
episode's seeded RNG) and ``games.pettingzoo_game.PettingZooGame`` (PettingZoo AEC classic envs,
legal actions from their action masks).

Shape legend: ``B`` episodes, ``A`` agents (players).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

BACKENDS = ("openspiel", "pettingzoo")
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
    """Library that runs the rules: 'openspiel' or 'pettingzoo'."""
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
    raise ValueError(f"unknown backend {cfg.backend!r}; valid backends: {list(BACKENDS)}")
