"""Conformance of the text adapters against the libraries themselves, game by game.

For every OpenSpiel game of ``OPENSPIEL`` and every PettingZoo classic env with an action mask, 20
seeded random games run through ``games.text.make_game`` next to an independent library state (a
pyspiel state, a PettingZoo env) fed the same moves. At every decision: the player to act is the
library's; the adapter's legal strings are distinct and map one to one onto the library's legal
action ids; the chosen string round-trips through ``parse_action`` and the id maps; the observation
and the 'state' text are non-empty and glue no two lines together. At the end both are terminal
with the same returns. Games the adapters cannot play are refused at construction with the fix.
"""

from __future__ import annotations

import numpy as np
import pyspiel
import pytest

from games.openspiel_game import ID_ACTION_GAMES, OpenSpielGame
from games.parsing import MAX_ACTION_LEN, parse_action
from games.pettingzoo_game import classic_env_names, has_action_mask, make_pettingzoo_env
from games.prompts import state_text
from games.text import GameConfig, make_game

N_GAMES = 20
TINY_GOOFSPIEL = {"game": {"name": "goofspiel", "num_cards": 4}}

# (name, params): small boards where the default would make 20 random games slow.
OPENSPIEL = [
    ("tic_tac_toe", {}),
    ("connect_four", {}),
    ("kuhn_poker", {}),
    ("kuhn_poker", {"players": 3}),
    ("leduc_poker", {}),
    ("liars_dice", {}),
    ("pig", {"winscore": 20}),
    ("nim", {}),
    ("dots_and_boxes", {}),
    ("first_sealed_auction", {}),
    ("battleship", {"board_width": 4, "board_height": 4, "ship_sizes": "[2;2]", "ship_values": "[1;1]"}),
    ("phantom_ttt", {}),
    ("latent_ttt", {}),
    ("dark_hex", {"board_size": 3}),
    ("hex", {"board_size": 5}),
    ("go", {"board_size": 5}),
    ("othello", {}),
    ("breakthrough", {"rows": 6, "columns": 6}),
    ("checkers", {"rows": 6, "columns": 6}),
    ("clobber", {"rows": 4, "columns": 4}),
    ("mnk", {"m": 4, "n": 4, "k": 3}),
    ("oware", {}),
    ("mancala", {}),
    ("tiny_bridge_2p", {}),
    ("tiny_hanabi", {}),
    ("euchre", {}),
    ("hearts", {}),
    ("bargaining", {}),
    ("sheriff", {}),
    ("trade_comm", {}),
    ("gin_rummy", {}),
    ("yacht", {}),
    ("blackjack", {}),  # one player: the adapter plays it; tournaments refuse it (test_tournament_cli)
    ("catch", {}),
    ("turn_based_simultaneous_game", TINY_GOOFSPIEL),  # the YAML route for simultaneous games
    ("chess", {}),  # names depend on the position (SAN), and case tells "bxc4" from "Bxc4"
    ("backgammon", {}),
    ("amazons", {}),
    ("quoridor", {"board_size": 5}),
]
PETTINGZOO_PARAMS = {"go_v5": {"board_size": 5}}
PETTINGZOO_SLOW = {"chess_v6"}  # about 150 s for 20 random games (its observation planes are slow)

REFUSED_OPENSPIEL = [
    (
        "goofspiel",
        {"num_cards": 4},
        "turn_based_simultaneous_game, params: {game: {name: goofspiel, num_cards: 4}",
    ),
    ("matrix_rps", {}, "turn_based_simultaneous_game"),
    ("blotto", {}, "turn_based_simultaneous_game"),
    ("oshi_zumo", {}, "turn_based_simultaneous_game"),
    ("mfg_crowd_modelling", {}, "only sequential"),
]


def _ids(params):
    return ",".join(f"{k}={v}" for k, v in params.items()) if params else ""


def _check_texts(g, player, source: str | None = None):
    obs = g.observation(player)
    assert isinstance(obs, str) and obs.strip()
    st = state_text(g, player)
    assert isinstance(st, str) and st.strip()
    lines = [line for line in (source or "").split("\n") if line.strip()]
    if len(lines) > 1:
        if "\n" in st:  # text: every word of the library's text, none glued to the next line's
            assert st.split() == source.split()
        else:  # a board of one character per cell, its rows joined (free cells may show their action)
            assert len({len(line) for line in lines}) == 1 and not any(" " in line for line in lines)
            assert len(st) == sum(map(len, lines))


