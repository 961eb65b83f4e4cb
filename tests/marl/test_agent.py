import math

import numpy as np
import pytest
import torch

from marl.agent import Agent, lr_lambda
from marl.config import AgentConfig, NormalizerConfig, OptimConfig, SamplingConfig
from marl.losses import LossConfig
from marl.policies import PolicyConfig
from marl.types import SampleBatch


def _agent(tmp_path, **kw):
    cfg = AgentConfig(policy=PolicyConfig(tiny="100k", seed=kw.pop("seed", 0), num_layers=1), **kw)
    return Agent(kw.get("name", "a"), cfg, cache_dir=tmp_path, total_steps=10, seed=0)


def test_agents_keep_their_own_optimizer_settings(tmp_path):
    a = _agent(tmp_path, optim=OptimConfig(lr=1e-3, betas=[0.9, 0.95], weight_decay=0.1, eps=1e-7))
    b = _agent(tmp_path, seed=1, optim=OptimConfig(lr=5e-4, betas=[0.8, 0.999], weight_decay=0.0))
    ga, gb = a.optimizer.param_groups[0], b.optimizer.param_groups[0]
    assert (ga["lr"], ga["betas"], ga["weight_decay"], ga["eps"]) == (1e-3, (0.9, 0.95), 0.1, 1e-7)
    assert (gb["lr"], gb["betas"], gb["weight_decay"]) == (5e-4, (0.8, 0.999), 0.0)
    pa = {id(p) for g in a.optimizer.param_groups for p in g["params"]}
    pb = {id(p) for g in b.optimizer.param_groups for p in g["params"]}
    assert not pa & pb, "two agents share parameters"
    assert a.optimizer is not b.optimizer and a.generator is not b.generator


def test_lr_schedules_hand_values():
    # warm-up 4 steps: step 0 -> 1/5, step 3 -> 4/5, then 1
    assert lr_lambda(0, warmup_steps=4, total_steps=14, schedule="constant", min_lr_ratio=0) == pytest.approx(
        0.2
    )
    assert lr_lambda(3, warmup_steps=4, total_steps=14, schedule="constant", min_lr_ratio=0) == pytest.approx(
        0.8
    )
    # linear over 10 steps after warm-up, to 0.1: halfway (step 4+5) -> 1 - 0.9*0.5 = 0.55
    assert lr_lambda(9, warmup_steps=4, total_steps=14, schedule="linear", min_lr_ratio=0.1) == pytest.approx(
        0.55
    )
    # cosine halfway -> min + (1-min)*0.5*(1+cos(pi/2)) = 0.1 + 0.9*0.5 = 0.55; end -> 0.1
    assert lr_lambda(9, warmup_steps=4, total_steps=14, schedule="cosine", min_lr_ratio=0.1) == pytest.approx(
        0.55
    )
    assert lr_lambda(
        14, warmup_steps=4, total_steps=14, schedule="cosine", min_lr_ratio=0.1
    ) == pytest.approx(0.1)
    assert math.isclose(
        lr_lambda(4, warmup_steps=4, total_steps=14, schedule="cosine", min_lr_ratio=0.0), 1.0
    )


