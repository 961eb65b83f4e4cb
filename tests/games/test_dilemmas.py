"""The social-dilemma text games: payoff rules by hand, hidden information, common random numbers,
the fixed strategies, and a conformance run through ``games.text.make_game``."""

from __future__ import annotations

import numpy as np
import pytest

from games.arena import play, play_games
from games.dilemmas import (
    StrategyPlayer,
    TrustAndSplit,
    dilemma_action_strings,
    matrix_payoff,
    rps_winner,
    split_payoffs,
)
from games.opponents import RandomPlayer, check_opponent, make_opponent
from games.parsing import parse_action
from games.prompts import action_strings, state_text
from games.selfplay_env import turn_rewards
from games.text import GameConfig, check_playable, game_spec, make_game, num_players

NAMES = ["ipd", "stag_hunt", "chicken", "trust_and_split", "split_no_press"]


def cfg(name: str, **params) -> GameConfig:
    return GameConfig(name=name, backend="dilemmas", params=params)


# ------------------------------------------------------------------------------------------ payoffs
def test_split_payoffs_by_hand():
    # within the pot: granted as asked, the rest is lost: 3 coins * 10 = 30, 4 coins * 1 = 4
    assert split_payoffs(3, 4, 10.0, 1.0, 10) == (30.0, 4.0)
    # exactly the pot: 10 coins to the winner, nothing to the loser
    assert split_payoffs(10, 0, 10.0, 1.0, 10) == (100.0, 0.0)
    # both ask for everything: denominator 20, each gets 10 * 10 / 20 = 5 coins -> 50 and 5
    assert split_payoffs(10, 10, 10.0, 1.0, 10) == (50.0, 5.0)
    # 7 + 6 = 13 > 10: q0 = 70/13 coins worth 1 each, q1 = 60/13 coins worth 10 each
    p0, p1 = split_payoffs(7, 6, 1.0, 10.0, 10)
    np.testing.assert_allclose([p0, p1], [70 / 13, 600 / 13])
    with pytest.raises(ValueError, match="must be in"):
        split_payoffs(11, 0, 1.0, 1.0, 10)


def test_matrix_payoffs_and_rps():
    # IPD [CC, CD, DC, DD] = [3, 0, 5, 1]: the defector against a cooperator gets the temptation 5
    assert matrix_payoff([3, 0, 5, 1], "D", "C") == (5.0, 0.0)
    assert matrix_payoff([3, 0, 5, 1], "C", "C") == (3.0, 3.0)
    assert rps_winner("R", "S") == 0 and rps_winner("R", "P") == 1 and rps_winner("S", "P") == 0
    with pytest.raises(ValueError):
        rps_winner("R", "R")


def test_ipd_rounds_pay_as_they_go():
    g = make_game(cfg("ipd", rounds=3), seed=0)
    for a in ["C", "D", "D", "D", "C", "C"]:  # rounds: CD, DD, CC
        g.apply(a)
    # seat 0: 0 + 1 + 3 = 4; seat 1: 5 + 1 + 3 = 9
    assert g.is_terminal() and g.returns() == [4.0, 9.0]
    assert g.cooperated().tolist() == [[True, False], [False, False], [True, True]]


def test_trust_and_split_round_by_hand():
    g = make_game(cfg("trust_and_split", rounds=2), seed=3)
    assert isinstance(g, TrustAndSplit)
    g.hands = [("R", "S"), ("P", "S")]  # round 1: seat 0 wins; round 2: seat 1 wins
    # round 1: seat 0 speaks first, then seat 1; both propose (seat 0 keeps 10, seat 1 keeps 0)
    for a in ["R", "S", "10", "0"]:
        g.apply(a)
    assert g.returns() == [100.0, 0.0]
    # round 2: seat 1 speaks first; both ask 10 -> 5 coins each: seat 0 (loser) 5, seat 1 (winner) 50
    assert g.current_player() == 1
    for a in ["S", "P", "10", "10"]:
        g.apply(a)
    assert g.is_terminal() and g.returns() == [105.0, 50.0]
    assert g.cooperated().tolist() == [[True, True], [False, True]]


