"""LLM agents in the topology recipe: every call is a tree node under its graph node under the query
root, gets credit from its graph's score, and reaches only its own agent's optimizer; the policy and
the agents learn in the same step; a Hugging Face model from a local directory drops into the config."""

import numpy as np
import pytest

import topologies.recipe as recipe
from marl import cli
from marl.config import ConfigError, load_config
from marl.rundir import read_metrics
from tests.cli_helpers import ROOT, save_tiny_hf_model
from topologies.recipe import TopologyConfig

CONFIG = ROOT / "configs" / "topologies" / "joint_relay.yaml"
TOY = [
    "run.steps=2",
    "run.eval_every=2",
    "run.checkpoint_every=0",
    "queries_per_step=3",
    "graphs_per_query=4",
    "task.train_queries=32",
    "task.heldout_queries=8",
    "run.progress=false",
    "run.plots=false",
    "run.tensorboard=false",
    "run.threads=1",
    # two agents of different sizes (99k and 358k parameters)
    "agents.small.policy.tiny=100k",
    "agents.large.policy.tiny=300k",
    "warm_start.steps=2",
    "warm_start.examples=8",
]


def test_each_agent_learns_from_its_own_calls_only(tmp_path, monkeypatch):
    trees, learned = [], []
    run_graphs, learn_agents = recipe.run_graphs, recipe.learn_agents

    def spy_run(tree, *args, **kw):
        ex = run_graphs(tree, *args, **kw)
        if len(args[2]) == 3:  # the queries of a training step (3), not of an evaluation (8)
            trees.append((tree, ex))
        return ex

    def spy_learn(agents, batches, credit, *, step):
        learned.append(({n: a for n, a in agents.items()}, dict(batches)))
        return learn_agents(agents, batches, credit, step=step)

    monkeypatch.setattr(recipe, "run_graphs", spy_run)
    monkeypatch.setattr(recipe, "learn_agents", spy_learn)
    out = tmp_path / "cache"
    assert (
        cli.main(
            ["train", str(CONFIG), *TOY, f"run.out_dir={tmp_path}", "run.name=r", f"run.cache_dir={out}"]
        )
        == 0
    )
    assert len(trees) == len(learned) == 2
    for (tree, ex), (agents, batches) in zip(trees, learned):
        graphs = ex.graph_nodes.reshape(-1)
        assert (tree.parent[tree.parent[graphs]] == -1).all()  # query root -> graph node
        calls = np.flatnonzero(np.isin(tree.parent, graphs))
        assert len(calls) == len(tree) - len(graphs) - 3  # every other node is a call under a graph node
        assert np.array_equal(tree.reward[calls], tree.reward[tree.parent[calls]])  # its graph's score
        sizes = {n: a.num_params for n, a in agents.items()}
        assert sizes["small"] < sizes["large"]
        for name, agent in agents.items():
            own = calls[tree.agent[calls] == tree.agent_index(name)]
            batch = batches[name]
            assert sorted(batch.node_ids.tolist()) == own.tolist()  # all of its calls, nobody else's
            for row, node in enumerate(batch.node_ids.tolist()):
                p = tree.payloads[node]
                ids = np.concatenate([p.prompt_ids, p.completion_ids])
                assert batch.input_ids[row, : len(ids)].tolist() == ids.tolist()
            # the optimizer holds this agent's parameters and no other agent's
            mine = {id(p) for p in agent.model.parameters()}
            held = {id(p) for g in agent.optimizer.param_groups for p in g["params"]}
            assert held <= mine
            assert not held & {id(p) for n, a in agents.items() if n != name for p in a.model.parameters()}
            # GRPO over this agent's calls on one query: a call above its group's mean score gains
            adv = batch.advantages.sum(1) / batch.loss_mask.sum(1)
            root = tree.parent[tree.parent[batch.node_ids.numpy()]]
            reward = tree.reward[batch.node_ids.numpy()]
            for r in np.unique(root):
                m = root == r
                dev = reward[m] - reward[m].mean()
                assert np.all(np.sign(adv.numpy()[m]).round() == np.sign(dev).round())
    rows = read_metrics(tmp_path / "r")
    assert {"agent/small/loss", "agent/large/loss", "agent/topology/loss"} <= set(rows[-1])
    assert {"eval/accuracy", "eval/accuracy_no_edges"} <= set(rows[-1])


def test_a_local_hugging_face_model_drops_into_the_config(tmp_path):
    model_dir = save_tiny_hf_model(tmp_path / "hf", arch="qwen2", positions=128, tie=False)
    args = [*TOY, f"agents.large.policy.path={model_dir}"]  # path overrides tiny
    assert cli.main(["train", str(CONFIG), *args, f"run.out_dir={tmp_path}", "run.name=hf",
                     "run.checkpoint_every=1"]) == 0  # fmt: skip
    rows = read_metrics(tmp_path / "hf")
    assert rows[-1]["step"] == 2 and np.isfinite(rows[-1]["agent/large/loss"])
    assert rows[-1]["agent/large/samples"] > 0
    assert cli.main(["eval", str(tmp_path / "hf")]) == 0


@pytest.mark.parametrize(
    "override, match",
    [
        ("task.kind=testbed", "testbed brings its own"),
        ("task.relay_digits=[3]", "one entry per agent"),
        ("agent_credit.rule=graph_grpo", "reads graph decisions"),
    ],
)
def test_inconsistent_team_settings_stop_before_any_work(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TopologyConfig, [CONFIG], [override])
