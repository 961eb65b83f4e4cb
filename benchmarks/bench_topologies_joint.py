"""Joint learning check: two tiny LMs of different sizes and the topology policy learn together.

    python benchmarks/bench_topologies_joint.py                     # configs/topologies/joint_relay.yaml
    python benchmarks/bench_topologies_joint.py run.steps=60        # any key=value override

Runs ``marl train`` in-process and prints the system's held-out accuracy (greedy, over the policy's
most probable graph) at step 0 (after the warm start, when the config has one) and at the end, the
gain in points, the accuracy of the empty graph (the final agent alone) beside it, the edge
probabilities at the end, the wall time of the warm start and of the joint phase, and the load
average of the machine (``os.getloadavg``) at the start and at the end.
Target (topology issue): the held-out accuracy rises by at least 20 points within 15 minutes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, whatever is installed

from marl.config import load_config  # noqa: E402
from marl.recipes import get_recipe  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402
from marl.runner import Runner  # noqa: E402


def main() -> None:
    overrides = sys.argv[1:]
    recipe = get_recipe("topology")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            recipe.Config,
            [ROOT / "configs" / "topologies" / "joint_relay.yaml"],
            [
                f"run.out_dir={tmp}",
                "run.name=bench",
                "run.progress=false",
                "run.tensorboard=false",
                *overrides,
            ],
        )
        t0 = time.perf_counter()
        runner = Runner(cfg, cfg.run, "topology")
        recipe.train(cfg, runner)
        wall = time.perf_counter() - t0
        rows = read_metrics(runner.dir)
    load_end = os.getloadavg()
    evals = [r for r in rows if "eval/accuracy" in r]
    first, last = evals[0], evals[-1]
    warm = sum(v for k, v in first.items() if k.startswith("warmstart/") and k.endswith("/seconds"))
    a0, a1 = first["eval/accuracy"], last["eval/accuracy"]
    print(f"joint learning: {cfg.run.steps} steps, {wall / 60:.1f} min, warm start {warm / 60:.1f} min")
    print(f"  joint phase {(wall - warm) / 60:.1f} min (target: +20 points within 15 min)")
    print(f"  held-out accuracy {a0:.3f} -> {a1:.3f} ({100 * (a1 - a0):+.1f} points)")
    e0, e1 = first["eval/accuracy_no_edges"], last["eval/accuracy_no_edges"]
    print(f"  empty graph (final agent alone) {e0:.3f} -> {e1:.3f}")
    curve = (f"{r['step']}:{r['eval/accuracy']:.2f}/{r['eval/accuracy_no_edges']:.2f}" for r in evals)
    print("  curve (step:accuracy/empty graph) " + " ".join(curve))
    edges = {k[9:-2]: round(v, 2) for k, v in last.items() if k.startswith("topology/") and k.endswith("/p")}
    print(f"  edge probabilities at the end: {json.dumps(edges)}")
    print(f"  load average (1, 5, 15 min) at start {load_start}, at end {load_end}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
