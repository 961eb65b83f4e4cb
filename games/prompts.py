"""Prompts for text games, chat rendering, and a logits mask that only lets a policy spell legal actions.

Two prompt styles (``GameConfig.prompt_style``):
  - ``compact``: one short string (game, observation, legal actions, ``move:``) for the tiny LM;
  - ``chat``: ``[system (rules + answer format), user (observation + legal actions)]`` messages for
    a Hugging Face chat template (``render_chat``).

``legal_action_token_mask`` builds, per batch row, a trie over the token ids of that row's legal
action strings and returns a ``logits_processor(step, tokens_so_far, logits)`` that keeps only the
tokens continuing a legal action, and the stop tokens once an action is complete.

``state_text`` is the shortest faithful view of a game (the 'state' prompt format): a board of one
character per cell is written as one string of cells, any other text keeps its line breaks.

``action_budget`` / ``check_action_budget`` measure the longest legal action in tokens, so a
completion budget (``agents.NAME.sampling.max_new_tokens``) that cannot spell some legal action is
refused before training instead of forfeiting every such move.

Shape legend: ``B`` prompts (one per pending decision), ``V`` vocabulary, ``t`` tokens so far.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from games.dilemmas import RULES as DILEMMA_RULES
from games.text import GameConfig, TextGame, make_game

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
RULES.update(DILEMMA_RULES)
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


# ------------------------------------------------------------------------------------------ state text
def flatten_board(text: str) -> str:
    """``text`` as one line when it is a board of one character per cell, else with its lines kept.

    A board: at least two non-blank lines, all of the same length, none holding a blank
    (tic-tac-toe ``"x.o\\n...\\n..."``, connect four). Its rows are joined with nothing (``"x.o......"``):
    every row has the same width, so no information is lost. Any other text (``"Turn total: 0\\n
    Current player: 0"``) keeps a line break between lines, so no two words are ever glued together.
    """
    lines = [line.rstrip() for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if (
        len(lines) >= 2
        and len({len(line) for line in lines}) == 1
        and not any(" " in x or "\t" in x for x in lines)
    ):
        return "".join(lines)
    return "\n".join(lines)


def state_text(game: TextGame, player: int) -> str:
    """Shortest faithful view of ``game`` for ``player`` (the ``state`` prompt format, without the seat).

    Perfect information with an OpenSpiel state: the observation string through ``flatten_board``
    (connect four: 42 cells, top row first; pig: its lines, still separated); when the board has one
    cell per action (tic-tac-toe), each free cell shows its action string instead of '.', so choosing
    a move is copying a character of the prompt (``"x1o345678"``). Imperfect information: the
    OpenSpiel information-state string (Kuhn ``"0pb"``: own card, then the bets). Otherwise (no
    OpenSpiel twin) the game's own observation text.
    """
    get_state = getattr(game, "openspiel_state", None)
    state = None
    if get_state is not None:
        try:
            state = get_state()
        except ValueError:  # a PettingZoo env without an OpenSpiel twin
            state = None
    if state is None:
        return game.observation(player)
    import pyspiel

    os_game = state.get_game()
    gtype = os_game.get_type()
    if gtype.information != pyspiel.GameType.Information.PERFECT_INFORMATION:
        if gtype.provides_information_state_string:
            return state.information_state_string(player)
        return state.observation_string(player)
    raw = state.observation_string(player) if gtype.provides_observation_string else str(state)
    cells = flatten_board(raw)
    label = getattr(game, "action_from_openspiel", None)
    if "\n" not in cells and len(cells) == os_game.num_distinct_actions() and label is not None:
        if not state.is_terminal():
            chars = list(cells)
            for a in state.legal_actions():
                name = label(int(a))
                if len(name) == 1:
                    chars[a] = name
            cells = "".join(chars)
    return cells


# ------------------------------------------------------------------------------------------ budget
@dataclass(frozen=True)
class ActionBudget:
    """The legal action of a game that takes the most tokens, and how that was found."""

    action: str
    """The canonical action string with the most tokens."""
    tokens: int
    """Its token count: the least ``max_new_tokens`` that can spell every legal action."""
    num_actions: int
    """Distinct action strings measured."""
    exhaustive: bool
    """True when every action string of the game was measured; False when they were sampled from
    random games (games whose action names depend on the state, such as chess's SAN)."""


def action_strings(
    cfg: GameConfig, n_games: int = 64, seed: int = 0, max_plies: int = 20_000
) -> tuple[list[str], bool]:
    """Every canonical action string of ``cfg``'s game, and whether the list is exhaustive.

    Exhaustive where the names are fixed: PettingZoo (the action index, ``"0"`` .. ``"n-1"``) and
    OpenSpiel games named by action id (tic-tac-toe). Otherwise the names can depend on the state and
    the player (chess SAN: ``"Nf3"``, ``"Nbd2"``, ``"exd8=Q+"``), and asking OpenSpiel to name an
    action that is not legal can crash the process, so the names are collected from the legal
    actions of every state of ``n_games`` seeded random games (at most ``max_plies`` moves in all).
    """
    return _action_strings(
        cfg.backend, cfg.name, json.dumps(cfg.params, sort_keys=True), n_games, seed, max_plies
    )


@functools.lru_cache(maxsize=64)
def _action_strings(
    backend: str, name: str, params_json: str, n_games: int, seed: int, max_plies: int
) -> tuple[list[str], bool]:
    params = json.loads(params_json)
    if backend == "dilemmas":
        from games.dilemmas import dilemma_action_strings

        return dilemma_action_strings(name, params), True
    if backend == "pettingzoo":
        from games.pettingzoo_game import make_pettingzoo_env

        env = make_pettingzoo_env(name, params)
        n = max(int(env.action_space(a).n) for a in env.possible_agents)
        return [str(i) for i in range(n)], True
    from games.openspiel_game import ID_ACTION_GAMES, load_openspiel_game

    game = load_openspiel_game(name, params)
    if name in ID_ACTION_GAMES:
        return [str(i) for i in range(game.num_distinct_actions())], True
    cfg = GameConfig(name=name, backend=backend, params=params)
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    plies = 0
    for k in range(n_games):
        g = make_game(cfg, seed=seed + k)
        while not g.is_terminal() and plies < max_plies:
            legal = g.legal_actions()
            seen.update(dict.fromkeys(legal))
            g.apply(legal[int(rng.integers(len(legal)))])
            plies += 1
    return list(seen), False


def action_budget(
    cfg: GameConfig, tokenizer: Any, prefix: str = "", n_games: int = 64, seed: int = 0
) -> ActionBudget:
    """The longest legal action of ``cfg``'s game in tokens of ``tokenizer`` (``action_strings``).

    Tokens are counted as the legal-action mask spells them: ``tokenizer.encode(prefix + action,
    add_special_tokens=False)``. The stop token is not counted: a completion that reaches the budget
    right after a complete action still parses to it, and a shorter action has room for the stop.
    ``ValueError`` when an action encodes to no tokens or two actions to the same tokens (unknown
    tokens): constrained sampling could not spell them apart.
    """
    names, exhaustive = action_strings(cfg, n_games=n_games, seed=seed)
    if not names:
        raise ValueError(f"{cfg.name}: no legal action found in {n_games} random games")
    best, best_len = names[0], -1
    by_ids: dict[tuple[int, ...], str] = {}
    for a in names:
        ids = tuple(tokenizer.encode(prefix + a, add_special_tokens=False))
        if not ids:
            raise ValueError(f"{cfg.name}: action {a!r} encodes to no tokens, so it cannot be sampled")
        if ids in by_ids:
            raise ValueError(
                f"{cfg.name}: actions {by_ids[ids]!r} and {a!r} encode to the same tokens {list(ids)} "
                f"(unknown tokens?); constrained sampling cannot tell them apart: use a tokenizer that "
                f"spells both (the embedded byte-level one does)"
            )
        by_ids[ids] = a
        if len(ids) > best_len:
            best, best_len = a, len(ids)
    return ActionBudget(best, best_len, len(names), exhaustive)


def policy_tokenizer(policy: Any) -> Any:
    """The tokenizer a ``marl.policies.PolicyConfig`` will use, without building the model: the
    embedded byte-level tokenizer for the tiny LM, else the directory's ``AutoTokenizer``."""
    if not getattr(policy, "path", ""):
        from marl.policies import build_char_tokenizer

        return build_char_tokenizer()
    from transformers import AutoTokenizer

    from marl.policies.hf import check_model_dir

    return AutoTokenizer.from_pretrained(check_model_dir(policy.path))


def check_agent_budgets(game: GameConfig, agents: Any, prefix: str = "agents") -> None:
    """``check_action_budget`` for every agent of a run config (``{name: AgentConfig}``), at config time.

    Each agent's tokenizer comes from its ``policy`` config (``policy_tokenizer``); the error names
    ``agents.NAME.sampling.max_new_tokens``.
    """
    for name, agent in agents.items():
        check_action_budget(
            game,
            policy_tokenizer(agent.policy),
            agent.sampling.max_new_tokens,
            where=f"{prefix}.{name}.sampling.max_new_tokens",
        )


def check_action_budget(
    cfg: GameConfig,
    tokenizer: Any,
    max_new_tokens: int,
    where: str = "sampling.max_new_tokens",
    prefix: str = "",
) -> ActionBudget:
    """``ValueError`` when ``max_new_tokens`` cannot spell the longest legal action of ``cfg``'s game.

    Only under ``cfg.constrained_sampling``, where the mask forces the model to spell an action
    token by token: a budget that ends inside an action makes that move unparseable, and a budget
    shorter than every action forfeits every game, silently. Without constrained sampling the
    output is free text and the shortfall is only logged as a warning. ``where`` names the setting
    in the error (``agents.NAME.sampling.max_new_tokens``). Returns the measured budget.
    """
    budget = action_budget(cfg, tokenizer, prefix=prefix)
    if max_new_tokens < budget.tokens:
        how = "all its actions" if budget.exhaustive else f"{budget.num_actions} actions seen in random games"
        msg = (
            f"game {cfg.name!r} ({cfg.backend}): the longest legal action {budget.action!r} takes "
            f"{budget.tokens} tokens (measured over {how}), but {where} is {max_new_tokens}; "
            f"such moves would be cut short and forfeited. Set {where}: {budget.tokens} or more"
        )
        if cfg.constrained_sampling:
            raise ValueError(msg + " (with constrained_sampling every completion must spell a whole action)")
        logger.warning(msg)
    return budget
