"""The fast batched decoder for small causal LMs: a static KV cache over fused weight views.

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

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from marl.policies.fused import FusedLayer, FusedNet, apply_norm, extract_net
from marl.policies.sampling import (
    LogitsProcessor,
    check_generation_args,
    check_sampling,
    finish_generation,
    left_pad,
    positions_from_mask,
    sample_with_uniform,
    uniform_draws,
)
from marl.types import Generation

logger = logging.getLogger(__name__)

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
    check_sampling(temperature, top_p)
    with torch.inference_mode():
        net = extract_net(model)
        # Work on the prompts sorted longest first, so prefill chunks are contiguous row ranges.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        ids, mask = left_pad([prompts[i] for i in order], pad_id, net.embed.device)
        check_generation_args(max_new_tokens, net.max_positions, ids.shape[1])
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
        return finish_generation(out_tok, out_lp, n_steps, stop_ids)


class _State:
    """Per-call buffers: KV caches, key-pad bias, rotary table, next positions."""

    def __init__(self, net: FusedNet, b: int, t_max: int, device: torch.device) -> None:
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


def _head(net: FusedNet, inv_temp: float) -> tuple:
    """Final-norm params and LM head, with ``1 / temperature`` folded in: ``(norm (w, b), W, b)``."""
    (w, b), (hw, hb) = net.final_norm, net.head
    if inv_temp != 1.0:
        w = w * inv_temp
        b = None if b is None else b * inv_temp
        hb = None if hb is None else hb * inv_temp
    return (w, b), hw, hb


def _final_logits(net: FusedNet, head: tuple, x: torch.Tensor) -> torch.Tensor:
    """Final norm + LM head, ``head`` from :func:`_head`: (R, D) -> (R, V) logits / temperature."""
    h = apply_norm(net, x, head[0])
    if net.rms:
        h = h * head[0][0]
    return F.linear(h, head[1], head[2])


def _residual_linear(x: torch.Tensor, a: torch.Tensor, wb) -> torch.Tensor:
    """``x + a @ W^T + b`` for ``x`` (R, D), ``a`` (R, K), ``wb = (W^T, b)``; residual fused into addmm."""
    y = torch.addmm(x, a, wb[0])
    return y if wb[1] is None else y.add_(wb[1])


def _mlp_act(net: FusedNet, layer: FusedLayer, h: torch.Tensor) -> torch.Tensor:
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


def _prefill(net: FusedNet, st: _State, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
                qkv = F.linear(apply_norm(net, x, layer.norm1), *layer.qkv).view(n, w, hk, rep + 2, hd)
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
            x = _residual_linear(x, _mlp_act(net, layer, apply_norm(net, x, layer.norm2)), layer.down)
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
    u_all = uniform_draws(b, max_new, generator, device) if temperature > 0 else None  # (R, T_new)
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
        tok, lp = sample_with_uniform(logits.float(), temperature, top_p, u)
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
                qkv = F.linear(apply_norm(net, x, ly.norm1), *ly.qkv).view(r, hk, rep + 2, hd)
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
            x = _residual_linear(x, _mlp_act(net, ly, apply_norm(net, x, ly.norm2)), ly.down)
        logits = _final_logits(net, head, x)  # (R, V)
        cur = cur + 1
    return n_steps