# ------------------------------------------------------------------------------------------ hidden info
def test_ipd_pending_move_stays_hidden():
    a, b = make_game(cfg("ipd", rounds=2), 0), make_game(cfg("ipd", rounds=2), 0)
    a.apply("C")
    b.apply("D")
    assert a.current_player() == b.current_player() == 1
    assert a.observation(1) == b.observation(1)
    assert a.state_key() != b.state_key()
    a.apply("C")
    b.apply("C")
    assert a.observation(1) != b.observation(1)  # revealed once the round is over


def test_trust_and_split_hand_and_proposal_stay_hidden():
    a, b = make_game(cfg("trust_and_split"), 0), make_game(cfg("trust_and_split"), 0)
    a.hands = [("R", "P")] + a.hands[1:]
    b.hands = [("S", "P")] + b.hands[1:]
    assert a.observation(1) == b.observation(1)  # seat 0's hand differs, seat 1 cannot see it
    assert a.observation(0) != b.observation(0)
    for g in (a, b):
        g.apply("P")  # seat 0's claim (the same lie in both)
        g.apply("P")
    assert a.observation(1) == b.observation(1)  # a claim is seen, the hand behind it is not
    a.apply("10")
    b.apply("0")
    assert a.current_player() == 1 and a.observation(1) == b.observation(1)  # pending proposal hidden
    a.apply("0")
    b.apply("0")
    assert "hands PR" in a.observation(1) and "hands PS" in b.observation(1)  # revealed after the round


def test_show_claims_reveals_last_rounds_claims_after_the_round_only():
    """``show_claims``: both claims of the finished round (own first) join the revealed hands; this
    round's claims and proposals stay as without it; default off leaves the observation as it was."""
    on = make_game(cfg("trust_and_split", show_claims=True), 0)
    off = make_game(cfg("trust_and_split"), 0)
    for g in (on, off):
        g.hands = [("R", "P"), ("S", "R")] + g.hands[2:]
        g.apply("S")  # seat 0 lies (holds R)
        g.apply("P")  # seat 1 tells the truth
    assert on.observation(1) == off.observation(1)  # within the round: nothing more is shown
    for g in (on, off):
        g.apply("0")
    assert on.observation(1) == off.observation(1)  # seat 0's pending keep stays hidden
    for g in (on, off):
        g.apply("10")
    head = "trust_and_split 2/10"
    assert on.observation(0) == f"{head} hand S they said - last hands RP claims SP kept 0,10 got 0 message"
    assert on.observation(1) == f"{head} hand R they said - last hands PR claims PS kept 10,0 got 100 message"
    assert off.observation(1) == f"{head} hand R they said - last hands PR kept 10,0 got 100 message"
    with pytest.raises(ValueError, match="valid params"):
        make_game(cfg("split_no_press", show_claims=True), 0)  # no messages, nothing to show
    for bad in ["false", "no", 0, 1, None]:  # a quoted or numeric value is refused, not read as truthy
        with pytest.raises(ValueError, match="must be true or false"):
            make_game(cfg("trust_and_split", show_claims=bad), 0)


def test_no_press_shows_the_value_and_has_no_messages():
    g = make_game(cfg("split_no_press", rounds=1), 5)
    assert g.legal_actions() == [str(k) for k in range(11)]
    v0, v1 = g.values(0)
    assert {v0, v1} == {10.0, 1.0}
    assert f"value {v0:g}" in g.observation(0) and f"value {v1:g}" in g.observation(1)


