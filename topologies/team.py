"""Who is on the team and how it talks: the team settings of a topology config, the checks between
the team, its task and its credit, the LLM members, and the names of members and edges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marl.credit import CreditConfig, check_settings
from marl.credit.registry import get_spec
from topologies.graphs import GraphSpace
from topologies.lm_team import LMTeamAgent


@dataclass
class TeamSettings:
    """How the team talks: rounds of the unrolled graph and the decision node."""

    rounds: int = 2
    """Rounds (spatial edges inside a round, temporal edges from round t-1 to t)."""
    decision: str = "last"
    """Who answers: last (the final agent of the last round) | majority (vote of the last round)."""


def check_team(task: Any, agents: Mapping[str, Any], agent_credit: CreditConfig) -> None:
    """Refuse a team that does not fit its task (``task``: a ``TaskConfig``) or its credit: the
    testbed brings its own programmatic team, every other task needs LLM agents; the relay task needs
    one view per agent; the agents' calls need an outcome rule (a graph rule reads edge decisions)."""
    if (task.kind == "testbed") == bool(agents):
        raise ValueError(
            f"task.kind {task.kind!r} with {len(agents)} agents: the testbed brings its own "
            "programmatic team (no agents block); every other task needs an agents block"
        )
    if task.kind == "relay" and len(task.relay_digits) != len(agents):
        raise ValueError(
            f"task.relay_digits ({list(task.relay_digits)}) needs one entry per agent "
            f"({len(agents)}: {', '.join(agents)})"
        )
    if agents:
        check_settings(agent_credit, multi_turn=False)
        if "topology" in get_spec(agent_credit.rule).reads():
            raise ValueError(
                f"agent_credit.rule ({agent_credit.rule!r}) reads graph decisions; the agents' "
                "calls need an outcome rule (grpo, rloo, ...)"
            )


def lm_members(agents: Mapping[str, Any], task: Any, *, greedy: bool = False) -> list[LMTeamAgent]:
    """The LLM agents as team members in config order; ``greedy`` (evaluation) draws no random
    numbers from the agents' own generators."""
    return [
        LMTeamAgent(a, n, task=task, member=i, greedy=greedy, **({"generator": None} if greedy else {}))
        for i, (n, a) in enumerate(agents.items())
    ]


def member_names(task: Any, agents: Mapping[str, Any]) -> list[str]:
    """The team's names in order: the LLM agents', else the testbed's."""
    return list(agents) if agents else task.agent_names()


def edge_names(space: GraphSpace, names: list[str]) -> list[str]:
    """``r<round of the target>:<agent>><agent>`` per candidate edge; ``>>`` marks a temporal edge from
    the previous round (``r1:sort>final``, ``r1:sum>>parse``)."""
    a = space.num_agents
    return [
        f"r{int(v) // a}:{names[int(u) % a]}{'>' if int(u) // a == int(v) // a else '>>'}{names[int(v) % a]}"
        for u, v in zip(space.src, space.dst)
    ]
