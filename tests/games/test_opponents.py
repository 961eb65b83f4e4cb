"""Random, MCTS and CFR players: legal, strong where they should be, cached where they should be."""

import json

import numpy as np
import pyspiel
import pytest

from games.opponents import (
    CFRPlayer,
    MCTSPlayer,
    Player,
    RandomPlayer,
    cfr_average_policy,
    check_opponent,
    make_opponent,
)
from games.text import GameConfig, make_game


def test_random_player_is_uniform_over_legal():
    g = make_game("tic_tac_toe", 0)
    g.apply("4")
    rng = np.random.default_rng(0)
    p = RandomPlayer()
    assert isinstance(p, Player)
    out = p.act([g] * 8000, [1] * 8000, rng)
    counts = {a: out.count(a) for a in g.legal_actions()}
    assert set(out) == set(g.legal_actions())
    # 8 legal cells, 1000 expected each, binomial sd ~ 30: 850..1150 is 5 sd
    assert all(850 <= c <= 1150 for c in counts.values())


@pytest.mark.parametrize(
    "name, moves, winning",
    [("tic_tac_toe", ["0", "3", "1", "4"], "2"), ("tictactoe_v3", ["0", "1", "3", "4"], "6")],
)
def test_mcts_takes_the_immediate_win(name, moves, winning):
    # tic_tac_toe: x on cells 0, 1 (top row), o on 3, 4; x completes the row at 2.
    # tictactoe_v3 numbers cells column by column: x on 0, 3 is the top row again, the win is at 6.
    for seed in range(3):
        g = make_game(name, 0)
        for a in moves:
            g.apply(a)
        assert MCTSPlayer(50, seed=seed).act([g], [0], np.random.default_rng(0)) == [winning]


def test_mcts_blocks_in_connect_four():
    g = make_game("connect_four", 0)
    for a in ["0", "3", "0", "3", "1", "3"]:  # o threatens four in column 3
        g.apply(a)
    assert MCTSPlayer(400, seed=0).act([g], [0], np.random.default_rng(0)) == ["3"]


def test_mcts_refuses_imperfect_information():
    with pytest.raises(ValueError, match="CFRPlayer"):
        MCTSPlayer(10).act([make_game("kuhn_poker", 0)], [0], np.random.default_rng(0))
    from games.pettingzoo_game import PettingZooGame

    with pytest.raises(ValueError, match="no OpenSpiel twin"):
        g = PettingZooGame("texas_holdem_v4", seed=0)
        MCTSPlayer(10).act([g], [g.current_player()], np.random.default_rng(0))


def _nash_conv_of_table(game_name, table):
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import exploitability

    game = pyspiel.load_game(game_name)
    pol = os_policy.TabularPolicy(game)
    for info, idx in pol.state_lookup.items():
        pol.action_probability_array[idx] = 0.0
        for a, p in table[info].items():
            pol.action_probability_array[idx, a] = p
    return exploitability.nash_conv(game, pol)


