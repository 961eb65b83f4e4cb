"""From a scored tree to per-agent training batches.

A sample's agent is the node's agent: ``tree.agent_names[tree.agent[i]]`` is the only thing that
decides which ``SampleBatch`` a node lands in. Rows keep the order of ``nodes``.

Shape legend: ``N`` samples (rows), ``T`` tokens (prompt + completion, right-padded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

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
        prompts = [np.asarray(p.prompt_ids) for p in payloads]
        completions = [np.asarray(p.completion_ids) for p in payloads]
        input_ids, attn, loss = pack_rows(prompts, completions, pad_id)
        n, t_max = input_ids.shape
        lp = np.array([len(x) for x in prompts], dtype=np.int64)
        lc = np.array([len(x) for x in completions], dtype=np.int64)
        is_comp = loss > 0
        old = np.zeros((n, t_max), dtype=np.float32)
        old[is_comp] = np.concatenate([np.asarray(p.logprobs, dtype=np.float64) for p in payloads])
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
            bad_row = np.nonzero(is_comp)[0][np.flatnonzero(~np.isfinite(flat))[0]]
            raise ValueError(f"node {int(ids[bad_row])} has a non-finite advantage")
        adv_mat[is_comp] = flat
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


def right_pad(rows: Sequence[np.ndarray], value: float = 0, dtype=np.int64) -> np.ndarray:
    """``(N, T_max)`` array holding each 1-D row at the left of its line, ``value`` after it."""
    lens = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), int(lens.max(initial=0))), value, dtype=dtype)
    if lens.sum():
        out[np.arange(out.shape[1])[None, :] < lens[:, None]] = np.concatenate(
            [np.asarray(r).reshape(-1) for r in rows]
        )
    return out


def pack_rows(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt + completion rows, right-padded: ``input_ids`` (N, T) int64 (``pad_id`` after each row),
    ``attention_mask`` (N, T) int64 (1 on real tokens), ``loss_mask`` (N, T) float32 (1 on the
    completion's tokens)."""
    rows = [
        np.concatenate([np.asarray(p, dtype=np.int64), np.asarray(c, dtype=np.int64)])
        for p, c in zip(prompts, completions)
    ]
    input_ids = right_pad(rows, pad_id, np.int64)
    attn = right_pad([np.ones(len(r), np.int64) for r in rows], 0, np.int64)
    loss = right_pad(
        [
            np.concatenate([np.zeros(len(p), np.float32), np.ones(len(c), np.float32)])
            for p, c in zip(prompts, completions)
        ],
        0.0,
        np.float32,
    )
    return input_ids, attn, loss


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


class SampleBuffer:
    """FIFO of one agent's samples, stored unpadded; ``pop`` re-pads a batch of the oldest rows.

    For recipes whose agents contribute a varying number of samples per step (an agent chosen less
    often by a search still trains on full batches). ``state_dict``/``load_state_dict`` let a
    checkpoint carry the buffer across a crash.
    """

    KEYS = ("input_ids", "loss_mask", "old_logprobs", "advantages")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity ({capacity}) must be >= 1")
        self.capacity = capacity
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, batch: SampleBatch) -> None:
        """Append every row of ``batch`` (mutates); beyond ``capacity`` the oldest rows go."""
        lens = batch.attention_mask.sum(1).tolist()
        for i, n in enumerate(lens):
            row = {k: getattr(batch, k)[i, :n].clone() for k in self.KEYS}
            row["node_id"] = int(batch.node_ids[i])
            self.rows.append(row)
        if len(self.rows) > self.capacity:
            extra = len(self.rows) - self.capacity
            self.dropped += extra
            del self.rows[:extra]

    def pop(self, n: int, pad_id: int = 0) -> SampleBatch:
        """Remove and return the ``n`` oldest rows as a right-padded ``SampleBatch``."""
        take, self.rows = self.rows[:n], self.rows[n:]

        def pad(key: str, value: float, dtype) -> torch.Tensor:
            return torch.from_numpy(right_pad([r[key].numpy() for r in take], value, dtype))

        return SampleBatch(
            input_ids=pad("input_ids", pad_id, np.int64),
            attention_mask=torch.from_numpy(
                right_pad([np.ones(len(r["input_ids"]), np.int64) for r in take])
            ),
            loss_mask=pad("loss_mask", 0.0, np.float32),
            old_logprobs=pad("old_logprobs", 0.0, np.float32),
            advantages=pad("advantages", 0.0, np.float32),
            node_ids=torch.tensor([r["node_id"] for r in take], dtype=torch.long),
        )

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "rows": [dict(r) for r in self.rows], "dropped": self.dropped}

    def load_state_dict(self, d: dict) -> None:
        self.capacity = int(d["capacity"])
        self.rows = [dict(r) for r in d["rows"]]
        self.dropped = int(d["dropped"])