# ------------------------------------------------------------------------------------------ CRN
def test_common_random_numbers_do_not_depend_on_actions():
    rng = np.random.default_rng(0)
    a, b = make_game(cfg("trust_and_split"), 42), make_game(cfg("trust_and_split"), 42)
    seen_a, seen_b = {}, {}  # round -> the hands dealt when it was played
    while not a.is_terminal():
        seen_a[a.round] = a.hands[a.round]
        a.apply(a.legal_actions()[int(rng.integers(len(a.legal_actions())))])
    while not b.is_terminal():
        seen_b[b.round] = b.hands[b.round]
        b.apply(b.legal_actions()[-1])  # always "10": other actions, other payoffs
    assert a.returns() != b.returns()
    assert seen_a == seen_b and len(seen_a) == 10
    assert make_game(cfg("trust_and_split"), 43).hands != list(seen_a.values())
    assert all(h0 != h1 for h0, h1 in seen_a.values())


# ------------------------------------------------------------------------------------------ strategies
def _play(name: str, s0: str, s1: str, rounds: int, **params):
    players = [make_opponent(s, name) if s != "random" else RandomPlayer() for s in (s0, s1)]
    return play_games(cfg(name, rounds=rounds, **params), players, 1, seed=0)[0]


def test_ipd_strategies_by_hand():
    # TFT vs always-defect, 3 rounds: TFT plays C, D, D; returns 0+1+1 = 2 and 5+1+1 = 7
    rec = _play("ipd", "tit-for-tat", "always-defect", 3)
    assert [a for _, a in rec.moves] == ["C", "D", "D", "D", "D", "D"] and rec.returns == [2.0, 7.0]
    # TFT vs grim trigger: both cooperate every round, 3 * 3 each
    assert _play("ipd", "tit-for-tat", "grim-trigger", 3).returns == [9.0, 9.0]
    # always-cooperate vs always-defect: 0 vs 5 per round
    assert _play("ipd", "always-cooperate", "always-defect", 4).returns == [0.0, 20.0]


def test_grim_trigger_never_forgives_tit_for_tat_does():
    g = make_game(cfg("ipd", rounds=4), 0)
    grim, tft = StrategyPlayer("grim-trigger"), StrategyPlayer("tit-for-tat")
    for a0 in ["C", "D", "C"]:  # seat 1's view: co-player C, D, C
        g.apply(a0)
        g.apply("C")
    g.apply("C")
    assert grim.act([g], [1], np.random.default_rng(0)) == ["D"]
    assert tft.act([g], [1], np.random.default_rng(0)) == ["C"]


def test_trust_and_split_cooperators_reach_the_collective_optimum():
    # truthful claims, the winner keeps all: 100 per round to the winner, collective 1000 in 10 rounds
    rec = _play("trust_and_split", "always-cooperate", "tit-for-tat", 10)
    assert sum(rec.returns) == 1000.0
    # two grabbers: 5 coins each every round, 50 + 5 per round
    assert sum(_play("trust_and_split", "always-defect", "always-defect", 10).returns) == 550.0


def _fair(g, player: int) -> str:
    return StrategyPlayer("fair").act([g], [player], np.random.default_rng(0))[0]


def _split_game(hands, rounds: int = 2) -> TrustAndSplit:
    g = TrustAndSplit("trust_and_split", rounds=rounds, seed=0)
    g.hands = list(hands)
    return g


def test_fair_claims_the_truth_and_keeps_by_the_claim():
    # round 0: seat 0 holds R, seat 1 holds S (seat 0 speaks first in even rounds)
    g = _split_game([("R", "S"), ("P", "S")])
    assert _fair(g, 0) == "R"
    g.apply("R")
    assert _fair(g, 1) == "S"
    g.apply("S")
    assert _fair(g, 0) == "10"  # own R beats the claim S: the winner keeps all
    assert _fair(g, 1) == "0"  # the claim R beats own S: the loser keeps none
    # a claim equal to the own hand is a lie (hands differ): keep all
    h = _split_game([("R", "S")], rounds=1)
    h.apply("S")  # seat 0 (holding R) claims S, seat 1's own hand
    h.apply("S")
    assert _fair(h, 1) == "10"
    assert _fair(h, 0) == "10"  # seat 0's view: own R beats the (true) claim S


