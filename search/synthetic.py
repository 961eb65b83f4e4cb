"""A synthetic suite of code tasks with a computable answer, in families of templates.

``synthetic_suite`` builds tasks from parameterised templates (arithmetic, lists, strings, and a
``shown`` family whose constant only a failing test's message shows), with tests that rule out near
misses (other parameters, sibling templates), and splits them into training and held-out tasks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from search.tasks import CodeTask, TestCase


# ----------------------------------------------------------------------------------------------------
# Synthetic suite
# ----------------------------------------------------------------------------------------------------
def _ints(rng: random.Random, k: Any) -> tuple:
    return (rng.randint(-20, 20),)


def _nats(rng: random.Random, k: Any) -> tuple:
    return (rng.randint(0, max(50, 5 * k)),)


def _pairs(rng: random.Random, k: Any) -> tuple:
    return (rng.randint(-20, 20), rng.randint(-20, 20))


def _lists(rng: random.Random, k: Any) -> tuple:
    return ([rng.randint(-9, 9) for _ in range(rng.randint(0, 6))],)


def _nonempty_lists(rng: random.Random, k: Any) -> tuple:
    return ([rng.randint(-9, 9) for _ in range(rng.randint(1, 6))],)


def _digit_lists(rng: random.Random, k: Any) -> tuple:
    return ([rng.randint(0, 9) for _ in range(rng.randint(0, 8))],)


def _lists_holding_k(rng: random.Random, k: Any) -> tuple:
    (xs,) = _digit_lists(rng, k)
    for _ in range(rng.randint(0, 3)):
        xs.insert(rng.randint(0, len(xs)), k)
    return (xs,)


def _words(rng: random.Random, k: Any) -> tuple:
    return ("".join(rng.choice("abcde") for _ in range(rng.randint(0, 8))),)


def _nonempty_words(rng: random.Random, k: Any) -> tuple:
    return ("".join(rng.choice("abcde") for _ in range(rng.randint(1, 8))),)


def _maybe_multiples(rng: random.Random, k: Any) -> tuple:
    top = max(50, 5 * k)
    return (rng.randint(0, top // k) * k if rng.random() < 0.5 else rng.randint(0, top),)


def _near(rng: random.Random, k: Any) -> tuple:
    return (k + rng.randint(-1, 2) if rng.random() < 0.25 else rng.randint(k - 12, k + 12),)  # the edge often


def _maybe_starting(rng: random.Random, k: Any) -> tuple:
    (w,) = _words(rng, k)
    return (k + w[1:] if w and rng.random() < 0.5 else w,)


def _palindromish(rng: random.Random, k: Any) -> tuple:
    if rng.random() < 0.5:
        half = "".join(rng.choice("ab") for _ in range(rng.randint(0, 3)))
        return (half + rng.choice(["", "a", "b"]) + half[::-1],)
    return ("".join(rng.choice("ab") for _ in range(rng.randint(1, 6))),)


# (family, name pattern, parameter values, signature, docstring, body, input generator)
_TEMPLATES: list[tuple[str, str, list, str, str, str, Any]] = [
    ("arith", "add_{k}", ("k", 1), "x", "Return x plus {k}.", "return x + {k}", _ints),
    ("arith", "sub_{k}", ("k", 1), "x", "Return x minus {k}.", "return x - {k}", _ints),
    ("arith", "mul_{k}", ("k", 2), "x", "Return x times {k}.", "return x * {k}", _ints),
    ("arith", "mod_{k}", ("k", 2), "x", "Return x modulo {k}.", "return x % {k}", _nats),
    ("arith", "is_multiple_of_{k}", ("k", 2), "x",
     "Return True if x is a multiple of {k}, else False.", "return x % {k} == 0", _maybe_multiples),
    ("arith", "greater_than_{k}", ("k", 1), "x",
     "Return True if x is greater than {k}, else False.", "return x > {k}", _near),
    ("arith", "max_of_two", [None], "a, b", "Return the larger of a and b.", "return max(a, b)", _pairs),
    ("arith", "min_of_two", [None], "a, b", "Return the smaller of a and b.", "return min(a, b)", _pairs),
    ("arith", "abs_diff", [None], "a, b",
     "Return the absolute difference of a and b.", "return abs(a - b)", _pairs),
    ("arith", "add_two", [None], "a, b", "Return the sum of a and b.", "return a + b", _pairs),
    ("list", "sum_list", [None], "xs", "Return the sum of the list xs.", "return sum(xs)", _lists),
    ("list", "max_list", [None], "xs",
     "Return the largest element of xs.", "return max(xs)", _nonempty_lists),
    ("list", "min_list", [None], "xs",
     "Return the smallest element of xs.", "return min(xs)", _nonempty_lists),
    ("list", "len_list", [None], "xs", "Return the number of elements of xs.", "return len(xs)", _lists),
    ("list", "reverse_list", [None], "xs", "Return xs reversed.", "return xs[::-1]", _lists),
    ("list", "sort_list", [None], "xs",
     "Return xs sorted in increasing order.", "return sorted(xs)", _lists),
    ("list", "add_{k}_to_each", ("k", 1), "xs",
     "Return a list with {k} added to every element of xs.", "return [x + {k} for x in xs]", _lists),
    ("list", "times_{k}_each", ("k", 2), "xs",
     "Return a list with every element of xs multiplied by {k}.", "return [x * {k} for x in xs]", _lists),
    ("list", "count_{k}", list(range(0, 10)), "xs",
     "Return how many times {k} appears in xs.", "return xs.count({k})", _lists_holding_k),
    ("list", "first_{k}", list(range(2, 6)), "xs",
     "Return the first {k} elements of xs.", "return xs[:{k}]", _lists),
    ("list", "keep_greater_than_{k}", list(range(0, 6)), "xs",
     "Return the elements of xs greater than {k}, in order.",
     "return [x for x in xs if x > {k}]", _digit_lists),
    ("string", "repeat_{k}", list(range(2, 5)), "s",
     "Return s repeated {k} times.", "return s * {k}", _words),
    ("string", "count_{k}", list("abcde"), "s",
     "Return how many times '{k}' appears in s.", "return s.count('{k}')", _words),
    ("string", "starts_with_{k}", list("abcde"), "s",
     "Return True if s starts with '{k}', else False.", "return s.startswith('{k}')", _maybe_starting),
    ("string", "remove_{k}", list("abcde"), "s",
     "Return s with every '{k}' removed.", "return s.replace('{k}', '')", _words),
    ("string", "append_{k}", list("abcde"), "s",
     "Return s followed by '{k}'.", "return s + '{k}'", _words),
    ("string", "reverse_string", [None], "s", "Return s reversed.", "return s[::-1]", _words),
    ("string", "to_upper", [None], "s", "Return s in upper case.", "return s.upper()", _words),
    ("string", "string_length", [None], "s",
     "Return the number of characters of s.", "return len(s)", _words),
    ("string", "first_char", [None], "s",
     "Return the first character of s.", "return s[0]", _nonempty_words),
    ("string", "is_palindrome", [None], "s",
     "Return True if s reads the same backwards, else False.", "return s == s[::-1]", _palindromish),
    # "shown": the statement leaves a constant that only the tests show (the name's tag does not
    # give it away); a failing test's message tells it, so refinement has what a fresh program lacks
    ("shown", "offset_{tag}", ("k", 1), "x",
     "Return x plus the offset the tests show.", "return x + {k}", _ints),
    ("shown", "scale_{tag}_each", ("k", 2), "xs",
     "Return xs with each element times the factor the tests show.", "return [x * {k} for x in xs]", _lists),
    ("shown", "suffix_{tag}", [a + b for a in "abcde" for b in "abcde"], "s",
     "Return s followed by the suffix the tests show.", "return s + '{k}'", _words),
]  # fmt: skip

FAMILIES = ("arith", "list", "string", "shown")
DEFAULT_FAMILIES = ("arith", "list", "string")

# the input whose expected answer shows a "shown" task's constant: always its first public test
_SHOWING_INPUT = {"offset_{tag}": (0,), "scale_{tag}_each": ([1],), "suffix_{tag}": ("",)}


def _tag(name_fmt: str, k: Any) -> str:
    """Three letters naming parameter ``k`` of a "shown" template without showing it: ``k`` as an
    integer (a string's bytes read big-endian: 24929 to 25957 for 'aa' to 'ee') times 7919 plus a
    per-template salt, modulo 26**3, in base 26. 7919 is prime to 26**3, so parameters less than
    26**3 apart get distinct tags."""
    i = k if isinstance(k, int) else int.from_bytes(str(k).encode(), "big")
    salt = int(hashlib.sha256(name_fmt.encode()).hexdigest()[:8], 16)
    v = (i * 7919 + salt) % 26**3
    return "".join(chr(ord("a") + (v // 26**j) % 26) for j in (2, 1, 0))


def _task_name(template: tuple, k: Any) -> str:
    return template[1].format(k=k, tag=_tag(template[1], k) if "{tag}" in template[1] else "")


def _template_fn(template: tuple, k: Any):
    """The reference function of ``template`` with parameter ``k`` (our own template code)."""
    sig, body = template[3], template[5]
    ns: dict = {}
    exec(f"def f({sig}):\n    {body.format(k=k)}\n", ns)
    return ns["f"]


_NEAR_MISS_KS = 99  # near misses span the integer parameters up to here, whatever the suite's max_k


def _near_misses(template: tuple, k: Any) -> list[tuple[tuple, Any]]:
    """The programs a model that almost solved ``template`` at ``k`` writes: the same template with
    another parameter, and every other template with the same signature at the same parameter."""
    out = [(template, k2) for k2 in _params(template[2], max(_NEAR_MISS_KS, _int_k(k))) if k2 != k]
    for other in _TEMPLATES:
        same_fn = other[5] == template[5]  # offset_{tag} at k is add_{k}: not a near miss
        if other is not template and other[3] == template[3] and not same_fn:
            ks = _params(other[2], max(_NEAR_MISS_KS, _int_k(k)))
            if k in ks or ks == [None]:
                out.append((other, k if k in ks else None))
    return out


def _int_k(k: Any) -> int:
    return k if isinstance(k, int) else 0


def _answers(fn, x: tuple) -> str:
    try:  # the templates are pure functions: they never change their arguments
        return repr(fn(*x))
    except Exception as e:  # a near miss that raises on an input is told apart by it
        return f"<raises {type(e).__name__}>"


def _synthetic_task(seed: int, template: tuple, k: Any, n_public: int, n_private: int) -> CodeTask:
    """One task; its tests tell the reference apart from its near misses (``_near_misses``).

    Candidate inputs come from the template's generator at ``k`` and at every near-miss
    parameter (multiples of 29 for ``is_multiple_of_87``, values near 60 for
    ``greater_than_61``). Public tests first cover distinct answers (so no constant passes
    them), then inputs that rule out near misses; private tests are chosen to rule out every
    near miss the candidates can separate (an input may then also be a public one), then
    filled with fresh inputs. So a program with the wrong parameter or the wrong operation
    fails the private tests, and usually some public test too.
    """
    family, name_fmt, _, sig, doc, body, gen = template
    name = _task_name(template, k)
    prompt = f'def {name}({sig}):\n    """{doc.format(k=k)}"""\n'
    reference = prompt + f"    {body.format(k=k)}\n"
    fn = _template_fn(template, k)
    rng = random.Random(f"synthetic/{seed}/{name}")
    misses = _near_misses(template, k)
    pool: list[tuple] = []
    seen: set[str] = set()

    def add(x: tuple) -> None:
        if repr(x) not in seen:
            seen.add(repr(x))
            pool.append(x)

    if name_fmt in _SHOWING_INPUT:  # first, so it is the first public test
        add(_SHOWING_INPUT[name_fmt])
    for _ in range(4 * (n_public + n_private)):
        add(gen(rng, k))
    for tpl2, k2 in misses:
        if tpl2 is template:
            add(gen(rng, k2))
            add(gen(rng, k2))
    answers = [_answers(fn, x) for x in pool]
    miss_fns = [_template_fn(t2, k2) for t2, k2 in misses]

    memo: dict[tuple[int, int], bool] = {}

    def rules_out(m: int, i: int) -> bool:
        if (m, i) not in memo:
            memo[m, i] = _answers(miss_fns[m], pool[i]) != answers[i]
        return memo[m, i]

    def separating(candidates: list[int], limit: int) -> list[int]:
        """At most ``limit`` candidates that rule out as many near misses as they can.

        One pass in order keeps each candidate that rules out a near miss no earlier one
        did (cheap: most near misses fall to the first input); then the largest-coverage
        greedy picks among those kept (so ``greater_than_61`` gets 61 and 62, not five
        inputs that each rule out a few parameters).
        """
        alive = set(range(len(miss_fns)))
        kept: list[int] = []
        for i in candidates:
            if not alive:
                break
            dead = {m for m in alive if rules_out(m, i)}
            if dead:
                kept.append(i)
                alive -= dead
        kills = {i: {m for m in range(len(miss_fns)) if rules_out(m, i)} for i in kept}
        chosen: list[int] = []
        covered: set[int] = set()
        while len(chosen) < limit:
            gain, best = max(((len(kills[i] - covered), i) for i in kept if i not in chosen), default=(0, -1))
            if gain == 0:
                break
            chosen.append(best)
            covered |= kills[best]
        return chosen

    public: list[int] = []
    for i in range(len(pool)):  # distinct answers first, so a constant cannot pass them all
        if len(public) < n_public and answers[i] not in [answers[j] for j in public]:
            public.append(i)
    rest = [i for i in range(len(pool)) if i not in public]
    public += separating(rest, n_public - len(public))
    public += [i for i in rest if i not in public][: n_public - len(public)]
    # private: rule out every near miss, preferring inputs the public tests do not show
    private = separating([i for i in range(len(pool)) if i not in public] + public, n_private)
    fresh = [i for i in range(len(pool)) if i not in public and i not in private]
    private += fresh[: n_private - len(private)]

    def cases(idx: list[int], prefix: str) -> list[TestCase]:
        return [
            TestCase(name=f"{prefix}[{j}]", kind="call", args=list(pool[i]), expected=fn(*pool[i]))
            for j, i in enumerate(idx)
        ]

    return CodeTask(
        task_id=f"synthetic/{name}",
        prompt=prompt,
        entry_point=name,
        public_tests=cases(public, "public"),
        private_tests=cases(private, "private"),
        kind="call",
        reference=reference,
        meta={"family": family, "template": name_fmt, "param": k},
    )


def _params(spec: Any, max_k: int) -> list:
    """A template's parameter values: a list, or ``("k", lo)`` for the integers lo..max_k."""
    if isinstance(spec, tuple) and spec[0] == "k":
        return list(range(spec[1], max_k + 1))
    return list(spec)


def synthetic_suite(
    seed: int = 0,
    n_train: int = 96,
    n_heldout: int = 24,
    n_public: int = 3,
    n_private: int = 5,
    max_k: int = 9,
    families: Sequence[str] = DEFAULT_FAMILIES,
) -> tuple[list[CodeTask], list[CodeTask]]:
    """Small list, string and arithmetic functions with generated tests and reference solutions.

    Every task is a one-line function (``return x + 3``) in HumanEval's prompt
    style, so a tiny LM can learn the suite; ``reference`` (prompt + body) is
    the supervised warm-start target. Held-out tasks are unseen parameter
    values of templates that also appear in training (``add_5`` held out while
    ``add_3`` trains), each template giving held-out tasks in proportion to
    its number of parameter values (so a template with few values keeps most
    of them for training), in a seeded order; training tasks are drawn from
    the rest. Tests: ``n_public`` +
    ``n_private`` distinct seeded inputs, expected values from the reference.

    ``max_k`` is the largest integer parameter of the arithmetic templates
    (``add_{k}``, ``mod_{k}``, ``times_{k}_each``, ...). With the default 9 a
    small model can memorise every training body, and held-out tasks need
    copying a digit it never wrote for that template; with ``max_k=99`` there
    are about 430 tasks and copying the parameter from the name into the body is
    the cheaper thing to learn.

    ``families`` picks the templates: ``arith``, ``list`` and ``string`` state everything the
    tests check; ``shown`` (``offset_{tag}``, ``scale_{tag}_each``, ``suffix_{tag}``) leaves a
    constant that only the tests show (its first public test gives it away: ``offset_kqd(0)``
    returned 12, expected 37), as in real tasks whose tests settle what the statement leaves
    open. A fresh program can only guess it; a refinement reads it from the failing test.
    """
    if max_k < 2:
        raise ValueError(f"max_k ({max_k}) must be >= 2")
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        raise ValueError(f"synthetic_suite families {unknown or list(families)}: pick from {list(FAMILIES)}")
    rng = random.Random(f"synthetic-split/{seed}")
    groups: list[list[tuple]] = []
    for tpl in _TEMPLATES:
        if tpl[0] not in families:
            continue
        members = [(tpl, k) for k in _params(tpl[2], max_k)]
        rng.shuffle(members)
        groups.append(members)
    total = sum(len(m) for m in groups)
    param_slots = sum(len(m) - 1 for m in groups if len(m) > 1)  # keep one of each template for training
    if n_heldout > param_slots or n_train + n_heldout > total or min(n_train, n_public) < 1 or n_heldout < 0:
        raise ValueError(
            f"synthetic_suite has {total} tasks ({param_slots} can be held out): n_train ({n_train}) + "
            f"n_heldout ({n_heldout}) must fit, with n_train >= 1 and n_public ({n_public}) >= 1"
        )
    order = list(range(len(groups)))
    rng.shuffle(order)
    # each template gives held-out tasks in proportion to its size (largest remainder), keeping one
    slots = [len(m) - 1 for m in groups]
    quota = [n_heldout * n / param_slots for n in slots]
    share = [int(q) for q in quota]
    by_remainder = sorted(order, key=lambda f: share[f] - quota[f])  # largest remainder first, stable
    for f in by_remainder[: n_heldout - sum(share)]:
        share[f] += 1
    heldout: list[tuple] = []
    while len(heldout) < n_heldout:  # interleaved, so a prefix of the held-out list spans the templates
        for f in order:
            if share[f] > 0:
                heldout.append(groups[f].pop())
                share[f] -= 1
    pool = [m for fam in groups for m in fam]
    rng.shuffle(pool)
    build = lambda pairs: [_synthetic_task(seed, tpl, k, n_public, n_private) for tpl, k in pairs]  # noqa: E731
    return build(pool[:n_train]), build(heldout)
