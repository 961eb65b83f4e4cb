"""Self-play recipe: LLM agents learn board and card games by playing them, many games at once.

Each step plays ``sum(matchup.games)`` games together. At every ply all pending decisions of one
learner (both of its seats in self-play) are generated in one ``Agent.act`` call; fixed opponents
(random, MCTS, CFR) and frozen league snapshots answer through the ``games.opponents.Player``
protocol. Every learner decision is a node of the step's ``TurnTree``: G games from one start share
a root, a game is one path (root -> its learner decisions in order), ``agent`` is the learner that
spoke, ``role`` its seat, ``episode`` the game and ``turn`` the decision index in the game.

Turn rewards follow MARS (Yuan et al. 2025): the player's final return sits on its last turn and 0
on the others (``turn_reward: last``); rules that compare whole games (GRPO over games from one
start, SPIRAL's role-conditioned baseline) instead see the final return on every turn of the player
(``turn_reward: all``). An output that does not parse to a legal action ends the game by forfeit
(or is retried), and that turn carries ``invalid.penalty``. Credit is the core's
(``marl.credit``: ``mars_turn`` by default, ``spiral_rae``, ``grpo``, ...); the samples are routed
to each agent's own optimizer by ``marl.samples.tree_to_batches``.

Shape legend: ``B`` games of a step, ``G`` games per start (group size), ``N`` tree nodes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from games.arena import play_games, round_robin
from games.league import PROMPT_FORMATS, LLMPlayer, SnapshotPool, llm_decisions
from games.opponents import Player, make_opponent
from games.parsing import InvalidActionConfig, forfeit_returns, parse_action
from games.ratings import fit_bradley_terry
from games.text import GameConfig, TextGame, make_game
from marl.agent import Agent
from marl.agent import build_agents as make_agents
from marl.config import AgentConfig, RunSettings
from marl.credit import CreditAssigner, CreditConfig
from marl.runner import Runner
from marl.samples import tree_to_batches
from marl.seeding import derive_seed
from marl.tree import TurnTree
from marl.types import Turn

logger = logging.getLogger(__name__)

FIXED_OPPONENT = re.compile(r"(random|mcts[-_]?\d*|cfr[-_]?\d*)")
TURN_REWARDS = ("auto", "last", "all")
# rules that read rewards along a player's turns (returns-to-go): the outcome sits on the last turn
LAST_TURN_RULES = ("mars_turn", "gigpo", "advantage_alignment")


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
class SelfPlayConfig:
    """Run config of the self-play recipe."""

    recipe: str = "selfplay"
    """Recipe name (selects this schema)."""
    run: RunSettings = field(default_factory=RunSettings)
    """Seed, steps, run directory, checkpoint and eval schedule."""
    agents: dict[str, AgentConfig] = field(default_factory=dict)
    """Learning agents by name; each has its own model, optimizer, loss, sampling and normaliser."""
    game: GameConfig = field(default_factory=GameConfig)
    """The game, its backend, prompt style and whether sampling is masked to legal actions."""
    prompt_format: str = "state"
    """'state' (shortest faithful view: board cells / information state + seat) or 'game' (games.prompts
    in game.prompt_style)."""
    invalid: InvalidActionConfig = field(default_factory=InvalidActionConfig)
    """What an unparseable output costs (forfeit or retry) and its penalty."""
    credit: CreditConfig = field(default_factory=lambda: CreditConfig(rule="mars_turn"))
    """Credit rule over the turn tree (MARS turn-level by default), its keys and normaliser."""
    turn_reward: str = "auto"
    """'last' (final return on a player's last turn, MARS), 'all' (on every turn; GRPO over games, SPIRAL)
    or 'auto' (last for mars_turn/gigpo/advantage_alignment, else all)."""
    outcome_gamma: float = 1.0
    """turn_reward 'all': turn k of a player's n turns gets outcome_gamma^(n-1-k) x its final return."""
    matchups: list[MatchupConfig] = field(default_factory=list)
    """The training games of one step."""
    group_size: int = 1
    """G: games from one start (same game seed, same seats) that share a tree root."""
    league: LeagueConfig = field(default_factory=LeagueConfig)
    """Snapshot pool of the learners."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Scheduled evaluation against fixed opponents."""
    final: FinalTournamentConfig = field(default_factory=FinalTournamentConfig)
    """Round robin after training."""

    def validate(self) -> None:
        if not self.agents:
            raise ValueError("agents: declare at least one learning agent")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format {self.prompt_format!r} is not one of {list(PROMPT_FORMATS)}")
        if self.turn_reward not in TURN_REWARDS:
            raise ValueError(f"turn_reward {self.turn_reward!r} is not one of {list(TURN_REWARDS)}")
        if self.credit.rule in LAST_TURN_RULES and self.turn_reward == "all":
            raise ValueError(
                f"turn_reward 'all' with credit.rule {self.credit.rule!r} centres every turn's reward to 0 "
                "inside each game; use turn_reward: last (or auto)"
            )
        if not self.matchups:
            raise ValueError(
                "matchups: declare at least one, e.g. [{players: [NAME, NAME], games: 128}] for self-play"
            )
        if not 0.0 < self.outcome_gamma <= 1.0:
            raise ValueError(f"outcome_gamma ({self.outcome_gamma}) must be in (0, 1]")
        if self.group_size < 1:
            raise ValueError(f"group_size ({self.group_size}) must be >= 1")
        for i, m in enumerate(self.matchups):
            where = f"matchups[{i}]"
            for spec in m.players:
                player_kind(spec, list(self.agents), where)
            if not any(s in self.agents for s in m.players):
                raise ValueError(
                    f"{where}: {m.players} has no learning agent (agents: {sorted(self.agents)})"
                )
            rot = len(seat_rotations(m.players))
            if m.games < 1 or m.games % (rot * self.group_size):
                raise ValueError(
                    f"{where}.games ({m.games}) must be a positive multiple of seat rotations ({rot}) x "
                    f"group_size ({self.group_size})"
                )
        for spec in [*self.eval.opponents, *self.final.opponents]:
            if not FIXED_OPPONENT.fullmatch(spec.strip().lower()):
                raise ValueError(f"opponent {spec!r} must be 'random', 'mcts-N' or 'cfr-N'")
        if self.final.opponents and (self.final.games_per_pair < 2 or self.final.games_per_pair % 2):
            raise ValueError(f"final.games_per_pair ({self.final.games_per_pair}) must be even and >= 2")
        if self.eval.games_per_seat < 1:
            raise ValueError(f"eval.games_per_seat ({self.eval.games_per_seat}) must be >= 1")


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
        "'random', 'mcts-N', 'cfr-N'"
    )


