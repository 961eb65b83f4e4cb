"""The self-play environment: turn rewards, the game schedule, batched play into the turn tree."""

import numpy as np
import pytest

import games.selfplay_env as env
from games.league import SnapshotPool
from games.opponents import RandomPlayer
from marl.runner import Runner
from marl.scenario import make_agents
from marl.tree import TurnTree
from tests.games.test_selfplay import _cfg


def test_turn_rewards_outcome_on_last_turn_and_retried_invalid():
    # game 0: seat 0 moves at nodes 0, 2, 4, seat 1 at 1, 3; final returns (+1, -1). game 1: seat 0 once.
    game = np.array([0, 0, 0, 0, 0, 1])
    seat = np.array([0, 1, 0, 1, 0, 0])
    returns = np.array([[1.0, -1.0], [0.0, 0.0]])
    none = np.zeros(6, bool)
    # MARS: the outcome sits on each player's last turn (nodes 4 and 3), 0 elsewhere
    np.testing.assert_array_equal(
        env.turn_rewards(game, seat, none, returns, penalty=-1.0), [0, 0, 0, -1, 1, 0]
    )
    # a retried invalid output (node 2, not seat 0's last word) pays the penalty itself
    inv = np.array([0, 0, 1, 0, 0, 0], bool)
    np.testing.assert_array_equal(
        env.turn_rewards(game, seat, inv, returns, penalty=-2.0), [0, 0, -2, -1, 1, 0]
    )
    # a forfeit is the offender's last turn: it carries the final (forfeit) return, here -1
    inv = np.array([0, 0, 0, 0, 1, 0], bool)
    r = env.turn_rewards(game, seat, inv, np.array([[-1.0, 1.0], [0, 0]]), penalty=-1.0)
    np.testing.assert_array_equal(r, [0, 0, 0, 1, -1, 0])


def test_outcome_counts_hand_values():
    # seat 0 of: a win (1 > -1), a draw (0 == 0), a loss (-1 < 1); seat 1 of the same games reversed
    ret = np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]])
    assert env.outcome_counts(ret, np.array([0, 0, 0])) == (1.0, 1.0, 1.0)
    assert env.outcome_counts(ret, np.array([1, 1, 0])) == (0.0, 1.0, 2.0)


def test_seat_rotations_and_schedule():
    assert env.seat_rotations(["a", "b"]) == [["a", "b"], ["b", "a"]]
    assert env.seat_rotations(["a", "a"]) == [["a", "a"]]
    matchups = [env.MatchupConfig(["a", "random"], 8), env.MatchupConfig(["a", "a"], 4)]
    seats, starts, kinds = env.schedule_games(matchups, group_size=2)
    assert seats == [["a", "random"]] * 4 + [["random", "a"]] * 4 + [["a", "a"]] * 4
    np.testing.assert_array_equal(starts, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # G = 2 games per start
    np.testing.assert_array_equal(kinds, [0] * 4 + [1] * 4 + [2] * 4)


# ------------------------------------------------------------------------------------------ playing
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    cfg = _cfg(tmp)
    runner = Runner(cfg, cfg.run, "selfplay")
    agents = make_agents(cfg, runner.cache_dir)
    return cfg, agents


def _play(cfg, agents, seed=0):
    league = SnapshotPool({n: a.policy for n, a in agents.items()})
    for n in agents:
        league.add(n, 0)
    tree = TurnTree(list(agents))
    calls = {n: [] for n in agents}
    for n, a in agents.items():
        a._orig_act = a.act
        a.act = lambda ids, n=n, a=a, **kw: calls[n].append(len(ids)) or a._orig_act(ids, **kw)
    try:
        played = env.play_step(
            tree,
            agents,
            {"random": RandomPlayer()},
            league,
            np.random.default_rng(seed),
            game=cfg.game,
            matchups=cfg.matchups,
            group_size=cfg.group_size,
            invalid=cfg.invalid,
            prompt=cfg.prompt,
            hash_states=True,
        )
    finally:
        for a in agents.values():
            a.act = a._orig_act
    return tree, played, calls


def test_play_step_grows_one_path_per_game_and_batches_each_ply(toy):
    cfg, agents = toy
    tree, played, calls = _play(cfg, agents)
    B = len(played.games)
    assert B == 16 and all(g.is_terminal() for g in played.games)
    roots = tree.roots()
    assert len(roots) == B and (tree.agent[roots] == -1).all()  # group_size 1: a root per game
    nodes = np.flatnonzero(tree.agent >= 0)
    # every learner node: its agent sits in its role's seat of its game, turns increase along the path
    for i in nodes:
        b = int(tree.episode[i]) - int(tree.episode[roots].max()) - 1
        assert played.seats[b][int(tree.role[i])] == tree.agent_names[int(tree.agent[i])]
        p = int(tree.parent[i])
        if tree.agent[p] >= 0:
            assert tree.turn[p] < tree.turn[i] and tree.episode[p] == tree.episode[i]
    # one act call per agent per ply (<= 9 plies), holding all its pending games: at ply 0 small is
    # x in 4 games against large and 2 against random; large is x in 4 against small and 2 against itself
    assert sum(calls["small"]) + sum(calls["large"]) == played.decisions == len(nodes)
    assert len(calls["small"]) <= 9 and len(calls["large"]) <= 9
    assert calls["small"][0] == 6 and calls["large"][0] == 6
    # group = kind of game (matchup, rotation): 2 rotations of small/large, of small/random, 1 of self
    assert sorted(set(tree.group[roots].tolist())) == [0, 1, 2, 3, 4, 5]
    # rewards: what the game paid, the final return on each learner's last turn of the game, 0 before
    r = tree.reward[nodes]
    key = tree.episode[nodes] * 4 + tree.role[nodes]
    last = np.array([tree.turn[i] == tree.turn[nodes[key == k]].max() for i, k in zip(nodes, key)])
    assert np.isfinite(r).all() and (r[~last] == 0).all() and tree.terminal[nodes].sum() == B
    b_of = tree.episode[nodes] - int(tree.episode[roots].max()) - 1
    np.testing.assert_array_equal(r[last], played.returns[b_of[last], tree.role[nodes][last]])
    # state hashes are the games' own state keys
    assert (tree.state_hash[nodes] != 0).all()
