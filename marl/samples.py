"""From a scored tree to per-agent training batches.

A sample's agent is the node's agent: ``tree.agent_names[tree.agent[i]]`` is the only thing that
decides which ``SampleBatch`` a node lands in. Rows keep the order of ``nodes``.

Shape legend: ``N`` samples (rows), ``T`` tokens (prompt + completion, right-padded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from marl.credit.groups import unique_sorted
from marl.tree import TurnTree
from marl.types import SampleBatch

logger = logging.getLogger(__name__)


def tree_to_batches(
    tree: TurnTree,
    nodes: np.ndarray,
    advantages: np.ndarray | Sequence[np.ndarray],
    train_mask: np.ndarray | None = None,
    *,
    pad_id: int = 0,
) -> dict[str, SampleBatch]:
    """Per-agent ``SampleBatch`` built from the nodes' payloads.

    ``input_ids`` = prompt + completion, right-padded with ``pad_id``; ``attention_mask`` = 1 on real
    tokens; ``loss_mask`` = 1 on completion tokens; ``old_logprobs`` = the payload's sampling
    log-probs at completion positions; ``advantages`` = one scalar per node broadcast over its
    completion tokens (``(N_sel,)``) or one array per node aligned with its completion tokens; all
    prompt and padding positions hold 0. ``node_ids`` gives each row's node. When some payload
    carries ``data["allowed_ids"]`` (a ``(Tc, K)`` int array, -1 padded: the token ids constrained
    decoding allowed for each completion token), the batch gets ``allowed_ids`` ``(N, T, K_max)``
    aligned the same way (-1 elsewhere, i.e. unconstrained). Nodes with
    ``train_mask`` False (e.g. the MC-GRPO pivot) are left out entirely, so they count in no loss
    denominator. Every kept node needs an agent (>= 0) and a payload; the error names the node.
    """
    nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)
    n_sel = nodes.shape[0]
    if n_sel and (nodes.min() < 0 or nodes.max() >= len(tree)):
        raise IndexError(f"nodes must be ids in [0, {len(tree)}), got min {nodes.min()} max {nodes.max()}")
    if isinstance(advantages, torch.Tensor):
        advantages = advantages.detach().cpu().numpy()
    if isinstance(advantages, np.ndarray) and advantages.dtype != object:
        per_token = False
    else:
        per_token = any(np.ndim(a) > 0 for a in advantages)
    if per_token:
        adv_list = [np.asarray(a, dtype=np.float64).reshape(-1) for a in advantages]
        if len(adv_list) != n_sel:
            raise ValueError(f"{len(adv_list)} per-token advantage arrays for {n_sel} nodes")
    else:
        adv = np.asarray(advantages, dtype=np.float64)
        if adv.shape != (n_sel,):
            raise ValueError(f"advantages shape {adv.shape} != ({n_sel},) nodes")
    keep = np.ones(n_sel, dtype=bool) if train_mask is None else np.asarray(train_mask, dtype=bool)
    if keep.shape != (n_sel,):
        raise ValueError(f"train_mask shape {keep.shape} != ({n_sel},) nodes")

    agent = tree.agent[nodes]
    no_agent = keep & (agent < 0)
    if no_agent.any():
        i = int(nodes[np.flatnonzero(no_agent)[0]])
        raise ValueError(f"node {i} has no agent (agent = -1); only agent nodes can be training samples")

    out: dict[str, SampleBatch] = {}
    for a in unique_sorted(agent[keep]):  # loop over agents, not nodes
        rows = np.flatnonzero(keep & (agent == a))
        ids = nodes[rows]
        payloads = [tree.payloads[int(i)] for i in ids]
        for i, p in zip(ids, payloads):
            if p is None:
                raise ValueError(f"node {int(i)} (agent {tree.agent_names[a]!r}) has no payload to train on")
            if len(p.logprobs) != len(p.completion_ids):
                raise ValueError(
                    f"node {int(i)}: {len(p.logprobs)} log-probs for {len(p.completion_ids)} tokens"
                )
        lp = np.array([len(p.prompt_ids) for p in payloads], dtype=np.int64)
        lc = np.array([len(p.completion_ids) for p in payloads], dtype=np.int64)
        total = lp + lc
        n, t_max = rows.shape[0], int(total.max(initial=0))
        row_of = np.repeat(np.arange(n), total)
        starts = np.concatenate([[0], np.cumsum(total)[:-1]])
        col = np.arange(int(total.sum())) - np.repeat(starts, total)
        is_comp = col >= np.repeat(lp, total)
        tokens = (
            np.concatenate(
                [np.concatenate([np.asarray(p.prompt_ids), np.asarray(p.completion_ids)]) for p in payloads]
            ).astype(np.int64)
            if n
            else np.zeros(0, np.int64)
        )
        logp = np.concatenate([np.asarray(p.logprobs, dtype=np.float64) for p in payloads])

        input_ids = np.full((n, t_max), pad_id, dtype=np.int64)
        input_ids[row_of, col] = tokens
        attn = np.zeros((n, t_max), dtype=np.int64)
        attn[row_of, col] = 1
        loss = np.zeros((n, t_max), dtype=np.float32)
        loss[row_of[is_comp], col[is_comp]] = 1.0
        old = np.zeros((n, t_max), dtype=np.float32)
        old[row_of[is_comp], col[is_comp]] = logp
        adv_mat = np.zeros((n, t_max), dtype=np.float32)
        if per_token:
            tok_adv = [adv_list[r] for r in rows]
            for i, p, ta in zip(ids, payloads, tok_adv):
                if ta.shape[0] != len(p.completion_ids):
                    raise ValueError(
                        f"node {int(i)}: {ta.shape[0]} token advantages for {len(p.completion_ids)} tokens"
                    )
            flat = np.concatenate(tok_adv) if tok_adv else np.zeros(0)
        else:
            flat = np.repeat(adv[rows], lc)
        if not np.isfinite(flat).all():
            bad_row = row_of[is_comp][np.flatnonzero(~np.isfinite(flat))[0]]
            raise ValueError(f"node {int(ids[bad_row])} has a non-finite advantage")
        adv_mat[row_of[is_comp], col[is_comp]] = flat
        allowed = _allowed_ids(payloads, lp, n, t_max)
        name = tree.agent_names[int(a)]
        out[name] = SampleBatch(
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attn),
            loss_mask=torch.from_numpy(loss),
            old_logprobs=torch.from_numpy(old),
            advantages=torch.from_numpy(adv_mat),
            node_ids=torch.from_numpy(ids.copy()),
            allowed_ids=allowed,
        )
        logger.debug("agent %s: %d samples, T=%d", name, n, t_max)
    return out


def _allowed_ids(payloads: list, prompt_lens: np.ndarray, n: int, t_max: int) -> torch.Tensor | None:
    """(N, T, K) allowed token ids at the completion positions from ``payload.data["allowed_ids"]``
    (``(Tc, K)`` per payload, -1 padded), or None when no payload carries them."""
    arrays = [None if p.data is None else p.data.get("allowed_ids") for p in payloads]
    if all(a is None for a in arrays):
        return None
    k = max((int(np.asarray(a).shape[1]) for a in arrays if a is not None and np.asarray(a).size), default=1)
    out = np.full((n, t_max, max(k, 1)), -1, dtype=np.int64)
    for r, (a, p) in enumerate(zip(arrays, payloads)):
        if a is None:
            continue
        a = np.asarray(a, dtype=np.int64)
        tc = len(p.completion_ids)
        if a.ndim != 2 or a.shape[0] != tc:
            raise ValueError(f"allowed_ids of row {r} has shape {a.shape}; expected ({tc}, K)")
        start = int(prompt_lens[r])
        out[r, start : start + tc, : a.shape[1]] = a
    return torch.from_numpy(out)
