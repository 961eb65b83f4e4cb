"""MARS² recipe: the search tree -> credit path, routing to each agent's optimizer, buffers,
determinism and resume."""

from functools import partial

import numpy as np
import pytest
import torch

from marl.agent import Agent
from marl.config import AgentConfig, SamplingConfig
from marl.credit import CreditAssigner, CreditConfig, Mars2Settings
from marl.policies import PolicyConfig
from marl.rundir import read_metrics
from marl.samples import SampleBuffer, tree_to_batches
from marl.tree import TurnTree
from marl.types import SampleBatch, Turn
from search.engine import SearchConfig, add_program_nodes, grow_trees
from search.metrics import program_nodes, tree_metrics
from search.sandbox import Sandbox, SandboxConfig
from search.synthetic import synthetic_suite
from tests.cli_helpers import (
    ROOT,
    cli_env,
    deterministic,
    kill_after_checkpoint,
    resume,
    run_train,
    train_cmd,
)


def _turn(n_tok: int = 2) -> Turn:
    return Turn(
        np.arange(3, dtype=np.int32), np.arange(n_tok, dtype=np.int32) + 5, np.full(n_tok, -0.5, np.float32)
    )


def test_golden_shaping_and_path_advantages_through_the_search_tree():
    tree = TurnTree(["a", "b"])
    r0, r4 = tree.add_nodes([-1]), None
    add_program_nodes(tree, [0, 0], ["a", "b"], [_turn(), _turn()], [1.0, 0.0])  # nodes 1, 2: fresh
    add_program_nodes(tree, [2], ["b"], [_turn()], [0.5])  # node 3: b refines node 2
    r4 = tree.add_nodes([-1])  # a second problem
    add_program_nodes(tree, [4, 4], ["a", "a"], [_turn(), _turn()], [0.0, 0.0])  # nodes 5, 6
    assert r0.tolist() == [0] and r4.tolist() == [4]
    res = CreditAssigner(CreditConfig(rule="mars2_tree", mars2=Mars2Settings(lam=0.5, shaping_gamma=0.5)))(
        tree
    )
    assert res.nodes.tolist() == [1, 2, 3, 5, 6]
    # shaping (lam = gamma = 0.5), baselines from unshaped rewards:
    #   node 1: parent is the root, sibling {2}: b = 0.0 -> 1 + 0.5 (1 - 0) = 1.5
    #   node 2: parent is the root, sibling {1}: b = 1.0 -> 0 + 0.5 (0 - 1) = -0.5
    #   node 3: parent 2 (not a root), no sibling: b = r_2 = 0 -> 0.5 + 0.5 (0.5 - 0) = 0.75
    # path-level group = tree 0: mean 1.75/3 = 0.583333, unbiased std 1.010363
    #   A = (1.5 - 0.5833)/1.0104 = 0.907264, (-0.5 - 0.5833)/1.0104 = -1.072221, 0.164957
    # tree 4: both rewards 0, both baselines 0 -> shaped 0, std 0 -> A = 0
    np.testing.assert_allclose(res.advantages, [0.907264, -1.072221, 0.164957, 0.0, 0.0], atol=1e-5)
    batches = tree_to_batches(tree, res.nodes, res.advantages, res.train_mask)
    assert batches["a"].node_ids.tolist() == [1, 5, 6] and batches["b"].node_ids.tolist() == [2, 3]
    np.testing.assert_allclose(batches["b"].advantages[0, 3:5].numpy(), [-1.072221] * 2, atol=1e-5)


def _batch(node_ids, lengths):
    n, t = len(lengths), max(lengths)
    b = SampleBatch(
        input_ids=torch.zeros((n, t), dtype=torch.long),
        attention_mask=torch.zeros((n, t), dtype=torch.long),
        loss_mask=torch.zeros((n, t)),
        old_logprobs=torch.zeros((n, t)),
        advantages=torch.zeros((n, t)),
        node_ids=torch.tensor(node_ids),
    )
    for i, m in enumerate(lengths):
        b.input_ids[i, :m] = torch.arange(m) + 10 * i + 1
        b.attention_mask[i, :m] = 1
        b.loss_mask[i, 1:m] = 1
        b.advantages[i, 1:m] = float(node_ids[i])
    return b


