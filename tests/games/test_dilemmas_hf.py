"""A local Hugging Face causal LM directory drops into the dilemma configs (``agents.lm.policy.path``)."""

from __future__ import annotations

import json

import pytest

from marl import cli
from marl.policies import PolicyConfig
from marl.policies.hf import ensure_tiny
from marl.rundir import read_metrics
from tests.cli_helpers import ROOT


@pytest.mark.slow  # two short CLI runs, about 15 s of CPU
def test_local_hf_model_trains_on_ipd_and_trust_and_split(tmp_path):
    path = ensure_tiny(PolicyConfig(tiny="100k"), tmp_path / "hf")
    assert (path / "config.json").is_file() and json.loads((path / "config.json").read_text())
    for name in ("ipd_advalign", "trust_and_split"):
        out = tmp_path / name
        args = [
            "train",
            str(ROOT / "configs" / "dilemmas" / f"{name}.yaml"),
            f"agents.lm.policy.path={path}",
            "run.steps=1",
            "run.eval_every=1",
            "eval.games_per_seat=1",
            "eval.opponents=[tit-for-tat]",
            "final.opponents=[]",
            "matchups=[{players: [lm, lm], games: 8}]",
            "game.params.rounds=2",
            f"run.out_dir={out}",
        ]
        assert cli.main(args) == 0
        rows = read_metrics(next(out.glob("selfplay-*")))
        last = [r for r in rows if "train/collective_return" in r][-1]
        assert last["train/collective_return"] > 0 and "eval/lm/tit-for-tat/return" in rows[-1]
