"""vLLM as the rollout engine on this CPU: GRPO step time against the native engine, push time, and
the memory of LoRA agents on one base against one agent (vLLM tier: README "vLLM tier").

    python benchmarks/bench_vllm.py                         # all three parts
    python benchmarks/bench_vllm.py --part step --new-tokens 256 --prompts 8 --group 8
    python benchmarks/bench_vllm.py --part memory --mem-hidden 512 --mem-layers 8

step: one agent per engine (``native``: our fast decoder, ``vllm``), the same model (the tiny Qwen2
``3m``, 3.5M parameters, unless overridden) and the same GRPO step: ``act`` on ``prompts x group``
prompts (up to ``--new-tokens`` tokens each), then ``learn`` on the batch (for vLLM the learner first
recomputes the log-probs, and pushes the new weights after the update). Both agents live in this
process and alternate, ``--repeats`` times; the table has the medians. Both run with ``--threads``
torch threads (the engine does not bind OpenMP threads: ``marl.policies.vllm_engine.engine_env``).

push: seconds to push the full weights of the ``3m`` model, and one LoRA adapter, into a running engine.

memory: peak RSS (VmHWM) of a fresh process holding N LoRA agents on one base, learner and vLLM engine
(one act and one learn each), for N = 1 and N = 4 (``share_base: true``: one base copy, one engine);
with ``--separate``, also N = 4 with one engine and one base copy per agent in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marl.agent import build_agents  # noqa: E402
from marl.config import AgentConfig, SamplingConfig  # noqa: E402
from marl.policies import LoraConfig, PolicyConfig  # noqa: E402
from marl.types import SampleBatch  # noqa: E402


def make_prompts(encode, n: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    words = ["max", "of", "12", "7", "345", "add", "digits", "then", "answer", "quick"]
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(encode(" ".join(words[int(i)] for i in torch.randint(0, len(words), (k,), generator=g))))
    return out


def grpo_batch(prompts, gen, group: int, seed: int) -> SampleBatch:
    """Rows prompt + completion; advantages +-1 within each group (a stand-in for real rewards)."""
    rows = [list(p) + gen.completion(i) for i, p in enumerate(prompts)]
    n, t = len(rows), max(map(len, rows))
    ids, att = torch.zeros(n, t, dtype=torch.long), torch.zeros(n, t, dtype=torch.long)
    loss, old = torch.zeros(n, t), torch.zeros(n, t)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        ids[i, : len(r)], att[i, : len(r)] = torch.tensor(r), 1
        loss[i, len(p) : len(r)] = 1.0
        old[i, len(p) : len(r)] = gen.logprobs[i, : len(r) - len(p)]
    g = torch.Generator().manual_seed(seed)
    adv = (torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1) * loss
    return SampleBatch(ids, att, loss, old, adv, torch.arange(n))


def agent_cfg(engine: str, args, lora: bool = False, share: bool = False, **policy) -> AgentConfig:
    pc = PolicyConfig(tiny=args.size, seed=0, **policy)
    if lora:
        pc.lora = LoraConfig(enabled=True, r=8, alpha=16, target_modules=["q_proj", "v_proj"])
    cfg = AgentConfig(
        policy=pc,
        engine=engine,
        share_base=share,
        sampling=SamplingConfig(temperature=1.0, max_new_tokens=args.new_tokens),
        micro_batch_tokens=args.micro_batch_tokens,
    )
    cfg.vllm.max_model_len = 64 + args.new_tokens
    return cfg


def bench_step(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    agents = build_agents(
        {"native": agent_cfg("native", args), "vllm": agent_cfg("vllm", args)},
        cache_dir=cache,
        total_steps=args.repeats + 1,
        seed=0,
    )
    enc = agents["native"].policy.encode
    prompts = [p for p in make_prompts(enc, args.prompts) for _ in range(args.group)]
    times: dict[str, dict[str, list[float]]] = {n: {} for n in agents}
    for rep in range(args.repeats + 1):  # the first round warms up
        for name, agent in agents.items():
            t0 = time.perf_counter()
            gen = agent.act(prompts)
            t1 = time.perf_counter()
            stats = agent.learn(grpo_batch(prompts, gen, args.group, rep), step=rep + 1)
            t2 = time.perf_counter()
            print(f"  round {rep} {name}: act {t1 - t0:.2f}s learn {t2 - t1:.2f}s", file=sys.stderr)
            if rep == 0:
                continue
            row = times[name]
            tokens = float(gen.lengths.sum())
            for k, v in dict(
                gen_s=t1 - t0,
                learn_s=t2 - t1,
                step_s=t2 - t0,
                tokens=tokens,
                tok_per_s=tokens / (t1 - t0),
                push_s=stats.get("time/push_s", 0.0),
                gap=stats.get("logprob_gap", 0.0),
            ).items():
                row.setdefault(k, []).append(v)
    out = []
    params = agents["native"].num_params
    for name in agents:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        out.append({"engine": name, "params": params, "threads": torch.get_num_threads(), **med})
    return out


def bench_push(args) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="bench-push-"))
    agents = build_agents(
        {"full": agent_cfg("vllm", args), "lora": agent_cfg("vllm", args, lora=True)},
        cache_dir=cache,
        total_steps=1,
        seed=0,
    )
    out = {}
    for name, agent in agents.items():
        ts = [agent.engine.push() for _ in range(args.repeats)]
        out[name] = statistics.median(ts)
    out["params"] = agents["full"].num_params
    out["lora_params"] = agents["lora"].num_trainable
    return out


def memory_child(n: int, share: bool, args) -> dict:
    torch.set_num_threads(1)
    cache = Path(args.cache)
    policy = dict(
        hidden_size=args.mem_hidden, num_layers=args.mem_layers, intermediate_size=4 * args.mem_hidden
    )
    policy["num_heads"] = args.mem_hidden // 64
    policy["num_kv_heads"] = args.mem_hidden // 64
    cfgs = {f"a{i}": agent_cfg("vllm", args, lora=True, share=share, **policy) for i in range(n)}
    for c in cfgs.values():
        c.vllm.max_loras = max(1, n)
    agents = build_agents(cfgs, cache_dir=cache, total_steps=1, seed=0)
    prompts = make_prompts(agents["a0"].policy.encode, 4)
    for a in agents.values():
        gen = a.act(prompts)
        a.learn(grpo_batch(prompts, gen, 4, 0), step=1)
    status = Path("/proc/self/status").read_text()
    kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return {
        "agents": n,
        "share_base": share,
        "params": agents["a0"].num_params,
        "peak_rss_mib": kib["VmHWM"] / 1024,
        "rss_mib": kib["VmRSS"] / 1024,
        "engines": len({id(a.engine.engine) for a in agents.values()}),
    }


def bench_memory(args) -> list[dict]:
    cache = tempfile.mkdtemp(prefix="bench-mem-")
    runs = [(1, True), (4, True)] + ([(4, False)] if args.separate else [])
    out = []
    for n, share in runs:
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--cache", cache]
        cmd += ["--mem-hidden", str(args.mem_hidden), "--mem-layers", str(args.mem_layers)]
        cmd += ["--new-tokens", "16", "--size", args.size] + ([] if share else ["--no-share"])
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [x for x in res.stdout.splitlines() if x.startswith("{")]
        if res.returncode != 0 or not lines:
            raise RuntimeError(f"memory child {n} failed:\n{res.stderr[-3000:]}")
        out.append(json.loads(lines[-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["all", "step", "push", "memory"], default="all")
    p.add_argument("--size", default="3m")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--micro-batch-tokens", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both engines and the learner")
    p.add_argument("--mem-hidden", type=int, default=512)
    p.add_argument("--mem-layers", type=int, default=8)
    p.add_argument("--separate", action="store_true", help="memory: also 4 agents with an engine each")
    p.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-share", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, not args.no_share, args)), flush=True)
        return
    if args.part in ("all", "step"):
        rows = bench_step(args)
        print(
            f"\nGRPO step, {args.prompts} prompts x G={args.group}, <= {args.new_tokens} new tokens (medians)"
        )
        print(
            "| engine | params | threads | tokens | generate s | tokens/s | learn s | push s | step s | gap |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['engine']} | {r['params']:,} | {r['threads']} | {r['tokens']:.0f} | "
                f"{r['gen_s']:.2f} | {r['tok_per_s']:.0f} | {r['learn_s']:.2f} | {r['push_s']:.4f} | "
                f"{r['step_s']:.2f} | {r['gap']:.1e} |"
            )
        ratio = rows[0]["step_s"] / rows[1]["step_s"]
        print(f"step time native / vllm = {ratio:.2f} (> 1: vLLM wins)")
    if args.part in ("all", "push"):
        r = bench_push(args)
        print(f"\npush into a running engine (median of {args.repeats})")
        print(f"| full weights, {r['params']:,} params | {r['full'] * 1e3:.1f} ms |")
        print(f"| LoRA adapter in place, {r['lora_params']:,} params | {r['lora'] * 1e3:.1f} ms |")
    if args.part in ("all", "memory"):
        rows = bench_memory(args)
        one = rows[0]["peak_rss_mib"]
        print(f"\nmemory, LoRA agents on a {rows[0]['params']:,}-parameter base (learner + engine, peak RSS)")
        print("| agents | shared base | engines | peak RSS MiB | x one agent |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['agents']} | {r['share_base']} | {r['engines']} | {r['peak_rss_mib']:.0f} | "
                f"{r['peak_rss_mib'] / one:.2f} |"
            )
        print(f"| 4 | one model per agent, one process each | 4 | {4 * one:.0f} | 4.00 (by construction) |")


if __name__ == "__main__":
    main()
