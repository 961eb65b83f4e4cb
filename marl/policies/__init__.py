"""Policies: the embedded tiny LM and its tokenizer, local HF models (+ LoRA), fast batched sampling."""

from marl.policies.base import GenerationEngine, LoraConfig, Policy, PolicyConfig
from marl.policies.generate import (
    LogitsProcessor,
    UnsupportedModel,
    fast_generate,
    fast_unsupported_reason,
    hf_generate,
    left_pad,
    positions_from_mask,
    sample_next,
)
from marl.policies.hf import add_lora, ensure_tiny, load_policy
from marl.policies.tiny import TINY_SIZES, build_tiny_lm, count_parameters, tiny_config
from marl.policies.tokenizer import build_char_tokenizer, save_tokenizer

__all__ = [
    "TINY_SIZES",
    "GenerationEngine",
    "LogitsProcessor",
    "LoraConfig",
    "Policy",
    "PolicyConfig",
    "UnsupportedModel",
    "add_lora",
    "build_char_tokenizer",
    "build_tiny_lm",
    "count_parameters",
    "ensure_tiny",
    "fast_generate",
    "fast_unsupported_reason",
    "hf_generate",
    "left_pad",
    "load_policy",
    "positions_from_mask",
    "sample_next",
    "save_tokenizer",
    "tiny_config",
]
