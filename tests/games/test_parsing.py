"""parse_action: tolerant, never raises, never guesses; the invalid-action policy and its returns."""

import logging

import numpy as np
import pytest

from games.arena import play_games
from games.opponents import RandomPlayer
from games.parsing import InvalidActionConfig, forfeit_returns, parse_action
from games.text import GAMES, make_game

DIGITS = [str(i) for i in range(9)]
LEDUC = ["fold", "call", "raise"]


@pytest.mark.parametrize(
    "text, legal, expected",
    [
        ("4", DIGITS, "4"),
        ("  4 \n", DIGITS, "4"),
        ("[4]", DIGITS, "4"),
        ("**4**", DIGITS, "4"),
        ("`4`", DIGITS, "4"),
        ("4.", DIGITS, "4"),
        ("Action: 4", DIGITS, "4"),
        ("I will play 7, it blocks the row", DIGITS, "7"),
        ("\\boxed{2}", DIGITS, "2"),
        ("3 because it is a corner", DIGITS, "3"),
        ("CALL", LEDUC, "call"),
        ("Raise.", LEDUC, "raise"),
        ("<fold>", LEDUC, "fold"),
        ("My move: raise\nbecause I hold a king", LEDUC, "raise"),
        # never guesses: out of range, other spellings, not a listed action
        ("9", DIGITS, None),
        ("-1", DIGITS, None),
        ("04", DIGITS, None),
        ("4.0", DIGITS, None),
        ("\uff14", DIGITS, None),  # full-width 4
        ("four", DIGITS, None),
        ("44", DIGITS, None),
        ("check", LEDUC, None),
        ("I think calling is best", LEDUC, None),
        ("", DIGITS, None),
        (None, DIGITS, None),
        (12345, DIGITS, None),
        ("4", [], None),
        ("x(0,0)", ["x(0,0)", "x(0,1)"], "x(0,0)"),
    ],
)
def test_examples(text, legal, expected):
    assert parse_action(text, legal) == expected


def test_case_clash_prefers_exact_and_refuses_ambiguity():
    legal = ["Raise", "raise"]
    assert parse_action("Raise", legal) == "Raise"
    assert parse_action("raise", legal) == "raise"
    assert parse_action("RAISE", legal) is None  # would be a guess between two actions


