"""Shared helpers for tests that drive the real `marl` CLI in a subprocess: command lines, runs,
timing-free metrics, SIGKILL mid-run and `--resume`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the working directory (and PYTHONPATH) of every CLI run."""


def marl_cmd(*args: str) -> list[str]:
    """`python -m marl.cli ARGS...` with this interpreter."""
    return [sys.executable, "-m", "marl.cli", *args]


def cli_env() -> dict[str, str]:
    """The current environment with PYTHONPATH set to the repository root."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def train_cmd(
    config: Path | str,
    out_dir: Path | str,
    name: str,
    overrides: Iterable[str] = (),
    *,
    cache_dir: Path | str | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """`marl train CONFIG OVERRIDES... run.out_dir=OUT_DIR run.name=NAME [run.cache_dir=...] EXTRA...`."""
    cache = [] if cache_dir is None else [f"run.cache_dir={cache_dir}"]
    return marl_cmd(
        "train", str(config), *overrides, f"run.out_dir={out_dir}", f"run.name={name}", *cache, *extra
    )


def run_train(cmd: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run a CLI command line from the repository root to completion; raise if it fails."""
    return subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)


def resume(run_dir: Path | str, env: Mapping[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`marl train --resume RUN_DIR` to completion; raise if it fails."""
    return run_train(marl_cmd("train", "--resume", str(run_dir)), env)


def deterministic(
    rows: Iterable[Mapping[str, Any]],
    drop_prefixes: tuple[str, ...] = ("time/",),
    drop_suffixes: tuple[str, ...] = (),
    drop_substrings: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Metric rows without the keys that vary from run to run (timings, caches)."""
    return [
        {
            k: v
            for k, v in r.items()
            if not (
                k.startswith(drop_prefixes)
                or k.endswith(drop_suffixes)
                or any(s in k for s in drop_substrings)
            )
        }
        for r in rows
    ]


def kill_after_checkpoint(
    cmd: Sequence[str],
    latest_file: Path,
    steps: Collection[str],
    timeout_s: float,
    env: Mapping[str, str],
) -> str:
    """Start `cmd`, SIGKILL it once `latest_file` names one of `steps` (e.g. "step_0000002") or after
    `timeout_s`, and return the checkpoint `latest_file` names after the kill. Fails if the run ended
    before it could be killed."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        if latest_file.exists() and latest_file.read_text().strip() in steps:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return latest_file.read_text().strip()
