"""Tests for search/tasks.py: the task records, the HumanEval splitter and split, the JSONL
loader (native call/stdio/assert and LiveCodeBench records) and the synthetic suite."""

from __future__ import annotations

import json
import re

import pytest

import search.tasks as tasks_mod
from search.sandbox import Sandbox, SandboxConfig
from search.tasks import (
    EXAMPLE_TASKS,
    CodeTask,
    TestCase,
    load_humaneval,
    load_jsonl,
    split_check,
    split_public_private,
    synthetic_suite,
)


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


# ------------------------------------------------------------------------------------------
# synthetic suite
# ------------------------------------------------------------------------------------------
def test_synthetic_suite_split_and_determinism():
    train, held = synthetic_suite(seed=0)
    assert (len(train), len(held)) == (96, 24)
    ids = [t.task_id for t in train + held]
    assert len(set(ids)) == len(ids)  # disjoint
    # every held-out task is an unseen parameter of a template that also trains
    train_templates = {t.meta["template"] for t in train}
    assert all(t.meta["template"] in train_templates and "{k}" in t.meta["template"] for t in held)
    again = synthetic_suite(seed=0)
    assert [t.task_id for t in again[1]] == [t.task_id for t in held]
    assert [t.public_tests[0].args for t in again[0]] == [t.public_tests[0].args for t in train]
    other = synthetic_suite(seed=1)
    assert {t.task_id for t in other[1]} != {t.task_id for t in held}
    with pytest.raises(ValueError, match="n_train"):
        synthetic_suite(n_train=200)


def test_synthetic_tasks_look_like_humaneval_and_have_good_tests():
    train, held = synthetic_suite(seed=0, n_public=3, n_private=5)
    add = next(t for t in train + held if t.task_id == "synthetic/add_3")
    assert add.prompt == 'def add_3(x):\n    """Return x plus 3."""\n'
    assert add.reference == add.prompt + "    return x + 3\n"
    for t in train + held:
        assert len(t.public_tests) == 3 and len(t.private_tests) == 5
        for group in (t.public_tests, t.private_tests):
            inputs = [repr(x.args) for x in group]
            assert len(set(inputs)) == len(inputs)  # distinct inputs
        # no constant answer passes every public test
        assert len({repr(x.expected) for x in t.public_tests}) > 1, t.task_id


def test_synthetic_references_pass_and_constants_fail_in_the_sandbox():
    train, held = synthetic_suite(seed=0)
    tasks = train + held
    with Sandbox(SandboxConfig(workers=2)) as sb:
        refs = sb.run_many([(t.reference, t) for t in tasks], which="all")
        assert all(r.status == "passed" for r in refs), [(t.task_id, r.message) for t, r in zip(tasks, refs)][
            :3
        ]
        stubs = sb.run_many([(t.prompt + "    return 0\n", t) for t in tasks])
        assert all(r.status != "passed" for r in stubs)


def test_wide_synthetic_suite_parameters_and_tests():
    narrow = sum(len(s) for s in synthetic_suite(seed=0, n_train=1, n_heldout=0)[:1])  # builds fine
    assert narrow == 1
    with pytest.raises(ValueError, match="846 tasks"):
        synthetic_suite(seed=0, n_train=900, max_k=99)
    with pytest.raises(ValueError, match="max_k"):
        synthetic_suite(seed=0, max_k=1)
    train, held = synthetic_suite(seed=0, n_train=700, n_heldout=64, max_k=99)
    ids = {t.task_id for t in train + held}
    assert len(ids) == 764 and "synthetic/add_99" in ids and "synthetic/add_100" not in ids
    for t in train + held:
        # public tests still tell a constant from the right answer (greater_than_57 sees both answers)
        assert len({repr(x.expected) for x in t.public_tests}) > 1, t.task_id
    with Sandbox(SandboxConfig(workers=2)) as sb:
        some = [t for t in train + held if "_9" in t.task_id or "9_" in t.task_id][:40]
        assert all(r.status == "passed" for r in sb.run_many([(t.reference, t) for t in some], "all"))


def _task_fn(template: str, k):
    return tasks_mod._template_fn(next(tpl for tpl in tasks_mod._TEMPLATES if tpl[1] == template), k)


def _passes(fn, tests) -> bool:
    try:
        return all(repr(fn(*t.args)) == repr(t.expected) for t in tests)
    except Exception:
        return False


