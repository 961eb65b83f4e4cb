"""The imitation warm start of the self-play learners: the teacher's pairs are exactly what the learner
sees and what the teacher did; the warm start teaches a deterministic teacher; the ``honest`` strategy."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from games.arena import play_games
from games.dilemmas import StrategyPlayer
from games.league import decision_prompt
from games.selfplay import SelfPlayConfig
from games.selfplay_env import PromptSettings
from games.selfplay_warm import ImitationWarmStart, imitation_warm_start, teacher_pairs
from games.text import GameConfig
from marl.agent import Agent
from marl.config import AgentConfig, load_config
from marl.policies import PolicyConfig
from tests.cli_helpers import ROOT

STATE = PromptSettings("state", "compact", True)


def _ipd(rounds=3) -> GameConfig:
    return GameConfig(name="ipd", backend="dilemmas", params={"rounds": rounds})


def test_teacher_pairs_are_the_learners_prompts_and_the_teachers_moves():
    game = _ipd(rounds=3)
    pairs = teacher_pairs(game, STATE, "tit-for-tat", 4, seed=0)
    assert len(pairs) == 4 * 3 * 2  # games x rounds x seats: every decision of every game
    # tit-for-tat against itself cooperates throughout
    assert {a for _, a in pairs} == {"C"}
    # the prompts are decision_prompt of the acting seat, the same text the learner gets at play time
    seen = []

    class Spy:
        name = "spy"

        def act(self, games, players, rng):
            seen.extend(decision_prompt(g, p, "state", "compact") for g, p in zip(games, players))
            return [g.cooperative_action(p) for g, p in zip(games, players)]

    from games.selfplay_warm import derive_seed

    play_games(game, [Spy(), Spy()], 4, seed=derive_seed(0, "teacher-games"))
    assert sorted(p for p, _ in pairs) == sorted(seen)


def test_honest_claims_the_true_hand_and_plays_the_rest_at_random():
    game = GameConfig(name="trust_and_split", backend="dilemmas", params={"rounds": 10})
    pairs = teacher_pairs(game, STATE, "honest", 40, seed=1)
    claims = [(p, a) for p, a in pairs if a in ("R", "P", "S")]
    keeps = [int(a) for _, a in pairs if a not in ("R", "P", "S")]
    assert len(claims) == len(keeps) == 40 * 10 * 2
    assert all(f" hand {a} " in p for p, a in claims)  # the claim is the hand the prompt shows
    counts = Counter(keeps)
    assert set(counts) == set(range(11)) and max(counts.values()) < 2 * min(counts.values())
    # in a game without messages it is uniformly random
    ipd = teacher_pairs(_ipd(rounds=10), STATE, "honest", 40, seed=2)
    n_c = sum(a == "C" for _, a in ipd)
    assert 0.4 < n_c / len(ipd) < 0.6
    # and it draws from the arena's generator: another seed, other moves
    moves = StrategyPlayer("honest").act
    from games.dilemmas import make_dilemma

    g = [make_dilemma("ipd", {"rounds": 5}, s) for s in range(64)]
    a = moves(g, [0] * 64, np.random.default_rng(0))
    b = moves(g, [0] * 64, np.random.default_rng(1))
    assert a == moves(g, [0] * 64, np.random.default_rng(0)) and a != b


def test_warm_start_teaches_a_deterministic_teacher(tmp_path):
    torch.manual_seed(0)
    game = _ipd(rounds=5)
    acfg = AgentConfig(policy=PolicyConfig(tiny="100k", seed=1))
    agent = Agent("lm", acfg, cache_dir=tmp_path, total_steps=1, seed=0)
    ws = ImitationWarmStart(teacher="always-defect", games=16, steps=40, batch_size=16, lr=3e-3)
    out = imitation_warm_start({"lm": agent}, game, STATE, ws, seed=0, cache_dir=tmp_path)
    assert out["warmstart/lm/pairs"] == 16 * 5 * 2 and out["warmstart/lm/cached"] == 0.0
    assert out["warmstart/lm/loss_last"] < 0.1 * out["warmstart/lm/loss_first"]
    # greedy on states of other games: the taught move everywhere
    pol = agent.policy
    states = [p for p, _ in teacher_pairs(game, STATE, "random", 8, seed=7)]
    ids = pol.encode_prompts(states)
    gen = agent.act(ids, greedy=True, generator=None)
    texts = [pol.decode(gen.completion(i), skip_special_tokens=True).strip() for i in range(len(ids))]
    assert Counter(texts) == Counter({"D": len(states)})
    # the same settings again: loaded from the cache, the same weights
    again = Agent("lm", acfg, cache_dir=tmp_path, total_steps=1, seed=0)
    out2 = imitation_warm_start({"lm": again}, game, STATE, ws, seed=0, cache_dir=tmp_path)
    assert out2["warmstart/lm/cached"] == 1.0
    for (n, p), (_, q) in zip(agent.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n


def test_no_teacher_no_warm_start_and_bad_settings_are_refused(tmp_path):
    assert imitation_warm_start({}, _ipd(), STATE, ImitationWarmStart(), seed=0, cache_dir=tmp_path) == {}
    for bad in (dict(games=0), dict(steps=-1), dict(batch_size=0), dict(lr=0.0)):
        with pytest.raises(ValueError):
            ImitationWarmStart(teacher="random", **bad).validate()
    config = ROOT / "configs" / "dilemmas" / "ipd_naive.yaml"
    with pytest.raises(ValueError, match="honest"):  # a teacher is checked like an opponent
        load_config(SelfPlayConfig, [config], ["warmstart.teacher=mcts-10"]).validate()


def test_teacher_noise_replaces_that_share_of_moves_and_the_teacher_answers_the_deviations():
    # IPD, tit-for-tat teacher: without noise it only cooperates; with noise 0.2 each decision is a
    # uniform legal move with probability 0.2, so D is played in 0.2 * 1/2 = 10 % of the first moves,
    # and tit-for-tat answers those deviations (D after the co-player's D) in the pairs.
    game = _ipd(rounds=5)
    assert teacher_pairs(game, STATE, "tit-for-tat", 50, seed=3, noise=0.0) == teacher_pairs(
        game, STATE, "tit-for-tat", 50, seed=3
    )
    pairs = teacher_pairs(game, STATE, "tit-for-tat", 2000, seed=3, noise=0.2)
    first = [a for p, a in pairs if p.startswith("ipd 1/")]
    assert len(first) == 2 * 2000
    assert np.mean([a == "D" for a in first]) == pytest.approx(0.1, abs=0.015)
    assert np.mean([a == "D" for _, a in pairs]) > 0.15  # deviations plus the teacher's answers to them
    with pytest.raises(ValueError, match="noise"):
        ImitationWarmStart(teacher="fair", noise=1.5).validate()