def seat_rotations(players: list[str]) -> list[list[str]]:
    """Distinct cyclic rotations of the seat list: [a, b] -> [[a, b], [b, a]]; [a, a] -> [[a, a]]."""
    out: list[list[str]] = []
    for k in range(len(players)):
        r = players[k:] + players[:k]
        if r not in out:
            out.append(r)
    return out


def resolved_turn_reward(turn_reward: str, rule: str) -> str:
    """'auto' -> 'last' for rules over returns-to-go (mars_turn, gigpo, advantage_alignment), else 'all'."""
    if turn_reward != "auto":
        return turn_reward
    return "last" if rule in LAST_TURN_RULES else "all"


# ------------------------------------------------------------------------------------------ math
def turn_rewards(
    game_of: np.ndarray,
    seat_of: np.ndarray,
    invalid: np.ndarray,
    final_returns: np.ndarray,
    *,
    scheme: str,
    penalty: float,
    gamma: float = 1.0,
) -> np.ndarray:
    """Reward of each learner turn (N,) from the games' final returns (B, P).

    MARS turn reward (Yuan et al. 2025): ``r_k^p`` is what player p receives between its k-th move and
    its next, so in a game paid only at the end ``r = R_p`` on p's last turn of the game and 0 on the
    others (``scheme='last'``); ``scheme='all'`` puts ``R_p`` on every turn of p (the game-level outcome
    of GRPO over games and SPIRAL). An ``invalid`` turn that was retried carries ``penalty``. Turns are
    node ids in time order, so a player's last turn in a game is its largest id.
    """
    n = game_of.shape[0]
    r_final = final_returns[game_of, seat_of]
    key = game_of.astype(np.int64) * (final_returns.shape[1] + 1) + seat_of
    order = np.lexsort((np.arange(n), key))  # by (game, seat), then time
    last = np.ones(n, dtype=bool)  # the player's last turn in its game
    last[order[:-1]] = key[order[:-1]] != key[order[1:]]
    if scheme == "all":
        # turns left after each turn, within its (game, seat): count from the end of each run
        ks = key[order]
        start = np.ones(n, dtype=bool)
        start[1:] = ks[1:] != ks[:-1]
        run_id = np.cumsum(start) - 1
        run_len = np.bincount(run_id)
        pos = np.arange(n) - np.flatnonzero(start)[run_id]
        left = np.empty(n, dtype=np.int64)
        left[order] = run_len[run_id] - 1 - pos
        r = r_final * np.power(float(gamma), left)
    elif scheme == "last":
        r = np.where(last, r_final, 0.0)
    else:
        raise ValueError(f"turn reward scheme {scheme!r} is not 'last' or 'all'")
    r[invalid & ~last] = penalty  # a retried invalid output pays the penalty itself
    return r


