"""End-to-end run behaviour through the real CLI: determinism, SIGKILL + resume, outputs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from marl.run import read_metrics

ROOT = Path(__file__).resolve().parents[2]

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


def _cmd(cfg: Path, out: Path, name: str, extra=()):
    return [
        sys.executable,
        "-m",
        "marl.cli",
        "train",
        str(cfg),
        *TOY,
        f"run.out_dir={out}",
        f"run.name={name}",
        *extra,
    ]


def _deterministic(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    cfg = d / "toy.yaml"
    cfg.write_text(TOY_YAML)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_cmd(cfg, d, "a"), check=True, env=env, cwd=ROOT, capture_output=True)
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
    subprocess.run(_cmd(cfg, d, "b"), check=True, env=env, cwd=ROOT, capture_output=True)
    a, b = _deterministic(read_metrics(d / "a")), _deterministic(read_metrics(d / "b"))
    assert a == b


def test_different_seed_different_metrics(toy):
    d, cfg, env = toy
    subprocess.run(_cmd(cfg, d, "c", ["run.seed=7"]), check=True, env=env, cwd=ROOT, capture_output=True)
    assert _deterministic(read_metrics(d / "a")) != _deterministic(read_metrics(d / "c"))


def test_sigkill_then_resume_matches_uninterrupted(toy):
    d, cfg, env = toy
    proc = subprocess.Popen(
        _cmd(cfg, d, "k"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = d / "k" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text().strip() in ("step_0000002", "step_0000004"):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest.read_text().strip()
    assert killed_at != "step_0000006"
    subprocess.run(
        [sys.executable, "-m", "marl.cli", "train", "--resume", str(d / "k")],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    assert _deterministic(read_metrics(d / "k")) == _deterministic(read_metrics(d / "a"))
