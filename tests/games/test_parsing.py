"""parse_action: tolerant, never raises, never guesses; the invalid-action policy and its returns."""

import logging

import numpy as np
import pytest

from games.arena import play_games
from games.opponents import RandomPlayer
from games.parsing import InvalidActionConfig, forfeit_returns, parse_action
from games.text import GAMES, GameConfig, make_game

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
    # legal actions in one case match in any case; mixed cases (notation) only match exactly
    assert parse_action("RAISE", ["fold", "call", "raise"]) == "raise"
    assert parse_action("A1", ["a1", "b2"]) == "a1"
    assert parse_action("nf3", ["e4", "Nf3"]) is None and parse_action("E4", ["e4", "Nf3"]) is None


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


# --- chat answers --------------------------------------------------------------------------------
SAN = ["b4", "bxc4", "Ke2", "Kd1", "Bxc4", "Bd3", "Be2", "O-O", "e8=Q+"]  # both bxc4 (pawn) and Bxc4
POKER = ["fold", "call", "raise"]
KUHN = ["pass", "bet"]
GIN = ["draw_stock", "draw_upcard", "knock", "pass"]  # multi-word actions, blanks as _
NIM = ["pile:1,_take:1;", "pile:2,_take:1;", "pile:2,_take:2;"]
C4 = [str(i) for i in range(7)]
HEX = ["a1", "a2", "b1", "b2", "c3"]
BIG = [str(i) for i in range(12)]  # "1" and "10", "11": no prefix guessing

CHAT_ANSWERS = [
    # markers that are whole words; "player" is not "play"
    ("As player x, my action: 4", DIGITS, "4"),
    ("You are player 1. I choose 4", DIGITS, "4"),
    ("You are player 0.\n\nMy move: 7", DIGITS, "7"),
    ("I am player 2 and I play 5.", DIGITS, "5"),
    ("Legal actions: 0, 1, 2. Action: 1", DIGITS, "1"),
    # markdown emphasis around the marker and the answer
    ("**Answer:** 4", DIGITS, "4"),
    ("**Answer**: 4", DIGITS, "4"),
    ("__Move:__ 6", DIGITS, "6"),
    ("*Action:* **2**", DIGITS, "2"),
    ("### Final answer: 3", DIGITS, "3"),
    ("The answer is **raise**", POKER, "raise"),
    # the last explicit marker wins
    ("I would not play 4. Answer: 5", DIGITS, "5"),
    ("Answer: 5. I would not play 4.", DIGITS, "5"),
    ("Move: 2? No.\nMove: 6", DIGITS, "6"),
    ("Answer: 4\n\nExplanation: if I play 0 instead, o wins.", DIGITS, "4"),
    ("<think>maybe 3? Answer: 3</think>\nAnswer: 6", DIGITS, "6"),
    ("<think>Answer: 1 looks good</think>\n8", DIGITS, "8"),
    # an explicit answer that is not legal is invalid, never an earlier mention
    ("I would not play 4. Answer: five", DIGITS, None),
    ("Move 3 was yours. Answer: 9", DIGITS, None),
    ("Answer: 4 or 5", DIGITS, "4"),
    ("Answer: either 3 or 5, not sure", DIGITS, None),
    # answer on the next line, JSON, tags, boxed
    ("Answer:\n\n4", DIGITS, "4"),
    ('{"action": "call"}', POKER, "call"),
    ('{"move": 3}', C4, "3"),
    ("<answer>call</answer>", POKER, "call"),
    ("Reasoning... \\boxed{8}", DIGITS, "8"),
    ("action = raise", POKER, "raise"),
    # verbs
    ("I'll call.", POKER, "call"),
    ("I fold", POKER, "fold"),
    ("I think I should raise here.", POKER, "raise"),
    ("I will bet.", KUHN, "bet"),
    ("I'd like to pass.", KUHN, "pass"),
    ("Let me go with 2.", DIGITS, "2"),
    ("I'm going to play column 3", C4, "3"),
    ("I pick the centre, 4", DIGITS, None),
    ("Dropping into column 3 is best, so I choose 3.", C4, "3"),
    ("Answer: I choose to call", POKER, "call"),
    # chess SAN: case tells a pawn (bxc4) from a bishop (Bxc4)
    ("**Move:** Bxc4", SAN, "Bxc4"),
    ("I'll play bxc4", SAN, "bxc4"),
    ("My move is Bd3.", SAN, "Bd3"),
    ("Answer: BXC4", SAN, None),
    ("Answer: bd3", SAN, None),  # the legal actions mix cases: only the exact spelling counts
    ("Answer: Bd3", SAN, "Bd3"),
    ("Final answer: O-O", SAN, "O-O"),
    ("Answer: e8=Q+", SAN, "e8=Q+"),
    ("1. b4", SAN, None),
    ("bxc4", ["b4", "Bxc4", "Kd1"], None),  # the pawn capture is not legal; the bishop's is not a repair
    ("The best move here is Ke2.", SAN, "Ke2"),
    ("The best move would be 4.", DIGITS, "4"),
    ("Answer - 4", DIGITS, "4"),
    ("```\n4\n```", DIGITS, "4"),
    ('Answer: "call"', POKER, "call"),
    # multi-word actions written with blanks
    ("Answer: draw stock", GIN, "draw_stock"),
    ("I choose to draw stock", GIN, "draw_stock"),
    ("**Action**: `draw_upcard`", GIN, "draw_upcard"),
    ("I'll knock.", GIN, "knock"),
    ("Draw upcard", GIN, "draw_upcard"),
    ("Answer: pile:2, take:1;", NIM, "pile:2,_take:1;"),
    ("pile:1,_take:1;", NIM, "pile:1,_take:1;"),
    # coordinates and numbers: no prefix or number guessing
    ("Answer: c3", HEX, "c3"),
    ("I play B2", HEX, "b2"),
    ("Answer: 10", BIG, "10"),
    ("Answer: 1", BIG, "1"),
    ("Answer: 100", BIG, None),
    ("My move: 04", DIGITS, None),
    ("Column 3", C4, "3"),
    ("cell 4.", DIGITS, "4"),
    ("The 4 corners are taken.", DIGITS, None),
    # nothing to take
    ("I think calling is best", POKER, None),
    ("You are player 1. The centre is best.", DIGITS, None),
    ("Let me think about the board.", DIGITS, None),
    ("[thinking]", DIGITS, None),
]


