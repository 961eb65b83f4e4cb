"""The policy: an HF causal LM (optionally wrapped by PEFT) + its tokenizer, with batched sampling.

One :class:`Policy` serves every pending prompt of one agent in one :meth:`Policy.generate`
call and scores completions for training with :meth:`Policy.token_logprobs`. Settings are
:class:`PolicyConfig` (with :class:`LoraConfig`); :func:`marl.policies.hf.load_policy`
builds a policy from them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from marl.policies.decoder import fast_generate
from marl.policies.fused import fast_unsupported_reason
from marl.policies.hf_generate import hf_generate
from marl.policies.sampling import LogitsProcessor, positions_from_mask
from marl.types import Generation

logger = logging.getLogger(__name__)


@dataclass
class LoraConfig:
    """LoRA adapters through PEFT (Hu et al. 2021); only adapter weights are trainable when enabled."""

    enabled: bool = False
    """Wrap the model with PEFT LoRA adapters and freeze the base weights."""
    r: int = 8
    """Adapter rank."""
    alpha: int = 16
    """LoRA alpha; the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter input during training."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names that get adapters (Qwen2/Llama names; GPT-2 uses c_attn, c_proj, c_fc)."""


@dataclass
class PolicyConfig:
    """Which causal LM an agent uses and how it is loaded."""

    tiny: str = "100k"
    """Size of the embedded tiny LM (a key of TINY_SIZES), used when path is empty."""
    arch: str = "qwen2"
    """Architecture of the tiny LM: qwen2, llama or gpt2 (learned absolute positions)."""
    path: str = ""
    """Local Hugging Face model directory (AutoModelForCausalLM + AutoTokenizer); overrides tiny."""
    seed: int = 0
    """Init seed of the tiny LM (and of the LoRA adapters)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings."""
    dtype: str = "float32"
    """Parameter dtype: float32, bfloat16 or float16."""
    device: str = "cpu"
    """Torch device of the model."""
    fast_generate: bool = True
    """Use the static-KV-cache decoder for Qwen2/Llama/Mistral/GPT-2 models (else the HF forward loop)."""
    hidden_size: int | None = None
    """Tiny LM override: hidden size (head_dim = hidden_size / num_heads must stay >= 32)."""
    num_layers: int | None = None
    """Tiny LM override: number of transformer layers."""
    num_heads: int | None = None
    """Tiny LM override: number of attention heads."""
    num_kv_heads: int | None = None
    """Tiny LM override: number of key/value heads (Qwen2/Llama only)."""
    intermediate_size: int | None = None
    """Tiny LM override: MLP inner size."""
    max_position_embeddings: int | None = None
    """Tiny LM override: longest sequence (prompt + completion) the model accepts (>= 512 advised)."""

    def tiny_overrides(self) -> dict[str, int]:
        """The non-empty tiny-LM overrides under their transformers (Qwen2) names."""
        names = dict(
            hidden_size="hidden_size",
            num_layers="num_hidden_layers",
            num_heads="num_attention_heads",
            num_kv_heads="num_key_value_heads",
            intermediate_size="intermediate_size",
            max_position_embeddings="max_position_embeddings",
        )
        return {hf: getattr(self, ours) for ours, hf in names.items() if getattr(self, ours) is not None}


