"""The program's function as trusted test code sees it: known calls sent ahead, and the proxy.

``static_calls`` finds the calls a test will surely make with literal
arguments; ``Pipeline`` sends them to the child right behind the program, so it
computes without waiting for the judge, and matches replies to calls in order;
``Candidate`` is what a test calls as ``candidate``: it ships the arguments and
returns the decoded reply, or raises the program's exception as a built-in one.

Standard library only; imported by the judge process as a top-level module.
"""

from __future__ import annotations

import ast
import builtins
from collections import deque
from typing import Any

try:  # imported as search.sandbox.calls (tests) or as top-level calls (judge process)
    from . import wire
    from .child import Child, Fatal
except ImportError:  # pragma: no cover - exercised in the judge process
    import wire
    from child import Child, Fatal

_REPR_CHARS = 300
_EXCEPTIONS = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning)
}


class ProgramError(Exception):
    """Stands, in the judge, for an exception the program raised that has no built-in counterpart."""


def short_repr(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:
        r = f"<{type(v).__name__}>"
    return r if len(r) <= _REPR_CHARS else r[: _REPR_CHARS - 3] + "..."


def static_calls(code: str, names: tuple[str, ...]) -> list[tuple[list, dict]] | None:
    """The calls of ``names`` that test ``code`` will surely make, in order, when all are known up front.

    A call is known when it is unconditional (not under a loop, branch,
    ``and``/``or``, conditional expression, comprehension, function, ``try`` or
    an assert's message) and its arguments are literals. Returns ``None`` when
    some use of the names is not such a call; the judge then calls the program
    one request at a time for that test.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    uses = sum(isinstance(n, ast.Name) and n.id in names for n in ast.walk(tree))
    calls: list[tuple[list, dict]] = []
    opaque = (
        ast.For, ast.AsyncFor, ast.While, ast.If, ast.Try, ast.With, ast.AsyncWith, ast.FunctionDef,
        ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
        ast.GeneratorExp, ast.IfExp, ast.BoolOp, ast.Dict, ast.Match, ast.NamedExpr, ast.Await,
    )  # fmt: skip

    def visit(node: ast.AST) -> bool:
        if isinstance(node, opaque):
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords
            ):
                return False
            try:
                args = [ast.literal_eval(a) for a in node.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return False
            calls.append((args, kwargs))
            return True
        if isinstance(node, ast.Assert):
            return visit(node.test) and (
                node.msg is None
                or not any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node.msg))
            )
        if isinstance(node, ast.Assign):  # the value is evaluated before the targets
            return visit(node.value) and all(visit(t) for t in node.targets)
        return all(visit(c) for c in ast.iter_child_nodes(node))

    if not visit(tree) or len(calls) != uses:
        return None
    return calls


def call_key(args: Any, kwargs: Any) -> str:
    """The call as wire text (which also checks that its arguments are plain data)."""
    return "[" + wire.dump_value(list(args)) + "," + wire.dump_value(dict(kwargs)) + "]"


def call_frame(args: Any, kwargs: Any) -> bytes:
    """The packed request that makes the program call its function with ``args`` and ``kwargs``, which
    are plain data (``call_key`` checked). Values of exact built-in types go as they are; others (int
    subclasses, numpy scalars, ...) as their plain equivalents."""
    try:
        return wire.pack_request({"op": "call", "args": list(args), "kwargs": dict(kwargs)})
    except ValueError:
        plain = [wire.decode_value(wire.encode_value(v)) for v in (list(args), dict(kwargs))]
        return wire.pack_request({"op": "call", "args": plain[0], "kwargs": plain[1]})


class Pipeline:
    """Calls sent ahead of the tests that will make them, so the program computes without waiting."""

    MAX_AHEAD = 256

    def __init__(self, child: Child):
        self.child = child
        self.ahead: deque[str] = deque()

    def prefetch(self, calls: list[tuple[list, dict]]) -> None:
        for args, kwargs in calls[: self.MAX_AHEAD]:
            try:
                key = call_key(args, kwargs)
            except wire.Unserializable:
                return
            self.child.send(call_frame(args, kwargs))
            self.ahead.append(key)

    def call(self, key: str, args: tuple, kwargs: dict, deadline: float) -> dict:
        if self.ahead and self.ahead[0] == key:
            self.ahead.popleft()
            return self.child.receive(deadline)
        while self.ahead:  # the test did not make the calls we guessed: drop their replies
            self.ahead.popleft()
            self.child.receive(deadline)
        self.child.send(call_frame(args, kwargs))
        return self.child.receive(deadline)


class Candidate:
    """What test code sees as ``candidate``: a proxy to the program's function in the child."""

    def __init__(self, pipeline: Pipeline, deadline: float):
        self.pipeline, self.deadline = pipeline, deadline
        self.raised: list[BaseException] = []  # exceptions that stand for the program's
        self.fatal: Fatal | None = None
        self._last: tuple[tuple, dict, str, Any] | None = None  # args, kwargs, outcome, value
        self.n_calls = 0

    def call_text(self, name: str = "candidate") -> str:
        """The last call, as ``name(args)``, formatted only when a message needs it."""
        if self._last is None:
            return ""
        args, kwargs, _, _ = self._last
        return (
            f"{name}("
            + ", ".join([short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()])
            + ")"
        )

    @property
    def last_call(self) -> str:
        """The last call and what came of it, for messages."""
        if self._last is None:
            return ""
        _, _, outcome, value = self._last
        tail = {"ret": f" returned {short_repr(value)}", "exc": f" raised {value}"}.get(outcome, "")
        return self.call_text() + tail

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fatal is not None:
            raise self.fatal
        try:
            key = call_key(args, kwargs)
        except wire.Unserializable as e:
            raise TypeError(f"the test passes an argument that is not plain data: {e}") from None
        self.n_calls += 1
        self._last = (args, kwargs, "", None)
        try:
            reply = self.pipeline.call(key, args, kwargs, self.deadline)
        except Fatal as e:
            self.fatal = e
            raise
        op = reply["op"]
        if op == "ret":
            try:
                value = wire.decode_value(reply.get("value"))
            except (wire.WireError, MemoryError, RecursionError) as e:
                self.fatal = Fatal("crash", f"the program broke the result channel ({type(e).__name__}: {e})")
                raise self.fatal from None
            self._last = (args, kwargs, "ret", value)
            return value
        if op == "exc":
            name, text = str(reply.get("type", ""))[:100], str(reply.get("msg", ""))[:2000]
            exc: BaseException
            try:
                exc = _EXCEPTIONS[name](text) if name in _EXCEPTIONS else ProgramError(f"{name}: {text}")
            except Exception:
                exc = ProgramError(f"{name}: {text}")
            exc.program_traceback = str(reply.get("tb", ""))[-4000:]  # type: ignore[attr-defined]
            self._last = (args, kwargs, "exc", name)
            self.raised.append(exc)
            raise exc
        if op == "unser":
            exc = ProgramError(
                f"the return value cannot leave the sandbox: {str(reply.get('msg', ''))[:300]}"
            )
            exc.program_traceback = ""  # type: ignore[attr-defined]
            self.raised.append(exc)
            raise exc
        self.fatal = Fatal("crash", f"the program broke the result channel (unexpected reply {op[:40]!r})")
        raise self.fatal