def outcome_counts(returns: np.ndarray, seats: np.ndarray) -> tuple[float, float, float]:
    """(wins, draws, losses) of the given seat in each game; returns (B, P), seats (B,).

    Win = strictly best return, draw = tied best, loss otherwise (``arena.GameRecord.score``)."""
    if returns.shape[0] == 0:
        return 0.0, 0.0, 0.0
    mine = returns[np.arange(returns.shape[0]), seats]
    other = returns.copy()
    other[np.arange(returns.shape[0]), seats] = -np.inf
    best = other.max(1)
    return float((mine > best).sum()), float((mine == best).sum()), float((mine < best).sum())


def stable_hash(text: str) -> int:
    """A process-independent int64 hash of ``text`` (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


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


def llm_player(name: str, agent: Agent, cfg: SelfPlayConfig, greedy: bool, policy=None) -> LLMPlayer:
    """An arena player over ``agent``'s live policy (or ``policy``) with the run's prompt and mask."""
    s = agent.cfg.sampling
    return LLMPlayer(
        name,
        policy or agent.policy,
        prompt_format=cfg.prompt_format,
        prompt_style=cfg.game.prompt_style,
        constrained=cfg.game.constrained_sampling,
        greedy=greedy,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
    )


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


def schedule_games(
    cfg: SelfPlayConfig,
) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """Seat specs of every game of a step (B lists), each game's start index (B,) and its kind (B,).

    Matchup m gives ``games / rotations`` games per seat rotation, in starts of ``group_size`` games
    that share one game seed. The kind numbers the (matchup, rotation) pairs: games of one kind have
    the same players in the same seats."""
    seats: list[list[str]] = []
    starts: list[int] = []
    kinds: list[int] = []
    g = kind = 0
    for m in cfg.matchups:
        rots = seat_rotations(list(m.players))
        per_rot = m.games // len(rots)
        for rot in rots:
            for _ in range(per_rot // cfg.group_size):
                seats.extend([list(rot)] * cfg.group_size)
                starts.extend([g] * cfg.group_size)
                kinds.extend([kind] * cfg.group_size)
                g += 1
            kind += 1
    return seats, np.asarray(starts, dtype=np.int64), np.asarray(kinds, dtype=np.int64)


def play_step(
    cfg: SelfPlayConfig,
    agents: Mapping[str, Agent],
    fixed: Mapping[str, Player],
    league: SnapshotPool,
    tree: TurnTree,
    rng: np.random.Generator,
) -> StepGames:
    """Play all games of a step together, growing ``tree`` (mutates it): one node per learner decision.

    Tree fields: a root per start (``root``: G games from one start share it), ``group`` = the game's
    kind (same matchup and seat rotation, so a ``[group, agent, role]`` key compares a player only
    with itself against the same opponent in the same seat), ``agent`` = the learner, ``role`` = its
    seat, ``episode`` = the game, ``turn`` = the decision index in the game, ``state_hash`` = a stable
    hash of the full state (when the credit keys use it).

    Each round gathers every active game's pending decision and groups them by who decides: each
    learner answers all of its pending decisions in one ``Agent.act`` call, each opponent (fixed
    or snapshot) in one ``Player.act`` call. Rewards are set on the nodes once all games are over.
    """
    seats, group_idx, kinds = schedule_games(cfg)
    n_groups = int(group_idx.max()) + 1 if group_idx.size else 0
    group_seeds = rng.integers(0, 2**31 - 1, size=n_groups)
    games = [make_game(cfg.game, int(group_seeds[gi])) for gi in group_idx]
    B = len(games)
    P = games[0].num_players if games else 2
    for b, s in enumerate(seats):
        if len(s) != games[b].num_players:
            raise ValueError(f"{games[b].name} has {games[b].num_players} seats; matchup gives {s}")
    agent_names = list(agents)
    # opponents: snapshot seats draw one snapshot per game
    actor = [[("", "")] * P for _ in range(B)]  # (kind, key) per seat
    snap_players: dict[str, Player] = {}
    for b in range(B):
        for p, spec in enumerate(seats[b]):
            kind, name = player_kind(spec, agent_names)
            if kind == "snapshot":
                snap = league.sample(name, rng, 1)[0]
                if snap.name not in snap_players:
                    snap_players[snap.name] = llm_player(
                        snap.name, agents[name], cfg, greedy=False, policy=snap.policy
                    )
                actor[b][p] = ("player", snap.name)
            elif kind == "fixed":
                actor[b][p] = ("player", spec)
            else:
                actor[b][p] = ("agent", name)
    players: dict[str, Player] = {**fixed, **snap_players}

    root_kind = np.zeros(n_groups, dtype=np.int64)
    root_kind[group_idx] = kinds
    roots = (
        tree.add_nodes(np.full(n_groups, -1), agent=-1, group=root_kind)
        if n_groups
        else np.zeros(0, np.int64)
    )
    episode0 = int(tree.episode[roots].max()) + 1 if n_groups else 0
    last_node = roots[group_idx].copy() if B else np.zeros(0, np.int64)  # (B,) parent of the next node
    n_decisions = np.zeros(B, dtype=np.int64)
    attempts = np.zeros(B, dtype=np.int64)
    returns = np.zeros((B, P))
    invalid_count = np.zeros((B, P))
    forfeit = np.full(B, -1, dtype=np.int64)
    need_hash = "state_hash" in (
        list(cfg.credit.group_key)
        + list(cfg.credit.player_key)
        + (list(cfg.credit.anchor_key) if cfg.credit.rule == "gigpo" else [])
    )
    node_ids: list[np.ndarray] = []
    node_game: list[np.ndarray] = []
    node_seat: list[np.ndarray] = []
    node_invalid: list[np.ndarray] = []
    forced: list[bool] = []  # per learner node in creation order: the mask left a single action
    out = StepGames(games, seats, returns, invalid_count, forfeit)
    max_attempts = cfg.invalid.max_attempts

    active = [b for b in range(B) if not games[b].is_terminal()]
    while active:
        groups: dict[tuple[str, str], list[int]] = {}
        for b in active:
            groups.setdefault(actor[b][games[b].current_player()], []).append(b)
        done: set[int] = set()
        for (kind, key), idx in groups.items():
            gs = [games[b] for b in idx]
            seat = [g.current_player() for g in gs]
            legal = [g.legal_actions() for g in gs]
            hashes = [stable_hash(g.state_key()) for g in gs] if need_hash else 0
            if kind == "agent":
                agent = agents[key]
                dec = llm_decisions(
                    agent.policy,
                    gs,
                    seat,
                    lambda ids, proc, agent=agent: agent.act(ids, logits_processor=proc),
                    prompt_format=cfg.prompt_format,
                    prompt_style=cfg.game.prompt_style,
                    constrained=cfg.game.constrained_sampling,
                    temperature=agent.cfg.sampling.temperature,
                )
                texts = dec.texts
                payloads = [
                    Turn(
                        prompt_ids=np.asarray(dec.prompt_ids[j], dtype=np.int32),
                        completion_ids=dec.gen.tokens[j, : int(dec.gen.lengths[j])].numpy().astype(np.int32),
                        logprobs=dec.logprobs[j],
                        text=texts[j],
                        finish_reason=dec.gen.finish_reasons[j],
                        data={} if dec.allowed_ids is None else {"allowed_ids": dec.allowed_ids[j]},
                    )
                    for j in range(len(idx))
                ]
                ib = np.asarray(idx)
                forced.extend(not dec.has_choice(j) for j in range(len(idx)))
                ids = tree.add_nodes(
                    last_node[ib],
                    agent=key,
                    role=np.asarray(seat),
                    episode=episode0 + ib,
                    turn=n_decisions[ib],
                    state_hash=hashes,
                    payloads=payloads,
                )
                last_node[ib] = ids
                node_ids.append(ids)
                node_game.append(ib)
                node_seat.append(np.asarray(seat))
                out.decisions += len(idx)
                out.per_agent[key] = out.per_agent.get(key, 0) + len(idx)
                if dec.legal_mass is not None:
                    out.legal_mass[key] = out.legal_mass.get(key, 0.0) + float(dec.legal_mass.sum())
            else:
                texts = players[key].act(gs, seat, rng)
                if len(texts) != len(idx):
                    raise ValueError(f"player {key!r} returned {len(texts)} outputs for {len(idx)} decisions")
                out.opponent_decisions += len(idx)
            bad = np.zeros(len(idx), dtype=bool)
            for j, (b, g, p, text) in enumerate(zip(idx, gs, seat, texts)):
                n_decisions[b] += 1
                action = parse_action(text, legal[j])
                if action is None:
                    bad[j] = True
                    invalid_count[b, p] += 1
                    attempts[b] += 1
                    if attempts[b] >= max_attempts:
                        forfeit[b] = p
                        returns[b] = forfeit_returns(g.num_players, p, cfg.invalid.penalty)
                        done.add(b)
                    continue
                attempts[b] = 0
                g.apply(action)
                if g.is_terminal():
                    returns[b] = g.returns()
                    done.add(b)
            if kind == "agent":
                node_invalid.append(bad)
        active = [b for b in active if b not in done]

    # rewards on the learner turns, from the final returns
    if node_ids:
        ids = np.concatenate(node_ids)
        scheme = resolved_turn_reward(cfg.turn_reward, cfg.credit.rule)
        r = turn_rewards(
            np.concatenate(node_game),
            np.concatenate(node_seat),
            np.concatenate(node_invalid),
            returns,
            scheme=scheme,
            penalty=cfg.invalid.penalty,
            gamma=cfg.outcome_gamma,
        )
        tree.set_reward(ids, r)
        out.forced_nodes = ids[np.asarray(forced, dtype=bool)]
        game_of = np.concatenate(node_game)
        last_of_game = np.zeros(B, dtype=np.int64) - 1
        np.maximum.at(last_of_game, game_of, ids)
        tree.set_terminal(last_of_game[last_of_game >= 0])
    return out


# ------------------------------------------------------------------------------------------ eval
def evaluate(
    cfg: SelfPlayConfig, agents: Mapping[str, Agent], seed: int, cfr_cache: dict[str, Player] | None = None
) -> dict[str, float]:
    """Each agent against each fixed opponent, ``games_per_seat`` games in each seat.

    Logs ``eval/AGENT/OPP/{win,draw,loss,nonloss,invalid}`` and ``games/elo/AGENT``: a Bradley–Terry fit
    over these games (1 virtual draw per pair) with the first opponent at 0.
    """
    metrics: dict[str, float] = {}
    opp_specs = list(cfg.eval.opponents)
    names = list(agents) + opp_specs
    A = len(names)
    wins, draws = np.zeros((A, A)), np.zeros((A, A))
    n = cfg.eval.games_per_seat
    for i, (name, agent) in enumerate(agents.items()):
        llm = llm_player(name, agent, cfg, greedy=cfg.eval.greedy)
        for k, spec in enumerate(opp_specs):
            j = len(agents) + k
            w = d = lo = inv = 0.0
            for seat in range(2):
                s = derive_seed(seed, "eval", name, spec, seat)
                opp = make_fixed(spec, cfg.game, s, cfr_cache)
                seated = [llm, opp] if seat == 0 else [opp, llm]
                recs = play_games(cfg.game, seated, n, seed=s, invalid=cfg.invalid)
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
    cfg: SelfPlayConfig,
    agents: Mapping[str, Agent],
    runner: Runner,
    cfr_cache: dict[str, Player] | None = None,
) -> dict[str, float]:
    """Round robin of the agents and ``final.opponents``; writes tournament.{md,json,png} to the run dir."""
    if not cfg.final.opponents:
        return {}
    seed = derive_seed(cfg.run.seed, "final")
    players: dict[str, Player] = {
        n: llm_player(n, a, cfg, greedy=cfg.final.greedy) for n, a in agents.items()
    }
    for spec in cfg.final.opponents:
        players[spec] = make_fixed(spec, cfg.game, derive_seed(seed, spec), cfr_cache)
    result = round_robin(cfg.game, players, cfg.final.games_per_pair, seed=seed, invalid=cfg.invalid)
    md = result.to_markdown()
    (runner.dir / "tournament.md").write_text(md)
    result.to_json(runner.dir / "tournament.json")
    result.plot(runner.dir / "tournament.png")
    logger.info("final tournament (%s):\n%s", runner.dir / "tournament.md", md)
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


# ------------------------------------------------------------------------------------------ train
def build_agents(cfg: SelfPlayConfig, runner: Runner) -> dict[str, Agent]:
    return make_agents(cfg.agents, cache_dir=runner.cache_dir, total_steps=cfg.run.steps, seed=cfg.run.seed)


def train(cfg: SelfPlayConfig, runner: Runner) -> dict[str, float]:
    """The whole loop, top to bottom: play (grow tree) → rewards → credit → per-agent learn → league → log."""
    seed = cfg.run.seed
    agents = build_agents(cfg, runner)
    for name, a in agents.items():
        logger.info("agent %s: %d parameters (%d trainable)", name, a.num_params, a.num_trainable)
    credit = CreditAssigner(cfg.credit)
    league = SnapshotPool({n: a.policy for n, a in agents.items()}, cfg.league.max_per_agent)
    rng = np.random.default_rng(derive_seed(seed, "games"))
    cfr_cache: dict[str, Player] = {}
    extra = {"credit": credit, "rng": rng, "league": league}

    start = runner.restore(agents, extra=extra)
    if start == 0:
        for name in agents:
            league.add(name, 0)
        if cfg.run.eval_every > 0:
            runner.log(0, evaluate(cfg, agents, derive_seed(seed, "eval", 0), cfr_cache))
    last: dict[str, float] = {}
    fixed_specs = sorted({s for m in cfg.matchups for s in m.players if FIXED_OPPONENT.fullmatch(s.lower())})
    for step in runner.steps(start):
        t0 = time.perf_counter()
        # 1. play every game of the step together; each learner decision becomes a tree node
        fixed = {
            s: make_fixed(s, cfg.game, derive_seed(seed, "opponent", step, s), cfr_cache) for s in fixed_specs
        }
        tree = TurnTree(list(agents))
        played = play_step(cfg, agents, fixed, league, tree, rng)
        t_play = time.perf_counter() - t0
        # 2. rewards were set by play_step from the final returns; 3. credit on the whole tree
        result = credit(tree)
        # a forced move (the mask left one action) teaches nothing
        keep = result.train_mask & ~np.isin(result.nodes, played.forced_nodes)
        batches = tree_to_batches(tree, result.nodes, result.advantages, keep, pad_id=0)
        # 4. each agent learns from its own turns with its own optimizer
        metrics: dict[str, float] = dict(result.metrics)
        for name, agent in agents.items():
            if name in batches:
                for k, v in agent.learn(batches[name]).items():
                    metrics[f"agent/{name}/{k}"] = v
        t_learn = time.perf_counter() - t0 - t_play
        # 5. league: frozen snapshots join the opponent pool
        if cfg.league.every > 0 and step % cfg.league.every == 0:
            for name in agents:
                league.add(name, step)
        # 6. metrics, evaluation, checkpoint
        metrics.update(step_metrics(played, agents))
        metrics["train/decisions_per_s"] = (played.decisions + played.opponent_decisions) / max(t_play, 1e-9)
        metrics["train/games_per_s"] = len(played.games) / max(t_play, 1e-9)
        metrics["time/play_s"], metrics["time/learn_s"] = t_play, t_learn
        metrics["games/league_size"] = float(len(league))
        if runner.should_eval(step) and cfg.run.eval_every > 0:
            metrics.update(evaluate(cfg, agents, derive_seed(seed, "eval", step), cfr_cache))
        if step == cfg.run.steps:
            metrics.update(final_tournament(cfg, agents, runner, cfr_cache))
        runner.log(step, metrics)
        runner.maybe_checkpoint(step, agents, extra=extra)
        last = metrics
    runner.finish(agents)
    return last


def step_metrics(played: StepGames, agents: Mapping[str, Any]) -> dict[str, float]:
    """train/AGENT/{return,win,draw,loss,invalid_rate} over the seats each learner held this step."""
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
    return out


def evaluate_run(cfg: SelfPlayConfig, runner: Runner) -> dict[str, float]:
    """Scheduled-evaluation metrics of the agents in the run's latest checkpoint."""
    agents = build_agents(cfg, runner)
    step = runner.load_latest(agents)
    return evaluate(cfg, agents, derive_seed(cfg.run.seed, "eval", step))


Config = SelfPlayConfig

SMOKE_OVERRIDES = ["run.steps=2", "run.eval_every=1", "eval.games_per_seat=2", "final.games_per_pair=2"]
"""Overrides that shrink any config of this recipe to a seconds-long smoke run (used by tests)."""
