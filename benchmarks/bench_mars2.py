"""MARS² search versus independent sampling at fixed weights, same node budget per problem.

Loads the agents of a mars2 config (warm-started, from the warm-start cache when present) or of a
run's latest checkpoint, grows one tree per held-out problem with each selection rule and prints
pass@1 (best node by public tests, judged on private tests) and pass@N (any node passes the
private tests), averaged over several seeds, and each search rule's seed-by-seed difference from
independent sampling with its standard error.

    python benchmarks/bench_mars2.py configs/search/mars2_synthetic.yaml [--seeds 5] [--budget 16]
    python benchmarks/bench_mars2.py CONFIG --run-dir RUN [--step N]   # a run's checkpoint
    python benchmarks/bench_mars2.py CONFIG --refine-vs-fresh 8   # how often refining beats writing afresh
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from marl.config import load_config  # noqa: E402
from marl.rundir import Checkpointer  # noqa: E402
from marl.runner import Runner  # noqa: E402
from marl.scenario import make_agents  # noqa: E402
from marl.seeding import derive_seed  # noqa: E402
from marl.tree import TurnTree  # noqa: E402
from search import mars2  # noqa: E402
from search.engine import SearchConfig, grow_trees, style_of, write_programs  # noqa: E402
from search.loaders import load_tasks  # noqa: E402
from search.metrics import family_metrics, program_nodes, tree_metrics  # noqa: E402
from search.prompts import failures_of  # noqa: E402
from search.sandbox import Sandbox  # noqa: E402
from search.tasks import task_families  # noqa: E402
from search.warmstart import warm_start  # noqa: E402


def search_once(agents, tasks, sandbox, search, seed, budget):
    tree = TurnTree(list(agents))
    rng = np.random.default_rng(derive_seed(seed, "bench-select"))
    gens = {n: torch.Generator().manual_seed(derive_seed(seed, "bench-gen", n)) for n in agents}
    t0 = time.perf_counter()
    roots, _ = grow_trees(tree, tasks, agents, sandbox, search, rng, budget=budget, generators=gens)
    nodes = program_nodes(tree, roots)
    task_of = {int(r): t for r, t in zip(roots, tasks)}
    priv = sandbox.run_many(
        [(tree.payloads[i].data["program"], task_of[int(tree.root_of()[i])]) for i in nodes], "private"
    )
    ok = np.array([r.status == "passed" for r in priv])
    m = tree_metrics(tree, roots, ok, "b")
    mf = family_metrics(tree, roots, tasks, ok, "b")
    by_family = {f: (mf[f"b/{f}/pass@1"], mf[f"b/{f}/pass@N"]) for f in task_families(tasks)}
    return m["b/pass@1"], m["b/pass@N"], time.perf_counter() - t0, by_family


def refine_vs_fresh(agents, tasks, sandbox, search, k, seed):
    """Is refining worth a node? For every (author, refiner) pair of agents: the share of the author's
    failing programs (``k`` fresh ones per problem) whose refinement by the refiner passes the public
    tests, next to the share of the refiner's own fresh programs that pass on the same problems."""
    gens = {n: torch.Generator().manual_seed(derive_seed(seed, "bench-refine", n)) for n in agents}
    fresh = {}
    for name, agent in agents.items():
        requests = [(t, None, []) for t in tasks for _ in range(k)]
        _, progs = write_programs(agent, style_of(search, name), requests, search, gens[name])
        res = sandbox.run_many([(p, t) for p, (t, _, _) in zip(progs, requests)], "public")
        ok = np.array([r.fraction >= search.solved_at for r in res]).reshape(len(tasks), k)
        fresh[name] = (progs, res, ok)
        print(f"{name}: {100 * ok.mean():5.1f} % of fresh programs pass the public tests")
    for author, (progs, res, ok) in fresh.items():
        failed = np.flatnonzero(~ok.reshape(-1)).tolist()
        if not failed:
            continue
        for refiner, agent in agents.items():
            requests = [(tasks[i // k], progs[i], failures_of(res[i])) for i in failed]
            _, fixed = write_programs(agent, style_of(search, refiner), requests, search, gens[refiner])
            res2 = sandbox.run_many([(p, t) for p, (t, _, _) in zip(fixed, requests)], "public")
            solved = np.array([r.fraction >= search.solved_at for r in res2])
            base = np.array([fresh[refiner][2][i // k].mean() for i in failed])
            print(
                f"{author}'s {len(failed)} failing programs refined by {refiner}: "
                f"{100 * solved.mean():5.1f} % pass; {refiner}'s fresh programs for the same problems: "
                f"{100 * base.mean():5.1f} %"
            )
            fam = np.array([tasks[i // k].meta.get("family") for i in failed])
            for f in task_families(tasks):
                sel = fam == f
                if sel.any():
                    print(
                        f"  {f:10s} {sel.sum():4d} programs: refined {100 * solved[sel].mean():5.1f} %,"
                        f" fresh {100 * base[sel].mean():5.1f} %"
                    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument(
        "--run-dir", help="load the agents of this run's latest checkpoint instead of the warm start"
    )
    ap.add_argument("--step", type=int, default=0, help="with --run-dir: this checkpoint, not the latest")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=0, help="nodes per tree (0 = the config's)")
    ap.add_argument(
        "--refine-vs-fresh",
        type=int,
        default=0,
        metavar="K",
        help="also compare refinement with fresh programs (K fresh programs per problem and agent)",
    )
    ap.add_argument(
        "--selections",
        default="thompson,uct,independent",
        help="comma-separated selection rules to compare (thompson, uct, independent)",
    )
    args = ap.parse_args()
    selections = [s.strip() for s in args.selections.split(",") if s.strip()]
    unknown = sorted(set(selections) - {"thompson", "uct", "independent"})
    if unknown or not selections:
        ap.error(f"--selections: unknown rule(s) {unknown} (choose from thompson, uct, independent)")
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(
        mars2.Config, [args.config], ["run.progress=false", "run.tensorboard=false", *args.overrides]
    )
    torch.set_num_threads(max(cfg.run.threads, 1))
    runner = Runner(cfg, cfg.run, "mars2", resume=args.run_dir)
    agents = make_agents(cfg, runner.cache_dir)
    train_tasks, heldout = load_tasks(cfg.tasks)
    budget = args.budget or cfg.search.nodes_per_tree
    with Sandbox(cfg.sandbox) as sandbox:
        if args.run_dir and args.step:
            path = Path(args.run_dir) / "checkpoints" / f"step_{args.step:07d}"
            if not path.is_dir():
                raise SystemExit(f"no checkpoint {path} (a run keeps its last run.keep_checkpoints ones)")
            print(f"agents from {args.run_dir} step {Checkpointer.load(path, agents)['step']}")
        elif args.run_dir:
            print(f"agents from {args.run_dir} step {runner.load_latest(agents)}")
        else:
            warm_start(
                agents,
                train_tasks,
                sandbox,
                cfg.warmstart,
                cfg.search,
                seed=cfg.run.seed,
                cache_dir=runner.cache_dir,
            )
            print("agents: warm-started (cached)")
        print(
            f"{len(heldout)} held-out problems, {budget} nodes per tree, {args.seeds} seeds, "
            f"torch threads {torch.get_num_threads()}"
        )
        per_rule = {}
        fams = task_families(heldout)
        count = {f: sum(t.meta.get("family") == f for t in heldout) for f in fams}
        for sel in selections:
            search = SearchConfig(**{**cfg.search.__dict__, "selection": sel})
            runs = [search_once(agents, heldout, sandbox, search, s, budget) for s in range(args.seeds)]
            res = np.array([r[:3] for r in runs])
            # (seeds, 1 + families, 2): all problems, then each family's
            per_rule[sel] = np.array([[r[:2], *(r[3][f] for f in fams)] for r in runs])
            p1, pn, sec = res.mean(0)
            sd = res.std(0)
            print(
                f"{sel:12s} pass@1 {100 * p1:5.1f} ± {100 * sd[0]:4.1f}   "
                f"pass@N {100 * pn:5.1f} ± {100 * sd[1]:4.1f}   {sec:5.1f} s/search"
            )
            for j, fam in enumerate(fams, 1):
                f1, fn = per_rule[sel][:, j].mean(0)
                print(f"  {fam:10s} pass@1 {100 * f1:5.1f}   pass@N {100 * fn:5.1f}   {count[fam]} problems")
        if "independent" in per_rule and args.seeds > 1:
            # seed by seed differences (same weights, same problems): mean and its standard error
            for sel, res in per_rule.items():
                if sel == "independent":
                    continue
                for j, what in enumerate(["all problems", *fams]):
                    d = 100 * (res[:, j] - per_rule["independent"][:, j])
                    se = d.std(0, ddof=1) / np.sqrt(len(d))
                    print(
                        f"{sel} - independent ({what}): pass@1 {d[:, 0].mean():+5.2f} (SE {se[0]:.2f})   "
                        f"pass@N {d[:, 1].mean():+5.2f} (SE {se[1]:.2f})   over {len(d)} seeds"
                    )
        if args.refine_vs_fresh > 0:
            refine_vs_fresh(agents, heldout, sandbox, cfg.search, args.refine_vs_fresh, cfg.run.seed)


if __name__ == "__main__":
    main()