def test_sample_buffer_fifo_padding_and_state():
    buf = SampleBuffer(capacity=4)
    buf.add(_batch([7, 8], [3, 2]))
    buf.add(_batch([9, 10, 11], [4, 1, 2]))
    assert len(buf) == 4 and buf.dropped == 1  # node 7, the oldest, was dropped
    clone = SampleBuffer(1)
    clone.load_state_dict(buf.state_dict())
    out = buf.pop(2, pad_id=0)
    assert out.node_ids.tolist() == [8, 9]
    assert out.attention_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out.input_ids[0].tolist() == [11, 12, 0, 0]  # row 1 of the first batch, re-padded
    assert out.advantages[1].tolist() == [0, 9, 9, 9]
    assert len(buf) == 2 and clone.pop(4).node_ids.tolist() == [8, 9, 10, 11]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("mars2")
    mk = lambda name, seed, **kw: Agent(  # noqa: E731
        name,
        AgentConfig(
            policy=PolicyConfig(tiny="100k", seed=seed, **kw), sampling=SamplingConfig(max_new_tokens=12)
        ),
        cache_dir=d,
        total_steps=2,
        seed=seed,
    )
    agents = {"small": mk("small", 1), "wide": mk("wide", 2, hidden_size=128, num_heads=4)}
    tasks = synthetic_suite(0, n_train=6, n_heldout=2)[0]
    with Sandbox(SandboxConfig(workers=2)) as sb:
        yield agents, tasks, sb


def _grow(agents, tasks, sb, seed, **kw):
    tree = TurnTree(list(agents))
    search = SearchConfig(nodes_per_tree=6, expansions_per_round=3, **kw)
    roots, info = grow_trees(tree, tasks[:3], agents, sb, search, np.random.default_rng(seed))
    return tree, roots, info


def test_grow_trees_budget_payloads_and_metrics(setup):
    agents, tasks, sb = setup
    tree, roots, info = _grow(agents, tasks, sb, 0)
    nodes = program_nodes(tree, roots)
    assert len(roots) == 3 and nodes.size == 18  # 6 programs per tree
    assert np.bincount(tree.root_of()[nodes]).tolist()[0] == 6
    for i in nodes.tolist():
        d = tree.payloads[i].data
        assert d["action"] == ("refine" if tree.parent[i] != tree.root_of()[i] else "generate")
        assert 0.0 <= tree.reward[i] <= 1.0 and tree.reward[i] == d["passed"] / d["total"]
        assert d["program"].startswith(tasks[[int(r) for r in roots].index(int(tree.root_of()[i]))].prompt)
    m = tree_metrics(tree, roots, None, "search")
    assert 0.0 <= m["search/pass@1"] <= m["search/pass@N"] <= 1.0
    assert info["search/nodes"] == 18.0


def test_grow_trees_is_deterministic_given_the_seeds(setup):
    agents, tasks, sb = setup
    states = {n: a.generator.get_state() for n, a in agents.items()}
    t1, _, _ = _grow(agents, tasks, sb, 4)
    for n, a in agents.items():
        a.generator.set_state(states[n])
    t2, _, _ = _grow(agents, tasks, sb, 4)
    assert t1.parent.tolist() == t2.parent.tolist() and t1.agent.tolist() == t2.agent.tolist()
    assert [p.text for p in t1.payloads if p] == [p.text for p in t2.payloads if p]


def test_independent_baseline_only_writes_fresh_programs(setup):
    agents, tasks, sb = setup
    tree, roots, info = _grow(agents, tasks, sb, 1, selection="independent")
    assert (tree.depth[program_nodes(tree, roots)] == 1).all() and info["search/refine_frac"] == 0.0


