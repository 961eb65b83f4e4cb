"""The vLLM tier (``pytest -m vllm``, README "vLLM tier"): a tiny model generates through vLLM; after a
learner update and a push, vLLM's log-probs of fixed completions match the learner's within 1e-4; the
same for a LoRA agent after an in-place adapter swap; two LoRA agents on one base in one engine each
get their own adapter's outputs (the CPU build's mixed-batch bug guarded); a run trains through the CLI.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from marl.agent import build_agents  # noqa: E402
from marl.config import AgentConfig, SamplingConfig  # noqa: E402
from marl.policies import LoraConfig, PolicyConfig  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402
from tests.cli_helpers import cli_env, deterministic, kill_after_checkpoint, resume, run_train, train_cmd  # noqa: E402

pytestmark = pytest.mark.vllm
TOL = 1e-4
KEEP: list = []
"""Every agent built here stays alive to the end of the module: vLLM engines of one process share its
parallel-state globals, and the first engine to be garbage-collected tears them down for the others."""


def _prompts(agent) -> list[list[int]]:
    return [agent.policy.encode(t) for t in ("12+3=", "max 4 5 6:", "7*8", "hello")]


def _learner_lp(agent, prompts, completions) -> list[torch.Tensor]:
    out = []
    for p, c in zip(prompts, completions):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            out.append(agent.policy.token_logprobs(ids, torch.ones_like(ids))[0, len(p) :])
    return out


def _max_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _batch(agent, prompts, gen, adv=(1.0, -1.0, 0.5, -0.5)):
    from marl.types import SampleBatch

    rows = [p + gen.completion(i) for i, p in enumerate(prompts)]
    n, t = len(rows), max(map(len, rows))
    ids, att = torch.zeros(n, t, dtype=torch.long), torch.zeros(n, t, dtype=torch.long)
    loss, old = torch.zeros(n, t), torch.zeros(n, t)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        ids[i, : len(r)], att[i, : len(r)] = torch.tensor(r), 1
        loss[i, len(p) : len(r)] = 1.0
        old[i, len(p) : len(r)] = gen.logprobs[i, : len(r) - len(p)]
    return SampleBatch(ids, att, loss, old, loss * torch.tensor(adv)[:n, None], torch.arange(n))


def _agent_cfg(**kw) -> AgentConfig:
    base = dict(
        engine="vllm",
        sampling=SamplingConfig(temperature=0.7, max_new_tokens=8),
        policy=PolicyConfig(tiny="100k", seed=0),
    )
    base.update(kw)
    cfg = AgentConfig(**base)
    cfg.optim.lr = 3e-2
    return cfg


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("vllm_full")
    agents = build_agents({"full": _agent_cfg()}, cache_dir=cache, total_steps=4, seed=0)
    KEEP.append(agents)
    return agents["full"]


def test_generate_through_vllm_with_sampling_logprobs(full):
    prompts = _prompts(full)
    g1 = full.act(prompts, generator=torch.Generator().manual_seed(7))
    g2 = full.act(prompts, generator=torch.Generator().manual_seed(7))
    assert torch.equal(g1.tokens, g2.tokens)  # the same generator state gives the same samples
    assert int(g1.lengths.min()) >= 1 and g1.tokens.shape[0] == 4
    # the carried log-probs are those of the sampling distribution (temperature 0.7): the learner's
    learner = []
    for i, p in enumerate(prompts):
        ids = torch.tensor([p + g1.completion(i)])
        with torch.no_grad():
            learner.append(
                full.policy.token_logprobs(ids, torch.ones_like(ids), temperature=0.7)[0, len(p) :]
            )
    engine = [g1.logprobs[i, : int(g1.lengths[i])] for i in range(4)]
    assert _max_gap(learner, engine) < TOL


def test_full_weights_push_after_learner_update(full):
    prompts = _prompts(full)
    gen = full.act(prompts)
    completions = [gen.completion(i) for i in range(4)]
    before = full.engine.engine.score(prompts, completions)
    stats = full.learn(_batch(full, prompts, gen), step=1)  # update, then push into the engine
    assert stats["logprob_gap"] < TOL and stats["time/push_s"] > 0
    after = full.engine.engine.score(prompts, completions)
    learner = _learner_lp(full, prompts, completions)
    assert _max_gap(before, after) > 1e-2  # the update moved the engine's log-probs ...
    assert _max_gap(learner, after) < TOL  # ... onto the learner's


def test_lora_agent_after_inplace_adapter_swap(tmp_path):
    lora = LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    agent = build_agents(
        {"lo": _agent_cfg(policy=PolicyConfig(tiny="100k", seed=0, lora=lora))},
        cache_dir=tmp_path,
        total_steps=4,
        seed=0,
    )["lo"]
    KEEP.append(agent)
    prompts = _prompts(agent)
    for step in (1, 2):
        gen = agent.act(prompts)
        completions = [gen.completion(i) for i in range(4)]
        before = agent.engine.engine.score(prompts, completions, adapter="lo")
        agent.learn(_batch(agent, prompts, gen), step=step)
        after = agent.engine.engine.score(prompts, completions, adapter="lo")
        assert _max_gap(before, after) > 1e-3, f"step {step}: the adapter swap did not reach the engine"
        assert _max_gap(_learner_lp(agent, prompts, completions), after) < TOL


def test_two_lora_agents_one_engine_each_own_adapter(tmp_path):
    lora = LoraConfig(enabled=True, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    cfgs = {
        n: _agent_cfg(policy=PolicyConfig(tiny="100k", seed=s, lora=lora), share_base=True)
        for n, s in (("a", 0), ("b", 1))
    }
    cfgs["b"].policy.seed = 0  # same base model; the adapters differ below
    agents = build_agents(cfgs, cache_dir=tmp_path, total_steps=4, seed=0)
    KEEP.append(agents)
    a, b = agents["a"], agents["b"]
    engine = a.engine.engine
    assert b.engine.engine is engine and a.model is b.model  # one engine, one learner base
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # give the two adapters very different weights
        for n, p in a.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if ".a." in n else -0.5))
    a.engine.push(), b.engine.push()
    prompts = _prompts(a)
    completions = [[5, 6, 7, 8], [9, 10, 11], [12, 13], [14, 15, 16, 17]]
    la, lb = _learner_lp(a, prompts, completions), _learner_lp(b, prompts, completions)
    assert _max_gap(la, lb) > 0.1
    ea = engine.score(prompts, completions, adapter="a")
    eb = engine.score(prompts, completions, adapter="b")
    assert _max_gap(la, ea) < TOL and _max_gap(lb, eb) < TOL
    # interleaved calls never leak one agent's adapter into another's batch
    s1 = a.act(prompts, generator=torch.Generator().manual_seed(3))
    b.act(prompts, generator=torch.Generator().manual_seed(3))
    s2 = a.act(prompts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1.tokens, s2.tokens)
    # the CPU build's bug: a request without LoRA batched with LoRA requests got the last adapter;
    # such a request is refused on an engine that serves adapters
    with pytest.raises(ValueError, match="without an adapter"):
        engine.score(prompts, completions, adapter=None)


def test_single_turn_trains_with_vllm_engine_through_the_cli(tmp_path):
    yaml = tmp_path / "v.yaml"
    yaml.write_text("""
