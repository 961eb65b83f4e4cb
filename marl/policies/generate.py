"""Batched sampling for causal LMs: a fast static-KV-cache decoder and a generic HF fallback.

For tiny models generation time is framework overhead, so :func:`fast_generate` runs the
forward pass itself for the Qwen2 / Llama / Mistral and GPT-2 architectures (float32):

- it reads the HF module's own parameter tensors on every call (LoRA adapters of PEFT
  are merged on the fly, ``W + scaling * B @ A``), so it always samples from the latest
  trained weights; only small derived tensors (fused Q/K/V and gate/up matrices, the
  first layer's per-token Q/K/V table) are rebuilt per call;
- Q/K/V are one matmul, rows grouped per key/value head, the attention scale and the
  RMSNorm gains folded into the weights, ``1 / temperature`` folded into the final norm;
  rotary embedding is one complex multiply (query and key features are permuted the
  same way, which leaves ``q . k`` unchanged); residual adds are fused into ``addmm``;
- prefill runs over chunks of length-sorted prompts (little padding, cache-sized
  activations) and skips the last layer's work for all but the last position; the KV
  cache ``(B, H_kv, T_prompt + T_new, head_dim)`` is preallocated, keys stored transposed
  so ``q @ K^T`` reads them with unit stride;
- for the smallest models, decoding runs over groups of rows sized so a group's KV cache
  stays in the CPU cache (lock step over all rows when a logits processor is given);
  finished rows ride along masked to ``pad`` until at most half the group is alive, then
  the group is compacted.

:func:`hf_generate` is the same loop over ``model(...)`` with the library's KV cache, for
any other model. Both return a :class:`marl.types.Generation` whose log-probs are those
of the sampling distribution, see :func:`sample_next`. ``benchmarks/bench_generation.py``
measures the speed against transformers' ``generate``.

Shape legend: ``B`` prompts, ``T`` tokens, ``V`` vocabulary, ``D`` hidden size, ``H`` heads.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from marl.types import Generation

logger = logging.getLogger(__name__)

LogitsProcessor = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(step, tokens_so_far (B, step), logits (B, V)) -> logits (B, V)``; e.g. masks illegal actions."""

# Upper end of the uniform draw: u * total < total strictly, so the inverse-CDF search
# never runs past the last token with non-zero probability.
_U_MAX = 1.0 - 2.0**-23

# Compact a decode group (drop finished rows) only when at least this many rows remain.
_MIN_COMPACT_ROWS = 8

# Prefill runs over chunks of length-sorted rows of about this many tokens, so the
# activations stay in the CPU cache and little is spent on padding.
_PREFILL_CHUNK_TOKENS = 2048

# Decode groups (models with at most _GROUP_MAX_WEIGHT_BYTES of weights, where the KV cache
# dominates memory traffic): as many rows as keep a group's KV cache under
# _GROUP_CACHE_BYTES, but at least _MIN_GROUP_ROWS (the per-step Python overhead is paid once
# per group). Larger models decode all rows in lock step, for larger matmuls.
_GROUP_MAX_WEIGHT_BYTES = 4 << 20
_GROUP_CACHE_BYTES = 8 << 20
_MIN_GROUP_ROWS = 64


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
    _check_sampling(temperature, top_p)
    u = None
    if temperature > 0:
        u = _uniform(logits.shape[0], 1, generator, logits.device)
    return _sample_with_uniform(logits.float(), temperature, top_p, u)


