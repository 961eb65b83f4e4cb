"""The part of a training loop every recipe shares: run directory, progress bar, metrics,
evaluation schedule, checkpoint/resume and the final export.

A recipe keeps its loop visible in one function and calls the runner at the edges::

    start = runner.restore(agents, extra={...})      # 0 for a fresh run
    if start == 0 and runner.should_eval(0):
        runner.log(0, evaluate(...))
    for step in runner.steps(start):                 # 1 .. cfg.run.steps
        ...grow tree, credit, learn...
        if runner.should_eval(step):
            metrics.update(evaluate(...))
        runner.end_step(step, metrics, agents, extra={...})   # log, checkpoint when due
    return runner.finish(agents)                     # export, plots; the last step's metrics
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marl.config import RunSettings, to_yaml
from marl.rundir import Checkpointer, MetricsLogger, plot_metrics
from marl.seeding import global_rng_state, seed_everything, set_global_rng_state

logger = logging.getLogger(__name__)

PROGRESS_KEYS = ("eval/", "train/", "reward", "success")


def _get_state(obj: Any) -> Any:
    if isinstance(obj, np.random.Generator):
        return {"numpy_generator": obj.bit_generator.state}
    if isinstance(obj, torch.Generator):
        return {"torch_generator": obj.get_state()}
    if hasattr(obj, "state_dict"):
        return {"state_dict": obj.state_dict()}
    raise TypeError(f"cannot checkpoint an object of type {type(obj).__name__}")


def _set_state(obj: Any, state: dict[str, Any]) -> None:
    if "numpy_generator" in state:
        obj.bit_generator.state = state["numpy_generator"]
    elif "torch_generator" in state:
        obj.set_state(state["torch_generator"])
    else:
        obj.load_state_dict(state["state_dict"])


class Runner:
    """Owns one run directory. ``resume`` reopens an existing one."""

    def __init__(self, cfg: Any, settings: RunSettings, recipe: str, *, resume: str | Path | None = None):
        self.cfg = cfg
        self.settings = settings
        if resume is not None:
            self.dir = Path(resume)
        else:
            name = settings.name or f"{recipe}-s{settings.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.dir = Path(settings.out_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(settings.cache_dir or Path(settings.out_dir) / ".cache")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(to_yaml(cfg))
        if settings.threads > 0:
            torch.set_num_threads(settings.threads)
        seed_everything(settings.seed)
        self.ckpt = Checkpointer(self.dir, keep=settings.keep_checkpoints)
        self._resume = resume is not None
        self.metrics: MetricsLogger | None = None
        self._bar = None
        self._t_step = time.perf_counter()
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------- resume
    def restore(self, agents: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> int:
        """Load the latest checkpoint when resuming; returns the number of completed steps."""
        start = 0
        if self._resume:
            path = self.ckpt.latest()
            if path is None:
                raise FileNotFoundError(f"--resume {self.dir}: no complete checkpoint in {self.ckpt.dir}")
            state = Checkpointer.load(path, agents)
            start = int(state["step"])
            set_global_rng_state(state["global_rng"])
            for k, obj in (extra or {}).items():
                _set_state(obj, state["extra"][k])
            logger.info("resumed %s from step %d", self.dir, start)
        self.metrics = MetricsLogger(
            self.dir, tensorboard=self.settings.tensorboard, resume_step=start if self._resume else None
        )
        return start

    def load_latest(self, agents: Mapping[str, Any]) -> int:
        """Load only the agents' weights and state from the latest checkpoint (for evaluation)."""
        path = self.ckpt.latest()
        if path is None:
            raise FileNotFoundError(f"{self.dir}: no complete checkpoint in {self.ckpt.dir}")
        return int(Checkpointer.load(path, agents)["step"])

    # ------------------------------------------------------------- loop helpers
    def steps(self, start: int) -> Iterator[int]:
        total = self.settings.steps
        if self.settings.progress and start < total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=self.dir.name, dynamic_ncols=True)
        self._t_step = time.perf_counter()
        for step in range(start + 1, total + 1):
            yield step
            if self._bar is not None:
                self._bar.update(1)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def should_eval(self, step: int) -> bool:
        """Whether the schedule evaluates after ``step`` (0: before training): every ``eval_every``
        steps, at step 0 and at the last step; never when ``eval_every`` is 0."""
        e = self.settings.eval_every
        return e > 0 and (step == 0 or step == self.settings.steps or step % e == 0)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        assert self.metrics is not None, "call runner.restore(...) before logging"
        now = time.perf_counter()
        row = dict(metrics)
        if step > 0:
            self.last_metrics = dict(metrics)
            row["time/step_s"] = now - self._t_step
        self._t_step = now
        self.metrics.log(step, row)
        shown = {k: v for k, v in metrics.items() if k.startswith("eval/") or k.endswith("/reward")}
        if not shown:  # a step without evaluation or rewards: show what each agent's update did
            shown = {k: v for k, v in metrics.items() if k.startswith("agent/") and k.endswith("/loss")}
        if self._bar is not None:
            self._bar.set_postfix({k.split("/", 1)[-1]: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
        else:
            logger.info("step %d %s", step, {k: round(v, 4) for k, v in shown.items()})

    def end_step(
        self, step: int, metrics: Mapping[str, float], agents: Mapping[str, Any], extra: Mapping[str, Any]
    ) -> None:
        """The edge of every loop iteration: log the step's metrics, checkpoint when due."""
        self.log(step, metrics)
        self.maybe_checkpoint(step, agents, extra=extra)

    def maybe_checkpoint(
        self,
        step: int,
        agents: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> Path | None:
        every = self.settings.checkpoint_every
        if not (force or step == self.settings.steps or (every > 0 and step % every == 0)):
            return None
        state = {
            "global_rng": global_rng_state(),
            "extra": {k: _get_state(v) for k, v in (extra or {}).items()},
        }
        return self.ckpt.save(step, agents, state)

    def finish(self, agents: Mapping[str, Any]) -> dict[str, float]:
        """Export every agent with save_pretrained, draw the plots, close the logs; returns the metrics
        of the last training step this process logged ({} when it logged none)."""
        if self.metrics is not None:
            self.metrics.close()
        for name, agent in agents.items():
            agent.export(self.dir / "export" / name)
        if self.settings.plots:
            plot_metrics(self.dir)
        return self.last_metrics
