"""Calls/s of one Graph-GRPO step with tiny-LM agents: batched waves against node-by-node execution.

    python benchmarks/bench_topology_batching.py [--queries 16] [--graphs 8] [--node-queries 2] [--repeats 5]

Five tiny-LM agents (``tiny: 100k``, up to ``--max-new-tokens`` tokens per call) run over ``K``
sampled graphs (p = 0.5 per candidate edge, one round) for ``B`` queries of the skill-chain testbed.
Batched: ``topologies.execution.run_graphs`` sends every call of one wave to each agent in one
generation call. Node by node (as GPTSwarm and AgentPrune execute): the same engine, but every call
is its own generation call; it runs on the graphs of the first ``--node-queries`` queries only (to
bound its time) and is compared by calls per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from marl.agent import Agent  # noqa: E402
from marl.config import AgentConfig, SamplingConfig  # noqa: E402
from marl.policies import PolicyConfig  # noqa: E402
from marl.tree import TurnTree  # noqa: E402
from topologies.execution import run_graphs  # noqa: E402
from topologies.graphs import graph_space, sample_graphs  # noqa: E402
from topologies.lm_team import LMTeamAgent  # noqa: E402
from topologies.testbed import Testbed, TestbedConfig  # noqa: E402


class NodeByNode:
    """A team member that answers each call with its own generation call."""

    def __init__(self, inner: LMTeamAgent) -> None:
        self.inner, self.name = inner, inner.name

    def respond(self, queries, inboxes):
        return [self.inner.respond([q], [m])[0] for q, m in zip(queries, inboxes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--graphs", type=int, default=8)
    ap.add_argument("--node-queries", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each; the medians are compared")
    ap.add_argument("--tiny", default="100k", help="size of the tiny LMs (marl.policies TINY_SIZES)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tb = Testbed(TestbedConfig())
    space = graph_space(tb.num_agents, 1)
    cache = tempfile.mkdtemp()
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    team = [
        LMTeamAgent(
            Agent(
                n,
                AgentConfig(policy=PolicyConfig(tiny=args.tiny, seed=i), sampling=sampling),
                cache_dir=cache,
                total_steps=1,
                seed=i,
            ),
            n,
        )  # fmt: skip
        for i, n in enumerate(tb.agent_names())
    ]
    a, lp = sample_graphs(
        torch.zeros(args.queries, space.num_edges), args.graphs, torch.Generator().manual_seed(0)
    )
    queries = tb.train[: args.queries]
    run_graphs(
        TurnTree(), space, team, queries[:1], a[:1, :1].numpy(), lp[:1, :1].numpy(), tb.score
    )  # warm-up
    n = args.node_queries
    node_team = [NodeByNode(x) for x in team]
    times_b, times_n = [], []
    for _ in range(args.repeats):  # alternate the two, so a busy spell hits both
        t = time.perf_counter()
        ex = run_graphs(TurnTree(), space, team, queries, a, lp, tb.score)
        times_b.append(time.perf_counter() - t)
        t = time.perf_counter()
        ex1 = run_graphs(TurnTree(), space, node_team, queries[:n], a[:n].numpy(), lp[:n].numpy(), tb.score)
        times_n.append(time.perf_counter() - t)
    batched_s, node_s = statistics.median(times_b), statistics.median(times_n)
    rate_b, rate_n = ex.calls.sum() / batched_s, ex1.calls.sum() / node_s
    nb, n1 = int(ex.calls.sum()), int(ex1.calls.sum())
    print(
        f"batched:      {nb} calls in {ex.batched_calls} generation calls, {batched_s:.2f} s, "
        f"{rate_b:.1f} calls/s (median of {args.repeats})"
    )
    print(f"node by node: {n1} calls in {n1} generation calls, {node_s:.2f} s, {rate_n:.1f} calls/s")
    print(
        f"speed-up: {rate_b / rate_n:.1f}x  (B={args.queries}, K={args.graphs}, 5 tiny-LM agents "
        f"tiny={args.tiny}, max_new_tokens={args.max_new_tokens}, threads={args.threads})"
    )


if __name__ == "__main__":
    main()
