"""GameConfig, the shipped defaults and the make_game registry."""

import pytest

from games.text import GAMES, GameConfig, TextGame, game_config, make_game


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
