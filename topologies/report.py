"""The method table a topology run prints at its end: the run's policy against every fixed topology
(and, on the testbed, the oracle), evaluated on the same held-out queries with the same seed, so a
single ``marl train`` shows where its method stands (``benchmarks/bench_topologies.py`` adds seeds
and the other learned methods)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from topologies.graphs import TOPOLOGIES, FixedPolicy, GraphSpace


def method_rows(
    evaluate: Callable[..., dict], learner, task, space: GraphSpace, cfg, seed: int, agents
) -> dict[str, dict[str, float]]:
    """``{label: evaluate(...) metrics}`` for the run's policy (``this run``) and, for a programmatic
    team, each fixed topology (``fixed: <name>``; ``random`` is one sampled graph per query, the others
    their only graph). With LLM agents a fixed row would cost a full held-out evaluation of the team
    each (HumanEval: every program through the judge), so their table has the run's row only; the
    ``fixed_*`` configs give those rows."""
    rows = {"this run": evaluate(learner, task, space, cfg, seed, agents)}
    for name in () if agents else TOPOLOGIES:
        graph = "sample" if name == "random" else "mode"
        settings = replace(cfg.policy, kind="fixed", topology=name, eval_graph=graph)
        fixed = SimpleNamespace(policy=FixedPolicy(space, name, layers=cfg.policy.layers))
        rows[f"fixed: {name}"] = evaluate(fixed, task, space, replace(cfg, policy=settings), seed, agents)
    return rows


def method_table(
    rows: Mapping[str, Mapping[str, float]], method: str, queries_seen: float, *, any_order: bool = False
) -> str:
    """Markdown table of ``method_rows``: held-out accuracy (and its exact expectation on the testbed),
    prompt + completion tokens, calls and edges per query, training queries; the oracle and the best
    fixed topology (by exact accuracy where known, else accuracy) as reference rows. ``any_order``:
    the run learned the agent order, so its oracle is the best graph over every order."""
    exact = all("eval/expected_accuracy" in r for r in rows.values())
    key = "eval/expected_accuracy" if exact else "eval/accuracy"
    lines = [
        "| method | accuracy % | exact % | prompt + completion tokens / query | calls / query | edges "
        "| training queries |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def line(label: str, r: Mapping[str, Any], seen: str) -> None:
        ex = f"{100 * r['eval/expected_accuracy']:.1f}" if exact else ""
        tokens = f"{r['eval/prompt_tokens']:.0f} + {r['eval/completion_tokens']:.0f}"
        acc = f"{100 * r['eval/accuracy']:.1f}"
        calls, edges = f"{r['eval/calls_per_query']:.2f}", f"{r['eval/edges']:.1f}"
        lines.append(f"| {label} | {acc} | {ex} | {tokens} | {calls} | {edges} | {seen} |")

    run = rows["this run"]
    if "eval/oracle" in run:
        what = "best graph per query, any order" if any_order else "best graph per query"
        lines.append(f"| oracle ({what}) | | {100 * run['eval/oracle']:.1f} | | | | |")
    line(f"this run: {method}", run, f"{queries_seen:.0f}")
    fixed = {k: v for k, v in rows.items() if k.startswith("fixed: ")}
    if fixed:
        best = max(fixed, key=lambda k: fixed[k][key])
        line(f"best fixed ({best[len('fixed: ') :]})", fixed[best], "—")
    for label, r in fixed.items():
        line(label, r, "—")
    return "\n".join(lines) + "\n"
