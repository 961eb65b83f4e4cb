"""Ray as the way out of one machine: each agent's learner (and its vLLM engine) in Ray actors.

``run.runtime: ray`` turns :func:`marl.scenario.make_agents` into :func:`make_ray_agents`: the agents
are split into *learner groups* (one agent, or the LoRA agents that share a base), each group gets a
bundle of a placement group (``run.ray.strategy``: ``PACK`` keeps them together, ``STRICT_SPREAD``
puts each on its own node) and a :class:`LearnerActor` in that bundle builds the group's agents with
:func:`marl.agent.build_agents`, exactly as the local runtime does (same seeds, same weights). A vLLM
agent's engine becomes an :class:`EngineActor` in the same bundle; the learner pushes new weights to
it by object reference (``ray.put`` in the learner, resolved in the engine), never through the driver.

The driver holds one :class:`RayAgent` per agent: the same ``act`` / ``learn`` / ``save`` / ``load`` /
``export`` surface as :class:`marl.agent.Agent`, and a tokenizer-only ``policy`` for the recipe's
text helpers, so recipe loops do not change. An actor that dies is reported as
:class:`AgentActorError` naming the agent; the run resumes from its last checkpoint with
``marl train --resume RUN_DIR``.

Ray is optional (``pip install -e '.[ray]'``): this module imports it only when a function needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUNTIMES = ("local", "ray")
"""Where agents run: in this process, or in Ray actors."""
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
"""Ray placement-group strategies for the learner groups' bundles."""
RAY_INSTALL = "pip install torch==2.13.0 && pip install -e '.[ray]'"


@dataclass
class RaySettings:
    """The Ray cluster a run uses and how its agents are placed on it."""

    address: str = ""
    """Cluster to join (HOST:PORT or 'auto'); empty = start a one-node cluster inside this run."""
    strategy: str = "PACK"
    """Placement of the learner groups' bundles: PACK | SPREAD | STRICT_PACK | STRICT_SPREAD (1 per node)."""
    cpus_per_agent: float = 1.0
    """CPUs of each agent's learner actor (and again of its vLLM engine actor)."""
    gpus_per_agent: float = 0.0
    """GPUs (a fraction shares one) of each agent's learner, and again of its vLLM engine actor."""
    temp_dir: str = ""
    """Ray's temp dir for a cluster started here (keep it short: socket paths); empty = /tmp/marl-ray."""

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ray.strategy '{self.strategy}' is not one of {', '.join(STRATEGIES)}")
        if self.cpus_per_agent <= 0 or self.gpus_per_agent < 0:
            raise ValueError(
                f"ray.cpus_per_agent ({self.cpus_per_agent}) must be > 0 and ray.gpus_per_agent "
                f"({self.gpus_per_agent}) >= 0"
            )


class AgentActorError(RuntimeError):
    """An agent's Ray actor (learner or engine) died or failed; the message names the agent."""


def require_ray():
    """``import ray``, or an ImportError that names the install command."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"run.runtime=ray needs Ray: {RAY_INSTALL}") from e
    return ray


# ------------------------------------------------------------------------------------------ plan
def learner_groups(agent_cfgs: Mapping[str, Any]) -> list[list[str]]:
    """Agents that must live in one process: LoRA agents with ``share_base`` on the same base model
    (one frozen copy), in declaration order; every other agent alone."""
    from marl.policies.shared_base import base_key

    groups: dict[str, list[str]] = {}
    for name, acfg in agent_cfgs.items():
        key = f"shared:{base_key(acfg.policy)}" if acfg.share_base else f"agent:{name}"
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def bundle(settings: RaySettings, n_agents: int, with_engine: bool) -> dict[str, float]:
    """Resources of one learner group's bundle: ``cpus_per_agent`` (and ``gpus_per_agent``) per agent
    for the learner, the same again for the group's vLLM engine actor when it has one."""
    k = 1 + int(with_engine)
    out = {"CPU": settings.cpus_per_agent * n_agents * k}
    if settings.gpus_per_agent > 0:
        out["GPU"] = settings.gpus_per_agent * n_agents * k
    return out


@dataclass
class PlacementPlan:
    """Where a run's agents go: learner groups, one bundle each, and the placement strategy."""

    groups: list[list[str]]
    with_engine: list[bool]
    bundles: list[dict[str, float]]
    strategy: str


def placement_plan(agent_cfgs: Mapping[str, Any], settings: RaySettings) -> PlacementPlan:
    """The learner groups of ``agent_cfgs`` (:func:`learner_groups`), whether each has a vLLM engine
    actor, their bundles (:func:`bundle`) and ``settings.strategy``."""
    groups = learner_groups(agent_cfgs)
    with_engine = [any(agent_cfgs[n].engine == "vllm" for n in g) for g in groups]
    bundles = [bundle(settings, len(g), e) for g, e in zip(groups, with_engine)]
    return PlacementPlan(groups, with_engine, bundles, settings.strategy)


