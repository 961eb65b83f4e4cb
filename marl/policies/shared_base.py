"""Several LoRA agents on one frozen base: one PEFT model holds every agent's adapter.

PettingLLMs' sharing levels, chosen per agent in YAML: a *full model* per agent (L3, the default),
or *LoRA on a shared base* (L2, ``share_base: true``): agents whose configs name the same base
model keep one copy of its frozen weights in the learner (and one vLLM engine, one adapter id
each), while each agent keeps its own adapter, optimizer, normaliser and RNG. Each
:class:`AdapterPolicy` activates its agent's adapter before it samples or scores, so the learner's
forward pass for agent ``a`` is ``W x + (alpha / r) B_a A_a x`` (Hu et al. 2021) and only
``A_a, B_a`` receive gradients.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from marl.policies.base import LoraConfig, Policy, PolicyConfig
from marl.policies.hf import load_policy


def base_key(cfg: PolicyConfig) -> str:
    """What must match for two agents to share a base: the model (path, or tiny size, arch, seed and
    overrides), its dtype and device; the LoRA settings may differ."""
    model = cfg.path or f"tiny:{cfg.arch}:{cfg.tiny}:{cfg.seed}:{sorted(cfg.tiny_overrides().items())}"
    return f"{model}|{cfg.dtype}|{cfg.device}"


class AdapterPolicy(Policy):
    """A :class:`Policy` over a multi-adapter PEFT model that samples and scores with its own adapter."""

    def __init__(self, model: torch.nn.Module, tokenizer, adapter: str, *, fast: bool = True) -> None:
        super().__init__(model, tokenizer, fast=fast)
        self.adapter = adapter

    def activate(self) -> None:
        """Make this agent's adapter the active one (PEFT marks only it trainable)."""
        if self.model.active_adapter != self.adapter:
            self.model.set_adapter(self.adapter)

    def generate(self, prompts, **kw):
        self.activate()
        return super().generate(prompts, **kw)

    def token_logprobs(self, input_ids, attention_mask, **kw):
        self.activate()
        return super().token_logprobs(input_ids, attention_mask, **kw)


def adapter_parameters(model: torch.nn.Module, adapter: str) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of ``adapter`` in a PEFT model, by name (``...lora_A.<adapter>.weight``)."""
    return {n: p for n, p in model.named_parameters() if "lora_" in n and f".{adapter}." in n}


def _peft_lora(lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def load_shared_policies(cfgs: Mapping[str, PolicyConfig], cache_dir: str | Path) -> dict[str, AdapterPolicy]:
    """One frozen base (the first config's model) with one LoRA adapter per named agent, each adapter
    initialised from its own ``policy.seed``. Every config must name the same base (:func:`base_key`)."""
    try:
        from peft import get_peft_model
    except ImportError as e:  # pragma: no cover - peft is a declared extra
        raise ImportError("share_base needs peft: pip install 'marl-tree[lora]'") from e
    names = list(cfgs)
    keys = {base_key(c) for c in cfgs.values()}
    if len(keys) != 1:
        raise ValueError(f"agents {names} share a base but name different base models: {sorted(keys)}")
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise ValueError(
            f"agents {bad} share a base: their names become adapter names and must be identifiers"
        )
    first = cfgs[names[0]]
    base = load_policy(dataclasses.replace(first, lora=LoraConfig(enabled=False)), cache_dir)
    model = None
    for name in names:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            torch.manual_seed(cfgs[name].seed)
            if model is None:
                model = get_peft_model(base.model, _peft_lora(cfgs[name].lora), adapter_name=name)
            else:
                model.add_adapter(name, _peft_lora(cfgs[name].lora))
    for name in names:
        for p in adapter_parameters(model, name).values():
            p.requires_grad_(True)
    return {name: AdapterPolicy(model, base.tokenizer, name, fast=cfgs[name].fast_generate) for name in names}


def adapter_payload(model: torch.nn.Module, adapter: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``adapter`` of a PEFT model as a standalone PEFT adapter: its tensors under PEFT's saved names
    (``adapter_model.safetensors``) and its ``adapter_config.json`` as a JSON-able dict; PEFT and vLLM
    load the pair."""
    from peft.utils import get_peft_model_state_dict

    state = {
        k: v.detach().contiguous().cpu()
        for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items()
    }
    cfg = json.loads(json.dumps(model.peft_config[adapter].to_dict(), default=_jsonable))
    return state, cfg


def _jsonable(x):
    return sorted(x) if isinstance(x, (set, frozenset)) else str(x)
