"""Completions per second of one GRPO training step: ours vs TRL's ``GRPOTrainer``.

    python benchmarks/bench_grpo_step.py                 # installs trl==1.16.0 if missing
    python benchmarks/bench_grpo_step.py --steps 20 --threads 1

Same tiny model (the embedded ~100k Qwen2, written with save_pretrained and loaded by
both from that directory), same tokenizer, same digit-task prompts and exact-match reward;
16 completions per step, 8 per prompt, 32 new tokens (stop tokens ignored on both sides
so every completion has 32 tokens), no vLLM, one policy update per step, no KL. A step
is generation + reward + advantages + loss + backward + optimizer step. Reports the
median seconds per step after warm-up and completions/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

N_PER_STEP = 16
G = 8
NEW_TOKENS = 32


def ensure_trl() -> None:
    if importlib.util.find_spec("trl") is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "trl==1.16.0"])


def bench_ours(model_dir: Path, steps: int, warmup: int) -> list[float]:
    from marl.agent import Agent
    from marl.config import AgentConfig, OptimConfig, SamplingConfig
    from marl.credit import CreditAssigner, CreditConfig
    from marl.digits import DigitTask, DigitTaskConfig
    from marl.policies import PolicyConfig
    from marl.recipes.single_turn import rollout
    from marl.samples import tree_to_batches
    from marl.tree import TurnTree

    cfg = AgentConfig(
        policy=PolicyConfig(path=str(model_dir)),
        optim=OptimConfig(lr=1e-3),
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=NEW_TOKENS),
    )
    agent = Agent("a", cfg, cache_dir=model_dir.parent, total_steps=steps + warmup, seed=0)
    task = DigitTask(DigitTaskConfig())
    credit = CreditAssigner(CreditConfig(rule="grpo"))
    rng = np.random.default_rng(0)
    # Ignore stop tokens, as TRL's side does, so both generate exactly NEW_TOKENS per completion.
    generate = agent.policy.generate
    agent.policy.generate = lambda *a, **k: generate(*a, **{**k, "stop_ids": []})  # type: ignore[method-assign]
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        tree = TurnTree(["a"])
        rollout(agent, tree, task.sample_train(rng, N_PER_STEP // G), G)
        res = credit(tree)
        batches = tree_to_batches(tree, res.nodes, res.advantages, res.train_mask, pad_id=0)
        agent.learn(batches["a"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_trl(model_dir: Path, steps: int, warmup: int, work: Path) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from marl.digits import DigitTask, DigitTaskConfig

    task = DigitTask(DigitTaskConfig())
    answers = {p.prompt: p.answer for p in task.train}
    ds = Dataset.from_dict({"prompt": [p.prompt for p in task.train[:4096]]})

    def reward(prompts, completions, **kw):
        return [1.0 if c.strip() == answers.get(p) else 0.0 for p, c in zip(prompts, completions)]

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=N_PER_STEP,
        num_generations=G,
        max_completion_length=NEW_TOKENS,
        max_steps=warmup + steps,
        learning_rate=1e-3,
        beta=0.0,
        num_iterations=1,
        temperature=1.0,
        use_cpu=True,
        use_vllm=False,
        report_to="none",
        logging_steps=10_000,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return times[warmup:]


def compare(size: str, steps: int, warmup: int, threads: int, skip_trl: bool = False) -> None:
    from marl.policies import build_tiny_lm

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_tiny_lm(size, seed=0, out_dir=work / "model")
        ours = bench_ours(model_dir, steps, warmup)
        m_ours = statistics.median(ours)
        print(
            f"GRPO step, {N_PER_STEP} completions ({G}/prompt), {NEW_TOKENS} new tokens, "
            f"tiny-{size}, {threads} thread(s)"
        )
        print(f"  ours : {m_ours:.4f} s/step  {N_PER_STEP / m_ours:8.1f} completions/s", flush=True)
        if not skip_trl:
            ensure_trl()
            trl_times = bench_trl(model_dir, steps, warmup, work)
            m_trl = statistics.median(trl_times)
            print(f"  TRL  : {m_trl:.4f} s/step  {N_PER_STEP / m_trl:8.1f} completions/s")
            print(f"  speed-up: {m_trl / m_ours:.1f}x (target >= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", default="100k")
    ap.add_argument("--skip-trl", action="store_true")
    args = ap.parse_args()
    compare(args.size, args.steps, args.warmup, args.threads, args.skip_trl)


if __name__ == "__main__":
    main()
