"""A CPU testbed where the communication topology matters and the best one depends on the query,
with an exact oracle.

**Queries.** Skill ``s`` in ``0 .. S-1`` is a named operation (``parse``, ``sort``, ...). A query
needs ``L`` distinct skills (``min_steps <= L <= max_steps``) applied in a query-specific order,
e.g. ``"task 17: sort then parse then sum"``. Its answer is correct only if every step was done
correctly, in order.

**Agents** (programmatic, fast). Agents ``0 .. S-1`` are specialists: agent ``a`` does step ``i``
correctly with probability ``p_expert`` if the step's skill is ``a``, else ``p_novice``. The last
agent ``A - 1 = S`` is the final agent (the decision node), correct with ``p_final`` on any skill.
A message carries a claimed progress ``k`` (steps done) and, hidden from the agents, whether every
step so far was correct. An agent takes the message with the largest claimed progress among its
inputs (ties: the lowest node id; no input: ``k = 0``); a non-final agent then does one step
(``k + 1``; a wrong step still claims progress, so errors propagate unseen), or passes a finished
message on; the final agent (in any round) does every remaining step; the final agent of the last
round answers. So listening to the wrong agent
hurts, and an agent that reaches no decision costs tokens and changes nothing (it is not run).

**Tokens.** A call reads ``query_tokens`` plus the completion tokens of every message it receives
and writes ``msg_tokens`` plus ``step_tokens`` per step it does.

**Oracle.** Claimed progress is deterministic given the graph, so each graph ``G`` fixes which agent
does which step (its lineage), and ``P(correct | G, q) = prod_i r(agent doing step i, skill_i)``
(:func:`success_probability`, exact). Every lineage is realised by the path graph that contains
only it, and every graph's lineage is such a path, so the best achievable accuracy on ``q`` is the
maximum of ``P`` over the paths of the candidate DAG that end at the final agent
(:func:`oracle_probability`, exact, by dynamic programming over the paths). The oracle row of a
benchmark is the mean of that maximum over the held-out queries (decision ``last``). Under a learned
agent order (``topologies.graphs.graph_space(..., order="learned")``) a graph is a path of the
candidate DAG of one order, so the oracle is the best over the ``(A - 1)!`` orders of the same
dynamic programme on the fixed-order space with the agents permuted.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from topologies.graphs import GraphSpace, active_nodes, batched_levels, graph_space

SKILL_NAMES = ("parse", "sort", "sum", "format", "filter", "merge", "count", "reverse")
FILLER = ("please", "carefully", "the", "input", "list", "quickly", "now", "data")


@dataclass
class TestbedConfig:
    """The skill-chain testbed (see ``topologies.testbed``)."""

    __test__ = False  # not a pytest class

    num_skills: int = 4
    """S specialists (one per skill); the team has S + 1 agents, the last is the final agent."""
    min_steps: int = 2
    """Fewest skills a query needs."""
    max_steps: int = 3
    """Most skills a query needs (<= num_skills)."""
    p_expert: float = 0.95
    """Probability a specialist does a step of its own skill correctly."""
    p_novice: float = 0.3
    """Probability a specialist does a step of another skill correctly."""
    p_final: float = 0.6
    """Probability the final agent does any step correctly."""
    train_queries: int = 512
    """Training queries (drawn once from the task seed)."""
    heldout_queries: int = 256
    """Held-out queries for evaluation."""
    query_tokens: int = 24
    """Prompt tokens of the query itself."""
    msg_tokens: int = 8
    """Completion tokens of a message that does no step."""
    step_tokens: int = 16
    """Completion tokens per step an agent does."""
    seed: int = 0
    """Seed of the query draw."""

    def validate(self) -> None:
        if not 1 <= self.num_skills <= len(SKILL_NAMES):
            raise ValueError(f"num_skills ({self.num_skills}) must be in [1, {len(SKILL_NAMES)}]")
        if not 1 <= self.min_steps <= self.max_steps <= self.num_skills:
            raise ValueError(
                f"need 1 <= min_steps ({self.min_steps}) <= max_steps ({self.max_steps}) <= "
                f"num_skills ({self.num_skills})"
            )
        if self.train_queries < 1 or self.heldout_queries < 1:
            raise ValueError(
                f"train_queries ({self.train_queries}), heldout_queries ({self.heldout_queries}) must be >= 1"
            )
        for k in ("p_expert", "p_novice", "p_final"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} ({getattr(self, k)}) must be a probability")


@dataclass(frozen=True)
class Query:
    """One query: its text, the skills it needs in order and the correct answer."""

    text: str
    skills: tuple[int, ...]
    answer: str


@dataclass
class Message:
    """What a call writes: the answer text, its claimed progress and hidden correctness, its tokens."""

    answer: str
    progress: int
    ok: bool
    prompt_tokens: int
    completion_tokens: int


def make_queries(cfg: TestbedConfig, n: int, rng: np.random.Generator) -> list[Query]:
    """``n`` queries: a length in [min_steps, max_steps], distinct skills in a random order, and
    filler words so that the text is not only the skill names."""
    out = []
    for _ in range(n):
        length = int(rng.integers(cfg.min_steps, cfg.max_steps + 1))
        skills = tuple(int(s) for s in rng.permutation(cfg.num_skills)[:length])
        words = " then ".join(SKILL_NAMES[s] for s in skills)
        fill = " ".join(rng.choice(FILLER, size=2))
        qid = int(rng.integers(10**6))
        out.append(Query(f"task {qid}: {fill} {words}", skills, f"answer-{qid}"))
    return out


class Testbed:
    """The task: train / held-out queries, the reliabilities and the exact scorer."""

    __test__ = False

    def __init__(self, cfg: TestbedConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self.train = make_queries(cfg, cfg.train_queries, rng)
        self.heldout = make_queries(cfg, cfg.heldout_queries, rng)
        s = cfg.num_skills
        rel = np.full((s + 1, s), cfg.p_novice)
        rel[np.arange(s), np.arange(s)] = cfg.p_expert
        rel[s] = cfg.p_final
        self.reliability = rel  # (A, S)

    @property
    def num_agents(self) -> int:
        return self.cfg.num_skills + 1

    def agent_names(self) -> list[str]:
        return [*(SKILL_NAMES[i] for i in range(self.cfg.num_skills)), "final"]

    def agents(self, rng: np.random.Generator) -> list[SkillAgent]:
        """The team, final agent last; all draw from ``rng``."""
        names = self.agent_names()
        return [
            SkillAgent(n, self.reliability[i], final=i == len(names) - 1, cfg=self.cfg, rng=rng)
            for i, n in enumerate(names)
        ]

    def sample_train(self, rng: np.random.Generator, n: int) -> list[Query]:
        return [self.train[i] for i in rng.integers(0, len(self.train), size=n)]

    @staticmethod
    def score(query: Query, answer: str) -> float:
        """1 if the answer is the query's correct answer, else 0 (decided by code, not by text)."""
        return float(answer == query.answer)


