"""Every config in configs/ runs through the real CLI at toy scale: finite losses, every
trainable parameter of every agent changed."""

import math
import subprocess

import pytest
import torch
import yaml

from marl.agent import Agent
from marl.config import load_config
from marl.recipes import RECIPES, get_recipe
from marl.run import read_metrics
from tests.cli_helpers import ROOT, train_cmd

TRAIN_CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if (yaml.safe_load(p.read_text()) or {}).get("recipe")
)


def test_every_config_starts_with_its_command():
    for p in (ROOT / "configs").rglob("*.yaml"):
        first = p.read_text().splitlines()[0]
        assert first.startswith("# marl ") and str(p.relative_to(ROOT)) in first, p


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_smoke_run(config, tmp_path):
    recipe_name = yaml.safe_load(config.read_text())["recipe"]
    assert recipe_name in RECIPES
    recipe = get_recipe(recipe_name)
    out = subprocess.run(
        train_cmd(
            config,
            tmp_path,
            "smoke",
            recipe.SMOKE_OVERRIDES,
            extra=[
                "run.progress=false",
                "run.tensorboard=false",
                "run.checkpoint_every=0",
                f"run.cache_dir={tmp_path / 'cache'}",
            ],
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics(tmp_path / "smoke")
    losses = [v for r in rows for k, v in r.items() if k.startswith("agent/") and k.endswith("/loss")]
    assert losses and all(isinstance(v, float) and math.isfinite(v) for v in losses)
    run = tmp_path / "smoke"
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    cfg = load_config(recipe.Config, [run / "config.yaml"])
    for name, acfg in cfg.agents.items():
        initial = Agent(name, acfg, cache_dir=tmp_path / "cache", total_steps=1, seed=0)
        trained = Agent(name, acfg, cache_dir=tmp_path / "cache", total_steps=1, seed=0)
        trained.load(ckpt / "agents" / name)
        before = dict(initial.model.named_parameters())
        n = 0
        for pname, p in trained.model.named_parameters():
            if p.requires_grad:
                assert not torch.equal(p, before[pname]), f"{name}: {pname} did not change"
                n += 1
        assert n > 0