@pytest.mark.parametrize("text, legal, expected", CHAT_ANSWERS)
def test_chat_answers(text, legal, expected):
    assert parse_action(text, legal) == expected


def test_chat_table_is_large():
    assert len(CHAT_ANSWERS) >= 50


def test_answer_after_a_long_reasoning_is_found():
    # the last marker decides, even beyond the first MAX_SCAN characters of a long chain of thought
    text = "Let me consider every cell. " * 2000 + "\nAnswer: 6"
    assert len(text) > 10 * 4096
    assert parse_action(text, DIGITS) == "6"
    assert parse_action("Answer: 2\n" + "filler " * 5000, DIGITS) == "2"


@pytest.mark.parametrize("legal", [SAN, GIN, NIM, BIG], ids=["san", "multiword", "nim", "prefixes"])
def test_fuzz_never_invents_on_case_and_multiword_vocabularies(legal):
    """The class behind the chat table: whatever the text, the answer is legal and was written there
    (exactly where the legal actions mix cases, else up to case; blanks standing for _)."""
    rng = np.random.default_rng(len(legal))
    mixed = not (all(a == a.lower() for a in legal) or all(a == a.upper() for a in legal))
    n_valid = 0
    for text in adversarial_strings(legal, 4000, rng):
        got = parse_action(text, legal)
        assert got is None or got in legal
        if got is not None:
            n_valid += 1
            written = text.replace(" ", "_")
            if mixed:
                assert got in written  # notation: only the exact spelling
            else:
                assert got.lower() in written.lower()
    assert n_valid > 80  # the fuzz also exercises the accepting paths


CHAT_TEMPLATES = [
    "{a}",
    "{b}",
    "Answer: {a}",
    "Answer: {b}",
    "**Answer:** {a}",
    "**Move:** `{a}`",
    "I'll play {a}.",
    "My move is {a}.",
    "As player 1, my action: {a}",
    "You are player 0.\n\nAction: {a}",
    "<think>Answer: {o}</think>\nAnswer: {a}",
    "I would not play {o}. Answer: {a}",
    "\\boxed{{{a}}}",
    "Final answer: {a}",
]


def test_chat_templates_parse_every_action_of_every_game():
    """The class behind the table: ordinary answers naming a legal action ({a}, or {b} with blanks for _)
    parse to it in every conformance game, whatever its names hold: parentheses and a full stop
    ("x(0,0)."), ';' in backticks ("`pile:1,_take:1;`"), marker words ("Player: 0 Action: Draw upcard")."""
    from tests.games.test_conformance import OPENSPIEL

    configs = [GameConfig(n, params=p) for n, p in OPENSPIEL]
    configs += [GameConfig("tictactoe_v3", "pettingzoo"), GameConfig("leduc_holdem_v4", "pettingzoo")]
    failures = []
    for cfg in configs:
        rng = np.random.default_rng(0)
        for seed in range(2):
            g = make_game(cfg, seed)
            for _ in range(3):
                if g.is_terminal():
                    break
                legal = g.legal_actions()
                for k, a in enumerate(legal[:10]):
                    o = legal[(k + 1) % len(legal)]
                    for t in CHAT_TEMPLATES:
                        text = t.format(a=a, o=o, b=a.replace("_", " "))
                        if len(legal) > 1 and parse_action(text, legal) != a:
                            failures.append((cfg.name, text, parse_action(text, legal)))
                g.apply(legal[int(rng.integers(len(legal)))])
    assert failures == []
