"""Views of an HF causal LM's weights for the fast decoder: Q/K/V fused per key/value head, the
attention scale and the RMSNorm gains folded in, LoRA adapters merged on the fly
(``W + scaling * B @ A``). Supported: Qwen2 / Llama / Mistral (rotary) and GPT-2, float32.

The views read the module's own parameter tensors on every call, so the decoder always samples from
the latest trained weights; only small derived tensors are rebuilt per call.

Shape legend: ``D`` hidden size, ``H`` heads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

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
class FusedLayer:
    norm1: tuple[torch.Tensor, torch.Tensor | None]
    qkv: tuple[torch.Tensor, torch.Tensor | None]  # fused, see _fuse_qkv
    o: tuple[torch.Tensor, torch.Tensor | None]  # (W^T (H hd, D), b)
    norm2: tuple[torch.Tensor, torch.Tensor | None]
    up: tuple[torch.Tensor, torch.Tensor | None]  # gate||up when gated, else fc
    down: tuple[torch.Tensor, torch.Tensor | None]  # (W^T (I, D), b)


@dataclass
class FusedNet:
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
    layers: list[FusedLayer]
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
        extract_net(model, check_only=True)
    except UnsupportedModel as e:
        return str(e)
    return None


def extract_net(model: torch.nn.Module, check_only: bool = False) -> FusedNet | None:
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


def _extract_rope(model: torch.nn.Module, cfg, check_only: bool) -> FusedNet | None:
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
            FusedLayer(
                norm1=(layer.input_layernorm.weight, None),
                qkv=(qkv_w * layer.input_layernorm.weight, qkv_b),
                o=_transposed(_linear(at.o_proj)),
                norm2=(layer.post_attention_layernorm.weight, None),
                up=(torch.cat([gw, uw]) * layer.post_attention_layernorm.weight, up_b),
                down=_transposed(_linear(mlp.down_proj)),
            )
        )
    rot = core.rotary_emb
    net = FusedNet(
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
        net.qkv0 = F.linear(apply_norm(net, emb, None), w0, b0)
    return net


def _extract_gpt2(model: torch.nn.Module, cfg, check_only: bool) -> FusedNet | None:
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
            FusedLayer(
                norm1=(blk.ln_1.weight, blk.ln_1.bias),
                qkv=_fuse_qkv(*parts, n_kv=h, head_dim=hd, scale=scale, rope=False),
                o=_transposed(_linear(blk.attn.c_proj)),
                norm2=(blk.ln_2.weight, blk.ln_2.bias),
                up=_linear(blk.mlp.c_fc),
                down=_transposed(_linear(blk.mlp.c_proj)),
            )
        )
    return FusedNet(
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


def apply_norm(net: FusedNet, x: torch.Tensor, wb) -> torch.Tensor:
    """LayerNorm (GPT-2), or RMSNorm ``x / sqrt(mean(x^2) + eps)`` (its gain folded into the next matmul)."""
    if net.rms:
        n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.rsqrt(torch.addcmul(net.eps_t, n, n, value=1.0 / x.shape[-1]))
    return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], net.eps)
