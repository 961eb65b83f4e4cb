"""The topology recipe through the real CLI: a short run learns nothing by accident (finite losses,
the policy's parameters move, metrics namespaced), the same seed gives the same metrics, and a run
killed after a checkpoint resumes to the same metrics."""

import math
from functools import partial

import pytest
import torch

from marl import cli
from marl.config import ConfigError, load_config
from marl.rundir import read_metrics
from tests.cli_helpers import (
    ROOT,
    cli_env,
    deterministic,
    kill_after_checkpoint,
    resume,
    run_train,
    train_cmd,
)
from topologies.recipe import TopologyConfig

CONFIG = ROOT / "configs" / "topologies" / "graph_grpo.yaml"
TOY = [
    "run.steps=4",
    "run.eval_every=2",
    "run.checkpoint_every=1",
    "queries_per_step=4",
    "graphs_per_query=4",
    "task.train_queries=16",
    "task.heldout_queries=8",
    "run.progress=false",
    "run.plots=false",
    "run.tensorboard=false",
]
_det = partial(deterministic, drop_substrings=("per_s",))


def _train(tmp_path, name, extra=()):
    assert cli.main(["train", str(CONFIG), *TOY, *extra, f"run.out_dir={tmp_path}", f"run.name={name}"]) == 0
    return read_metrics(tmp_path / name)


def test_a_short_run_trains_the_policy_and_is_deterministic(tmp_path):
    a = _train(tmp_path, "a")
    assert [r["step"] for r in a] == [0, 1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["agent/topology/loss"])) for r in a[1:])
    assert {"eval/accuracy", "eval/oracle", "eval/tokens_per_query", "eval/calls_per_query"} <= set(a[-1])
    assert any(k.startswith("topology/r0:parse>") and k.endswith("/p") for k in a[-1])
    assert _det(a) == _det(_train(tmp_path, "b"))
    for picture in ("topology_heatmap.png", "topology_graph.png"):
        assert (tmp_path / "a" / picture).stat().st_size > 1000
    # the method table: the run's last evaluation, the oracle and every fixed topology
    table = (tmp_path / "a" / "results.md").read_text().splitlines()
    assert table[2].startswith(f"| oracle (best graph per query) | | {100 * a[-1]['eval/oracle']:.1f} |")
    assert table[3].split(" | ")[1] == f"{100 * a[-1]['eval/accuracy']:.1f}"
    assert sum(line.startswith("| fixed: ") for line in table) == 7
    # the checkpointed policy differs from a fresh one, and evaluate_run reads it
    state = torch.load(
        next((tmp_path / "a" / "checkpoints").glob("step_0000004")) / "state.pt", weights_only=False
    )
    trained = state["extra"]["topology"]["state_dict"]["policy"]
    from topologies.recipe import _build

    fresh = _build(load_config(TopologyConfig, [tmp_path / "a" / "config.yaml"]))[2].policy.state_dict()
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh if fresh[k].is_floating_point())
    assert cli.main(["eval", str(tmp_path / "a")]) == 0


def test_the_schedules_reach_the_learner(tmp_path):
    # 4 steps, update i (1-based) at schedule step i - 1 of 4: linear entropy 0.05 (1 - (i - 1) / 4),
    # cosine lr 0.02 -> 0.01: 0.01 + 0.01 (1 + cos(pi (i - 1) / 4)) / 2
    sched = ["policy.entropy_schedule=linear", "policy.lr_schedule=cosine", "policy.lr_final=0.01"]
    m = _train(tmp_path, "s", sched)
    ent = [r["agent/topology/entropy_coef"] for r in m[1:]]
    lr = [r["agent/topology/lr"] for r in m[1:]]
    assert ent == pytest.approx([0.05, 0.0375, 0.025, 0.0125])
    assert lr == pytest.approx([0.02, 0.01 + 0.005 * (1 + 0.5**0.5), 0.015, 0.01 + 0.005 * (1 - 0.5**0.5)])


def test_an_agents_block_is_refused_on_the_testbed():
    # the testbed brings its own programmatic team; LLM agents need a task they can answer
    with pytest.raises(ConfigError, match="testbed brings its own"):
        load_config(TopologyConfig, [CONFIG], ["agents.x.policy.tiny=100k"])


@pytest.mark.slow
def test_sigkill_and_resume_give_the_same_metrics(tmp_path):
    env = cli_env()
    run_train(train_cmd(CONFIG, tmp_path, "a", TOY), env)
    latest = tmp_path / "k" / "checkpoints" / "latest"
    killed = kill_after_checkpoint(
        train_cmd(CONFIG, tmp_path, "k", TOY), latest, ("step_0000001", "step_0000002"), 600, env
    )
    assert killed != "step_0000004"
    resume(tmp_path / "k", env)
    assert _det(read_metrics(tmp_path / "k")) == _det(read_metrics(tmp_path / "a"))


@pytest.mark.parametrize(
    "override",
    [
        "policy.prune_rate=1.5",  # would prune every edge (or none, silently)
        "policy.prune_rate=-1",
        "credit.topology.token_cost=-1",  # a bonus per token, not a cost
        "credit.topology.token_cost=nan",
        "task.train_queries=0",  # crashed in numpy at the first step
        "task.heldout_queries=0",
        "team.rounds=0",
        "graphs_per_query=0",
        "policy.features=bert",  # not a feature kind
        "policy.entropy_coef=-0.1",  # an entropy penalty
        "policy.explore=0.5",  # q = 0.5 on every edge: nothing learned is used
        "policy.entropy_schedule=step",  # not a schedule
        "policy.lr_schedule=exp",
        "policy.entropy_final=-0.01",
        "policy.lr_final=-1",
        "policy.kl_reference=uniform",  # not a reference
        "policy.order=random",  # not an order
    ],
)
def test_out_of_range_settings_stop_before_any_work(override):
    with pytest.raises(ConfigError):
        load_config(TopologyConfig, [CONFIG], [override])


def test_a_learned_order_needs_the_query_policy():
    with pytest.raises(ConfigError, match="order learned needs policy.kind query"):
        load_config(TopologyConfig, [CONFIG], ["policy.order=learned", "policy.kind=free"])


def test_the_evaluation_of_a_learned_order_reports_its_entropy():
    # a uniform start: log 4! = ln 24 on every held-out query; a saturated order: near 0
    from topologies.recipe import _build, evaluate

    cfg = load_config(TopologyConfig, [CONFIG], ["policy.order=learned", "task.heldout_queries=8"])
    task, space, learner = _build(cfg)
    assert evaluate(learner, task, space, cfg, 0)["topology/order_entropy"] == pytest.approx(math.log(24))
    with torch.no_grad():
        learner.policy.order_bias[:] = torch.tensor([60.0, 40.0, 20.0, 0.0])
    assert evaluate(learner, task, space, cfg, 0)["topology/order_entropy"] == pytest.approx(0.0, abs=1e-6)
    fixed = load_config(TopologyConfig, [CONFIG], ["task.heldout_queries=8"])  # the role order: no key
    task, space, learner = _build(fixed)
    assert "topology/order_entropy" not in evaluate(learner, task, space, fixed, 0)
