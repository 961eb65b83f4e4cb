"""End-to-end run behaviour through the real CLI: determinism, SIGKILL + resume, outputs."""

import pytest

from marl.rundir import read_metrics
from tests.cli_helpers import cli_env, deterministic, kill_after_checkpoint, resume, run_train, train_cmd

TOY = [
    "run.steps=6",
    "run.checkpoint_every=2",
    "run.eval_every=3",
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
    "prompts_per_step=4",
    "group_size=4",
    "eval_prompts=16",
]

TOY_YAML = """
recipe: single_turn
agents:
  small:
    policy: {tiny: 100k, seed: 1}
    optim: {lr: 3.0e-3}
    sampling: {max_new_tokens: 2}
  other:
    policy: {tiny: 100k, seed: 2, num_layers: 1}
    optim: {lr: 1.0e-3, schedule: cosine}
    sampling: {max_new_tokens: 2, temperature: 0.9}
    normalizer: {kind: running}
"""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    cfg = d / "toy.yaml"
    cfg.write_text(TOY_YAML)
    env = cli_env()
    run_train(train_cmd(cfg, d, "a", TOY), env)
    return d, cfg, env


def test_outputs_of_a_run(toy):
    d, _, _ = toy
    run = d / "a"
    assert (run / "config.yaml").is_file()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(0, 7))
    assert "eval/small/success" in rows[0] and "eval/other/success" in rows[-1]
    assert any(k.startswith("agent/other/") for k in rows[1])
    assert list((run / "plots").glob("*.png"))
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000006"
    for agent in ("small", "other"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        m = AutoModelForCausalLM.from_pretrained(run / "export" / agent)
        tok = AutoTokenizer.from_pretrained(run / "export" / agent)
        assert m.num_parameters() > 0 and tok.eos_token is not None


def test_same_seed_same_metrics(toy):
    d, cfg, env = toy
    run_train(train_cmd(cfg, d, "b", TOY, extra=["run.plots=false"]), env)
    a, b = deterministic(read_metrics(d / "a")), deterministic(read_metrics(d / "b"))
    assert a == b


def test_different_seed_different_metrics(toy):
    d, cfg, env = toy
    run_train(train_cmd(cfg, d, "c", TOY, extra=["run.seed=7", "run.plots=false"]), env)
    assert deterministic(read_metrics(d / "a")) != deterministic(read_metrics(d / "c"))


def test_sigkill_then_resume_matches_uninterrupted(toy):
    d, cfg, env = toy
    latest = d / "k" / "checkpoints" / "latest"
    killed_at = kill_after_checkpoint(
        train_cmd(cfg, d, "k", TOY, extra=["run.plots=false"]),
        latest,
        ("step_0000002", "step_0000004"),
        300,
        env,
    )
    assert killed_at != "step_0000006"
    resume(d / "k", env)
    assert deterministic(read_metrics(d / "k")) == deterministic(read_metrics(d / "a"))