def test_fair_retaliates_for_one_round_after_a_revealed_lie():
    # round 0: seat 0 holds P but claims S; seat 1 holds R, claims R; then round 1: seat 0 holds S,
    # seat 1 holds P and seat 0 truthfully claims S, which beats seat 1's P: fair would concede,
    # but seat 0 lied last round, so seat 1 keeps all. Round 2: seat 0 told the truth in round 1.
    g = _split_game([("P", "R"), ("S", "P"), ("S", "P")], rounds=3)
    for a in ["S", "R", "0", "0"]:
        g.apply(a)
    assert g.log[-1]["claims"] == ("S", "R") and g.round == 1
    g.apply("P")  # seat 1 speaks first in odd rounds (its true hand)
    g.apply("S")  # seat 0's true hand
    assert _fair(g, 1) == "10"  # the claim S beats its P, but the co-player lied last round
    assert _fair(g, 0) == "10"  # seat 0 wins and seat 1 told the truth
    g.apply("10")
    g.apply("10")
    g.apply("S")
    g.apply("P")
    assert _fair(g, 1) == "0"  # the same deal, the co-player's last claim true: concede


def test_fair_no_press_matrix_and_self_play():
    g = make_game(cfg("split_no_press", rounds=1), 5)
    hi = 0 if g.values(0)[0] == 10.0 else 1
    assert _fair(g, hi) == "10" and _fair(g, 1 - hi) == "0"
    # matrix games: tit-for-tat (C, then the co-player's last move)
    m = make_game(cfg("ipd", rounds=3), 0)
    assert _fair(m, 0) == "C"
    m.apply("C")
    m.apply("D")
    assert _fair(m, 0) == "D" and _fair(m, 1) == "C"
    # two fair players: the winner keeps all in every round, 100 a round, 1000 in 10 rounds
    assert sum(_play("trust_and_split", "fair", "fair", 10).returns) == 1000.0
    assert sum(_play("split_no_press", "fair", "fair", 10).returns) == 1000.0


def _reciprocal(g, player: int) -> str:
    return StrategyPlayer("reciprocal").act([g], [player], np.random.default_rng(0))[0]


def test_reciprocal_answers_a_truthful_grab_that_fair_lets_pass():
    # round 0: seat 0 holds R, seat 1 holds P (P beats R); both claim the truth; seat 0, the loser,
    # still keeps 10 (a grab). Round 1: seat 0 holds P, seat 1 holds S (S beats P); seat 0 claims its
    # true P, seat 1 would win anyway; round 2: seat 0 holds S, seat 1 holds R (R beats S, seat 1 wins)
    g = _split_game([("R", "P"), ("P", "S"), ("R", "P")], rounds=3)
    for a in ["R", "P", "10", "10"]:
        g.apply(a)
    assert g.co_player_defections(1) == [True] and g.co_player_defections(0) == [False]
    g.apply("S")  # seat 1 speaks first in odd rounds
    g.apply("P")
    # seat 1 wins (S beats P): both keep all as winners; seat 0 (the loser) concedes, whatever
    assert _reciprocal(g, 1) == _fair(g, 1) == "10"
    assert _reciprocal(g, 0) == _fair(g, 0) == "0"  # seat 1 did not defect: no retaliation
    g.apply("0")
    g.apply("10")
    # round 2: seat 0 holds R and loses to P; seat 1 kept coins as the winner last round (not a grab)
    g.apply("R")
    g.apply("P")
    assert _reciprocal(g, 0) == _fair(g, 0) == "0"
    # the grab answered: back in round 1's position, if seat 1 had lost it would keep all
    h = _split_game([("R", "P"), ("S", "P")], rounds=2)  # round 1: seat 0 holds S, beats seat 1's P
    for a in ["R", "P", "10", "10", "P", "S"]:
        h.apply(a)
    assert _fair(h, 1) == "0"  # fair concedes to the true claim S
    assert _reciprocal(h, 1) == "10"  # reciprocal retaliates: seat 0 grabbed as the loser
    assert _reciprocal(h, 0) == "10"  # the grabber itself wins this round
    # messages are always the truth; matrix games: tit-for-tat; self-play reaches the optimum
    assert _reciprocal(_split_game([("S", "R")]), 0) == "S"
    m = make_game(cfg("ipd", rounds=2), 0)
    m.apply("D")
    m.apply("C")
    assert _reciprocal(m, 1) == "D" and _reciprocal(m, 0) == "C"
    assert sum(_play("trust_and_split", "reciprocal", "reciprocal", 10).returns) == 1000.0
    assert sum(_play("split_no_press", "reciprocal", "reciprocal", 10).returns) == 1000.0


