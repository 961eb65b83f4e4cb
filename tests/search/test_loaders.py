"""Tests for search/loaders.py: the HumanEval splitter and split, the JSONL loader (native
call/stdio/assert and LiveCodeBench records) and the run's task config."""

from __future__ import annotations

import json

import pytest

from search.loaders import EXAMPLE_TASKS, load_humaneval, load_jsonl, split_check, split_public_private
from search.sandbox import Sandbox, SandboxConfig

# ------------------------------------------------------------------------------------------
# HumanEval check splitting
# ------------------------------------------------------------------------------------------
CHECK = """
METADATA = {"author": "x"}


def check(candidate):
    import math
    assert True, "trivial"
    assert candidate(1) == 2
    base = 10
    assert candidate(base) == 11, "message"
    for i in range(3):
        assert candidate(i) == i + 1
"""


def test_split_check_makes_self_contained_chunks():
    setup, chunks = split_check(CHECK)
    assert setup == "METADATA = {'author': 'x'}"
    # 'assert True' never calls candidate: dropped; each chunk carries the assert-free statements before it
    assert chunks == [
        "import math\nassert candidate(1) == 2",
        "import math\nbase = 10\nassert candidate(base) == 11, 'message'",
        "import math\nbase = 10\nfor i in range(3):\n    assert candidate(i) == i + 1",
    ]


def test_split_check_renamed_argument_and_errors():
    _, chunks = split_check("def check(f):\n    assert f(1) == 1\n")
    assert chunks == ["f = candidate\nassert f(1) == 1"]
    with pytest.raises(ValueError, match="exactly one check"):
        split_check("def test():\n    pass\n")


def test_split_public_private_hand_values():
    # n = 7, fraction 0.5: round(3.5) = 4 public (banker's rounding gives 4), 3 private
    pub, priv = split_public_private(7, 0.5, "0/HumanEval/0")
    assert (len(pub), len(priv)) == (4, 3) and sorted(pub + priv) == list(range(7))
    assert split_public_private(7, 0.5, "0/HumanEval/0") == (pub, priv)  # deterministic
    assert split_public_private(1, 0.5, "s") == ([0], [0])  # a single test goes to both
    assert split_public_private(2, 0.01, "s")[0].__len__() == 1  # at least one public
    assert split_public_private(2, 0.99, "s")[1].__len__() == 1  # and one private


# ------------------------------------------------------------------------------------------
# HumanEval loader
# ------------------------------------------------------------------------------------------
def test_load_humaneval():
    tasks = load_humaneval()
    assert len(tasks) == 164 and len({t.task_id for t in tasks}) == 164
    t0 = tasks[0]
    assert t0.task_id == "HumanEval/0" and t0.entry_point == "has_close_elements"
    assert t0.reference.startswith(t0.prompt) and t0.setup.startswith(t0.prompt)
    for t in tasks:
        assert t.public_tests and t.private_tests
        assert all(x.kind == "assert" and "candidate" in x.code for x in t.tests("all"))
        names = [x.name for x in t.tests("all")]
        if t.public_tests != t.private_tests:  # a single chunk is shared by both lists
            assert len(set(names)) == len(names)
    # 1133 assert chunks call candidate across the 164 problems; 4 problems have a single loop chunk
    assert sum(len(t.tests("all")) for t in tasks) == 1133
    assert sum(len(t.public_tests) == 1 and t.public_tests == t.private_tests for t in tasks) == 4
    again = load_humaneval()
    assert [x.name for x in again[5].public_tests] == [x.name for x in tasks[5].public_tests]
    other = load_humaneval(split_seed=1)
    assert any(
        [x.name for x in a.public_tests] != [x.name for x in b.public_tests] for a, b in zip(tasks, other)
    )
    with pytest.raises(ValueError, match="public_fraction"):
        load_humaneval(public_fraction=1.0)


