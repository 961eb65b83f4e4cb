"""Run a team of agents over sampled communication graphs, in batched waves, into a ``TurnTree``.

For each query ``b`` and each of its ``K`` graphs, the nodes that run are the decision nodes and
their ancestors (an agent whose message reaches no decision cannot change the answer, so it is not
called and costs nothing). The waves of a graph are its ``networkx.topological_generations``
(computed for all graphs at once by ``topologies.graphs.batched_levels``; the tests hold them equal
to networkx's). Wave ``w`` of **every** graph of **every** query runs together, and all
of its calls to one agent go to that agent in **one** ``respond`` call (one generation call per agent
per wave, whatever ``B`` and ``K``). A call's inbox holds its predecessors' messages (spatial: same
round; temporal: previous round) in node order.

Decision: ``last``: the final agent of the last round answers; ``majority``: the most common answer
of the last round's agents (a tie goes to the answer given first in node order).

The tree (``docs/architecture.md``, DESIGN "How each scenario maps onto the tree"): a root per query;
under it, ``K`` graph nodes whose agent is the topology policy and whose payload holds the edge
decisions (as 0/1 completion tokens), their log-probabilities, the tokens its calls used and the
adjacency; under each graph node, one node per agent call, ``turn`` = its wave, ``role`` = the agent's
index, payload data = the unrolled node, its message sources and its prompt and completion tokens; a
reply with a ``turn`` (an LLM member, ``topologies.lm_team``) gives the payload its prompt, completion
and sampling log-probs, so the call is a training sample of its agent. Graph nodes and their calls
carry the graph's score as reward.

Shape legend: ``B`` queries, ``K`` graphs per query, ``E`` candidate edges, ``N`` unrolled nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from marl.tree import TurnTree
from marl.types import Turn
from topologies.graphs import GraphSpace, batched_levels, order_mask

DECISIONS = ("last", "majority")
_EMPTY_I = np.zeros(0, dtype=np.int32)
_EMPTY_F = np.zeros(0, dtype=np.float32)


class TeamAgent(Protocol):
    """A member of the team: ``respond`` answers a batch of calls (query, inbox) in one go and returns
    one message per call, each with ``answer``, ``progress``-like state, ``prompt_tokens`` and
    ``completion_tokens`` attributes."""

    name: str

    def respond(self, queries: list[Any], inboxes: list[list[Any]]) -> list[Any]: ...


@dataclass
class Execution:
    """What running the graphs produced (per query and graph)."""

    graph_nodes: np.ndarray
    """(B, K) tree node id of every graph."""
    answers: list[list[str]]
    """(B, K) decided answers."""
    scores: np.ndarray
    """(B, K) float score of each answer."""
    prompt_tokens: np.ndarray
    """(B, K) prompt tokens of all calls of the graph."""
    completion_tokens: np.ndarray
    """(B, K) completion tokens of all calls of the graph."""
    calls: np.ndarray
    """(B, K) agent calls the graph made."""
    batched_calls: int
    """``respond`` calls made (one per agent per wave)."""

    @property
    def tokens(self) -> np.ndarray:
        return self.prompt_tokens + self.completion_tokens


def decision_nodes(space: GraphSpace, decision: str) -> np.ndarray:
    """The unrolled nodes whose answers decide: the final agent of the last round, or the whole last round."""
    if decision == "last":
        return np.array([space.num_nodes - 1])
    if decision == "majority":
        return space.final_nodes()
    raise ValueError(f"unknown decision {decision!r}; valid: {', '.join(DECISIONS)}")


def run_graphs(
    tree: TurnTree,
    space: GraphSpace,
    agents: Sequence[TeamAgent],
    queries: Sequence[Any],
    decisions: np.ndarray,
    logprobs: np.ndarray,
    score: Callable[[Any, str], float],
    *,
    decision: str = "last",
    policy_agent: str = "topology",
    group: np.ndarray | None = None,
    score_many: Callable[[list[tuple[Any, str]]], Sequence[float]] | None = None,
    orders: np.ndarray | None = None,
    order_logprobs: np.ndarray | None = None,
) -> Execution:
    """Grow the tree of ``B`` queries x ``K`` graphs (``decisions`` (B, K, E) bool, ``logprobs``
    (B, K, E) their per-edge log-probabilities) and run the team over them (mutates ``tree``).

    ``agents[i]`` plays agent ``i`` of the space; ``score(query, answer)`` is trusted code; when given,
    ``score_many`` scores all B x K (query, answer) pairs in one call instead (a task's batch judge,
    e.g. ``HumanEvalTask.score_many``) and must agree with ``score``. ``group``: (B,) group ids of the
    query roots (default: the root's own id). A learned agent order (``topologies.graphs.
    sample_ordered_graphs``): ``orders`` (B, K, A - 1) and their ``order_logprobs`` (B, K) go into
    each graph node's data (``order``, ``order_logprob``, and ``allowed``, the (E,) edges its order
    allowed, which the contrast credit reads); node ids then need not be a topological order.
    """
    d = np.asarray(decisions, dtype=bool)
    nb, nk, ne = d.shape
    if ne != space.num_edges or len(queries) != nb or len(agents) != space.num_agents:
        raise ValueError(
            f"decisions {d.shape}, {len(queries)} queries and {len(agents)} agents do not fit a space of "
            f"{space.num_edges} edges and {space.num_agents} agents"
        )
    decide = decision_nodes(space, decision)
    roots = tree.add_nodes(np.full(nb, -1), agent=-1, **({} if group is None else {"group": group}))
    lp = np.asarray(logprobs, dtype=np.float32)
    payloads = [
        Turn(_EMPTY_I, d[b, k].astype(np.int32), lp[b, k], data={"kind": "graph"})
        for b in range(nb)
        for k in range(nk)
    ]
    if orders is not None:
        orders = np.asarray(orders, dtype=np.int64)
        allowed = order_mask(space, orders)
        olp = np.asarray(order_logprobs, dtype=np.float64)
        if orders.shape[:2] != (nb, nk) or olp.shape != (nb, nk) or (d & ~allowed).any():
            raise ValueError(
                f"orders {orders.shape} and order_logprobs {olp.shape} must be ({nb}, {nk}, ...), and "
                "every present edge allowed by its graph's order"
            )
        for b in range(nb):
            for k in range(nk):
                extra = {"order": orders[b, k].tolist(), "order_logprob": float(olp[b, k])}
                payloads[b * nk + k].data.update(extra, allowed=allowed[b, k])
    gnodes = tree.add_nodes(np.repeat(roots, nk), agent=policy_agent, payloads=payloads).reshape(nb, nk)

    # schedule: the wave of every running node of every graph, then the calls of wave w by agent
    flat = d.reshape(nb * nk, ne)
    level = batched_levels(space, flat, decide)  # (B*K, N), -1 = not run
    run = level >= 0
    adj = [space.adjacency(row) & r[:, None] & r[None, :] for row, r in zip(flat, run)]
    by_wave: list[dict[int, list[tuple[int, int, int, np.ndarray]]]] = [
        {} for _ in range(int(level.max()) + 1)
    ]
    for gi, v in zip(*np.nonzero(run)):
        b, k = divmod(int(gi), nk)
        by_wave[level[gi, v]].setdefault(int(v) % space.num_agents, []).append(
            (b, k, int(v), np.flatnonzero(adj[gi][:, v]))
        )

    msgs: dict[tuple[int, int, int], Any] = {}
    ptok = np.zeros((nb, nk), dtype=np.int64)
    ctok = np.zeros((nb, nk), dtype=np.int64)
    ncalls = np.zeros((nb, nk), dtype=np.int64)
    batched = 0
    for w, per_agent in enumerate(by_wave):
        for ag in sorted(per_agent):
            calls = per_agent[ag]
            inboxes = [[msgs[(b, k, int(u))] for u in src] for b, k, _, src in calls]
            replies = agents[ag].respond([queries[b] for b, _, _, _ in calls], inboxes)
            batched += 1
            if len(replies) != len(calls):
                raise ValueError(f"agent {agents[ag].name} answered {len(replies)} of {len(calls)} calls")
            pay = []
            for (b, k, v, src), r in zip(calls, replies):
                msgs[(b, k, v)] = r
                ptok[b, k] += r.prompt_tokens
                ctok[b, k] += r.completion_tokens
                ncalls[b, k] += 1
                data = {
                    "node": v,
                    "round": v // space.num_agents,
                    "sources": src.tolist(),
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                }
                pay.append(_payload(r, data))
            parents = np.array([gnodes[b, k] for b, k, _, _ in calls])
            tree.add_nodes(parents, agent=agents[ag].name, role=ag, turn=w, payloads=pay)

    answers = [[_decide([msgs[(b, k, int(v))].answer for v in decide]) for k in range(nk)] for b in range(nb)]
    pairs = [(queries[b], answers[b][k]) for b in range(nb) for k in range(nk)]
    flat_scores = list(score_many(pairs)) if score_many is not None else [score(q, ans) for q, ans in pairs]
    if len(flat_scores) != len(pairs):
        raise ValueError(f"score_many returned {len(flat_scores)} scores for {len(pairs)} answers")
    scores = np.asarray(flat_scores, dtype=np.float64).reshape(nb, nk)
    for b in range(nb):
        for k in range(nk):
            data = tree.payloads[int(gnodes[b, k])].data
            data.update(
                tokens=int(ptok[b, k] + ctok[b, k]), calls=int(ncalls[b, k]), adjacency=adj[b * nk + k]
            )
    tree.set_reward(gnodes.reshape(-1), scores.reshape(-1))
    calls_of = np.flatnonzero(np.isin(tree.parent, gnodes.reshape(-1)))
    flat = {int(g): s for g, s in zip(gnodes.reshape(-1), scores.reshape(-1))}
    tree.set_reward(calls_of, [flat[int(p)] for p in tree.parent[calls_of]])
    return Execution(gnodes, answers, scores, ptok, ctok, ncalls, batched)


def _payload(reply: Any, data: dict) -> Turn:
    """The call's tree payload: an LLM reply's own ``turn`` (its prompt, completion and sampling
    log-probs, so the call is a training sample of its agent) with ``data`` added, else the text and
    ``data`` alone (a programmatic agent writes no tokens)."""
    turn = getattr(reply, "turn", None)
    if turn is None:
        return Turn(_EMPTY_I, _EMPTY_I, _EMPTY_F, text=reply.answer, data=data)
    return Turn(turn.prompt_ids, turn.completion_ids, turn.logprobs, text=reply.answer,
                finish_reason=turn.finish_reason, data={**turn.data, **data})  # fmt: skip


def _decide(answers: list[str]) -> str:
    """The only answer, or the most common one (ties: the first given in node order)."""
    if len(answers) == 1:
        return answers[0]
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)
