"""Evaluation of the co-evolution scenario: attack success rates and task accuracy on held-out tasks.

All on the task's held-out problems, defenders (and guard) greedy, attackers sampled from their
policy with an evaluation generator (so evaluation never shifts the training streams):

- ``eval/heldout_asr``: ASR of the held-out templates (verbs and wrappers never seen in training),
  each held-out task paired with one template and one entry point in turn;
- ``eval/train_template_asr``: the same with the training templates (the fixed attack set);
- ``eval/heldout_goal_asr``: the held-out *goals* (``games.coevolution_attacks``): the marker
  ``%skip`` or the key as ``the code``, goals no training attack has, in the held-out wrappers;
- ``eval/asr/<source>``: ASR of each live attacker and of each frozen league snapshot
  (``<attacker>@<step>``, step 0 = the warm-started attacker);
- ``eval/untrained/*``: the same attacks against the defenders as they were before co-evolution
  (after their warm start), so the attack side's progress is measured on a fixed target;
- ``eval/acc_clean`` / ``eval/acc_attacked``: final-answer accuracy without attacks and under the
  held-out attacks; ``eval/tokens_per_episode``: completion tokens of every call of an episode.

:func:`results_table` renders the final metrics as the run's ``results.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from games.coevolution_attacks import make_templates
from games.coevolution_env import CoevoEnvConfig, Instance, RewardSettings, make_canary, play_round
from marl.digits import DigitTask
from marl.tree import TurnTree


@dataclass
class CoevoEvalSettings:
    """What one evaluation plays."""

    tasks: int = 96
    """Held-out tasks per measurement (0 = all of them)."""
    untrained: bool = True
    """Also measure the attackers against the defenders as they were before co-evolution."""


def _instances(task: DigitTask, env: CoevoEnvConfig, n: int, seed: int, source=None, templates=()):
    rng = np.random.default_rng(seed)
    probs = task.heldout if n <= 0 else task.heldout[:n]
    out = []
    for k, p in enumerate(probs):
        entry = env.entry_points[k % len(env.entry_points)]
        t = templates[k % len(templates)] if templates else None
        out.append(Instance(p, make_canary(rng, env.canary_length), entry, "template" if t else source, t))
    return out


def measure(defenders, attackers, guard, task, env, cfg: CoevoEvalSettings, *, seed: int, prefix: str):
    """ASR of every attack source and task accuracy, for one set of defenders (a dict of metrics)."""
    gen = torch.Generator().manual_seed(seed)
    kw = dict(defenders=defenders, attackers=attackers, guard=guard, env=env, rewards=RewardSettings())

    def play(instances):
        return play_round(TurnTree(), instances, 1, greedy=True, attack_greedy=False, generator=gen, **kw)

    out: dict[str, float] = {}
    tokens = []
    if prefix == "eval":
        clean = play(_instances(task, env, cfg.tasks, seed))
        out["eval/acc_clean"] = float(clean.correct.mean())
        tokens.append(clean.tokens)
    for name, split in (("heldout", "heldout"), ("train_template", "train")):
        played = play(_instances(task, env, cfg.tasks, seed, templates=make_templates(split)))
        out[f"{prefix}/{name}_asr"] = float(played.success.mean())
        if name == "heldout" and prefix == "eval":
            out["eval/acc_attacked"] = float(played.correct.mean())
            tokens.append(played.tokens)
    played = play(_instances(task, env, cfg.tasks, seed, templates=make_templates("heldout_goal")))
    out[f"{prefix}/heldout_goal_asr"] = float(played.success.mean())
    for src in sorted(attackers):
        played = play(_instances(task, env, cfg.tasks, seed, source=src))
        out[f"{prefix}/asr/{src}"] = float(played.success.mean())
        tokens.append(played.tokens)
    if prefix == "eval":
        out["eval/tokens_per_episode"] = float(np.concatenate(tokens).mean())
    return out


def evaluate(
    defenders: Mapping,
    attackers: Mapping,
    guard,
    task: DigitTask,
    env: CoevoEnvConfig,
    cfg: CoevoEvalSettings,
    *,
    seed: int,
    untrained: Mapping | None = None,
) -> dict[str, float]:
    """The evaluation metrics (module docstring); ``untrained``: the pre-co-evolution defenders."""
    out = measure(defenders, attackers, guard, task, env, cfg, seed=seed, prefix="eval")
    if untrained is not None and cfg.untrained:
        out.update(measure(untrained, attackers, None, task, env, cfg, seed=seed, prefix="eval/untrained"))
    return out


def results_table(metrics: Mapping[str, float], title: str) -> str:
    """A markdown table of the ``eval/*`` metrics (rates in %)."""
    rows = [f"## {title}", "", "| metric | value |", "|---|---|"]
    for k in sorted(m for m in metrics if m.startswith("eval/")):
        v = metrics[k]
        rows.append(f"| {k[5:]} | {v:.1f} |" if "tokens" in k else f"| {k[5:]} | {100 * v:.1f} % |")
    return "\n".join(rows) + "\n"
