"""The exact Trust-and-Split best response: its values against fixed strategies by hand, its plan
played out, and the LM's constrained-sampling probabilities against the sampler's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from games.arena import play
from games.dilemmas import StrategyPlayer, TrustAndSplit
from games.league import LLMPlayer, decision_prompt, encode_prompts, llm_decisions
from games.split_best_response import action_probs, play_stats, split_best_response
from games.text import GameConfig, make_game
from marl.policies import PolicyConfig, load_policy


def _ts(rounds: int, **params) -> GameConfig:
    return GameConfig("trust_and_split", backend="dilemmas", params={"rounds": rounds, **params})


def test_one_round_by_hand():
    # always-defect keeps 10: the best answer keeps 10 too, 5 coins each: 50 as the winner, 5 as the
    # loser, 27.5 on average; its self-play: 55.
    r = split_best_response(_ts(1), StrategyPlayer("always-defect"))
    assert r.per_seat == pytest.approx((27.5, 27.5)) and r.selfplay_collective == pytest.approx(55.0)
    assert r.exploit == pytest.approx(0.0, abs=1e-9)
    # always-cooperate (true claims; keeps all when its hand beats the claim, none when the claim beats
    # it) concedes to a claim that beats its hand. Seat 1 speaks second in round 1: it hears the true
    # hand, claims what beats it when it is the loser (10 coins at 1 each) and wins 100 otherwise: 55.
    # Seat 0 speaks first: as the loser it cannot know what to claim; keeping all against a keep of
    # 10 gives 5: (100 + 5) / 2 = 52.5. Self-play 100. The cooperator gets, against seat 0, 0 when it
    # loses and 50 when it wins (5 coins at 10): 25; against seat 1, 0 either way: 12.5 over seats.
    r = split_best_response(_ts(1), StrategyPlayer("always-cooperate"))
    assert r.per_seat == pytest.approx((52.5, 55.0)) and r.selfplay_collective == pytest.approx(100.0)
    assert r.exploit == pytest.approx(53.75 - 50.0)
    assert r.policy_return == pytest.approx(12.5)


@pytest.mark.parametrize(
    "spec, per_seat",
    [
        # reciprocal answers a grab (or a lie) with keeping all next round, which costs the winner
        # 50 of 100: only the last round's grab pays. Round 3 is spoken first by seat 0: as the
        # loser (1/2) seat 0 grabs, 5 coins at 1 (+2.5); seat 1 hears the true claim and lies, so
        # reciprocal concedes: 10 coins at 1 (+5). Fair play otherwise: 50 a round.
        ("reciprocal", (152.5, 155.0)),
        # fair lets a truthful grab pass (it punishes lies only): grab as the loser every round,
        # +2.5 a round, and seat 1 lies instead in the last round (+5 there instead of +2.5).
        ("fair", (157.5, 160.0)),
    ],
)
def test_three_rounds_by_hand_and_the_plan_earns_its_value(spec, per_seat):
    g = _ts(3)
    frozen = StrategyPlayer(spec)
    r = split_best_response(g, frozen)
    assert r.per_seat == pytest.approx(per_seat)
    assert r.selfplay_collective == pytest.approx(300.0)
    assert r.exploit == pytest.approx(np.mean(per_seat) - 150.0)
    # the plan, played: only the hands are random, so the mean lands within a few standard errors
    rng = np.random.default_rng(0)
    n = 600
    for seat in (0, 1):
        games = [make_game(g, int(s)) for s in rng.integers(0, 2**31 - 1, size=n)]
        seats = [r.player, frozen] if seat == 0 else [frozen, r.player]
        got = [x.returns[seat] for x in play(games, [seats] * n, rng)]
        assert abs(np.mean(got) - per_seat[seat]) < 4 * np.std(got) / np.sqrt(n) + 1e-9
    st = play_stats(g, r.player, frozen, 100)
    assert st["policy truth"] == 1.0 and st["policy concede"] == 1.0  # never grabbed from a true claim
    if spec == "fair":  # the best response grabs as the loser in every round
        assert st["br loser keep"] == 10.0
    else:  # and against reciprocal only in the last round: it concedes in rounds 1 and 2
        assert 0.5 < st["br concede"] < 0.8


def test_refuses_what_the_recursion_cannot_hold():
    with pytest.raises(ValueError, match="memory-one"):
        split_best_response(_ts(2), StrategyPlayer("grim-trigger"))
    with pytest.raises(ValueError, match="trust_and_split"):
        split_best_response(
            GameConfig("ipd", backend="dilemmas", params={"rounds": 2}), StrategyPlayer("fair")
        )


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(PolicyConfig(tiny="100k", seed=3), tmp_path_factory.mktemp("cache"))


def test_refuses_an_llm_player_it_cannot_score_exactly(policy):
    g = _ts(1)
    for kw, msg in (
        ({"greedy": True}, "sampling, constrained"),
        ({"constrained": False}, "sampling, constrained"),
        ({"top_p": 0.9}, "top_p"),
        ({"max_new_tokens": 2}, "cuts the actions"),  # "10" + eos is 3 byte tokens
    ):
        args = dict(prompt_format="state", constrained=True, greedy=False, max_new_tokens=3) | kw
        with pytest.raises(ValueError, match=msg):
            split_best_response(g, LLMPlayer("lm", policy, **args))
    with pytest.raises(ValueError, match="temperature"):
        action_probs(policy, ["x A:"], [["R", "P"]], temperature=0.0)


def test_action_probs_are_the_samplers(policy):
    # games at every phase of two rounds; the sampler's own log-probabilities (constrained, T = 0.7)
    # of what it drew must be what action_probs gives those actions
    rng = np.random.default_rng(1)
    games, seats = [], []
    for s in range(24):
        g = TrustAndSplit("trust_and_split", rounds=2, coins=10, seed=s)
        for _ in range(int(rng.integers(0, 8))):
            g.apply(str(rng.choice(g.legal_actions())))
        games.append(g)
        seats.append(g.current_player())
    gen = torch.Generator().manual_seed(0)

    def generate(ids, proc):
        return policy.generate(ids, max_new_tokens=3, temperature=0.7, generator=gen, logits_processor=proc)

    dec = llm_decisions(
        policy,
        games,
        seats,
        generate,
        prompt_format="state",
        prompt_style="compact",
        constrained=True,
        temperature=0.7,
    )
    prompts = [decision_prompt(g, p, "state", "compact") for g, p in zip(games, seats)]
    probs = action_probs(policy, prompts, [g.legal_actions() for g in games], temperature=0.7, batch_size=7)
    assert len(encode_prompts(policy, prompts)) == len(games)
    for g, d, text, lp in zip(games, probs, dec.texts, dec.logprobs):
        assert set(d) == set(g.legal_actions()) and sum(d.values()) == pytest.approx(1.0, abs=1e-5)
        assert d[text] == pytest.approx(float(np.exp(lp.sum())), rel=1e-4)


def test_lm_values_agree_with_play(policy):
    # a small game (2 rounds of 2 coins) against the untrained LM: the exact self-play collective and
    # the best response's value, against the means of played games
    g = _ts(2, coins=2)
    lm = LLMPlayer("lm", policy, prompt_format="state", constrained=True, greedy=False, max_new_tokens=3)
    r = split_best_response(g, lm)
    rng = np.random.default_rng(2)
    n = 400
    games = [make_game(g, int(s)) for s in rng.integers(0, 2**31 - 1, size=n)]
    sp = [sum(x.returns) for x in play(games, [[lm, lm]] * n, rng)]
    assert abs(np.mean(sp) - r.selfplay_collective) < 4 * np.std(sp) / np.sqrt(n)
    for seat in (0, 1):
        games = [make_game(g, int(s)) for s in rng.integers(0, 2**31 - 1, size=n)]
        seats = [r.player, lm] if seat == 0 else [lm, r.player]
        got = [x.returns[seat] for x in play(games, [seats] * n, rng)]
        assert abs(np.mean(got) - r.per_seat[seat]) < 4 * np.std(got) / np.sqrt(n)
    # a best response earns at least what always-defect earns against the same player
    ad = StrategyPlayer("always-defect")
    games = [make_game(g, int(s)) for s in rng.integers(0, 2**31 - 1, size=n)]
    got = [x.returns[0] for x in play(games, [[ad, lm]] * n, rng)]
    assert np.mean(got) <= r.per_seat[0] + 4 * np.std(got) / np.sqrt(n)