class SkillAgent:
    """A programmatic team member (see the module docstring); one batched call per wave."""

    def __init__(self, name: str, reliability: np.ndarray, *, final: bool, cfg: TestbedConfig, rng) -> None:
        self.name = name
        self.reliability = np.asarray(reliability, dtype=np.float64)  # (S,)
        self.final = final
        self.cfg = cfg
        self.rng = rng

    def respond(self, queries: list[Query], inboxes: list[list[Message]]) -> list[Message]:
        """One call per (query, inbox): continue the most advanced message, one step (the final
        agent: every remaining step)."""
        n = len(queries)
        draws = self.rng.random((n, self.cfg.max_steps))
        out = []
        c = self.cfg
        for j, (q, inbox) in enumerate(zip(queries, inboxes)):
            best = None
            for m in inbox:  # inbox is in source node order: the first maximum wins ties
                if best is None or m.progress > best.progress:
                    best = m
            k, ok = (0, True) if best is None else (best.progress, best.ok)
            todo = len(q.skills) - k if self.final else min(1, len(q.skills) - k)
            for i in range(todo):
                ok = ok and bool(draws[j, i] < self.reliability[q.skills[k + i]])
            k += todo
            done = k == len(q.skills)
            answer = (q.answer if ok else f"wrong-{self.name}-{k}") if done else f"partial-{k}"
            prompt = c.query_tokens + sum(m.completion_tokens for m in inbox)
            out.append(Message(answer, k, ok, prompt, c.msg_tokens + c.step_tokens * todo))
        return out