# ------------------------------------------------------------------------------------------
# JSONL
# ------------------------------------------------------------------------------------------
def _write(tmp_path, rows) -> str:
    path = tmp_path / "tasks.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_load_jsonl_native_call_stdio_and_assert(tmp_path):
    path = _write(
        tmp_path,
        [
            "# a comment line",
            {
                "task_id": "add",
                "prompt": "Add.",
                "entry_point": "add",
                "public_tests": [{"args": [1, 2], "expected": 3}, {"input": [2, 2], "output": 4}],
                "private_tests": [{"args": [0, 0], "expected": 0}],
                "reference": "def add(a, b):\n    return a + b\n",
            },
            "",
            {
                "task_id": "echo",
                "prompt": "Echo.",
                "kind": "stdio",
                "public_tests": [{"stdin": "hi\n", "expected": "hi\n"}],
                "private_tests": [{"input": "yo\n", "output": "yo\n"}],
            },
            {
                "task_id": "sq",
                "prompt": "Square.",
                "entry_point": "sq",
                "setup": "def ref(x):\n    return x * x\n",
                "public_tests": [{"code": "assert candidate(3) == ref(3)"}],
            },
        ],
    )
    add, echo, sq = load_jsonl(path)
    assert (add.kind, add.public_tests[1].args, add.public_tests[1].expected) == ("call", [2, 2], 4)
    assert add.reference.startswith("def add")
    assert (echo.kind, echo.entry_point, echo.private_tests[0].stdin) == ("stdio", "main", "yo\n")
    assert sq.public_tests[0].kind == "assert" and sq.private_tests == [] and "ref" in sq.setup
    with Sandbox(SandboxConfig(workers=1)) as sb:
        assert sb.run(add.reference, add, which="all").status == "passed"
        assert sb.run("print(input())\n", echo, which="all").status == "passed"
        assert sb.run("def sq(x):\n    return x * x\n", sq).status == "passed"
        assert sb.run("def sq(x):\n    return x + x\n", sq).status == "failed"


def test_load_jsonl_livecodebench_records(tmp_path):
    functional = {
        "question_id": "lc1",
        "question_content": "Return the max profit.",
        "starter_code": "class Solution:\n    def maxProfit(self, prices: List[int]) -> int:\n        ",
        "metadata": json.dumps({"func_name": "maxProfit"}),
        "public_test_cases": json.dumps(
            [{"input": "[7, 1, 5, 3, 6, 4]", "output": "5", "testtype": "functional"}]
        ),
        "private_test_cases": json.dumps([{"input": "[7, 6]", "output": "0", "testtype": "functional"}]),
        "difficulty": "easy",
    }
    stdin = {
        "question_id": "ac1",
        "question_content": "Print a+b.",
        "starter_code": "",
        "metadata": "{}",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": "eJzLSM3JyQcABiwCFQ==",  # compressed: not read
    }
    path = _write(tmp_path, [functional, {**stdin, "private_test_cases": ""}])
    fn, io = load_jsonl(path)
    assert (fn.kind, fn.entry_point, fn.public_tests[0].args, fn.public_tests[0].expected) == (
        "call",
        "maxProfit",
        [[7, 1, 5, 3, 6, 4]],
        5,
    )
    assert "class Solution" in fn.prompt and fn.meta["difficulty"] == "easy"
    assert (io.kind, io.public_tests[0].stdin, io.private_tests) == ("stdio", "1 2\n", [])
    solution = (
        "class Solution:\n"
        "    def maxProfit(self, prices):\n"
        "        best, low = 0, prices[0]\n"
        "        for p in prices:\n"
        "            low = min(low, p)\n"
        "            best = max(best, p - low)\n"
        "        return best\n"
    )
    with Sandbox(SandboxConfig(workers=1)) as sb:
        assert sb.run(solution, fn, which="all").status == "passed"
    with pytest.raises(ValueError, match="must be a JSON list"):
        load_jsonl(_write(tmp_path, [stdin]))


def test_shipped_example_file():
    tasks = load_jsonl(EXAMPLE_TASKS)
    assert [t.kind for t in tasks] == ["call", "call", "stdio", "call"]
    with Sandbox(SandboxConfig(workers=2)) as sb:
        refs = sb.run_many([(t.reference, t) for t in tasks], which="all")
        assert [r.status for r in refs] == ["passed"] * 4, [r.message for r in refs]
        wrong = [
            "def two_sum(nums, target):\n    return [0, 1]\n",
            "def mean(xs):\n    return sum(xs) // len(xs)\n",
            "print(len(input()))\n",
            "def is_prime(n):\n    return n % 2 == 1\n",
        ]
        assert [r.status for r in sb.run_many(list(zip(wrong, tasks)), which="all")] == ["failed"] * 4


def test_load_jsonl_errors_name_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"tasks.jsonl:1: missing keys \['prompt'\]"):
        load_jsonl(_write(tmp_path, [{"task_id": "a", "public_tests": []}]))
    with pytest.raises(ValueError, match=r"tasks.jsonl:1: a call task needs 'entry_point'"):
        load_jsonl(_write(tmp_path, [{"task_id": "a", "prompt": "p", "public_tests": []}]))
    row = {"task_id": "a", "prompt": "p", "entry_point": "f", "public_tests": []}
    with pytest.raises(ValueError, match=r"duplicate task_id \['a'\]"):
        load_jsonl(_write(tmp_path, [row, row]))
    with pytest.raises(ValueError, match="needs 'expected'"):
        load_jsonl(_write(tmp_path, [{**row, "public_tests": [{"args": [1]}]}]))