def run_openspiel_game(name: str, params: dict, seed: int) -> None:
    cfg = GameConfig(name=name, params=params)
    g = make_game(cfg, seed)
    assert isinstance(g, OpenSpielGame)
    ref = pyspiel.load_game(name, params).new_initial_state()
    for _, a in g.moves:  # the chance events resolved at construction
        assert ref.is_chance_node() and a in {o for o, _ in ref.chance_outcomes()}
        ref.apply_action(a)
    rng = np.random.default_rng(seed + 7919)
    plies = 0
    first = True
    while not ref.is_terminal():
        assert not g.is_terminal() and not ref.is_chance_node()
        p = ref.current_player()
        assert g.current_player() == p
        legal = g.legal_actions()
        ids = [g.action_id(a) for a in legal]
        assert len(set(legal)) == len(legal) and sorted(ids) == sorted(ref.legal_actions())
        assert all(a and " " not in a and len(a) <= MAX_ACTION_LEN for a in legal)
        if name not in ID_ACTION_GAMES:  # a name is the library's own (blanks as _), at most lower-cased
            names = {a: "_".join(ref.action_to_string(p, i).split()) for a, i in zip(legal, ids)}
            assert all(a in (n, n.lower()) for a, n in names.items())  # never the fallback to ids
        if first:  # every string of the first decision parses back to itself
            assert all(parse_action(a, legal) == a for a in legal)
            first = False
        gtype = ref.get_game().get_type()
        src = None
        if gtype.information == pyspiel.GameType.Information.PERFECT_INFORMATION:
            src = ref.observation_string(p) if gtype.provides_observation_string else str(ref)
        _check_texts(g, p, src)
        a = legal[int(rng.integers(len(legal)))]
        assert parse_action(a, legal) == a
        i = g.action_id(a)
        assert g.action_from_openspiel(i) == a
        n_moves = len(g.moves)
        g.apply(a)
        ref.apply_action(i)
        assert g.moves[n_moves] == (p, i)
        for _, c in g.moves[n_moves + 1 :]:  # chance events the adapter sampled after this move
            assert ref.is_chance_node() and c in {o for o, _ in ref.chance_outcomes()}
            ref.apply_action(c)
        plies += 1
        assert plies < 5000
    assert g.is_terminal() and g.current_player() == -1 and g.legal_actions() == []
    np.testing.assert_allclose(g.returns(), ref.returns())


@pytest.mark.parametrize("name, params", OPENSPIEL, ids=[f"{n}({_ids(p)})" for n, p in OPENSPIEL])
def test_openspiel_adapter_conforms(name, params):
    for seed in range(N_GAMES):
        run_openspiel_game(name, params, seed)


def test_openspiel_list_is_broad():
    assert len({n for n, _ in OPENSPIEL}) >= 25


@pytest.mark.parametrize("name, params, fix", REFUSED_OPENSPIEL, ids=[n for n, _, _ in REFUSED_OPENSPIEL])
def test_openspiel_games_it_cannot_play_are_refused_with_the_fix(name, params, fix):
    with pytest.raises(ValueError, match=f"{name}.*" + fix.replace("(", r"\(").replace("{", r"\{")):
        make_game(GameConfig(name=name, params=params), 0)


def run_pettingzoo_game(name: str, params: dict, seed: int) -> None:
    g = make_game(GameConfig(name=name, backend="pettingzoo", params=params), seed)
    ref = make_pettingzoo_env(name, params)
    ref.reset(seed=seed)
    agents = list(ref.possible_agents)
    returns = dict.fromkeys(agents, 0.0)
    rng = np.random.default_rng(seed + 7919)

    def done() -> bool:
        raw = ref.unwrapped
        return not raw.agents or all(raw.terminations[a] or raw.truncations[a] for a in raw.agents)

    def settle() -> None:  # AEC: agents that are done while others play are stepped with None
        raw = ref.unwrapped
        for a, r in raw.rewards.items():
            returns[a] += float(r)
        while not done() and (raw.terminations[raw.agent_selection] or raw.truncations[raw.agent_selection]):
            ref.step(None)
            for a, r in raw.rewards.items():
                returns[a] += float(r)

    settle()
    plies = 0
    while not done():
        agent = ref.unwrapped.agent_selection
        assert g.current_player() == agents.index(agent)
        mask = ref.unwrapped.observe(agent)["action_mask"]
        legal = g.legal_actions()
        assert legal == [str(int(i)) for i in np.flatnonzero(mask)]
        _check_texts(g, g.current_player())
        a = legal[int(rng.integers(len(legal)))]
        assert parse_action(a, legal) == a
        g.apply(a)
        ref.step(int(a))
        settle()
        plies += 1
        assert plies < 5000
    assert g.is_terminal() and g.current_player() == -1 and g.legal_actions() == []
    np.testing.assert_allclose(g.returns(), [returns[a] for a in agents])


def _pz_cases(slow: bool):
    out = []
    for name in classic_env_names():
        if (name in PETTINGZOO_SLOW) == slow:
            out.append(name)
    return out


def _masked(name: str) -> bool:
    env = make_pettingzoo_env(name, PETTINGZOO_PARAMS.get(name, {}))
    env.reset(seed=0)
    return has_action_mask(env)


@pytest.mark.parametrize("name", _pz_cases(slow=False))
def test_pettingzoo_adapter_conforms_or_refuses(name):
    """Every classic env: played like the library plays it when it has an action mask, else refused."""
    params = PETTINGZOO_PARAMS.get(name, {})
    if not _masked(name):
        with pytest.raises(ValueError, match=f"'{name}'.*no action_mask"):
            make_game(GameConfig(name=name, backend="pettingzoo", params=params), 0)
        return
    for seed in range(N_GAMES):
        run_pettingzoo_game(name, params, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", _pz_cases(slow=True))
def test_pettingzoo_adapter_conforms_long_games(name):
    for seed in range(N_GAMES):
        run_pettingzoo_game(name, PETTINGZOO_PARAMS.get(name, {}), seed)


def test_every_masked_pettingzoo_env_is_in_the_conformance_run():
    masked = [n for n in classic_env_names() if _masked(n)]
    assert "tictactoe_v3" in masked and "rps_v2" not in masked
    assert set(masked) <= set(_pz_cases(False)) | set(_pz_cases(True))
