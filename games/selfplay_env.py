"""The self-play environment: one training step's games, played by the arena engine, recorded into the
step's ``TurnTree``.

Each step plays every game of the step's matchups together (``games.arena.play``): at every ply all
pending decisions of one learner (both of its seats in self-play) are generated in one ``Agent.act``
call (:class:`AgentPlayer`); fixed opponents (random, MCTS, CFR) and frozen league snapshots answer
through the ``games.opponents.Player`` protocol. A hook records every learner decision as a node:
G games from one start share a root, a game is one path (root -> its learner decisions in order),
``agent`` is the learner that spoke, ``role`` its seat, ``episode`` the game, ``turn`` the decision
index in the game, ``group`` the game's kind (same matchup and seat rotation).

Rewards are what the game paid (MARS turn rewards, Yuan et al. 2025): a player's final return sits on
its last turn of the game, 0 on its other turns, and a retried invalid output carries the invalid
penalty itself. What a credit rule reads from them (the raw turn rewards, or each turn's return-to-go)
is the rule's business (``marl.credit.RuleSpec``), not the environment's.

Shape legend: ``B`` games of a step, ``P`` seats, ``G`` games per start (group size), ``N`` tree nodes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.arena import game_stats, play
from games.dilemmas import STRATEGIES
from games.league import LLMPlayer, SnapshotPool, llm_decisions
from games.opponents import Player, make_opponent
from games.parsing import InvalidActionConfig
from games.text import GameConfig, TextGame, make_game
from marl.agent import Agent
from marl.seeding import stable_hash
from marl.tree import TurnTree

logger = logging.getLogger(__name__)

FIXED_OPPONENT = re.compile(r"(random|mcts[-_]?\d*|cfr[-_]?\d*|" + "|".join(map(re.escape, STRATEGIES)) + ")")
"""Specs of the non-learning players: random, MCTS, CFR and the social dilemmas' fixed strategies."""


# ------------------------------------------------------------------------------------------ config
@dataclass
class MatchupConfig:
    """One kind of training game: who sits in the seats, and how many such games each step."""

    players: list[str] = field(default_factory=list)
    """One spec per seat: a learner's name, 'snapshot:AGENT' (a frozen league snapshot), 'random', 'mcts-N'
    or 'cfr-N'. Players rotate through the seats, so each sits in each seat equally often."""
    games: int = 64
    """Games of this matchup per step, split evenly over the seat rotations."""


@dataclass
class LeagueConfig:
    """The snapshot pool that 'snapshot:AGENT' opponents are drawn from (uniformly)."""

    every: int = 0
    """Freeze every learner into the league every this many steps (step-0 weights always join); 0 = never."""
    max_per_agent: int = 0
    """Keep only this many most recent snapshots per agent; 0 keeps all."""


@dataclass
class PromptSettings:
    """How a learner sees a decision (the run config's ``prompt_format`` and ``game`` settings)."""

    prompt_format: str = "state"
    prompt_style: str = "compact"
    constrained: bool = True


def player_kind(spec: str, agents: list[str], where: str = "players") -> tuple[str, str]:
    """('agent', name) | ('snapshot', agent) | ('fixed', spec); the error lists what is valid."""
    if spec in agents:
        return "agent", spec
    if spec == "snapshot" and len(agents) == 1:
        return "snapshot", agents[0]
    if spec.startswith("snapshot:"):
        name = spec.split(":", 1)[1]
        if name in agents:
            return "snapshot", name
        raise ValueError(f"{where}: {spec!r} names no agent; agents: {sorted(agents)}")
    if FIXED_OPPONENT.fullmatch(spec.strip().lower()):
        return "fixed", spec
    raise ValueError(
        f"{where}: unknown player {spec!r}; valid: an agent ({sorted(agents)}), 'snapshot:AGENT', "
        "'random', 'mcts-N', 'cfr-N', or a dilemma strategy (always-cooperate, always-defect, tit-for-tat, "
        "grim-trigger)"
    )


