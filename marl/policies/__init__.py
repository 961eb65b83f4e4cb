"""Policies: the embedded tiny LM and its tokenizer, local HF models (+ LoRA), fast batched sampling."""

from marl.policies.base import LoraConfig, Policy, PolicyConfig, frozen_copy
from marl.policies.decoder import fast_generate
from marl.policies.fused import UnsupportedModel, fast_unsupported_reason
from marl.policies.hf import add_lora, ensure_tiny, load_policy
from marl.policies.hf_generate import hf_generate
from marl.policies.sampling import LogitsProcessor, left_pad, positions_from_mask, sample_next
from marl.policies.tiny import TINY_SIZES, build_tiny_lm, count_parameters, tiny_config
from marl.policies.tokenizer import build_char_tokenizer, save_tokenizer

__all__ = [
    "TINY_SIZES",
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
    "frozen_copy",
    "hf_generate",
    "left_pad",
    "load_policy",
    "positions_from_mask",
    "sample_next",
    "save_tokenizer",
    "tiny_config",
]
