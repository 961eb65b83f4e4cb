import json
import subprocess

from tests.cli_helpers import ROOT, marl_cmd

CONFIG = ROOT / "configs" / "single_turn.yaml"


def _marl(*args, check=True):
    return subprocess.run(marl_cmd(*args), cwd=ROOT, capture_output=True, text=True, check=check)


def test_help_shows_an_example_per_command():
    from marl.cli import build_parser

    parser = build_parser()
    assert "marl train configs/" in parser.format_help()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"train", "eval", "show-config"} <= set(subs.choices)
    for cmd, sub in subs.choices.items():
        out = sub.format_help()
        assert "example" in out and f"marl {cmd}" in out, cmd
    assert "marl train" in _marl("--help").stdout  # the real entry point prints it too


def test_show_config_applies_overrides():
    out = _marl("show-config", str(CONFIG), "run.seed=3", "agents.small.optim.lr=0.01").stdout
    assert "seed: 3" in out and "lr: 0.01" in out


def test_config_error_exits_before_work(tmp_path):
    res = _marl("train", str(CONFIG), "agents.small.optim.lrr=1", f"run.out_dir={tmp_path}", check=False)
    assert res.returncode == 2
    assert "agents.small.optim.lrr" in res.stderr and "Valid keys" in res.stderr
    assert not any(tmp_path.iterdir()), "a run directory was created despite the config error"


def test_missing_model_path_is_named(tmp_path):
    res = _marl(
        "train",
        str(CONFIG),
        f"agents.small.policy.path={tmp_path / 'nope'}",
        f"run.out_dir={tmp_path}",
        "run.progress=false",
        "run.plots=false",
        check=False,
    )
    assert res.returncode == 2
    assert str(tmp_path / "nope") in res.stderr and "agents.small" in res.stderr
    assert not any(p.name != "nope" for p in tmp_path.iterdir()), "work started despite the bad path"


def test_eval_reads_latest_checkpoint(tmp_path):
    _marl(
        "train",
        str(CONFIG),
        "run.steps=1",
        "prompts_per_step=2",
        "group_size=2",
        "eval_prompts=8",
        "agents.large.policy.tiny=100k",
        f"run.out_dir={tmp_path}",
        "run.name=r",
        "run.progress=false",
        "run.plots=false",
    )
    out = _marl("eval", str(tmp_path / "r"), "eval_prompts=8").stdout
    metrics = json.loads(out[out.index("{") :])
    assert set(metrics) == {"eval/small/success", "eval/large/success"}
