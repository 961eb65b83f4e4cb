"""Prompts for text games, chat rendering, and a logits mask that only lets a policy spell legal actions.

Two prompt styles (``GameConfig.prompt_style``):
  - ``compact``: one short string (game, observation, legal actions, ``move:``) for the tiny LM;
  - ``chat``: ``[system (rules + answer format), user (observation + legal actions)]`` messages for
    a Hugging Face chat template (``render_chat``).

``legal_action_token_mask`` builds, per batch row, a trie over the token ids of that row's legal
action strings and returns a ``logits_processor(step, tokens_so_far, logits)`` that keeps only the
tokens continuing a legal action, and the stop tokens once an action is complete.

Shape legend: ``B`` prompts (one per pending decision), ``V`` vocabulary, ``t`` tokens so far.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from games.text import TextGame

logger = logging.getLogger(__name__)

_TTT = (
    "Tic-tac-toe on a 3x3 board. Players x (moves first) and o take turns marking a free cell. Three "
    "of your marks in a row, column or diagonal wins; a full board without such a line is a draw."
)
_C4 = (
    "Connect four on a board of 6 rows and 7 columns. Players x (moves first) and o take turns dropping "
    "a piece into a column that is not full; it falls to the lowest free cell. Four of your pieces in a "
    "line (row, column or diagonal) wins; a full board without such a line is a draw."
)
RULES: dict[str, str] = {
    "tic_tac_toe": _TTT,
    "tictactoe_v3": _TTT,
    "connect_four": _C4,
    "connect_four_v3": _C4,
    "kuhn_poker": (
        "Kuhn poker, two players, deck J < Q < K. Each player antes 1 chip and is dealt one card. Players "
        "act in turn: 'bet' puts 1 more chip in the pot; 'pass' checks when nobody has bet and folds after "
        "a bet. pass-pass, bet-bet and pass-bet-bet go to a showdown where the higher card takes the pot; "
        "bet-pass and pass-bet-pass give the pot to the bettor."
    ),
    "leduc_poker": (
        "Leduc hold'em, two players, six cards: two each of J, Q, K. Each player antes 1 chip and gets one "
        "private card. There are two betting rounds with one public card revealed between them. On your "
        "turn: 'call' matches the current bet (or checks when there is none), 'raise' adds 2 chips in "
        "round 1 and 4 in round 2 (at most two raises per round), 'fold' gives up the pot. At showdown a "
        "private card that pairs the public card wins, otherwise the higher private card; a tie splits."
    ),
}
ANSWER_FORMAT = "Reply with exactly one of the legal actions, written as listed, and nothing else."


def game_rules(game: TextGame) -> str:
    """Rules text of ``game`` (generic text for games without hand-written rules)."""
    name = getattr(game, "name", "game")
    return RULES.get(
        name,
        f"The game {name} for {game.num_players} players. Play one of the legal actions each turn; "
        f"the game's own rules decide the winner.",
    )


def build_prompt(game: TextGame, player: int, style: str) -> str | list[dict[str, str]]:
    """The decision prompt for ``player`` (who must be the player to act) in ``style``.

    'compact' -> one string; 'chat' -> ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    current = game.current_player()
    if player != current:
        raise ValueError(f"build_prompt: player {player} is not the player to act ({current})")
    name = getattr(game, "name", "game")
    obs = game.observation(player)
    legal = game.legal_actions()
    if style == "compact":
        return f"game: {name}\n{obs}\nlegal: {' '.join(legal)}\nmove:"
    if style == "chat":
        return [
            {"role": "system", "content": f"You are playing {name}.\n{game_rules(game)}\n{ANSWER_FORMAT}"},
            {"role": "user", "content": f"{obs}\n\nLegal actions: {', '.join(legal)}\nYour action:"},
        ]
    raise ValueError(f"prompt style must be 'compact' or 'chat', got {style!r}")


