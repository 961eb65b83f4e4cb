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
prompt style and the seed): a repeated run loads the weights instead of training again. The loop
and the cache are the core's (``marl.warmstart``); this module says what code agents learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marl.config import AgentConfig
from marl.seeding import derive_seed
from marl.warmstart import (  # noqa: F401  (re-exported: the loop and the cache are the core's)
    OPTIMIZERS,
    cache_key,
    collate,
    completion_cross_entropy,
    encode_pairs,
    supervised_warm_start,
    warm_start_agent,
    warm_start_run_agent,
)
from search.engine import SearchConfig, style_of
from search.prompts import failures_of, prompt_text
from search.tasks import CodeTask


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

        out.update(warm_start_run_agent(agent, make_pairs, ws, cache_dir=cache_dir, key=key, run_seed=seed))
    return out
