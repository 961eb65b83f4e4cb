"""An LLM as a team member: ``respond`` turns a batch of calls into prompts (the query and the
messages it receives) and makes **one** generation call (``marl.agent.Agent.act``) for all of them.

The message it writes is its decoded completion; prompt and completion tokens are the real token
counts. The tree payload keeps the text; the agent's own learning from these calls (joint learning)
is not wired yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marl.agent import Agent


@dataclass
class LMMessage:
    """What an LLM call wrote and what it cost."""

    answer: str
    prompt_tokens: int
    completion_tokens: int
    progress: int = 0


class LMTeamAgent:
    """Wraps an :class:`~marl.agent.Agent` as a ``topologies.execution.TeamAgent``."""

    def __init__(self, agent: Agent, role: str, *, max_inbox_chars: int = 200) -> None:
        self.agent = agent
        self.name = agent.name
        self.role = role
        self.max_inbox_chars = max_inbox_chars
        self.generation_calls = 0

    def prompt(self, query: Any, inbox: list[Any]) -> str:
        """The call's prompt: role, query and the messages received (each cut to ``max_inbox_chars``)."""
        text = getattr(query, "text", str(query))
        heard = "".join(f"\nheard: {m.answer[: self.max_inbox_chars]}" for m in inbox)
        return f"you are the {self.role}.\ntask: {text}{heard}\nanswer:"

    def respond(self, queries: list[Any], inboxes: list[list[Any]]) -> list[LMMessage]:
        """All calls of this agent in one generation call."""
        ids = self.agent.policy.encode_prompts([self.prompt(q, m) for q, m in zip(queries, inboxes)])
        gen = self.agent.act(ids)
        self.generation_calls += 1
        out = []
        for i, p in enumerate(ids):
            comp = gen.completion(i)
            out.append(LMMessage(self.agent.policy.decode(comp), len(p), len(comp)))
        return out