def test_each_agent_optimizer_receives_exactly_its_nodes(setup):
    agents, tasks, sb = setup
    tree, roots, _ = _grow(agents, tasks, sb, 2, max_depth=2)
    rng = np.random.default_rng(0)
    tree.set_reward(program_nodes(tree, roots), rng.random(18))  # make every advantage non-zero
    res = CreditAssigner(CreditConfig(rule="mars2_tree"))(tree)
    batches = tree_to_batches(tree, res.nodes, res.advantages, res.train_mask)
    buffers = {n: SampleBuffer(64) for n in agents}
    for n, b in batches.items():
        buffers[n].add(b)
    seen: dict[str, list[int]] = {}
    steps: dict[str, int] = {}
    assert agents["small"].optimizer is not agents["wide"].optimizer
    for name, agent in agents.items():
        own = {id(p) for p in agent.model.parameters()}
        assert all(id(p) in own for g in agent.optimizer.param_groups for p in g["params"])
        orig = agent.optimizer.step
        steps[name] = 0

        def counting_step(*a, _orig=orig, _name=name, **k):
            steps[_name] += 1
            return _orig(*a, **k)

        agent.optimizer.step = counting_step
        batch = buffers[name].pop(len(buffers[name]))
        seen[name] = batch.node_ids.tolist()
        before = [p.detach().clone() for p in agent.model.parameters()]
        agent.learn(batch)
        agent.optimizer.step = orig
        assert any(not torch.equal(b, p) for b, p in zip(before, agent.model.parameters()))
    for name in agents:
        mine = program_nodes(tree, roots)[tree.agent[program_nodes(tree, roots)] == tree.agent_index(name)]
        assert sorted(seen[name]) == mine.tolist(), name
        assert steps[name] == 1
    assert sorted(seen["small"] + seen["wide"]) == program_nodes(tree, roots).tolist()


# ----------------------------------------------------------------------------- CLI: determinism and resume
TOY_YAML = """
recipe: mars2
agents:
  small:
    policy: {tiny: 100k, seed: 1}
    sampling: {max_new_tokens: 16}
  wide:
    policy: {tiny: 100k, seed: 2, hidden_size: 128, num_heads: 4}
    sampling: {max_new_tokens: 16}
tasks: {n_train: 8, n_heldout: 4}
search: {nodes_per_tree: 3, expansions_per_round: 2}
warmstart: {steps: 4, batch_size: 8, refine_fraction: 0.0}
"""
TOY = [
    "run.steps=4",
    "run.checkpoint_every=1",
    "run.eval_every=2",
    "run.threads=1",
    "run.progress=false",
    "run.plots=false",
    "run.tensorboard=false",
    "problems_per_step=2",
    "train_batch=4",
    "eval_nodes_per_tree=2",
]


# timings, throughputs and cache hits vary run to run
_det = partial(deterministic, drop_suffixes=("_s", "/cached"), drop_substrings=("seconds", "per_s"))


@pytest.mark.slow
def test_same_seed_same_metrics_and_sigkill_resume(tmp_path):
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(TOY_YAML)
    env = cli_env()
    run_train(train_cmd(cfg, tmp_path, "a", TOY), env)
    run_train(train_cmd(cfg, tmp_path, "b", TOY), env)
    a = read_metrics(tmp_path / "a")
    assert [r["step"] for r in a] == [0, 1, 2, 3, 4]
    assert _det(a) == _det(read_metrics(tmp_path / "b"))
    assert list((tmp_path / "a" / "trees").glob("*.png")) and list((tmp_path / "a" / "trees").glob("*.json"))
    latest = tmp_path / "k" / "checkpoints" / "latest"
    killed_at = kill_after_checkpoint(
        train_cmd(cfg, tmp_path, "k", TOY), latest, ("step_0000001", "step_0000002"), 600, env
    )
    assert killed_at != "step_0000004"
    resume(tmp_path / "k", env)
    assert _det(read_metrics(tmp_path / "k")) == _det(a)


def test_forest_action_choice_grows_full_trees(setup):
    agents, tasks, sb = setup
    tree, roots, info = _grow(agents, tasks, sb, 0, action_choice="forest")
    nodes = program_nodes(tree, roots)
    assert len(nodes) == 3 * 6 and set(tree.root_of()[nodes].tolist()) == set(roots.tolist())
    assert {tree.payloads[i].data["action"] for i in nodes} <= {"generate", "refine"}
    with pytest.raises(ValueError, match="action_choice"):
        SearchConfig(action_choice="global").validate()


def test_override_empties_a_mapping():
    from marl.config import ConfigError, load_config
    from search.mars2 import Mars2Config

    path = ROOT / "configs" / "search" / "mars2_synthetic.yaml"
    assert load_config(Mars2Config, [path]).warmstart.steps_per_agent == {"small": 900, "large": 700}
    cfg = load_config(Mars2Config, [path], ["warmstart.steps_per_agent={}", "warmstart.steps=7"])
    assert cfg.warmstart.steps_per_agent == {} and cfg.warmstart.steps_for("small") == 7
    with pytest.raises(ConfigError, match="nope"):
        load_config(Mars2Config, [path], ["warmstart.nope={}"])