def _batch(agent, rows=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = [agent.policy.encode(f"max {i} {i + 1}=") for i in range(rows)]
    gen = agent.act(prompts)
    n = rows
    t = max(len(p) for p in prompts) + gen.tokens.shape[1]
    ids = torch.zeros(n, t, dtype=torch.long)
    att = torch.zeros(n, t, dtype=torch.long)
    lm = torch.zeros(n, t)
    old = torch.zeros(n, t)
    adv = torch.zeros(n, t)
    for i, p in enumerate(prompts):
        c = gen.completion(i)
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        att[i, : len(p) + len(c)] = 1
        lm[i, len(p) : len(p) + len(c)] = 1
        old[i, len(p) : len(p) + len(c)] = gen.logprobs[i, : len(c)]
        adv[i, len(p) : len(p) + len(c)] = float(torch.randn(1, generator=g))
    return SampleBatch(ids, att, lm, old, adv, torch.arange(n))


def test_learn_changes_only_own_weights_and_is_finite(tmp_path):
    a = _agent(tmp_path, sampling=SamplingConfig(max_new_tokens=3))
    b = _agent(tmp_path, seed=1, sampling=SamplingConfig(max_new_tokens=3))
    before_a = {k: v.clone() for k, v in a.model.state_dict().items()}
    before_b = {k: v.clone() for k, v in b.model.state_dict().items()}
    m = a.learn(_batch(a))
    assert all(np.isfinite(v) for v in m.values())
    changed = [k for k, v in a.model.state_dict().items() if not torch.equal(v, before_a[k])]
    assert changed, "learning changed no weight"
    assert all(torch.equal(v, before_b[k]) for k, v in b.model.state_dict().items())


def test_micro_batch_budget_does_not_change_the_update(tmp_path):
    # Same batch, same weights: one big micro-batch vs many small ones give the same new weights.
    big = _agent(tmp_path, micro_batch_tokens=1 << 20, loss=LossConfig(aggregation="seq-mean-token-mean"))
    small = _agent(tmp_path, micro_batch_tokens=16, loss=LossConfig(aggregation="seq-mean-token-mean"))
    batch = _batch(big)
    big.learn(batch)
    small.learn(batch)
    for (k, v), (_, w) in zip(big.model.state_dict().items(), small.model.state_dict().items()):
        torch.testing.assert_close(v, w, atol=1e-6, rtol=1e-5, msg=k)


def test_kl_reference_is_frozen_and_batch_normalizer(tmp_path):
    a = _agent(tmp_path, loss=LossConfig(kl_coef=0.1), normalizer=NormalizerConfig(kind="batch"))
    assert a.reference is not None
    ref_before = {k: v.clone() for k, v in a.reference.model.state_dict().items()}
    m = a.learn(_batch(a))
    assert "kl" in m and np.isfinite(m["kl"])
    assert all(torch.equal(v, ref_before[k]) for k, v in a.reference.model.state_dict().items())


def test_save_load_roundtrip(tmp_path):
    a = _agent(tmp_path)
    a.learn(_batch(a))
    a.save(tmp_path / "ck")
    b = _agent(tmp_path)
    b.load(tmp_path / "ck")
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.optimizer.state_dict()["state"].keys() == b.optimizer.state_dict()["state"].keys()


def test_sum_norm_max_len_reaches_the_loss(tmp_path):
    # Dr. GRPO's seq-mean-token-sum-norm divides the summed token loss by B * T_max, T_max the
    # generation budget when set. REINFORCE, one update, loss = sum_t(-A_t * log pi_t) M_t / (B * T_max):
    # the same batch and weights give loss(T_max = 8) = loss(T_max = 16) * 2, and T_max = 16 equals the
    # hand formula with the policy's own log-probs.
    def agent(max_len):
        loss = LossConfig(
            objective="reinforce", aggregation="seq-mean-token-sum-norm", sum_norm_max_len=max_len
        )
        return _agent(tmp_path, loss=loss, sampling=SamplingConfig(max_new_tokens=3))

    a8, a16 = agent(8), agent(16)
    batch = _batch(a8)
    with torch.no_grad():
        logp = a16.policy.token_logprobs(batch.input_ids, batch.attention_mask)
    by_hand = float((-batch.advantages * logp * batch.loss_mask).sum()) / (len(batch) * 16)
    l8, l16 = a8.learn(batch)["loss"], a16.learn(batch)["loss"]
    assert l16 == pytest.approx(by_hand, rel=1e-5)
    assert l8 == pytest.approx(2 * l16, rel=1e-6)
    longest = int(batch.loss_mask.sum(1).max())  # None: the longest row of the batch (3 tokens here)
    assert agent(None).learn(batch)["loss"] == pytest.approx(16 / longest * l16, rel=1e-5)


def test_learning_rate_follows_the_run_step_whatever_the_number_of_learn_calls(tmp_path):
    # linear decay over total_steps = 10 run steps (one update per learn call): the update of step s uses
    # lr * (1 - 0.9 * (s - 1) / 10); two learn calls in one step use the same rate, a step with none skips
    a = _agent(tmp_path, optim=OptimConfig(lr=1e-3, schedule="linear", min_lr_ratio=0.1))
    batch = _batch(a)

    def lr_of_update(step):
        a.learn(batch, step=step)
        return a.optimizer.param_groups[0]["lr"]

    # after an update at step s the scheduler has advanced to step s's end: lr(s) = 1e-3 * (1 - 0.09 s)
    assert lr_of_update(1) == pytest.approx(1e-3 * (1 - 0.09 * 1))
    assert lr_of_update(3) == pytest.approx(1e-3 * (1 - 0.09 * 3))  # step 2 had no update
    assert lr_of_update(3) == pytest.approx(1e-3 * (1 - 0.09 * 3))  # a second call in step 3


def test_policy_kl_is_zero_before_an_update_and_positive_after(tmp_path):
    a = _agent(tmp_path, sampling=SamplingConfig(max_new_tokens=3), optim=OptimConfig(lr=1e-2))
    batch = _batch(a)
    # the batch was sampled by the current policy (temperature 1, no processor): k3 KL is 0 up to fp
    assert a.policy_kl(batch) == pytest.approx(0.0, abs=1e-6)
    stats = a.learn(batch, measure_kl=True)
    assert stats["policy_kl"] > 0 and stats["policy_kl"] == pytest.approx(a.policy_kl(batch))


def test_reported_loss_is_the_batch_loss_however_it_is_split(tmp_path):
    # the reported loss, pg_loss and entropy are the mini-batch's own values (their micro-batch shares
    # summed), so one big micro-batch and many small ones report the same numbers
    loss = LossConfig(objective="reinforce", aggregation="token-mean", entropy_coef=0.01)
    big = _agent(tmp_path, micro_batch_tokens=1 << 20, loss=loss, sampling=SamplingConfig(max_new_tokens=3))
    small = _agent(tmp_path, micro_batch_tokens=8, loss=loss, sampling=SamplingConfig(max_new_tokens=3))
    batch = _batch(big)
    with torch.no_grad():
        logp = big.policy.token_logprobs(batch.input_ids, batch.attention_mask)
    pg = float((-batch.advantages * logp * batch.loss_mask).sum() / batch.loss_mask.sum())
    got, split = big.learn(batch), small.learn(batch)
    assert got["pg_loss"] == pytest.approx(pg, rel=1e-5)
    assert got["loss"] == pytest.approx(got["pg_loss"] - 0.01 * got["entropy"], rel=1e-5)
    for k in ("loss", "pg_loss", "entropy"):
        assert split[k] == pytest.approx(got[k], rel=1e-5), k


def test_warm_start_makes_the_kl_reference_the_warm_weights_and_a_checkpoint_keeps_it(tmp_path, caplog):
    # The KL term holds the policy near the model RL starts from: after a warm start (trained or
    # loaded from its cache) the reference is the warm-started weights, so the first update's KL is
    # 0, and a checkpoint carries the reference so a resumed run keeps it.
    from marl.warmstart import SupervisedSettings, warm_start_agent

    def pairs(agent):
        return lambda: [
            (agent.policy.encode(f"max {i} {i + 1}="), agent.policy.encode(f"{i + 1}")) for i in range(8)
        ]

    ws = SupervisedSettings(steps=3, batch_size=4, lr=1e-2)
    for trained in (True, False):  # the first call trains and caches, the second loads the cache
        a = _agent(tmp_path, loss=LossConfig(kl_coef=0.1), sampling=SamplingConfig(max_new_tokens=3))
        init = {k: v.clone() for k, v in a.reference.model.state_dict().items()}
        stats = warm_start_agent(a, pairs(a), ws, cache_dir=tmp_path / "cache", key="k", seed=0)
        assert stats["cached"] == (0.0 if trained else 1.0)
        ref = a.reference.model.state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in a.model.state_dict().items())
        assert any(not torch.equal(v, ref[k]) for k, v in init.items()), "the warm start changed nothing"
        assert a.learn(_batch(a))["kl"] == pytest.approx(0.0, abs=1e-7)
    a.save(tmp_path / "ck")
    b = _agent(tmp_path, loss=LossConfig(kl_coef=0.1))
    b.load(tmp_path / "ck")
    rb = b.reference.model.state_dict()
    assert all(torch.equal(v, rb[k]) for k, v in a.reference.model.state_dict().items())
    assert any(not torch.equal(v, rb[k]) for k, v in b.model.state_dict().items())  # weights moved on
    (tmp_path / "ck" / "reference.safetensors").unlink()  # a checkpoint without one: loads, and says so
    c = _agent(tmp_path, loss=LossConfig(kl_coef=0.1))
    with caplog.at_level("WARNING", logger="marl.agent"):
        c.load(tmp_path / "ck")
    assert "no KL reference" in caplog.text


def test_skip_zero_grad_keeps_adamw_from_moving_the_weights_without_signal(tmp_path):
    # After one update with signal, an all-zero-advantage batch has a zero gradient; AdamW still moves
    # the weights by its momentum (m / sqrt(v) != 0), unless optim.skip_zero_grad skips that step.
    moved = {}
    for skip in (False, True):
        a = _agent(
            tmp_path, optim=OptimConfig(skip_zero_grad=skip), sampling=SamplingConfig(max_new_tokens=3)
        )
        a.learn(_batch(a))
        zero = _batch(a)
        zero.advantages = torch.zeros_like(zero.advantages)
        before = {k: v.clone() for k, v in a.model.state_dict().items()}
        m = a.learn(zero)
        assert m["grad_norm"] == 0.0
        assert m.get("zero_grad_steps", 0.0) == (1.0 if skip else 0.0)
        moved[skip] = any(not torch.equal(v, before[k]) for k, v in a.model.state_dict().items())
    assert moved == {False: True, True: False}