def _check_sampling(temperature: float, top_p: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature ({temperature}) must be >= 0 (0 means greedy)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p ({top_p}) must be in (0, 1]; use 1.0 to disable nucleus sampling")


def _uniform(rows: int, cols: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(rows, cols) uniform numbers in [0, _U_MAX) from ``generator`` (drawn on its device)."""
    gen_device = generator.device if generator is not None else device
    u = torch.empty(rows, cols, device=gen_device).uniform_(0.0, _U_MAX, generator=generator)
    return u.to(device)


def _sample_with_uniform(
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


def _finish(out_tok: torch.Tensor, out_lp: torch.Tensor, n_steps: int, stop_ids: Sequence[int]) -> Generation:
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


def _check_args(max_new_tokens: int, max_positions: int | None, prompt_len: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 1")
    if max_positions is not None and prompt_len + max_new_tokens > max_positions:
        raise ValueError(
            f"longest prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_position_embeddings ({max_positions}); shorten the prompts or lower max_new_tokens"
        )


# --------------------------------------------------------------------------- weight views


class UnsupportedModel(Exception):
    """The fast decoder cannot run this model; use :func:`hf_generate`."""


def unwrap_peft(model: torch.nn.Module) -> torch.nn.Module:
    """The HF ``*ForCausalLM`` inside a PEFT ``PeftModel`` (LoRA layers stay in place), else ``model``."""
    if hasattr(model, "peft_config") and hasattr(model, "base_model"):
        inner = getattr(model.base_model, "model", None)
        if isinstance(inner, torch.nn.Module):
            return inner
    return model


def _linear(mod: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Effective ``(weight (out, in), bias)`` of a Linear, a GPT-2 Conv1D or a PEFT LoRA Linear."""
    if type(mod) is torch.nn.Linear:
        return mod.weight, mod.bias
    if type(mod).__name__ == "Conv1D" and hasattr(mod, "nf"):  # transformers' GPT-2 Conv1D: x @ W + b
        return mod.weight.t(), mod.bias
    if hasattr(mod, "base_layer") and hasattr(mod, "lora_A") and hasattr(mod, "lora_B"):
        w, b = _linear(mod.base_layer)
        if getattr(mod, "disable_adapters", False) or getattr(mod, "merged", False):
            return w, b
        if getattr(mod, "fan_in_fan_out", False):
            raise UnsupportedModel("LoRA with fan_in_fan_out")
        for name in mod.active_adapters:
            if name not in mod.lora_A:
                continue
            if getattr(mod, "use_dora", {}).get(name, False):
                raise UnsupportedModel("DoRA adapters")
            a_mod, b_mod = mod.lora_A[name], mod.lora_B[name]
            if type(a_mod) is not torch.nn.Linear or type(b_mod) is not torch.nn.Linear:
                raise UnsupportedModel(f"LoRA adapter layers of type {type(a_mod).__name__}")
            s = mod.scaling[name]
            w = w + s * (b_mod.weight @ a_mod.weight)
            if b_mod.bias is not None:
                b = s * b_mod.bias if b is None else b + s * b_mod.bias
        return w, b
    raise UnsupportedModel(f"linear layer of type {type(mod).__name__}")


def _transposed(wb: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    return wb[0].t(), wb[1]


def _bias_or_zeros(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return b if b is not None else w.new_zeros(w.shape[0])


def _fuse_qkv(q, k, v, n_kv: int, head_dim: int, scale: float, rope: bool):
    """Fused ``(W, b)`` with rows ordered per kv head g: ``[q heads of g, k_g, v_g]``.

    The query rows are multiplied by the attention ``scale``. With ``rope``, the features
    of every q and k head are reordered ``[0, d/2, 1, d/2 + 1, ...]`` so consecutive pairs
    ``(x_i, x_{i+d/2})`` are the (real, imaginary) parts HF's ``rotate_half`` rotates.
    """
    (wq, bq), (wk, bk), (wv, bv) = q, k, v
    d_in = wq.shape[1]
    rep = wq.shape[0] // (n_kv * head_dim)
    wq, bq = wq * scale, _bias_or_zeros(wq, bq) * scale
    bk, bv = _bias_or_zeros(wk, bk), _bias_or_zeros(wv, bv)
    perm = None
    if rope:
        half = head_dim // 2
        perm = torch.stack([torch.arange(half), torch.arange(half, head_dim)], 1).reshape(-1).to(wq.device)
    ws, bs = [], []
    for i, (w, b, n) in enumerate(((wq, bq, rep), (wk, bk, 1), (wv, bv, 1))):
        w, b = w.reshape(n_kv, n, head_dim, d_in), b.reshape(n_kv, n, head_dim)
        if perm is not None and i < 2:  # values keep their feature order
            w, b = w[:, :, perm], b[:, :, perm]
        ws.append(w)
        bs.append(b)
    w = torch.cat(ws, 1).reshape(-1, d_in)  # (Hk (rep + 2) hd, D)
    b = torch.cat(bs, 1).reshape(-1)
    has_bias = any(x is not None for x in (q[1], k[1], v[1]))
    return w, (b if has_bias else None)


@dataclass
class _Layer:
    norm1: tuple[torch.Tensor, torch.Tensor | None]
    qkv: tuple[torch.Tensor, torch.Tensor | None]  # fused, see _fuse_qkv
    o: tuple[torch.Tensor, torch.Tensor | None]  # (W^T (H hd, D), b)
    norm2: tuple[torch.Tensor, torch.Tensor | None]
    up: tuple[torch.Tensor, torch.Tensor | None]  # gate||up when gated, else fc
    down: tuple[torch.Tensor, torch.Tensor | None]  # (W^T (I, D), b)


@dataclass
class _Net:
    """A read-only view of a decoder-only transformer's weights for the fast decoder."""

    rope: bool
    rms: bool
    gated: bool
    act: Callable[[torch.Tensor], torch.Tensor]
    eps: float
    eps_t: torch.Tensor  # eps as a 0-d tensor on the model's device
    n_heads: int
    n_kv: int
    head_dim: int
    inter: int
    embed: torch.Tensor  # (V, D)
    pos_embed: torch.Tensor | None  # (P, D) learned absolute positions
    inv_freq: torch.Tensor | None  # (head_dim / 2,)
    rope_scale: float
    layers: list[_Layer]
    final_norm: tuple[torch.Tensor, torch.Tensor | None]
    head: tuple[torch.Tensor, torch.Tensor | None]  # (W (V, D), b)
    max_positions: int | None
    qkv0: torch.Tensor | None = None  # (V, F) first-layer Q/K/V of every token id (rope models, small V)


# Precompute the first layer's Q/K/V per token id when the table has at most this many entries.
_QKV0_TABLE_MAX = 1 << 21

_ROPE_FAMILY = ("qwen2", "llama", "mistral")


def fast_unsupported_reason(model: torch.nn.Module) -> str | None:
    """``None`` when :func:`fast_generate` can run ``model``, else why not (a short phrase)."""
    try:
        _extract(model, check_only=True)
    except UnsupportedModel as e:
        return str(e)
    return None


def _extract(model: torch.nn.Module, check_only: bool = False) -> _Net | None:
    inner = unwrap_peft(model)
    cfg = getattr(inner, "config", None)
    mtype = getattr(cfg, "model_type", None)
    if mtype not in _ROPE_FAMILY and mtype != "gpt2":
        raise UnsupportedModel(f"model_type {mtype!r} (fast path covers {list(_ROPE_FAMILY) + ['gpt2']})")
    dtype = next(inner.parameters()).dtype
    if dtype != torch.float32:
        raise UnsupportedModel(f"dtype {dtype} (fast path is float32 only)")
    if mtype == "gpt2":
        return _extract_gpt2(inner, cfg, check_only)
    return _extract_rope(inner, cfg, check_only)


def _extract_rope(model: torch.nn.Module, cfg, check_only: bool) -> _Net | None:
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        raise UnsupportedModel("sliding-window attention")
    if cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None):
        raise UnsupportedModel("sliding-window attention")
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        raise UnsupportedModel("non-full attention layers")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "linear", "llama3", "yarn"):
        raise UnsupportedModel(f"rope_type {rope_type!r}")
    if getattr(cfg, "pretraining_tp", 1) > 1:
        raise UnsupportedModel("pretraining_tp > 1")
    core = model.model
    h, hk = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // h
    layers = list(core.layers)
    a0 = layers[0].self_attn
    if any(hasattr(a0, n) for n in ("q_norm", "k_norm")):
        raise UnsupportedModel("query/key norms")
    if hd % 2:
        raise UnsupportedModel(f"odd head_dim {hd}")
    if check_only:
        for layer in layers:
            at, mlp = layer.self_attn, layer.mlp
            for m in (at.q_proj, at.k_proj, at.v_proj, at.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                _linear(m)
        _linear(model.lm_head)
        return None
    scale = float(getattr(a0, "scaling", hd**-0.5))
    out = []
    for layer in layers:
        at, mlp = layer.self_attn, layer.mlp
        gw, gb = _linear(mlp.gate_proj)
        uw, ub = _linear(mlp.up_proj)
        up_b = (
            None if gb is None and ub is None else torch.cat([_bias_or_zeros(gw, gb), _bias_or_zeros(uw, ub)])
        )
        qkv_w, qkv_b = _fuse_qkv(
            _linear(at.q_proj), _linear(at.k_proj), _linear(at.v_proj), hk, hd, scale, True
        )
        # RMSNorm gains are folded into the matmul that follows: (x * g) @ W^T == x @ (W * g)^T
        out.append(
            _Layer(
                norm1=(layer.input_layernorm.weight, None),
                qkv=(qkv_w * layer.input_layernorm.weight, qkv_b),
                o=_transposed(_linear(at.o_proj)),
                norm2=(layer.post_attention_layernorm.weight, None),
                up=(torch.cat([gw, uw]) * layer.post_attention_layernorm.weight, up_b),
                down=_transposed(_linear(mlp.down_proj)),
            )
        )
    rot = core.rotary_emb
    net = _Net(
        rope=True,
        rms=True,
        gated=True,
        act=layers[0].mlp.act_fn,
        eps=float(getattr(cfg, "rms_norm_eps", 1e-6)),
        eps_t=torch.tensor(float(getattr(cfg, "rms_norm_eps", 1e-6)), device=core.norm.weight.device),
        n_heads=h,
        n_kv=hk,
        head_dim=hd,
        inter=out[0].up[0].shape[0] // 2,
        embed=core.embed_tokens.weight,
        pos_embed=None,
        inv_freq=rot.inv_freq,
        rope_scale=float(getattr(rot, "attention_scaling", 1.0)),
        layers=out,
        final_norm=(core.norm.weight, None),
        head=_linear(model.lm_head),
        max_positions=None,
    )
    # With rotary positions the first layer's input is the token embedding alone, so its
    # normalised Q/K/V projection is a function of the token id: one (V, F) table per call.
    emb, (w0, b0) = net.embed, out[0].qkv
    if emb.shape[0] * w0.shape[0] <= _QKV0_TABLE_MAX:
        net.qkv0 = F.linear(_norm(net, emb, None), w0, b0)
    return net


def _extract_gpt2(model: torch.nn.Module, cfg, check_only: bool) -> _Net | None:
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(
        cfg, "reorder_and_upcast_attn", False
    ):
        raise UnsupportedModel("GPT-2 scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn")
    core = model.transformer
    if check_only:
        for blk in core.h:
            for m in (blk.attn.c_attn, blk.attn.c_proj, blk.mlp.c_fc, blk.mlp.c_proj):
                _linear(m)
        _linear(model.lm_head)
        return None
    h, d = cfg.n_head, cfg.n_embd
    hd = d // h
    scale = hd**-0.5 if cfg.scale_attn_weights else 1.0
    act = core.h[0].mlp.act
    if cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh"):
        act = _gelu_tanh  # same formula as HF's NewGELUActivation, one kernel
    out = []
    for blk in core.h:
        w, b = _linear(blk.attn.c_attn)  # (3D, D) rows [q; k; v]
        bb = _bias_or_zeros(w, b)
        parts = [(w[i * d : (i + 1) * d], None if b is None else bb[i * d : (i + 1) * d]) for i in range(3)]
        out.append(
            _Layer(
                norm1=(blk.ln_1.weight, blk.ln_1.bias),
                qkv=_fuse_qkv(*parts, n_kv=h, head_dim=hd, scale=scale, rope=False),
                o=_transposed(_linear(blk.attn.c_proj)),
                norm2=(blk.ln_2.weight, blk.ln_2.bias),
                up=_linear(blk.mlp.c_fc),
                down=_transposed(_linear(blk.mlp.c_proj)),
            )
        )
    return _Net(
        rope=False,
        rms=False,
        gated=False,
        act=act,
        eps=float(cfg.layer_norm_epsilon),
        eps_t=torch.tensor(float(cfg.layer_norm_epsilon), device=core.ln_f.weight.device),
        n_heads=h,
        n_kv=h,
        head_dim=hd,
        inter=out[0].up[0].shape[0],
        embed=core.wte.weight,
        pos_embed=core.wpe.weight,
        inv_freq=None,
        rope_scale=1.0,
        layers=out,
        final_norm=(core.ln_f.weight, core.ln_f.bias),
        head=_linear(model.lm_head),
        max_positions=int(cfg.n_positions),
    )


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# --------------------------------------------------------------------------- fast decoder


def fast_generate(
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
    """Sample completions for all ``prompts`` at once with a static KV cache (see module docstring).

    Prompts of different lengths are left-padded; position ids count real tokens from 0
    in every row (as :func:`positions_from_mask`), so the log-probs match a right-padded
    forward of the same tokens. A row stops after emitting a token in ``stop_ids``; its
    later entries are ``pad_id`` with log-prob 0. ``logits_processor`` always sees the
    full batch in the original row order (rows that already stopped included; their
    output is ignored). Raises :class:`UnsupportedModel` for other models.
    """
    _check_sampling(temperature, top_p)
    with torch.inference_mode():
        net = _extract(model)
        # Work on the prompts sorted longest first, so prefill chunks are contiguous row ranges.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        ids, mask = left_pad([prompts[i] for i in order], pad_id, net.embed.device)
        _check_args(max_new_tokens, net.max_positions, ids.shape[1])
        b, tp = ids.shape
        device = ids.device
        sorted_ = order != list(range(b))
        order_t = torch.as_tensor(order, device=device)
        inv_t = torch.argsort(order_t)  # original row j is sorted row inv[j]
        state = _State(net, ids.shape[0], tp + max_new_tokens, device)
        if logits_processor is None and temperature not in (0.0, 1.0):
            # the processor must see raw logits; otherwise fold 1 / temperature into the head
            state.head = _head(net, 1.0 / temperature)
            temperature = 1.0
        logits = _prefill(net, state, ids, mask)
        out_tok = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros((b, max_new_tokens), dtype=torch.float32, device=device)
        sampling = (temperature, top_p, generator, list(stop_ids), pad_id)
        if logits_processor is not None:
            proc = logits_processor
            if sorted_:

                def proc(step: int, toks: torch.Tensor, lg: torch.Tensor) -> torch.Tensor:
                    return logits_processor(step, toks[inv_t], lg[inv_t])[order_t]

            n_steps = _decode_rows(net, state, 0, b, tp, logits, out_tok, out_lp, sampling, proc)
        else:
            g = b
            if sum(p.numel() * p.element_size() for p in model.parameters()) <= _GROUP_MAX_WEIGHT_BYTES:
                g = max(_MIN_GROUP_ROWS, _GROUP_CACHE_BYTES // max(state.bytes_per_row(), 1))
                g = -(-b // -(-b // g))  # balanced: ceil(b / number of groups)
            n_steps = 0
            for s in range(0, b, g):
                e = min(b, s + g)
                n = _decode_rows(net, state, s, e, tp, logits[s:e], out_tok[s:e], out_lp[s:e], sampling, None)
                n_steps = max(n_steps, n)
        if sorted_:
            out_tok, out_lp = out_tok[inv_t], out_lp[inv_t]
        return _finish(out_tok, out_lp, n_steps, stop_ids)


class _State:
    """Per-call buffers: KV caches, key-pad bias, rotary table, next positions."""

    def __init__(self, net: _Net, b: int, t_max: int, device: torch.device) -> None:
        hk, hd = net.n_kv, net.head_dim
        dtype = net.embed.dtype
        self.b, self.t_max = b, t_max
        # keys transposed (B Hk, hd, T) so q @ K^T reads them with unit stride; values (B Hk, T, hd)
        self.kv = [
            (
                torch.empty(b * hk, hd, t_max, device=device, dtype=dtype),
                torch.empty(b * hk, t_max, hd, device=device, dtype=dtype),
            )
            for _ in net.layers
        ]
        self.bias = torch.zeros(b * hk, 1, t_max, device=device, dtype=dtype)  # -inf on left pads
        self.rope = None
        if net.rope:
            pos = torch.arange(t_max, device=device, dtype=torch.float32)
            ang = torch.outer(pos, net.inv_freq.to(device=device, dtype=torch.float32))  # (T, hd/2), as HF
            self.rope = torch.polar(torch.full_like(ang, net.rope_scale), ang)  # cos + i sin
        self.cur = torch.zeros(b, dtype=torch.long, device=device)  # position of the next token
        self.head = _head(net, 1.0)  # final norm + LM head (see _head)

    def bytes_per_row(self) -> int:
        """KV-cache bytes of one prompt row (all layers)."""
        return sum(k.numel() + v.numel() for k, v in self.kv) * self.kv[0][0].element_size() // self.b


def _norm(net: _Net, x: torch.Tensor, wb) -> torch.Tensor:
    """LayerNorm (GPT-2), or RMSNorm ``x / sqrt(mean(x^2) + eps)`` (its gain folded into the next matmul)."""
    if net.rms:
        n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.rsqrt(torch.addcmul(net.eps_t, n, n, value=1.0 / x.shape[-1]))
    return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], net.eps)


def _head(net: _Net, inv_temp: float) -> tuple:
    """Final-norm params and LM head, with ``1 / temperature`` folded in: ``(norm (w, b), W, b)``."""
    (w, b), (hw, hb) = net.final_norm, net.head
    if inv_temp != 1.0:
        w = w * inv_temp
        b = None if b is None else b * inv_temp
        hb = None if hb is None else hb * inv_temp
    return (w, b), hw, hb


def _final_logits(net: _Net, head: tuple, x: torch.Tensor) -> torch.Tensor:
    """Final norm + LM head, ``head`` from :func:`_head`: (R, D) -> (R, V) logits / temperature."""
    h = _norm(net, x, head[0])
    if net.rms:
        h = h * head[0][0]
    return F.linear(h, head[1], head[2])


def _residual_linear(x: torch.Tensor, a: torch.Tensor, wb) -> torch.Tensor:
    """``x + a @ W^T + b`` for ``x`` (R, D), ``a`` (R, K), ``wb = (W^T, b)``; residual fused into addmm."""
    y = torch.addmm(x, a, wb[0])
    return y if wb[1] is None else y.add_(wb[1])


def _mlp_act(net: _Net, layer: _Layer, h: torch.Tensor) -> torch.Tensor:
    u = F.linear(h, *layer.up)
    if net.gated:
        return net.act(u[..., : net.inter]) * u[..., net.inter :]
    return net.act(u)


def _prefill_chunks(lens: list[int], budget: int) -> list[tuple[int, int, int]]:
    """Split rows sorted longest first into ``(start, end, padded length)`` chunks of <= budget tokens."""
    chunks, i = [], 0
    while i < len(lens):
        width = lens[i]
        n = max(1, budget // width)
        chunks.append((i, min(len(lens), i + n), width))
        i += n
    return chunks


def _prefill(net: _Net, st: _State, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run the prompts (sorted longest first), fill the caches' first Tp columns and the pad bias.

    Returns the last-position logits (B, V).
    """
    b, tp = ids.shape
    h, hk, hd = net.n_heads, net.n_kv, net.head_dim
    rep = h // hk
    device = ids.device
    dtype = net.embed.dtype
    pos = positions_from_mask(mask)  # (B, Tp)
    st.cur = pos[:, -1] + 1
    lens = mask.sum(1).tolist()
    # Columns left of every chunk's own padded width are never written; they are pads (zeroed, masked).
    lo = tp - min(lens)
    if lo > 0:
        for kc, vc in st.kv:
            kc[:, :, :lo].zero_()
            vc[:, :lo].zero_()
    st.bias.view(b, hk, st.t_max)[:, :, :tp].masked_fill_((mask == 0)[:, None, :], float("-inf"))
    kv4 = [(kc.view(b, hk, hd, st.t_max), vc.view(b, hk, st.t_max, hd)) for kc, vc in st.kv]
    if any(lens[i] < lens[i + 1] for i in range(b - 1)):
        raise AssertionError("prefill expects prompts sorted by decreasing length")
    logits = None
    for r0, r1, w in _prefill_chunks(lens, _PREFILL_CHUNK_TOKENS):
        n = r1 - r0
        sl = slice(tp - w, tp)
        ids_c, mask_c, pos_c = ids[r0:r1, sl], mask[r0:r1, sl], pos[r0:r1, sl]
        x = F.embedding(ids_c, net.embed).view(n * w, -1)  # (n w, D)
        if net.pos_embed is not None:
            x = x + F.embedding(pos_c, net.pos_embed).view(n * w, -1)
        if st.rope is not None:
            rot = st.rope[pos_c].view(n, w, 1, 1, hd // 2)
        ar = torch.arange(w, device=device)
        # causal, key not a pad; a left-pad query sees only itself, so no softmax row is empty (no NaN)
        allowed = (ar[None, :] <= ar[:, None])[None] & (
            (mask_c[:, None, :] == 1) | torch.eye(w, dtype=torch.bool, device=device)[None]
        )
        amask = torch.zeros(n, 1, w, w, device=device, dtype=dtype).masked_fill_(
            ~allowed[:, None], float("-inf")
        )
        n_layers = len(net.layers)
        for li, (layer, (kc, vc)) in enumerate(zip(net.layers, kv4)):
            if li == 0 and net.qkv0 is not None:
                qkv = F.embedding(ids_c, net.qkv0).view(n, w, hk, rep + 2, hd)
            else:
                qkv = F.linear(_norm(net, x, layer.norm1), *layer.qkv).view(n, w, hk, rep + 2, hd)
            if st.rope is not None:
                qk = qkv[:, :, :, : rep + 1].reshape(n, w, hk, rep + 1, hd // 2, 2)
                qk = torch.view_as_real(torch.view_as_complex(qk) * rot).view(n, w, hk, rep + 1, hd)
            else:
                qk = qkv[:, :, :, : rep + 1]
            q = qk[:, :, :, :rep].reshape(n, w, h, hd).transpose(1, 2)  # (n, H, w, hd)
            k = qk[:, :, :, rep].transpose(1, 2)  # (n, Hk, w, hd)
            v = qkv[:, :, :, rep + 1].transpose(1, 2)
            kc[r0:r1, :, :, sl] = k.transpose(2, 3)
            vc[r0:r1, :, sl] = v
            if li == n_layers - 1:
                # Last layer: only the last position feeds the logits; the others only needed K/V.
                q, am, x = q[:, :, -1:], amask[:, :, -1:], x.view(n, w, -1)[:, -1]
                att = F.scaled_dot_product_attention(q, k, v, attn_mask=am, scale=1.0, enable_gqa=rep > 1)
                m = n
            else:
                att = F.scaled_dot_product_attention(q, k, v, attn_mask=amask, scale=1.0, enable_gqa=rep > 1)
                m = n * w
            x = _residual_linear(x, att.transpose(1, 2).reshape(m, h * hd), layer.o)
            x = _residual_linear(x, _mlp_act(net, layer, _norm(net, x, layer.norm2)), layer.down)
        lg = _final_logits(net, st.head, x)  # (n, V)
        if n == b:
            return lg
        if logits is None:
            logits = lg.new_empty(b, lg.shape[1])
        logits[r0:r1] = lg
    return logits


def _decode_rows(net, st, s, e, tp, logits, out_tok, out_lp, sampling, processor) -> int:
    """Sample for rows ``[s, e)`` (views of the state), step by step; return the number of steps taken."""
    temperature, top_p, generator, stop_ids, pad_id = sampling
    h, hk, hd = net.n_heads, net.n_kv, net.head_dim
    rep = h // hk
    half = hd // 2
    device = logits.device
    max_new = out_tok.shape[1]
    b = e - s
    kv = [(kc[s * hk : e * hk], vc[s * hk : e * hk]) for kc, vc in st.kv]
    bias = st.bias[s * hk : e * hk]
    cur = st.cur[s:e]
    rope = st.rope
    stop_t = torch.as_tensor(stop_ids, dtype=torch.long, device=device) if stop_ids else None
    rows = None  # original row (within [s, e)) of each live row once compacted
    done = torch.zeros(b, dtype=torch.bool, device=device)
    layers = [(ly, kc, vc) for ly, (kc, vc) in zip(net.layers, kv)]
    embed, pos_embed, qkv0, head = net.embed, net.pos_embed, net.qkv0, st.head
    u_all = _uniform(b, max_new, generator, device) if temperature > 0 else None  # (R, T_new)
    n_steps = 0
    for step in range(max_new):
        if processor is not None:
            if rows is None:
                logits = processor(step, out_tok[:, :step], logits.float())
            else:
                big = torch.zeros(b, logits.shape[1], device=device, dtype=torch.float32)
                big[rows] = logits.float()
                logits = processor(step, out_tok[:, :step], big)[rows]
        u = None if u_all is None else u_all[:, step : step + 1]
        tok, lp = _sample_with_uniform(logits.float(), temperature, top_p, u)
        if step:
            tok.masked_fill_(done, pad_id)
            lp.masked_fill_(done, 0.0)
        if rows is None:
            out_tok[:, step] = tok
            out_lp[:, step] = lp
        else:
            out_tok[:, step].index_copy_(0, rows, tok)
            out_lp[:, step].index_copy_(0, rows, lp)
        n_steps = step + 1
        if n_steps == max_new:
            break
        if stop_t is not None:
            done |= torch.isin(tok, stop_t)
            r = done.shape[0]
            n_done = int(done.sum())
            if n_done == r:
                break
            if n_done and r - n_done <= r // 2 and r >= _MIN_COMPACT_ROWS:
                keep = (~done).nonzero().squeeze(1)
                r = keep.shape[0]
                layers = [
                    (
                        ly,
                        kc.view(-1, hk, hd, st.t_max).index_select(0, keep).view(r * hk, hd, st.t_max),
                        vc.view(-1, hk, st.t_max, hd).index_select(0, keep).view(r * hk, st.t_max, hd),
                    )
                    for ly, kc, vc in layers
                ]
                bias = bias.view(-1, hk, st.t_max).index_select(0, keep).view(r * hk, 1, st.t_max)
                rows = keep if rows is None else rows[keep]
                cur, tok, done = cur[keep], tok[keep], done[keep]
                u_all = None if u_all is None else u_all[keep]
        # one decode step for the R live rows
        r = tok.shape[0]
        t = tp + step  # cache column of this token
        x = F.embedding(tok, embed)  # (R, D)
        if rope is None:
            x = x + F.embedding(cur, pos_embed)
        else:
            rot = rope.index_select(0, cur).view(r, 1, 1, half)  # (R, 1, 1, hd/2) complex
        bias_s = bias[:, :, : t + 1]  # (R Hk, 1, t+1)
        for li, (ly, kc, vc) in enumerate(layers):
            if li == 0 and qkv0 is not None:
                qkv = F.embedding(tok, qkv0).view(r, hk, rep + 2, hd)
            else:
                qkv = F.linear(_norm(net, x, ly.norm1), *ly.qkv).view(r, hk, rep + 2, hd)
            if rope is not None:
                qk = torch.view_as_complex(qkv[:, :, : rep + 1].reshape(r, hk, rep + 1, half, 2))
                qk = torch.view_as_real(qk * rot).view(r * hk, rep + 1, hd)
            else:
                qk = qkv[:, :, : rep + 1].reshape(r * hk, rep + 1, hd)
            kc[:, :, t] = qk[:, rep]
            vc[:, t] = qkv[:, :, rep + 1].reshape(r * hk, hd)
            att = torch.softmax(torch.baddbmm(bias_s, qk[:, :rep], kc[:, :, : t + 1]), -1)  # (R Hk, rep, t+1)
            att = torch.bmm(att, vc[:, : t + 1])  # (R Hk, rep, hd)
            x = _residual_linear(x, att.view(r, h * hd), ly.o)
            x = _residual_linear(x, _mlp_act(net, ly, _norm(net, x, ly.norm2)), ly.down)
        logits = _final_logits(net, head, x)  # (R, V)
        cur = cur + 1
    return n_steps


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
        _check_args(max_new_tokens, max_pos, ids.shape[1])
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
        return _finish(out_tok, out_lp, n_steps, stop_ids)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument of the HF forward: ``cache`` (transformers 5) or ``past_key_values``."""
    params = inspect.signature(unwrap_peft(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)
