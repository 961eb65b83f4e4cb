"""Conformance of the OpenSpiel adapter: play to the end, round-trips, zero-sum, agreement with pyspiel."""

import numpy as np
import pyspiel
import pytest

from games.openspiel_game import OpenSpielGame, load_openspiel_game
from games.parsing import parse_action
from games.text import GameConfig, make_game

OS_GAMES = ["tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker"]


def random_game(name, seed, params=None):
    g = make_game(GameConfig(name=name, params=params or {}), seed)
    rng = np.random.default_rng(seed + 1000)
    yield g
    while not g.is_terminal():
        legal = g.legal_actions()
        g.apply(legal[int(rng.integers(len(legal)))])
        yield g


@pytest.mark.parametrize("name", OS_GAMES)
def test_random_games_reach_the_end_zero_sum(name):
    for seed in range(30):
        steps = 0
        for g in random_game(name, seed):  # noqa: B007 (g is the finished game after the loop)
            steps += 1
            assert steps < 500
        assert g.is_terminal() and g.current_player() == -1 and g.legal_actions() == []
        r = g.returns()
        assert len(r) == 2 and abs(sum(r)) < 1e-9  # all four are zero-sum
        assert g.zero_sum


@pytest.mark.parametrize("name", OS_GAMES)
def test_legal_strings_round_trip(name):
    for seed in range(10):
        for g in random_game(name, seed):
            legal = g.legal_actions()
            assert len(set(legal)) == len(legal)
            for a in legal:
                assert a == a.strip() and " " not in a and len(a) <= 8
                assert parse_action(a, legal) == a  # the parser accepts every canonical string
                assert g.action_from_openspiel(g.action_id(a)) == a  # string -> id -> string
                child = g.clone()
                child.apply(a)  # every listed string is playable


@pytest.mark.parametrize("name", OS_GAMES)
def test_legal_moves_agree_with_pyspiel(name):
    """An independent pyspiel state fed the adapter's history has the same legal moves, names and returns."""
    game = pyspiel.load_game(name)
    for seed in range(20):
        for g in random_game(name, seed):
            ref = game.new_initial_state()
            for a in g.state.history():
                ref.apply_action(a)
            assert ref.is_terminal() == g.is_terminal()
            if ref.is_terminal():
                assert ref.returns() == g.returns()
                break
            assert not ref.is_chance_node()  # chance was resolved inside the adapter
            assert ref.current_player() == g.current_player()
            ids = sorted(g.action_id(a) for a in g.legal_actions())
            assert ids == sorted(ref.legal_actions())
            p = ref.current_player()
            names = {ref.action_to_string(p, i).lower() for i in ref.legal_actions()}
            if name in ("kuhn_poker", "leduc_poker"):
                assert set(g.legal_actions()) == names


def test_same_seed_same_chance_different_seed_differs():
    deals = {}
    for seed in range(600):
        g = make_game("kuhn_poker", seed)
        assert g.state.history() == make_game("kuhn_poker", seed).state.history()
        deals[seed] = tuple(g.state.history())
    counts = {}
    for d in deals.values():
        counts[d] = counts.get(d, 0) + 1
    # 6 equally likely deals: each expected 100 of 600; binomial sd ~ 9.1, so 60..140 is > 4 sd.
    assert len(counts) == 6 and all(60 <= c <= 140 for c in counts.values())


def test_clone_is_independent_and_replays_chance():
    g = make_game("leduc_poker", 3)
    g.apply("call")
    c = g.clone()
    c.apply("call")  # round 1 ends: the public card is dealt from the clone's copy of the RNG
    g.apply("call")
    assert c.state.history() == g.state.history()
    c.apply("raise")
    assert len(c.state.history()) == len(g.state.history()) + 1


def test_illegal_action_raises():
    g = make_game("tic_tac_toe", 0)
    g.apply("4")
    with pytest.raises(ValueError, match="illegal action '4'"):
        g.apply("4")
    with pytest.raises(ValueError, match="legal"):
        g.apply("x(0,0)")


def test_tic_tac_toe_board_text():
    g = make_game("tic_tac_toe", 0)
    g.apply("4")
    g.apply("0")
    # x in the centre (cell 4), o in the corner (cell 0); free cells carry their number.
    assert g.observation(0) == (
        "You play x. Board (free cells show their number):\n"
        " o | 1 | 2\n---+---+---\n 3 | x | 5\n---+---+---\n 6 | 7 | 8"
    )
    assert g.observation(1).startswith("You play o.")


def test_connect_four_board_text():
    g = make_game("connect_four", 0)
    g.apply("3")
    g.apply("3")
    lines = g.observation(0).split("\n")
    assert lines[1] == " 0 1 2 3 4 5 6"
    assert lines[-1] == "|. . . x . . .|" and lines[-2] == "|. . . o . . .|"


