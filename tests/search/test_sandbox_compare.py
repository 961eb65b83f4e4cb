"""The judge's comparison rules (search/sandbox/compare.py): the full table of expected type x returned
type, tested cell by cell, by hand and through the sandbox; the tolerance's reach; stdout tokens; and
the reward hacks that lenient rules allowed (regression for the review's item 2)."""

from __future__ import annotations

import math

import pytest

from search.sandbox import Sandbox, SandboxConfig, outputs_match, stdout_matches
from search.synthetic import synthetic_suite
from search.tasks import CodeTask, TestCase

# One value of each plain type, each as close as its type allows to "one".
VALUES = {
    "None": None,
    "bool": True,
    "int": 1,
    "float": 1.0,
    "complex": 1 + 0j,
    "str": "1",
    "bytes": b"1",
    "list": [1],
    "tuple": (1,),
    "dict": {1: 1},
    "set": {1},
    "frozenset": frozenset({1}),
}
# Verdict for each (expected row, returned column): "+" passes, "." fails. Written out by hand from the
# rules in compare.py: bool is a family of its own; an int matches a number of exactly its value; an
# expected float or complex takes any number within the tolerance; a list and a tuple match each other
# (JSON has no tuples); a set matches only a set or frozenset; everything else only its own type.
TABLE = """
expected\\returned  None bool int float complex str bytes list tuple dict set frozenset
None                +    .    .   .     .       .   .     .    .     .    .   .
bool                .    +    .   .     .       .   .     .    .     .    .   .
int                 .    .    +   +     +       .   .     .    .     .    .   .
float               .    .    +   +     +       .   .     .    .     .    .   .
complex             .    .    +   +     +       .   .     .    .     .    .   .
str                 .    .    .   .     .       +   .     .    .     .    .   .
bytes               .    .    .   .     .       .   +     .    .     .    .   .
list                .    .    .   .     .       .   .     +    +     .    .   .
tuple               .    .    .   .     .       .   .     +    +     .    .   .
dict                .    .    .   .     .       .   .     .    .     +    .   .
set                 .    .    .   .     .       .   .     .    .     .    +   +
frozenset           .    .    .   .     .       .   .     .    .     .    +   +
"""


def _table() -> list[tuple[str, str, bool]]:
    lines = [line.split() for line in TABLE.strip().splitlines()]
    columns = lines[0][1:]
    assert columns == list(VALUES) and [row[0] for row in lines[1:]] == list(VALUES)
    return [(row[0], col, mark == "+") for row in lines[1:] for col, mark in zip(columns, row[1:])]


CELLS = _table()


def test_the_table_covers_every_pair_of_types():
    assert len(CELLS) == len(VALUES) ** 2 == 144


@pytest.mark.parametrize("expected, returned, ok", CELLS, ids=[f"{e}-{r}" for e, r, _ in CELLS])
def test_comparison_table(expected, returned, ok):
    assert outputs_match(VALUES[returned], VALUES[expected]) is ok


def test_comparison_table_through_the_sandbox():
    # one call test per cell: f(i) returns the cell's returned value, the test expects the row's value
    tests = [TestCase(f"{e}<-{r}", "call", args=[i], expected=VALUES[e]) for i, (e, r, _) in enumerate(CELLS)]
    task = CodeTask("table", "def f(i): ...", "f", tests, [])
    program = f"RETURNED = {[VALUES[r] for _, r, _ in CELLS]!r}\ndef f(i):\n    return RETURNED[i]\n"
    with Sandbox(SandboxConfig(workers=1)) as sb:
        (res,) = sb.run_many([(program, task)])
    got = {t.name: t.status for t in res.tests}
    want = {f"{e}<-{r}": "passed" if ok else "failed" for e, r, ok in CELLS}
    assert got == want


# (returned, expected, verdict): the tolerance reaches only expected floats (and complex numbers), and
# dict keys and set elements compare exactly; the default tolerance is rel 1e-6, abs 1e-9.
NEAR = [
    (1.0000001, 1.0, True),  # 1e-7 relative
    (1.00001, 1.0, False),  # 1e-5 relative
    (1, 1.0000001, True),  # an int within the tolerance of an expected float
    (1.0000001, 1, False),  # no tolerance for an expected int
    (10**6 + 0.5, 10**6, False),  # 5e-7 relative, but the answer is an int
    (3.0, 3, True),  # exactly 3, as Python's == says
    (2.0**60, 2**60, True),  # exactly equal (ints and floats compare exactly)
    (float(2**60), 2**60 + 1, False),
    (10**400, 1e300, False),  # beyond the float range: close to nothing
    (True, 1, False),
    (1, True, False),
    (0, False, False),
    (math.nan, math.nan, True),
    (math.nan, 1.0, False),
    (math.inf, math.inf, True),
    (-math.inf, math.inf, False),
    (1e-12, 0.0, True),  # the absolute tolerance, 1e-9
    (1 + 1e-7j, 1 + 0j, True),  # complex: cmath.isclose
    (complex(1, math.nan), complex(1, math.nan), True),
    ([1.0000001, 2], [1.0, 2], True),
    ([1.0000001, 2], (1.0, 2), True),
    ((1, 2), [1, 2.0000001], True),
    ([1, 2.0000001], [1, 2], False),
    ({"a": 1.0000001}, {"a": 1.0}, True),
    ({1.0000001: "a"}, {1.0: "a"}, False),  # keys exactly
    ({True: "a"}, {1: "a"}, False),  # True is not the key 1
    ({1: "a"}, {1.0: "a"}, True),  # 1 is exactly the key 1.0
    ({True}, {1}, False),
    ({1.0000001}, {1.0}, False),
    (frozenset({1}), {1}, True),
    ({1, 2}, [1, 2], False),  # the review's reward hack: return set(xs)
    ({1, 2}, (2, 1), False),
    ([2, 1], {1, 2}, False),
    ([1, 1, 2], [1, 2], False),
    ({"a": [1, {2}]}, {"a": [1, {2}]}, True),
    ({"a": [1, [2]]}, {"a": [1, {2}]}, False),
    ("1", 1, False),
    (b"a", "a", False),
]


