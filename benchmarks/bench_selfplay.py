"""Self-play throughput: decisions per second of 512 concurrent tic-tac-toe games against random.

    python benchmarks/bench_selfplay.py [--games 512] [--repeats 5] [--threads 1] [--prompt-format state]

Runs ``games.selfplay_env.play_step`` (the exact path training uses: per ply, all pending decisions of
the learner in one ``Agent.act`` call under the legal-action mask, the random player for the other
seat, every learner decision recorded as a TurnTree node, rewards set at the end) and prints
decisions/s (learner + opponent decisions, and learner only), with the share of time spent inside
generation. The first repeat is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from games.league import SnapshotPool  # noqa: E402
from games.opponents import RandomPlayer  # noqa: E402
from games.selfplay import SelfPlayConfig  # noqa: E402
from games.selfplay_env import MatchupConfig, play_step  # noqa: E402
from games.text import GameConfig  # noqa: E402
from marl.config import AgentConfig, RunSettings, SamplingConfig  # noqa: E402
from marl.policies import PolicyConfig  # noqa: E402
from marl.runner import Runner  # noqa: E402
from marl.scenario import make_agents  # noqa: E402
from marl.tree import TurnTree  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--games", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training runs use 1)")
    ap.add_argument("--prompt-format", default="state", choices=["state", "game"])
    ap.add_argument("--arch", default="qwen2", choices=["qwen2", "llama", "gpt2"])
    ap.add_argument("--unconstrained", action="store_true", help="sample without the legal-action mask")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix="bench_selfplay_")
    cfg = SelfPlayConfig(
        run=RunSettings(out_dir=out, name="bench", progress=False, tensorboard=False),
        agents={
            "lm": AgentConfig(
                policy=PolicyConfig(tiny="100k", arch=args.arch, seed=0),
                sampling=SamplingConfig(max_new_tokens=1 if args.prompt_format == "state" else 2),
            )
        },
        game=GameConfig("tic_tac_toe", constrained_sampling=not args.unconstrained),
        prompt_format=args.prompt_format,
        matchups=[MatchupConfig(["lm", "random"], args.games)],
    )
    runner = Runner(cfg, cfg.run, "selfplay")
    agents = make_agents(cfg, runner.cache_dir)
    agent = agents["lm"]
    league = SnapshotPool({"lm": agent.policy})
    gen_time = [0.0]
    act = agent.act

    def timed_act(*a, **kw):
        t = time.perf_counter()
        g = act(*a, **kw)
        gen_time[0] += time.perf_counter() - t
        return g

    agent.act = timed_act
    rng = np.random.default_rng(0)
    total = llm = 0
    wall = gen = 0.0
    for r in range(args.repeats + 1):
        tree = TurnTree(["lm"])
        gen_time[0] = 0.0
        t0 = time.perf_counter()
        played = play_step(
            tree,
            agents,
            {"random": RandomPlayer()},
            league,
            rng,
            game=cfg.game,
            matchups=cfg.matchups,
            group_size=cfg.group_size,
            invalid=cfg.invalid,
            prompt=cfg.prompt,
            hash_states=False,
        )
        dt = time.perf_counter() - t0
        if r == 0:
            continue  # warm-up
        total += played.decisions + played.opponent_decisions
        llm += played.decisions
        wall += dt
        gen += gen_time[0]
    print(
        f"self-play throughput, {args.games} concurrent tic-tac-toe games vs random, "
        f"{args.repeats} repeats, {args.threads} threads, tiny {args.arch} 100k, "
        f"prompt_format={args.prompt_format}, constrained={not args.unconstrained}"
    )
    print(f"  decisions/s (learner + random): {total / wall:,.0f}")
    print(f"  learner decisions/s:            {llm / wall:,.0f}")
    print(f"  games/s:                        {args.games * args.repeats / wall:,.0f}")
    print(
        f"  time in generation (Agent.act): {100 * gen / wall:.0f}%  ({1e6 * gen / llm:.0f} us per decision)"
    )
    print(f"  everything else per decision:   {1e6 * (wall - gen) / total:.0f} us")


if __name__ == "__main__":
    main()
