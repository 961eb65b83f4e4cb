"""Evaluation of game-playing agents: scheduled games against fixed opponents and the final round robin."""

import numpy as np

import games.selfplay as sp
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
