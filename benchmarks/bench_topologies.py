"""Every topology method on the skill-chain testbed, over seeds, in one table.

    python benchmarks/bench_topologies.py [--seeds 5] [--steps 300] [--out runs/bench_topologies.md]

Trains each learned method of ``configs/topologies/`` (Graph-GRPO edge level, the same with the spec's
edge rule, graph level, edge level with token cost, G-Designer-style REINFORCE without baseline and
the same at KL 0.02, the edge-level, graph-level and REINFORCE rows with a learned Plackett-Luce agent
order, GPTSwarm, AgentPrune; ``LEARNED``, ``--only`` picks by name) through the real
CLI on the same training queries (``task.seed`` fixed; ``run.seed`` = 0 .. seeds-1 seeds the policy,
its graph samples and the agents' draws), evaluates every fixed topology the same way, and prints one
table over the held-out queries:

- accuracy: the exact expected accuracy of the graph the method uses on each held-out query
  (``eval/expected_accuracy``: the policy's most probable graph, ``random``: one fresh draw), mean over
  seeds with a 95 % t-interval; ``sampled`` is one real execution per query;
- prompt + completion tokens and agent calls per query, on that graph;
- training queries the method consumed.

The oracle row is the best graph per query (``topologies.testbed.oracle_probability``) under the fixed
role order; ``oracle (any order)``, printed when a learned-order row ran (``policy.order: learned``),
is the best graph per query over every order of the non-final agents, the space those rows search.
The best fixed topology is the fixed row with the highest mean accuracy. A second table gives each
learned row's exact accuracy per seed. Both are also written to ``--out`` with the command and date
(by default under ``runs/``: ``benchmarks/results/topologies.md`` is kept by hand, one section per
measurement, and is not overwritten).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marl import cli  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402

LEARNED = {  # label: (name for --only, config stem, overrides)
    "Graph-GRPO edge level": ("graph_grpo", "graph_grpo", []),
    "Graph-GRPO edge level, spec rule (S_e of present edges only)": (
        "graph_grpo_spec",
        "graph_grpo",
        ["credit.topology.edge_credit=mean"],
    ),
    "Graph-GRPO graph level": ("graph_grpo_graph", "graph_grpo_graph", []),
    "Graph-GRPO edge level, token cost": ("graph_grpo_cost", "graph_grpo_cost", []),
    "G-Designer-style (REINFORCE, no baseline)": ("gdesigner", "gdesigner", []),
    "G-Designer-style (REINFORCE, no baseline), KL 0.02": (
        "gdesigner_kl02",
        "gdesigner",
        ["policy.kl_coef=0.02"],
    ),
    "Graph-GRPO edge level, learned order": ("graph_grpo_order", "graph_grpo_order", []),
    "Graph-GRPO graph level, learned order": ("graph_grpo_order_graph", "graph_grpo_order_graph", []),
    "G-Designer-style (REINFORCE, no baseline), learned order": ("gdesigner_order", "gdesigner_order", []),
    "GPTSwarm (free logits)": ("gptswarm", "gptswarm", []),
    "AgentPrune (free logits, prune 0.25)": ("agentprune", "agentprune", []),
}
FIXED = ("chain", "star", "layered", "complete", "random", "debate", "single")
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (0 for one value)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / len(xs) ** 0.5


def run(config: str, seed: int, out: Path, extra: list[str], key: str = "") -> dict[str, float]:
    name = f"{key or Path(config).stem}-s{seed}"
    args = [f"run.seed={seed}", f"run.out_dir={out}", f"run.name={name}", "run.progress=false"]
    args += ["run.tensorboard=false", "run.checkpoint_every=0", *extra]
    with contextlib.redirect_stdout(io.StringIO()):  # the CLI prints each resolved config
        assert cli.main(["train", config, *args]) == 0
    return read_metrics(out / name)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--steps", type=int, default=0, help="override run.steps of the learned configs (0: theirs)"
    )
    ap.add_argument(
        "--graphs", type=int, default=0, help="override graphs_per_query (K) of the learned configs"
    )
    ap.add_argument(
        "--only", default="", help="comma-separated names of the learned methods to run (LEARNED)"
    )
    ap.add_argument(
        "--set", dest="extra", action="append", default=[],
        help="config override KEY=VALUE for every run, fixed rows included (e.g. task.num_skills=5)",
    )  # fmt: skip
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_topologies.md"))
    args = ap.parse_args()
    logging.disable(logging.INFO)
    t0 = time.time()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        only = set(filter(None, args.only.split(",")))
        for label, (key, stem, overrides) in LEARNED.items():
            if only and key not in only:
                continue
            extra = [f"run.steps={args.steps}", f"run.eval_every={args.steps}"] if args.steps else []
            extra += [f"graphs_per_query={args.graphs}"] if args.graphs else []
            extra += [*overrides, *args.extra]
            cfg = str(ROOT / "configs" / "topologies" / f"{stem}.yaml")
            rows[label] = [run(cfg, s, Path(tmp), extra, key) for s in range(args.seeds)]
            print(f"{label}: {time.time() - t0:.0f}s", file=sys.stderr)
        for name in FIXED:
            cfg = str(ROOT / "configs" / "topologies" / f"fixed_{name}.yaml")
            rows[f"fixed: {name}"] = [run(cfg, s, Path(tmp), args.extra) for s in range(args.seeds)]
    fixed_means = {
        k: statistics.fmean(r["eval/expected_accuracy"] for r in v)
        for k, v in rows.items()
        if k.startswith("fixed")
    }
    best_fixed = max(fixed_means, key=fixed_means.get)
    oracle = statistics.fmean(r["eval/oracle"] for r in rows[best_fixed])
    any_order = [
        r["eval/oracle"] for label, rs in rows.items() if label.endswith("learned order") for r in rs
    ]

    def line(label: str, rs: list[dict[str, float]]) -> str:
        acc, h = ci([100 * r["eval/expected_accuracy"] for r in rs])
        samp, hs = ci([100 * r["eval/accuracy"] for r in rs])
        pt = statistics.fmean(r["eval/prompt_tokens"] for r in rs)
        ct = statistics.fmean(r["eval/completion_tokens"] for r in rs)
        calls = statistics.fmean(r["eval/calls_per_query"] for r in rs)
        seen = statistics.fmean(r.get("train/queries_seen", 0.0) for r in rs)
        seen_s = "—" if label.startswith(("fixed", "best fixed")) else f"{seen:.0f}"
        return f"| {label} | {acc:.1f} ± {h:.1f} | {samp:.1f} ± {hs:.1f} | {pt:.0f} + {ct:.0f} | {calls:.2f} | {seen_s} |"  # noqa: E501

    out = [
        "| method | accuracy % (exact, 95% CI) | sampled % | prompt + completion tokens / query "
        "| calls / query | training queries |",
        "|---|---:|---:|---:|---:|---:|",
        f"| oracle (best graph per query) | {100 * oracle:.1f} | | | | |",
        *([f"| oracle (any order) | {100 * statistics.fmean(any_order):.1f} | | | | |"] if any_order else []),
        line(f"best fixed ({best_fixed[7:]})", rows[best_fixed]),
        *(line(label, rows[label]) for label in LEARNED if label in rows),
        *(line(label, rs) for label, rs in rows.items() if label.startswith("fixed")),
    ]
    learned = [label for label in LEARNED if label in rows]
    if learned:
        out += ["", "| method | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |"]
        out.append("|---|" + "---:|" * args.seeds)
        for label in learned:
            accs = " | ".join(f"{100 * r['eval/expected_accuracy']:.1f}" for r in rows[label])
            out.append(f"| {label} | {accs} |")
    table = "\n".join(out)
    print(table)
    cmd = "python benchmarks/bench_topologies.py " + " ".join(sys.argv[1:])
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        f"# Topology methods on the skill-chain testbed\n\n`{cmd.strip()}` on {date}, {args.seeds} seeds, "
    )
    header += f"{time.time() - t0:.0f} s on the 2-core CPU dev box.\n\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + table + "\n")


if __name__ == "__main__":
    main()
