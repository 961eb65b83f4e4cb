"""Naive training vs Advantage Alignment on the iterated prisoner's dilemma (or Trust-and-Split) with
the tiny LM, 3 seeds.

    python benchmarks/bench_dilemmas.py [--seeds 0 1 2] [--steps 100] [--games 200] [--out /tmp/bench_dil]
        [--set KEY=VALUE ...]   (overrides applied to both configs, e.g. --set agents.lm.optim.lr=3e-4)
        [--probe-only]          (probe the runs already in --out again, no training)
        [--methods advalign]    (train / probe only these)
        [--trace]               (print and save P(C after C), P(C after D) after every training step)
        [--exploiter-iters 40]  (0: no trained exploiter column)
        [--exploiter-eval-games 200]  (greedy games that score it)
        [--exact-br]            (trust_and_split: the exact best response, games.split_best_response)
        [--warm-check]          (the runs in --out: their warm start's greedy moves against the teacher's
                                 on held-out states, no training)
    python benchmarks/bench_dilemmas.py --tabular   (the two rules on a tabular policy, no LM; seconds)
    python benchmarks/bench_dilemmas.py --tabular --game trust_and_split   (or split_no_press)
        [--tabular-steps 400] [--betas 2 0.02] [--truth-init 0]   (truth-init: start logit of the true claim)
        [--time-step turn]      (round: one credit step per round, as credit.time_step=round)
        [--fair-init 0]         (start logit of the fixed strategy fair's move in every state)
        [--whiten]              (credit whitened by its batch std, as credit.normalizer=batch_per_agent)
        [--curve 0]             (also print the sampled collective every N steps)
    python benchmarks/bench_dilemmas.py --game trust_and_split [--steps N] [--games 100] ...

Trains ``configs/dilemmas/ipd_naive.yaml`` (rule loo_returns) and ``configs/dilemmas/ipd_advalign.yaml``
(rule advantage_alignment) through the self-play recipe, seed by seed, then probes each final policy
as it samples (temperature 1), in both seats, and prints one table (mean and min..max over seeds):

- ``coop``: the policy's cooperation rate in self-play; ``collective``: the sum of both seats' returns
  in self-play (mutual cooperation: 3 x rounds x 2; mutual defection: rounds x 2);
- ``vs X``: the policy's mean return against fixed strategy X (``games`` games per seat), and the policy's
  cooperation rate against tit-for-tat;
- ``AD gain``: always-defect's return against the policy minus its return against tit-for-tat
  (``rounds + 4``): the issue asks for <= 0;
- ``exploit``: exact best-response value against the policy (``games.dilemma_probe``, computed from the
  LM's cooperation probabilities at every observation) minus mutual cooperation;
- ``trained exploit``: the same gain for an exploiter *trained* against the frozen sampling policy
  (``games.dilemma_exploiter``: tabular softmax over the observation, REINFORCE, ``--exploiter-iters``
  batches of 64 games, greedy evaluation over 200 games); in expectation at most ``exploit`` (a
  200-game mean can land a little above it);
- ``P(C after C)``, ``P(C after D)``: the policy's probability of cooperating after the co-player cooperated /
  defected (rounds 2.., both seats, both own last moves): tit-for-tat is 1 / 0.

``--game trust_and_split`` trains ``configs/dilemmas/trust_and_split_naive.yaml`` and
``configs/dilemmas/trust_and_split.yaml`` instead (``--steps`` defaults to the configs' own) and
reports, for the sampling policy: ``collective`` (self-play, both seats; winner keeps all 1000, both
grab 550), ``concede`` (fraction of self-play rounds whose loser kept nothing), ``loser keep`` /
``winner keep`` (mean proposals), ``truth`` (fraction of true claims), ``vs X`` (its return against
fixed strategy X) and ``trained exploit`` (``games.dilemma_exploiter``: ``--exploiter-iters`` batches
of 128 games at lr 0.3, greedy evaluation over 200 games, minus the policy's self-play share S / 2).
With ``--exact-br`` also ``exact collective`` (the policy's expected self-play collective, exact),
``best response`` (the exact best response's value against it, both seats) and ``exact exploit``
(their difference from S / 2, ``games.split_best_response``; about 10 to 30 minutes a policy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import games.selfplay as selfplay  # noqa: E402
from games.arena import play_games  # noqa: E402
from games.dilemma_exploiter import train_exploiter  # noqa: E402
from games.dilemma_probe import (  # noqa: E402
    exploitability,
    policy_coop_table,
    split_round_stats,
    tabular_selfplay,
    tabular_split_selfplay,
)
from games.dilemmas import dilemma_params  # noqa: E402
from games.opponents import make_opponent  # noqa: E402
from games.selfplay import SelfPlayConfig, train  # noqa: E402
from games.selfplay_env import llm_player  # noqa: E402
from games.split_best_response import split_best_response  # noqa: E402
from marl.config import load_config  # noqa: E402
from marl.runner import Runner  # noqa: E402
from marl.scenario import load_latest, make_agents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ipd": {"naive": "configs/dilemmas/ipd_naive.yaml", "advalign": "configs/dilemmas/ipd_advalign.yaml"},
    "trust_and_split": {
        "naive": "configs/dilemmas/trust_and_split_naive.yaml",
        "advalign": "configs/dilemmas/trust_and_split.yaml",
    },
}
METHODS = CONFIGS["ipd"]
FIXED = ["always-cooperate", "always-defect", "tit-for-tat", "grim-trigger"]


def reciprocity(cfg: SelfPlayConfig, policy, temperature: float) -> tuple[list, dict[str, float]]:
    """Both seats' cooperation tables and P(C after C), P(C after D) (rounds 2.., both seats, both own
    last moves)."""
    p = dilemma_params(cfg.game.name, cfg.game.params)
    rounds, payoffs = int(p["rounds"]), p["payoffs"]
    tables = [
        policy_coop_table(policy, cfg.game.name, payoffs, rounds, s, temperature=temperature) for s in (0, 1)
    ]
    out = {}
    for them in ("C", "D"):
        out[f"P(C after {them})"] = float(
            np.mean([tb[r][m + them] for tb in tables for r in range(1, rounds) for m in "CD"])
        )
    return tables, out


def probe(
    cfg: SelfPlayConfig, agent, games: int, seed: int, exploiter_iters: int = 40, exploiter_eval: int = 200
) -> dict[str, float]:
    """Self-play and fixed-strategy games of the sampling policy, and its exact exploitability."""
    p = dilemma_params(cfg.game.name, cfg.game.params)
    rounds, payoffs = int(p["rounds"]), p["payoffs"]
    lm = llm_player("lm", agent, cfg.prompt, greedy=False)
    out: dict[str, float] = {}
    recs = play_games(cfg.game, [lm, lm], games, seed=seed)
    out["coop"] = float(np.mean([np.mean(r.stats["coop"]) for r in recs]))
    out["collective"] = float(np.mean([sum(r.returns) for r in recs]))
    for spec in FIXED:
        opp = make_opponent(spec, cfg.game.name)
        ret, opp_ret, coop = [], [], []
        for seat in (0, 1):
            seats = [lm, opp] if seat == 0 else [opp, lm]
            for r in play_games(cfg.game, seats, games, seed=seed + 1 + seat):
                ret.append(r.returns[seat])
                opp_ret.append(r.returns[1 - seat])
                coop.append(r.stats["coop"][seat])
        out[f"vs {spec}"] = float(np.mean(ret))
        if spec == "tit-for-tat":
            out["coop vs TFT"] = float(np.mean(coop))
        if spec == "always-defect":
            out["AD gain"] = float(np.mean(opp_ret)) - (rounds + 4.0)  # AD vs TFT: 5 + (rounds - 1) * 1
    tables, recip = reciprocity(cfg, agent.policy, agent.cfg.sampling.temperature)
    out["exploit"] = float(np.mean([exploitability(payoffs, rounds, tb) for tb in tables]))
    if exploiter_iters > 0:
        _, res = train_exploiter(
            cfg.game, lm, iters=exploiter_iters, batch=64, eval_games=exploiter_eval, seed=seed
        )
        out["trained exploit"] = res.exploit
    out.update(recip)
    return out


def probe_split(
    cfg: SelfPlayConfig,
    agent,
    games: int,
    seed: int,
    exploiter_iters: int = 40,
    exploiter_eval: int = 200,
    exact_br: bool = False,
) -> dict[str, float]:
    """Trust-and-Split: self-play (collective, round statistics), returns against the fixed strategies
    and the trained exploiter's gain over the policy's self-play share, for the sampling policy."""
    lm = llm_player("lm", agent, cfg.prompt, greedy=False)
    recs = play_games(cfg.game, [lm, lm], games, seed=seed)
    out: dict[str, float] = {"collective": float(np.mean([sum(r.returns) for r in recs]))}
    out.update(split_round_stats(cfg.game, recs))
    for spec in FIXED:
        opp = make_opponent(spec, cfg.game.name)
        ret = []
        for seat in (0, 1):
            seats = [lm, opp] if seat == 0 else [opp, lm]
            ret += [r.returns[seat] for r in play_games(cfg.game, seats, games, seed=seed + 1 + seat)]
        out[f"vs {spec}"] = float(np.mean(ret))
    if exploiter_iters > 0:
        _, res = train_exploiter(
            cfg.game,
            lm,
            iters=exploiter_iters,
            batch=128,
            lr=0.3,
            eval_games=exploiter_eval,
            seed=seed,
            reference=out["collective"] / 2.0,
        )
        out["exploiter"] = res.exploiter_return
        out["trained exploit"] = res.exploit
    if exact_br:
        br = split_best_response(cfg.game, lm)
        out["exact collective"] = br.selfplay_collective
        out["best response"] = br.exploiter_return
        out["exact exploit"] = br.exploit
    return out


class Trace:
    """Wraps the recipe's learning step to probe P(C after C), P(C after D) after every update."""

    def __init__(self, cfg: SelfPlayConfig) -> None:
        self.cfg, self.rows = cfg, []
        self._orig = selfplay.learn_agents

    def __enter__(self) -> Trace:
        def learn(agents, batches, credit, *, step):
            m = self._orig(agents, batches, credit, step=step)
            a = next(iter(agents.values()))
            _, rec = reciprocity(self.cfg, a.policy, a.cfg.sampling.temperature)
            rec = {"step": step, **rec}
            self.rows.append(rec)
            print(
                f"  step {step}: P(C|C) {rec['P(C after C)']:.3f} P(C|D) {rec['P(C after D)']:.3f}",
                flush=True,
            )
            return m

        selfplay.learn_agents = learn
        return self

    def __exit__(self, *exc) -> None:
        selfplay.learn_agents = self._orig


