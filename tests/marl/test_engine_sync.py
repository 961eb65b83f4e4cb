"""The learner's side of a separate rollout engine (recomputed log-probs, their gap, truncated IS, the
push after each update), LoRA agents on one shared base, and the Ray runtime's plan: all without vLLM
or Ray installed (their tiers are tests/vllm and tests/ray)."""

from __future__ import annotations

import math

import pytest
import torch

from marl.agent import Agent, build_agents, engine_correction
from marl.config import AgentConfig, ConfigError, SamplingConfig, load_config
from marl.distributed import RaySettings, TextPolicy, bundle, init_kwargs, learner_groups, placement_plan
from marl.policies import LoraConfig, PolicyConfig
from marl.policies.shared_base import AdapterPolicy, adapter_parameters, base_key
from marl.recipes.single_turn import SingleTurnConfig
from marl.scenario import prefixed
from marl.types import SampleBatch


def test_engine_correction_by_hand():
    learner = torch.tensor([[0.0, -1.0, -2.0, 0.0]])
    engine = torch.tensor([[0.0, -1.5, -1.0, -7.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    # completion tokens 1, 2: lp_learner - lp_engine = 0.5, -1.0 -> gap = (0.5 + 1.0) / 2 = 0.75
    # w = min(exp(0.5) = 1.6487, 1.5) = 1.5 and min(exp(-1) = 0.3679, 1.5); masked positions keep 1
    w, gap = engine_correction(learner, engine, mask, cap=1.5)
    assert gap == pytest.approx(0.75)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.5, math.exp(-1.0), 1.0]]))
    w0, gap0 = engine_correction(learner, engine, mask, cap=0.0)  # off: every weight is 1
    assert gap0 == pytest.approx(0.75) and torch.equal(w0, torch.ones(1, 4))
    _, none = engine_correction(learner, engine, torch.zeros(1, 4), cap=2.0)
    assert none == 0.0


class PolicyEngine:
    """A stand-in rollout engine sampling with the agent's own policy, counting pushes."""

    def __init__(self, bias: float = 0.0) -> None:
        self.bias = bias
        self.pushes = 0

    def attach(self, agent) -> None:
        self.agent = agent

    def generate(self, prompts, **kw):
        gen = self.agent.policy.generate(prompts, **kw)
        gen.logprobs = gen.logprobs + self.bias * (gen.logprobs != 0)  # an engine that disagrees
        return gen

    def push(self) -> float:
        self.pushes += 1
        return 0.25


def _batch_from(agent: Agent, n: int = 3) -> SampleBatch:
    prompts = [agent.policy.encode("12+"), agent.policy.encode("7"), agent.policy.encode("max 3")][:n]
    gen = agent.act(prompts)
    rows = [p + gen.completion(i) for i, p in enumerate(prompts)]
    t = max(map(len, rows))
    ids = torch.zeros(n, t, dtype=torch.long)
    att, loss, old = torch.zeros(n, t, dtype=torch.long), torch.zeros(n, t), torch.zeros(n, t)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
        loss[i, len(p) : len(r)] = 1.0
        old[i, len(p) : len(r)] = gen.logprobs[i, : len(r) - len(p)]
    adv = loss * torch.tensor([[1.0], [-1.0], [0.5]])[:n]
    return SampleBatch(ids, att, loss, old, adv, torch.arange(n))


def test_separate_engine_recomputes_logprobs_logs_gap_and_pushes(tmp_path):
    cfg = load_config(
        AgentConfig, overrides=["sampling.max_new_tokens=4", "vllm.tis_cap=2.0", "policy.seed=3"]
    )
    engine = PolicyEngine(bias=-0.1)  # the engine's log-probs are 0.1 below the learner's on every token
    agent = Agent("a", cfg, cache_dir=tmp_path, total_steps=2, seed=0, engine=engine)
    stats = agent.learn(_batch_from(agent), step=1)
    assert stats["logprob_gap"] == pytest.approx(0.1, abs=1e-5)
    assert stats["tis_weight"] == pytest.approx(math.exp(0.1), abs=1e-5)  # exp(0.1) < cap 2
    assert stats["time/push_s"] == 0.25 and engine.pushes == 1
    assert prefixed("agent/a", {"time/push_s": 0.25, "loss": 1.0}) == {
        "time/agent/a/push_s": 0.25,
        "agent/a/loss": 1.0,
    }


def test_engine_without_tis_matches_plain_learner_on_its_own_samples(tmp_path):
    # an engine that agrees with the learner: the recomputed old log-probs equal the sampled ones (to
    # float32 rounding), so the loss is the plain one
    cfg = load_config(AgentConfig, overrides=["sampling.max_new_tokens=4", "policy.seed=5"])
    plain = Agent("a", cfg, cache_dir=tmp_path, total_steps=2, seed=0)
    eng = Agent("a", cfg, cache_dir=tmp_path, total_steps=2, seed=0, engine=PolicyEngine())
    b1, b2 = _batch_from(plain), _batch_from(eng)
    assert torch.equal(b1.input_ids, b2.input_ids)
    s1, s2 = plain.learn(b1, step=1), eng.learn(b2, step=1)
    assert s1["loss"] == pytest.approx(s2["loss"], abs=1e-6) and s2["logprob_gap"] < 1e-6
    assert s1["pg_loss"] == pytest.approx(s2["pg_loss"], abs=1e-6) and "tis_weight" not in s2


