"""Imitation warm start of the self-play learners: before the first RL step each learner is trained,
by completion cross-entropy (``marl.warmstart``), to make the moves a fixed teacher makes.

The teacher is any fixed-opponent spec (``random``, ``mcts-400``, ``cfr``, a dilemma strategy such as
``honest``). It plays ``games`` games against itself (every seat); each of its decisions becomes one
pair: the prompt the learner would see in that seat (``games.league.decision_prompt`` with the run's
prompt format and style, so the same token ids as at play time) -> the teacher's action, followed by
the stop token. The pairs are the same for every learner; each learner trains with its own separate
AdamW (its RL optimizer is untouched), and the result is cached by everything that determines it.

What it is for: a tiny LM trained from scratch has no prior at all, where the papers' pretrained models
bring one (AdAlignLLM's Qwen2.5-7B tells the truth about its hand before any RL). Imitating
``honest`` (true claims, every other move uniformly at random) gives the tiny LM that prior and no
strategy; imitating ``mcts`` is the supervised start of AlphaGo-style training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from games.arena import play_games
from games.league import decision_prompt
from games.selfplay_env import PromptSettings, make_fixed
from games.text import GameConfig, num_players
from marl.seeding import derive_seed
from marl.warmstart import SupervisedSettings, cache_key, encode_pairs, warm_start_run_agent


@dataclass
class ImitationWarmStart:
    """Supervised imitation of a fixed teacher before self-play RL (``teacher: ''``: none)."""

    teacher: str = ""
    """Fixed-opponent spec whose moves the learners imitate ('' = no warm start)."""
    games: int = 256
    """Teacher self-play games whose decisions make the pairs."""
    steps: int = 100
    """Optimizer steps per learner."""
    batch_size: int = 32
    """Pairs per optimizer step."""
    lr: float = 3e-3
    """Learning rate of the warm start's own AdamW (the learners' optimizers are untouched)."""
    noise: float = 0.0
    """Probability that a teacher decision is replaced by a uniformly drawn legal move, played and
    imitated: the learners then start from a stochastic prior (about ``1 - noise`` on the teacher's
    move) that has also seen the teacher answer deviations, instead of a deterministic one."""
    cache: bool = True
    """Reuse a cached warm start with the same settings instead of training again."""

    def validate(self) -> None:
        if self.games < 1 or self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(
                f"warmstart: games ({self.games}) and batch_size ({self.batch_size}) must be >= 1, "
                f"steps ({self.steps}) >= 0, lr ({self.lr}) > 0"
            )
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"warmstart.noise ({self.noise}) must be a probability in [0, 1]")


class _Recording:
    """Wraps a fixed player and records (the acting seat's prompt, the action) for each decision."""

    def __init__(self, inner: Any, prompt: PromptSettings, noise: float = 0.0, seed: int = 0) -> None:
        self.inner, self.name, self.prompt = inner, inner.name, prompt
        self.noise, self.rng = noise, np.random.default_rng(seed)
        self.pairs: list[tuple[Any, str]] = []

    def act(self, games: Sequence[Any], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        prompts = [
            decision_prompt(g, p, self.prompt.prompt_format, self.prompt.prompt_style)
            for g, p in zip(games, players)
        ]
        actions = self.inner.act(games, players, rng)
        if self.noise > 0:  # its own stream, so noise 0 plays exactly the teacher's games
            for i, g in enumerate(games):
                if self.rng.random() < self.noise:
                    legal = g.legal_actions()
                    actions[i] = legal[int(self.rng.integers(len(legal)))]
        self.pairs.extend(zip(prompts, actions))
        return actions


def teacher_pairs(
    game: GameConfig, prompt: PromptSettings, teacher: str, n_games: int, seed: int, noise: float = 0.0
) -> list[tuple[Any, str]]:
    """(prompt, action) of every decision the ``teacher`` makes in ``n_games`` games against itself,
    in the order made (the arena advances all games together); with ``noise`` > 0 each decision is a
    uniformly drawn legal move with that probability."""
    inner = make_fixed(teacher, game, derive_seed(seed, "teacher"))
    rec = _Recording(inner, prompt, noise, derive_seed(seed, "teacher-noise"))
    play_games(game, [rec] * num_players(game), n_games, seed=derive_seed(seed, "teacher-games"))
    return rec.pairs


def imitation_warm_start(
    agents: Mapping[str, Any],
    game: GameConfig,
    prompt: PromptSettings,
    ws: ImitationWarmStart,
    *,
    seed: int,
    cache_dir,
) -> dict[str, float]:
    """Warm-start every learner on the teacher's moves (mutates their weights). Returns
    ``warmstart/<agent>/*`` metrics (first and last loss, pairs, whether it came from the cache)."""
    if not ws.teacher:
        return {}
    settings = SupervisedSettings(steps=ws.steps, batch_size=ws.batch_size, lr=ws.lr, cache=ws.cache)
    pairs: list[tuple[Any, str]] | None = None
    out: dict[str, float] = {}
    for agent in agents.values():
        key = cache_key("selfplay-imitation", agent.cfg.policy, game, prompt, ws, seed)

        def make_pairs(agent=agent):
            nonlocal pairs
            if pairs is None:
                pairs = teacher_pairs(game, prompt, ws.teacher, ws.games, seed, ws.noise)
            return encode_pairs(pairs, agent.policy)

        out.update(
            warm_start_run_agent(agent, make_pairs, settings, cache_dir=cache_dir, key=key, run_seed=seed)
        )
    return out