@pytest.mark.parametrize(
    "got, expected, ok",
    NEAR,
    ids=[f"{type(g).__name__}-for-{type(e).__name__}-{i}" for i, (g, e, _) in enumerate(NEAR)],
)
def test_tolerance_and_exactness(got, expected, ok):
    assert outputs_match(got, expected) is ok


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        ("1000001\n", "1000000\n", False),  # integer tokens are compared exactly (the review: a+b+1)
        ("1000000.5", "1000000", False),
        ("3.0", "3", False),  # the answer is the integer 3, written as one
        ("3", "3.0", True),  # a number within the tolerance of an expected real
        ("0.50000001 2", "0.5 2", True),
        ("0.5001 2", "0.5 2", False),
        ("1e6", "1000000.0", True),
        ("nan", "0.5", False),  # not a number as a judge reads one
        ("1_000.0", "1000.0", False),
        ("yes", "YES", False),
        ("-0", "0", False),
    ],
)
def test_stdout_tokens(got, expected, ok):
    assert stdout_matches(got, expected) is ok


# -------------------------------------------------------------------------------------------------------
# the reward hacks themselves, through the public API
# -------------------------------------------------------------------------------------------------------
def _wrapped(task: CodeTask, wrap: str) -> str:
    """The task's reference with its function's result passed through ``wrap`` (an expression of r)."""
    f = task.entry_point
    return f"{task.reference}\n_reference = {f}\ndef {f}(*a):\n    r = _reference(*a)\n    return {wrap}\n"


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(workers=2)) as s:
        yield s


def test_no_list_task_of_the_synthetic_suite_passes_with_a_set(sb):
    train, heldout = synthetic_suite()
    lists = [t for t in train + heldout if all(type(c.expected) is list for c in t.tests("all"))]
    assert len(lists) >= 10
    results = sb.run_many([(_wrapped(t, "set(r)"), t) for t in lists], which="all")
    assert [r.status for r in results] == ["failed"] * len(lists)
    honest = sb.run_many([(t.reference, t) for t in lists], which="all")
    assert [r.status for r in honest] == ["passed"] * len(lists)


def test_a_near_float_never_passes_for_an_int(sb):
    train, heldout = synthetic_suite()
    ints = [t for t in train + heldout if all(type(c.expected) is int and c.expected for c in t.tests("all"))]
    assert len(ints) >= 10
    results = sb.run_many([(_wrapped(t, "r * (1 + 1e-7)"), t) for t in ints], which="all")
    assert all(r.passed == 0 for r in results), [(t.task_id, r.message) for t, r in zip(ints, results)]
    big = CodeTask("big", "", "f", [TestCase("t", "call", args=[10**6], expected=10**6)], [])
    assert sb.run("def f(x):\n    return x + 0.5\n", big).status == "failed"


def test_a_bool_never_passes_for_a_count(sb):
    # count_a("a") == 1 and count_a("b") == 0: `return "a" in s` would pass if True counted as 1
    task = CodeTask(
        "count",
        "",
        "count_a",
        [TestCase("t0", "call", args=["a"], expected=1), TestCase("t1", "call", args=["b"], expected=0)],
        [],
    )
    assert sb.run("def count_a(s):\n    return 'a' in s\n", task).passed == 0
    assert sb.run("def count_a(s):\n    return s.count('a')\n", task).status == "passed"


def test_stdio_integer_answers_are_exact(sb):
    task = CodeTask(
        "sum",
        "",
        "main",
        [TestCase("t", "stdio", stdin=f"{10**6} {10**6}\n", expected=f"{2 * 10**6}\n")],
        [],
        kind="stdio",
    )
    assert sb.run("a, b = map(int, input().split())\nprint(a + b + 1)\n", task).status == "failed"
    assert sb.run("a, b = map(int, input().split())\nprint(a + b)\n", task).status == "passed"
