"""LLM players for text games, and the league: a pool of frozen snapshots of the learners.

The LLM side of one ply is :func:`llm_decisions`: every pending decision of one policy becomes a
prompt (:func:`decision_prompt`), all prompts go through **one** batched generation call (the
learner's ``Agent.act`` during training, ``Policy.generate`` otherwise), optionally under the legal
action mask of ``games.prompts.legal_action_token_mask``, and the completions come back as text plus
what a learner needs to train on them.

Two prompt formats (``PROMPT_FORMATS``):
  - ``game``: ``games.prompts.build_prompt`` in the game's ``prompt_style`` (compact text with the
    legal actions, or chat messages rendered by the tokenizer's chat template);
  - ``state``: the shortest faithful text of the player's view, then the seat as a letter: the board
    cells of a perfect-information OpenSpiel game, free cells showing their action when the cells are
    the actions (tic-tac-toe ``"x1o3x5678 B:"``), the information-state string of an imperfect-
    information one (Kuhn ``"0pb B:"``), else the observation. For the tiny LM this cuts a
    tic-tac-toe prompt from ~150 to 12 tokens (and generation cost about 10x).

Constrained sampling. With the legal-action mask, each completion token records the token ids the
mask allowed (``Decisions.allowed_ids``); they travel with the sample (``Turn.data["allowed_ids"]`` ->
``SampleBatch.allowed_ids``) so the learner scores each token under the same restricted softmax it
was sampled from (invalid-action masking in the gradient, Huang & Ontañón 2022). Scoring with the
full softmax instead lets the illegal tokens soak up the probability mass pushed off bad moves: in
a trial on tic-tac-toe the legal mass of the unmasked softmax stayed at 2-13% and learning stalled
near 80% non-loss against random. ``Decisions.legal_mass`` reports that mass.

Shape legend: ``B`` pending decisions (prompts), ``T`` completion tokens, ``V`` vocabulary.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from games.prompts import build_prompt, legal_action_token_mask, state_text
from games.text import TextGame
from marl.policies import Policy
from marl.types import Generation

logger = logging.getLogger(__name__)

PROMPT_FORMATS = ("game", "state")


# ------------------------------------------------------------------------------------------ prompts
def decision_prompt(game: TextGame, player: int, prompt_format: str, prompt_style: str) -> str | list[dict]:
    """The prompt for ``player`` (the player to act) in ``game``: text, or chat messages.

    ``prompt_format`` 'state' -> ``f"{state_text} {seat}:"`` with the seat as a letter (A moves first,
    so no digit of the seat can be mistaken for a cell); 'game' -> ``build_prompt(game, player,
    prompt_style)`` (prompt_style 'compact' or 'chat').
    """
    if prompt_format == "state":
        return f"{state_text(game, player)} {chr(ord('A') + player)}:"
    if prompt_format == "game":
        return build_prompt(game, player, prompt_style)
    raise ValueError(f"unknown prompt_format {prompt_format!r}; valid formats: {list(PROMPT_FORMATS)}")


def encode_prompts(policy: Policy, prompts: Sequence[str | list[dict]]) -> list[list[int]]:
    """Token ids of every prompt: plain text without special tokens, chat messages via the chat template."""
    if prompts and all(isinstance(p, str) for p in prompts):
        return [list(ids) for ids in policy.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    return [policy.encode(p) if isinstance(p, str) else policy.encode_chat(p) for p in prompts]


# ------------------------------------------------------------------------------------------ one ply
class RecordingProcessor:
    """Wraps a logits processor and records, per step, the token ids it left allowed (B, K) (-1 padded,
    ascending ids) and the unmasked probability of those tokens under ``softmax(logits / T)`` (B,)."""

    def __init__(self, inner: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor], temperature: float):
        self.inner = inner
        self.temperature = temperature if temperature > 0 else 1.0
        self.allowed: list[torch.Tensor] = []  # per step (B, K_step)
        self.legal_mass: list[torch.Tensor] = []  # per step (B,)

    def __call__(self, step: int, tokens_so_far: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        out = self.inner(step, tokens_so_far, logits)
        allowed = torch.isfinite(out)  # (B, V)
        count = allowed.sum(-1)  # (B,)
        k = max(int(count.max()), 1) if count.numel() else 1
        first = torch.argsort((~allowed).to(torch.int8), dim=-1, stable=True)[:, :k]  # allowed ids first
        self.allowed.append(torch.where(torch.arange(k)[None, :] < count[:, None], first, -1))
        p = torch.softmax(logits.float() / self.temperature, -1)
        self.legal_mass.append((p * allowed).sum(-1))
        return out


@dataclass
class Decisions:
    """One batched generation call for B pending decisions, and what training needs from it."""

    prompt_ids: list[list[int]]
    """(B,) prompt token ids."""
    gen: Generation
    """The raw generation (right-padded tokens, sampling log-probs, lengths)."""
    texts: list[str]
    """(B,) decoded completions (special tokens dropped)."""
    logprobs: list[np.ndarray]
    """(B,) per-token log-probs of the sampling distribution (after the mask, if any)."""
    allowed_ids: list[np.ndarray] | None = None
    """(B,) per row a (Tc, K) int64 array of the token ids the mask allowed, -1 padded (None unmasked)."""
    legal_mass: np.ndarray | None = None
    """(B,) unmasked probability of the allowed tokens at the first completion token (None unmasked)."""

    def has_choice(self, i: int) -> bool:
        """Whether row ``i`` had more than one allowed token at some position (a real decision)."""
        if self.allowed_ids is None:
            return True
        return bool(((self.allowed_ids[i] >= 0).sum(-1) > 1).any())


def llm_decisions(
    policy: Policy,
    games: Sequence[TextGame],
    players: Sequence[int],
    generate: Callable[[list[list[int]], Any], Generation],
    *,
    prompt_format: str,
    prompt_style: str,
    constrained: bool,
    temperature: float,
) -> Decisions:
    """Prompts for ``players[i]`` in ``games[i]``, one ``generate(prompt_ids, processor)`` call, decoded.

    With ``constrained`` the processor is the legal-action trie mask of each row (eos the only stop
    token) and ``Decisions.allowed_ids`` records what it allowed (see the module docstring).
    """
    prompts = [decision_prompt(g, p, prompt_format, prompt_style) for g, p in zip(games, players)]
    prompt_ids = encode_prompts(policy, prompts)
    recorder = None
    if constrained:
        # one stop token (eos): a second one (<|im_end|>) would be a meaningless choice after every action
        mask = legal_action_token_mask(policy.tokenizer, [g.legal_actions() for g in games], [policy.eos_id])
        recorder = RecordingProcessor(mask, temperature)
    gen = generate(prompt_ids, recorder)
    lengths = gen.lengths.tolist()
    comps = [gen.tokens[i, :n].tolist() for i, n in enumerate(lengths)]
    texts = policy.tokenizer.batch_decode(comps, skip_special_tokens=True)
    logprobs = [gen.logprobs[i, :n].numpy().astype(np.float32) for i, n in enumerate(lengths)]
    if recorder is None or not recorder.allowed:
        return Decisions(prompt_ids, gen, texts, logprobs)
    steps = gen.tokens.shape[1]
    k = max(a.shape[1] for a in recorder.allowed[:steps])
    allowed = torch.full((len(games), steps, k), -1, dtype=torch.long)  # (B, T, K)
    for t, a in enumerate(recorder.allowed[:steps]):
        allowed[:, t, : a.shape[1]] = a
    allowed_np = allowed.numpy()
    rows = [allowed_np[i, :n].copy() for i, n in enumerate(lengths)]
    return Decisions(prompt_ids, gen, texts, logprobs, rows, recorder.legal_mass[0].numpy())


# ------------------------------------------------------------------------------------------ players
class LLMPlayer:
    """A ``games.opponents.Player`` over a policy: all pending decisions in one generation call.

    Greedy (temperature 0) or sampled with a torch generator seeded from the ``rng`` passed to ``act``,
    so the same arena seed replays the same games. Outputs are free text; the arena parses them.
    """

    def __init__(
        self,
        name: str,
        policy: Policy,
        *,
        prompt_format: str = "game",
        prompt_style: str = "compact",
        constrained: bool = False,
        greedy: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
    ) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"unknown prompt_format {prompt_format!r}; valid formats: {list(PROMPT_FORMATS)}"
            )
        self.name = name
        self.policy = policy
        self.prompt_format = prompt_format
        self.prompt_style = prompt_style
        self.constrained = constrained
        self.greedy = greedy
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens

    def act(self, games: Sequence[TextGame], players: Sequence[int], rng: np.random.Generator) -> list[str]:
        gen_torch = None if self.greedy else torch.Generator().manual_seed(int(rng.integers(2**62)))

        def generate(prompt_ids, processor):
            return self.policy.generate(
                prompt_ids,
                max_new_tokens=self.max_new_tokens,
                temperature=0.0 if self.greedy else self.temperature,
                top_p=1.0 if self.greedy else self.top_p,
                generator=gen_torch,
                logits_processor=processor,
            )

        return llm_decisions(
            self.policy,
            games,
            players,
            generate,
            prompt_format=self.prompt_format,
            prompt_style=self.prompt_style,
            constrained=self.constrained,
            temperature=self.temperature,
        ).texts


def frozen_copy(policy: Policy) -> Policy:
    """An independent, gradient-free copy of ``policy`` (shares the tokenizer)."""
    snap = copy.copy(policy)
    snap.model = copy.deepcopy(policy.model).eval()
    for p in snap.model.parameters():
        p.requires_grad_(False)
    return snap


# ------------------------------------------------------------------------------------------ league
@dataclass
class Snapshot:
    """A frozen copy of one learner at one training step."""

    agent: str
    step: int
    policy: Policy

    @property
    def name(self) -> str:
        return f"{self.agent}@{self.step}"


class SnapshotPool:
    """The league: frozen snapshots of each learner; checkpoints join, opponents are drawn uniformly.

    Keeps the ``max_per_agent`` most recent snapshots of every agent (0 = keep all). ``templates``
    gives each agent's live policy, used to rebuild snapshots from a checkpoint. ``state_dict``
    holds the snapshots' weights, so a resumed run has the same pool.
    """

    def __init__(self, templates: Mapping[str, Policy], max_per_agent: int = 0) -> None:
        if max_per_agent < 0:
            raise ValueError(f"max_per_agent ({max_per_agent}) must be >= 0 (0 keeps every snapshot)")
        self.templates = dict(templates)
        self.max_per_agent = max_per_agent
        self.pool: dict[str, list[Snapshot]] = {name: [] for name in self.templates}

    def add(self, agent: str, step: int, policy: Policy | None = None) -> Snapshot:
        """Freeze ``policy`` (default: the agent's live policy) as the agent's snapshot at ``step``."""
        if agent not in self.templates:
            raise KeyError(f"unknown agent {agent!r} for the snapshot pool; agents: {sorted(self.templates)}")
        snap = Snapshot(agent, int(step), frozen_copy(policy or self.templates[agent]))
        snaps = [s for s in self.pool[agent] if s.step != snap.step] + [snap]
        if self.max_per_agent:
            snaps = snaps[-self.max_per_agent :]
        self.pool[agent] = snaps
        logger.debug("league: %s joined (%d snapshots of %s)", snap.name, len(snaps), agent)
        return snap

    def snapshots(self, agent: str) -> list[Snapshot]:
        if agent not in self.pool:
            raise KeyError(f"no snapshots of {agent!r}; agents: {sorted(self.pool)}")
        return list(self.pool[agent])

    def sample(self, agent: str, rng: np.random.Generator, n: int) -> list[Snapshot]:
        """``n`` snapshots of ``agent`` drawn uniformly with replacement (``ValueError`` if none yet)."""
        snaps = self.snapshots(agent)
        if not snaps:
            raise ValueError(f"the league has no snapshot of {agent!r} yet; add one before drawing opponents")
        return [snaps[int(i)] for i in rng.integers(len(snaps), size=n)]

    def __len__(self) -> int:
        return sum(len(v) for v in self.pool.values())

    def state_dict(self) -> dict:
        return {
            "max_per_agent": self.max_per_agent,
            "pool": {
                agent: [
                    {
                        "step": s.step,
                        "weights": {k: v.clone() for k, v in s.policy.model.state_dict().items()},
                    }
                    for s in snaps
                ]
                for agent, snaps in self.pool.items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.pool = {name: [] for name in self.templates}
        for agent, snaps in state["pool"].items():
            for s in snaps:
                snap = self.add(agent, s["step"])
                snap.policy.model.load_state_dict(s["weights"])
