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


def save_tiny_hf_model(
    path: Path,
    *,
    arch: str = "llama",
    layers: int = 1,
    intermediate: int = 128,
    positions: int = 256,
    tie: bool = True,
) -> Path:
    """A tiny causal LM (hidden 64, 2 heads, 1 KV head) over the char tokenizer, built from a
    ``transformers`` config with ``torch.manual_seed(0)`` and saved with its tokenizer into ``path``:
    a local Hugging Face model directory, as a user would point ``policy.path`` at."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from marl.policies import build_char_tokenizer

    tok = build_char_tokenizer()
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=positions,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