def test_a_truthful_grabber_gains_against_fair_not_against_reciprocal():
    # always-defect (true claims, keeps 10) in seat 0. Round 0: R against P, seat 1 wins; both keep 10:
    # 5 coins each, 5 * 1 to the grabber, 5 * 10 = 50 to seat 1. Round 1: S against P, seat 0 wins
    # (claims are true): fair concedes (0), the grabber gets 100: 105 in all, more than the 100 of
    # playing fair itself. reciprocal keeps 10 after the grab: 5 coins, 50; the grabber 55, itself 55.
    for other, expected in [("fair", [105.0, 50.0]), ("reciprocal", [55.0, 55.0])]:
        g = _split_game([("R", "P"), ("S", "P")])
        play([g], [[StrategyPlayer("always-defect"), StrategyPlayer(other)]], np.random.default_rng(0))
        assert g.returns() == expected, other
    g = _split_game([("R", "P"), ("S", "P")])
    play([g], [[StrategyPlayer("fair"), StrategyPlayer("fair")]], np.random.default_rng(0))
    assert g.returns() == [100.0, 100.0]


def test_fair_reads_no_hidden_information():
    # seat 1's view is the same in both games: its hand, seat 0's claim, the finished round; seat 0's
    # hand of this round and its pending proposal differ and must not change seat 1's move
    a = _split_game([("R", "S"), ("P", "R")])
    b = _split_game([("R", "S"), ("S", "R")])
    for g in (a, b):
        for x in ["R", "S", "10", "0"]:
            g.apply(x)
        g.apply("R")  # seat 1 (first in round 1), its true hand
        g.apply("P")  # seat 0 claims P: true in a, a lie in b
    a.apply("10")
    b.apply("0")
    assert a.observation(1) == b.observation(1)
    assert _fair(a, 1) == _fair(b, 1) == "0"  # the claim P beats its R
    assert _reciprocal(a, 1) == _reciprocal(b, 1) == "0"  # seat 0 did not grab in round 0
    # reciprocal after a grab: seat 0 lost round 0 (S against R) and kept 10; the same view again
    c = _split_game([("S", "R"), ("P", "R")])
    d = _split_game([("S", "R"), ("S", "R")])
    for g in (c, d):
        for x in ["S", "R", "10", "10", "R", "P"]:
            g.apply(x)
    c.apply("10")
    d.apply("0")
    assert c.observation(1) == d.observation(1)
    assert _reciprocal(c, 1) == _reciprocal(d, 1) == "10" and _fair(c, 1) == "0"


def test_strategy_specs_are_checked_against_the_backend():
    check_opponent("tit-for-tat", cfg("ipd"))
    check_opponent("random", cfg("ipd"))
    with pytest.raises(ValueError, match="dilemma"):
        check_opponent("tit-for-tat", GameConfig("tic_tac_toe"))
    with pytest.raises(ValueError, match="cannot play"):
        check_opponent("mcts-10", cfg("ipd"))
    with pytest.raises(ValueError, match="valid"):
        StrategyPlayer("tit-for-two-tats")


