"""Self-play recipe: config errors, routing to each agent's optimizer, invalid outputs, determinism and
SIGKILL + resume through the real CLI."""

from functools import partial

import numpy as np
import pytest

import games.selfplay as sp
from marl.agent import Agent
from marl.config import ConfigError, load_config
from marl.rundir import read_metrics
from marl.runner import Runner
from tests.cli_helpers import cli_env, deterministic, kill_after_checkpoint, resume, run_train, train_cmd

TOY_YAML = """
recipe: selfplay
run: {steps: 4, eval_every: 2, checkpoint_every: 2, threads: 1, progress: false, tensorboard: false}
agents:
  small:
    policy: {tiny: 100k, seed: 1, num_layers: 1}
    optim: {lr: 1.0e-3}
    sampling: {max_new_tokens: 1}
  large:
    policy: {tiny: 100k, seed: 2}
    optim: {lr: 5.0e-4}
    sampling: {max_new_tokens: 1}
game: {name: tic_tac_toe, constrained_sampling: true}
credit: {rule: grpo, group_key: [group, agent, role], gamma: 0.7}
matchups:
  - {players: [small, large], games: 8}
  - {players: [small, random], games: 4}
  - {players: [large, snapshot:large], games: 4}
league: {every: 2}
eval: {opponents: [random], games_per_seat: 2}
final: {opponents: [random], games_per_pair: 2}
"""


def _cfg(tmp_path, *overrides, text=TOY_YAML):
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    return load_config(
        sp.SelfPlayConfig,
        [path],
        [f"run.out_dir={tmp_path}", f"run.cache_dir={tmp_path}/c", *overrides],
        retired=sp.RETIRED_KEYS,
    )


@pytest.mark.parametrize(
    "override, match",
    [
        ("turn_reward=all", "no longer a key"),
        ("outcome_gamma=0.5", "credit.gamma"),
        ("credit.gigpo.omega=2.0", "does not read it"),
        ("matchups=[{players: [small, nobody], games: 4}]", "unknown player 'nobody'"),
        ("matchups=[{players: [random, mcts-5], games: 4}]", "no learning agent"),
        ("matchups=[{players: [small, random], games: 3}]", "multiple of seat rotations"),
        ("matchups=[{players: [small, snapshot:nobody], games: 4}]", "names no agent"),
        ("eval.opponents=[snapshot]", "must be 'random'"),
        ("prompt_format=board", "prompt_format"),
    ],
)
def test_config_errors_name_the_rule(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, override)


def test_round_time_step_needs_a_game_that_counts_rounds(tmp_path):
    # refused when the config loads, not at the first credit step; the dilemma games count rounds
    rule = ["credit.rule=loo_returns", "credit.group_key=[root]", "credit.time_step=round"]
    with pytest.raises(ConfigError, match="records no rounds"):
        _cfg(tmp_path, *rule)
    ipd = "game={name: ipd, backend: dilemmas, constrained_sampling: true}"
    assert _cfg(tmp_path, *rule, ipd).credit.time_step == "round"


def test_each_optimizer_sees_only_its_own_agents_turns(tmp_path, monkeypatch):
    """Two agents (different sizes) share games; spy on learn(): every row an agent learns from is a
    node that agent produced, and every node produced is learned by its agent exactly once."""
    cfg = _cfg(tmp_path, "run.steps=2", "run.eval_every=0", "final.opponents=[]")
    runner = Runner(cfg, cfg.run, "selfplay")
    seen: dict[str, list] = {"small": [], "large": []}
    trees = []
    orig_learn, orig_batches = Agent.learn, sp.tree_to_batches

    def spy_learn(self, batch, **kw):
        seen[self.name].append((len(trees), batch.node_ids.tolist(), batch.input_ids.clone()))
        return orig_learn(self, batch, **kw)

    def spy_batches(tree, *a, **kw):
        trees.append(tree)
        return orig_batches(tree, *a, **kw)

    monkeypatch.setattr(Agent, "learn", spy_learn)
    monkeypatch.setattr(sp, "tree_to_batches", spy_batches)
    sp.train(cfg, runner)
    assert len(trees) == 2
    for name, rows in seen.items():
        assert len(rows) == 2
        for step, ids, input_ids in rows:
            tree = trees[step - 1]
            idx = tree.agent_index(name)
            assert (tree.agent[ids] == idx).all(), f"{name} learned from another agent's turns"
            produced = np.flatnonzero((tree.agent == idx) & tree.has_payload())
            forced = [i for i in produced if not _has_choice(tree, i)]
            assert sorted(ids) == sorted(set(produced.tolist()) - set(forced))
            # the rows are the nodes' own tokens
            p = tree.payloads[ids[0]]
            n = len(p.prompt_ids) + len(p.completion_ids)
            assert input_ids[0, :n].tolist() == [*p.prompt_ids.tolist(), *p.completion_ids.tolist()]


def _has_choice(tree, i):
    a = tree.payloads[i].data.get("allowed_ids")
    return a is None or bool(((a >= 0).sum(-1) > 1).any())


def test_invalid_outputs_never_crash_a_run(tmp_path):
    """An unmasked random-weight LM writes garbage: games end by forfeit (or retry), the run goes on."""
    for policy in ("forfeit", "retry"):
        cfg = _cfg(
            tmp_path,
            "run.steps=2",
            "run.eval_every=0",
            "final.opponents=[]",
            "game.constrained_sampling=false",
            "agents.small.sampling.max_new_tokens=3",
            f"invalid.policy={policy}",
            "invalid.penalty=-2.0",
            f"run.name={policy}",
        )
        runner = Runner(cfg, cfg.run, "selfplay")
        last = sp.train(cfg, runner)
        assert last["train/small/invalid_rate"] > 0 and np.isfinite(last["agent/small/loss"])
        rows = read_metrics(runner.dir)
        assert sum(r.get("train/forfeits", 0) for r in rows) > 0


# ------------------------------------------------------------------------------------------ CLI
TOY_CLI = ["run.threads=1", "run.progress=false", "run.tensorboard=false", "run.plots=false"]


_deterministic = partial(deterministic, drop_substrings=("per_s",))  # throughput varies run to run


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cfg = d / "toy.yaml"
    cfg.write_text(TOY_YAML)
    env = cli_env()
    run_train(train_cmd(cfg, d, "a", TOY_CLI, cache_dir=f"{d}/c"), env)
    return d, cfg, env


def test_same_seed_same_metrics_and_other_seed_differs(cli_run):
    d, cfg, env = cli_run
    run_train(train_cmd(cfg, d, "b", TOY_CLI, cache_dir=f"{d}/c"), env)
    a, b = _deterministic(read_metrics(d / "a")), _deterministic(read_metrics(d / "b"))
    assert a == b and [r["step"] for r in a] == [0, 1, 2, 3, 4]
    run_train(train_cmd(cfg, d, "c", TOY_CLI, cache_dir=f"{d}/c", extra=["run.seed=5"]), env)
    assert _deterministic(read_metrics(d / "c")) != a


def test_sigkill_then_resume_matches_uninterrupted(cli_run):
    d, cfg, env = cli_run
    latest = d / "k" / "checkpoints" / "latest"
    killed_at = kill_after_checkpoint(
        train_cmd(cfg, d, "k", TOY_CLI, cache_dir=f"{d}/c"), latest, ("step_0000002",), 300, env
    )
    assert killed_at == "step_0000002"
    resume(d / "k", env)
    assert _deterministic(read_metrics(d / "k")) == _deterministic(read_metrics(d / "a"))
