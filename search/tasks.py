"""The code-task record of the MARS² search: a statement, the name to define, public and private tests.

Loaders live in ``search.loaders`` (HumanEval, JSONL files) and ``search.synthetic`` (the built-in
suite).

A task is a statement shown to the model (``prompt``), the name the program
must define (``entry_point``), public tests (search reward and feedback) and
private tests (reported only). Tests come in three kinds, all judged outside
the untrusted process (see ``search/sandbox/judge.py``):

* ``call``: ``entry_point(*args)`` must return ``expected`` (plain data);
* ``stdio``: the program run as a script on ``stdin`` must print ``expected``;
* ``assert``: trusted Python code (a HumanEval ``check`` chunk) that calls
  ``candidate``; it runs in the judge after the task's ``setup`` code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from search.sandbox import wire

TASK_KINDS = ("call", "stdio")
TEST_KINDS = ("call", "stdio", "assert")


@dataclass
class TestCase:
    """One test of a code task."""

    __test__ = False  # not a pytest class

    name: str
    kind: str = "call"
    """'call', 'stdio' or 'assert' (see the module docstring)."""
    args: list[Any] = field(default_factory=list)
    """call: positional arguments (plain data)."""
    expected: Any = None
    """call: the expected return value; stdio: the expected standard output."""
    stdin: str = ""
    """stdio: what the program reads on standard input."""
    code: str = ""
    """assert: trusted statements that call ``candidate`` and assert on the results."""

    def __post_init__(self) -> None:
        if self.kind not in TEST_KINDS:
            raise ValueError(f"test {self.name!r}: kind {self.kind!r} must be one of {', '.join(TEST_KINDS)}")
        if self.kind == "assert" and not self.code.strip():
            raise ValueError(f"assert test {self.name!r} has no code")
        if self.kind == "stdio" and not isinstance(self.expected, str):
            raise ValueError(
                f"stdio test {self.name!r}: expected output must be a str, got {type(self.expected)}"
            )
        if self.kind == "call" and not isinstance(self.args, (list, tuple)):
            raise ValueError(
                f"call test {self.name!r}: args must be a list of arguments, got {type(self.args)}"
            )

    def to_wire(self) -> dict:
        """The form the judge receives (expected values stay on the judge's side)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "args": wire.encode_value(list(self.args)),
            "expected": wire.encode_value(self.expected),
            "stdin": self.stdin,
            "code": self.code,
        }


@dataclass
class CodeTask:
    """A programming task: statement, entry point, public and private tests, optional reference."""

    task_id: str
    prompt: str
    """The statement shown to the model."""
    entry_point: str
    """Function the program must define (call tasks); for stdio tasks only a label."""
    public_tests: list[TestCase]
    private_tests: list[TestCase]
    kind: str = "call"
    """'call' (the program defines ``entry_point``) or 'stdio' (the program is a script)."""
    reference: str | None = None
    """A complete program that passes every test, when known."""
    setup: str = ""
    """Trusted code run in the judge before ``assert`` tests (HumanEval: the prompt's helpers)."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"task {self.task_id!r}: kind {self.kind!r} must be one of {', '.join(TASK_KINDS)}"
            )
        for t in self.public_tests + self.private_tests:
            if (t.kind == "stdio") != (self.kind == "stdio"):
                raise ValueError(
                    f"task {self.task_id!r} of kind {self.kind!r} has a {t.kind!r} test {t.name!r}; "
                    "stdio tasks take stdio tests only and call tasks call/assert tests only"
                )

    def tests(self, which: str = "public") -> list[TestCase]:
        """The public, private or all tests."""
        if which == "public":
            return list(self.public_tests)
        if which == "private":
            return list(self.private_tests)
        if which == "all":  # a test listed in both (a single-test HumanEval problem) runs once
            return list(self.public_tests) + [
                t for t in self.private_tests if all(t is not p for p in self.public_tests)
            ]
        raise ValueError(f"which={which!r} must be one of public, private, all")


def task_families(tasks: Sequence[CodeTask]) -> list[str]:
    """The families (``task.meta["family"]``) of the tasks in first-seen order, when there are
    several and every task has one; else []."""
    fams = list(dict.fromkeys(t.meta.get("family") for t in tasks))
    return fams if len(fams) > 1 and None not in fams else []
