"""Tests for search/tasks.py: the code-task records."""

from __future__ import annotations

import pytest

from search.tasks import CodeTask, TestCase


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------
def test_test_case_validation():
    with pytest.raises(ValueError, match="kind 'exec' must be one of call, stdio, assert"):
        TestCase("t", kind="exec")
    with pytest.raises(ValueError, match="expected output must be a str"):
        TestCase("t", kind="stdio", stdin="1", expected=1)
    with pytest.raises(ValueError, match="has no code"):
        TestCase("t", kind="assert", code="  ")


def test_code_task_kinds_must_agree():
    stdio = TestCase("s", kind="stdio", stdin="", expected="")
    with pytest.raises(ValueError, match="stdio tasks take stdio tests only"):
        CodeTask("x", "p", "f", [stdio], [], kind="call")
    a, b, c = (TestCase(n, args=[1], expected=1) for n in "abc")
    task = CodeTask("x", "p", "f", [a], [b, c])
    assert (len(task.tests("public")), len(task.tests("private")), len(task.tests("all"))) == (1, 2, 3)
    shared = CodeTask("y", "p", "f", [a], [a])  # one test in both lists runs once under "all"
    assert shared.tests("all") == [a]
    with pytest.raises(ValueError, match="which='both'"):
        task.tests("both")


def test_to_wire_carries_exact_types():
    t = TestCase("c", args=[(1, 2), {3}], expected=(4.0, None))
    w = t.to_wire()
    assert w["args"] == [{"T": [1, 2]}, {"S": [3]}] and w["expected"] == {"T": [4.0, None]}
