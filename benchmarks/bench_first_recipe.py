"""Learning check of the first recipe: both agents' held-out success before and after training.

    python benchmarks/bench_first_recipe.py                        # configs/single_turn.yaml as shipped
    python benchmarks/bench_first_recipe.py run.steps=40           # any key=value override

Runs ``marl train`` in-process, then prints, per agent, the greedy success rate on the
held-out problems at step 0 and at the end, the gain in points, and the wall time.
Target (core issue): each agent gains at least 30 points within 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl.config import load_config  # noqa: E402
from marl.recipes import get_recipe  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402
from marl.runner import Runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    overrides = sys.argv[1:]
    recipe = get_recipe("single_turn")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            recipe.Config,
            [ROOT / "configs" / "single_turn.yaml"],
            [f"run.out_dir={tmp}", "run.name=bench", "run.progress=false", *overrides],
        )
        t0 = time.perf_counter()
        runner = Runner(cfg, cfg.run, "single_turn")
        recipe.train(cfg, runner)
        wall = time.perf_counter() - t0
        rows = read_metrics(runner.dir)
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    first, last = evals[0], evals[-1]
    print(f"first recipe: {cfg.run.steps} steps in {wall / 60:.1f} min (target: within 10 min)")
    for name in cfg.agents:
        k = f"eval/{name}/success"
        gain = 100 * (last[k] - first[k])
        curve = " ".join(f"{r[k]:.2f}" for r in evals)
        print(f"  {name:8s} held-out success {first[k]:.3f} -> {last[k]:.3f}  ({gain:+.1f} pts; target +30)")
        print(f"           curve every {cfg.run.eval_every} steps: {curve}")


if __name__ == "__main__":
    main()
