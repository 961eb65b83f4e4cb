"""Self-play recipe: turn rewards, batched play into the turn tree, routing to each agent's optimizer,
invalid outputs, determinism and SIGKILL + resume through the real CLI."""

from functools import partial

import numpy as np
import pytest

import games.selfplay as sp
from games.league import SnapshotPool
from games.opponents import RandomPlayer
from marl.agent import Agent
from marl.config import ConfigError, load_config
from marl.run import read_metrics
from marl.runner import Runner
from marl.tree import TurnTree
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
credit: {rule: grpo, group_key: [group, agent, role]}
outcome_gamma: 0.7
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
        sp.SelfPlayConfig, [path], [f"run.out_dir={tmp_path}", f"run.cache_dir={tmp_path}/c", *overrides]
    )


# ------------------------------------------------------------------------------------------ math
def test_turn_rewards_last_all_discount_and_retried_invalid():
    # game 0: seat 0 moves at nodes 0, 2, 4, seat 1 at 1, 3; final returns (+1, -1). game 1: seat 0 once.
    game = np.array([0, 0, 0, 0, 0, 1])
    seat = np.array([0, 1, 0, 1, 0, 0])
    returns = np.array([[1.0, -1.0], [0.0, 0.0]])
    none = np.zeros(6, bool)
    # MARS: the outcome sits on each player's last turn (nodes 4 and 3), 0 elsewhere
    r = sp.turn_rewards(game, seat, none, returns, scheme="last", penalty=-1.0)
    np.testing.assert_array_equal(r, [0, 0, 0, -1, 1, 0])
    # all, gamma 0.5: seat 0's turns have 2, 1, 0 own turns left -> 0.25, 0.5, 1; seat 1: -0.5, -1
    r = sp.turn_rewards(game, seat, none, returns, scheme="all", penalty=-1.0, gamma=0.5)
    np.testing.assert_allclose(r, [0.25, -0.5, 0.5, -1.0, 1.0, 0.0])
    # a retried invalid output (node 2, not seat 0's last word) pays the penalty itself
    inv = np.array([0, 0, 1, 0, 0, 0], bool)
    r = sp.turn_rewards(game, seat, inv, returns, scheme="all", penalty=-2.0)
    np.testing.assert_array_equal(r, [1, -1, -2, -1, 1, 0])
    # a forfeit is the offender's last turn: it carries the final (forfeit) return, here -1
    inv = np.array([0, 0, 0, 0, 1, 0], bool)
    r = sp.turn_rewards(game, seat, inv, np.array([[-1.0, 1.0], [0, 0]]), scheme="last", penalty=-1.0)
    np.testing.assert_array_equal(r, [0, 0, 0, 1, -1, 0])


def test_outcome_counts_hand_values():
    # seat 0 of: a win (1 > -1), a draw (0 == 0), a loss (-1 < 1); seat 1 of the same games reversed
    ret = np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]])
    assert sp.outcome_counts(ret, np.array([0, 0, 0])) == (1.0, 1.0, 1.0)
    assert sp.outcome_counts(ret, np.array([1, 1, 0])) == (0.0, 1.0, 2.0)


def test_seat_rotations_and_schedule():
    assert sp.seat_rotations(["a", "b"]) == [["a", "b"], ["b", "a"]]
    assert sp.seat_rotations(["a", "a"]) == [["a", "a"]]
    cfg = sp.SelfPlayConfig(
        agents={"a": None},
        matchups=[sp.MatchupConfig(["a", "random"], 8), sp.MatchupConfig(["a", "a"], 4)],
        group_size=2,
    )
    seats, starts, kinds = sp.schedule_games(cfg)
    assert seats == [["a", "random"]] * 4 + [["random", "a"]] * 4 + [["a", "a"]] * 4
    np.testing.assert_array_equal(starts, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # G = 2 games per start
    np.testing.assert_array_equal(kinds, [0] * 4 + [1] * 4 + [2] * 4)


@pytest.mark.parametrize(
    "override, match",
    [
        ("turn_reward=all", "centres every turn"),
        ("matchups=[{players: [small, nobody], games: 4}]", "unknown player 'nobody'"),
        ("matchups=[{players: [random, mcts-5], games: 4}]", "no learning agent"),
        ("matchups=[{players: [small, random], games: 3}]", "multiple of seat rotations"),
        ("matchups=[{players: [small, snapshot:nobody], games: 4}]", "names no agent"),
        ("eval.opponents=[snapshot]", "must be 'random'"),
        ("prompt_format=board", "prompt_format"),
    ],
)
def test_config_errors_name_the_rule(tmp_path, override, match):
    extra = ["credit.rule=mars_turn"] if override.startswith("turn_reward") else []
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, override, *extra)