def adversarial_strings(legal, n, rng):
    """Random and adversarial outputs: junk around actions, unicode, numbers out of range, huge strings."""
    junk = [
        "",
        " ",
        "\n",
        "\t",
        "\x00",
        "\ufeff",
        "\u200b",
        "\u202e",
        "\ud800",
        "\udfff",
        "🤖",
        "é",
        "e\u0301",
        "\uff14",
        "٤",
        "⁴",
        "𝟒",
        "∞",
        "NaN",
        "-0",
        "1e309",
        "99999999999999999999999",
        "-1",
        "0x4",
        "4.0",
        "[",
        "]",
        "[[",
        "{",
        "}",
        "\\boxed{",
        "\\boxed{}",
        "<",
        ">",
        "`",
        "```",
        "**",
        "__",
        "(",
        ")",
        "...",
        "Action:",
        "action=",
        "move is",
        "Answer:",
        "play",
        "<think>",
        "</think>",
        "'",
        '"',
        "\\",
        "%s",
        "{0}",
        "(?:",
        ".*",
        "(a+)+$",
        "null",
        "None",
        "true",
        '{"action": 4}',
        "\r\n",
        "\x1b[31m",
        "DROP TABLE;",
    ]
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + ["\n", "\t", "é", "中", "🙂", "\u0000", "\u2028"]
    out = []
    for k in range(n):
        kind = k % 5
        if kind == 0:  # junk pieces around legal actions
            parts = [
                rng.choice(junk) if rng.random() < 0.6 else rng.choice(legal)
                for _ in range(rng.integers(1, 6))
            ]
            out.append("".join(parts))
        elif kind == 1:  # random characters
            out.append("".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))))
        elif kind == 2:  # random unicode code points (incl. surrogates and private use)
            cps = rng.integers(0, 0x110000, size=int(rng.integers(1, 20)))
            out.append("".join(chr(int(c)) for c in cps))
        elif kind == 3:  # numbers, in and out of range, with decorations
            num = str(int(rng.integers(-1000, 1000))) if rng.random() < 0.7 else str(rng.normal() * 1e6)
            out.append(
                rng.choice(["", "[", "Action: ", " ", "\\boxed{"])
                + num
                + rng.choice(["", "]", ".", "}", " x"])
            )
        else:  # an action with junk glued on either side
            a = rng.choice(legal)
            out.append(rng.choice(junk) + a + rng.choice(["x", "0", "1", "!", "]", "\u0301", "é", ""]))
    for size in (10**4, 10**5, 10**6):  # huge strings
        out += ["a" * size, legal[0] + " " + "z" * size, "[" * size, "\\boxed{" * (size // 8), "🙂" * size]
    return out


@pytest.mark.parametrize("name", sorted(GAMES))
def test_fuzz_parser_never_raises_never_invents(name, caplog):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    g = make_game(name, 0)
    legal_sets = []
    while not g.is_terminal() and len(legal_sets) < 4:  # legal sets of a few different states
        legal = g.legal_actions()
        legal_sets.append(legal)
        g.apply(legal[-1])
    caplog.set_level(logging.DEBUG, logger="games.parsing")
    n_valid = 0
    for legal in legal_sets:
        for text in adversarial_strings(legal, 10_000 // len(legal_sets), rng):
            got = parse_action(text, legal)
            assert got is None or got in legal
            if got is not None:
                n_valid += 1
                assert got.lower() in text.lower()  # it was written there, not guessed
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no exception was swallowed
    assert n_valid > 300  # the fuzz also exercises the accepting paths


class ScriptedPlayer:
    """Plays outputs from a list (cycled), whatever the game."""

    def __init__(self, outputs, name="scripted"):
        self.outputs, self.k, self.name = list(outputs), 0, name

    def act(self, games, players, rng):
        out = []
        for _ in games:
            out.append(self.outputs[self.k % len(self.outputs)])
            self.k += 1
        return out


@pytest.mark.parametrize("name", sorted(GAMES))
def test_fuzzed_player_gets_the_penalty_and_opponent_the_win(name):
    rng = np.random.default_rng(1)
    legal = make_game(name, 0).legal_actions()
    texts = [t for t in adversarial_strings(legal, 600, rng) if len(t) < 10**4]
    fuzz = ScriptedPlayer(texts)
    cfg = InvalidActionConfig(policy="forfeit", penalty=-2.5)
    records = play_games(name, [fuzz, RandomPlayer()], n_games=300, seed=0, invalid=cfg)
    forfeits = 0
    for rec in records:
        if rec.forfeit >= 0:
            forfeits += 1
            assert rec.forfeit == 0 and rec.returns == [-2.5, 2.5]
            assert len(rec.invalid) == 1 and rec.score(1) == 1.0
        else:
            assert rec.invalid == []
    assert forfeits > 100


def test_retry_policy_counts_attempts():
    cfg = InvalidActionConfig(policy="retry", retries=2)
    assert cfg.max_attempts == 3 and InvalidActionConfig().max_attempts == 1
    # two bad outputs then a good one: no forfeit; next decision three bad ones: forfeit
    x = ScriptedPlayer(["junk", "??", "4", "x", "y", "z"])
    recs = play_games("tic_tac_toe", [x, ScriptedPlayer(["0"])], 1, 0, cfg)
    assert recs[0].moves == [(0, "4"), (1, "0")]
    assert recs[0].invalid == [(0, "junk"), (0, "??"), (0, "x"), (0, "y"), (0, "z")]
    assert recs[0].forfeit == 0 and recs[0].returns == [-1.0, 1.0] and recs[0].num_decisions == 7
    # three bad outputs in a row: forfeit with the penalty
    recs = play_games("tic_tac_toe", [ScriptedPlayer(["junk"]), RandomPlayer()], 1, 0, cfg)
    assert recs[0].forfeit == 0 and len(recs[0].invalid) == 3 and recs[0].returns == [-1.0, 1.0]


def test_invalid_config_validation():
    with pytest.raises(ValueError, match="forfeit"):
        InvalidActionConfig(policy="ignore")
    with pytest.raises(ValueError, match="negative"):
        InvalidActionConfig(penalty=0.5)
    with pytest.raises(ValueError, match="retries"):
        InvalidActionConfig(retries=-1)


def test_forfeit_returns_hand_values():
    # two players, penalty -1: offender -1, opponent +1 (sum 0)
    assert forfeit_returns(2, 1, -1.0) == [1.0, -1.0]
    # three players, penalty -2: offender -2, the two others share +2 -> +1 each
    assert forfeit_returns(3, 1, -2.0) == [1.0, -2.0, 1.0]
    with pytest.raises(ValueError):
        forfeit_returns(2, 2, -1.0)


def test_forfeit_returns_one_player():
    # blackjack has one seat: nobody to pay, the offender just gets the penalty
    assert forfeit_returns(1, 0, -1.0) == [-1.0]
    assert forfeit_returns(1, 0, -2.5) == [-2.5]
    with pytest.raises(ValueError, match="offender"):
        forfeit_returns(1, 1, -1.0)
    with pytest.raises(ValueError, match="at least 1 player"):
        forfeit_returns(0, 0, -1.0)
