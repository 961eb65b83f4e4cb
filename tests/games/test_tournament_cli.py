"""`marl tournament`: player specs, errors, and the markdown / JSON / PNG reports through the real CLI."""

import json
import shutil
import subprocess

import pytest
import yaml

from games.text import GameConfig
from games.tournament import TournamentConfig, find_run, hf_player, make_players, run_player
from marl.config import ConfigError, load_config
from tests.cli_helpers import ROOT, cli_env, marl_cmd, run_train, train_cmd

RUN_YAML = """
recipe: selfplay
run: {steps: 1, eval_every: 0, threads: 1, progress: false, tensorboard: false, plots: false}
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
    with pytest.raises(ValueError, match="train it first"):
        make_players(TournamentConfig(players=["random", f"run:{tmp_path}/nothing"]))
    with pytest.raises(ValueError, match=r"openspiel:tic_tac_toe\(\)\n  tournament: +openspiel:connect_four"):
        make_players(
            TournamentConfig(game=GameConfig("connect_four"), players=["random", f"run:{d}/runs/ttt"])
        )
    with pytest.raises(ValueError, match="no agent 'bob'"):
        make_players(TournamentConfig(players=["random", f"run:{d}/runs/ttt:bob"]))
    players = make_players(TournamentConfig(players=["random", f"run:{d}/runs/ttt:lm"]))
    assert list(players) == ["random", "ttt/lm"]


@pytest.mark.parametrize(
    "override, match",
    [
        ("game.name=blackjack", "'blackjack' is a one-player game"),  # no opponent: no win, no Elo
        ("game.params={players: 3}", "'kuhn_poker' has 3 players; marl tournament plays two-player games"),
        ("game.name=goofspiel", "game: {name: turn_based_simultaneous_game, params: {game: {name: goofspiel"),
        ("game={name: rps_v2, backend: pettingzoo}", "'rps_v2' is a simultaneous-move game"),
    ],
)
def test_games_a_tournament_cannot_rate_are_refused_up_front(tmp_path, override, match):
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("game: {name: kuhn_poker}\nplayers: [random, cfr-10]\n")
    with pytest.raises(ConfigError, match=match):
        load_config(TournamentConfig, [yaml_path], [override])


def _fake_run(root, name, game_block, max_new_tokens=1, like=None):
    """A run directory: the trained run's files (if ``like``) with its saved config's game replaced."""
    run = root / name
    if like is not None:
        shutil.copytree(like, run)
        data = yaml.safe_load((run / "config.yaml").read_text())
    else:
        run.mkdir(parents=True)
        data = yaml.safe_load(RUN_YAML)
    data["game"] = game_block
    for agent in data["agents"].values():
        agent.setdefault("sampling", {})["max_new_tokens"] = max_new_tokens
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    return run


def test_run_trained_on_other_game_params_is_refused_showing_both_specs(tmp_path):
    small = _fake_run(tmp_path, "hex3", {"name": "hex", "params": {"board_size": 3}})
    with pytest.raises(ValueError) as err:
        find_run(f"run:{small}", GameConfig("hex"))
    msg = str(err.value)
    assert f"run {small}: openspiel:hex(board_size=3, num_cols=3, num_rows=3," in msg
    assert "tournament:    openspiel:hex(board_size=11, num_cols=11, num_rows=11," in msg
    # through the config: refused when the tournament starts, before anything is built or played
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text(f"game: {{name: hex}}\nplayers: [random, 'run:{small}']\n")
    with pytest.raises(ConfigError, match="trained on a different game"):
        load_config(TournamentConfig, [yaml_path]).check_players()
    # the same game spelled with its default is the same game: only the missing checkpoint is left
    same = _fake_run(tmp_path, "hex11", {"name": "hex", "params": {"board_size": 11}})
    with pytest.raises(ValueError, match="no checkpoint"):
        find_run(f"run:{same}", GameConfig("hex"))


def test_shipped_tournament_without_its_run_names_the_training_command(tmp_path, monkeypatch, capsys):
    from marl.cli import main
    from tests.cli_helpers import ROOT

    shipped = ROOT / "configs" / "games" / "tournament_tictactoe.yaml"
    monkeypatch.chdir(tmp_path)  # no runs/tictactoe here
    with pytest.raises(
        ConfigError,
        match=r"run:runs/tictactoe/\*.*train it first: marl train \S*configs/games/"
        r"tictactoe\.yaml",
    ):
        load_config(TournamentConfig, [shipped]).check_players()
    assert main(["show-config", str(shipped)]) == 0  # the config itself resolves before its run exists
    assert main(["tournament", str(shipped)]) == 2  # the CLI's config error, not a traceback
    assert "train it first: marl train" in capsys.readouterr().err
    monkeypatch.chdir(ROOT)
    if not list(ROOT.glob("runs/tictactoe/*/config.yaml")):
        with pytest.raises(ConfigError, match="train it first: marl train configs/games/tictactoe.yaml"):
            load_config(TournamentConfig, [shipped]).check_players()


def test_malformed_override_is_a_config_error_naming_a_valid_one(capsys):
    from marl.cli import main
    from tests.cli_helpers import ROOT

    shipped = ROOT / "configs" / "games" / "tournament_tictactoe.yaml"
    bad = "matchups=[{players:[lm,lm],games:16}]"
    with pytest.raises(ConfigError) as err:
        load_config(TournamentConfig, [shipped], [bad])
    msg = str(err.value)
    assert f"override '{bad}'" in msg and "not valid YAML" in msg and "column 10 of the value" in msg
    assert "'matchups=[{players: [lm, lm], games: 16}]'" in msg
    assert main(["tournament", str(shipped), bad]) == 2
    assert "config error: override" in capsys.readouterr().err


def test_broken_yaml_file_is_a_config_error(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("players: [random, mcts-5\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(TournamentConfig, [path])


def test_llm_players_without_the_budget_for_the_game_are_refused(trained, tmp_path):
    d, _ = trained
    kuhn = GameConfig("kuhn_poker", constrained_sampling=True)
    cfg = TournamentConfig(game=kuhn, players=["random", "hf:x"], max_new_tokens=2)
    # kuhn's longest action, "pass", is 4 tokens of the byte-level tokenizer
    with pytest.raises(ValueError, match=r"'kuhn_poker'.*'pass' takes 4 tokens.*max_new_tokens is 2"):
        hf_player(f"hf:{d / 'runs' / 'ttt' / 'export' / 'lm'}", cfg)
    run = _fake_run(
        tmp_path, "kuhn", {"name": "kuhn_poker", "constrained_sampling": True}, 2, d / "runs" / "ttt"
    )
    # a run trained with too short a budget: its own saved config is refused, naming the run and the budget
    with pytest.raises(
        ValueError, match=r"run .*kuhn does not load: .*agents.lm.sampling.max_new_tokens is 2"
    ):
        run_player(f"run:{run}", TournamentConfig(game=kuhn, players=["random", f"run:{run}"]))


def test_fixed_players_that_cannot_play_the_game_are_refused_up_front(tmp_path):
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("game: {name: kuhn_poker}\nplayers: [random, mcts-25]\n")
    with pytest.raises(ConfigError, match="'mcts-25': MCTS needs a perfect-information game"):
        load_config(TournamentConfig, [yaml_path])


def test_players_that_cannot_be_built_are_config_errors(tmp_path, trained):
    d, _ = trained
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("game: {name: tic_tac_toe}\nplayers: [random, 'hf:/no/such/model']\n")
    with pytest.raises(
        ConfigError, match="player 'hf:/no/such/model': policy.path '/no/such/model' does not exist"
    ):
        load_config(TournamentConfig, [yaml_path]).check_players()
    # before play too: an hf: player whose max_new_tokens cannot spell the game's longest action
    export = d / "runs" / "ttt" / "export" / "lm"
    yaml_path.write_text(
        f"game: {{name: kuhn_poker, constrained_sampling: true}}\nplayers: [random, 'hf:{export}']\n"
        "max_new_tokens: 3\n"
    )
    with pytest.raises(ConfigError, match=r"'pass' takes 4 tokens.*max_new_tokens is 3"):
        load_config(TournamentConfig, [yaml_path]).check_players()
    # make_players (used without load_config) turns what it cannot build into a ConfigError as well
    with pytest.raises(ConfigError, match="players: player 'run:"):
        make_players(TournamentConfig(players=["random", f"run:{tmp_path}/nothing"]))
