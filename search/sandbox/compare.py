"""Trusted comparison of a program's output with the expected one.

These run in the judge process on values decoded from the wire, never inside
the untrusted program. Standard library only (the sandbox's own processes
import this file as the top-level module ``compare``).
"""

from __future__ import annotations

import math
from typing import Any


def floats_close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    """|a − b| ≤ max(rel_tol·max(|a|, |b|), abs_tol), as ``math.isclose``; nan equals nan."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def outputs_match(got: Any, expected: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether a returned value equals the expected one for a call-based test.

    Rules (those of LiveCodeBench-style JSON tests, whose expected values come
    from JSON): ``bool`` only matches ``bool``; ``int`` matches ``int`` exactly;
    a ``float`` on either side matches a number within ``rel_tol``/``abs_tol``;
    lists and tuples match each other element-wise (JSON has no tuples); dicts
    need the same keys and matching values; sets need equal contents; anything
    else compares with ``==`` on plain values.
    """
    tg, te = type(got), type(expected)
    if tg is bool or te is bool:
        return tg is te and got == expected
    if tg in (int, float) and te in (int, float):
        if tg is int and te is int:
            return got == expected
        return floats_close(float(got), float(expected), rel_tol, abs_tol)
    if tg in (list, tuple) and te in (list, tuple):
        return len(got) == len(expected) and all(
            outputs_match(g, e, rel_tol, abs_tol) for g, e in zip(got, expected)
        )
    if tg is dict and te is dict:
        return got.keys() == expected.keys() and all(
            outputs_match(got[k], expected[k], rel_tol, abs_tol) for k in expected
        )
    if tg in (set, frozenset) and te in (set, frozenset, list, tuple):
        try:
            return got == set(expected)
        except TypeError:  # unhashable element in the expected list
            return False
    return tg is te and got == expected


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_matches(got: str, expected: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether a program's standard output equals the expected one (stdin/stdout tests).

    First exact up to trailing spaces on each line and trailing blank lines (the
    usual judge rule); failing that, token by token on whitespace, where two
    tokens that both parse as floats match within ``rel_tol``/``abs_tol``
    (APPS/LiveCodeBench accept numeric answers this way).
    """
    if _lines(got) == _lines(expected):
        return True
    g, e = got.split(), expected.split()
    if len(g) != len(e):
        return False
    for a, b in zip(g, e):
        if a == b:
            continue
        try:
            fa, fb = float(a), float(b)
        except ValueError:
            return False
        if not floats_close(fa, fb, rel_tol, abs_tol):
            return False
    return True
