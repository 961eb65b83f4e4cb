"""One agent: a policy, its tokenizer, its own optimizer, loss settings, normaliser and
an optional frozen reference for the KL term.

Agents never share an optimizer, a normaliser or a random generator: each is built
from its own ``AgentConfig`` and learns only from the samples routed to it.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from marl.config import AgentConfig, NormalizerConfig, OptimConfig
from marl.credit.normalizers import Normalizer, make_normalizer
from marl.losses import aggregation_norm, clip_grad_norm, micro_batches, total_loss
from marl.policies import Policy, frozen_copy, load_policy
from marl.policies.shared_base import AdapterPolicy, adapter_parameters, base_key, load_shared_policies
from marl.types import Generation, SampleBatch

logger = logging.getLogger(__name__)

ADDITIVE_STATS = ("loss", "pg_loss", "kl", "entropy")
"""Loss statistics that are each micro-batch's share of the mini-batch value (``marl.losses.total_loss``)."""

OWN = object()
"""``Agent.act(generator=OWN)``: sample with the agent's own generator."""


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warm-up from 1/(warmup+1) to 1 over ``warmup_steps``, then constant, linear or
    cosine decay to ``min_lr_ratio`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * frac
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule '{schedule}'")


def build_optimizer(
    params: list[torch.nn.Parameter], cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``params`` with the configured schedule (one scheduler step per optimizer step)."""
    if not params:
        raise ValueError("the agent has no trainable parameters")
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, foreach=True
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: lr_lambda(
            s,
            warmup_steps=cfg.warmup_steps,
            total_steps=total_steps,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
        ),
    )
    return opt, sched


AGENT_NORMALIZERS = {"none": "none", "batch": "batch_per_agent", "running": "running_per_agent"}


def make_agent_normalizer(cfg: NormalizerConfig) -> Normalizer:
    """The agent's own normaliser (``marl.credit.normalizers``), applied to its samples only:
    ``batch`` whitens over this agent's batch (MARS / Dr.MAS), ``running`` uses this agent's
    running mean/std, ``none`` leaves advantages unchanged."""
    return make_normalizer(AGENT_NORMALIZERS[cfg.kind], eps=cfg.eps)


def _normalize_rows(batch: SampleBatch, normalizer: Normalizer) -> SampleBatch:
    """Apply the normaliser to each row's sequence advantage (the mean over its completion tokens),
    shifting and scaling every token of the row alike."""
    if normalizer.key_field is None or len(batch) == 0:
        return batch
    mask = batch.loss_mask
    counts = mask.sum(1).clamp(min=1)
    seq_adv = (batch.advantages * mask).sum(1) / counts  # (N,)
    keys = np.zeros(len(batch), dtype=np.int64)
    new = torch.as_tensor(normalizer(seq_adv.double().numpy(), keys), dtype=torch.float32)
    shift = (new - seq_adv)[:, None]
    return SampleBatch(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        loss_mask=batch.loss_mask,
        old_logprobs=batch.old_logprobs,
        advantages=(batch.advantages + shift) * (mask > 0),
        node_ids=batch.node_ids,
        allowed_ids=batch.allowed_ids,
    )


def engine_correction(
    learner_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, float]:
    """Truncated importance sampling between the rollout engine and the learner (Yao et al. 2025,
    "Your efficient RL framework secretly brings you off-policy RL training"; verl, MARTI-v2).

    The engine sampled token ``t`` with ``pi_engine``; the learner's copy of the same weights gives
    ``pi_learner`` (numerics differ: kernels, precision). Each token's policy-gradient term is weighted
    by ``w_t = min(pi_learner / pi_engine, C) = min(exp(lp_learner - lp_engine), C)`` (``C = cap``;
    ``cap <= 0``: no correction, ``w = 1``). Returns ``(w (N, T), gap)`` with ``gap`` the mean absolute
    log-prob difference ``mean_t |lp_learner - lp_engine|`` over ``mask`` tokens (0 when none).
    """
    m = mask > 0
    diff = (learner_logprobs - engine_logprobs).masked_fill(~m, 0.0)
    gap = float(diff.abs().sum() / m.sum().clamp(min=1))
    if cap <= 0:
        return torch.ones_like(learner_logprobs), gap
    w = diff.clamp(max=math.log(cap)).exp().masked_fill(~m, 1.0)
    return w, gap


def trainable_parameters(policy: Policy) -> dict[str, torch.nn.Parameter]:
    """The parameters an agent's optimizer owns: its adapter's on a shared base, else those requiring grad."""
    if isinstance(policy, AdapterPolicy):
        return adapter_parameters(policy.model, policy.adapter)
    return {n: p for n, p in policy.model.named_parameters() if p.requires_grad}


class Agent:
    """A named learner with its own policy, optimizer, scheduler, normaliser and RNG.

    ``policy``: a ready policy (an :class:`AdapterPolicy` on a base shared with other agents), else
    one is loaded from ``cfg.policy``. ``engine``: the rollout engine when it is not the policy itself
    (vLLM, :class:`marl.policies.vllm_engine.VllmRollout`): :meth:`act` samples there, :meth:`learn`
    recomputes the behaviour log-probs with the learner (logging the gap, optionally correcting it with
    truncated importance sampling) and pushes the updated weights or adapter into it.
    """

    def __init__(
        self,
        name: str,
        cfg: AgentConfig,
        *,
        cache_dir: str | Path,
        total_steps: int,
        seed: int,
        policy: Policy | None = None,
        engine: Any = None,
    ):
        self.name = name
        self.cfg = cfg
        self.policy: Policy = policy if policy is not None else load_policy(cfg.policy, cache_dir)
        if cfg.engine == "hf":
            self.policy.fast = False  # the Hugging Face forward loop (hf_generate)
        self.engine = engine
        self.model = self.policy.model
        self._own = trainable_parameters(self.policy)
        params = list(self._own.values())
        updates_per_step = cfg.ppo_epochs * cfg.mini_batches
        self.optimizer, self.scheduler = build_optimizer(params, cfg.optim, total_steps * updates_per_step)
        self.updates_per_step = updates_per_step
        self.reference: Policy | None = frozen_copy(self.policy) if cfg.loss.kl_coef > 0 else None
        self.normalizer = make_agent_normalizer(cfg.normalizer)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.num_params = sum(p.numel() for p in self.model.parameters())
        if self.engine is not None:
            self.engine.attach(self)
        self.num_trainable = sum(p.numel() for p in params)

    # ---------------------------------------------------------------- acting
    def act(
        self, prompts: list[list[int]], *, logits_processor=None, greedy: bool = False, generator: Any = OWN
    ) -> Generation:
        """One batched generation call for every pending prompt of this agent, with its sampling
        settings. ``generator``: the agent's own (default: training rollouts), or another one (or
        None) so that evaluation never shifts the training stream."""
        s = self.cfg.sampling
        sampler = self.engine if self.engine is not None else self.policy
        return sampler.generate(
            prompts,
            max_new_tokens=s.max_new_tokens,
            temperature=0.0 if greedy else s.temperature,
            top_p=1.0 if greedy else s.top_p,
            generator=self.generator if generator is OWN else generator,
            logits_processor=logits_processor,
        )

    # ---------------------------------------------------------------- learning
    def learn(
        self, batch: SampleBatch, *, step: int | None = None, measure_kl: bool = False
    ) -> dict[str, float]:
        """PPO-style update(s) on this agent's own samples; returns metrics (floats).

        ``step`` (1-based training step of the run) places the learning-rate schedule: the ``u``-th
        update of this call uses the rate of update ``(step - 1) * U + u`` (``U = ppo_epochs x
        mini_batches``), however many times a recipe calls ``learn`` in one step; without it the
        schedule advances by one per update. ``measure_kl`` adds ``policy_kl``: the mean per-token
        KL (k3) from the policy that sampled the batch to the updated one, one extra forward pass.
        """
        if len(batch) == 0:
            return {"samples": 0.0}
        cfg = self.cfg
        if step is not None:
            self._place_schedule((step - 1) * self.updates_per_step)
        temperature = cfg.sampling.temperature if cfg.sampling.temperature > 0 else 1.0
        engine_stats: dict[str, float] = {}
        tis = None
        if self.engine is not None:
            batch, tis, engine_stats = self._recompute_old_logprobs(batch, temperature)
        batch = _normalize_rows(batch, self.normalizer)
        if tis is not None:
            batch.advantages = batch.advantages * tis
        n = len(batch)
        sums: dict[str, float] = {}
        updates = 0
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=self.generator) if cfg.mini_batches > 1 else torch.arange(n)
            for mb_idx in torch.tensor_split(order, cfg.mini_batches):
                if mb_idx.numel() == 0:
                    continue
                mb = batch.select(mb_idx)
                norm = aggregation_norm(mb.loss_mask, max_len=cfg.loss.sum_norm_max_len)
                lengths = mb.attention_mask.sum(1).numpy()
                self.optimizer.zero_grad(set_to_none=True)
                stats_acc: dict[str, float] = {}
                for micro in micro_batches(lengths, cfg.micro_batch_tokens):
                    micro = torch.as_tensor(np.asarray(micro), dtype=torch.long)
                    sub = mb.select(micro)
                    t = int(sub.attention_mask.sum(1).max())
                    ids, att = sub.input_ids[:, :t], sub.attention_mask[:, :t]
                    allowed = None if sub.allowed_ids is None else sub.allowed_ids[:, :t]
                    logp, ent = self.policy.token_logprobs(
                        ids, att, temperature=temperature, return_entropy=True, allowed_ids=allowed
                    )
                    ref = None
                    if self.reference is not None:
                        with torch.no_grad():
                            ref = self.reference.token_logprobs(
                                ids, att, temperature=temperature, allowed_ids=allowed
                            )
                    loss, stats = total_loss(
                        logp,
                        sub.old_logprobs[:, :t],
                        sub.advantages[:, :t],
                        sub.loss_mask[:, :t],
                        cfg.loss,
                        norm,
                        ref_logprobs=ref,
                        entropy=ent,
                    )
                    loss.backward()
                    w = float(len(micro)) / len(mb)
                    for k, v in stats.items():
                        # loss terms are micro-batch contributions to the mini-batch value (global
                        # denominators): they add up; the rest are micro-batch means: weight by rows
                        stats_acc[k] = stats_acc.get(k, 0.0) + (
                            float(v) if k in ADDITIVE_STATS else w * float(v)
                        )
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                gn = clip_grad_norm(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else None)
                stats_acc["grad_norm"] = gn
                if cfg.optim.skip_zero_grad and gn == 0.0:
                    stats_acc["zero_grad_steps"] = 1.0  # no signal: AdamW's momentum would still move
                elif math.isfinite(gn):
                    self.optimizer.step()
                else:
                    logger.warning("agent %s: non-finite gradient norm, optimizer step skipped", self.name)
                    stats_acc["skipped_steps"] = 1.0
                self.scheduler.step()
                updates += 1
                for k, v in stats_acc.items():
                    sums[k] = sums.get(k, 0.0) + v
        self.model.eval()
        out = {k: v / max(updates, 1) for k, v in sums.items()}
        out["lr"] = float(self.scheduler.get_last_lr()[0])
        out["samples"] = float(n)
        out["tokens"] = float(batch.loss_mask.sum())
        if measure_kl:
            out["policy_kl"] = self.policy_kl(batch, temperature)
        out.update(engine_stats)
        if self.engine is not None:
            out["time/push_s"] = self.engine.push()
        return out

    @torch.no_grad()
    def _recompute_old_logprobs(
        self, batch: SampleBatch, temperature: float
    ) -> tuple[SampleBatch, torch.Tensor | None, dict[str, float]]:
        """The learner's log-probs of the engine's samples replace the engine's as ``old_logprobs``; the
        mean absolute gap is logged, and with ``vllm.tis_cap > 0`` the truncated IS weights are returned."""
        learner = torch.zeros_like(batch.old_logprobs)
        for micro in micro_batches(batch.attention_mask.sum(1).numpy(), self.cfg.micro_batch_tokens):
            idx = torch.as_tensor(np.asarray(micro), dtype=torch.long)
            sub = batch.select(idx)
            t = int(sub.attention_mask.sum(1).max())
            allowed = None if sub.allowed_ids is None else sub.allowed_ids[:, :t]
            lp = self.policy.token_logprobs(
                sub.input_ids[:, :t], sub.attention_mask[:, :t], temperature=temperature, allowed_ids=allowed
            )
            learner[idx, :t] = lp.float()
        w, gap = engine_correction(learner, batch.old_logprobs, batch.loss_mask, self.cfg.vllm.tis_cap)
        new = SampleBatch(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            loss_mask=batch.loss_mask,
            old_logprobs=torch.where(batch.loss_mask > 0, learner, batch.old_logprobs),
            advantages=batch.advantages,
            node_ids=batch.node_ids,
            allowed_ids=batch.allowed_ids,
        )
        stats = {"logprob_gap": gap}
        if self.cfg.vllm.tis_cap > 0:
            m = batch.loss_mask > 0
            stats["tis_weight"] = float(w[m].mean()) if bool(m.any()) else 1.0
            return new, w, stats
        return new, None, stats

    def _place_schedule(self, update: int) -> None:
        """Set the learning rate to the schedule's value at optimizer update ``update`` (0-based)."""
        if self.scheduler.last_epoch != update:
            self.scheduler.last_epoch = update - 1
            self.scheduler.step()

    @torch.no_grad()
    def policy_kl(self, batch: SampleBatch, temperature: float = 1.0) -> float:
        """Mean per-token ``k3`` KL from the sampling policy (``old_logprobs``) to the current one over
        the batch's completion tokens: ``mean(e^d - d - 1)``, ``d = log pi_old - log pi``."""
        total, count = 0.0, 0.0
        for micro in micro_batches(batch.attention_mask.sum(1).numpy(), self.cfg.micro_batch_tokens):
            sub = batch.select(torch.as_tensor(np.asarray(micro), dtype=torch.long))
            t = int(sub.attention_mask.sum(1).max())
            allowed = None if sub.allowed_ids is None else sub.allowed_ids[:, :t]
            logp = self.policy.token_logprobs(
                sub.input_ids[:, :t], sub.attention_mask[:, :t], temperature=temperature, allowed_ids=allowed
            )
            mask = sub.loss_mask[:, :t]
            d = (sub.old_logprobs[:, :t] - logp).clamp(-20.0, 20.0)
            total += float(((d.exp() - d - 1.0) * mask).sum())
            count += float(mask.sum())
        return total / max(count, 1.0)

    # ---------------------------------------------------------------- state
    def reset_reference(self) -> None:
        """Make the KL reference the current weights (no-op without a KL term). A warm start calls it,
        so the KL holds the policy near the model RL starts from, as with an SFT reference."""
        if self.reference is not None:
            with torch.no_grad():
                self.reference.model.load_state_dict(self.model.state_dict())

    def _reference_own(self) -> dict[str, torch.Tensor]:
        """The reference's copies of this agent's trainable weights (the rest never differs)."""
        ref = dict(self.reference.model.named_parameters())
        return {n: ref[n] for n in self._own}

    def save(self, folder: str | Path) -> None:
        """Weights (safetensors), the KL reference's weights if there is one, optimizer, scheduler,
        normaliser and RNG state into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(self.policy, AdapterPolicy):  # a shared base: only this agent's adapter
            save_file(
                {n: p.detach().contiguous() for n, p in self._own.items()}, str(folder / "model.safetensors")
            )
        else:
            save_model(self.model, str(folder / "model.safetensors"))
        if self.reference is not None:
            save_file(
                {n: p.detach().contiguous() for n, p in self._reference_own().items()},
                str(folder / "reference.safetensors"),
            )
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "normalizer": self.normalizer.state_dict(),
                "generator": self.generator.get_state(),
            },
            folder / "state.pt",
        )

    def load(self, folder: str | Path) -> None:
        folder = Path(folder)
        if isinstance(self.policy, AdapterPolicy):
            saved = load_file(str(folder / "model.safetensors"))
            missing, unexpected = sorted(set(self._own) - set(saved)), sorted(set(saved) - set(self._own))
            if not (missing or unexpected):
                with torch.no_grad():
                    for n, p in self._own.items():
                        p.copy_(saved[n])
        else:
            missing, unexpected = load_model(self.model, str(folder / "model.safetensors"), strict=True)
        if missing or unexpected:
            raise RuntimeError(
                f"agent {self.name}: checkpoint mismatch missing={missing} unexpected={unexpected}"
            )
        if self.reference is not None and not (folder / "reference.safetensors").is_file():
            logger.warning(
                "agent %s: the checkpoint %s has no KL reference (saved without a KL term, or by an older "
                "version); the reference stays this agent's initial weights",
                self.name,
                folder,
            )
        elif self.reference is not None:
            saved = load_file(str(folder / "reference.safetensors"))
            own = self._reference_own()
            if set(saved) != set(own):
                raise RuntimeError(f"agent {self.name}: the checkpoint's KL reference has other weights")
            with torch.no_grad():
                for n, p in own.items():
                    p.copy_(saved[n])
        state = torch.load(folder / "state.pt", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.normalizer.load_state_dict(state["normalizer"])
        self.generator.set_state(state["generator"])
        if self.engine is not None:
            self.engine.push()

    def export(self, folder: str | Path) -> Path:
        """``save_pretrained`` the model (LoRA merged) and tokenizer so transformers and vLLM load it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = self.model
        if isinstance(self.policy, AdapterPolicy):
            model = copy.deepcopy(model)
            model.set_adapter(self.policy.adapter)
            model = model.merge_and_unload(adapter_names=[self.policy.adapter])
        elif hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(folder)
        self.policy.tokenizer.save_pretrained(folder)
        return folder


def build_agents(
    agent_cfgs: Mapping[str, AgentConfig],
    *,
    cache_dir: str | Path,
    total_steps: int,
    seed: int,
    engine_factory: Any = None,
) -> dict[str, Agent]:
    """One ``Agent`` per named config; each agent's RNG seed derives from (run seed, its name).

    LoRA agents with ``share_base`` on the same base model get one frozen base with an adapter each
    (:func:`marl.policies.shared_base.load_shared_policies`); ``engine: vllm`` agents get a vLLM
    engine, one per base for agents that share one (an adapter id each), else one each.
    ``engine_factory(model_dir, vllm_cfg, seed=, lora_rank=, dtype=)`` builds an engine (default: a
    :class:`marl.policies.vllm_engine.VllmEngine` in this process; the Ray runtime puts it in an actor).
    """
    from marl.seeding import derive_seed

    shared: dict[str, dict[str, AgentConfig]] = {}
    for name, acfg in agent_cfgs.items():
        if acfg.share_base:
            shared.setdefault(base_key(acfg.policy), {})[name] = acfg
    policies: dict[str, Policy] = {}
    for group in shared.values():
        policies.update(load_shared_policies({n: a.policy for n, a in group.items()}, cache_dir))
    engines = _make_engines(agent_cfgs, cache_dir=cache_dir, seed=seed, factory=engine_factory)
    return {
        name: Agent(
            name,
            acfg,
            cache_dir=cache_dir,
            total_steps=total_steps,
            seed=derive_seed(seed, "agent", name),
            policy=policies.get(name),
            engine=engines.get(name),
        )
        for name, acfg in agent_cfgs.items()
    }


def _make_engines(
    agent_cfgs: Mapping[str, AgentConfig], *, cache_dir: str | Path, seed: int, factory: Any
) -> dict[str, Any]:
    """A :class:`~marl.policies.vllm_engine.VllmRollout` per ``engine: vllm`` agent: agents sharing a
    base share its engine (one LoRA adapter id each); the others get one engine each."""
    wanted = {n: a for n, a in agent_cfgs.items() if a.engine == "vllm"}
    if not wanted:
        return {}
    from marl.policies.hf import check_model_dir, ensure_tiny
    from marl.policies.vllm_engine import VllmEngine, VllmRollout

    factory = factory or VllmEngine
    groups: dict[str, list[str]] = {}
    for name, acfg in wanted.items():
        groups.setdefault(f"shared:{base_key(acfg.policy)}" if acfg.share_base else name, []).append(name)
    out: dict[str, Any] = {}
    for names in groups.values():
        first = wanted[names[0]]
        pc = first.policy
        model_dir = check_model_dir(pc.path) if pc.path else ensure_tiny(pc, cache_dir)
        lora_rank = max((wanted[n].policy.lora.r for n in names if wanted[n].policy.lora.enabled), default=0)
        engine = factory(
            str(model_dir),
            first.vllm,
            seed=derive_engine_seed(seed, names[0]),
            lora_rank=lora_rank,
            dtype=pc.dtype,
        )
        for i, name in enumerate(names):
            adapter = name if wanted[name].policy.lora.enabled else None
            out[name] = VllmRollout(engine, adapter=adapter, adapter_id=i + 1)
    return out


def derive_engine_seed(seed: int, name: str) -> int:
    """The engine's own seed (vLLM's global RNG), from (run seed, its first agent's name); sampling
    itself is seeded per request from each agent's generator."""
    from marl.seeding import derive_seed

    return derive_seed(seed, "engine", name) % 2**31
