"""Tests for search/synthetic.py: the synthetic suite of code tasks."""

from __future__ import annotations

import re

import pytest

import search.synthetic as tasks_mod
from search.sandbox import Sandbox, SandboxConfig
from search.synthetic import synthetic_suite


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
    from search.loaders import CodeTasksConfig

    with pytest.raises(ValueError, match="tasks.families"):
        CodeTasksConfig(families=["arith", "lists"]).validate()
    # a program with another constant fails the showing test, and its message names the constant
    with Sandbox(SandboxConfig(workers=1)) as sb:
        wrong = offset.prompt + f"    return x + {k % 99 + 1}\n"
        ref, miss = sb.run_many([(offset.reference, offset), (wrong, offset)], "all")
    assert ref.status == "passed" and miss.status == "failed"
    assert miss.tests[0].message == f"{offset.entry_point}(0) returned {k % 99 + 1}, expected {k}"