def run_one(
    config: str, seed: int, steps: int, out_dir: str, extra: list[str], trace: bool = False
) -> tuple[SelfPlayConfig, dict]:
    overrides = [
        f"run.seed={seed}",
        f"agents.lm.policy.seed={seed + 1}",  # the seed also changes the initial weights
        f"run.steps={steps}",
        f"run.out_dir={out_dir}",
        "run.progress=false",
        f"run.eval_every={steps}",
        f"run.checkpoint_every={steps}",
        "final.opponents=[]",
        *extra,
    ]
    cfg = load_config(SelfPlayConfig, [str(ROOT / config)], overrides)
    runner = Runner(cfg, cfg.run, cfg.recipe)
    if trace:
        with Trace(cfg) as tr:
            train(cfg, runner)
        (runner.dir / "trace.json").write_text(json.dumps(tr.rows))
    else:
        train(cfg, runner)
    agents, _ = load_latest(cfg, Runner(cfg, cfg.run, cfg.recipe, resume=runner.dir))
    return cfg, agents


def load_run(run_dir: Path) -> tuple[SelfPlayConfig, dict]:
    """A finished run's config and agents (its latest checkpoint), for ``--probe-only``."""
    cfg = load_config(SelfPlayConfig, [str(run_dir / "config.yaml")], [])
    return cfg, load_latest(cfg, Runner(cfg, cfg.run, cfg.recipe, resume=run_dir))[0]


