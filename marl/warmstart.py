"""Supervised warm start of one agent: completion cross-entropy on (prompt, completion) pairs, with a
cache, for any scenario (MARS² code search, co-evolution, topology teams).

The loss is the token cross-entropy of the completion given the prompt,
``L = -Σ_t m_t log π(x_t | x_<t) / Σ_t m_t`` with ``m_t = 1`` on completion tokens (the completion
and the stop token) and 0 on the prompt. The result is cached under
``<cache_dir>/warmstart/<key>/<agent>/``; the caller's ``key`` hashes everything that determines it
(:func:`cache_key`), so a repeated run loads the weights instead of training again.

What each scenario teaches (its pairs) and its settings live with the scenario
(``search.warmstart``, ``games.coevolution_warm``, ``topologies.lm_team``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from marl.samples import pack_rows
from marl.seeding import derive_seed

logger = logging.getLogger(__name__)

OPTIMIZERS = ("separate", "agent")


@dataclass
class SupervisedSettings:
    """How one agent is warm-started (what :func:`warm_start_agent` reads; a scenario's own settings
    class may stand in for it if it has these fields and ``steps_for``)."""

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """(prompt, completion) pairs per step."""
    lr: float = 3e-3
    """Learning rate of the separate AdamW (ignored with optimizer=agent)."""
    weight_decay: float = 0.0
    """Weight decay of the separate AdamW."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value; 0 disables."""
    optimizer: str = "separate"
    """separate (a fresh AdamW, discarded afterwards) | agent (the agent's own optimizer and state)."""
    cache: bool = True
    """Reuse a cached warm start with the same key instead of training again."""

    def steps_for(self, name: str) -> int:
        """Optimizer steps of agent ``name`` (the same for every agent)."""
        return int(self.steps)

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"warm start optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"warm start: steps ({self.steps}) must be >= 0, batch_size ({self.batch_size}) >= 1, "
                f"lr ({self.lr}) > 0"
            )


def encode_pairs(
    pairs: Sequence[tuple[Any, str]], policy, *, max_prompt_tokens: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Token pairs: the prompt (``encode`` or ``encode_chat``, left-truncated to
    ``max_prompt_tokens`` when > 0) and the completion followed by the policy's stop token."""
    stop = policy.stop_ids[-1] if isinstance(pairs[0][0], list) else policy.eos_id
    prompts = policy.encode_prompts([p for p, _ in pairs], max_prompt_tokens)
    return [(p, policy.encode(completion) + [stop]) for p, (_, completion) in zip(prompts, pairs)]


def completion_cross_entropy(logprobs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """``-Σ m·log p / Σ m``: mean negative log-likelihood of the completion tokens."""
    return -(logprobs * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ``(input_ids, attention_mask, loss_mask)``, each ``(B, T)``."""
    ids, att, lm = pack_rows([p for p, _ in pairs], [c for _, c in pairs], pad_id)
    return torch.from_numpy(ids), torch.from_numpy(att), torch.from_numpy(lm)


def supervised_warm_start(
    policy,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    steps: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """``steps`` optimizer steps of completion cross-entropy on batches drawn by shuffling ``pairs``
    (epoch after epoch, order from ``generator``). Returns first/last loss and wall time."""
    if not pairs:
        raise ValueError("supervised_warm_start got no pairs")
    model = policy.model
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    order = torch.randperm(len(pairs), generator=generator).tolist()
    pos, first, last, t0 = 0, float("nan"), float("nan"), time.perf_counter()
    for step in range(steps):
        if pos + batch_size > len(order):
            order = order[pos:] + torch.randperm(len(pairs), generator=generator).tolist()
            pos = 0
        batch = [pairs[i] for i in order[pos : pos + batch_size]]
        pos += batch_size
        ids, att, lm = collate(batch, policy.pad_id)
        logp = policy.token_logprobs(ids, att)
        loss = completion_cross_entropy(logp, lm)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        last = float(loss.detach())
        if step == 0:
            first = last
    model.eval()
    return {
        "loss_first": first,
        "loss_last": last,
        "seconds": time.perf_counter() - t0,
        "steps": float(steps),
    }


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dataclasses are turned into dicts)."""

    def plain(x: Any) -> Any:
        if hasattr(x, "__dataclass_fields__"):
            return asdict(x)
        return x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_start_agent(
    agent,
    make_pairs: Callable[[], list[tuple[list[int], list[int]]]],
    cfg: SupervisedSettings,
    *,
    cache_dir: str | Path,
    key: str,
    seed: int,
) -> dict[str, float]:
    """Warm-start one agent (mutates its weights, and its optimizer state with optimizer=agent),
    or load the cached result for ``key``. ``make_pairs`` is only called when training. The agent's
    KL reference, if it has one, becomes the warm-started weights."""
    folder = Path(cache_dir) / "warmstart" / key / agent.name
    done = folder / "done.json"
    if cfg.cache and done.is_file():
        load_model(agent.model, str(folder / "model.safetensors"), strict=True)
        if cfg.optimizer == "agent":
            agent.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
        stats = json.loads(done.read_text())
        logger.info("agent %s: warm start loaded from cache %s", agent.name, folder)
        _reset_reference(agent)
        return {**stats, "cached": 1.0}
    pairs = make_pairs()
    if cfg.optimizer == "agent":
        opt = agent.optimizer
    else:
        params = [p for p in agent.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stats = supervised_warm_start(
        agent.policy,
        pairs,
        steps=cfg.steps_for(agent.name),
        batch_size=cfg.batch_size,
        optimizer=opt,
        generator=torch.Generator().manual_seed(seed),
        grad_clip=cfg.grad_clip,
    )
    stats["pairs"] = float(len(pairs))
    logger.info(
        "agent %s: warm start %d steps on %d pairs, loss %.3f -> %.3f in %.1fs",
        agent.name,
        cfg.steps_for(agent.name),
        len(pairs),
        stats["loss_first"],
        stats["loss_last"],
        stats["seconds"],
    )
    if cfg.cache:
        folder.mkdir(parents=True, exist_ok=True)
        save_model(agent.model, str(folder / "model.safetensors"))
        if cfg.optimizer == "agent":
            torch.save(agent.optimizer.state_dict(), folder / "optimizer.pt")
        done.write_text(json.dumps(stats))
    _reset_reference(agent)
    return {**stats, "cached": 0.0}


def _reset_reference(agent) -> None:
    """The agent's KL reference (if any) becomes its warm-started weights, the model RL starts from."""
    if hasattr(agent, "reset_reference"):
        agent.reset_reference()


def warm_start_run_agent(
    agent,
    make_pairs: Callable[[], list[tuple[list[int], list[int]]]],
    cfg: SupervisedSettings,
    *,
    cache_dir: str | Path,
    key: str,
    run_seed: int,
) -> dict[str, float]:
    """:func:`warm_start_agent` as a run does it: the batch order drawn from
    ``derive_seed(run_seed, "warmstart", agent.name)`` (each agent its own), the stats returned as
    ``warmstart/<agent>/<stat>`` metrics."""
    seed = derive_seed(run_seed, "warmstart", agent.name)
    stats = warm_start_agent(agent, make_pairs, cfg, cache_dir=cache_dir, key=key, seed=seed)
    return {f"warmstart/{agent.name}/{k}": float(v) for k, v in stats.items()}