def _lora_cfg(seed: int, engine: str = "native") -> AgentConfig:
    lora = LoraConfig(enabled=True, r=2, alpha=4, target_modules=["q_proj", "v_proj"])
    return AgentConfig(
        policy=PolicyConfig(tiny="100k", seed=0, lora=lora),
        share_base=True,
        engine=engine,
        sampling=SamplingConfig(max_new_tokens=4),
    )


def test_lora_agents_share_one_base_each_with_its_own_adapter_and_optimizer(tmp_path):
    cfgs = {"a": _lora_cfg(0), "b": _lora_cfg(0), "c": AgentConfig(policy=PolicyConfig(tiny="100k", seed=0))}
    cfgs["b"].policy.lora.r = 4  # LoRA settings may differ on one base
    agents = build_agents(cfgs, cache_dir=tmp_path, total_steps=2, seed=0)
    a, b, c = agents["a"], agents["b"], agents["c"]
    assert isinstance(a.policy, AdapterPolicy) and a.model is b.model  # one base copy
    assert c.model is not a.model
    own_a, own_b = adapter_parameters(a.model, "a"), adapter_parameters(a.model, "b")
    assert set(own_a).isdisjoint(own_b) and a.num_trainable == sum(p.numel() for p in own_a.values())
    opt_a = {id(p) for g in a.optimizer.param_groups for p in g["params"]}
    assert opt_a == {id(p) for p in own_a.values()}
    base = {n: p.clone() for n, p in a.model.named_parameters() if "lora_" not in n}
    before_b = {n: p.clone() for n, p in own_b.items()}
    a.learn(_batch_from(a), step=1)
    b_untouched = all(torch.equal(p, before_b[n]) for n, p in own_b.items())
    a_moved = any(not torch.equal(p, torch.zeros_like(p)) for n, p in own_a.items() if "lora_B" in n)
    assert b_untouched and a_moved
    assert all(torch.equal(p, base[n]) for n, p in a.model.named_parameters() if "lora_" not in n)
    # checkpoints hold one adapter each; loading restores it without touching the other
    a.save(tmp_path / "ck_a")
    trained_a = {n: p.clone() for n, p in own_a.items()}
    with torch.no_grad():
        for p in own_a.values():
            p.zero_()
    a.load(tmp_path / "ck_a")
    assert all(torch.equal(p, trained_a[n]) for n, p in own_a.items())
    with pytest.raises(RuntimeError, match="agent b: checkpoint mismatch"):
        b.load(tmp_path / "ck_a")
    # the export of a is the base merged with a's adapter only
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(a.export(tmp_path / "export_a"))
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        a.policy.activate()
        want = a.model(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_share_base_needs_lora_and_bad_engine_is_named():
    with pytest.raises(ConfigError, match="share_base .* needs policy.lora.enabled"):
        load_config(AgentConfig, overrides=["share_base=true"])
    with pytest.raises(ConfigError, match="engine 'vlm' is not one of native, hf, vllm"):
        load_config(AgentConfig, overrides=["engine=vlm"])
    with pytest.raises(ConfigError, match="runtime 'slurm' is not one of local, ray"):
        load_config(SingleTurnConfig, overrides=["agents.a.engine=hf", "run.runtime=slurm"])
    with pytest.raises(ConfigError, match="ray.strategy 'TIGHT'"):
        load_config(SingleTurnConfig, overrides=["agents.a.engine=hf", "run.ray.strategy=TIGHT"])


def test_ray_plan_groups_shared_bases_and_sizes_bundles():
    cfgs = {
        "a": _lora_cfg(0, engine="vllm"),
        "x": AgentConfig(),
        "b": _lora_cfg(1, engine="vllm"),
        "other": AgentConfig(policy=PolicyConfig(tiny="300k"), engine="vllm"),
    }
    assert learner_groups(cfgs) == [["a", "b"], ["x"], ["other"]]
    assert base_key(cfgs["a"].policy) == base_key(cfgs["b"].policy) != base_key(cfgs["other"].policy)
    settings = RaySettings(cpus_per_agent=0.5, gpus_per_agent=0.25, strategy="STRICT_SPREAD")
    plan = placement_plan(cfgs, settings)
    # a group of 2 agents with an engine: learner 2 x 0.5 CPU + engine the same again = 2 CPU, 1 GPU
    assert plan.bundles[0] == {"CPU": 2.0, "GPU": 1.0}
    assert plan.bundles[1] == {"CPU": 0.5, "GPU": 0.25} and plan.with_engine == [True, False, True]
    assert plan.strategy == "STRICT_SPREAD"
    assert bundle(RaySettings(), 1, False) == {"CPU": 1.0}
    assert init_kwargs(RaySettings(address="127.0.0.1:6379")) == {
        "address": "127.0.0.1:6379",
        "log_to_driver": False,
    }
    assert init_kwargs(RaySettings(temp_dir="/tmp/x"))["_temp_dir"] == "/tmp/x"


def test_ray_driver_side_policy_has_text_helpers_only(tmp_path):
    from transformers import AutoTokenizer

    from marl.policies.hf import ensure_tiny

    tok = AutoTokenizer.from_pretrained(ensure_tiny(PolicyConfig(tiny="100k"), tmp_path))
    text = TextPolicy(tok, "a")
    assert text.decode(text.encode("12+3")) == "12+3" and text.eos_id == tok.eos_token_id
    with pytest.raises(AttributeError, match="agent a runs in a Ray actor"):
        text.generate([[1]], max_new_tokens=1)
