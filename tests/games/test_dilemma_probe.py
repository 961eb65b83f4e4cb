"""The exact best response in the iterated matrix games (hand values, brute force) and the LM's
cooperation table (it predicts the greedy LLM player's moves)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from games.dilemma_probe import (
    JOINT,
    exploitability,
    ipd_best_response,
    policy_coop_table,
    strategy_table,
)
from games.dilemmas import IteratedMatrixGame, matrix_payoff
from games.league import LLMPlayer
from marl.policies import PolicyConfig, load_policy

IPD = [3.0, 0.0, 5.0, 1.0]


def test_best_response_against_fixed_strategies_by_hand():
    # TFT, 3 rounds: cooperate twice, defect last: 3 + 3 + 5 = 11 (TFT gets 3 + 3 + 0 = 6);
    # exploitability 11 - 3 * 3 = 2
    ve, vp, plan = ipd_best_response(IPD, 3, strategy_table("tit-for-tat", 3))
    assert (ve, vp) == (11.0, 6.0) and plan[0][None] == "C" and plan[2]["CC"] == "D"
    assert exploitability(IPD, 3, strategy_table("tit-for-tat", 3)) == 2.0
    # always-cooperate: defect every round, 3 * 5 = 15, exploitability 6
    assert exploitability(IPD, 3, strategy_table("always-cooperate", 3)) == 6.0
    # always-defect: defect every round, 3 * 1 = 3, exploitability 3 - 9 = -6
    assert ipd_best_response(IPD, 3, strategy_table("always-defect", 3))[:2] == (3.0, 3.0)
    # a coin flip, one round: C gives 0.5*3 + 0.5*0 = 1.5, D gives 0.5*5 + 0.5*1 = 3
    assert ipd_best_response(IPD, 1, [{None: 0.5}])[0] == 3.0


def _open_loop_best(table, rounds):
    """Brute force for a deterministic policy: the best of all 2^R move sequences."""
    best = -np.inf
    for seq in itertools.product("CD", repeat=rounds):
        last, total = None, 0.0
        for r, a in enumerate(seq):
            b = "C" if table[r][last] >= 0.5 else "D"
            total += matrix_payoff(IPD, a, b)[0]
            last = b + a
        best = max(best, total)
    return best


def test_best_response_equals_brute_force_on_random_deterministic_policies():
    rng = np.random.default_rng(0)
    for _ in range(30):
        rounds = int(rng.integers(1, 5))
        table = [{s: float(rng.integers(2)) for s in ([None] if r == 0 else JOINT)} for r in range(rounds)]
        assert ipd_best_response(IPD, rounds, table)[0] == _open_loop_best(table, rounds)


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="rounds"):
        ipd_best_response(IPD, 2, [{None: 1.0}])
    with pytest.raises(ValueError, match="probability"):
        ipd_best_response(IPD, 1, [{None: 1.5}])


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(PolicyConfig(tiny="100k", seed=3), tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("seat", [0, 1])
def test_coop_table_predicts_the_greedy_player(policy, seat):
    rounds = 3
    table = policy_coop_table(policy, "ipd", IPD, rounds, seat, greedy=True)
    soft = policy_coop_table(policy, "ipd", IPD, rounds, seat, temperature=1.0)
    player = LLMPlayer("lm", policy, prompt_format="state", constrained=True, greedy=True, max_new_tokens=2)
    rng = np.random.default_rng(0)
    for r in range(rounds):
        for s in [None] if r == 0 else JOINT:
            g = IteratedMatrixGame("ipd", IPD, rounds)
            if s is not None:
                g.history = [(s[0], s[1]) if seat == 0 else (s[1], s[0])] * r
            if seat == 1:
                g.pending = "D"
            out = player.act([g], [seat], rng)[0].strip()
            assert out == ("C" if table[r][s] == 1.0 else "D"), (r, s)
            assert (soft[r][s] >= 0.5) == (table[r][s] == 1.0)


def test_tabular_selfplay_one_round_aa_equals_naive_and_start_is_uniform():
    # with one round there is no past advantage: the AA credit is the agent's own advantage, so the
    # two rules take the same steps on the same draws
    from games.dilemma_probe import tabular_selfplay

    a, ca = tabular_selfplay(True, rounds=1, steps=20, lr=0.05, seed=3)
    n, cn = tabular_selfplay(False, rounds=1, steps=20, lr=0.05, seed=3)
    np.testing.assert_array_equal(a, n)
    assert [x["coop"] for x in ca] == [x["coop"] for x in cn]
    t, c = tabular_selfplay(False, rounds=3, steps=0)
    np.testing.assert_array_equal(t, np.full((3, 5), 0.5))
    assert c[0]["p_cc"] == c[0]["p_cd"] == 0.5
    with pytest.raises(ValueError, match="group_size"):
        tabular_selfplay(True, group_size=1)


def test_tabular_selfplay_aa_learns_reciprocity_naive_does_not():
    # measured (seeds 0..2, 300 steps, lr 0.01): AA P(C after C) 0.87..0.88, P(C after D) 0.14..0.15;
    # naive 0.22..0.23 and 0.14 with cooperation 0.12
    from games.dilemma_probe import tabular_selfplay

    _, aa = tabular_selfplay(True, steps=300, lr=0.01, seed=1)
    _, nv = tabular_selfplay(False, steps=300, lr=0.01, seed=1)
    assert aa[-1]["p_cc"] - aa[-1]["p_cd"] > 0.5 and aa[-1]["coop"] > 0.4
    assert nv[-1]["p_cc"] - nv[-1]["p_cd"] < 0.2 and nv[-1]["coop"] < 0.3


# ------------------------------------------------------------------ Trust-and-Split on a tabular policy
def test_tabular_split_start_is_uniform_and_pays_the_game_rule():
    # uniform keeps k0, k1 in 0..10: a round pays the winner 10 * 10 k_w / max(10, k0 + k1) and the
    # loser 1 * 10 k_l / max(...), so by symmetry E[collective per round] = 11 * E[10 k0 / max(10, k0 + k1)]
    from games.dilemma_probe import split_table_shapes, tabular_split_selfplay

    k = np.arange(11)
    per_round = 11 * np.mean(10 * k[:, None] / np.maximum(10, k[:, None] + k[None, :]))
    for press in (True, False):
        (pm, ps), c = tabular_split_selfplay(False, press=press, steps=0, roots=64, seed=2)
        assert abs(c[0]["collective"] - 10 * per_round) < 12  # 512 games, std error about 3
        assert abs(c[0]["concede"] - 1 / 11) < 0.02
        assert ps.shape == split_table_shapes(press)[1] and np.allclose(ps, 1 / 11)
    # truth_init t: the true claim has probability e^t / (e^t + 2)
    (pm, _), c = tabular_split_selfplay(False, steps=0, truth_init=np.log(8.0), roots=64)
    assert pm.shape == (3, 4, 3, 3)
    for h in range(3):
        np.testing.assert_allclose(pm[h, :, :, h], 0.8)
    assert abs(c[0]["truth"] - 0.8) < 0.02
    with pytest.raises(ValueError, match="group_size"):
        tabular_split_selfplay(True, group_size=1)


def test_tabular_split_one_round_no_press_aa_equals_naive_and_naive_keeps_all():
    # one split per player and no messages: no past advantage, the AA credit is the own advantage.
    # Keeping more never lowers the own payoff (10 k_i / max(10, k_i + k_j) rises with k_i), so the
    # self-interested rule moves both seats to keeping (nearly) all
    from games.dilemma_probe import tabular_split_selfplay

    (_, a), ca = tabular_split_selfplay(True, press=False, rounds=1, steps=150, lr=0.1, seed=3)
    (_, n), cn = tabular_split_selfplay(False, press=False, rounds=1, steps=150, lr=0.1, seed=3)
    np.testing.assert_array_equal(a, n)
    assert cn[-1]["winner_keep"] > 9 and cn[-1]["loser_keep"] > 9


def test_tabular_split_no_press_aa_concedes_at_points_scale_beta_only_when_small():
    # measured (benchmarks/results/dilemmas.md, seed 0, 400 steps, lr 0.05): naive collective 554,
    # AA beta 2 439 (credit dominated by the beta * past * A2 term, rewards in points), AA beta 0.02
    # (AdAlignLLM's beta 2 with rewards / 100) 902 with the loser conceding 76 % of rounds
    from games.dilemma_probe import tabular_split_selfplay

    _, nv = tabular_split_selfplay(False, press=False, steps=400, seed=0)
    _, big = tabular_split_selfplay(True, press=False, beta=2.0, steps=400, seed=0)
    _, small = tabular_split_selfplay(True, press=False, beta=0.02, steps=400, seed=0)
    assert nv[-1]["collective"] < 600 and nv[-1]["concede"] < 0.1
    assert big[-1]["collective"] < 600
    assert small[-1]["collective"] > 800 and small[-1]["concede"] > 0.5


def test_split_round_stats_of_fixed_strategies_by_hand():
    # always-cooperate tells the truth, keeps all as the winner and nothing as the loser; always-defect
    # tells the truth and keeps all: concede 1 / 0, loser keep 0 / 10, winner keep 10, truth 1
    from games.arena import play_games
    from games.dilemma_probe import split_round_stats
    from games.dilemmas import StrategyPlayer
    from games.text import GameConfig

    game = GameConfig(name="trust_and_split", backend="dilemmas", params={"rounds": 4})
    coop = StrategyPlayer("always-cooperate")
    defect = StrategyPlayer("always-defect")
    s = split_round_stats(game, play_games(game, [coop, coop], 3, seed=1))
    assert s == {"concede": 1.0, "loser keep": 0.0, "winner keep": 10.0, "truth": 1.0}
    s = split_round_stats(game, play_games(game, [defect, defect], 3, seed=1))
    assert s == {"concede": 0.0, "loser keep": 10.0, "winner keep": 10.0, "truth": 1.0}
    # one cooperator against one defector: the loser concedes in the rounds the cooperator loses
    recs = play_games(game, [coop, defect], 5, seed=2)
    s = split_round_stats(game, recs)
    lost = [rnd[0] != rnd[1] and _beats(rnd[1], rnd[0]) for r in recs for rnd in _hands(game, r)]
    assert s["concede"] == np.mean(lost) and s["loser keep"] == 10 * (1 - np.mean(lost))
    assert s["truth"] == 1.0 and s["winner keep"] == 10.0
    noprs = GameConfig(name="split_no_press", backend="dilemmas", params={"rounds": 2})
    assert np.isnan(split_round_stats(noprs, play_games(noprs, [coop, coop], 2, seed=0))["truth"])
    with pytest.raises(ValueError, match="no game records"):
        split_round_stats(game, [])


def _beats(a: str, b: str) -> bool:
    return {"R": "S", "P": "R", "S": "P"}[a] == b


def _hands(game, rec):
    from games.text import make_game

    return make_game(game, rec.seed).hands


def test_trust_and_split_without_information_barely_beats_both_grabbing():
    # the cap quoted in benchmarks/results/dilemmas.md: keeps blind to who won pay 55 s / max(10, s)
    # a round (at most 55); the best deterministic table of the own hand pays 55 2/3 (keep 2 / 8 / 10
    # with R / P / S), found by enumerating all 11^3 tables over the 6 ordered hand pairs. By hand:
    # R (2) beats S (10): 10 * 2/12 * 10 + 10 * 10/12 = 25; P (8) beats R (2): 80 + 2 = 82;
    # S (10) beats P (8): 10 * 10/18 * 10 + 10 * 8/18 = 60; mean (25 + 82 + 60) / 3 = 55 2/3
    import itertools

    from games.dilemmas import HANDS, rps_winner, split_payoffs

    for ka, kb in [(10, 10), (3, 4), (0, 10), (7, 9)]:
        s = ka + kb
        both = sum(split_payoffs(ka, kb, 10.0, 1.0, 10)) + sum(split_payoffs(ka, kb, 1.0, 10.0, 10))
        assert both / 2 == pytest.approx(55 * s / max(10, s))
    pairs = [(a, b) for a in HANDS for b in HANDS if a != b]

    def value(k: dict) -> float:
        tot = 0.0
        for a, b in pairs:
            v = (10.0, 1.0) if rps_winner(a, b) == 0 else (1.0, 10.0)
            tot += sum(split_payoffs(k[a], k[b], v[0], v[1], 10))
        return tot / len(pairs)

    best = max(itertools.product(range(11), repeat=3), key=lambda ks: value(dict(zip(HANDS, ks))))
    assert best == (2, 8, 10) and value(dict(zip(HANDS, best))) == pytest.approx(55 + 2 / 3)


def test_tabular_split_round_step_is_the_turn_step_without_press_only():
    # no press: one turn per player and round, so time_step round and turn are the same steps; with
    # press the message and the proposal of a round become one step and training differs
    from games.dilemma_probe import tabular_split_selfplay

    kw = dict(steps=20, roots=2, rounds=3, beta=0.05, seed=4)
    (_, a), ca = tabular_split_selfplay(True, press=False, time_step="turn", **kw)
    (_, b), cb = tabular_split_selfplay(True, press=False, time_step="round", **kw)
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    assert [c["collective"] for c in ca] == [c["collective"] for c in cb]
    (_, c), _ = tabular_split_selfplay(True, time_step="turn", **kw)
    (_, d), _ = tabular_split_selfplay(True, time_step="round", **kw)
    assert not np.allclose(c, d)
    with pytest.raises(ValueError, match="turn or round"):
        tabular_split_selfplay(True, time_step="step")


def test_tabular_split_fair_init_plays_the_fair_strategy():
    # fair_init x: the fair move has probability e^x / (e^x + A - 1); the table's most likely keep in
    # each (own hand, claim) is the keep of games.dilemmas' fair strategy in that deal
    from games.dilemma_probe import tabular_split_selfplay
    from games.dilemmas import HANDS, StrategyPlayer, TrustAndSplit

    x = np.log(0.9 * 10 / 0.1)  # 0.9 on the fair keep among 11
    (pm, ps), c = tabular_split_selfplay(False, steps=0, fair_init=x, seed=1)
    fair = StrategyPlayer("fair")
    for h, cl in itertools.product(range(3), range(3)):
        other = next(o for o in HANDS if o != HANDS[h])  # seat 0's hand: any other (it is hidden)
        g = TrustAndSplit("trust_and_split", rounds=1)
        g.hands = [(other, HANDS[h])]
        g.apply(HANDS[cl])  # seat 0's claim
        g.apply(HANDS[h])  # seat 1's (true) claim
        keep = int(fair.act([g], [1], np.random.default_rng(0))[0])
        np.testing.assert_allclose(ps[h, cl, :, keep], 0.9)
        np.testing.assert_allclose(pm[h, :, :, h], 10 * 0.9 / (10 * 0.9 + 2 * 0.1))
    # near-deterministic fair play: the winner keeps all every round, 1000; no press the same
    for press in (True, False):
        _, c = tabular_split_selfplay(False, press=press, steps=0, fair_init=40.0)
        assert c[0]["collective"] == 1000.0 and c[0]["concede"] == 1.0
