"""Supervised warm start: the loss, the pairs, training and the cache."""

import numpy as np
import pytest
import torch

from marl.agent import Agent
from marl.config import AgentConfig
from marl.policies import PolicyConfig
from search.synthetic import synthetic_suite
from search.warmstart import (
    WarmStartConfig,
    encode_pairs,
    reference_completion,
    warm_start_agent,
    warmstart_key,
    warmstart_tasks,
    warmstart_texts,
)
from tests.cli_helpers import ROOT


def test_reference_completion():
    assert reference_completion("def f(x):\n", "def f(x):\n    return x\n", "compact") == "    return x\n"
    assert reference_completion("def f(x):\n", "def f(x):\n    return x\n", "chat").startswith(
        "```python\ndef f"
    )
    with pytest.raises(ValueError, match="prefix"):
        reference_completion("def g():\n", "def f(x):\n", "compact")


@pytest.fixture(scope="module")
def tasks():
    return synthetic_suite(0, n_train=6, n_heldout=2)[0]


def _agent(tmp_path, seed=1):
    cfg = AgentConfig(policy=PolicyConfig(tiny="100k", seed=seed))
    return Agent("a", cfg, cache_dir=tmp_path / "models", total_steps=1, seed=0)


def test_warm_start_trains_then_caches(tmp_path, tasks):
    torch.set_num_threads(1)
    agent = _agent(tmp_path)
    calls = []

    def make_pairs():
        calls.append(1)
        texts = warmstart_texts(tasks, None, np.random.default_rng(0), style="compact", refine_fraction=0.0)
        assert len(texts) == len(tasks)  # one fresh pair per task, no sandbox -> no refinement pairs
        return encode_pairs(texts, agent.policy)

    cfg = WarmStartConfig(steps=25, batch_size=6, lr=1e-2)
    stats = warm_start_agent(agent, make_pairs, cfg, cache_dir=tmp_path, key="k", seed=0)
    assert calls == [1] and stats["cached"] == 0.0
    assert stats["loss_last"] < 0.7 * stats["loss_first"]
    again = _agent(tmp_path)
    stats2 = warm_start_agent(again, make_pairs, cfg, cache_dir=tmp_path, key="k", seed=0)
    assert calls == [1] and stats2["cached"] == 1.0  # loaded, not retrained
    for (n, p), q in zip(agent.model.named_parameters(), again.model.parameters()):
        assert torch.equal(p, q), n


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        WarmStartConfig(optimizer="sgd").validate()
    with pytest.raises(ValueError, match="steps"):
        WarmStartConfig(steps_per_agent={"a": -1}).validate()


def test_steps_per_agent_overrides_steps():
    cfg = WarmStartConfig(steps=300, steps_per_agent={"small": 1000})
    assert cfg.steps_for("small") == 1000 and cfg.steps_for("large") == 300


def test_refinement_parents_are_near_misses_from_the_same_template():
    from search.sandbox import Sandbox, SandboxConfig

    train, _ = synthetic_suite(0, n_train=60, n_heldout=4, max_k=30)
    body_of = {t.reference[len(t.prompt) :].strip(): t for t in train}
    template = {t.task_id: t.meta["template"] for t in train}
    count = {}
    for t in train:
        count[t.meta["template"]] = count.get(t.meta["template"], 0) + 1
    with Sandbox(SandboxConfig(workers=1)) as sb:
        pairs = warmstart_texts(train, sb, np.random.default_rng(0), style="compact", refine_fraction=0.5)
    refined = [(p, c) for p, c in pairs if "# attempt:" in p]
    assert len(refined) > 20
    checked = 0
    for prompt, completion in refined:
        task = next(t for t in train if prompt.startswith(t.prompt))
        assert completion == reference_completion(task.prompt, task.reference, "compact")
        attempt = prompt.split("# attempt: ", 1)[1].split("\n", 1)[0].strip()
        parent = body_of[attempt]
        assert parent is not task and "# failed:" in prompt
        if count[task.meta["template"]] > 1:
            assert template[parent.task_id] == task.meta["template"]
            checked += 1
    assert checked > 10


def test_warmstart_tasks_subset_is_seeded():
    tasks = synthetic_suite(0, n_train=40, n_heldout=4)[0]
    assert warmstart_tasks(tasks, WarmStartConfig(task_fraction=1.0), 0) == tasks
    half = WarmStartConfig(task_fraction=0.5)
    a, b = warmstart_tasks(tasks, half, 0), warmstart_tasks(tasks, half, 0)
    assert len(a) == 20 and [t.task_id for t in a] == [t.task_id for t in b]
    assert len({t.task_id for t in a}) == 20 and all(t in tasks for t in a)
    assert [tasks.index(t) for t in a] == sorted(tasks.index(t) for t in a)  # training order
    assert {t.task_id for t in warmstart_tasks(tasks, half, 1)} != {t.task_id for t in a}
    with pytest.raises(ValueError, match="task_fraction"):
        WarmStartConfig(task_fraction=0.0).validate()


def test_warmstart_cache_key_follows_public_tests():
    import copy

    from marl.config import load_config
    from search.mars2 import Mars2Config

    cfg = load_config(Mars2Config, [ROOT / "configs" / "search" / "mars2_synthetic.yaml"])
    tasks = synthetic_suite(0, n_train=6, n_heldout=2)[0]

    def key_of(tasks):
        return warmstart_key(cfg.agents["small"], cfg.warmstart, cfg.search, "compact", cfg.run.seed, tasks)

    key = key_of(tasks)
    assert key_of(copy.deepcopy(tasks)) == key  # stable
    private = copy.deepcopy(tasks)
    private[0].private_tests[0].expected = "changed"
    assert key_of(private) == key  # private tests never reach the warm start
    public = copy.deepcopy(tasks)
    public[0].public_tests[0].args = [12345]
    assert key_of(public) != key  # refinement pairs quote the public failures
    cfg.warmstart.lr *= 2
    assert key_of(tasks) != key


def test_warmstart_tasks_up_to_max_param():
    tasks = synthetic_suite(0, n_train=270, n_heldout=16, max_k=30)[0]
    kept = warmstart_tasks(tasks, WarmStartConfig(max_param=12), 0)
    assert kept and all(not isinstance(t.meta["param"], int) or t.meta["param"] <= 12 for t in kept)
    # every task without an integer parameter or with one up to 12 is kept, the others are not
    expected = [t for t in tasks if not isinstance(t.meta["param"], int) or t.meta["param"] <= 12]
    assert [t.task_id for t in kept] == [t.task_id for t in expected] and len(kept) < len(tasks)
    assert any(t.meta["param"] == "a" for t in kept) and any(t.meta["param"] is None for t in kept)
    with pytest.raises(ValueError, match="max_param"):
        WarmStartConfig(max_param=-1).validate()
