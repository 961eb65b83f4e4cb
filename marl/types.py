"""Data records that travel between scenarios, the turn tree, policies and learners.

Shape legend used across the project: ``B`` prompts or episodes, ``G`` group size,
``A`` agents, ``T`` tokens, ``N`` nodes, ``K`` children.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Generation:
    """What one batched generation call returns, one row per prompt.

    ``tokens`` and ``logprobs`` are right-padded; ``lengths`` says how many
    entries of each row are real. ``logprobs`` are the log-probabilities of the
    sampled tokens under the *sampling* distribution (after temperature, top-p
    and any logits mask), which is the behaviour policy for off-policy
    corrections.
    """

    tokens: torch.Tensor  # (B, T) int64, right-padded with pad_id
    logprobs: torch.Tensor  # (B, T) float32, 0 on padding
    lengths: torch.Tensor  # (B,) int64, completion length incl. the stop token if any
    finish_reasons: list[str]  # B entries: "stop" (emitted a stop token) or "length"

    def completion(self, i: int) -> list[int]:
        return self.tokens[i, : int(self.lengths[i])].tolist()

    def turn(self, i: int, prompt_ids, *, text: str = "", data: dict[str, Any] | None = None) -> Turn:
        """Row ``i`` as a tree payload: the prompt, the completion, its sampling log-probs."""
        n = int(self.lengths[i])
        return Turn(
            prompt_ids=np.asarray(prompt_ids, dtype=np.int32),
            completion_ids=self.tokens[i, :n].numpy().astype(np.int32),
            logprobs=self.logprobs[i, :n].numpy().astype(np.float32),
            text=text,
            finish_reason=self.finish_reasons[i],
            data={} if data is None else data,
        )


@dataclass
class Turn:
    """Payload of one tree node: one LLM call (or one environment step)."""

    prompt_ids: np.ndarray  # (Tp,) int32
    completion_ids: np.ndarray  # (Tc,) int32
    logprobs: np.ndarray  # (Tc,) float32, sampling log-probs of completion_ids
    text: str = ""
    finish_reason: str = "stop"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SampleBatch:
    """Per-agent training samples: prompt + completion, right-padded.

    ``loss_mask`` is 1 on completion tokens that carry a gradient. ``old_logprobs``
    and ``advantages`` are aligned with ``input_ids`` (position t holds the value
    for token t; prompt positions hold 0). ``allowed_ids`` (optional, constrained
    decoding) lists at position t the token ids the sampler allowed for token t, padded
    with -1; a position whose entries are all -1 was sampled from the full vocabulary.
    The learner then scores token t under the softmax restricted to those ids, the
    distribution it was sampled from.
    """

    input_ids: torch.Tensor  # (N, T) int64
    attention_mask: torch.Tensor  # (N, T) int64
    loss_mask: torch.Tensor  # (N, T) float32
    old_logprobs: torch.Tensor  # (N, T) float32
    advantages: torch.Tensor  # (N, T) float32
    node_ids: torch.Tensor  # (N,) int64, the tree node each row came from
    allowed_ids: torch.Tensor | None = None  # (N, T, K) int64, -1 padded; None = no constraint

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, idx: torch.Tensor | list[int]) -> SampleBatch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return SampleBatch(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            loss_mask=self.loss_mask[idx],
            old_logprobs=self.old_logprobs[idx],
            advantages=self.advantages[idx],
            node_ids=self.node_ids[idx],
            allowed_ids=None if self.allowed_ids is None else self.allowed_ids[idx],
        )