def seat_rotations(players: list[str]) -> list[list[str]]:
    """Distinct cyclic rotations of the seat list: [a, b] -> [[a, b], [b, a]]; [a, a] -> [[a, a]]."""
    out: list[list[str]] = []
    for k in range(len(players)):
        r = players[k:] + players[:k]
        if r not in out:
            out.append(r)
    return out


def schedule_games(
    matchups: Sequence[MatchupConfig], group_size: int
) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """Seat specs of every game of a step (B lists), each game's start index (B,) and its kind (B,).

    Matchup m gives ``games / rotations`` games per seat rotation, in starts of ``group_size`` games
    that share one game seed. The kind numbers the (matchup, rotation) pairs: games of one kind have
    the same players in the same seats."""
    seats: list[list[str]] = []
    starts: list[int] = []
    kinds: list[int] = []
    g = kind = 0
    for m in matchups:
        rots = seat_rotations(list(m.players))
        per_rot = m.games // len(rots)
        for rot in rots:
            for _ in range(per_rot // group_size):
                seats.extend([list(rot)] * group_size)
                starts.extend([g] * group_size)
                kinds.extend([kind] * group_size)
                g += 1
            kind += 1
    return seats, np.asarray(starts, dtype=np.int64), np.asarray(kinds, dtype=np.int64)


# ------------------------------------------------------------------------------------------ math
def turn_rewards(
    game_of: np.ndarray,
    seat_of: np.ndarray,
    invalid: np.ndarray,
    final_returns: np.ndarray,
    *,
    penalty: float,
    paid_before: np.ndarray | None = None,
) -> np.ndarray:
    """What each learner turn (N,) was paid, from the games' final returns (B, P).

    MARS turn reward (Yuan et al. 2025): ``r_k^p`` is what player p receives between its k-th move and
    its next. ``paid_before`` (N,): the player's running return when it was asked for the turn (games
    that pay as they go, such as the rounds of an iterated dilemma); then ``r_k = C_{k+1} - C_k`` with
    ``C`` the running return at p's next turn, and the final return after its last. Without it (a
    game paid only at the end) ``r = R_p`` on p's last turn of the game and 0 on the others. Either
    way the turns of a player sum to its final return. An ``invalid`` turn that was retried (not the
    last) carries ``penalty``. Turns are node ids in time order, so a player's last turn in a game is
    its largest id.
    """
    n = game_of.shape[0]
    r_final = final_returns[game_of, seat_of]
    before = np.zeros(n) if paid_before is None else np.asarray(paid_before, dtype=np.float64)
    key = game_of.astype(np.int64) * (final_returns.shape[1] + 1) + seat_of
    order = np.lexsort((np.arange(n), key))  # by (game, seat), then time
    last = np.ones(n, dtype=bool)  # the player's last turn in its game
    last[order[:-1]] = key[order[:-1]] != key[order[1:]]
    after = r_final.copy()  # running return at the player's next turn (final after its last)
    nxt = np.empty(n, dtype=np.int64)
    nxt[order[:-1]] = order[1:]
    after[~last] = before[nxt[~last]]
    r = after - before
    r[invalid & ~last] = penalty  # a retried invalid output pays the penalty itself
    return r


def outcome_counts(returns: np.ndarray, seats: np.ndarray) -> tuple[float, float, float]:
    """(wins, draws, losses) of the given seat in each game; returns (B, P), seats (B,).

    Win = strictly best return, draw = tied best, loss otherwise (``arena.GameRecord.score``); in a
    one-player game the house is the other side, at 0."""
    if returns.shape[0] == 0:
        return 0.0, 0.0, 0.0
    mine = returns[np.arange(returns.shape[0]), seats]
    if returns.shape[1] == 1:
        best = np.zeros(returns.shape[0])
    else:
        other = returns.copy()
        other[np.arange(returns.shape[0]), seats] = -np.inf
        best = other.max(1)
    return float((mine > best).sum()), float((mine == best).sum()), float((mine < best).sum())


# ------------------------------------------------------------------------------------------ players
def make_fixed(spec: str, game: GameConfig, seed: int, cache: dict[str, Player] | None = None) -> Player:
    """A fixed opponent from its spec; CFR players (an expensive solved table) are reused from ``cache``."""
    key = spec.strip().lower()
    if key.startswith("cfr") and cache is not None and key in cache:
        return cache[key]
    player = make_opponent(key, game.name, seed=seed % 2**32, params=dict(game.params))
    player.name = spec
    if key.startswith("cfr") and cache is not None:
        cache[key] = player
    return player


def llm_player(name: str, agent: Agent, prompt: PromptSettings, greedy: bool, policy=None) -> LLMPlayer:
    """An arena player over ``agent``'s live policy (or ``policy``) with the run's prompt and mask."""
    s = agent.cfg.sampling
    return LLMPlayer(
        name,
        policy or agent.policy,
        prompt_format=prompt.prompt_format,
        prompt_style=prompt.prompt_style,
        constrained=prompt.constrained,
        greedy=greedy,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
    )


class AgentPlayer:
    """A learner in the arena: its pending decisions go through ``Agent.act`` (its own sampling
    settings and generator) in one call; ``last`` keeps that call's ``Decisions`` (tokens, sampling
    log-probs, allowed ids) for the tree recorder."""

    def __init__(self, agent: Agent, prompt: PromptSettings) -> None:
        self.name = agent.name
        self.agent = agent
        self.prompt = prompt
        self.last = None

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        agent = self.agent
        self.last = llm_decisions(
            agent.policy,
            games,
            players,
            lambda ids, proc: agent.act(ids, logits_processor=proc),
            prompt_format=self.prompt.prompt_format,
            prompt_style=self.prompt.prompt_style,
            constrained=self.prompt.constrained,
            temperature=agent.cfg.sampling.temperature,
        )
        return self.last.texts


# ------------------------------------------------------------------------------------------ playing
@dataclass
class StepGames:
    """The games of one training step and what happened in them."""

    games: list[TextGame]
    seats: list[list[str]]  # per game, the player spec in each seat
    returns: np.ndarray  # (B, P) final returns
    invalid: np.ndarray  # (B, P) invalid outputs per seat
    forfeit: np.ndarray  # (B,) seat that forfeited, -1 if none
    decisions: int = 0  # learner decisions generated
    opponent_decisions: int = 0
    per_agent: dict[str, int] = field(default_factory=dict)  # learner decisions per agent
    legal_mass: dict[str, float] = field(default_factory=dict)  # summed unmasked legal mass per agent
    forced_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # moves without a choice


def game_round(game: Any) -> int | None:
    """The round a game is in, if it counts rounds (an int attribute ``round``: the dilemma games),
    else None; what ``TreeRecorder`` puts in each decision's payload for ``credit.time_step: round``."""
    rnd = getattr(game, "round", None)
    return int(rnd) if isinstance(rnd, (int, np.integer)) and not isinstance(rnd, bool) else None


class TreeRecorder:
    """The arena hook that records every learner decision as a node of ``tree`` (mutates it).

    ``last_node[b]`` is the parent of game ``b``'s next node (its root at first); ``turn`` counts every
    decision of the game, opponents' and invalid ones included; ``state_hash`` (a stable hash of the
    full state) is filled when ``hash_states``; a game with rounds has each node's round in its payload
    (``data["round"]``).
    """

    def __init__(
        self, tree: TurnTree, games: list[TextGame], last_node: np.ndarray, episode0: int, hash_states: bool
    ):
        self.tree, self.games, self.last_node = tree, games, last_node
        self.episode0, self.hash_states = episode0, hash_states
        self.turns = np.zeros(len(games), dtype=np.int64)
        self.nodes: list[np.ndarray] = []
        self.game_of: list[np.ndarray] = []
        self.seat_of: list[np.ndarray] = []
        self.invalid: list[np.ndarray] = []
        self.paid_before: list[np.ndarray] = []  # each turn's player's running return when asked
        self.forced: list[bool] = []
        self.decisions = self.opponent_decisions = 0
        self.per_agent: dict[str, int] = {}
        self.legal_mass: dict[str, float] = {}

    def _data(self, dec, j: int, b: int) -> dict:
        """Payload data of decision ``j`` (game ``b``): the sampler's allowed ids, and the round of a
        game that counts rounds (an int attribute ``round``: the dilemma games), which
        ``credit.time_step: round`` reads."""
        data = {} if dec.allowed_ids is None else {"allowed_ids": dec.allowed_ids[j]}
        rnd = game_round(self.games[b])
        if rnd is not None:
            data["round"] = rnd
        return data

    def __call__(self, player, idx: list[int], seats: list[int], outputs: list[str], actions: list) -> None:
        ib = np.asarray(idx)
        if isinstance(player, AgentPlayer):
            dec, name = player.last, player.name
            hashes = [stable_hash(self.games[b].state_key()) for b in idx] if self.hash_states else 0
            payloads = [
                dec.gen.turn(j, dec.prompt_ids[j], text=dec.texts[j], data=self._data(dec, j, idx[j]))
                for j in range(len(idx))
            ]
            self.forced.extend(not dec.has_choice(j) for j in range(len(idx)))
            ids = self.tree.add_nodes(
                self.last_node[ib],
                agent=name,
                role=np.asarray(seats),
                episode=self.episode0 + ib,
                turn=self.turns[ib],
                state_hash=hashes,
                payloads=payloads,
            )
            self.last_node[ib] = ids
            self.nodes.append(ids)
            self.game_of.append(ib)
            self.seat_of.append(np.asarray(seats))
            self.paid_before.append(
                np.array([self.games[b].returns()[p] for b, p in zip(idx, seats)], dtype=float)
            )
            self.invalid.append(np.array([a is None for a in actions], dtype=bool))
            self.decisions += len(idx)
            self.per_agent[name] = self.per_agent.get(name, 0) + len(idx)
            if dec.legal_mass is not None:
                self.legal_mass[name] = self.legal_mass.get(name, 0.0) + float(dec.legal_mass.sum())
        else:
            self.opponent_decisions += len(idx)
        self.turns[ib] += 1


def play_step(
    tree: TurnTree,
    agents: Mapping[str, Agent],
    fixed: Mapping[str, Player],
    league: SnapshotPool,
    rng: np.random.Generator,
    *,
    game: GameConfig,
    matchups: Sequence[MatchupConfig],
    group_size: int,
    invalid: InvalidActionConfig,
    prompt: PromptSettings,
    hash_states: bool,
) -> StepGames:
    """Play all games of a step together, growing ``tree`` (mutates it): one node per learner decision,
    its reward what the game paid (module docstring). ``fixed`` maps each fixed-opponent spec of the
    matchups to its player; a 'snapshot:AGENT' seat draws one snapshot of AGENT from ``league`` per game.
    """
    seats, group_idx, kinds = schedule_games(matchups, group_size)
    n_groups = int(group_idx.max()) + 1 if group_idx.size else 0
    group_seeds = rng.integers(0, 2**31 - 1, size=n_groups)
    games = [make_game(game, int(group_seeds[gi])) for gi in group_idx]
    B = len(games)
    agent_names = list(agents)
    learners = {name: AgentPlayer(a, prompt) for name, a in agents.items()}
    snap_players: dict[str, Player] = {}
    players: list[list[Any]] = []
    for b, specs in enumerate(seats):
        if len(specs) != games[b].num_players:
            raise ValueError(f"{games[b].name} has {games[b].num_players} seats; matchup gives {specs}")
        row = []
        for spec in specs:
            kind, name = player_kind(spec, agent_names)
            if kind == "snapshot":
                snap = league.sample(name, rng, 1)[0]
                if snap.name not in snap_players:
                    snap_players[snap.name] = llm_player(snap.name, agents[name], prompt, False, snap.policy)
                row.append(snap_players[snap.name])
            else:
                row.append(fixed[spec] if kind == "fixed" else learners[name])
        players.append(row)

    root_kind = np.zeros(n_groups, dtype=np.int64)
    root_kind[group_idx] = kinds
    roots = (
        tree.add_nodes(np.full(n_groups, -1), agent=-1, group=root_kind)
        if n_groups
        else np.zeros(0, np.int64)
    )
    episode0 = int(tree.episode[roots].max()) + 1 if n_groups else 0
    last_node = roots[group_idx].copy() if B else np.zeros(0, np.int64)
    rec = TreeRecorder(tree, games, last_node, episode0, hash_states)
    records = play(games, players, rng, invalid, on_turns=rec)

    P = games[0].num_players if games else 2
    returns = np.array([r.returns for r in records], dtype=np.float64).reshape(B, P)
    invalid_count = np.zeros((B, P))
    for b, r in enumerate(records):
        for seat, _ in r.invalid:
            invalid_count[b, seat] += 1
    out = StepGames(
        games, seats, returns, invalid_count, np.array([r.forfeit for r in records], dtype=np.int64)
    )
    out.decisions, out.opponent_decisions = rec.decisions, rec.opponent_decisions
    out.per_agent, out.legal_mass = rec.per_agent, rec.legal_mass
    if rec.nodes:
        ids = np.concatenate(rec.nodes)
        game_of = np.concatenate(rec.game_of)
        r = turn_rewards(
            game_of,
            np.concatenate(rec.seat_of),
            np.concatenate(rec.invalid),
            returns,
            penalty=invalid.penalty,
            paid_before=np.concatenate(rec.paid_before),
        )
        tree.set_reward(ids, r)
        out.forced_nodes = ids[np.asarray(rec.forced, dtype=bool)]
        last_of_game = np.zeros(B, dtype=np.int64) - 1
        np.maximum.at(last_of_game, game_of, ids)
        tree.set_terminal(last_of_game[last_of_game >= 0])
    return out


def step_metrics(played: StepGames, agents: Mapping[str, Any]) -> dict[str, float]:
    """train/AGENT/{return,win,draw,loss,invalid_rate} over the seats each learner held this step, the
    per-seat statistics its games report (``train/AGENT/coop`` in the dilemmas) and
    ``train/collective_return`` (the mean over games of the sum of all seats' returns)."""
    out: dict[str, float] = {}
    seats = np.asarray(played.seats, dtype=object)
    for name in agents:
        rows, cols = np.nonzero(seats == name) if seats.size else (np.zeros(0, int), np.zeros(0, int))
        if rows.size == 0:
            continue
        w, d, lo = outcome_counts(played.returns[rows], cols)
        n = float(rows.size)
        out[f"train/{name}/return"] = float(played.returns[rows, cols].mean())
        out[f"train/{name}/win"], out[f"train/{name}/draw"], out[f"train/{name}/loss"] = w / n, d / n, lo / n
        if name in played.legal_mass:
            out[f"train/{name}/legal_mass"] = played.legal_mass[name] / max(played.per_agent.get(name, 0), 1)
        out[f"train/{name}/invalid_rate"] = float(played.invalid[rows, cols].sum()) / max(
            played.per_agent.get(name, 0), 1
        )
    out["train/forfeits"] = float((played.forfeit >= 0).sum())
    if played.returns.size:
        out["train/collective_return"] = float(played.returns.sum(1).mean())
    stats = [game_stats(g) if g.is_terminal() else {} for g in played.games]
    for key in sorted({k for st in stats for k in st}):  # per-seat game statistics (dilemmas: coop)
        table = np.array([st.get(key, [np.nan] * seats.shape[1]) for st in stats], dtype=np.float64)
        for name in agents:
            mask = (seats == name) & np.isfinite(table)
            if mask.any():
                out[f"train/{name}/{key}"] = float(table[mask].mean())
    return out
