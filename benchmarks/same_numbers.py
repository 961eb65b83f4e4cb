"""Same numbers before and after a restructuring: short fixed-seed runs of every shipped config.

``record`` runs every case through the real CLI of a checkout (``--repo``, default this one) and
writes what it logged: the metrics of each training run (``<case>.jsonl``), the output of
``marl eval`` on it (``<case>.eval.json``) and the tournament report (``tournament.json``).
``check`` runs the same cases here and compares them with a recorded folder, line for line:
every recorded key must be present with the identical value (wall-clock keys excepted); keys
the recording lacks are listed, and allowed only where ``ADDED_KEYS`` names them.

    python benchmarks/same_numbers.py record benchmarks/results/same_numbers --repo /path/to/old/checkout
    python benchmarks/same_numbers.py check benchmarks/results/same_numbers
    python benchmarks/same_numbers.py check benchmarks/results/same_numbers --only single_turn

Each case is a shipped config shrunk by overrides (``CASES``), run with one torch thread, no
progress bar, no TensorBoard. The overrides are written with the key names of the recording's
commit; when a restructuring renames a key, ``RENAMED`` maps the old override to the new one.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "run.threads=1",
    "run.progress=false",
    "run.tensorboard=false",
    "run.checkpoint_every=0",
]
SINGLE_TURN = ["run.steps=20", "run.eval_every=5", "prompts_per_step=4", "group_size=8", "eval_prompts=16"]
SELFPLAY = ["run.steps=20", "run.eval_every=10", "eval.games_per_seat=4", "final.games_per_pair=4"]
MARS2 = [  # search.mars2.SMOKE_OVERRIDES of the recording's commit, pinned (the smoke list has moved on)
    "run.steps=20",
    "run.eval_every=10",
    "problems_per_step=4",
    "train_batch=4",
    "search.nodes_per_tree=4",
    "search.expansions_per_round=2",
    "eval_tasks=4",
    "eval_nodes_per_tree=2",
    "tasks.n_train=8",
    "tasks.n_heldout=4",
    "warmstart.steps=60",
    "warmstart.steps_per_agent={}",
    "warmstart.max_param=0",
    "warmstart.batch_size=4",
    "search.max_prompt_tokens=256",
    "warmstart.refine_fraction=0",
]

CASES: dict[str, tuple[str, list[str]]] = {
    "single_turn": ("configs/single_turn.yaml", SINGLE_TURN),
    "tictactoe": ("configs/games/tictactoe.yaml", SELFPLAY),
    "tictactoe_two_sizes": ("configs/games/tictactoe_two_sizes.yaml", SELFPLAY),
    "tictactoe_pettingzoo": ("configs/games/tictactoe_pettingzoo.yaml", SELFPLAY),
    "connect_four": ("configs/games/connect_four.yaml", [*SELFPLAY, "run.steps=6", "run.eval_every=3"]),
    "connect_four_pettingzoo": (
        "configs/games/connect_four_pettingzoo.yaml",
        [*SELFPLAY, "run.steps=6", "run.eval_every=3"],
    ),
    "kuhn_poker": ("configs/games/kuhn_poker.yaml", SELFPLAY),
    "leduc_poker": ("configs/games/leduc_poker.yaml", SELFPLAY),
    "mars2_synthetic": ("configs/search/mars2_synthetic.yaml", MARS2),
    "mars2_humaneval": ("configs/search/mars2_humaneval.yaml", [*MARS2, "run.steps=4", "run.eval_every=2"]),
}
"""case -> (config, overrides); later overrides of one key win."""

TOURNAMENT = (
    "configs/games/tournament_tictactoe.yaml",
    ["games_per_pair=8", "players=[random,mcts-25,run:{run}]"],
)
"""The tournament config, with the trained tictactoe case as its ``run:`` player."""

RENAMED: dict[str, str] = {}
"""Old override key -> new key, for keys a restructuring renamed (empty while nothing was renamed)."""

_SELFPLAY_ADDED = ["train/collective_return", "eval/*/return", "eval/*/opp_return"]
"""Self-play logs the sum of the seats' returns and each evaluation's mean return for both sides
(added with the social dilemmas, where win rates say little); every recorded number is unchanged."""
ADDED_KEYS: dict[str, list[str]] = {
    "single_turn": ["credit/*"],  # the single-turn recipe now logs the credit diagnostics, as the others do
    **{
        case: _SELFPLAY_ADDED
        for case in (
            "tictactoe",
            "tictactoe_two_sizes",
            "tictactoe_pettingzoo",
            "connect_four",
            "connect_four_pettingzoo",
            "kuhn_poker",
            "leduc_poker",
        )
    },  # fmt: skip
}
"""case -> glob patterns of metric keys the restructuring added on purpose (say why beside each)."""

CHANGED_KEYS: list[str] = ["agent/*/loss", "agent/*/pg_loss", "agent/*/kl", "agent/*/entropy"]
"""Glob patterns of logged statistics whose *reporting* was fixed (present in both, values not compared):
the learner reported each update's loss twice over (and its pg_loss / kl / entropy as a row-weighted
mean of micro-batch shares); gradients and every other number are unchanged."""

WALL_CLOCK = re.compile(r"(^time/|_per_s$|/gen_s$|/sandbox_s$|/seconds$|/wall_s$)")
"""Keys that measure time, not learning: never compared."""


def _rename(overrides: list[str]) -> list[str]:
    out = []
    for o in overrides:
        k, _, v = o.partition("=")
        out.append(f"{RENAMED.get(k, k)}={v}")
    return out


def _cli(repo: Path, args: list[str], log: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "marl.cli", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    log.write_text(out.stdout + "\n----- stderr -----\n" + out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"`marl {' '.join(args)}` failed (rc {out.returncode}); log: {log}")
    print(f"  {' '.join(args[:2])}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out.stdout


def _eval_json(stdout: str) -> dict:
    start = stdout.index("{")
    return json.loads(stdout[start:])


def run_cases(repo: Path, work: Path, names: list[str], rename: bool) -> dict[str, Path]:
    """Run the chosen cases in ``repo``; returns case -> folder holding its outputs."""
    work.mkdir(parents=True, exist_ok=True)
    fix = _rename if rename else (lambda o: o)
    done: dict[str, Path] = {}
    for name in names:
        if name == "tournament":
            continue
        config, overrides = CASES[name]
        print(f"{name}:", flush=True)
        run = work / "runs" / name
        _cli(
            repo,
            [
                "train",
                config,
                *fix([*COMMON, *overrides]),
                f"run.out_dir={work / 'runs'}",
                f"run.name={name}",
                f"run.cache_dir={work / 'cache'}",
            ],
            work / f"{name}.train.log",
        )
        out = _cli(repo, ["eval", str(run)], work / f"{name}.eval.log")
        (work / f"{name}.eval.json").write_text(json.dumps(_eval_json(out), indent=1, sort_keys=True))
        (work / f"{name}.jsonl").write_text((run / "metrics.jsonl").read_text())
        done[name] = work
    if "tournament" in names:
        print("tournament:", flush=True)
        config, overrides = TOURNAMENT
        run = work / "runs" / "tictactoe"
        if not run.is_dir():
            raise RuntimeError("the tournament case needs the tictactoe case (run it in the same call)")
        _cli(
            repo,
            [
                "tournament",
                config,
                *[o.replace("{run}", str(run)) for o in overrides],
                f"out_dir={work / 'tournaments'}",
                "name=tictactoe",
            ],
            work / "tournament.log",
        )
        text = (work / "tournaments" / "tictactoe" / "tournament.json").read_text()
        report = json.loads(text.replace(str(run), "RUN"))  # the run's path differs between checkouts
        (work / "tournament.json").write_text(json.dumps(report, indent=1, sort_keys=True))
        done["tournament"] = work
    return done


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(a, b) -> bool:
    """Equal, NaN included (a metric that is NaN in both runs is the same number)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if not WALL_CLOCK.search(k)}


