"""Loading a policy: the embedded tiny LM (built once into a cache dir) or a local HF causal LM, plus LoRA."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from marl.policies.base import LoraConfig, Policy, PolicyConfig
from marl.policies.tiny import ARCHS, TINY_SIZES, build_tiny_lm, quiet_hf

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def tiny_dir(cfg: PolicyConfig, cache_dir: str | Path) -> Path:
    """Where the tiny LM of ``cfg`` lives under ``cache_dir`` (name encodes arch, size, seed, overrides)."""
    name = f"tiny-{cfg.arch}-{cfg.tiny}-seed{cfg.seed}"
    ov = cfg.tiny_overrides()
    if ov:
        name += "-" + hashlib.sha1(json.dumps(ov, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / name


def ensure_tiny(cfg: PolicyConfig, cache_dir: str | Path) -> Path:
    """Build the tiny LM of ``cfg`` under ``cache_dir`` unless it is already there; return its directory."""
    if cfg.tiny not in TINY_SIZES:
        raise KeyError(f"unknown policy.tiny {cfg.tiny!r}; valid sizes: {sorted(TINY_SIZES)}")
    if cfg.arch not in ARCHS:
        raise KeyError(f"unknown policy.arch {cfg.arch!r}; valid archs: {list(ARCHS)}")
    out = tiny_dir(cfg, cache_dir)
    if (out / "marl_tiny.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build.", dir=out.parent)) / "m"
    try:
        build_tiny_lm(cfg.tiny, cfg.seed, tmp, arch=cfg.arch, overrides=cfg.tiny_overrides() or None)
        try:
            os.rename(tmp, out)  # atomic; fails if another process got there first
        except OSError:
            if not (out / "marl_tiny.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return out


def check_model_dir(path: str | Path) -> Path:
    """Fail fast unless ``path`` is a local HF model directory (a folder with config.json)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"policy.path {str(p)!r} does not exist or is not a directory; point it at a local Hugging Face "
            "model directory (config.json, weights, tokenizer files) or leave it empty for the tiny LM"
        )
    if not (p / "config.json").is_file():
        raise ValueError(
            f"policy.path {str(p)!r} is not a Hugging Face model directory (no config.json); "
            "save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)"
        )
    return p


def add_lora(model: torch.nn.Module, lora: LoraConfig, seed: int = 0) -> torch.nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters (base weights frozen); adapter init seeded by ``seed``."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError as e:  # pragma: no cover - peft is a declared extra
        raise ImportError("policy.lora.enabled needs peft: pip install 'marl-tree[lora]'") from e
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        linear_names = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
            | {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
        )
        raise ValueError(
            f"policy.lora.target_modules {missing} are not modules of this model; its linear layers are "
            f"{linear_names}"
        )
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)
        return get_peft_model(model, peft_cfg)


def load_policy(cfg: PolicyConfig, cache_dir: str | Path) -> Policy:
    """Build the :class:`Policy` described by ``cfg``.

    ``cfg.path`` set: load that local directory with ``AutoModelForCausalLM`` /
    ``AutoTokenizer`` (error naming the path if it is missing or not a model dir).
    Otherwise build (or reuse) the tiny LM ``cfg.tiny`` / ``cfg.arch`` / ``cfg.seed``
    under ``cache_dir`` and load it. ``cfg.lora.enabled`` wraps the model with PEFT so
    only the adapter weights require grad.
    """
    if cfg.dtype not in DTYPES:
        raise KeyError(f"unknown policy.dtype {cfg.dtype!r}; valid dtypes: {list(DTYPES)}")
    src = check_model_dir(cfg.path) if cfg.path else ensure_tiny(cfg, cache_dir)
    with quiet_hf():
        model = AutoModelForCausalLM.from_pretrained(src, dtype=DTYPES[cfg.dtype])
        tokenizer = AutoTokenizer.from_pretrained(src)
    model.to(cfg.device)
    if cfg.lora.enabled:
        model = add_lora(model, cfg.lora, cfg.seed)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("loaded policy from %s (%s, %d trainable parameters)", src, type(model).__name__, n_train)
    return Policy(model, tokenizer, fast=cfg.fast_generate)