recipe: single_turn
agents:
  v:
    engine: vllm
    policy: {tiny: 100k, seed: 1}
    sampling: {max_new_tokens: 4}
    vllm: {tis_cap: 2.0}
task: {constrain: false}
""")
    overrides = ["run.steps=2", "run.progress=false", "run.tensorboard=false", "run.threads=1"]
    overrides += ["prompts_per_step=4", "group_size=4", "eval_prompts=8", "run.eval_every=1"]
    run_train(train_cmd(yaml, tmp_path, "r", overrides, cache_dir=tmp_path / "cache"), cli_env())
    rows = read_metrics(tmp_path / "r")
    last = rows[-1]
    assert last["step"] == 2 and last["agent/v/logprob_gap"] < TOL and last["time/agent/v/push_s"] > 0
    assert 0 < last["agent/v/tis_weight"] <= 2.0
    assert (tmp_path / "r" / "export" / "v" / "config.json").is_file()


def test_vllm_run_killed_mid_run_resumes_with_the_same_metrics(tmp_path):
    # the resumed process starts a new engine from the base weights; Agent.load pushes the checkpoint's
    yaml = tmp_path / "v.yaml"
    yaml.write_text("""
recipe: single_turn
run: {steps: 3, checkpoint_every: 1, eval_every: 1, threads: 1, progress: false, tensorboard: false}
agents:
  v:
    engine: vllm
    policy: {tiny: 100k, seed: 1}
    optim: {lr: 1.0e-2}
    sampling: {max_new_tokens: 4}
task: {constrain: false}
prompts_per_step: 4
group_size: 4
eval_prompts: 8
""")
    cache = tmp_path / "cache"
    run_train(train_cmd(yaml, tmp_path, "full", cache_dir=cache), cli_env())
    cmd = train_cmd(yaml, tmp_path, "killed", cache_dir=cache)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    killed_at = kill_after_checkpoint(cmd, latest, {"step_0000001", "step_0000002"}, 600, cli_env())
    assert killed_at in ("step_0000001", "step_0000002")
    resume(tmp_path / "killed", cli_env())
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "killed")
    assert deterministic(resumed) == deterministic(full) and len(full) == 4


def test_gpu_check_dry_run_on_cpu():
    import subprocess
    import sys

    from tests.cli_helpers import ROOT

    res = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--no-ray", "--repeats", "1"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "DRY RUN on CPU" in res.stdout and "| weight push after an update |" in res.stdout
