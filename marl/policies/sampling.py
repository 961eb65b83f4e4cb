"""Sampling one token per row from logits, and the helpers both decoders share (left padding,
position ids, finishing a ``Generation``).

The log-probs a ``Generation`` carries are those of the sampling distribution (after the logits
processor, temperature and top-p): the behaviour policy, see :func:`sample_next`.

Shape legend: ``B`` prompts, ``T`` tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from marl.types import Generation

logger = logging.getLogger(__name__)

LogitsProcessor = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(step, tokens_so_far (B, step), logits (B, V)) -> logits (B, V)``; e.g. masks illegal actions."""

# Upper end of the uniform draw: u * total < total strictly, so the inverse-CDF search
# never runs past the last token with non-zero probability.
_U_MAX = 1.0 - 2.0**-23

# Compact a decode group (drop finished rows) only when at least this many rows remain.
_MIN_COMPACT_ROWS = 8
# --------------------------------------------------------------------------- sampling


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row and return ``(tokens (B,), logprobs (B,))``.

    The sampling distribution is ``p = softmax(logits / temperature)`` restricted to the
    nucleus (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"): sort
    ``p`` descending and keep token ``i`` iff the mass strictly before it is ``< top_p``
    (so the top token is always kept), then renormalise. ``logprobs`` are
    ``log p_nucleus(token)``, the behaviour policy's log-probs.

    The draw is inverse-CDF with one uniform number per row from ``generator``: the same
    generator state gives the same tokens. A token with probability 0 (a ``-inf`` logit)
    is never drawn.

    ``temperature == 0`` is greedy: ``argmax(logits)``, and the returned log-prob is
    ``log_softmax(logits)`` of that token (the untempered distribution), so it is not
    the log-prob of a point mass.
    """
    check_sampling(temperature, top_p)
    u = None
    if temperature > 0:
        u = uniform_draws(logits.shape[0], 1, generator, logits.device)
    return sample_with_uniform(logits.float(), temperature, top_p, u)


def check_sampling(temperature: float, top_p: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0 (0 means greedy)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p ({top_p}) must be in (0, 1]; use 1.0 to disable nucleus sampling")


def uniform_draws(
    rows: int, cols: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(rows, cols) uniform numbers in [0, _U_MAX) from ``generator`` (drawn on its device)."""
    gen_device = generator.device if generator is not None else device
    u = torch.empty(rows, cols, device=gen_device).uniform_(0.0, _U_MAX, generator=generator)
    return u.to(device)


def sample_with_uniform(
    logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_next` given the uniform draws ``u`` (B, 1); float32 logits; ``u`` unused if greedy."""
    if temperature == 0:
        tok = logits.argmax(-1, keepdim=True)  # (B, 1)
        return tok.squeeze(1), torch.log_softmax(logits, -1).gather(1, tok).squeeze(1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_p < 1.0:
        sp, si = torch.softmax(logits, -1).sort(-1, descending=True)  # (B, V)
        sp = sp.masked_fill(sp.cumsum(-1) - sp >= top_p, 0.0)  # drop tokens past the nucleus
        cdf = sp.cumsum(-1)
        total = cdf[:, -1:]
        j = torch.searchsorted(cdf, u * total, right=True)  # (B, 1): first index with cdf > u * total
        return si.gather(1, j).squeeze(1), (sp.gather(1, j) / total).log().squeeze(1)
    p = torch.softmax(logits, -1)  # (B, V)
    cdf = p.cumsum(-1)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (B, 1)
    # p of the drawn token is > 0 and exact to float32 relative precision, so log(p) is exact to ~1e-7.
    return tok.squeeze(1), p.gather(1, tok).log().squeeze(1)


# --------------------------------------------------------------------------- helpers


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"):
    """Left-pad token lists into ``(ids (B, T), mask (B, T))`` int64 tensors (mask 1 on real tokens)."""
    if len(prompts) == 0:
        raise ValueError("prompts is empty; pass at least one prompt")
    lens = [len(p) for p in prompts]
    if min(lens) == 0:
        raise ValueError(f"prompt {lens.index(0)} is empty; every prompt needs at least one token")
    t = max(lens)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), t), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, t - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, t - len(p) :] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens from 0 in each row (pads get 0): ``clamp(cumsum(mask) - 1, 0)``."""
    return (mask.long().cumsum(-1) - 1).clamp_(min=0)


def finish_generation(
    out_tok: torch.Tensor, out_lp: torch.Tensor, n_steps: int, stop_ids: Sequence[int]
) -> Generation:
    """Trim the step buffers and derive lengths / finish reasons from the first stop token."""
    tokens = out_tok[:, :n_steps].cpu()
    logprobs = out_lp[:, :n_steps].float().cpu()
    b = tokens.shape[0]
    if stop_ids and n_steps > 0:
        is_stop = torch.isin(tokens, torch.as_tensor(list(stop_ids), dtype=torch.long))
        has = is_stop.any(1)
        first = is_stop.long().argmax(1)
        lengths = torch.where(has, first + 1, torch.full_like(first, n_steps))
    else:
        has = torch.zeros(b, dtype=torch.bool)
        lengths = torch.full((b,), n_steps, dtype=torch.long)
    t = int(lengths.max()) if b else 0
    return Generation(
        tokens=tokens[:, :t].contiguous(),
        logprobs=logprobs[:, :t].contiguous(),
        lengths=lengths,
        finish_reasons=["stop" if h else "length" for h in has.tolist()],
    )


def check_generation_args(max_new_tokens: int, max_positions: int | None, prompt_len: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 1")
    if max_positions is not None and prompt_len + max_new_tokens > max_positions:
        raise ValueError(
            f"longest prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_position_embeddings ({max_positions}); shorten the prompts or lower max_new_tokens"
        )
