"""Batched play, round robins, and the tournament reports."""

import json

import numpy as np
import pytest

from games.arena import GameRecord, play_games, round_robin
from games.opponents import MCTSPlayer, RandomPlayer
from games.parsing import InvalidActionConfig
from games.text import GameConfig


class CountingPlayer(RandomPlayer):
    """Random player that records the batch of every act() call."""

    def __init__(self, name="counting"):
        super().__init__(name)
        self.calls = []

    def act(self, games, players, rng):
        self.calls.append(list(players))
        return super().act(games, players, rng)


def test_all_games_advance_together_one_call_per_player_per_round():
    a, b = CountingPlayer("a"), CountingPlayer("b")
    recs = play_games("tic_tac_toe", [a, b], n_games=64, seed=0)
    # round 1: all 64 games wait for x (seat 0); round 2: all 64 wait for o
    assert a.calls[0] == [0] * 64 and b.calls[0] == [1] * 64
    assert len(a.calls) == 5 and len(b.calls) == 4  # x moves at most 5 times, o 4 times
    assert sum(map(len, a.calls)) + sum(map(len, b.calls)) == sum(len(r.moves) for r in recs)
    assert all(len(r.moves) == r.num_decisions for r in recs)


def test_self_play_batches_both_seats_in_one_call():
    p = CountingPlayer()
    play_games("kuhn_poker", [p, p], n_games=32, seed=0)
    assert p.calls[0] == [0] * 32 and p.calls[1] == [1] * 32
    # later rounds mix seats only if games desynchronise; every call holds all pending games
    assert all(len(c) <= 32 for c in p.calls)


def test_same_seed_same_games():
    def run(seed):
        return [
            (r.seed, r.moves, r.returns) for r in play_games("leduc_poker", [RandomPlayer()] * 2, 20, seed)
        ]

    assert run(5) == run(5) and run(5) != run(6)


def test_records_end_by_rules_and_score():
    recs = play_games(GameConfig(name="connect_four_v3", backend="pettingzoo"), [RandomPlayer()] * 2, 10, 0)
    for r in recs:
        assert r.forfeit == -1 and r.invalid == [] and r.returns in ([1.0, -1.0], [-1.0, 1.0], [0.0, 0.0])
        assert r.score(0) + r.score(1) == 1.0
    assert GameRecord(0, ["a", "b", "c"], returns=[1.0, 1.0, -2.0]).score(0) == 0.5


def test_three_player_games_play():
    recs = play_games(GameConfig(name="kuhn_poker", params={"players": 3}), [RandomPlayer()] * 3, 10, 0)
    assert all(len(r.returns) == 3 and abs(sum(r.returns)) < 1e-9 for r in recs)
    with pytest.raises(ValueError, match="one player per seat"):
        play_games("kuhn_poker", [RandomPlayer()] * 3, 1, 0)


class WrongCountPlayer(RandomPlayer):
    def act(self, games, players, rng):
        return []


def test_player_bug_is_an_error_not_a_forfeit():
    with pytest.raises(ValueError, match="returned 0 outputs for 4"):
        play_games("tic_tac_toe", [WrongCountPlayer(), RandomPlayer()], 4, 0)


def test_mcts400_beats_random_with_separated_intervals(tmp_path):
    players = {"random": RandomPlayer(), "mcts400": MCTSPlayer(400, seed=0)}
    res = round_robin("tic_tac_toe", players, games_per_pair=20, seed=0, n_boot=500)
    i, j = res.names.index("mcts400"), res.names.index("random")
    w, d, l = res.wdl(i, j)
    assert w + d + l == 20 and w >= 15 and l == 0  # MCTS-400 never loses tic-tac-toe to random play
    assert res.elo[i] > res.elo[j]
    assert res.elo_lo[i] > res.elo_hi[j]  # non-overlapping 95% intervals
    md = res.to_markdown()
    assert "| 1 | mcts400 |" in md and f"{w}/{d}/{l}" in md
    res.to_json(tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["players"][0]["name"] == "mcts400"
    assert data["cross_table"]["mcts400"]["random"] == {
        "w": w,
        "d": d,
        "l": l,
        "mean_return": pytest.approx((w - l) / 20),
    }
    res.plot(tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_round_robin_seats_balanced_and_counts_forfeits():
    class Bad(RandomPlayer):
        def act(self, games, players, rng):
            return ["no idea"] * len(games)

    res = round_robin(
        "tic_tac_toe",
        {"bad": Bad("bad"), "r1": RandomPlayer("r1"), "r2": RandomPlayer("r2")},
        games_per_pair=6,
        seed=0,
        n_boot=100,
        invalid=InvalidActionConfig(penalty=-1.0),
    )
    games = res.wins + res.wins.T + res.draws
    np.testing.assert_array_equal(games, 6 * (1 - np.eye(3)))
    b = res.names.index("bad")
    assert res.totals(b) == (0, 0, 12) and res.forfeits == {"bad": 12, "r1": 0, "r2": 0}
    assert res.invalid_outputs["bad"] == 12
    assert res.elo[b] == res.elo.min()


def test_round_robin_validation():
    with pytest.raises(ValueError, match="even"):
        round_robin("tic_tac_toe", {"a": RandomPlayer(), "b": RandomPlayer()}, games_per_pair=3)
    with pytest.raises(ValueError, match="at least 2"):
        round_robin("tic_tac_toe", {"a": RandomPlayer()}, games_per_pair=2)
    with pytest.raises(ValueError, match="two-player"):
        round_robin(
            GameConfig(name="kuhn_poker", params={"players": 3}),
            {"a": RandomPlayer(), "b": RandomPlayer()},
            games_per_pair=2,
        )


@pytest.mark.slow
def test_larger_tournament_orders_by_strength(tmp_path):
    players = {"random": RandomPlayer(), "mcts25": MCTSPlayer(25, seed=1), "mcts400": MCTSPlayer(400, seed=2)}
    res = round_robin("connect_four", players, games_per_pair=40, seed=1)
    e = dict(zip(res.names, res.elo))
    assert e["mcts400"] > e["mcts25"] > e["random"]
    assert res.elo_lo[res.names.index("mcts25")] > res.elo_hi[res.names.index("random")]


@pytest.mark.slow
def test_cfr_beats_random_at_leduc(tmp_path):
    from games.opponents import CFRPlayer

    res = round_robin(
        "leduc_poker",
        {"random": RandomPlayer(), "cfr": CFRPlayer("leduc_poker", 1000, tmp_path)},
        games_per_pair=2000,
        seed=0,
        n_boot=200,
    )
    assert res.mean_return[res.names.index("cfr"), res.names.index("random")] > 0.5