def compare_metrics(case: str, ref: list[dict], new: list[dict]) -> list[str]:
    """Differences between two metric files of one case (empty: the same numbers)."""
    problems = []
    if len(ref) != len(new):
        problems.append(f"{case}: {len(ref)} recorded rows, {len(new)} now")
    added = ADDED_KEYS.get(case, [])
    for i, (a, b) in enumerate(zip(ref, new)):
        a, b = _strip(a), _strip(b)
        for k, v in a.items():
            if k not in b:
                problems.append(f"{case} row {i} (step {a.get('step')}): key {k} missing")
            elif not _same(b[k], v) and not any(fnmatch.fnmatch(k, p) for p in CHANGED_KEYS):
                problems.append(f"{case} row {i} (step {a.get('step')}): {k} = {b[k]!r}, recorded {v!r}")
        for k in b.keys() - a.keys():
            if not any(fnmatch.fnmatch(k, p) for p in added):
                problems.append(f"{case} row {i} (step {a.get('step')}): new key {k} (not in ADDED_KEYS)")
    return problems


def compare_dicts(case: str, ref: dict, new: dict, added: list[str] = ()) -> list[str]:
    a, b = _strip(ref), _strip(new)
    return [f"{case}: {k} = {b.get(k)!r}, recorded {v!r}" for k, v in a.items() if not _same(b.get(k), v)] + [
        f"{case}: new key {k}" for k in b.keys() - a.keys() if not any(fnmatch.fnmatch(k, p) for p in added)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["record", "check"])
    p.add_argument("folder", help="record: where to write; check: the recorded folder")
    p.add_argument("--repo", default=str(ROOT), help="checkout whose CLI runs the cases (default: this one)")
    p.add_argument("--only", nargs="*", default=None, help="case names (default: all, tournament included)")
    p.add_argument("--work", default="", help="check: where the new runs go (default: a temporary folder)")
    args = p.parse_args(argv)
    names = args.only or [*CASES, "tournament"]
    unknown = sorted(set(names) - set(CASES) - {"tournament"})
    if unknown:
        p.error(f"unknown cases {unknown}; valid: {sorted(CASES)} and tournament")
    if "tournament" in names and "tictactoe" not in names:
        names = ["tictactoe", *names]
    repo = Path(args.repo).resolve()
    folder = Path(args.folder).resolve()
    if args.mode == "record":
        run_cases(repo, folder / "work", names, rename=False)
        for n in names:
            src = folder / "work" / (f"{n}.jsonl" if n != "tournament" else "tournament.json")
            os.replace(src, folder / src.name)
            if n != "tournament":
                os.replace(folder / "work" / f"{n}.eval.json", folder / f"{n}.eval.json")
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        (folder / "RECORDED_AT").write_text(f"{commit}\n{time.strftime('%Y-%m-%d')}\n")
        print(f"recorded {names} at {commit} into {folder}")
        return 0
    import tempfile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="same_numbers_"))
    run_cases(repo, work, names, rename=True)
    problems: list[str] = []
    for n in names:
        if n == "tournament":
            recorded = json.loads((folder / "tournament.json").read_text())
            problems += compare_dicts(n, recorded, json.loads((work / "tournament.json").read_text()))
            continue
        problems += compare_metrics(n, _rows(folder / f"{n}.jsonl"), _rows(work / f"{n}.jsonl"))
        problems += compare_dicts(
            f"{n} eval",
            json.loads((folder / f"{n}.eval.json").read_text()),
            json.loads((work / f"{n}.eval.json").read_text()),
            ADDED_KEYS.get(n, []),
        )
    recorded = (folder / "RECORDED_AT").read_text().split()[0] if (folder / "RECORDED_AT").exists() else "?"
    if problems:
        print("\n".join(problems[:200]))
        print(f"DIFFERENT from the recording at {recorded}: {len(problems)} differences ({work})")
        return 1
    print(f"SAME numbers as the recording at {recorded}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