class _Decisions:
    """A fixed player that records (a copy of the game, the seat, its move) for every decision."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.rows = inner, inner.name, []

    def act(self, games, players, rng):
        moves = self.inner.act(games, players, rng)
        self.rows += [(g.clone(), p, m) for g, p, m in zip(games, players, moves)]
        return moves


def warm_check(run_dir: Path, games: int, seed: int) -> dict[str, float]:
    """The warm start of a finished run (loaded from its cache, before any RL step) played greedily on
    held-out states against its teacher's move: the states of ``games`` games of the teacher against
    itself and of ``honest`` against itself (true claims, random keeps: last rounds the teacher never
    makes), from seeds the warm start did not use. Returns per source the fraction of claims and of
    keeps where the greedy move is the teacher's, and the fraction of states whose prompt was not
    among the warm start's pairs."""
    from games.league import decision_prompt
    from games.selfplay_warm import imitation_warm_start, teacher_pairs

    cfg = load_config(SelfPlayConfig, [str(run_dir / "config.yaml")], [])
    runner = Runner(cfg, cfg.run, cfg.recipe, resume=run_dir)
    agents = make_agents(cfg, runner.cache_dir)
    ws = cfg.warmstart
    warm = imitation_warm_start(
        agents, cfg.game, cfg.prompt, ws, seed=cfg.run.seed, cache_dir=runner.cache_dir
    )
    if not warm.get("warmstart/lm/cached"):
        raise RuntimeError(f"{run_dir}: no cached warm start (trained again instead)")
    seen = {p for p, _ in teacher_pairs(cfg.game, cfg.prompt, ws.teacher, ws.games, cfg.run.seed)}
    lm = llm_player("lm", agents["lm"], cfg.prompt, greedy=True)
    teacher = make_opponent(ws.teacher, cfg.game.name)
    out: dict[str, float] = {}
    for source in dict.fromkeys([ws.teacher, "honest"]):
        rec = _Decisions(make_opponent(source, cfg.game.name))
        play_games(cfg.game, [rec, rec], games, seed=seed)
        rng = np.random.default_rng(seed)
        want = [teacher.act([g], [p], rng)[0] for g, p, _ in rec.rows]
        got: list[str] = []
        for i in range(0, len(rec.rows), 256):
            chunk = rec.rows[i : i + 256]
            got += lm.act([g for g, _, _ in chunk], [p for _, p, _ in chunk], rng)
        claim = np.array([w in ("R", "P", "S") for w in want])
        ok = np.array([a == b for a, b in zip(got, want)])
        new = np.mean(
            [
                decision_prompt(g, p, cfg.prompt.prompt_format, cfg.prompt.prompt_style) not in seen
                for g, p, _ in rec.rows
            ]
        )
        out[f"{source}: claims"] = float(ok[claim].mean()) if claim.any() else float("nan")
        out[f"{source}: keeps"] = float(ok[~claim].mean())
        out[f"{source}: n keeps"] = float((~claim).sum())
        out[f"{source}: unseen"] = float(new)
    return out


