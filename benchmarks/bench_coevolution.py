"""Co-evolution (AdvEvo-MARL) against its baselines, over several seeds, as one table.

    python benchmarks/bench_coevolution.py [--seeds 0 1 2] [--configs advevo task_only ...]
        [--out runs/bench_coevolution] [--steps N] [--collect] [KEY=VALUE ...]

Trains each config of ``configs/coevolution/`` once per seed through the real CLI (same tasks,
same held-out attacks, same evaluation), then prints one markdown table of the final evaluation:
mean ± std over seeds of held-out ASR, held-out-goal ASR (of the final defenders and of the
defenders as they were before co-evolution), ASR of the training templates, ASR of the final attackers,
clean and attacked task accuracy, tokens per episode and, for co-evolution, the ASR of the warm-started
attackers (``@0``) and of the trained ones against the defenders as they were before co-evolution.

A seed changes the run seed (tasks, canaries, attacks, warm-start data, sampling) **and** every
agent's initial weights (``policy.seed + 100 * seed``). Warm starts are cached per seed under
``<out>/.cache`` so the baselines of one seed start from the same defenders as co-evolution.
Extra ``KEY=VALUE`` arguments are passed to every run. ``--collect`` trains nothing and tables the
finished runs found under ``--out`` (runs of several invocations into one table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marl import cli  # noqa: E402
from marl.rundir import read_metrics  # noqa: E402

COLUMNS = [
    ("heldout ASR", "eval/heldout_asr"),
    ("held-out-goal ASR", "eval/heldout_goal_asr"),
    ("held-out-goal ASR untrained", "eval/untrained/heldout_goal_asr"),
    ("train-template ASR", "eval/train_template_asr"),
    ("ASR final attackers", "final_attackers"),
    ("acc clean", "eval/acc_clean"),
    ("acc attacked", "eval/acc_attacked"),
    ("tokens/ep", "eval/tokens_per_episode"),
    ("attackers@0 vs untrained", "warm_attackers_untrained"),
    ("final attackers vs untrained", "final_attackers_untrained"),
]


def summarise(row: dict[str, float], attackers: list[str]) -> dict[str, float]:
    """The table's values of one run's final evaluation row."""
    out = {k: row[k] for _, k in COLUMNS if k in row}
    if attackers:
        out["final_attackers"] = statistics.mean(row[f"eval/asr/{a}"] for a in attackers)
        out["warm_attackers_untrained"] = statistics.mean(row[f"eval/untrained/asr/{a}@0"] for a in attackers)
        out["final_attackers_untrained"] = statistics.mean(row[f"eval/untrained/asr/{a}"] for a in attackers)
    return out


def final_row(run: Path, total: int, attackers: list[str]) -> dict[str, float]:
    """The table's values of a finished run: its evaluation row at step ``total``."""
    rows = [r for r in read_metrics(run) if r.get("step") == total and "eval/heldout_asr" in r]
    if not rows:
        raise SystemExit(f"{run}: no evaluation at step {total} (not finished?)")
    return summarise(rows[-1], attackers)


def collect(config: Path, seed: int, out: Path, steps: int | None) -> dict[str, float] | None:
    """The values of an already finished run of ``config`` and ``seed`` under ``out`` (None if absent)."""
    raw = yaml.safe_load(config.read_text())
    run = out / f"{config.stem}_s{seed}"
    if not (run / "metrics.jsonl").is_file():
        return None
    return final_row(run, steps or raw["run"]["steps"], raw.get("attackers", []))


def run_one(config: Path, seed: int, out: Path, steps: int | None, extra: list[str]) -> dict[str, float]:
    raw = yaml.safe_load(config.read_text())
    name = f"{config.stem}_s{seed}"
    overrides = [
        f"run.seed={seed}",
        f"run.out_dir={out}",
        f"run.name={name}",
        "run.progress=false",
        "run.checkpoint_every=0",
        "run.tensorboard=false",
    ]
    for agent, acfg in raw["agents"].items():
        overrides.append(f"agents.{agent}.policy.seed={acfg['policy'].get('seed', 0) + 100 * seed}")
    total = steps or raw["run"]["steps"]
    overrides += [f"run.steps={total}", f"run.eval_every={total}"]
    if (out / name).exists():
        raise SystemExit(f"{out / name} exists: pick another --out")
    t0 = time.perf_counter()
    assert cli.main(["train", str(config), *overrides, *extra]) == 0
    res = final_row(out / name, total, raw.get("attackers", []))
    res["minutes"] = (time.perf_counter() - t0) / 60
    return res


def table(results: dict[str, list[dict[str, float]]]) -> str:
    head = "| config | " + " | ".join(c for c, _ in COLUMNS) + " | min/run |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for config, runs in results.items():
        cells = []
        for _, key in [*COLUMNS, ("", "minutes")]:
            vals = [r[key] for r in runs if key in r]
            if not vals:
                cells.append("–")
                continue
            scale = 1 if key in ("eval/tokens_per_episode", "minutes") else 100
            mean = statistics.mean(vals) * scale
            std = statistics.stdev(vals) * scale if len(vals) > 1 else 0.0
            cells.append(f"{mean:.1f} ± {std:.1f}")
        lines.append(f"| {config} (n={len(runs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=["advevo", "task_only", "fixed_attacks", "guard"])
    ap.add_argument("--out", default="runs/bench_coevolution")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: each config's)")
    ap.add_argument("--collect", action="store_true", help="train nothing: table the finished runs in --out")
    ap.add_argument("extra", nargs="*", help="KEY=VALUE overrides for every run")
    args = ap.parse_args()
    # "--configs a b KEY=VALUE" puts the override among the config names: move it to the overrides
    args.extra += [c for c in args.configs if "=" in c]
    args.configs = [c for c in args.configs if "=" not in c]
    out = Path(args.out).resolve()
    results: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:  # seed-major: each seed's warm starts are cached by its first run
        for name in args.configs:
            config = ROOT / "configs" / "coevolution" / f"{name}.yaml"
            if args.collect:
                res = collect(config, seed, out, args.steps)
                if res is not None:
                    results.setdefault(name, []).append(res)
                continue
            res = run_one(config, seed, out, args.steps, args.extra)
            results.setdefault(name, []).append(res)
            print(f"{name} seed {seed}: {json.dumps({k: round(v, 3) for k, v in res.items()})}", flush=True)
    md = table(results)
    if not args.collect:
        (out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
