"""Supervised warm start: teach each agent the reference solutions of the *training* tasks, so tiny
agents start the search above zero.

The loss is the token cross-entropy of the completion given the prompt,
``L = -Σ_t m_t log π(x_t | x_<t) / Σ_t m_t`` with ``m_t = 1`` on completion tokens (the reference
program's body and the stop token) and 0 on the prompt. Pairs are fresh-program prompts
(statement -> reference) and, for a share ``refine_fraction``, refinement prompts whose parent is
a wrong program (another task's body under this statement) with its real failing-test messages
from the sandbox (-> reference), so the refinement format is not new to the agent at search time.

The result is cached under ``<cache_dir>/warmstart/<key>/<agent>/`` where ``key`` hashes everything
that determines it (the agent's policy, the warm-start settings, the tasks and references, the
prompt style and the seed): a repeated run loads the weights instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from marl.config import AgentConfig
from marl.samples import pack_rows
from marl.seeding import derive_seed
from search.engine import SearchConfig, style_of
from search.prompts import failures_of, prompt_text
from search.tasks import CodeTask

logger = logging.getLogger(__name__)

OPTIMIZERS = ("separate", "agent")


@dataclass
class WarmStartConfig:
    """Supervised warm start on the training tasks' reference solutions (CE on completion tokens)."""

    enabled: bool = True
    """Run the warm start before the first search step of a fresh run."""
    steps: int = 300
    """Optimizer steps per agent."""
    steps_per_agent: dict[str, int] = field(default_factory=dict)
    """Per-agent override of ``steps``, by agent name."""
    batch_size: int = 32
    """(prompt, reference) pairs per step."""
    lr: float = 3e-3
    """Learning rate of the separate AdamW (ignored with optimizer=agent)."""
    weight_decay: float = 0.0
    """Weight decay of the separate AdamW."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value; 0 disables."""
    optimizer: str = "separate"
    """separate (a fresh AdamW, discarded afterwards) | agent (the agent's own optimizer and state)."""
    task_fraction: float = 1.0
    """Share of the training tasks whose references the warm start uses (a seeded subset); the
    search learns the rest from test rewards alone."""
    max_param: int = 0
    """Only training tasks whose integer parameter (``task.meta["param"]``, e.g. 57 for ``add_57``) is
    at most this take part (tasks without one always do); 0 = no limit. With 49 the warm start
    sees ``add_1`` .. ``add_49`` and the search must learn larger parameters from test rewards."""
    refine_fraction: float = 0.3
    """Share of pairs that are refinement prompts (wrong parent + its failures -> reference)."""
    cache: bool = True
    """Reuse a cached warm start with the same key instead of training again."""

    def steps_for(self, name: str) -> int:
        """Optimizer steps of agent ``name``."""
        return int(self.steps_per_agent.get(name, self.steps))

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"warmstart.optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.steps < 0 or self.batch_size < 1 or any(v < 0 for v in self.steps_per_agent.values()):
            raise ValueError(
                f"warmstart.steps ({self.steps}) must be >= 0 and batch_size ({self.batch_size}) >= 1"
            )
        if self.max_param < 0:
            raise ValueError(f"warmstart.max_param ({self.max_param}) must be >= 0 (0 = no limit)")
        if not 0 < self.task_fraction <= 1:
            raise ValueError(f"warmstart.task_fraction ({self.task_fraction}) must be in (0, 1]")
        if not 0 <= self.refine_fraction <= 1:
            raise ValueError(f"warmstart.refine_fraction ({self.refine_fraction}) must be in [0, 1]")
        if self.lr <= 0:
            raise ValueError(f"warmstart.lr ({self.lr}) must be > 0")


# ----------------------------------------------------------------------------- pairs
def reference_completion(statement: str, reference: str, style: str) -> str:
    """The text a perfect agent answers: the reference's continuation of the statement (compact) or
    the whole reference in a fenced block (chat)."""
    if style == "chat":
        return f"```python\n{reference.rstrip()}\n```"
    if not reference.startswith(statement):
        raise ValueError(
            "compact warm start needs references that continue the statement (HumanEval style); "
            f"statement {statement[:60]!r} is not a prefix of reference {reference[:60]!r}"
        )
    return reference[len(statement) :]


def warmstart_texts(
    tasks: Sequence,
    sandbox,
    rng: np.random.Generator,
    *,
    style: str,
    refine_fraction: float,
    max_tests: int = 2,
    max_chars: int = 160,
) -> list[tuple[Any, str]]:
    """(prompt, completion text) pairs from the tasks' references: one fresh pair per task plus
    about ``refine_fraction`` refinement pairs whose parent is another task's body under this
    statement, kept only when the sandbox says it fails (its messages become the feedback). The
    other task comes from the same template (``task.meta["template"]``) when there is one, so the
    parent is a near miss (``return x + 67`` under ``add_83``), else from any task."""
    tasks = [t for t in tasks if t.reference]
    if not tasks:
        raise ValueError("no task has a reference solution; the warm start needs references")
    pairs: list[tuple[Any, str]] = [
        (
            prompt_text(t, None, [], style, max_tests=max_tests, max_chars=max_chars),
            reference_completion(t.prompt, t.reference, style),
        )
        for t in tasks
    ]
    n_ref = (
        int(round(refine_fraction / max(1e-9, 1 - refine_fraction) * len(tasks)))
        if refine_fraction < 1
        else 0
    )
    if refine_fraction >= 1:
        n_ref = len(tasks)
    if n_ref and sandbox is not None and len(tasks) > 1:
        idx = rng.integers(len(tasks), size=(2 * n_ref, 2))
        siblings: dict[Any, list[int]] = {}
        for k, t in enumerate(tasks):
            if t.meta.get("template") is not None:
                siblings.setdefault(t.meta["template"], []).append(k)
        cands = []
        for i, j in idx.tolist():
            same = [k for k in siblings.get(tasks[i].meta.get("template"), []) if k != i]
            if same:
                j = same[j % len(same)]
            if i == j:
                continue
            ti, tj = tasks[i], tasks[j]
            body = tj.reference[len(tj.prompt) :] if tj.reference.startswith(tj.prompt) else None
            if body is None:
                continue
            cands.append((ti, ti.prompt + body))
        results = sandbox.run_many([(prog, t) for t, prog in cands], "public")
        made = 0
        for (t, prog), res in zip(cands, results):
            if res.status == "passed" or made >= n_ref:
                continue
            pairs.append(
                (
                    prompt_text(t, prog, failures_of(res), style, max_tests=max_tests, max_chars=max_chars),
                    reference_completion(t.prompt, t.reference, style),
                )
            )
            made += 1
        if refine_fraction == 1.0:
            pairs = pairs[len(tasks) :]
    return pairs


