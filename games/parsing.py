"""From any model output to a legal action string, or ``None``; and what an invalid output costs.

``parse_action`` is tolerant (surrounding blanks, quotes, brackets, markdown, a trailing full stop,
"Action: 4", ``\\boxed{4}``, "[call]", the first token, case) but it only ever returns a member of
``legal``: it never guesses or repairs a move (no fuzzy matching, no number conversion, so "04",
"４" or "4.0" are not "4"). It never raises, whatever the input (non-strings, huge strings, lone
surrogates). Only the first ``MAX_SCAN`` characters are searched beyond an exact match.

``InvalidActionConfig`` chooses the YAML policy for unparseable output: ``forfeit`` (the offender
gets ``penalty``, the others split ``-penalty``, so the opponent wins) or ``retry`` (ask again up to
``retries`` times, then forfeit).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MAX_SCAN = 4096  # characters of the output searched for markers and the first token
MAX_ACTION_LEN = 256  # longer outputs cannot be an exact (whitespace-stripped) action
_WRAP = " \t\r\n\"'`*_.,;:!?()[]{}<>"

# Explicit answer markers, tried in this order; each captures a short span.
_MARKERS = (
    re.compile(r"\\boxed\{([^{}\n]{1,64})\}"),
    re.compile(r"\b(?:action|move|answer|play)\s*(?:is)?\s*[:=]?\s*([^\s,;]{1,64})", re.IGNORECASE),
    re.compile(r"\[([^\[\]\n]{1,64})\]"),
    re.compile(r"<([^<>\n]{1,64})>"),
    re.compile(r"`([^`\n]{1,64})`"),
)


def parse_action(text: object, legal: Sequence[str]) -> str | None:
    """Map a model output to one of ``legal`` or ``None``; never raises, never returns an illegal string.

    Candidates, in order, each matched exactly and then case-insensitively: the stripped text; the
    text stripped of wrapping quotes/brackets/markdown/punctuation; the span of the first explicit
    marker (``\\boxed{}``, "action:", "[...]", "<...>", backticks); the first token; the first line.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str) or not legal:
            return None
        exact = {a: a for a in legal if isinstance(a, str)}
        folded: dict[str, str | None] = {}
        for a in exact:
            k = a.lower()
            folded[k] = None if k in folded and folded[k] != a else a  # None marks a case clash

        def lookup(c: str) -> str | None:
            if not c or len(c) > MAX_ACTION_LEN:
                return None
            if c in exact:
                return c
            return folded.get(c.lower())

        head = text[:MAX_SCAN]
        for cand in _candidates(text, head):
            hit = lookup(cand)
            if hit is not None:
                return hit
        return None
    except Exception:  # the contract is "never raises": log and treat as invalid
        logger.debug("parse_action failed on %r", str(text)[:64], exc_info=True)
        return None


def _candidates(text: str, head: str):
    if len(text) <= 4 * MAX_ACTION_LEN:
        t = text.strip()
        yield t
        yield t.strip(_WRAP)
    for rx in _MARKERS:
        m = rx.search(head)
        if m:
            span = m.group(1).strip()
            yield span
            yield span.strip(_WRAP)
            first = span.split(maxsplit=1)
            if first:
                yield first[0].strip(_WRAP)
    tokens = head.split(maxsplit=1)
    if tokens:
        yield tokens[0]
        yield tokens[0].strip(_WRAP)
    lines = head.strip().splitlines()
    if lines:
        yield lines[0].strip().strip(_WRAP)


@dataclass
class InvalidActionConfig:
    """What happens when a player's output does not parse to a legal action."""

    policy: str = "forfeit"
    """'forfeit': the offender loses at once; 'retry': ask again up to `retries` times, then forfeit."""
    retries: int = 2
    """Extra attempts per decision under policy 'retry' (ignored by 'forfeit')."""
    penalty: float = -1.0
    """Return of the offender on forfeit (< 0); the other players share -penalty (zero-sum)."""

    def __post_init__(self) -> None:
        if self.policy not in ("forfeit", "retry"):
            raise ValueError(f"InvalidActionConfig.policy must be 'forfeit' or 'retry', got {self.policy!r}")
        if self.retries < 0:
            raise ValueError(f"InvalidActionConfig.retries must be >= 0, got {self.retries}")
        if not self.penalty < 0:
            raise ValueError(
                f"InvalidActionConfig.penalty must be negative so the offender loses, got {self.penalty}"
            )

    @property
    def max_attempts(self) -> int:
        """Outputs a player may produce for one decision before forfeiting."""
        return 1 + self.retries if self.policy == "retry" else 1


def forfeit_returns(num_players: int, offender: int, penalty: float) -> list[float]:
    """Returns after a forfeit: offender gets ``penalty``, each other player ``-penalty / (num_players - 1)``.

    With two or more players it is zero-sum by construction (sum = penalty - (n-1)·penalty/(n-1) = 0),
    so with penalty < 0 every opponent wins. A one-player game (blackjack) has nobody to pay: the
    returns are ``[penalty]``.
    """
    if num_players < 1:
        raise ValueError(f"a forfeit needs at least 1 player, got num_players={num_players}")
    if not 0 <= offender < num_players:
        raise ValueError(f"offender must be in [0, {num_players}), got {offender}")
    if num_players == 1:
        return [float(penalty)]
    share = -penalty / (num_players - 1)
    return [penalty if p == offender else share for p in range(num_players)]