def init_kwargs(settings: RaySettings) -> dict[str, Any]:
    """``ray.init`` arguments: join ``address``, or start a one-node cluster without a dashboard in
    ``temp_dir``."""
    if settings.address:
        return {"address": settings.address, "log_to_driver": False}
    return {
        "include_dashboard": False,
        "_temp_dir": str(Path(settings.temp_dir or "/tmp/marl-ray").absolute()),
        "log_to_driver": False,
    }


def ensure_ray(settings: RaySettings):
    """Connect to (or start) the cluster once per process; returns the ``ray`` module."""
    ray = require_ray()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(**init_kwargs(settings))
    return ray


# ------------------------------------------------------------------------------------------ actors
class LearnerActor:
    """One learner group inside a Ray actor: its agents built by :func:`marl.agent.build_agents` (their
    own optimizers, a shared base for LoRA agents that share one), vLLM engines as sibling actors."""

    def __init__(
        self,
        agent_cfgs: dict,
        *,
        cache_dir: str,
        total_steps: int,
        seed: int,
        threads: int,
        engine_options: dict | None = None,
    ) -> None:
        import torch

        from marl.agent import build_agents

        if threads > 0:
            torch.set_num_threads(threads)
        factory = None if engine_options is None else _remote_engine_factory(engine_options)
        self.agents = build_agents(
            agent_cfgs, cache_dir=cache_dir, total_steps=total_steps, seed=seed, engine_factory=factory
        )

    def node_id(self) -> str:
        return require_ray().get_runtime_context().get_node_id()

    def info(self, name: str) -> dict[str, int]:
        a = self.agents[name]
        return {"num_params": a.num_params, "num_trainable": a.num_trainable}

    def act(self, name: str, prompts, kwargs: dict, generator_state=None):
        import torch

        from marl.agent import OWN

        if generator_state == "own":
            generator = OWN
        elif generator_state is None:
            generator = None
        else:
            generator = torch.Generator().manual_seed(0)
            generator.set_state(generator_state)
        gen = self.agents[name].act(prompts, generator=generator, **kwargs)
        state = generator.get_state() if isinstance(generator, torch.Generator) else None
        return gen, state

    def learn(self, name: str, batch, step, measure_kl: bool):
        return self.agents[name].learn(batch, step=step, measure_kl=measure_kl)

    def save(self, name: str, folder: str) -> None:
        self.agents[name].save(folder)

    def load(self, name: str, folder: str) -> None:
        self.agents[name].load(folder)

    def export(self, name: str, folder: str) -> str:
        return str(self.agents[name].export(folder))


class EngineActor:
    """A :class:`marl.policies.vllm_engine.VllmEngine` inside a Ray actor (one per base model)."""

    def __init__(self, model_dir: str, cfg, *, seed: int, lora_rank: int, dtype: str) -> None:
        from marl.policies.vllm_engine import VllmEngine

        self.engine = VllmEngine(model_dir, cfg, seed=seed, lora_rank=lora_rank, dtype=dtype)

    def call(self, method: str, *args, **kwargs):
        return getattr(self.engine, method)(*args, **kwargs)


class RemoteEngine:
    """The learner's handle on an :class:`EngineActor`, with the engine's methods. Weights travel as
    one object reference put by the learner; the engine's actor resolves it."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __getattr__(self, method: str):
        ray = require_ray()

        def call(*args, **kwargs):
            if method in ("push_weights", "push_adapter"):
                args = tuple(ray.put(a) if isinstance(a, dict) else a for a in args)
            return ray.get(self.handle.call.remote(method, *args, **kwargs))

        return call


def _remote_engine_factory(options: dict):
    """``engine_factory`` for :func:`marl.agent.build_agents` inside a learner actor: each engine an
    :class:`EngineActor` placed in the learner's own bundle."""

    def factory(model_dir: str, cfg, *, seed: int, lora_rank: int, dtype: str):
        ray = require_ray()
        actor = ray.remote(EngineActor).options(**options)
        return RemoteEngine(actor.remote(model_dir, cfg, seed=seed, lora_rank=lora_rank, dtype=dtype))

    return factory


# ------------------------------------------------------------------------------------------ driver
_OWN = object()
"""``RayAgent.act``'s default generator: the agent's own one, in its actor (``marl.agent.OWN``)."""