def render_chat(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """Messages -> prompt text through the tokenizer's chat template (plain fallback when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    logger.debug("tokenizer has no chat template; using a plain transcript")
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


_END = -1  # trie key marking that the path so far spells a complete action


def build_action_trie(token_seqs: Sequence[Sequence[int]]) -> dict:
    """Nested dict trie over token sequences; ``node[_END]`` exists where a sequence ends."""
    root: dict = {}
    for seq in token_seqs:
        node = root
        for t in seq:
            node = node.setdefault(int(t), {})
        node[_END] = {}
    return root


class LegalActionMask:
    """``logits_processor(step, tokens_so_far (B, t), logits (B, V)) -> logits`` over per-row action tries.

    Row b may emit only tokens that extend a path of its trie; once the path spells a legal action
    the stop tokens are allowed too; off the trie (or after a stop) only stop tokens are allowed. The
    last ``step`` columns of ``tokens_so_far`` are taken as the completion so far, so the processor
    works whether the caller passes completion tokens only or prompt + completion.
    """

    def __init__(self, tries: list[dict], stop_ids: Sequence[int]) -> None:
        self.tries = tries
        self.stop_ids = [int(s) for s in stop_ids]
        self._nodes: list[dict | None] | None = None
        self._step = -1

    def _walk(self, step: int, tokens: torch.Tensor, roots: list[dict]) -> list[dict | None]:
        if step == 0:
            return list(roots)
        if step == self._step + 1 and self._nodes is not None and len(self._nodes) == len(roots):
            last = tokens[:, -1].tolist()
            return [None if n is None else n.get(int(t)) for n, t in zip(self._nodes, last)]
        nodes: list[dict | None] = []
        for b, seq in enumerate(tokens[:, tokens.shape[1] - step :].tolist()):
            node: dict | None = roots[b]
            for t in seq:
                node = node.get(int(t)) if node is not None else None
            nodes.append(node)
        return nodes

    def __call__(self, step: int, tokens_so_far: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        B, V = logits.shape
        if len(self.tries) == B:
            roots = self.tries
        elif len(self.tries) == 1:
            roots = self.tries * B
        else:
            raise ValueError(f"LegalActionMask built for {len(self.tries)} rows, called with B={B}")
        if step > tokens_so_far.shape[1]:
            raise ValueError(f"step ({step}) exceeds tokens_so_far length ({tokens_so_far.shape[1]})")
        nodes = self._walk(step, tokens_so_far, roots)
        self._nodes, self._step = nodes, step
        blocked = torch.ones(B, V, dtype=torch.bool, device=logits.device)
        for b, node in enumerate(nodes):
            allowed = [] if node is None else [k for k in node if k != _END]
            if node is None or _END in node or not allowed:
                allowed = allowed + self.stop_ids
            blocked[b, allowed] = False
        return logits.masked_fill(blocked, float("-inf"))


def legal_action_token_mask(
    tokenizer: Any,
    legal: Sequence[Sequence[str]] | Sequence[str],
    stop_ids: Sequence[int] | None = None,
    prefix: str = "",
) -> LegalActionMask:
    """Constrained-sampling processor: each row can only spell one of its legal actions, then stop.

    ``legal`` is one list of action strings per batch row (or a single list shared by every row).
    Actions are encoded as ``tokenizer.encode(prefix + action, add_special_tokens=False)``; use
    ``prefix=" "`` when the prompt ends where the model would write a space. ``stop_ids`` default to
    ``[tokenizer.eos_token_id]``.
    """
    if stop_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("legal_action_token_mask: tokenizer has no eos_token_id; pass stop_ids=[...]")
        stop_ids = [eos]
    if not stop_ids:
        raise ValueError("legal_action_token_mask: stop_ids must not be empty")
    rows = [legal] if (len(legal) == 0 or isinstance(legal[0], str)) else legal
    cache: dict[str, tuple[int, ...]] = {}
    tries = []
    for row in rows:
        if not row:
            raise ValueError("legal_action_token_mask: a row has no legal actions")
        seen: dict[tuple[int, ...], str] = {}
        for a in row:
            if a not in cache:
                cache[a] = tuple(tokenizer.encode(prefix + a, add_special_tokens=False))
            seq = cache[a]
            if not seq:
                raise ValueError(f"action {a!r} encodes to no tokens")
            if seq in seen and seen[seq] != a:
                raise ValueError(
                    f"actions {seen[seq]!r} and {a!r} encode to the same tokens {list(seq)} "
                    f"(unknown tokens?); constrained sampling cannot tell them apart"
                )
            seen[seq] = a
        tries.append(build_action_trie([cache[a] for a in row]))
    return LegalActionMask(tries, stop_ids)