# ------------------------------------------------------------------------------------------ per-turn rewards
def test_turn_rewards_from_running_returns_by_hand():
    # one IPD game of 2 rounds (CD, then DD), both seats learners: turns in time order s0, s1, s0, s1.
    # s0 is asked at running return 0 (before round 1) and 0 (round 1 paid it 0); s1 at 0 and 5.
    # final returns: s0 0 + 1 = 1, s1 5 + 1 = 6; rewards: s0 [0 - 0, 1 - 0] = [0, 1], s1 [5 - 0, 6 - 5]
    r = turn_rewards(
        np.zeros(4, np.int64),
        np.array([0, 1, 0, 1]),
        np.zeros(4, bool),
        np.array([[1.0, 6.0]]),
        penalty=-1.0,
        paid_before=np.array([0.0, 0.0, 0.0, 5.0]),
    )
    np.testing.assert_allclose(r, [0.0, 5.0, 1.0, 1.0])


def test_running_returns_seen_before_each_decision():
    # what the self-play recorder reads per turn: always-defect in both seats pays 1 each per round
    g = make_game(cfg("ipd", rounds=3), 0)
    seen = []
    defect = StrategyPlayer("always-defect")
    play(
        [g],
        [[defect, defect]],
        np.random.default_rng(0),
        on_turns=lambda pl, idx, seats, o, a: seen.append(g.returns()[seats[0]]),
    )
    assert seen == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


# ------------------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("name", NAMES)
def test_dilemma_games_conform(name):
    c = cfg(name, rounds=4)
    check_playable(c)
    assert num_players(c) == 2
    assert game_spec(c)["params"]["rounds"] == 4
    names, exhaustive = action_strings(c)
    assert exhaustive and names == dilemma_action_strings(name, {"rounds": 4})
    rng = np.random.default_rng(1)
    for seed in range(10):
        g = make_game(c, seed)
        paid = np.zeros(2)
        while not g.is_terminal():
            p = g.current_player()
            legal = g.legal_actions()
            assert len(set(legal)) == len(legal) and set(legal) <= set(names)
            assert g.observation(p) and state_text(g, p) == g.observation(p)
            a = legal[int(rng.integers(len(legal)))]
            assert parse_action(a, legal) == a
            twin = g.clone()
            g.apply(a)
            assert twin.state_key() != g.state_key() or twin.legal_actions() != g.legal_actions()
            with pytest.raises(ValueError, match="illegal"):
                g.clone().apply("nonsense")
            paid = np.asarray(g.returns())
        assert g.current_player() == -1 and g.legal_actions() == []
        assert np.all(np.isfinite(paid))


def test_unknown_game_and_params_are_refused():
    with pytest.raises(ValueError, match="valid names"):
        make_game(cfg("prisoners"), 0)
    with pytest.raises(ValueError, match="valid params"):
        make_game(cfg("ipd", round=3), 0)


# ------------------------------------------------------------------------------------------ metrics
def test_records_carry_cooperation_rates():
    # TFT vs always-defect over 3 rounds: TFT cooperates in round 1 only (1/3), AD never
    rec = _play("ipd", "tit-for-tat", "always-defect", 3)
    np.testing.assert_allclose(rec.stats["coop"], [1 / 3, 0.0])
    # Trust-and-Split: the loser that keeps coins did not cooperate; the winner always does
    g = make_game(cfg("trust_and_split", rounds=2), 0)
    g.hands = [("R", "S"), ("R", "P")]  # seat 0 wins round 1, seat 1 wins round 2
    for a in ["R", "S", "10", "3", "R", "P", "0", "10"]:
        g.apply(a)
    assert g.stats() == {"coop": [1.0, 0.5]}