def tabular_split(
    game: str,
    seeds: list[int],
    steps: int = 400,
    lr: float = 0.05,
    truth_init: float = 0.0,
    betas: Sequence[float] = (2.0, 0.02),
    time_step: str = "turn",
    fair_init: float = 0.0,
    whiten: bool = False,
    curve_every: int = 0,
) -> None:
    """The credit rules on a tabular policy in Trust-and-Split / the no-press split
    (``games.dilemma_probe.tabular_split_selfplay``; gamma 0.96, roots of G = 8, 64 games a step):
    naive, then AA at each of ``betas``: 2 is the earlier LM configs' value (rewards in points), 0.02
    AdAlignLLM's beta 2 with rewards divided by 100 (scaling rewards by c scales A1 by c and the AA
    term by c^2, so under a whitening normaliser it is beta -> c * beta). ``time_step``: the credit's
    time step, each turn (gamma per turn) or each round (gamma per round), as ``credit.time_step``.
    ``fair_init``: start logit of ``fair``'s move; ``whiten``: credit divided by its batch std;
    ``curve_every``: a last column with the sampled collective every that many steps."""
    press = game == "trust_and_split"
    print(
        f"tabular self-play, {game} 10 rounds, {steps} steps, lr {lr}, truth_init {truth_init:g}, "
        f"time step {time_step}"
        + (f", fair_init {fair_init:g}" if fair_init else "")
        + (", whitened" if whiten else "")
    )
    head = "| rule | beta | seed | collective | concede | loser keep | winner keep | truth |"
    rule_line = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if curve_every:
        head += f" collective every {curve_every} steps |"
        rule_line += "---|"
    print(head + "\n" + rule_line)
    rows = [("loo_returns", False, 0.0)] + [("advantage_alignment", True, float(b)) for b in betas]
    for rule, align, beta in rows:
        for seed in seeds:
            _, curve = tabular_split_selfplay(
                align,
                press=press,
                beta=beta,
                steps=steps,
                lr=lr,
                seed=seed,
                truth_init=truth_init,
                time_step=time_step,
                fair_init=fair_init,
                whiten=whiten,
            )
            c = curve[-1]
            b = f"{beta:g}" if align else "-"
            row = (
                f"| {rule} | {b} | {seed} | {c['collective']:.0f} | {c['concede']:.2f} "
                f"| {c['loser_keep']:.2f} | {c['winner_keep']:.2f} | {c['truth']:.2f} |"
            )
            if curve_every:
                row += " " + ", ".join(f"{x['collective']:.0f}" for x in curve[::curve_every]) + " |"
            print(row, flush=True)