# ----------------------------------------------------------------------------- exact evaluation
def success_probability(space: GraphSpace, a: np.ndarray, skills: tuple[int, ...], rel: np.ndarray) -> float:
    """Exact P(the final agent's answer is correct | graph ``a``) for a query needing ``skills``
    (decision ``last``; ``rel`` (A, S) the agents' reliabilities). The running nodes are walked in a
    topological order of the graph (node ids; under a learned order by wave, then node id); ties between
    messages go to the lowest node id, as in :meth:`SkillAgent.respond`."""
    final = space.num_nodes - 1
    adj = space.adjacency(a)
    if space.learned_order:  # walk by wave, then node id
        level = batched_levels(space, np.asarray(a, dtype=bool)[None], np.array([final]))[0]
        act = level >= 0
        walk = np.flatnonzero(act)[np.argsort(level[act], kind="stable")]
    else:  # node ids are a topological order
        act = active_nodes(space, a, np.array([final]))
        walk = np.flatnonzero(act)
    big = len(skills)
    prog = np.zeros(space.num_nodes, dtype=np.int64)
    prob = np.zeros(space.num_nodes)
    for v in walk:
        srcs = np.flatnonzero(adj[:, v] & act)
        if srcs.size:
            u = srcs[np.argmax(prog[srcs])]  # first maximum = lowest node id
            k, p = prog[u], prob[u]
        else:
            k, p = 0, 1.0
        ag = int(space.node_agent(v))
        todo = big - k if ag == space.num_agents - 1 else min(1, big - k)
        for i in range(todo):
            p *= rel[ag, skills[k + i]]
        prog[v], prob[v] = k + todo, p
    return float(prob[final])


def oracle_probability(space: GraphSpace, skills: tuple[int, ...], rel: np.ndarray) -> float:
    """The best ``success_probability`` any graph reaches on the query: the maximum over the paths of
    the candidate DAG that end at the final agent (see the module docstring), by dynamic programming
    over the nodes in id (topological) order: ``f[v, k]`` is the best probability that a path ending
    at ``v`` hands on a correct message with progress ``k``. (``tests/topologies`` checks it against
    enumerating every path with networkx.) A learned-order space: the best over every order of the
    non-final agents of the same programme on the fixed-order space with the agents permuted."""
    if space.learned_order:
        rel = np.asarray(rel, dtype=np.float64)
        return _oracle_any_order(space.num_agents, space.rounds, tuple(skills), rel.tobytes(), rel.shape)
    big, final = len(skills), space.num_nodes - 1
    f = np.zeros((space.num_nodes, big + 1))
    preds = [space.src[space.dst == v] for v in range(space.num_nodes)]
    best = 0.0
    for v in range(space.num_nodes):
        ag = int(space.node_agent(v))
        incoming = np.concatenate([[1.0], np.zeros(big)])  # k = 0: v starts the path
        for u in preds[v]:
            incoming = np.maximum(incoming, f[u])
        if ag == space.num_agents - 1:  # the final agent finishes whatever is left
            done = max(incoming[k] * float(np.prod([rel[ag, s] for s in skills[k:]])) for k in range(big + 1))
            if v == final:
                best = done
            f[v, big] = done
            continue
        for k in range(big):
            f[v, k + 1] = max(f[v, k + 1], incoming[k] * rel[ag, skills[k]])
        f[v, big] = max(f[v, big], incoming[big])  # a finished message is passed on
    return float(best)


@functools.lru_cache(maxsize=4096)
def _oracle_any_order(agents: int, rounds: int, skills: tuple[int, ...], rel: bytes, shape: tuple) -> float:
    """:func:`oracle_probability` of a learned-order space (cached: ``(A - 1)!`` programmes per query)."""
    r = np.frombuffer(rel, dtype=np.float64).reshape(shape)
    fixed, last = graph_space(agents, rounds), agents - 1
    return max(oracle_probability(fixed, skills, r[[*p, last]]) for p in itertools.permutations(range(last)))