def test_poker_observation_hides_the_opponent_card():
    # Kuhn: deal (p0, p1) = (K, J) vs (Q, J): player 1's view must be identical.
    views = []
    for p0_card in (2, 1):
        game = load_openspiel_game("kuhn_poker")
        state = game.new_initial_state()
        state.apply_action(p0_card)
        state.apply_action(0)
        g = OpenSpielGame(game, seed=0, _state=state)
        g.moves = [(-1, p0_card), (-1, 0)]
        g.apply("bet")
        views.append(g.observation(1))
    assert views[0] == views[1]
    assert "Your card: J" in views[0] and "player 0 bet" in views[0] and "Pot: 3 chips" in views[0]


def test_leduc_observation_shows_public_card_and_rounds():
    g = make_game("leduc_poker", 0)
    g.apply("raise")
    g.apply("call")
    text = g.observation(0)
    assert "Round 1 betting: player 0 raised, player 1 called." in text
    assert "Round 2 betting: none yet." in text
    assert "Public card: " in text and "not revealed" not in text
    assert "Pot: 6 chips" in text


def test_state_key_distinguishes_hidden_information():
    keys = {make_game("kuhn_poker", s).state_key() for s in range(50)}
    assert len(keys) == 6  # one per deal, although player 0 sees only 3 different observations


@pytest.mark.parametrize("name", ["breakthrough", "liars_dice", "kuhn_poker(players=3)"])
def test_any_sequential_game_plays_through(name):
    game = pyspiel.load_game(name)
    g = OpenSpielGame(game, seed=1)
    rng = np.random.default_rng(0)
    while not g.is_terminal():
        p = g.current_player()
        assert isinstance(g.observation(p), str) and g.observation(p)
        legal = g.legal_actions()
        g.apply(legal[int(rng.integers(len(legal)))])
    assert len(g.returns()) == game.num_players()


def test_simultaneous_games_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="turn-based"):
        load_openspiel_game("matrix_rps")


def test_simultaneous_refusal_names_the_yaml_route_and_the_route_plays():
    with pytest.raises(ValueError) as err:
        make_game(GameConfig("goofspiel", params={"num_cards": 4}), 0)
    msg = str(err.value)
    assert (
        "game: {name: turn_based_simultaneous_game, params: {game: {name: goofspiel, num_cards: 4}}}" in msg
    )
    # the YAML it names, merged onto the GameConfig schema as a run config would be, plays
    import yaml
    from omegaconf import OmegaConf

    block = yaml.safe_load(msg[msg.index("game: {") :])["game"]
    g = make_game(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GameConfig), block)), 0)
    plies = 0
    while not g.is_terminal():
        g.apply(g.legal_actions()[0])
        plies += 1
    assert plies == 2 * 3  # 4 cards each: 3 rounds of two hidden choices, the last card plays itself


CHESS_BOTH = "4k3/8/8/8/2p5/1P6/8/4KB2 w - - 0 1"  # white pawn b3 and bishop f1 can both take on c4


def _chess(fen):
    game = load_openspiel_game("chess")
    return OpenSpielGame(game, seed=0, _state=game.new_initial_state(fen))


def test_chess_moves_that_differ_by_case_stay_distinct():
    g = _chess(CHESS_BOTH)
    legal = g.legal_actions()
    # SAN as OpenSpiel writes it, case kept: 'bxc4' is the pawn, 'Bxc4' the bishop (no fallback to ids)
    assert sorted(legal) == sorted(
        ["b4", "bxc4", "Ke2", "Kd1", "Kf2", "Kd2", "Bg2", "Bh3", "Bxc4", "Bd3", "Be2"]
    )
    assert parse_action("bxc4", legal) == "bxc4" and parse_action("Bxc4", legal) == "Bxc4"
    assert parse_action("BXC4", legal) is None  # either one would be a guess
    assert parse_action("ke2", legal) is None  # the names mix cases: only the exact spelling counts
    pawn, bishop = g.clone(), g.clone()
    pawn.apply("bxc4")
    bishop.apply("Bxc4")
    # board rank 4 (FEN row 5) after each capture: a white pawn (P) or bishop (B) on c4
    assert str(pawn.state).split()[0].split("/")[4] == "2P5"
    assert str(bishop.state).split()[0].split("/")[4] == "2B5"


def test_chess_names_keep_their_case_in_every_position():
    """The class: in random chess games every state's names are OpenSpiel's SAN exactly, never ids."""
    rng = np.random.default_rng(0)
    for seed in range(3):
        g = make_game(GameConfig("chess"), seed)
        while not g.is_terminal():
            state, p = g.state, g.current_player()
            legal = g.legal_actions()
            assert sorted(legal) == sorted(state.action_to_string(p, a) for a in state.legal_actions())
            g.apply(legal[int(rng.integers(len(legal)))])


def test_word_actions_are_lower_cased_and_notation_is_not():
    assert make_game("kuhn_poker", 0).legal_actions() == ["pass", "bet"]  # OpenSpiel: Pass, Bet
    assert make_game(GameConfig("blackjack"), 0).legal_actions() == ["hit", "stand"]
    first = make_game(GameConfig("chess"), 0).legal_actions()
    assert "Nf3" in first and "e4" in first