def tabular(seeds: list[int], steps: int = 300, lr: float = 0.01) -> None:
    """The credit rules of both configs (beta 2, gamma 0.96, roots of G = 8, 64 games a step) on a
    tabular softmax policy in self-play (``games.dilemma_probe.tabular_selfplay``): whether the rule
    itself learns reciprocity, apart from the LM."""
    print(f"tabular self-play, IPD 5 rounds, {steps} steps, lr {lr}, Adam per table entry")
    print("| rule | seed | coop | P(C after C) | P(C after D) |\n|---|---:|---:|---:|---:|")
    for rule, align in (("loo_returns", False), ("advantage_alignment", True)):
        for seed in seeds:
            _, curve = tabular_selfplay(align, steps=steps, lr=lr, seed=seed)
            c = curve[-1]
            print(f"| {rule} | {seed} | {c['coop']:.2f} | {c['p_cc']:.2f} | {c['p_cd']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--game", default="ipd", choices=["ipd", "trust_and_split", "split_no_press"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="training steps (IPD 100; T&S: the configs')")
    ap.add_argument("--games", type=int, default=200, help="probe games per seat")
    ap.add_argument("--out", default=None)
    ap.add_argument("--probe-only", action="store_true", help="probe the runs already in --out, no training")
    ap.add_argument("--warm-check", action="store_true", help="the runs in --out: warm start vs its teacher")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="config override KEY=VALUE")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--trace", action="store_true", help="IPD: probe reciprocity after every training step")
    ap.add_argument("--exploiter-iters", type=int, default=40, help="trained exploiter batches (0: none)")
    ap.add_argument(
        "--exploiter-eval-games", type=int, default=200, help="greedy games that score the trained exploiter"
    )
    ap.add_argument("--exact-br", action="store_true", help="trust_and_split: the exact best response too")
    ap.add_argument("--tabular", action="store_true", help="the rules on a tabular policy instead (no LM)")
    ap.add_argument("--tabular-steps", type=int, default=None, help="tabular steps (IPD 300, split 400)")
    ap.add_argument("--betas", type=float, nargs="+", default=[2.0, 0.02], help="tabular split: AA betas")
    ap.add_argument(
        "--truth-init", type=float, default=0.0, help="tabular Trust-and-Split: start logit of the true claim"
    )
    ap.add_argument(
        "--fair-init",
        type=float,
        default=0.0,
        help="tabular split: start logit of fair's move in every state",
    )
    ap.add_argument("--whiten", action="store_true", help="tabular split: whiten the credit (batch std)")
    ap.add_argument("--curve", type=int, default=0, help="tabular split: collective every N steps too")
    ap.add_argument(
        "--time-step", default="turn", choices=["turn", "round"], help="tabular split: the credit's time step"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.tabular:
        if args.game == "ipd":
            tabular(args.seeds, steps=args.tabular_steps or 300)
        else:
            tabular_split(
                args.game,
                args.seeds,
                steps=args.tabular_steps or 400,
                truth_init=args.truth_init,
                betas=args.betas,
                time_step=args.time_step,
                fair_init=args.fair_init,
                whiten=args.whiten,
                curve_every=args.curve,
            )
        return
    if args.game not in CONFIGS:
        ap.error(f"--game {args.game} has no LM configs; valid: {sorted(CONFIGS)} (or --tabular)")
    if args.trace and args.game != "ipd":
        ap.error("--trace probes IPD reciprocity; it has no Trust-and-Split counterpart")
    methods = CONFIGS[args.game]
    out = args.out or tempfile.mkdtemp(prefix="bench_dilemmas_")
    if args.warm_check:
        for method in args.methods:
            for seed in args.seeds:
                run_dir = sorted(Path(out, method).glob(f"selfplay-s{seed}-*"))[-1]
                res = warm_check(run_dir, args.games, 2000 + seed)
                print(
                    f"{method} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True
                )
        return
    results: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
    t0 = time.perf_counter()
    for method in args.methods:
        config = methods[method]
        steps = args.steps
        if steps is None:
            steps = (
                100 if args.game == "ipd" else load_config(SelfPlayConfig, [str(ROOT / config)], []).run.steps
            )
        for seed in args.seeds:
            if args.probe_only:
                cfg, agents = load_run(sorted(Path(out, method).glob(f"selfplay-s{seed}-*"))[-1])
            else:
                cfg, agents = run_one(config, seed, steps, f"{out}/{method}", args.extra, args.trace)
            fn = probe if args.game == "ipd" else probe_split
            extra = {"exact_br": True} if args.exact_br and args.game == "trust_and_split" else {}
            probe_args = (args.games, 1000 + seed, args.exploiter_iters, args.exploiter_eval_games)
            res = fn(cfg, agents["lm"], *probe_args, **extra)
            results[method].append(res)
            print(f"{method} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
    cols = list(results[args.methods[0]][0])
    print(
        f"\n{args.game} ({cfg.game.params}), {steps} steps, seeds {args.seeds}, "
        f"{time.perf_counter() - t0:.0f}s"
    )
    print("| method | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for method, rows in results.items():
        cells = []
        for c in cols:
            v = np.array([r[c] for r in rows])
            cells.append(f"{v.mean():.2f} ({v.min():.2f}..{v.max():.2f})")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
