"""The prepared GPU check (one command, under 10 minutes on one GPU): vLLM as the rollout engine at
real size, with the targets it must meet.

    pip install -e ".[dev,vllm,ray]" && python benchmarks/gpu_check.py          # a GPU machine
    python benchmarks/gpu_check.py --dry-run                                    # CPU, vLLM tier, tiny sizes

1. builds a ~0.5B Qwen2 from a config (Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads, 2 KV
   heads, MLP 4864, vocabulary 151,936; random weights, no download) with the offline tokenizer;
2. rollout tokens/s through our engine (``Agent.act`` -> ``VllmRollout`` -> ``VllmEngine``, our
   ``Generation`` out) against vLLM alone (``LLM.generate`` on the same prompts and sampling
   settings), alternating, best of ``--repeats``; target: ours within 10 % of vLLM alone;
3. weight-push time of the full model after a learner update (``reload_weights`` in the running
   engine); target: <= 0.2 s for 0.5B;
4. a 2-agent GRPO step (act + learn + push) with ``run.runtime: ray``: both agents' learner and
   engine actors placed on the one GPU (a quarter each, ``gpu_memory_utilization`` 0.2 per engine).

Prints one table. ``--dry-run`` runs the same code on the CPU with the tiny 100k model and short
completions (the vLLM tier checks it runs); its figures are not the GPU targets' figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_vllm import grpo_batch, make_prompts  # noqa: E402
from marl.agent import build_agents  # noqa: E402
from marl.config import AgentConfig, SamplingConfig  # noqa: E402
from marl.policies import PolicyConfig  # noqa: E402

HALF_B = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    max_position_embeddings=4096,
    vocab_size=151936,
)
TARGET_PUSH_S = 0.2
TARGET_ROLLOUT_RATIO = 0.9


def build_model(out: Path, dry_run: bool) -> Path:
    """The ~0.5B Qwen2 (or, dry run, the tiny 100k one) saved with the offline tokenizer."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from marl.policies.hf import ensure_tiny
    from marl.policies.tokenizer import build_char_tokenizer, save_tokenizer

    if dry_run:
        return ensure_tiny(PolicyConfig(tiny="100k"), out)
    tok = build_char_tokenizer()
    cfg = Qwen2Config(
        **HALF_B,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    with torch.device("cuda"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    path = out / "qwen2-0.5b-random"
    model.save_pretrained(path)
    save_tokenizer(tok, path)
    return path


def agent_cfg(path: Path, args, gpu_mem: float) -> AgentConfig:
    cfg = AgentConfig(
        policy=PolicyConfig(path=str(path), dtype=args.dtype, device=args.device),
        engine="vllm",
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=args.new_tokens),
    )
    cfg.vllm.gpu_memory_utilization = gpu_mem
    cfg.vllm.max_model_len = 128 + args.new_tokens
    cfg.vllm.enforce_eager = args.dry_run
    return cfg


def rollout_and_push(path: Path, args) -> dict:
    from vllm import SamplingParams

    agent = build_agents({"a": agent_cfg(path, args, 0.4)}, cache_dir=args.cache, total_steps=2, seed=0)["a"]
    prompts = make_prompts(agent.policy.encode, args.prompts)
    llm = agent.engine.engine.llm
    stops = list(agent.policy.stop_ids)
    params = [
        SamplingParams(
            max_tokens=args.new_tokens,
            temperature=1.0,
            logprobs=0,
            seed=i,
            stop_token_ids=stops,
            ignore_eos=True,
        )
        for i in range(len(prompts))
    ]
    ours, alone = [], []
    for _ in range(args.repeats + 1):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        gen = agent.act(prompts, generator=g)
        t1 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        t2 = time.perf_counter()
        ours.append(float(gen.lengths.sum()) / (t1 - t0))
        alone.append(sum(len(o.outputs[0].token_ids) for o in outs) / (t2 - t1))
    ours, alone = max(ours[1:]), max(alone[1:])
    gen = agent.act(prompts)
    stats = agent.learn(grpo_batch(prompts, gen, 4, 0), step=1)
    pushes = [stats["time/push_s"]] + [agent.engine.push() for _ in range(args.repeats)]
    return {
        "params": agent.num_params,
        "ours_tok_s": ours,
        "alone_tok_s": alone,
        "push_s": statistics.median(pushes),
        "gap": stats["logprob_gap"],
    }


def ray_step(path: Path, args) -> dict | str:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "skipped: ray is not installed (pip install -e '.[ray]')"
    from marl.distributed import RaySettings, make_ray_agents

    settings = RaySettings(
        cpus_per_agent=0.5 if args.dry_run else 2.0, gpus_per_agent=0.0 if args.dry_run else 0.25
    )
    cfgs = {n: agent_cfg(path, args, 0.2) for n in ("a", "b")}
    agents = make_ray_agents(cfgs, settings=settings, cache_dir=args.cache, total_steps=3, seed=0, threads=1)
    prompts = None
    times = []
    for step in (1, 2):
        t0 = time.perf_counter()
        for a in agents.values():
            prompts = prompts or make_prompts(a.policy.encode, args.prompts)
            a.learn(grpo_batch(prompts, a.act(prompts), 4, step), step=step)
        times.append(time.perf_counter() - t0)
    return {"step_s": times[-1], "nodes": len({a.node_id() for a in agents.values()})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (vLLM tier)")
    p.add_argument("--prompts", type=int, default=0, help="default 256 (dry run 8)")
    p.add_argument("--new-tokens", type=int, default=0, help="default 256 (dry run 16)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args()
    args.prompts = args.prompts or (8 if args.dry_run else 256)
    args.new_tokens = args.new_tokens or (16 if args.dry_run else 256)
    args.device, args.dtype = ("cpu", "float32") if args.dry_run else ("cuda", "bfloat16")
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on a GPU machine, or pass --dry-run for the tiny CPU check")
    args.cache = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t0 = time.perf_counter()
    path = build_model(args.cache, args.dry_run)
    r = rollout_and_push(path, args)
    ray_res = "skipped (--no-ray)" if args.no_ray else ray_step(path, args)
    ratio = r["ours_tok_s"] / r["alone_tok_s"]
    mode = (
        "DRY RUN on CPU (tiny model; not the GPU figures)" if args.dry_run else torch.cuda.get_device_name()
    )
    print(
        f"\ngpu_check: {mode}, {r['params']:,} parameters, {args.prompts} prompts x {args.new_tokens} tokens"
    )
    print("| check | measured | target | ok |")
    print("|---|---|---|---|")
    print(f"| rollout tokens/s, our engine | {r['ours_tok_s']:.0f} | | |")
    print(f"| rollout tokens/s, vLLM alone | {r['alone_tok_s']:.0f} | | |")
    print(
        f"| ours / vLLM alone | {ratio:.3f} | >= {TARGET_ROLLOUT_RATIO} | {ratio >= TARGET_ROLLOUT_RATIO} |"
    )
    ok = r["push_s"] <= TARGET_PUSH_S
    print(f"| weight push after an update | {r['push_s']:.3f} s | <= {TARGET_PUSH_S} s | {ok} |")
    print(f"| engine/learner log-prob gap (mean abs) | {r['gap']:.1e} | | |")
    if isinstance(ray_res, dict):
        print(
            f"| 2-agent GRPO step, Ray placement ({ray_res['nodes']} node) | {ray_res['step_s']:.2f} s | | |"
        )
    else:
        print(f"| 2-agent GRPO step, Ray placement | {ray_res} | | |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