def test_cfr_kuhn_policy_is_near_nash_and_cached(tmp_path, monkeypatch):
    data = cfr_average_policy("kuhn_poker", 1000, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert [f.name for f in files] == ["kuhn_poker_cfr1000.json"]
    assert len(data["table"]) == 12  # Kuhn has 12 information sets
    # the stored table itself (re-evaluated by OpenSpiel's Python code) is near a Nash equilibrium
    nc = _nash_conv_of_table("kuhn_poker", data["table"])
    assert nc == pytest.approx(data["nash_conv"], abs=1e-9) and nc < 0.01
    # known equilibrium fact: holding the king facing a bet, always call (bet)
    assert data["table"]["2pb"][1] > 0.99 and data["table"]["0pb"][0] > 0.99  # jack facing a bet folds
    # a second player is built from the cache, without solving again
    monkeypatch.setattr(pyspiel, "CFRSolver", None)
    p = CFRPlayer("kuhn_poker", 1000, cache_dir=tmp_path)
    assert p.nash_conv == data["nash_conv"]
    assert json.loads(files[0].read_text())["iterations"] == 1000


def test_cfr_player_plays_leduc_legally(tmp_path):
    p = CFRPlayer("leduc_poker", 20, cache_dir=tmp_path)
    assert p.name == "cfr20" and len(p.table) == 936  # Leduc has 936 information sets
    rng = np.random.default_rng(0)
    for seed in range(20):
        g = make_game("leduc_poker", seed)
        while not g.is_terminal():
            (a,) = p.act([g], [g.current_player()], rng)
            assert a in g.legal_actions()
            g.apply(a)
    with pytest.raises(ValueError, match="solved for 'leduc_poker'"):
        p.act([make_game("kuhn_poker", 0)], [0], rng)


def test_cfr_sampling_follows_the_policy(tmp_path):
    p = CFRPlayer("kuhn_poker", 300, cache_dir=tmp_path)
    g = make_game("kuhn_poker", 0)
    info = g.state.information_state_string(0)
    probs = p.action_probabilities(info)
    out = p.act([g] * 4000, [0] * 4000, np.random.default_rng(1))
    freq_bet = out.count("bet") / 4000
    # binomial sd <= sqrt(0.25 / 4000) = 0.0079; 0.04 is 5 sd
    assert abs(freq_bet - probs[1]) < 0.04


def test_make_opponent_specs(tmp_path):
    assert isinstance(make_opponent("random", "tic_tac_toe"), RandomPlayer)
    m = make_opponent("mcts-400", "tic_tac_toe")
    assert isinstance(m, MCTSPlayer) and m.num_simulations == 400 and m.name == "mcts400"
    assert make_opponent("MCTS25", "tic_tac_toe").num_simulations == 25
    c = make_opponent("cfr-50", "kuhn_poker", cache_dir=tmp_path)
    assert isinstance(c, CFRPlayer) and c.iterations == 50
    with pytest.raises(ValueError, match="valid"):
        make_opponent("alphazero", "tic_tac_toe")


def test_cfr_cache_is_used_only_for_the_params_it_was_solved_for(tmp_path, caplog):
    """A cached file is keyed by its name *and* the game, params and iterations stored inside it: a file
    that names the right game but holds another game's solution (params whose file tags collide) is
    recomputed, never played."""
    from games.opponents import _cache_path

    three = cfr_average_policy("kuhn_poker", 10, params={"players": 3}, cache_dir=tmp_path)
    two_path = _cache_path(tmp_path, "kuhn_poker", {"players": 2}, 10)
    _cache_path(tmp_path, "kuhn_poker", {"players": 3}, 10).rename(two_path)  # a colliding file name
    caplog.set_level("WARNING", logger="games.opponents")
    two = cfr_average_policy("kuhn_poker", 10, params={"players": 2}, cache_dir=tmp_path)
    assert "does not match" in caplog.text
    assert two["params"] == {"players": 2} and len(two["table"]) == 12 and len(three["table"]) != 12


@pytest.mark.parametrize(
    "spec, game, match",
    [
        ("mcts-5", GameConfig("kuhn_poker"), "MCTS needs a perfect-information game and 'kuhn_poker'"),
        ("mcts-5", GameConfig("texas_holdem_v4", "pettingzoo"), "no OpenSpiel twin"),
        ("cfr-10", GameConfig("tictactoe_v3", "pettingzoo"), "CFR solves OpenSpiel games only"),
        ("alphazero", GameConfig("tic_tac_toe"), "unknown opponent"),
    ],
)
def test_opponents_that_cannot_play_the_game_are_refused_before_play(spec, game, match):
    with pytest.raises(ValueError, match=match):
        check_opponent(spec, game)


@pytest.mark.parametrize(
    "spec, game",
    [
        ("random", GameConfig("texas_holdem_v4", "pettingzoo")),
        ("mcts-5", GameConfig("tictactoe_v3", "pettingzoo")),
        ("mcts-5", GameConfig("connect_four", params={"rows": 4})),
        ("cfr-10", GameConfig("leduc_poker")),
    ],
)
def test_opponents_that_can_play_pass_the_check(spec, game):
    check_opponent(spec, game)


def test_mcts_on_a_pettingzoo_twin_ignores_display_params():
    # render_mode is the env's, not the game's: it must not reach OpenSpiel's tic_tac_toe
    g = make_game(GameConfig("tictactoe_v3", "pettingzoo", params={"render_mode": "ansi"}), 0)
    out = MCTSPlayer(5, seed=0).act([g], [0], np.random.default_rng(0))
    assert out[0] in g.legal_actions()
