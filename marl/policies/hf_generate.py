"""The generic sampling loop over any HF causal LM (``model(...)`` with the library's KV cache): the
fallback of :meth:`marl.policies.Policy.generate` when the fast decoder does not support a model.

Shape legend: ``B`` prompts, ``T`` tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import torch

from marl.policies.fused import unwrap_peft
from marl.policies.sampling import (
    LogitsProcessor,
    check_generation_args,
    finish_generation,
    left_pad,
    positions_from_mask,
    sample_next,
)
from marl.types import Generation

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- generic fallback


def hf_generate(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    stop_ids: Sequence[int] = (),
    logits_processor: LogitsProcessor | None = None,
) -> Generation:
    """Same contract as :func:`fast_generate`, for any HF causal LM (or PEFT model).

    Loops over ``model(input_ids, attention_mask, position_ids, cache)`` with the
    library's KV cache; position ids as in :func:`positions_from_mask`. No batch
    compaction; stops when every row has emitted a stop token. The caller decides the
    module's train/eval mode (dropout applies in train mode).
    """
    with torch.inference_mode():
        device = next(model.parameters()).device
        ids, mask = left_pad(prompts, pad_id, device)
        cfg = getattr(unwrap_peft(model), "config", None)
        max_pos = getattr(cfg, "n_positions", None) if getattr(cfg, "model_type", "") == "gpt2" else None
        check_generation_args(max_new_tokens, max_pos, ids.shape[1])
        cache_kw = _cache_kwarg(model)
        b = ids.shape[0]
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=True
        )
        cache = _out_cache(out)
        logits = out.logits[:, -1].float()
        cur = positions_from_mask(mask)[:, -1:] + 1  # (B, 1)
        out_tok = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros((b, max_new_tokens), dtype=torch.float32, device=device)
        stop_t = torch.as_tensor(list(stop_ids), dtype=torch.long, device=device) if stop_ids else None
        done = torch.zeros(b, dtype=torch.bool, device=device)
        n_steps = 0
        for step in range(max_new_tokens):
            if logits_processor is not None:
                logits = logits_processor(step, out_tok[:, :step], logits)
            tok, lp = sample_next(logits, temperature, top_p, generator)
            tok = tok.masked_fill_(done, pad_id)
            out_tok[:, step] = tok
            out_lp[:, step] = lp.masked_fill_(done, 0.0)
            n_steps = step + 1
            if stop_t is not None:
                done |= torch.isin(tok, stop_t)
                if bool(done.all()):
                    break
            if n_steps == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(b, 1)], 1)
            out = model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=cur,
                use_cache=True,
                **{cache_kw: cache},
            )
            cache = _out_cache(out)
            logits = out.logits[:, -1].float()
            cur = cur + 1
        return finish_generation(out_tok, out_lp, n_steps, stop_ids)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument of the HF forward: ``cache`` (transformers 5) or ``past_key_values``."""
    params = inspect.signature(unwrap_peft(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)
