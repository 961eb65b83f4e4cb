"""Every config field is live: something reads it.

Each shipped config runs through the real CLI (``marl.cli.main``, in this process) at toy scale,
train then eval, while every dataclass of every recipe's schema records which of its fields are read
(``FieldReads``). Reads made only to validate, print, compare or hash a config do not count. Fields a
shipped config does not reach (another credit rule's block, LoRA, a local HF directory, retries, ...)
are reached by the short exercises below, each of which uses the library the way a config would.
A field nothing reads fails the test, with its full name.

The training runs double as the configs' smoke test: finite losses, and every trainable parameter
of every agent changed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from marl import cli
from marl.agent import Agent
from marl.config import load_config
from marl.recipes import RECIPES, get_recipe
from marl.rundir import read_metrics
from tests.cli_helpers import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
NOT_A_READ = {
    "validate",
    "__post_init__",
    "check_settings",
    "__eq__",
    "__repr__",
    "__hash__",
    "to_yaml",
    "to_dict",
    "cache_key",
}
"""Functions whose reads of a config do not count: validation, printing, comparing, hashing."""
NOT_A_READ_MODULES = ("omegaconf", "copy", "yaml", "pickle", "json")
TRANSPARENT_MODULES = ("dataclasses",)
"""``dataclasses.asdict`` counts as its caller's read: a sandbox hands its whole config to its worker
processes that way (their reads are out of this process's sight); ``cache_key`` hashing one does not."""


def schema_classes() -> dict[type, list[str]]:
    """Every config dataclass reachable from a recipe's ``Config``, with its field names."""
    seen: dict[type, list[str]] = {}

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if tp in seen:
                return
            hints = typing.get_type_hints(tp)
            seen[tp] = [f.name for f in dataclasses.fields(tp)]
            for f in dataclasses.fields(tp):
                walk(hints[f.name])
        else:
            for arg in typing.get_args(tp):
                walk(arg)

    for name in RECIPES:
        walk(get_recipe(name).Config)
    return seen


class FieldReads:
    """Records ``(class, field)`` for each read of a config field while active (patches the classes'
    ``__getattribute__``; restores them on exit)."""

    def __init__(self, classes: dict[type, list[str]]) -> None:
        self.classes = classes
        self.reads: set[tuple[type, str]] = set()

    def _counts(self) -> bool:
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_name in NOT_A_READ or f.f_globals.get("__name__", "").startswith(
                NOT_A_READ_MODULES
            ):
                return False
            f = f.f_back
        return True

    def __enter__(self) -> FieldReads:
        self._saved = {}
        for cls, fields in self.classes.items():
            names = frozenset(fields)
            self._saved[cls] = cls.__dict__.get("__getattribute__")

            def getattribute(obj, name, _cls=cls, _names=names):
                if name in _names and type(obj) is _cls and (_cls, name) not in self.reads and self._counts():
                    self.reads.add((_cls, name))
                return object.__getattribute__(obj, name)

            cls.__getattribute__ = getattribute
        return self

    def __exit__(self, *exc) -> None:
        for cls, saved in self._saved.items():
            if saved is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = saved

    def unread(self) -> list[str]:
        return sorted(
            f"{cls.__module__}.{cls.__qualname__}.{name}"
            for cls, fields in self.classes.items()
            for name in fields
            if (cls, name) not in self.reads
        )


# ------------------------------------------------------------------------------------------ runs
SMOKE_EXTRA = {
    "trust_and_split": ["game.params.rounds=3"],
    "trust_and_split_naive": ["game.params.rounds=3"],
    "trust_and_split_fair": ["game.params.rounds=3", "warmstart.games=4", "warmstart.steps=2"],
    "trust_and_split_fair_naive": ["game.params.rounds=3", "warmstart.games=4", "warmstart.steps=2"],
    "ipd_naive": ["warmstart.teacher=honest", "warmstart.games=4", "warmstart.steps=2"],
    "ipd_advalign_tft": ["warmstart.games=4", "warmstart.steps=2"],
    "ipd_naive_tft": ["warmstart.games=4", "warmstart.steps=2"],
}
"""Per-config additions to the recipe's SMOKE_OVERRIDES, keyed by config name: shrinking (a self-play
recipe cannot shorten a game in general: only these games have a ``rounds`` parameter) and the self-play
imitation warm start (shrunk where a config has one; turned on in ipd_naive, with another teacher)."""


PLOTTED = "tictactoe"
"""The one config whose smoke run draws its metric plots (about half of a small config's smoke time);
``_check_smoke_run`` checks that it did and that the others did not."""


def _train_and_eval(config: Path, out: Path, cache: Path) -> Path:
    recipe = get_recipe(yaml.safe_load(config.read_text())["recipe"])
    extra = [
        *recipe.SMOKE_OVERRIDES,
        *SMOKE_EXTRA.get(config.stem, []),
        f"run.out_dir={out}",
        "run.name=smoke",
        f"run.cache_dir={cache}",
        "run.progress=false",
        "run.tensorboard=false",
        "run.checkpoint_every=0",
        "run.threads=1",
        f"run.plots={config.stem == PLOTTED}",
    ]
    assert cli.main(["train", str(config), *extra]) == 0
    assert cli.main(["eval", str(out / "smoke")]) == 0
    return out / "smoke"


def _check_smoke_run(run: Path, recipe, cache: Path) -> None:
    assert bool(list((run / "plots").glob("*.png"))) == (run.parent.name == PLOTTED)
    rows = read_metrics(run)
    losses = [v for r in rows for k, v in r.items() if k.startswith("agent/") and k.endswith("/loss")]
    assert losses and all(isinstance(v, float) and math.isfinite(v) for v in losses)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    cfg = load_config(recipe.Config, [run / "config.yaml"])
    for name, acfg in getattr(cfg, "agents", {}).items():  # a ScenarioConfig has no LLM agents
        initial = Agent(name, acfg, cache_dir=cache, total_steps=1, seed=0)
        trained = Agent(name, acfg, cache_dir=cache, total_steps=1, seed=0)
        trained.load(ckpt / "agents" / name)
        before = dict(initial.model.named_parameters())
        changed = [
            torch.equal(p, before[n]) is False for n, p in trained.model.named_parameters() if p.requires_grad
        ]
        assert changed and all(changed), f"{run}: {name} has trainable parameters that did not change"


# ------------------------------------------------------------------------------------------ exercises
def _credit_rules() -> None:
    """Every credit rule with its own settings block, on a small two-player game tree."""
    from marl.credit import RULES, CreditAssigner, CreditConfig
    from marl.tree import TurnTree
    from marl.types import Turn

    tree = TurnTree(["a", "b"])
    for group in range(2):
        root = tree.add_nodes(-1, group=group)[0]
        for episode in range(2):
            parent = root
            for turn in range(4):
                agent, role = ("a", 0) if turn % 2 == 0 else ("b", 1)
                parent = tree.add_nodes(
                    parent,
                    agent=agent,
                    role=role,
                    turn=turn,
                    episode=10 * group + episode,
                    group=group,
                    state_hash=turn,
                    reward=float(episode % 2) if turn >= 2 else 0.0,  # on each player's last turn
                    payloads=Turn(
                        np.arange(2, dtype=np.int32), np.arange(2, dtype=np.int32), np.zeros(2, np.float32)
                    ),
                )[0]
    for rule, spec in RULES.items():
        cfg = CreditConfig(rule=rule)
        ca = CreditAssigner(cfg, multi_turn=spec.reward != "tree")
        ca.observe_policy_kl("a", 0.01)
        ca(tree)


def _losses_and_schedules(cache: Path) -> None:
    """One learning step per loss objective, KL estimator, aggregation and LR schedule."""
    from marl.config import AgentConfig, OptimConfig
    from marl.losses import LossConfig
    from marl.policies import PolicyConfig
    from marl.types import SampleBatch

    ids = torch.tensor([[3, 4, 5, 6], [3, 7, 8, 0]])
    batch = SampleBatch(
        input_ids=ids,
        attention_mask=(ids > 0).long(),
        loss_mask=torch.tensor([[0, 0, 1.0, 1.0], [0, 1.0, 1.0, 0]]),
        old_logprobs=torch.full((2, 4), -3.0),
        advantages=torch.tensor([[0, 0, 1.0, 1.0], [0, -1.0, -1.0, 0]]),
        node_ids=torch.arange(2),
    )
    variants = [
        LossConfig(
            objective="gspo",
            kl_coef=0.1,
            kl_estimator="k2",
            aggregation="seq-mean-token-sum-norm",
            sum_norm_max_len=8,
        ),
        LossConfig(objective="reinforce", entropy_coef=0.01, aggregation="seq-mean-token-mean"),
    ]
    for loss, schedule in zip(variants, ("linear", "cosine")):
        optim = OptimConfig(schedule=schedule, warmup_steps=1, min_lr_ratio=0.1, weight_decay=0.01)
        cfg = AgentConfig(policy=PolicyConfig(tiny="100k", num_layers=1), optim=optim, loss=loss)
        Agent("x", cfg, cache_dir=cache, total_steps=3, seed=0).learn(batch, step=2, measure_kl=True)


def _lora_and_local_hf(cache: Path) -> None:
    """A LoRA agent and a Hugging Face causal LM from a local directory."""
    from marl.config import AgentConfig
    from marl.policies import LoraConfig, PolicyConfig
    from marl.policies.hf import ensure_tiny

    lora = LoraConfig(enabled=True, r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    Agent(
        "l", AgentConfig(policy=PolicyConfig(tiny="100k", lora=lora)), cache_dir=cache, total_steps=1, seed=0
    )
    path = ensure_tiny(PolicyConfig(tiny="100k"), cache)
    Agent(
        "h",
        AgentConfig(policy=PolicyConfig(path=str(path), fast_generate=False)),
        cache_dir=cache,
        total_steps=1,
        seed=0,
    )


class PolicyEngine:
    """A rollout engine that samples with the agent's own policy: the learner's side of ``engine: vllm``
    (recompute, gap, truncated IS, push) without vLLM installed."""

    def attach(self, agent) -> None:
        self.agent = agent

    def generate(self, prompts, **kw):
        return self.agent.policy.generate(prompts, **kw)

    def push(self) -> float:
        return 0.0


def _engines_and_runtimes(cache: Path) -> None:
    """The vLLM engine's settings (its kwargs and environment, and the learner's truncated-IS cap) and the
    Ray runtime's placement settings, read the way ``engine: vllm`` / ``run.runtime: ray`` read them
    (runnable without vLLM or Ray installed)."""
    from marl.config import AgentConfig, RunSettings
    from marl.distributed import RaySettings, init_kwargs, placement_plan
    from marl.policies import PolicyConfig
    from marl.policies.vllm_engine import VllmConfig, engine_env, engine_kwargs
    from marl.types import SampleBatch

    vcfg = VllmConfig(tis_cap=2.0)
    engine_kwargs("model", vcfg, seed=0, lora_rank=4, dtype="float32")
    engine_env(vcfg)
    cfg = AgentConfig(policy=PolicyConfig(tiny="100k", num_layers=1), vllm=vcfg)
    agent = Agent("v", cfg, cache_dir=cache, total_steps=1, seed=0, engine=PolicyEngine())
    ids = torch.tensor([[3, 4, 5, 6]])
    batch = SampleBatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        loss_mask=torch.tensor([[0, 0, 1.0, 1.0]]),
        old_logprobs=torch.full((1, 4), -3.0),
        advantages=torch.tensor([[0, 0, 1.0, 1.0]]),
        node_ids=torch.arange(1),
    )
    agent.learn(batch, step=1)
    run = RunSettings(runtime="ray", ray=RaySettings(gpus_per_agent=0.5, temp_dir="/tmp/r"))
    placement_plan({"v": AgentConfig(engine="vllm")}, run.ray)
    init_kwargs(run.ray)


def _task_sources() -> None:
    """The JSONL task source and the retry rule of invalid game outputs."""
    from games.parsing import InvalidActionConfig
    from search.loaders import EXAMPLE_TASKS, CodeTasksConfig, load_tasks

    load_tasks(CodeTasksConfig(source="jsonl", path=EXAMPLE_TASKS, heldout_fraction=0.5))
    assert InvalidActionConfig(policy="retry", retries=2).max_attempts == 3


def _tournament(trained: Path, out: Path) -> None:
    """The shipped tournament config with the trained tic-tac-toe agent and its export as players."""
    config = ROOT / "configs" / "games" / "tournament_tictactoe.yaml"
    export = trained / "export" / "lm"
    players = f"players=[random,mcts-2,run:{trained},hf:{export}]"
    extra = [
        players,
        "games_per_pair=2",
        f"out_dir={out}",
        "name=t",
        "n_boot=10",
        "threads=1",
        "max_new_tokens=2",
    ]
    assert cli.main(["tournament", str(config), *extra]) == 0


def test_every_config_field_is_read(tmp_path):
    classes = schema_classes()
    reads = FieldReads(classes)
    threads = torch.get_num_threads()
    runs = {}
    cache = tmp_path / "cache"  # one model cache for every config: a tiny LM is built once per shape
    try:
        with reads:
            for config in CONFIGS:
                recipe_name = yaml.safe_load(config.read_text())["recipe"]
                if not hasattr(get_recipe(recipe_name), "train"):
                    continue
                out = tmp_path / config.parent.name / config.stem
                runs[config.stem] = (_train_and_eval(config, out, cache), get_recipe(recipe_name))
            _tournament(runs["tictactoe"][0], tmp_path / "tournaments")
            _credit_rules()
            _losses_and_schedules(tmp_path / "cache")
            _lora_and_local_hf(tmp_path / "cache")
            _engines_and_runtimes(tmp_path / "cache")
            _task_sources()
    finally:
        torch.set_num_threads(threads)
    for run, recipe in runs.values():
        _check_smoke_run(run, recipe, cache)
    unread = reads.unread()
    assert not unread, "config fields that nothing reads (make them live or remove them):\n" + "\n".join(
        unread
    )


def test_field_reads_ignores_validation_and_printing():
    @dataclasses.dataclass
    class Toy:
        a: int = 1
        b: int = 2

        def validate(self) -> None:
            assert self.b > 0

    def cache_key(obj):
        return hash(str(dataclasses.asdict(obj)))

    reads = FieldReads({Toy: ["a", "b"]})
    with reads:
        toy = Toy()
        toy.validate()
        repr(toy)
        _ = toy == Toy()
        cache_key(toy)
        assert toy.a == 1
    assert reads.unread() == [f"{Toy.__module__}.{Toy.__qualname__}.b"]
    with reads:
        dataclasses.asdict(toy)  # handed on whole (to a worker process): every field is read
    assert reads.unread() == []
    assert Toy.__getattribute__ is object.__getattribute__  # restored


pytestmark = pytest.mark.filterwarnings("ignore")