class RayAgent:
    """The driver's proxy of an agent living in a :class:`LearnerActor`: the surface of
    :class:`marl.agent.Agent` (``name``, ``cfg``, ``policy`` for text, ``act``, ``learn``, ``save``,
    ``load``, ``export``); failures of its actor raise :class:`AgentActorError` naming the agent."""

    def __init__(self, name: str, cfg, actor, policy) -> None:
        self.name = name
        self.cfg = cfg
        self.actor = actor
        self.policy = policy
        info = self._call("info")
        self.num_params, self.num_trainable = info["num_params"], info["num_trainable"]

    def _call(self, method: str, *args):
        return self._wait(method, self._submit(method, *args))

    def _submit(self, method: str, *args):
        return getattr(self.actor, method).remote(self.name, *args)

    def _wait(self, method: str, ref):
        ray = require_ray()
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
            raise AgentActorError(
                f"agent {self.name}: its Ray learner actor died during {method} ({type(exc).__name__}); "
                "the run can go on from its last checkpoint: marl train --resume RUN_DIR"
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            raise AgentActorError(f"agent {self.name}: {method} failed in its Ray actor: {exc}") from exc

    def act(self, prompts, *, logits_processor=None, greedy: bool = False, generator: Any = _OWN):
        import torch

        from marl.agent import OWN

        if generator is OWN or generator is _OWN:
            state = "own"
        elif generator is None:
            state = None
        else:
            state = generator.get_state()
        gen, new_state = self._call(
            "act", prompts, {"logits_processor": logits_processor, "greedy": greedy}, state
        )
        if isinstance(generator, torch.Generator):
            generator.set_state(new_state)
        return gen

    def learn(self, batch, *, step: int | None = None, measure_kl: bool = False) -> dict[str, float]:
        return self._call("learn", batch, step, measure_kl)

    def learn_async(self, batch, *, step: int | None = None, measure_kl: bool = False):
        """Start :meth:`learn` in the actor now; the returned function waits for its statistics (so
        several agents' actors update at the same time, ``marl.scenario.learn_agents``)."""
        ref = self._submit("learn", batch, step, measure_kl)
        return lambda: self._wait("learn", ref)

    def save(self, folder) -> None:
        self._call("save", str(folder))

    def load(self, folder) -> None:
        self._call("load", str(folder))

    def export(self, folder) -> Path:
        return Path(self._call("export", str(folder)))

    def node_id(self) -> str:
        return require_ray().get(self.actor.node_id.remote())


class TextPolicy:
    """The driver-side stand-in of an agent's :class:`marl.policies.Policy`: its tokenizer and text
    helpers (``encode``, ``encode_prompts``, ``decode``, ``eos_id``...); the model lives in the actor."""

    def __init__(self, tokenizer, name: str) -> None:
        from marl.policies import Policy

        self._policy = Policy(None, tokenizer)  # text helpers only read the tokenizer
        self.name = name

    def __getattr__(self, attr: str):
        if attr in ("model", "generate", "token_logprobs", "device"):
            raise AttributeError(
                f"agent {self.name} runs in a Ray actor (run.runtime=ray): its model is not in the driver; "
                "sample with agent.act(...) and learn with agent.learn(...)"
            )
        return getattr(self._policy, attr)


def _tokenizer(acfg, cache_dir: str):
    from transformers import AutoTokenizer

    from marl.policies.hf import check_model_dir, ensure_tiny

    src = check_model_dir(acfg.policy.path) if acfg.policy.path else ensure_tiny(acfg.policy, cache_dir)
    return AutoTokenizer.from_pretrained(src)


def make_ray_agents(
    agent_cfgs: Mapping[str, Any],
    *,
    settings: RaySettings,
    cache_dir: str | Path,
    total_steps: int,
    seed: int,
    threads: int = 0,
) -> dict[str, RayAgent]:
    """One :class:`RayAgent` per agent, their learner groups in one placement group (one bundle each)."""
    ray = ensure_ray(settings)
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    cache_dir = str(Path(cache_dir).absolute())
    plan = placement_plan(agent_cfgs, settings)
    pg = placement_group(plan.bundles, strategy=plan.strategy)
    try:
        ray.get(pg.ready(), timeout=120)
    except Exception as exc:
        raise RuntimeError(
            f"Ray could not place the agents' bundles {plan.bundles} with strategy {plan.strategy} on the "
            f"cluster ({ray.cluster_resources()}); add nodes or resources, or change run.ray.strategy"
        ) from exc
    agents: dict[str, RayAgent] = {}
    for i, (group, has_engine) in enumerate(zip(plan.groups, plan.with_engine)):
        where = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)
        per = {
            "num_cpus": settings.cpus_per_agent * len(group),
            "num_gpus": settings.gpus_per_agent * len(group),
        }
        engine_options = {**per, "scheduling_strategy": where} if has_engine else None
        actor = (
            ray.remote(LearnerActor)
            .options(**per, scheduling_strategy=where, max_restarts=0, name=None)
            .remote(
                {n: agent_cfgs[n] for n in group},
                cache_dir=cache_dir,
                total_steps=total_steps,
                seed=seed,
                threads=threads,
                engine_options=engine_options,
            )
        )
        for name in group:
            agents[name] = RayAgent(
                name, agent_cfgs[name], actor, TextPolicy(_tokenizer(agent_cfgs[name], cache_dir), name)
            )
    return {name: agents[name] for name in agent_cfgs}
