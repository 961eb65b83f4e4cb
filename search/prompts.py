"""What an agent sees when it expands the search tree, and how its answer becomes a program.

Two actions: *generate* (a fresh program under the root: the statement only) and *refine* (the
statement, the parent's program, and the parent's failing public tests with their messages — full
feedback, not one bit). Two forms:

* ``compact`` for the tiny byte-level LM: the completion continues the statement (HumanEval
  style), so the program is ``statement + completion``. A refinement prompt appends the previous
  attempt and its failures to the statement as comment lines inside the function body.
* ``chat`` for instruction-tuned Hugging Face models: one user message asking for a complete
  program in a fenced ``python`` block, rendered by the tokenizer's chat template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

STYLES = ("compact", "chat")
ACTIONS = ("generate", "refine")


@dataclass
class Failure:
    """One failing public test of a parent program."""

    name: str
    message: str


def failures_of(result) -> list[Failure]:
    """The non-passing tests of an ``ExecResult`` (``search.sandbox``), in test order."""
    out = [Failure(t.name, t.message or t.status) for t in result.tests if t.status != "passed"]
    if not out and result.status != "passed":  # nothing ran (e.g. no tests): keep the reason
        out.append(Failure("program", result.message or result.status))
    return out


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line: messages go into comments
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def feedback_lines(
    failures: Sequence[Failure], max_tests: int = 2, max_chars: int = 160, *, more: bool = True
) -> list[str]:
    """The messages of at most ``max_tests`` failures, one line of at most ``max_chars`` each, plus
    a line counting the rest when ``more``."""
    lines = [_clip(f.message, max_chars) for f in failures[:max_tests]]
    if more and len(failures) > max_tests:
        lines.append(f"... and {len(failures) - max_tests} more failing test(s)")
    return lines


def compact_prompt(
    statement: str,
    parent_program: str | None = None,
    failures: Sequence[Failure] = (),
    *,
    max_tests: int = 2,
    max_chars: int = 80,
) -> str:
    """Prompt text for the tiny LM (kept short: every byte is a token). Fresh: the statement.
    Refinement: the statement, then the parent's attempt (its body when it continues the
    statement) and its failures as comments inside the body, which the completion continues::

        <statement>
            # attempt: <parent body, one line>
            # failed: <message>
    """
    if parent_program is None:
        return statement
    body = parent_program[len(statement) :] if parent_program.startswith(statement) else parent_program
    lines = [f"    # attempt: {_clip(body, 2 * max_chars)}"]
    lines += [f"    # failed: {m}" for m in feedback_lines(failures, max_tests, max_chars, more=False)]
    sep = "" if statement.endswith("\n") else "\n"
    return statement + sep + "\n".join(lines) + "\n"


def chat_messages(
    statement: str,
    parent_program: str | None = None,
    failures: Sequence[Failure] = (),
    *,
    entry_point: str = "",
    max_tests: int = 3,
    max_chars: int = 400,
) -> list[dict]:
    """Chat messages for an instruction-tuned model: a fresh or a refinement request."""
    ask = (
        f"Write a complete, self-contained Python program that defines `{entry_point}`."
        if entry_point
        else "Write a complete, self-contained Python program."
    )
    body = f"{ask}\n\n```python\n{statement.rstrip()}\n```\n"
    if parent_program is not None:
        fb = "\n".join(f"- {m}" for m in feedback_lines(failures, max_tests, max_chars))
        body += (
            f"\nA previous attempt:\n\n```python\n{parent_program.rstrip()}\n```\n\n"
            f"It fails these tests:\n{fb}\n\nFix it."
        )
    body += "\nAnswer with the whole program in one ```python block."
    return [{"role": "user", "content": body}]


_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def extract_program(statement: str, completion: str, entry_point: str, style: str) -> str:
    """The program to run. ``compact``: ``statement + completion``. ``chat``: the first fenced
    block (or the whole answer when there is none); when it does not define ``entry_point`` it is
    taken as a body continuing the statement."""
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; valid names: {list(STYLES)}")
    if style == "compact":
        return statement + completion
    m = _FENCE.search(completion)
    code = m.group(1) if m else completion
    if entry_point and not re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return statement + code
    return code


def prompt_text(task, parent: str | None, failures, style: str, *, max_tests: int, max_chars: int) -> Any:
    """The prompt of one expansion: a string (compact) or chat messages (chat)."""
    if style == "chat":
        return chat_messages(
            task.prompt,
            parent,
            failures,
            entry_point=task.entry_point,
            max_tests=max_tests,
            max_chars=max_chars,
        )
    return compact_prompt(task.prompt, parent, failures, max_tests=max_tests, max_chars=max_chars)