def test_step_metrics_report_coop_and_collective_return():
    from games.selfplay_env import StepGames, step_metrics

    games = []
    for moves in (["C", "C", "C", "D"], ["D", "D", "D", "D"]):  # two 2-round games of lm vs lm
        g = make_game(cfg("ipd", rounds=2), 0)
        for a in moves:
            g.apply(a)
        games.append(g)
    # game 1: CC (3, 3) then CD (0, 5) -> returns (3, 8); game 2: DD, DD -> (2, 2)
    returns = np.array([g.returns() for g in games])
    played = StepGames(games, [["lm", "lm"]] * 2, returns, np.zeros((2, 2)), np.array([-1, -1]))
    m = step_metrics(played, {"lm": None})
    # collective: mean of 11 and 4 = 7.5; coop over the four seats: (1 + 0.5 + 0 + 0) / 4 = 0.375
    assert m["train/collective_return"] == 7.5 and m["train/lm/coop"] == 0.375
    assert m["train/lm/return"] == (3 + 8 + 2 + 2) / 4


def test_round_robin_payoff_matrix_by_hand(tmp_path):
    from games.arena import plot_mean_returns, round_robin

    players = {s: StrategyPlayer(s) for s in ("tit-for-tat", "always-defect", "always-cooperate")}
    res = round_robin(cfg("ipd", rounds=3), players, games_per_pair=2, n_boot=10)
    i = {n: k for k, n in enumerate(res.names)}
    # 3 rounds: TFT vs AD 0 + 1 + 1 = 2 (AD 5 + 1 + 1 = 7); AC vs AD 0 (AD 15); TFT vs AC 9 each
    assert res.mean_return[i["tit-for-tat"], i["always-defect"]] == 2.0
    assert res.mean_return[i["always-defect"], i["tit-for-tat"]] == 7.0
    assert res.mean_return[i["always-defect"], i["always-cooperate"]] == 15.0
    assert res.mean_return[i["tit-for-tat"], i["always-cooperate"]] == 9.0
    assert "Mean return of row against column" in res.to_markdown()
    plot_mean_returns(res, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_tournament_command_plays_the_strategies(tmp_path):
    from games.tournament import TournamentConfig, run_tournament

    t = TournamentConfig(
        game=cfg("ipd", rounds=2),
        players=["tit-for-tat", "always-defect", "random"],
        games_per_pair=2,
        out_dir=str(tmp_path),
        name="t",
        n_boot=10,
        anchor="random",
    )
    t.validate()
    result, out = run_tournament(t)
    i = {n: k for k, n in enumerate(result.names)}
    # 2 rounds, TFT vs always-defect: 0 + 1 = 1 against 5 + 1 = 6
    assert result.mean_return[i["tit-for-tat"], i["always-defect"]] == 1.0
    assert (out / "tournament_returns.png").is_file()
    with pytest.raises(ValueError, match="unknown player spec"):
        TournamentConfig(game=cfg("ipd"), players=["tit-for-two-tats", "random"]).validate()


def test_recorder_payload_carries_the_round_of_each_decision():
    # what credit.time_step=round reads: the round a decision was asked in (before the move applies)
    from types import SimpleNamespace

    from games.selfplay_env import TreeRecorder
    from marl.tree import TurnTree

    ts = make_game(cfg("trust_and_split", rounds=2), 0)
    ipd = make_game(cfg("ipd", rounds=2), 0)
    rec = TreeRecorder(TurnTree(["lm"]), [ts, ipd], np.zeros(2, np.int64), 0, False)
    dec = SimpleNamespace(allowed_ids=None)
    seen = []
    for a in ["R", "S", "10", "3", "R"]:  # round 0: two claims, two proposals; round 1: a claim
        seen.append(rec._data(dec, 0, 0)["round"])
        ts.apply(a)
    assert seen == [0, 0, 0, 0, 1] and ts.round == 1
    for a in ["C", "D", "C"]:
        seen.append(rec._data(dec, 0, 1)["round"])
        ipd.apply(a)
    assert seen[5:] == [0, 0, 1] and ipd.round == 1
    # a game without rounds records none
    rec.games.append(make_game(GameConfig(name="tic_tac_toe"), 0))
    assert "round" not in rec._data(dec, 0, 2)
