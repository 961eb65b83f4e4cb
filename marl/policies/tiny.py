"""The embedded tiny causal LMs: built from a transformers config, seeded, saved with ``save_pretrained``.

No download: the architecture is a stock transformers one (Qwen2 by default, Llama or
GPT-2 on request; all three can be served by vLLM), the weights come from the library's
own initialiser under a fixed seed, and the tokenizer is the byte-level one of
:mod:`marl.policies.tokenizer`. ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)`` load the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig, Qwen2Config
from transformers.utils import logging as hf_logging

from marl.policies.tokenizer import EOS_TOKEN, IM_END, PAD_TOKEN, build_char_tokenizer, save_tokenizer

logger = logging.getLogger(__name__)

# Size name -> Qwen2/Llama config kwargs. Head dim is hidden_size / num_attention_heads and
# is >= 32 for every size, so vLLM's attention kernels can serve the models.
TINY_SIZES: dict[str, dict[str, Any]] = {
    # 99,264 parameters with the 260-token byte vocabulary (Qwen2, tied embeddings).
    "100k": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=1024,
    ),
    # 358,272 parameters (Qwen2, three layers of width 96, three heads of 32).
    "300k": dict(
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=3,
        num_key_value_heads=3,
        intermediate_size=256,
        max_position_embeddings=1024,
    ),
    # 821,888 parameters (Qwen2, grouped-query attention).
    "1m": dict(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        max_position_embeddings=1024,
    ),
    # 3,479,808 parameters (Qwen2).
    "3m": dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=768,
        max_position_embeddings=2048,
    ),
}

ARCHS = ("qwen2", "llama", "gpt2")
MIN_HEAD_DIM = 32


@contextlib.contextmanager
def quiet_hf():
    """Silence transformers' progress bars while loading/saving (library code does not print)."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def tiny_config(size: str, arch: str = "qwen2", overrides: dict[str, Any] | None = None) -> PretrainedConfig:
    """The transformers config of tiny size ``size`` for architecture ``arch``.

    ``overrides`` are Qwen2/Llama-named kwargs (``hidden_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``,
    ``max_position_embeddings``, ``initializer_range``, ...) applied on top of
    ``TINY_SIZES[size]``; for GPT-2 they are translated to its names
    (``num_key_value_heads`` does not apply there).
    """
    if size not in TINY_SIZES:
        raise KeyError(f"unknown tiny size {size!r}; valid sizes: {sorted(TINY_SIZES)}")
    if arch not in ARCHS:
        raise KeyError(f"unknown tiny arch {arch!r}; valid archs: {list(ARCHS)}")
    kw = dict(TINY_SIZES[size])
    kw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    tok = build_char_tokenizer()
    hidden, heads = int(kw["hidden_size"]), int(kw["num_attention_heads"])
    if hidden % heads != 0 or hidden // heads < MIN_HEAD_DIM:
        raise ValueError(
            f"hidden_size ({hidden}) / num_attention_heads ({heads}) must be an integer head_dim >= "
            f"{MIN_HEAD_DIM} so vLLM can serve the model; raise hidden_size or lower num_attention_heads"
        )
    special = dict(
        vocab_size=len(tok),
        pad_token_id=tok.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tok.convert_tokens_to_ids(EOS_TOKEN),
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    if arch == "gpt2":
        kw.pop("num_key_value_heads", None)
        rename = dict(
            hidden_size="n_embd",
            num_hidden_layers="n_layer",
            num_attention_heads="n_head",
            intermediate_size="n_inner",
            max_position_embeddings="n_positions",
        )
        kw = {rename.get(k, k): v for k, v in kw.items()}
        return GPT2Config(**kw, **special)
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    return cls(**kw, **special)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_tiny_lm(
    size: str,
    seed: int,
    out_dir: str | Path,
    *,
    arch: str = "qwen2",
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Initialise tiny LM ``size`` from ``seed`` and save model + tokenizer to ``out_dir``.

    The same ``(size, seed, arch, overrides)`` gives byte-identical ``model.safetensors``.
    The global torch RNG state is left untouched (the init runs inside ``fork_rng``).
    The directory is written atomically (temp dir, then rename), so concurrent builders
    of the same directory are safe. Returns ``Path(out_dir)``.
    """
    out = Path(out_dir)
    config = tiny_config(size, arch, overrides)
    tok = build_char_tokenizer()
    im_end = tok.convert_tokens_to_ids(IM_END)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = [config.eos_token_id, im_end]
    model.generation_config.pad_token_id = config.pad_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with quiet_hf():
            model.save_pretrained(tmp)
            save_tokenizer(tok, tmp)
        meta = dict(
            size=size, seed=seed, arch=arch, overrides=overrides or {}, params=count_parameters(model)
        )
        (tmp / "marl_tiny.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("built tiny LM %s/%s seed=%d (%d params) at %s", arch, size, seed, meta["params"], out)
    return out
