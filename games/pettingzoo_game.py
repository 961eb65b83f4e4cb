"""PettingZoo adapter: AEC classic environments as a ``TextGame``.

Legal actions come from the env's own ``action_mask`` (canonical string = the action index,
e.g. ``"4"``); an env whose observations carry no action mask (rps_v2) is refused at construction;
returns are the sum over steps of ``env.rewards`` (AEC: the rewards of the last step).
Tic-tac-toe and connect four are drawn legibly; any other env falls back to its observation array.
The env is the one ``pettingzoo.classic.<name>.env(**params)`` builds, wrappers included, so
PettingZoo's own ``api_test`` runs on exactly what we wrap (``make_pettingzoo_env``).

For MCTS, envs with an OpenSpiel twin (tictactoe_v3, connect_four_v3) can be replayed into a
pyspiel state (``openspiel_state``), with the move ids translated both ways.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _ttt_pz_to_os(a: int) -> int:
    """PettingZoo tic-tac-toe numbers cells column by column (0 3 6 / 1 4 7 / 2 5 8); OpenSpiel row by row.

    Cell a sits at row a % 3, column a // 3, whose OpenSpiel id is 3·row + column. The map is a
    transpose, hence its own inverse.
    """
    return 3 * (a % 3) + a // 3


def _identity(a: int) -> int:
    return a


# PettingZoo name -> (OpenSpiel twin, pz->os action map, os->pz action map); player order matches.
OPENSPIEL_TWINS: dict[str, tuple[str, Callable[[int], int], Callable[[int], int]]] = {
    "tictactoe_v3": ("tic_tac_toe", _ttt_pz_to_os, _ttt_pz_to_os),
    "connect_four_v3": ("connect_four", _identity, _identity),
}


def classic_env_names() -> list[str]:
    """Names of PettingZoo's classic AEC environments (e.g. 'tictactoe_v3')."""
    import pkgutil

    import pettingzoo.classic

    return sorted(
        m.name for m in pkgutil.iter_modules(pettingzoo.classic.__path__) if re.fullmatch(r"\w+_v\d+", m.name)
    )


def make_pettingzoo_env(name: str, params: dict[str, Any] | None = None):
    """Build ``pettingzoo.classic.<name>.env(**params)``; unknown names list the valid ones."""
    valid = classic_env_names()
    if name not in valid:
        raise ValueError(
            f"unknown PettingZoo classic env {name!r}; valid names: {valid} "
            f"(for an OpenSpiel game set backend='openspiel')"
        )
    module = importlib.import_module(f"pettingzoo.classic.{name}")
    try:
        return module.env(**dict(params or {}))
    except TypeError as e:
        raise ValueError(f"PettingZoo env {name!r} rejected params {params}: {e}") from e


# Constructor arguments that change how an env is drawn, not the game it plays (render_mode,
# screen_height, connect four's screen_scaling, ...).
DISPLAY_PARAMS = re.compile(r"render_\w*|screen_\w*")