class Policy:
    """An HF causal LM (or PEFT model) and its tokenizer.

    ``model`` is the live module: the learner optimises ``model.parameters()`` that
    require grad, and :meth:`generate` reads the same tensors, so it always samples
    from the latest weights.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, fast: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("tokenizer has no eos_token; set tokenizer.eos_token before building a Policy")
        self.eos_id: int = int(eos)
        pad = tokenizer.pad_token_id
        self.pad_id: int = int(pad) if pad is not None else self.eos_id
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        stops = [self.eos_id]
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in stops:
            stops.append(im_end)
        self.stop_ids: list[int] = stops
        """Default stop tokens of :meth:`generate`: eos and ``<|im_end|>`` when the vocabulary has it."""
        self.fast = fast
        """Whether :meth:`generate` may use the fast decoder (it still falls back when unsupported)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- text

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered by the tokenizer's chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat_template; use encode() or set tokenizer.chat_template"
            )
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
        return list(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any added special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_prompts(self, prompts: Sequence[str | list[dict]], max_tokens: int = 0) -> list[list[int]]:
        """Token ids of every prompt: plain text without special tokens (one batched tokenizer call),
        chat messages through the chat template; with ``max_tokens > 0`` only each prompt's last
        ``max_tokens`` tokens are kept."""
        if prompts and all(isinstance(p, str) for p in prompts):
            ids = [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        else:
            ids = [self.encode(p) if isinstance(p, str) else self.encode_chat(p) for p in prompts]
        if max_tokens > 0:
            for i, x in enumerate(ids):
                if len(x) > max_tokens:
                    logger.debug("prompt of %d tokens cut to its last %d", len(x), max_tokens)
                    ids[i] = x[-max_tokens:]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (list or 1-D tensor); special tokens (pad, eos, im_end) are dropped by default."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------- sampling

    def fast_path_reason(self) -> str | None:
        """``None`` when :meth:`generate` will use the fast decoder, else why not."""
        if not self.fast:
            return "disabled (fast=False)"
        return fast_unsupported_reason(self.model)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        stop_ids: Sequence[int] | None = None,
        logits_processor: LogitsProcessor | None = None,
    ) -> Generation:
        """Sample one completion per prompt, all prompts in one batch (left-padded inside).

        Returns a :class:`~marl.types.Generation` on the CPU: right-padded tokens (pad
        after a stop token), log-probs of the sampling distribution (after the
        processor, temperature and top-p; 0 on padding), lengths including the stop
        token, and finish reasons ``"stop"`` / ``"length"``. ``stop_ids`` defaults to
        :attr:`stop_ids` (eos, ``<|im_end|>``); pass ``[]`` to always run
        ``max_new_tokens``. ``temperature == 0`` is greedy and reports the untempered
        log-prob of the chosen token. The same ``generator`` state gives the same tokens.
        ``logits_processor(step, tokens_so_far (B, step), logits (B, V)) -> logits``
        gets the raw logits (before temperature) of every row in the original order, rows
        that already stopped included (their result is ignored); ``-inf`` masks a token.
        """
        stops = list(self.stop_ids if stop_ids is None else stop_ids)
        kw = dict(
            pad_id=self.pad_id,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            stop_ids=stops,
            logits_processor=logits_processor,
        )
        t0 = time.perf_counter()
        reason = self.fast_path_reason()
        if reason is None:
            gen = fast_generate(self.model, prompts, **kw)
        else:
            logger.debug("fast decoder not used: %s", reason)
            was_training = self.model.training
            self.model.eval()
            try:
                gen = hf_generate(self.model, prompts, **kw)
            finally:
                self.model.train(was_training)
        dt = time.perf_counter() - t0
        n = int(gen.lengths.sum())
        logger.debug(
            "generated %d tokens for %d prompts in %.3fs (%.0f tokens/s)", n, len(prompts), dt, n / dt
        )
        return gen

    # ---------------------------------------------------------------- scoring

    def token_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        return_entropy: bool = False,
        allowed_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-token ``log p(x_t | x_<t)`` under ``softmax(logits / temperature)``, with autograd.

        ``input_ids``, ``attention_mask``: (N, T), right-padded. Returns (N, T) float32
        aligned with ``input_ids``: position 0 and padded positions hold 0. With
        ``return_entropy`` also the entropy ``-sum_v p_v log p_v`` of the same
        predictive distribution, aligned the same way. Position ids count real tokens
        from 0, as in :meth:`generate`, so the two agree on the same tokens (top_p = 1).

        ``allowed_ids`` (N, T, K), -1 padded (constrained decoding, see ``SampleBatch``):
        where position t lists ids, token t is scored under the softmax restricted to them,
        ``log p = l_x - logsumexp_{v in allowed} l_v`` (invalid-action masking in the policy
        gradient, Huang & Ontañón 2022), and the entropy is that of the restricted softmax;
        positions with only -1 use the full vocabulary.
        """
        if temperature <= 0:
            raise ValueError(f"temperature ({temperature}) must be > 0 for scoring")
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                "must both be (N, T)"
            )
        if allowed_ids is not None and (allowed_ids.dim() != 3 or allowed_ids.shape[:2] != input_ids.shape):
            raise ValueError(
                f"allowed_ids {tuple(allowed_ids.shape)} must be (N, T, K) "
                f"with (N, T) = {tuple(input_ids.shape)}"
            )
        dev = self.device
        ids, mask = input_ids.to(dev), attention_mask.to(dev)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask))
        logits = out.logits[:, :-1].float()  # (N, T-1, V): predicts tokens 1..T-1
        if temperature != 1.0:
            logits = logits / temperature
        lse = torch.logsumexp(logits, -1)  # (N, T-1)
        restricted = None
        if allowed_ids is not None:
            allow = allowed_ids[:, 1:].to(dev)  # (N, T-1, K)
            ok = allow >= 0
            restricted = ok.any(-1)  # (N, T-1): positions sampled under a constraint
            sub = logits.gather(-1, allow.clamp(min=0)).masked_fill(~ok, float("-inf"))  # (N, T-1, K)
            lse_sub = torch.logsumexp(sub.masked_fill(~restricted[..., None], 0.0), -1)
            lse = torch.where(restricted, lse_sub, lse)
        lp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - lse
        valid = mask[:, 1:].bool()
        lp = torch.cat([lp.new_zeros(lp.shape[0], 1), lp.masked_fill(~valid, 0.0)], 1)  # (N, T)
        if not return_entropy:
            return lp
        logp = logits - lse[..., None]
        ent = -(logp.exp() * logp).sum(-1)
        if restricted is not None:
            sub_logp = (sub - lse[..., None]).masked_fill(~ok, 0.0)
            sub_ent = -(sub_logp.exp() * sub_logp).masked_fill(~ok, 0.0).sum(-1)
            ent = torch.where(restricted, sub_ent, ent)
        ent = torch.cat([ent.new_zeros(ent.shape[0], 1), ent.masked_fill(~valid, 0.0)], 1)
        return lp, ent


def frozen_copy(policy: Policy) -> Policy:
    """An independent, gradient-free copy of ``policy`` in eval mode (shares the tokenizer): a
    reference model for the KL term, or a league snapshot."""
    snap = copy.copy(policy)
    snap.model = copy.deepcopy(policy.model).eval()
    for p in snap.model.parameters():
        p.requires_grad_(False)
    return snap
