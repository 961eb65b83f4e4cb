"""Conformance of the PettingZoo adapter, PettingZoo's own api_test, and the OpenSpiel twins."""

import numpy as np
import pytest
from pettingzoo.test import api_test

from games.parsing import parse_action
from games.pettingzoo_game import PettingZooGame, _ttt_pz_to_os, make_pettingzoo_env
from games.text import GameConfig, make_game

PZ_GAMES = ["tictactoe_v3", "connect_four_v3"]


def play_random(g, seed):
    rng = np.random.default_rng(seed)
    while not g.is_terminal():
        legal = g.legal_actions()
        g.apply(legal[int(rng.integers(len(legal)))])
        yield g


@pytest.mark.parametrize("name", PZ_GAMES)
def test_pettingzoo_api_test_passes_on_wrapped_env(name):
    api_test(make_pettingzoo_env(name), num_cycles=200)
    # ... and on the env inside a live adapter, after some of our moves
    g = make_game(name, 0)
    g.apply(g.legal_actions()[0])
    api_test(g.env, num_cycles=50)


@pytest.mark.parametrize("name", PZ_GAMES)
def test_random_games_end_zero_sum_and_round_trip(name):
    outcomes = set()
    for seed in range(25):
        g = make_game(name, seed)
        for _ in play_random(g, seed):
            legal = g.legal_actions()
            for a in legal:
                assert parse_action(a, legal) == a
                assert (
                    g.action_from_openspiel(_ttt_pz_to_os(int(a)) if name == "tictactoe_v3" else int(a)) == a
                )
        assert g.current_player() == -1 and g.legal_actions() == []
        r = g.returns()
        assert r in ([1.0, -1.0], [-1.0, 1.0], [0.0, 0.0])
        outcomes.add(tuple(r))
    assert len(outcomes) >= 2


def test_tictactoe_known_win_and_layout():
    g = PettingZooGame("tictactoe_v3", seed=0)
    # x takes the left column (PettingZoo cells 0, 1, 2 run down the first column); o plays 3, 4.
    for a in ["0", "3", "1", "4", "2"]:
        assert g.current_player() == (0 if a in "012" else 1)
        g.apply(a)
    assert g.is_terminal() and g.returns() == [1.0, -1.0]
    assert g.observation(1) == (
        "You play o. Board (free cells show their number):\n"
        " x | o | 6\n---+---+---\n x | o | 7\n---+---+---\n x | 5 | 8"
    )


def test_connect_four_vertical_win():
    g = PettingZooGame("connect_four_v3", seed=0)
    for a in ["0", "1", "0", "1", "0", "1", "0"]:
        g.apply(a)
    assert g.is_terminal() and g.returns() == [1.0, -1.0]
    assert g.observation(0).split("\n")[-1] == "|x o . . . . .|"


@pytest.mark.parametrize("name", PZ_GAMES)
def test_openspiel_twin_agrees_along_random_games(name):
    for seed in range(15):
        g = make_game(name, seed)
        for _ in play_random(g, seed):
            state = g.openspiel_state()
            assert state.is_terminal() == g.is_terminal()
            if state.is_terminal():
                assert state.returns() == g.returns()
                break
            assert state.current_player() == g.current_player()
            mapped = sorted(g.action_from_openspiel(a) for a in state.legal_actions())
            assert mapped == sorted(g.legal_actions())


def test_clone_is_independent():
    g = make_game("connect_four_v3", 0)
    g.apply("3")
    c = g.clone()
    c.apply("3")
    assert g.current_player() == 1 and c.current_player() == 0
    assert g.state_key() != c.state_key()
    g.apply("3")
    assert g.state_key() == c.state_key()


def test_illegal_and_unknown():
    g = make_game("tictactoe_v3", 0)
    g.apply("4")
    with pytest.raises(ValueError, match="illegal"):
        g.apply("4")
    with pytest.raises(ValueError, match="no OpenSpiel twin"):
        PettingZooGame("texas_holdem_v4").openspiel_state()


def test_env_without_action_mask_is_refused_at_construction():
    # rps_v2 observes the opponent's last move as an array, with no action mask: refused before any move
    with pytest.raises(
        ValueError, match=r"'rps_v2' \(a simultaneous-move game\) gives no action_mask.*'tictactoe_v3'"
    ):
        PettingZooGame("rps_v2")
    with pytest.raises(ValueError, match="'rps_v2'"):
        make_game(GameConfig("rps_v2", backend="pettingzoo"), 0)


def test_generic_env_falls_back_to_array_text():
    g = PettingZooGame("texas_holdem_v4", seed=0)
    assert "Observation (72,)" in g.observation(g.current_player())
    for _ in play_random(g, 0):
        pass
    assert g.is_terminal() and abs(sum(g.returns())) < 1e-9


def test_clone_replays_chance_of_card_games():
    g = PettingZooGame("texas_holdem_v4", seed=7)
    g.apply(g.legal_actions()[0])
    c = g.clone()
    assert c.state_key() == g.state_key() and c.legal_actions() == g.legal_actions()
