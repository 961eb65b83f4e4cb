"""From any model output to a legal action string, or ``None``; and what an invalid output costs.

``parse_action`` reads ordinary chat answers but only ever returns a member of ``legal``: it never
guesses or repairs a move (no fuzzy matching, no number conversion, so "04", "４" or "4.0" are not
"4"). It never raises, whatever the input (non-strings, huge strings, lone surrogates). The rule,
first hit wins:

1. the whole output is an action (blanks around it, wrapping quotes, brackets, markdown, a full stop,
   a leading "cell" or "column");
2. explicit answer markers ("Answer: 4", "**Move:** e4", "action = call", "Answer - 4", "my move is e4",
   "final answer is 4", ``\\boxed{4}``, ``<answer>4</answer>``): the LAST one in the output
   decides, and if what follows it is not a legal action the output is invalid (``None``);
3. verbs ("I'll play 7", "I choose 4", "I fold", "go with b3"): the last one followed by an action;
4. the last ``[...]``, ``<...>`` or backtick span that is an action;
5. the first token, the first line, the last line.

Markers are whole words ("player" is not "play", "actions" is not "action"), markdown emphasis
around them is ignored, and a marker word inside a legal action written out ("Player: 0 Action:
Draw upcard") is not a marker. Wrapping characters (quotes, brackets, markdown, punctuation) are
trimmed one at a time, so an action's own ")" or ";" survives ("x(0,0)." is "x(0,0)"). What
follows a marker is matched as an action of up to ``MAX_WORDS`` words (blanks may stand for the
``_`` of a multi-word action: "draw stock" is "draw_stock"), after leading filler words ("to",
"the", "cell", ...); after an explicit marker, a phrase that names exactly one legal action
("Answer: I choose 4") also counts. Matching is exact, and also
case-insensitive where the legal actions are all in one case ("CALL" is "call"); where they mix
cases (chess "e4", "Nf3") case is meaning, "bxc4" (a pawn) is never "Bxc4" (a bishop), and only the
exact spelling counts. Reasoning inside ``<think>...</think>`` is ignored when an answer follows it.
Only the first and the last ``MAX_SCAN`` characters are searched beyond an exact match. A one-player
game's forfeit (``forfeit_returns``) gives the offender the penalty and nobody else anything.

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

MAX_SCAN = 4096  # characters searched at each end of the output for markers, tokens and lines
MAX_ACTION_LEN = 256  # longer outputs cannot be an exact (whitespace-stripped) action
MAX_WORDS = 12  # words after a marker tried as one (multi-word) action
MAX_MARKERS = 64  # markers of each kind considered, the last ones
MAX_TRIM = 4  # wrapping characters trimmed one by one from each end before a full strip
_WRAP = " \t\r\n\"'`*_.,;:!?()[]{}<>"
_FILLERS = frozenset(
    "to the a an is be would here now then cell column square position action move number with for on at "
    "in my play like".split()
)
_MARKER_WORDS = re.compile(r"answer|action|move|choice|decision|play|choose|pick|select", re.IGNORECASE)
_NOUNS = frozenset("cell column col square position pit".split())  # "Column 3" is the action "3"

_L = r"(?<![A-Za-z0-9])(?<![A-Za-z0-9]_)"  # word start; markdown _emphasis_ may open the word
_R = r"(?![A-Za-z0-9])"  # word end
_EM = r"[*_\"']*"  # emphasis or quotes around a marker word ("**Answer:**", '"action": 4')
_EXPLICIT = (
    re.compile(r"\\boxed\{([^{}\n]{1,256})\}"),
    re.compile(r"<(answer|action|move)>[ \t]*([^<\n]{1,256}?)[ \t]*</\1>", re.IGNORECASE),
    re.compile(
        _L
        + _EM
        + r"(?:final\s+)?(?:answer|action|move|choice|decision|play)"
        + _EM
        + r"[ \t]*(?:[:=\u2013\u2014]|-(?=[ \t]))"
        + _EM,
        re.IGNORECASE,
    ),
    re.compile(
        _L + r"(?:(?:final\s+)?answer|my\s+(?:final\s+)?(?:answer|action|move|choice|decision|play))"
        r"[ \t]+is" + _R + r"[ \t]*:?" + _EM,
        re.IGNORECASE,
    ),
)
_VERBS = re.compile(
    _L + r"(?:I(?:'ll|\u2019ll|'d|\u2019d|[ \t]+(?:will|would|shall|should|must))?"
    r"|play|plays|move|choose|pick|select|go(?:ing)?[ \t]+(?:with|for|to)|opt[ \t]+for)" + _R,
    re.IGNORECASE,
)
_SPANS = (
    re.compile(r"\[([^\[\]\n]{1,256})\]"),
    re.compile(r"<([^<>\n]{1,256})>"),
    re.compile(r"`([^`\n]{1,256})`"),
)


class _Legal:
    """Lookup of a candidate string among the legal actions: exact, and case-insensitive only where the
    legal actions are written in one case (``"call"``, ``"a1"``, ``"4"``); where they mix cases (chess
    ``"e4"``, ``"Nf3"``, ``"Bxc4"``) case carries meaning and only the exact spelling counts."""

    def __init__(self, legal: Sequence[str]) -> None:
        self.exact = {a: a for a in legal if isinstance(a, str)}
        one_case = all(a == a.lower() for a in self.exact) or all(a == a.upper() for a in self.exact)
        self.folded = {a.lower(): a for a in self.exact} if one_case else {}
        self.max_words = max((a.count("_") + 1 for a in self.exact), default=1)

    def get(self, c: str) -> str | None:
        if not c or len(c) > MAX_ACTION_LEN:
            return None
        if c in self.exact:
            return c
        return self.folded.get(c.lower())

    def trimmed(self, c: str) -> str | None:
        """``c`` as an action, else ``c`` with wrapping characters trimmed from its ends, least first, so
        "x(0,0)." is "x(0,0)" and "`pile:1,_take:1;`" is "pile:1,_take:1;" (a full strip would eat the
        action's own ")" or ";")."""
        hit = self.get(c)
        if hit is not None or not c:
            return hit
        lead = 0
        while lead < min(len(c), MAX_TRIM) and c[lead] in _WRAP:
            lead += 1
        trail = 0
        while trail < min(len(c) - lead, MAX_TRIM) and c[len(c) - 1 - trail] in _WRAP:
            trail += 1
        for total in range(1, lead + trail + 1):
            for i in range(max(0, total - trail), min(lead, total) + 1):
                hit = self.get(c[i : len(c) - (total - i)])
                if hit is not None:
                    return hit
        return self.get(c.strip(_WRAP))

    def phrase(self, words: Sequence[str]) -> str | None:
        """The action spelled by ``words`` (joined by a blank or by ``_``, wrapping trimmed)."""
        for joined in (" ".join(words), "_".join(words)):
            hit = self.trimmed(joined)
            if hit is not None:
                return hit
        return None

    def written_at(self, region: str) -> list[tuple[int, int]]:
        """Where the region spells a legal action that holds a marker word ("Player:_0_Action:_Pass",
        written with blanks or ``_``), so that word is not taken for a marker."""
        out: list[tuple[int, int]] = []
        for a in self.exact:
            if len(a) < 4 or not _MARKER_WORDS.search(a):
                continue
            for form in {a, a.replace("_", " ")}:
                hay, needle = (region.lower(), form.lower()) if self.folded else (region, form)
                start = hay.find(needle)
                while start >= 0 and len(out) < 4 * MAX_MARKERS:
                    out.append((start, start + len(needle)))
                    start = hay.find(needle, start + 1)
        return out


def parse_action(text: object, legal: Sequence[str]) -> str | None:
    """Map a model output to one of ``legal`` or ``None``; never raises, never returns an illegal string.

    See the module docstring for the rule (whole output, last explicit marker, verbs, brackets,
    first token and lines).
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str) or not legal:
            return None
        lk = _Legal(legal)
        if not lk.exact:
            return None
        return _parse(text, lk)
    except Exception:  # the contract is "never raises": log and treat as invalid
        logger.debug("parse_action failed on %r", str(text)[:64], exc_info=True)
        return None


def _parse(text: str, lk: _Legal) -> str | None:
    think = text.rfind("</think>")
    if think >= 0 and text[think + len("</think>") :].strip():
        text = text[think + len("</think>") :]
    if len(text) <= 4 * MAX_ACTION_LEN:  # 1. the whole output
        t = text.strip()
        hit = lk.trimmed(t) or _whole(t.split(), lk)
        if hit is not None:
            return hit
    region = text if len(text) <= 2 * MAX_SCAN else text[:MAX_SCAN] + "\n" + text[-MAX_SCAN:]
    inside = lk.written_at(region)
    explicit = _explicit_spans(region, inside)  # 2. the last explicit marker decides
    if explicit:
        return _resolve(explicit[-1], lk, unique=True)
    verbs = [m for m in _VERBS.finditer(region) if not _within(m.start(), inside)]
    for m in verbs[::-1][:MAX_MARKERS]:  # 3. the last verb that names an action
        hit = _resolve(_rest_of_line(region, m.end()), lk, unique=False)
        if hit is not None:
            return hit
    spans = sorted((m.start(), m.group(1)) for rx in _SPANS for m in rx.finditer(region))  # 4. brackets
    for _, span in spans[::-1][:MAX_MARKERS]:
        hit = _resolve(span, lk, unique=False)
        if hit is not None:
            return hit
    head, tail = region[:MAX_SCAN], region[-MAX_SCAN:]  # 5. first token, first line, last line
    tokens = head.split(maxsplit=1)
    if tokens:
        hit = lk.trimmed(tokens[0])
        if hit is not None:
            return hit
    for lines in (head.strip().splitlines()[:1], tail.strip().splitlines()[-1:]):
        for line in lines:
            hit = _whole(line.split(), lk)
            if hit is not None:
                return hit
    return None


def _whole(words: list[str], lk: _Legal) -> str | None:
    """The action that ``words`` spell in full, after at most one leading noun ("Column 3", "cell 4")."""
    if not 0 < len(words) <= MAX_WORDS:
        return None
    hit = lk.phrase(words)
    if hit is None and len(words) > 1 and words[0].strip(_WRAP).lower() in _NOUNS:
        hit = lk.phrase(words[1:])
    return hit


def _rest_of_line(text: str, pos: int) -> str:
    """Text from ``pos`` to the end of its line, or the next non-blank line when that is empty."""
    end = text.find("\n", pos)
    line = text[pos:] if end < 0 else text[pos:end]
    if line.strip(_WRAP) or end < 0:
        return line
    for nxt in text[end + 1 : end + 1 + MAX_SCAN].splitlines():
        if nxt.strip(_WRAP):
            return nxt
    return ""


def _within(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def _explicit_spans(region: str, inside: list[tuple[int, int]]) -> list[str]:
    """What follows each explicit answer marker, by position; markers with nothing after them, or that are
    part of a legal action written in the region (``inside``), are left out."""
    found: list[tuple[int, str]] = []
    for k, rx in enumerate(_EXPLICIT):
        for m in rx.finditer(region):
            if _within(m.start() + len(m.group(0)) - len(m.group(0).lstrip("*_\"' \t")), inside):
                continue
            span = m.group(1) if k == 0 else m.group(2) if k == 1 else _rest_of_line(region, m.end())
            if span.strip(_WRAP):
                found.append((m.start(), span))
    found.sort(key=lambda x: x[0])
    return [s for _, s in found]


def _resolve(span: str, lk: _Legal, unique: bool) -> str | None:
    """The action at the start of ``span`` (longest first, after filler words); with ``unique``, else the
    only legal action the span names anywhere."""
    words = span.split()[: MAX_WORDS + 5]
    for _ in range(5):
        for k in range(min(len(words), MAX_WORDS), 0, -1):
            hit = lk.phrase(words[:k])
            if hit is not None:
                return hit
        if words and words[0].strip(_WRAP).lower() in _FILLERS:
            words = words[1:]
        else:
            break
    if unique:
        words = span.split()[:64]
        named = set()
        for n in range(1, lk.max_words + 1):
            for i in range(len(words) - n + 1):
                hit = lk.phrase(words[i : i + n])
                if hit is not None:
                    named.add(hit)
        if len(named) == 1:
            return named.pop()
    return None


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
