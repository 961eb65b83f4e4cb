"""GameConfig, the shipped defaults and the make_game registry."""

import pytest

from games.text import (
    GAMES,
    GameConfig,
    TextGame,
    check_playable,
    format_spec,
    game_config,
    game_spec,
    is_simultaneous,
    make_game,
    num_players,
    simultaneous_message,
)


def test_shipped_games_cover_the_issue():
    assert {n: c.backend for n, c in GAMES.items()} == {
        "tic_tac_toe": "openspiel",
        "connect_four": "openspiel",
        "kuhn_poker": "openspiel",
        "leduc_poker": "openspiel",
        "tictactoe_v3": "pettingzoo",
        "connect_four_v3": "pettingzoo",
    }


@pytest.mark.parametrize("name", sorted(GAMES))
def test_make_game_from_name_and_config(name):
    g = make_game(name, seed=0)
    assert isinstance(g, TextGame)
    assert g.name == name and g.num_players == 2
    g2 = make_game(GAMES[name], seed=0)
    assert g2.state_key() == g.state_key()


def test_game_config_copy_is_independent():
    cfg = game_config("connect_four")
    cfg.params["rows"] = 4
    assert GAMES["connect_four"].params == {}


def test_config_validation_names_the_choices():
    with pytest.raises(ValueError, match="openspiel"):
        GameConfig(backend="gym")
    with pytest.raises(ValueError, match="compact"):
        GameConfig(prompt_style="fancy")


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="tic_tac_toe"):
        make_game("tic-tac-toe", 0)
    with pytest.raises(ValueError, match="breakthrough"):  # lists pyspiel's registered names
        make_game(GameConfig(name="no_such_game"), 0)
    with pytest.raises(ValueError, match="tictactoe_v3"):
        make_game(GameConfig(name="tictactoe_v9", backend="pettingzoo"), 0)


def test_params_reach_the_game():
    g = make_game(GameConfig(name="connect_four", params={"rows": 4, "columns": 5}), 0)
    assert g.legal_actions() == ["0", "1", "2", "3", "4"]
    assert g.observation(0).count("|") == 2 * 4  # 4 rows, each drawn between two bars


def test_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(GameConfig)
    cfg = OmegaConf.merge(cfg, {"name": "connect_four", "params": {"rows": 5}})
    obj = OmegaConf.to_object(cfg)
    assert obj.name == "connect_four" and obj.params == {"rows": 5}


@pytest.mark.parametrize(
    "cfg, n",
    [
        (GameConfig("blackjack"), 1),
        (GameConfig("catch"), 1),
        (GameConfig("tic_tac_toe"), 2),
        (GameConfig("kuhn_poker", params={"players": 3}), 3),
        (GameConfig("hearts"), 4),
        (GameConfig("goofspiel"), 2),  # simultaneous games have a player count too
        (GameConfig("tictactoe_v3", "pettingzoo"), 2),
        ("leduc_poker", 2),
    ],
)
def test_num_players_before_any_episode(cfg, n):
    assert num_players(cfg) == n


def test_simultaneous_games_are_told_apart_with_the_yaml_route():
    assert is_simultaneous(GameConfig("goofspiel")) and is_simultaneous(GameConfig("matrix_rps"))
    assert is_simultaneous(GameConfig("rps_v2", "pettingzoo"))
    assert not is_simultaneous(GameConfig("tic_tac_toe")) and not is_simultaneous("connect_four_v3")
    wrapped = GameConfig("turn_based_simultaneous_game", params={"game": {"name": "goofspiel"}})
    assert not is_simultaneous(wrapped)
    msg = simultaneous_message(GameConfig("oshi_zumo", params={"coins": 10}))
    assert "'oshi_zumo'" in msg and "pyspiel" not in msg  # the YAML itself, not a Python API
    assert "game: {name: turn_based_simultaneous_game, params: {game: {name: oshi_zumo, coins: 10}}}" in msg


@pytest.mark.parametrize(
    "cfg, match",
    [
        (GameConfig("goofspiel"), "turn_based_simultaneous_game"),
        (GameConfig("mfg_crowd_modelling"), "only sequential"),
        (GameConfig("rps_v2", "pettingzoo"), "'rps_v2' is a simultaneous-move game"),
        (GameConfig("hex", params={"board_size": "big"}), "rejected params"),
        (GameConfig("texas_holdem_v4", "pettingzoo", params={"seats": 3}), "rejected params"),
    ],
)
def test_check_playable_refuses_with_the_fix(cfg, match):
    with pytest.raises(ValueError, match=match):
        check_playable(cfg)


def test_check_playable_accepts_one_player_and_wrapped_games():
    check_playable(GameConfig("blackjack"))
    check_playable(GameConfig("turn_based_simultaneous_game", params={"game": {"name": "goofspiel"}}))


def test_game_spec_fills_defaults_so_equal_games_compare_equal():
    # hex is 11x11 by default: {} and {board_size: 11} are one game, {board_size: 3} another
    assert game_spec(GameConfig("hex")) == game_spec(GameConfig("hex", params={"board_size": 11}))
    small = game_spec(GameConfig("hex", params={"board_size": 3}))
    assert small != game_spec(GameConfig("hex"))
    assert small["params"]["board_size"] == 3 and small["backend"] == "openspiel" and small["name"] == "hex"
    assert format_spec(small).startswith("openspiel:hex(board_size=3, ")
    # PettingZoo: the constructor's defaults, display arguments left out
    assert game_spec(GameConfig("go_v5", "pettingzoo")) == {
        "backend": "pettingzoo",
        "name": "go_v5",
        "params": {"board_size": 19, "komi": 7.5},
    }
    assert game_spec(GameConfig("go_v5", "pettingzoo", params={"render_mode": "ansi"})) == game_spec(
        GameConfig("go_v5", "pettingzoo")
    )
    assert game_spec(GameConfig("tic_tac_toe")) != game_spec(GameConfig("tictactoe_v3", "pettingzoo"))


def test_pettingzoo_specs_hold_game_parameters_only():
    """The class: no env's spec holds a display argument (render_mode, screen_height, screen_scaling...)."""
    from games.pettingzoo_game import classic_env_names

    for name in classic_env_names():
        params = game_spec(GameConfig(name, "pettingzoo"))["params"]
        assert not [k for k in params if k.startswith(("render", "screen"))], name