def pettingzoo_params(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The env's game parameters: constructor defaults updated with ``params``, display ones left out."""
    import inspect

    make_pettingzoo_env(name, params)  # unknown names and rejected params fail here, with the fix
    module = importlib.import_module(f"pettingzoo.classic.{name}")
    resolved: dict[str, Any] = {}
    raw = getattr(module, "raw_env", None)
    if raw is not None:
        for p in inspect.signature(raw).parameters.values():
            if p.default is not inspect.Parameter.empty:
                resolved[p.name] = p.default
    resolved.update(params or {})
    return {k: v for k, v in resolved.items() if not DISPLAY_PARAMS.fullmatch(k)}


def has_action_mask(env) -> bool:
    """Whether the observation of the agent to act (after ``reset``) is a dict holding ``action_mask``."""
    obs = env.unwrapped.observe(env.unwrapped.agent_selection) if env.unwrapped.agents else None
    return isinstance(obs, dict) and "action_mask" in obs


def masked_env_names() -> list[str]:
    """Classic envs the adapter can play: their observations carry an action mask."""
    out = []
    for name in classic_env_names():
        try:
            env = make_pettingzoo_env(name)
            env.reset(seed=0)
        except Exception:  # an env whose optional dependency is missing cannot be played either
            logger.debug("PettingZoo env %s does not build", name, exc_info=True)
            continue
        if has_action_mask(env):
            out.append(name)
    return out


class PettingZooGame:
    """One episode of a PettingZoo AEC classic env, seen as text (implements ``TextGame``)."""

    def __init__(self, name: str, params: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.name = name
        self.params = dict(params or {})
        self.seed = int(seed)
        self.env = make_pettingzoo_env(name, self.params)
        self.env.reset(seed=int(seed))
        if not has_action_mask(self.env):
            hint = " (a simultaneous-move game)" if self.env.metadata.get("is_parallelizable") else ""
            raise ValueError(
                f"PettingZoo env {name!r}{hint} gives no action_mask with its observations, so its legal "
                f"moves are unknown and it cannot be played as text; envs with an action mask: "
                f"{masked_env_names()}"
            )
        self._raw = self.env.unwrapped  # reads bypass the wrappers' attribute forwarding (same data)
        self.agents: list[str] = list(self.env.possible_agents)
        self.num_players = len(self.agents)
        self._index = {a: i for i, a in enumerate(self.agents)}
        self._returns = [0.0] * self.num_players
        self.history: list[int] = []  # action ids in order (all players)
        self._legal: list[str] | None = None
        self._done: bool | None = None  # cached is_terminal(), reset by every step
        self._skip_dead()

    # --- TextGame -----------------------------------------------------------------------------
    def is_terminal(self) -> bool:
        if self._done is None:
            env = self._raw
            self._done = not env.agents or all(
                env.terminations.get(a, False) or env.truncations.get(a, False) for a in env.agents
            )
        return self._done

    def current_player(self) -> int:
        return -1 if self.is_terminal() else self._index[self._raw.agent_selection]

    def returns(self) -> list[float]:
        return list(self._returns)

    def legal_actions(self) -> list[str]:
        if self._legal is None:
            if self.is_terminal():
                self._legal = []
            else:
                mask = self._observe(self._raw.agent_selection).get("action_mask")
                if mask is None:  # checked at construction; an env that drops it mid-game is broken
                    raise ValueError(f"PettingZoo env {self.name!r} stopped giving an action_mask")
                self._legal = [str(int(a)) for a in np.flatnonzero(mask)]
        return list(self._legal)

    def apply(self, action: str) -> None:
        legal = self.legal_actions()
        if action not in legal:
            raise ValueError(
                f"illegal action {str(action)[:64]!r} in {self.name} for player {self.current_player()}; "
                f"legal: {legal}"
            )
        a = int(action)
        self.env.step(a)
        self.history.append(a)
        self._collect_rewards()
        self._legal = None
        self._done = None
        self._skip_dead()

    def observation(self, player: int) -> str:
        if not 0 <= player < self.num_players:
            raise ValueError(f"player must be in [0, {self.num_players}), got {player}")
        render = RENDERERS.get(self.name, _render_generic)
        return render(self, player)

    def state_key(self) -> str:
        if not self._raw.agents:
            return f"{self.name}|-1|" + ",".join(map(str, self.history))
        obs = "/".join(np.asarray(self._observe(a)["observation"]).tobytes().hex() for a in self._raw.agents)
        return f"{self.name}|{self.current_player()}|{obs}"

    def clone(self) -> PettingZooGame:
        """Replays the moves on a fresh env reset with the same seed.

        PettingZoo envs pickle (and so deep-copy) as their constructor arguments, which would lose
        the state; classic envs are deterministic given the reset seed and the actions.
        """
        other = PettingZooGame(self.name, self.params, self.seed)
        for a in self.history:
            other.apply(str(a))
        return other

    # --- OpenSpiel twin (MCTS) ------------------------------------------------------------------
    def openspiel_state(self):
        """A pyspiel state equal to this one, for envs with an OpenSpiel twin; ``ValueError`` otherwise."""
        if self.name not in OPENSPIEL_TWINS:
            raise ValueError(
                f"PettingZoo env {self.name!r} has no OpenSpiel twin, so OpenSpiel bots (MCTS, CFR) cannot "
                f"play it; envs with a twin: {sorted(OPENSPIEL_TWINS)}; or play the OpenSpiel game directly"
            )
        from games.openspiel_game import load_openspiel_game

        os_name, pz_to_os, _ = OPENSPIEL_TWINS[self.name]
        # the twins take no game parameters; the env's own (display ones) must not reach OpenSpiel
        state = load_openspiel_game(os_name, pettingzoo_params(self.name, self.params)).new_initial_state()
        for a in self.history:
            state.apply_action(pz_to_os(a))
        return state

    def action_from_openspiel(self, action_id: int) -> str:
        """Canonical string of the legal move whose OpenSpiel twin id is ``action_id``."""
        _, _, os_to_pz = OPENSPIEL_TWINS[self.name]
        s = str(os_to_pz(int(action_id)))
        if s not in self.legal_actions():
            raise ValueError(f"OpenSpiel action {action_id} (PettingZoo {s}) is not legal in {self.name} now")
        return s

    # --- internals --------------------------------------------------------------------------------
    def _observe(self, agent: str) -> dict:
        obs = self._raw.observe(agent)
        return obs if isinstance(obs, dict) else {"observation": obs}

    def _collect_rewards(self) -> None:
        for agent, r in self._raw.rewards.items():
            self._returns[self._index[agent]] += float(r)

    def _skip_dead(self) -> None:
        """AEC: an agent that is done while others still play must be stepped with ``None``."""
        env = self._raw
        while env.agents and not self.is_terminal():
            agent = env.agent_selection
            if not (env.terminations.get(agent, False) or env.truncations.get(agent, False)):
                return
            self.env.step(None)
            self._done = None
            self._collect_rewards()


# --- renderers ---------------------------------------------------------------------------------------
def _planes(g: PettingZooGame, player: int) -> np.ndarray:
    return np.asarray(g._observe(g.agents[player])["observation"])


def _render_tictactoe(g: PettingZooGame, player: int) -> str:
    obs = _planes(g, player)  # (3, 3, 2): obs[i // 3, i % 3] is cell i; plane 0 = own marks
    own, opp = "xo"[player], "xo"[1 - player]
    lines = []
    for r in range(3):
        cells = []
        for c in range(3):
            i = 3 * c + r  # PettingZoo numbers cells column by column
            if obs[i // 3, i % 3, 0]:
                cells.append(own)
            elif obs[i // 3, i % 3, 1]:
                cells.append(opp)
            else:
                cells.append(str(i))
        lines.append(" " + " | ".join(cells))
    sep = "\n" + "+".join(["---"] * 3) + "\n"
    return f"You play {own}. Board (free cells show their number):\n" + sep.join(lines)


def _render_connect_four(g: PettingZooGame, player: int) -> str:
    obs = _planes(g, player)  # (6, 7, 2), row 0 at the top; plane 0 = own pieces
    own, opp = "xo"[player], "xo"[1 - player]
    rows, cols = obs.shape[:2]
    header = " " + " ".join(str(c % 10) for c in range(cols))
    body = []
    for r in range(rows):
        cells = [own if obs[r, c, 0] else opp if obs[r, c, 1] else "." for c in range(cols)]
        body.append("|" + " ".join(cells) + "|")
    return f"You play {own}. Board (columns numbered, pieces fall to the bottom):\n{header}\n" + "\n".join(
        body
    )


def _render_generic(g: PettingZooGame, player: int) -> str:
    obs = np.asarray(g._observe(g.agents[player])["observation"])
    text = np.array2string(obs, threshold=10**6, max_line_width=10**6)
    return f"You are {g.agents[player]} (player {player}). Observation {obs.shape}:\n{text}"


RENDERERS: dict[str, Callable[[PettingZooGame, int], str]] = {
    "tictactoe_v3": _render_tictactoe,
    "connect_four_v3": _render_connect_four,
}