# ------------------------------------------------------------------------------------------ playing
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    cfg = _cfg(tmp)
    runner = Runner(cfg, cfg.run, "selfplay")
    agents = sp.build_agents(cfg, runner)
    return cfg, agents


def _play(cfg, agents, seed=0):
    league = SnapshotPool({n: a.policy for n, a in agents.items()})
    for n in agents:
        league.add(n, 0)
    tree = TurnTree(list(agents))
    calls = {n: [] for n in agents}
    for n, a in agents.items():
        a._orig_act = a.act
        a.act = lambda ids, n=n, a=a, **kw: calls[n].append(len(ids)) or a._orig_act(ids, **kw)
    try:
        played = sp.play_step(
            cfg, agents, {"random": RandomPlayer()}, league, tree, np.random.default_rng(seed)
        )
    finally:
        for a in agents.values():
            a.act = a._orig_act
    return tree, played, calls


def test_play_step_grows_one_path_per_game_and_batches_each_ply(toy):
    cfg, agents = toy
    tree, played, calls = _play(cfg, agents)
    B = len(played.games)
    assert B == 16 and all(g.is_terminal() for g in played.games)
    roots = tree.roots()
    assert len(roots) == B and (tree.agent[roots] == -1).all()  # group_size 1: a root per game
    nodes = np.flatnonzero(tree.agent >= 0)
    # every learner node: its agent sits in its role's seat of its game, turns increase along the path
    for i in nodes:
        b = int(tree.episode[i]) - int(tree.episode[roots].max()) - 1
        assert played.seats[b][int(tree.role[i])] == tree.agent_names[int(tree.agent[i])]
        p = int(tree.parent[i])
        if tree.agent[p] >= 0:
            assert tree.turn[p] < tree.turn[i] and tree.episode[p] == tree.episode[i]
    # one act call per agent per ply (<= 9 plies), holding all its pending games: at ply 0 small is
    # x in 4 games against large and 2 against random; large is x in 4 against small and 2 against itself
    assert sum(calls["small"]) + sum(calls["large"]) == played.decisions == len(nodes)
    assert len(calls["small"]) <= 9 and len(calls["large"]) <= 9
    assert calls["small"][0] == 6 and calls["large"][0] == 6
    # group = kind of game (matchup, rotation): 2 rotations of small/large, of small/random, 1 of self
    assert sorted(set(tree.group[roots].tolist())) == [0, 1, 2, 3, 4, 5]
    # rewards: 'auto' with grpo -> all, gamma 0.7 -> |r| is 0.7^k of the final return, last turns terminal
    r = tree.reward[nodes]
    assert np.isfinite(r).all() and np.all(np.abs(r) <= 1.0)
    assert tree.terminal[nodes].sum() == B


def test_each_optimizer_sees_only_its_own_agents_turns(tmp_path, monkeypatch):
    """Two agents (different sizes) share games; spy on learn(): every row an agent learns from is a
    node that agent produced, and every node produced is learned by its agent exactly once."""
    cfg = _cfg(tmp_path, "run.steps=2", "run.eval_every=0", "final.opponents=[]")
    runner = Runner(cfg, cfg.run, "selfplay")
    seen: dict[str, list] = {"small": [], "large": []}
    trees = []
    orig_learn, orig_batches = Agent.learn, sp.tree_to_batches

    def spy_learn(self, batch):
        seen[self.name].append((len(trees), batch.node_ids.tolist(), batch.input_ids.clone()))
        return orig_learn(self, batch)

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


# ------------------------------------------------------------------------------------------ CLI
TOY_CLI = ["run.threads=1", "run.progress=false", "run.tensorboard=false"]


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
