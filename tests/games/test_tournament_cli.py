"""`marl tournament`: player specs, errors, and the markdown / JSON / PNG reports through the real CLI."""

import json
import subprocess

import pytest

from games.text import GameConfig
from games.tournament import TournamentConfig, make_players
from marl.config import ConfigError, load_config
from tests.cli_helpers import ROOT, cli_env, marl_cmd, run_train, train_cmd

RUN_YAML = """
recipe: selfplay
run: {steps: 1, eval_every: 0, threads: 1, progress: false, tensorboard: false}
agents:
  lm:
    policy: {tiny: 100k, seed: 1, num_layers: 1}
    sampling: {max_new_tokens: 1}
game: {name: tic_tac_toe, constrained_sampling: true}
credit: {rule: grpo, group_key: [group, agent, role]}
matchups:
  - {players: [lm, random], games: 8}
final: {opponents: []}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-step self-play run (checkpoint + export) to put in tournaments."""
    d = tmp_path_factory.mktemp("t")
    (d / "run.yaml").write_text(RUN_YAML)
    env = cli_env()
    run_train(train_cmd(d / "run.yaml", d / "runs", "ttt"), env)
    return d, env


def test_tournament_cli_writes_markdown_json_png(trained):
    d, env = trained
    run = d / "runs" / "ttt"
    yaml = d / "tour.yaml"
    yaml.write_text(
        "game: {name: tic_tac_toe, constrained_sampling: true}\n"
        f"players: [random, mcts-5, 'run:{d / 'runs'}/*', 'hf:{run / 'export' / 'lm'}']\n"
        "games_per_pair: 4\nprompt_format: state\nmax_new_tokens: 1\nn_boot: 50\nanchor: random\n"
    )
    out = subprocess.run(
        marl_cmd("tournament", str(yaml), f"out_dir={d / 'tour'}", "name=r"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| rank | player | Elo |" in out.stdout and "Cross-table" in out.stdout
    rep = d / "tour" / "r"
    md = (rep / "tournament.md").read_text()
    data = json.loads((rep / "tournament.json").read_text())
    assert (rep / "tournament.png").stat().st_size > 1000
    names = {p["name"] for p in data["players"]}
    assert names == {"random", "mcts-5", "ttt/lm", "lm"}
    for p in data["players"]:
        assert p["wins"] + p["draws"] + p["losses"] == 3 * 4  # 3 opponents, 4 games each
        assert p["invalid_outputs"] == 0  # LLM players keep the run's legal-action mask
        assert p["name"] in md
    assert next(p for p in data["players"] if p["name"] == "random")["elo"] == pytest.approx(1000.0)
    assert data["cross_table"]["ttt/lm"]["random"]["w"] + data["cross_table"]["random"]["ttt/lm"]["w"] <= 4


def test_tournament_help_has_an_example():
    cmd = marl_cmd("tournament", "--help")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=cli_env())
    assert out.returncode == 0 and "marl tournament configs/games/tournament_tictactoe.yaml" in out.stdout


@pytest.mark.parametrize(
    "override, match",
    [
        ("players=[random]", "at least two"),
        ("players=[random,random]", "twice"),
        ("players=[random,alphazero]", "unknown player spec 'alphazero'"),
        ("games_per_pair=3", "even"),
    ],
)
def test_config_errors(tmp_path, override, match):
    yaml = tmp_path / "t.yaml"
    yaml.write_text("game: {name: tic_tac_toe}\nplayers: [random, mcts-5]\n")
    with pytest.raises(ConfigError, match=match):
        load_config(TournamentConfig, [yaml], [override])


def test_run_spec_errors_name_the_fix(trained, tmp_path):
    d, _ = trained
    with pytest.raises(FileNotFoundError, match="train it first"):
        make_players(TournamentConfig(players=["random", f"run:{tmp_path}/nothing"]))
    with pytest.raises(ValueError, match="trained on openspiel:tic_tac_toe"):
        make_players(
            TournamentConfig(game=GameConfig("connect_four"), players=["random", f"run:{d}/runs/ttt"])
        )
    with pytest.raises(ValueError, match="no agent 'bob'"):
        make_players(TournamentConfig(players=["random", f"run:{d}/runs/ttt:bob"]))
    players = make_players(TournamentConfig(players=["random", f"run:{d}/runs/ttt:lm"]))
    assert list(players) == ["random", "ttt/lm"]