def test_private_tests_rule_out_near_misses():
    train, held = synthetic_suite(seed=0, n_train=700, n_heldout=64, max_k=99)
    by_id = {t.task_id: t for t in train + held}
    # a boundary predicate: only x = 61 tells 60 from 61, only x = 62 tells 62 from 61
    gt = by_id["synthetic/greater_than_61"]
    wrong_k = [k for k in range(1, 100) if k != 61]
    assert not any(_passes(_task_fn("greater_than_{k}", k), gt.private_tests) for k in wrong_k)
    assert _passes(_task_fn("greater_than_{k}", 61), gt.private_tests)
    # 87 = 3 * 29: the divisors need inputs that are multiples of 3 or 29 and not of 87
    mult = by_id["synthetic/is_multiple_of_87"]
    assert not any(
        _passes(_task_fn("is_multiple_of_{k}", k), mult.private_tests) for k in range(2, 100) if k != 87
    )
    # the wrong operation with the right parameter fails too
    add = next(t for t in held if t.meta["template"] == "add_{k}")
    for wrong in ("sub_{k}", "mul_{k}", "mod_{k}", "greater_than_{k}"):
        assert not _passes(_task_fn(wrong, add.meta["param"]), add.private_tests), wrong
    # over the whole wide suite almost no near miss survives the private tests
    total = survived = 0
    for t in train + held:
        spec = next(
            tpl for tpl in tasks_mod._TEMPLATES
            if tpl[1] == t.meta["template"] and t.entry_point == tpl[1].format(k=t.meta["param"])
        )  # fmt: skip
        for other, k in tasks_mod._near_misses(spec, t.meta["param"]):
            total += 1
            survived += _passes(_task_fn(other[1], k), t.private_tests)
    assert total > 70_000 and survived <= total // 1000, (survived, total)


def test_heldout_tasks_in_proportion_to_template_size():
    from collections import Counter

    _, held = synthetic_suite(seed=0, n_train=700, n_heldout=64, max_k=99)
    per = Counter(t.meta["template"] for t in held)
    # 8 templates with 98-99 values share 64 * 97-98 / 815 = 7.6-7.7 each; the rest at most 1
    assert sum(per.values()) == 64
    assert sorted(per.values(), reverse=True)[:8] == [8, 8, 8, 8, 8, 8, 8, 7]
    assert all("{k}" in tpl for tpl in per) and per["repeat_{k}"] == 0 and per["append_{k}"] == 0
    # interleaved: the first eight held-out tasks come from eight different templates
    assert len({t.meta["template"] for t in held[:8]}) == 8


def test_shown_family_constants_only_the_tests_show():
    families = ("arith", "list", "string", "shown")
    train, held = synthetic_suite(seed=0, n_train=700, n_heldout=64, max_k=99, families=families)
    shown = [t for t in train + held if t.meta["family"] == "shown"]
    assert {t.meta["template"] for t in shown} == {"offset_{tag}", "scale_{tag}_each", "suffix_{tag}"}
    assert sum(t.meta["family"] == "shown" for t in held) >= 10  # held out like the other templates
    names = [t.entry_point for t in train + held]
    assert len(set(names)) == len(names)
    offset = next(t for t in held if t.meta["template"] == "offset_{tag}")
    k = offset.meta["param"]
    # neither the name nor the statement gives the constant; the first public test does
    assert str(k) not in offset.prompt and re.fullmatch(r"offset_[a-z]{3}", offset.entry_point)
    assert offset.reference == offset.prompt + f"    return x + {k}\n"
    assert (offset.public_tests[0].args, offset.public_tests[0].expected) == ([0], k)
    for t in shown:  # every task's first public test shows its constant
        c = t.meta["param"]
        shows = {"offset_{tag}": c, "scale_{tag}_each": [c], "suffix_{tag}": c}
        assert t.public_tests[0].expected == shows[t.meta["template"]]
    # the tags of a template's 99 parameters are distinct, and the other families are as before
    tpl = next(x for x in tasks_mod._TEMPLATES if x[1] == "offset_{tag}")
    assert len({tasks_mod._task_name(tpl, k) for k in range(1, 100)}) == 99
    assert all(t.meta["family"] != "shown" for s in synthetic_suite(seed=0) for t in s)
    with pytest.raises(ValueError, match="families"):
        synthetic_suite(seed=0, families=("arith", "lists"))
    from search.mars2 import CodeTasksConfig

    with pytest.raises(ValueError, match="tasks.families"):
        CodeTasksConfig(families=["arith", "lists"]).validate()
    # a program with another constant fails the showing test, and its message names the constant
    with Sandbox(SandboxConfig(workers=1)) as sb:
        wrong = offset.prompt + f"    return x + {k % 99 + 1}\n"
        ref, miss = sb.run_many([(offset.reference, offset), (wrong, offset)], "all")
    assert ref.status == "passed" and miss.status == "failed"
    assert miss.tests[0].message == f"{offset.entry_point}(0) returned {k % 99 + 1}, expected {k}"