def encode_pairs(
    pairs: Sequence[tuple[Any, str]], policy, *, max_prompt_tokens: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Token pairs: the prompt (``encode`` or ``encode_chat``, left-truncated to
    ``max_prompt_tokens`` when > 0) and the completion followed by the policy's stop token."""
    stop = policy.stop_ids[-1] if isinstance(pairs[0][0], list) else policy.eos_id
    prompts = policy.encode_prompts([p for p, _ in pairs], max_prompt_tokens)
    return [(p, policy.encode(completion) + [stop]) for p, (_, completion) in zip(prompts, pairs)]


# ----------------------------------------------------------------------------- training
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
    cfg: WarmStartConfig,
    *,
    cache_dir: str | Path,
    key: str,
    seed: int,
) -> dict[str, float]:
    """Warm-start one agent (mutates its weights, and its optimizer state with optimizer=agent),
    or load the cached result for ``key``. ``make_pairs`` is only called when training."""
    folder = Path(cache_dir) / "warmstart" / key / agent.name
    done = folder / "done.json"
    if cfg.cache and done.is_file():
        load_model(agent.model, str(folder / "model.safetensors"), strict=True)
        if cfg.optimizer == "agent":
            agent.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
        stats = json.loads(done.read_text())
        logger.info("agent %s: warm start loaded from cache %s", agent.name, folder)
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
    return {**stats, "cached": 0.0}


# ----------------------------------------------------------------------------- the run's warm start
def warmstart_tasks(train_tasks: list[CodeTask], ws: WarmStartConfig, seed: int) -> list[CodeTask]:
    """The training tasks whose references the warm start uses (the same for every agent), in
    training order: those with an integer parameter of at most ``ws.max_param`` (when > 0), then a
    subset of ``ws.task_fraction`` of them, drawn from the run ``seed``."""
    if ws.max_param > 0:
        train_tasks = [
            t
            for t in train_tasks
            if not isinstance(t.meta.get("param"), int) or t.meta["param"] <= ws.max_param
        ]
    if ws.task_fraction >= 1.0:
        return list(train_tasks)
    n = max(1, int(round(ws.task_fraction * len(train_tasks))))
    rng = np.random.default_rng(derive_seed(seed, "warmstart-tasks"))
    keep = np.sort(rng.choice(len(train_tasks), size=n, replace=False))
    return [train_tasks[i] for i in keep.tolist()]


def warmstart_key(
    agent_cfg: AgentConfig, ws: WarmStartConfig, search: SearchConfig, style: str, seed: int, train_tasks
) -> str:
    """Cache key of one agent's warm start: everything its pairs and training depend on (its policy,
    the settings, its prompt style and feedback limits, the seed, the tasks with their public tests,
    since refinement pairs carry their failure messages, and its optimizer when the warm start uses it)."""
    return cache_key(
        "mars2-warmstart-v3",
        agent_cfg.policy,
        ws,
        style,
        search.feedback_tests,
        search.feedback_chars,
        search.max_prompt_tokens,
        seed,
        [
            (
                t.task_id,
                t.prompt,
                t.reference,
                [(c.kind, c.args, c.expected, c.stdin, c.code) for c in t.public_tests],
            )
            for t in train_tasks
        ],
        agent_cfg.optim if ws.optimizer == "agent" else None,
    )


def warm_start(
    agents: Mapping[str, Any],
    train_tasks: list[CodeTask],
    sandbox: Any,
    ws: WarmStartConfig,
    search: SearchConfig,
    *,
    seed: int,
    cache_dir: str | Path,
) -> dict[str, float]:
    """Supervised warm start of every agent on the training references (``warmstart_tasks``), each
    in its own prompt style; cached under ``cache_dir`` by ``warmstart_key``."""
    out: dict[str, float] = {}
    train_tasks = warmstart_tasks(train_tasks, ws, seed)
    for name, agent in agents.items():
        style = style_of(search, name)
        key = warmstart_key(agent.cfg, ws, search, style, seed, train_tasks)

        def make_pairs(agent=agent, style=style, name=name):
            rng = np.random.default_rng(derive_seed(seed, "warmstart-pairs", name))
            texts = warmstart_texts(
                train_tasks,
                sandbox,
                rng,
                style=style,
                refine_fraction=ws.refine_fraction,
                max_tests=search.feedback_tests,
                max_chars=search.feedback_chars,
            )
            return encode_pairs(texts, agent.policy, max_prompt_tokens=search.max_prompt_tokens)

        stats = warm_start_agent(
            agent, make_pairs, ws, cache_dir=cache_dir, key=key, seed=derive_seed(seed, "warmstart", name)
        )
        for k, v in stats.items():
            out[f"warmstart/{name}/{k}"] = float(v)
    return out
