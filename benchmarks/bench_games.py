"""Per-decision cost of the text-game adapters, and batched play throughput.

    python benchmarks/bench_games.py [--games 512] [--repeats 3]

For each game: microseconds per call of legal_actions / observation / apply / build_prompt /
parse_action / state_key / clone along random games, the adapter's total per decision (legal +
observation + prompt + parse + apply), and decisions/s of ``play_games`` with 512 concurrent games
between random players (the adapter + arena overhead an LLM player would add its own time to).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from games.arena import play_games  # noqa: E402
from games.opponents import RandomPlayer  # noqa: E402
from games.parsing import parse_action  # noqa: E402
from games.prompts import build_prompt  # noqa: E402
from games.text import make_game  # noqa: E402


def per_call_costs(name: str, n_games: int) -> dict[str, float]:
    """Mean microseconds per call, measured over all decisions of ``n_games`` random games."""
    rng = np.random.default_rng(0)
    tot = dict.fromkeys(
        ["legal_actions", "observation", "build_prompt", "parse_action", "apply", "state_key", "clone"], 0.0
    )
    n = 0
    pc = time.perf_counter
    for s in range(n_games):
        g = make_game(name, s)
        while not g.is_terminal():
            p = g.current_player()
            t0 = pc()
            legal = g.legal_actions()
            t1 = pc()
            g.observation(p)
            t2 = pc()
            build_prompt(g, p, "compact")
            t3 = pc()
            a = parse_action(" " + legal[int(rng.integers(len(legal)))] + "\n", legal)
            t4 = pc()
            g.state_key()
            t5 = pc()
            g.clone()
            t6 = pc()
            g.apply(a)
            t7 = pc()
            for k, dt in zip(tot, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t7 - t6, t5 - t4, t6 - t5)):
                tot[k] += dt
            n += 1
    out = {k: 1e6 * v / n for k, v in tot.items()}
    # build_prompt calls observation + legal_actions itself; a decision needs prompt + parse + apply
    out["per_decision"] = out["build_prompt"] + out["parse_action"] + out["apply"]
    return out


def batched_throughput(name: str, n_games: int, repeats: int) -> float:
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        recs = play_games(name, [RandomPlayer(), RandomPlayer()], n_games, seed=r)
        dt = time.perf_counter() - t0
        best = max(best, sum(x.num_decisions for x in recs) / dt)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=int, default=512, help="concurrent games for the batched figure")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the batched run (best is reported)")
    ap.add_argument(
        "--names",
        nargs="*",
        default=[
            "tic_tac_toe",
            "tictactoe_v3",
            "connect_four",
            "kuhn_poker",
            "leduc_poker",
            "connect_four_v3",
        ],
    )
    args = ap.parse_args()
    cols = [
        "legal_actions",
        "observation",
        "build_prompt",
        "parse_action",
        "apply",
        "state_key",
        "clone",
        "per_decision",
    ]
    print(f"{'game':16s} " + " ".join(f"{c:>13s}" for c in cols) + f" {'play_games dec/s':>17s}")
    for name in args.names:
        costs = per_call_costs(name, 200)
        thr = batched_throughput(name, args.games, args.repeats)
        print(f"{name:16s} " + " ".join(f"{costs[c]:11.1f}us" for c in cols) + f" {thr:17,.0f}")
    print(
        f"(microseconds per call along random games; play_games: {args.games} concurrent games, "
        f"random players, best of {args.repeats}; CPU {os.cpu_count()} cores, shared)"
    )


if __name__ == "__main__":
    main()
