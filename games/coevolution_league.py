"""The league side of a co-evolution step: which instances each step plays (attack sources, frozen
attacker snapshots, frozen defender teams), the teams and attack sources by name, whether an agent's
batch carries a learning signal, and the step's training metrics. Used by ``games.coevolution``."""

from __future__ import annotations

import numpy as np
import torch

from games.coevolution_attacks import make_templates
from games.coevolution_env import FrozenActor, Instance, make_canary
from games.league import SnapshotPool
from marl.digits import DigitTask


def draw_instances(cfg, task: DigitTask, league: SnapshotPool, rng) -> list[Instance]:
    """The step's instances: training tasks, canaries, entry points and attack sources."""
    env, templates, out = cfg.env, make_templates("train"), []
    for k in range(cfg.tasks_per_step):
        p = task.train[int(rng.integers(len(task.train)))]
        inst = Instance(
            p, make_canary(rng, env.canary_length), env.entry_points[int(rng.integers(len(env.entry_points)))]
        )
        if rng.random() >= cfg.attack_fraction:
            pass  # a clean instance: the defenders' task alone
        elif cfg.attack_source == "templates":
            inst.source, inst.template = "template", templates[int(rng.integers(len(templates)))]
        elif cfg.attack_source == "agents":
            inst.source = cfg.attackers[k % len(cfg.attackers)]
            if rng.random() < cfg.league.opponent_fraction:
                inst.source = league.sample(inst.source, rng, 1)[0].name
            elif cfg.league.defender_fraction > 0 and rng.random() < cfg.league.defender_fraction:
                # drawn only when on, so the instance stream of a run without it is unchanged
                inst.defender_step = league.sample(cfg.defenders["planner"], rng, 1)[0].step
        out.append(inst)
    return out


def has_signal(batch) -> bool:
    """Whether a batch carries a learning signal: some non-zero advantage on a trained token."""
    return bool(((batch.advantages != 0) & (batch.loss_mask > 0)).any())


def defender_team(cfg, agents, league: SnapshotPool, step: int, gen: torch.Generator) -> dict:
    """The league's frozen defender team of ``step``: role -> FrozenActor (nodes that train nobody)."""
    team = {}
    for role, name in cfg.defenders.items():
        snap = next((s for s in league.snapshots(name) if s.step == step), None)
        if snap is None:
            raise KeyError(f"the league has no snapshot of defender {name!r} at step {step}")
        team[role] = FrozenActor(snap.policy, agents[name], gen, snap.name)
    return team


def attack_sources(cfg, agents, league: SnapshotPool, gen: torch.Generator) -> dict:
    """Live attackers and every frozen snapshot of the league, by source name."""
    out = {n: agents[n] for n in cfg.attackers}
    for n in cfg.attackers:
        out.update({s.name: FrozenActor(s.policy, agents[n], gen, s.name) for s in league.snapshots(n)})
    return out


def round_metrics(rounds: dict, instances, cfg) -> dict[str, float]:
    """Training metrics of one step: ``train/asr``, ``train/acc_clean``, ``train/tokens_per_episode``
    over the live defenders' episodes; ``train/asr_frozen_defenders`` over those of the frozen teams;
    ``train/attack_reward/<attacker>``: each live attacker's mean success over all its episodes (its
    learning signal: all 0 means no update)."""
    out: dict[str, float] = {}
    live = rounds.get(None)
    if live is not None:
        att = live.attacked
        out["train/asr"] = float(live.success[att].mean()) if att.any() else 0.0
        out["train/acc_clean"] = float(live.correct[~att].mean()) if (~att).any() else 0.0
        out["train/tokens_per_episode"] = float(live.tokens.mean())
    frozen = [p.success for s, p in rounds.items() if s is not None]
    if frozen:
        out["train/asr_frozen_defenders"] = float(np.concatenate(frozen).mean())
    if cfg.attack_source == "agents":
        for name in cfg.attackers:
            wins = []
            for team_step, played in rounds.items():
                sub = [i for i in instances if i.defender_step == team_step]
                mine = np.array([sub[r].source == name for r in played.root])
                wins.append(played.success[mine])
            w = np.concatenate(wins)
            out[f"train/attack_reward/{name}"] = float(w.mean()) if w.size else 0.0
    return out
