"""Evaluation of game-playing agents: scheduled games against fixed opponents and the final round robin."""

import numpy as np
import pytest

import games.selfplay as sp
from marl.config import ConfigError
from marl.runner import Runner
from tests.games.test_selfplay import _cfg


def test_eval_metrics_and_final_tournament_files(tmp_path):
    cfg = _cfg(tmp_path, "run.steps=1", "run.eval_every=1")
    runner = Runner(cfg, cfg.run, "selfplay")
    last = sp.train(cfg, runner)
    for name in ("small", "large"):
        w, d, l = (last[f"eval/{name}/random/{k}"] for k in ("win", "draw", "loss"))
        assert abs(w + d + l - 1.0) < 1e-9 and last[f"eval/{name}/random/nonloss"] == w + d
        assert np.isfinite(last[f"games/elo/{name}"])
        assert f"eval/final/{name}/random/nonloss" in last
    for f in ("tournament.md", "tournament.json", "tournament.png"):
        assert (runner.dir / f).is_file()


def test_one_player_games_train_evaluate_and_score_end_to_end(tmp_path):
    # blackjack: one seat, the house is the other side; every outcome counts by the sign of the return
    text = """
recipe: selfplay
run: {steps: 2, eval_every: 2, checkpoint_every: 0, threads: 1, progress: false, tensorboard: false}
agents:
  lm: {policy: {tiny: 100k, seed: 1, num_layers: 1}, sampling: {max_new_tokens: 6}}
game: {name: blackjack, constrained_sampling: true}
prompt_format: game
credit: {rule: grpo, group_key: [group, agent, role]}
matchups: [{players: [lm], games: 8}]
eval: {opponents: [random], games_per_seat: 6}
final: {opponents: [random], games_per_pair: 6}
"""
    cfg = _cfg(tmp_path, text=text)
    runner = Runner(cfg, cfg.run, "selfplay")
    last = sp.train(cfg, runner)
    for who in ("eval/lm/solo", "eval/reference/random", "eval/final/lm/solo", "eval/final/reference/random"):
        w, d, lo, r = (last[f"{who}/{k}"] for k in ("win", "draw", "loss", "return"))
        assert abs(w + d + lo - 1.0) < 1e-9 and -1.5 <= r <= 1.5
        assert not (w == 1.0 and r < 0)  # a losing mean return is never a 100% win rate
    assert 0.0 <= last["train/lm/win"] <= 1.0 and "train/lm/return" in last
    table = (runner.dir / "tournament.md").read_text()
    assert "lm/solo" in table and "reference/random" in table


def test_one_player_outcomes_by_the_sign_of_the_return():
    from games.arena import GameRecord
    from games.selfplay_env import outcome_counts

    assert [GameRecord(0, ["a"], returns=[r]).score(0) for r in (1.5, 0.0, -1.0)] == [1.0, 0.5, 0.0]
    ret = np.array([[1.0], [0.0], [-1.0], [-1.0]])
    assert outcome_counts(ret, np.zeros(4, np.int64)) == (1.0, 1.0, 2.0)


def test_three_player_games_seat_the_agent_in_every_seat(tmp_path):
    # 3-player kuhn poker: the agent sits in each of the 3 seats against two random players
    text = """
recipe: selfplay
run: {steps: 1, eval_every: 1, checkpoint_every: 0, threads: 1, progress: false, tensorboard: false}
agents:
  lm: {policy: {tiny: 100k, seed: 1, num_layers: 1}, sampling: {max_new_tokens: 4}}
game: {name: kuhn_poker, params: {players: 3}, constrained_sampling: true}
credit: {rule: grpo, group_key: [group, agent, role]}
matchups: [{players: [lm, random, random], games: 6}]
eval: {opponents: [random], games_per_seat: 4}
final: {opponents: []}
"""
    cfg = _cfg(tmp_path, text=text)
    last = sp.train(cfg, Runner(cfg, cfg.run, "selfplay"))
    w, d, lo = (last[f"eval/lm/random/{k}"] for k in ("win", "draw", "loss"))
    assert abs(w + d + lo - 1.0) < 1e-9
    with pytest.raises(ConfigError, match="final round robin pairs two players"):
        _cfg(tmp_path, "final.opponents=[random]", text=text)
    with pytest.raises(ConfigError, match="fills 2 seats; kuhn_poker has 3"):
        _cfg(tmp_path, "matchups=[{players: [lm, random], games: 2}]", text=text)
