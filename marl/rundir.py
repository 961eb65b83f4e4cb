"""A run directory: the resolved config, metrics (JSON lines, TensorBoard, PNG plots),
checkpoints that survive a SIGKILL, and the final exported agents.

Layout::

    RUN_DIR/config.yaml             resolved config (what `--resume` reloads)
    RUN_DIR/metrics.jsonl           one JSON object per logged step ({"step": s, "key": value, ...})
    RUN_DIR/tb/                     TensorBoard event files
    RUN_DIR/plots/*.png             curves of the main metrics
    RUN_DIR/checkpoints/step_XXXXXXX/  agents/<name>/{model.safetensors,state.pt}, state.pt
    RUN_DIR/checkpoints/latest      name of the newest complete checkpoint
    RUN_DIR/export/<agent>/         save_pretrained model + tokenizer at the end
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


class MetricsLogger:
    """Appends metrics to ``metrics.jsonl`` (flushed and fsynced per line) and TensorBoard."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            truncate_metrics(self.path, resume_step)
        self._f = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                kwargs = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self._tb = SummaryWriter(str(run_dir / "tb"), **kwargs)
            except Exception as exc:  # tensorboard missing: JSON lines still hold everything
                logger.warning("TensorBoard disabled: %s", exc)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        if self._tb is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    rows = []
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    with open(p) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only rows with step <= last_step (rows written after the checkpoint are redone on resume)."""
    rows = [r for r in read_metrics(path) if r["step"] <= last_step]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def plot_metrics(run_dir: str | Path, keys: list[str] | None = None) -> list[Path]:
    """Write one PNG per metric family (e.g. every ``eval/*/success``) into ``run_dir/plots``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        return []
    all_keys = sorted({k for r in rows for k in r if k != "step" and not k.startswith("time/")})
    if keys is None:
        keys = all_keys
    families: dict[str, list[str]] = {}
    for k in keys:
        if k not in all_keys:
            continue
        parts = k.split("/")
        fam = parts[0] + "_" + parts[-1] if len(parts) > 1 else k
        families.setdefault(fam, []).append(k)
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    fig = plt.figure(figsize=(6, 3.5))  # one figure, cleared per family
    for fam, ks in families.items():
        fig.clear()
        ax = fig.add_axes((0.1, 0.14, 0.87, 0.76))  # fixed margins: tight_layout costs a second draw
        for k in ks:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=k, marker="." if len(pts) < 50 else None)
        ax.set_xlabel("step")
        ax.set_title(fam)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        p = out_dir / f"{fam.replace('/', '_')}.png"
        fig.savefig(p, dpi=100)
        written.append(p)
    plt.close(fig)
    return written


class Checkpointer:
    """Atomic checkpoints: written into a temporary folder, then renamed, then ``latest`` updated."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.dir = run_dir / "checkpoints"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def save(self, step: int, agents: Mapping[str, Any], state: dict[str, Any]) -> Path:
        name = f"step_{step:07d}"
        tmp = self.dir / f".tmp_{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for agent_name, agent in agents.items():
            agent.save(tmp / "agents" / agent_name)
        torch.save({"step": step, **state}, tmp / "state.pt")
        final = self.dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        latest_tmp = self.dir / ".latest.tmp"
        latest_tmp.write_text(name)
        os.replace(latest_tmp, self.dir / "latest")
        self._prune()
        return final

    def _prune(self) -> None:
        ckpts = sorted(p for p in self.dir.glob("step_*") if p.is_dir())
        for p in ckpts[: max(0, len(ckpts) - self.keep)]:
            shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        f = self.dir / "latest"
        if not f.exists():
            return None
        p = self.dir / f.read_text().strip()
        return p if p.is_dir() else None

    @staticmethod
    def load(path: Path, agents: Mapping[str, Any]) -> dict[str, Any]:
        for agent_name, agent in agents.items():
            agent.load(path / "agents" / agent_name)
        return torch.load(path / "state.pt", weights_only=False)


class Timer:
    """Wall-clock seconds since construction (for throughput metrics, kept under ``time/``)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        t = time.perf_counter()
        dt, self.t0 = t - self.t0, t
        return dt
