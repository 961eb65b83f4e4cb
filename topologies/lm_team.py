"""An LLM as a team member: ``respond`` turns a batch of calls into prompts (the query and the
messages it receives) and makes **one** generation call (``marl.agent.Agent.act``) for all of them.

The message it writes is its decoded completion; prompt and completion tokens are the real token
counts. Each reply carries its ``turn`` (prompt ids, completion ids, sampling log-probs and, under
constrained decoding, the token ids the sampler allowed), which ``topologies.execution`` stores as
the call's tree payload: the call is then a training sample of its agent, and the recipe routes it
to that agent's own optimizer (``marl.samples.tree_to_batches``, ``marl.scenario.learn_agents``).

``task`` (``topologies.tasks``) says what the member sees (``task.prompt(query, member, inbox)``)
and may constrain its answers (``task.processor``); without one, the prompt is the role, the query
text and the messages heard. ``greedy`` with ``generator=None`` is for evaluation: the agent's own
sampling stream does not move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marl.agent import OWN, Agent
from marl.types import Turn


@dataclass
class LMMessage:
    """What an LLM call wrote and what it cost, with the call as a tree payload."""

    answer: str
    prompt_tokens: int
    completion_tokens: int
    progress: int = 0
    turn: Turn | None = None


class LMTeamAgent:
    """Wraps an :class:`~marl.agent.Agent` as a ``topologies.execution.TeamAgent``."""

    def __init__(
        self,
        agent: Agent,
        role: str,
        *,
        task: Any = None,
        member: int = 0,
        max_inbox_chars: int = 200,
        greedy: bool = False,
        generator: Any = OWN,
    ) -> None:
        self.agent = agent
        self.name = agent.name
        self.role = role
        self.task = task
        self.member = member
        self.max_inbox_chars = max_inbox_chars
        self.greedy = greedy
        self.generator = generator
        self.generation_calls = 0

    def prompt(self, query: Any, inbox: list[Any]) -> str:
        """The call's prompt: the task's view for this member, else role, query and the messages
        received (each cut to ``max_inbox_chars``)."""
        if self.task is not None:
            return self.task.prompt(query, self.member, inbox)
        text = getattr(query, "text", str(query))
        heard = "".join(f"\nheard: {m.answer[: self.max_inbox_chars]}" for m in inbox)
        return f"you are the {self.role}.\ntask: {text}{heard}\nanswer:"

    def respond(self, queries: list[Any], inboxes: list[list[Any]]) -> list[LMMessage]:
        """All calls of this agent in one generation call."""
        policy = self.agent.policy
        ids = policy.encode_prompts([self.prompt(q, m) for q, m in zip(queries, inboxes)])
        proc = None if self.task is None else self.task.processor(policy.encode, policy.eos_id)
        gen = self.agent.act(ids, logits_processor=proc, greedy=self.greedy, generator=self.generator)
        self.generation_calls += 1
        out = []
        for i, p in enumerate(ids):
            comp = gen.completion(i)
            allowed = None if proc is None else self.task.allowed_ids(policy.encode, policy.eos_id, len(comp))
            text = policy.decode(comp, skip_special_tokens=True).strip()
            turn = gen.turn(i, p, text=text, data=None if allowed is None else {"allowed_ids": allowed})
            out.append(LMMessage(text, len(p), len(comp), turn=turn))
        return out


@dataclass
class LMWarmStart:
    """Optional supervised warm start of the LLM members before the joint phase (steps 0: none).

    Each member learns, by completion cross-entropy with a separate AdamW, the pairs its task gives it
    from the training queries (``task.warm_pairs``), always with nothing heard: relay, its own view ->
    the largest digit it sees (what it can do alone); jsonl, the question -> its answer; humaneval, the
    prompt -> the canonical body. How to use messages is left to the joint phase."""

    steps: int = 0
    """Optimizer steps per member (0: no warm start)."""
    examples: int = 2000
    """(prompt, answer) pairs per member, drawn from the training queries."""
    batch_size: int = 32
    """Pairs per optimizer step."""
    lr: float = 3e-3
    """Learning rate of the warm start's own AdamW (the agents' optimizers are untouched)."""

    def validate(self) -> None:
        if self.steps < 0 or self.examples < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"warm_start: steps ({self.steps}) must be >= 0, examples ({self.examples}) and batch_size "
                f"({self.batch_size}) >= 1, lr ({self.lr}) > 0"
            )


def warm_start_team(
    agents: dict[str, Agent], task: Any, ws: LMWarmStart, *, seed: int, cache_dir
) -> dict[str, float]:
    """Warm-start every member on ``task.warm_pairs(member, n, rng)`` (mutates their weights; the
    loop and the cache are ``marl.warmstart``'s). Returns ``warmstart/<agent>/*`` metrics."""
    import numpy as np

    from marl.seeding import derive_seed
    from marl.warmstart import SupervisedSettings, cache_key, encode_pairs, warm_start_run_agent

    settings = SupervisedSettings(steps=ws.steps, batch_size=ws.batch_size, lr=ws.lr)
    out: dict[str, float] = {}
    for member, (name, agent) in enumerate(agents.items()):
        rng = np.random.default_rng(derive_seed(seed, "warmstart-pairs", name))
        texts = task.warm_pairs(member, ws.examples, rng)
        key = cache_key("topology", agent.cfg.policy, member, texts, ws.steps, ws.batch_size, ws.lr, seed)
        make = lambda a=agent, t=texts: encode_pairs(t, a.policy)  # noqa: E731
        out.update(warm_start_run_agent(agent, make, settings, cache_dir=cache_dir, key=key, run_seed=seed))
    return out
