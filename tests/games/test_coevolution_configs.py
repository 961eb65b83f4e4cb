"""Every shipped co-evolution config runs through the real CLI at toy scale (train, then eval) with
the recipe's SMOKE_OVERRIDES, and every field of the recipe's own config blocks is read.

The same check as ``tests/test_config_fields.py`` (which runs every config of every recipe at
once, in the default suite), narrowed to this recipe so it can run on its own: ``-m slow``. Also: a
local Hugging Face model as attacker and defender, determinism and SIGKILL + resume."""

from __future__ import annotations

import pytest

from games import coevolution
from tests.cli_helpers import ROOT, save_tiny_hf_model
from tests.test_config_fields import FieldReads, _check_smoke_run, _train_and_eval, schema_classes

CONFIGS = sorted((ROOT / "configs" / "coevolution").glob("*.yaml"))


def _own_classes():
    return {c: f for c, f in schema_classes().items() if c.__module__.startswith("games.coevolution")}


@pytest.mark.slow  # tests/test_config_fields.py runs the same configs in the default suite
def test_every_coevolution_config_field_is_read(tmp_path):
    assert CONFIGS
    reads = FieldReads(_own_classes())
    runs = []
    with reads:
        for config in CONFIGS:
            runs.append(_train_and_eval(config, tmp_path / config.stem, tmp_path / "cache"))
    for run in runs:
        _check_smoke_run(run, coevolution, tmp_path / "cache")
        assert (run / "results.md").read_text().count("|") > 20
    assert not reads.unread(), "co-evolution config fields that nothing reads:\n" + "\n".join(reads.unread())


pytestmark = pytest.mark.filterwarnings("ignore")


def test_a_local_hugging_face_model_plays_attacker_and_defender(tmp_path):
    """A causal LM saved by ``transformers`` in a local directory (a Llama built here, not the embedded
    Qwen2) drops into the shipped config as an attacker and as the checker."""
    import math

    from marl import cli
    from marl.rundir import read_metrics

    save_tiny_hf_model(tmp_path / "hf", intermediate=96, positions=512)
    out = tmp_path / "runs"
    args = [
        "train",
        str(ROOT / "configs" / "coevolution" / "advevo.yaml"),
        *coevolution.SMOKE_OVERRIDES,
        f"agents.attacker.policy.path={tmp_path / 'hf'}",
        f"agents.checker.policy.path={tmp_path / 'hf'}",
        f"run.out_dir={out}",
        "run.name=hf",
        "run.progress=false",
        "run.plots=false",
        "run.tensorboard=false",
        "run.threads=1",
    ]
    assert cli.main(args) == 0
    rows = read_metrics(out / "hf")
    for name in ("attacker", "checker"):
        losses = [r[f"agent/{name}/loss"] for r in rows if f"agent/{name}/loss" in r]
        assert losses and all(math.isfinite(v) for v in losses)
    assert "eval/heldout_asr" in rows[-1] and (out / "hf" / "results.md").is_file()


def test_same_seed_same_metrics_and_sigkill_resume_matches(tmp_path):
    from functools import partial

    from marl.rundir import read_metrics
    from tests.cli_helpers import cli_env, deterministic, kill_after_checkpoint, resume, run_train, train_cmd

    config = ROOT / "configs" / "coevolution" / "advevo.yaml"
    toy = [
        *coevolution.SMOKE_OVERRIDES,
        "run.steps=4",
        "run.eval_every=2",
        "run.checkpoint_every=1",
        "run.threads=1",
        "run.progress=false",
        "run.plots=false",
        "run.tensorboard=false",
    ]
    same = partial(deterministic, drop_prefixes=("time/", "warmstart/"))  # timings; a cache hit
    env, cache = cli_env(), tmp_path / "c"
    run_train(train_cmd(config, tmp_path, "a", toy, cache_dir=cache), env)
    run_train(train_cmd(config, tmp_path, "b", toy, cache_dir=cache), env)
    a = same(read_metrics(tmp_path / "a"))
    assert a == same(read_metrics(tmp_path / "b")) and [r["step"] for r in a][-1] == 4
    latest = tmp_path / "k" / "checkpoints" / "latest"
    killed = kill_after_checkpoint(
        train_cmd(config, tmp_path, "k", toy, cache_dir=cache), latest, ("step_0000002",), 300, env
    )
    assert killed == "step_0000002"
    resume(tmp_path / "k", env)
    assert same(read_metrics(tmp_path / "k")) == a
