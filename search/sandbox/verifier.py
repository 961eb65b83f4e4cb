"""The judge: a trusted process that runs one program's tests at a time.

Threat model and why no program can forge a pass
------------------------------------------------
The verdict is decided here, in a process the program cannot reach (another
uid, another PID namespace), from information the program never holds:

* The untrusted child only ever receives the program text and test *inputs*
  (call arguments or stdin). Expected outputs and assertion code stay in this
  process. Every HumanEval-style ``check(candidate)`` chunk runs here, with
  ``candidate`` a proxy that ships the arguments to the child and returns the
  decoded reply; the assertion itself, and any helper it uses, run here.
* Requests to the child travel as ``marshal`` data of plain values (cheap to
  decode in a freshly forked process); only the child unmarshals. The judge
  never unmarshals anything: replies are JSON.
* Whatever the child sends back is only "the value the program returned",
  decoded by ``wire.decode_value`` into fresh plain objects. Forging that
  channel (writing frames on the socket, patching ``json``, builtins or the
  harness, returning objects with a custom ``__eq__``) can at best make the
  judge see some value, and seeing the expected value means the program
  computed it: a forged pass is a solved test.
* A test passes only when its code here ran to the end without an exception
  and the child replied to every call. Exiting (``sys.exit``, ``os._exit``,
  ``SystemExit`` raised in ``finally``, killing itself), hanging or flooding
  its output gives ``error``, ``crash`` or ``timeout``, never ``passed``; a
  stdin/stdout program passes only if the harness reported a normal end and
  its stdout matches.
* Calls whose arguments are literals in unconditional positions are sent
  ahead (``static_calls``) so the program computes without waiting; the
  replies are still matched to the calls in order, and a test that makes
  other calls than predicted gets live calls (the replies to the predicted
  ones are dropped).

Limits: a program can read the inputs it is given and can hard-code answers
for the public tests it was shown (that is what private tests are for); it
can read world-readable host files that are not masked (``hide_paths``);
stateful programs see calls sent ahead a little earlier than a sequential
harness would make them (same order). In ``rlimit`` isolation it runs under
the caller's uid and could signal or ptrace this process: a killed judge is
replaced (the job is retried once, then reported as ``crash``), but a
ptraced one could be made to lie, so use ``full`` isolation for untrusted code.

Standard library only; started by ``search.sandbox.pool`` as a fresh
interpreter that imports this file as the top-level module ``verifier``.
"""

from __future__ import annotations

import ast
import builtins
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from typing import Any

try:  # imported as search.sandbox.verifier (tests) or as top-level verifier (judge process)
    from . import judge, wire
except ImportError:  # pragma: no cover - exercised in the judge process
    import judge
    import wire

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPR_CHARS = 300
# the whole environment of the zygote and so of every program
PROGRAM_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "HOME": ".",  # the program's working directory, its own fresh one
    "TMPDIR": ".",
}
_EXCEPTIONS = {
    name: cls
    for name, cls in vars(builtins).items()
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning)
}
_SIGNALS = {
    signal.SIGXCPU: "CPU time limit exceeded (SIGXCPU)",
    signal.SIGXFSZ: "file size limit exceeded (SIGXFSZ)",
    signal.SIGKILL: "killed (SIGKILL)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV), e.g. a stack overflow",
    signal.SIGABRT: "aborted (SIGABRT)",
}


class ProgramError(Exception):
    """Stands, in the judge, for an exception the program raised that has no built-in counterpart."""


class _Fatal(Exception):
    """The child can no longer be used for this test: ``status`` is "timeout" or "crash"."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _TrustedTimeout(Exception):
    pass


def _short(v: Any) -> str:
    try:
        r = repr(v)
    except Exception:
        r = f"<{type(v).__name__}>"
    return r if len(r) <= _REPR_CHARS else r[: _REPR_CHARS - 3] + "..."


def describe_status(status: int) -> str:
    """Human-readable wait status of a child that ended on its own."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return _SIGNALS.get(sig, f"killed by signal {signal.Signals(sig).name}")
    if os.WIFEXITED(status):
        return f"the program ended its process (exit status {os.WEXITSTATUS(status)})"
    return f"the program's process ended (wait status {status})"


class _Stream:
    """One output file (memfd) of a child; the judge reads it with ``pread`` and cuts it per reply."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pos = 0  # bytes already attributed to earlier tests

    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return self.pos

    def cut(self, upto: int | None, cap: int) -> tuple[bytes, int]:
        """Bytes from the last cut to ``upto`` (the end if ``None``): the first ``cap``, and how many more."""
        if upto == self.pos:  # the reply says nothing was printed since: no system call
            return b"", 0
        size = self.size()
        end = size if upto is None or not self.pos <= upto <= size else upto
        n = end - self.pos
        data = os.pread(self.fd, min(n, cap), self.pos) if n > 0 else b""
        self.pos = end
        return data, n - len(data)


class Child:
    """The judge's end of one untrusted process: control socket, stdout/stderr files, stdin pipe.

    Requests may be sent ahead (``send``) and replies read in order
    (``receive``). Each reply carries the sizes of the output files when it
    was sent, which is where ``take_output`` cuts them (the program could lie
    about those sizes; they only decide which printed text goes with which test).
    """

    def __init__(self, pid: int, ctl: socket.socket, out: int, err: int, in_w: int, cfg: dict):
        self.pid, self.ctl, self.cfg = pid, ctl, cfg
        self.streams = [_Stream(out), _Stream(err)]
        self.in_w = in_w
        ctl.setblocking(False)
        os.set_blocking(in_w, False)
        self.reader = wire.FrameReader(cfg["max_result_bytes"])
        self.outgoing = bytearray()
        self.stdin = b""
        self.marks: list[int] | None = None  # output sizes reported with the last reply
        self.closed = False

    # -- output ------------------------------------------------------------------------------------
    def take_output(self, marked: bool = True) -> tuple[str, str]:
        """Stdout and stderr printed up to the last reply (everything when not ``marked``), truncated."""
        marks = (
            self.marks if marked and isinstance(self.marks, list) and len(self.marks) == 2 else [None, None]
        )
        cap = self.cfg["max_output_bytes"]
        texts = []
        for st, mark in zip(self.streams, marks):
            data, rest = st.cut(mark if type(mark) is int else None, cap)
            text = data.decode("utf-8", errors="replace")
            texts.append(text + (f"\n...[{rest} more bytes]" if rest else ""))
        return texts[0], texts[1]

    # -- requests ------------------------------------------------------------------------------------
    def close_stdin(self) -> None:
        if self.in_w >= 0:
            os.close(self.in_w)
            self.in_w = -1

    def _write_stdin(self) -> None:
        try:
            n = os.write(self.in_w, self.stdin[:65536])
            self.stdin = self.stdin[n:]
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.stdin = b""
        if not self.stdin:
            self.close_stdin()

    def _send_some(self) -> None:
        try:
            n = self.ctl.send(self.outgoing)
            del self.outgoing[:n]
        except BlockingIOError:
            pass
        except OSError:  # the child is gone: drop the requests; receive() reports the end of the channel
            self.outgoing.clear()

    def send(self, msg: dict | bytes) -> None:
        """Queue one request, a message or a packed frame (sent as far as the socket takes it now, the
        rest while receiving)."""
        self.outgoing += msg if type(msg) is bytes else wire.pack_request(msg)
        self._send_some()

    def receive(self, deadline: float) -> dict:
        """The next reply, feeding stdin meanwhile; ``_Fatal`` on timeout or death."""
        while True:
            try:
                frame = self.reader.pop()
            except wire.WireError as e:
                raise _Fatal("crash", f"the program broke the result channel ({e})") from None
            if frame is not None:
                if type(frame) is not dict or type(frame.get("op")) is not str:
                    raise _Fatal("crash", "the program broke the result channel (reply is not a message)")
                self.marks = frame.get("o")
                return frame
            now = time.monotonic()
            if now >= deadline:
                raise _Fatal("timeout", "time limit exceeded")
            wlist = ([self.ctl] if self.outgoing else []) + (
                [self.in_w] if self.stdin and self.in_w >= 0 else []
            )
            readable, writable, _ = select.select([self.ctl], wlist, [], deadline - now)
            if self.outgoing and self.ctl in writable:
                self._send_some()
            if self.in_w >= 0 and self.in_w in writable:
                self._write_stdin()
            if self.ctl in readable:
                try:
                    chunk = self.ctl.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    raise _Fatal("crash", "")
                self.reader.feed(chunk)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctl.close()
        for fd in [st.fd for st in self.streams] + [self.in_w]:
            if fd >= 0:
                os.close(fd)
        self.in_w = -1


class Zygote:
    """Starts and talks to the zygote process (``zygote.py``) of one worker slot.

    The zygote pushes a ready child ("standby") at start and after each reap,
    so taking a child for the next program needs no round trip.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot = f"import sys; sys.path.insert(0, {_HERE!r}); import zygote; zygote.main({theirs.fileno()})"
        self.proc = subprocess.Popen(
            # -S: no site module. Importing it would import threading, whose after-fork hook runs
            # Python code in every child (about 0.4 ms of page faults per program); the
            # site-packages directories come in the settings instead (``site_paths``)
            [sys.executable, "-S", "-s", "-B", "-c", boot],
            env=dict(PROGRAM_ENV, LD_BIND_NOW="1"),
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        self.standby: list[tuple[int, list[int]]] = []
        self.reaped: dict[int, tuple[int, float]] = {}  # pid -> (wait status, cpu seconds)
        self.dying: dict[int, Child] = {}  # reap requested, not yet confirmed
        self.cpu_s = 0.0  # CPU time of every reaped child
        self.sock.send(wire.dumps(cfg))
        reply = self._next(timeout=60.0)
        if reply.get("op") != "ready":
            self.close()
            raise RuntimeError(f"sandbox zygote failed to start: {reply.get('error', reply)}")
        self.preloaded = reply.get("preloaded", [])

    def _next(self, timeout: float = 30.0) -> dict:
        """Read one message from the zygote, filing standby children and reap statuses."""
        self.sock.settimeout(timeout)
        try:
            msg, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 8)
        except (TimeoutError, OSError) as e:
            raise RuntimeError(f"sandbox zygote did not answer: {e}") from None
        if not msg:
            raise RuntimeError(f"sandbox zygote exited (status {self.proc.poll()})")
        kind = msg[:1]
        if kind == b"S" and len(msg) == wire.STANDBY.size and len(fds) == 4:
            pid = wire.STANDBY.unpack(msg)[1]
            self.standby.append((pid, fds))
            return {"op": "standby", "pid": pid}
        for fd in fds:
            os.close(fd)
        if kind == b"D" and len(msg) == wire.REAPED.size:
            _, pid, status, cpu = wire.REAPED.unpack(msg)
            self.reaped[pid] = (status, cpu)
            self.cpu_s += cpu
            dead = self.dying.pop(pid, None)
            if dead is not None:
                dead.close()
            if len(self.reaped) > 1024:  # statuses nobody waited for
                self.reaped.clear()
            return {"op": "reaped", "pid": pid}
        reply = wire.loads(msg)
        if reply.get("op") == "error":
            raise RuntimeError(f"sandbox zygote: {reply.get('error')}")
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self) -> Child:
        """The ready child for the next program."""
        while not self.standby:
            self._next()
        pid, (ctl, out_r, err_r, in_w) = self.standby.pop(0)
        return Child(pid, socket.socket(fileno=ctl), out_r, err_r, in_w, self.cfg)

    def reap(self, child: Child, wait: bool) -> int | None:
        """Kill the child's whole process tree; with ``wait`` return its wait status.

        Our ends of its channels stay open until the zygote confirms: closing them
        first would wake the child just to let it exit on its own.
        """
        self.sock.send(wire.REAP.pack(b"R", child.pid))
        self.dying[child.pid] = child
        if not wait:
            return None
        while child.pid not in self.reaped:
            self._next()
        return self.reaped.pop(child.pid)[0]

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            for _, fds in self.standby:
                for fd in fds:
                    os.close(fd)
            self.standby = []
            for child in self.dying.values():
                child.close()
            self.dying = {}
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()


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


def _call_key(args: Any, kwargs: Any) -> str:
    """The call as wire text (which also checks that its arguments are plain data)."""
    return "[" + wire.dump_value(list(args)) + "," + wire.dump_value(dict(kwargs)) + "]"


def _call_frame(args: Any, kwargs: Any) -> bytes:
    """The packed request that makes the program call its function with ``args`` and ``kwargs``, which
    are plain data (``_call_key`` checked). Values of exact built-in types go as they are; others (int
    subclasses, numpy scalars, ...) as their plain equivalents."""
    try:
        return wire.pack_request({"op": "call", "args": list(args), "kwargs": dict(kwargs)})
    except ValueError:
        plain = [wire.decode_value(wire.encode_value(v)) for v in (list(args), dict(kwargs))]
        return wire.pack_request({"op": "call", "args": plain[0], "kwargs": plain[1]})


class _Pipeline:
    """Calls sent ahead of the tests that will make them, so the program computes without waiting."""

    MAX_AHEAD = 256

    def __init__(self, child: Child):
        self.child = child
        self.ahead: deque[str] = deque()

    def prefetch(self, calls: list[tuple[list, dict]]) -> None:
        for args, kwargs in calls[: self.MAX_AHEAD]:
            try:
                key = _call_key(args, kwargs)
            except wire.Unserializable:
                return
            self.child.send(_call_frame(args, kwargs))
            self.ahead.append(key)

    def call(self, key: str, args: tuple, kwargs: dict, deadline: float) -> dict:
        if self.ahead and self.ahead[0] == key:
            self.ahead.popleft()
            return self.child.receive(deadline)
        while self.ahead:  # the test did not make the calls we guessed: drop their replies
            self.ahead.popleft()
            self.child.receive(deadline)
        self.child.send(_call_frame(args, kwargs))
        return self.child.receive(deadline)


class _Candidate:
    """What test code sees as ``candidate``: a proxy to the program's function in the child."""

    def __init__(self, pipeline: _Pipeline, deadline: float):
        self.pipeline, self.deadline = pipeline, deadline
        self.raised: list[BaseException] = []  # exceptions that stand for the program's
        self.fatal: _Fatal | None = None
        self._last: tuple[tuple, dict, str, Any] | None = None  # args, kwargs, outcome, value
        self.n_calls = 0

    def call_text(self, name: str = "candidate") -> str:
        """The last call, as ``name(args)``, formatted only when a message needs it."""
        if self._last is None:
            return ""
        args, kwargs, _, _ = self._last
        return (
            f"{name}("
            + ", ".join([_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()])
            + ")"
        )

    @property
    def last_call(self) -> str:
        """The last call and what came of it, for messages."""
        if self._last is None:
            return ""
        _, _, outcome, value = self._last
        tail = {"ret": f" returned {_short(value)}", "exc": f" raised {value}"}.get(outcome, "")
        return self.call_text() + tail

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fatal is not None:
            raise self.fatal
        try:
            key = _call_key(args, kwargs)
        except wire.Unserializable as e:
            raise TypeError(f"the test passes an argument that is not plain data: {e}") from None
        self.n_calls += 1
        self._last = (args, kwargs, "", None)
        try:
            reply = self.pipeline.call(key, args, kwargs, self.deadline)
        except _Fatal as e:
            self.fatal = e
            raise
        op = reply["op"]
        if op == "ret":
            try:
                value = wire.decode_value(reply.get("value"))
            except wire.WireError as e:
                self.fatal = _Fatal("crash", f"the program broke the result channel ({e})")
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
        self.fatal = _Fatal("crash", f"the program broke the result channel (unexpected reply {op[:40]!r})")
        raise self.fatal


def _on_alarm(signum: int, frame: Any) -> None:
    raise _TrustedTimeout()


def _test_line(e: BaseException, filename: str, code: str) -> str:
    """The line of trusted test code where ``e`` surfaced."""
    lines = code.splitlines()
    for fr in reversed(traceback.extract_tb(e.__traceback__)):
        if fr.filename == filename and fr.lineno and 0 < fr.lineno <= len(lines):
            return lines[fr.lineno - 1].strip()
    return ""


class _Live:
    """The child currently serving a job's call/assert tests, with its pipeline."""

    def __init__(self, child: Child):
        self.child = child
        self.pipeline = _Pipeline(child)


class Judge:
    """Runs jobs (one program + its tests) against fresh untrusted children from one zygote."""

    CACHE_SIZE = 8192  # compiled test code and call plans kept across jobs (tasks repeat in a search)

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.zygote = Zygote(cfg)
        self._compiled: dict[tuple[str, str], tuple[Any, list | None]] = {}
        signal.signal(signal.SIGALRM, _on_alarm)

    def _compile(self, code: str, filename: str, entry: str) -> tuple[Any, list | None]:
        """Compiled trusted code and its known calls (``static_calls``), cached."""
        key = (code, filename + "\0" + entry)
        hit = self._compiled.get(key)
        if hit is None:
            if len(self._compiled) >= self.CACHE_SIZE:
                self._compiled.clear()
            try:
                compiled = compile(code, filename, "exec")
            except (SyntaxError, ValueError) as e:
                compiled = e  # a task bug, reported by the test that has it
            hit = (compiled, static_calls(code, ("candidate", entry)) if entry else None)
            self._compiled[key] = hit
        return hit

    def close(self) -> None:
        self.zygote.close()

    # -- one job -----------------------------------------------------------------------------------
    def run_job(self, job: dict) -> dict:
        """Run every test of ``job``; one result per test, in order."""
        if not self.zygote.alive():
            self.zygote.close()
            self.zygote = Zygote(self.cfg)
        cfg = self.cfg
        t0 = time.monotonic()
        deadline = t0 + cfg["timeout_s"]
        tests = job["tests"]
        names = ("candidate", job["entry_point"])
        plans = [
            [(wire.decode_value(t["args"]), {})] if t["kind"] == "call"
            else self._compile(t["code"], f"<test {t['name']}>", names[1])[1] if t["kind"] == "assert"
            else None
            for t in tests
        ]  # fmt: skip
        results: list[dict] = []
        live: _Live | None = None
        stop: tuple[str, str] | None = None  # status and message for every remaining test
        base_ns: dict | None = None
        for k, test in enumerate(tests):
            now = time.monotonic()
            name = test["name"]
            if stop is not None:
                results.append(_result(name, *stop))
                continue
            if now >= deadline:
                results.append(
                    _result(name, "timeout", f"the program's time budget ({cfg['timeout_s']} s) ran out")
                )
                continue
            tdl = min(now + cfg["test_timeout_s"], deadline)
            if test["kind"] == "stdio":
                results.append(self._stdio_test(job, test, tdl))
                continue
            if test["kind"] == "assert" and base_ns is None:
                base_ns, err = self._setup_namespace(job.get("setup", ""))
                if err:
                    stop = ("error", f"the task's test setup failed (a task bug, not the program's): {err}")
                    results.append(_result(name, *stop))
                    continue
            run: list[tuple[list, dict]] = []  # the known calls of this test and the next known ones
            if live is None or not live.pipeline.ahead:
                for plan, t in zip(plans[k:], tests[k:]):
                    if plan is None or t["kind"] == "stdio":
                        break
                    run += plan
            if live is None:
                live, res = self._load(job, tdl, run)
                if res is not None:
                    stop = (res["status"], res["message"])
                    results.append(_result(name, res["status"], res["message"], res["output"]))
                    continue
            elif not live.pipeline.ahead:
                live.pipeline.prefetch(run)
            assert live is not None
            res, dead = self._call_test(job, test, live, tdl, base_ns)
            results.append(res)
            if dead:
                live = None
        if live is not None:
            self.zygote.reap(live.child, wait=False)
        return {"tests": results, "wall_s": time.monotonic() - t0}

    def _setup_namespace(self, setup: str) -> tuple[dict, str]:
        """A fresh namespace holding the task's trusted setup (compiled once per task)."""
        ns: dict = {"__name__": "__judge__", "__builtins__": builtins}
        if not setup:
            return ns, ""
        try:
            code = self._compile(setup, "<task setup>", "")[0]
            if isinstance(code, Exception):
                raise code
            exec(code, ns)
        except Exception as e:
            return ns, f"{type(e).__name__}: {e}"
        return ns, ""

    def _fail_child(self, child: Child, e: _Fatal) -> tuple[str, str, str]:
        """Reap a child that timed out or died; status, message and its last output."""
        try:
            out, err = child.take_output()
        except _Fatal:
            out, err = "", ""
        status = self.zygote.reap(child, wait=True)
        message = e.message
        if e.status == "crash" and not message:
            killed_by_us = (
                status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            )
            message = (
                "the program closed its result channel or its process was killed"
                if killed_by_us
                else describe_status(status or 0)
            )
        if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            return "timeout", _SIGNALS[signal.SIGXCPU], _join(out, err)
        return e.status, message, _join(out, err)

    def _load(
        self, job: dict, deadline: float, calls: list[tuple[list, dict]]
    ) -> tuple[_Live | None, dict | None]:
        """A fresh child with the program loaded; ``calls`` (known ahead) go out right behind the program,
        so the child runs them as soon as it has loaded, without a round trip."""
        child = self.zygote.spawn()
        child.close_stdin()
        child.send({"op": "load", "program": job["program"], "entry": job["entry_point"]})
        live = _Live(child)
        live.pipeline.prefetch(calls)
        try:
            reply = child.receive(deadline)
        except _Fatal as e:
            status, message, output = self._fail_child(child, e)
            if status == "timeout":
                message = f"the program did not finish loading: {message}"
            return None, {"status": status, "message": message, "output": output}
        out, err = child.take_output()
        if reply["op"] == "loaded":
            return live, None
        self.zygote.reap(child, wait=False)
        if reply["op"] == "exc":
            status, message = "error", "the program failed to load:\n" + str(reply.get("tb", ""))[-4000:]
        else:
            status, message = (
                "crash",
                f"the program broke the result channel while loading ({str(reply['op'])[:40]!r})",
            )
        return None, {"status": status, "message": message, "output": _join(out, err)}

    def _call_test(
        self, job: dict, test: dict, live: _Live, deadline: float, base_ns: dict | None
    ) -> tuple[dict, bool]:
        """One call-based or assert-based test; returns the result and whether the child is gone."""
        name, child = test["name"], live.child
        proxy = _Candidate(live.pipeline, deadline)
        filename = f"<test {name}>"
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.05, deadline - time.monotonic() + 0.5))
            try:
                if test["kind"] == "call":
                    args, expected = wire.decode_value(test["args"]), wire.decode_value(test["expected"])
                    got = proxy(*args)
                else:
                    code = self._compile(test["code"], filename, job["entry_point"])[0]
                    if isinstance(code, Exception):
                        return _result(
                            name, "error", f"the test does not compile (a task bug): {code}"
                        ), False
                    # the entry point's own name stands for the program too (HumanEval/33 calls sort_third)
                    assert base_ns is not None
                    base_ns[job["entry_point"]] = proxy
                    ns = dict(base_ns)
                    ns["candidate"] = proxy
                    if "random" in test["code"] or "random" in job.get("setup", ""):  # seeding costs
                        random.seed(f"{job.get('task_id', '')}/{name}")
                    exec(code, ns)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Fatal:
            pass  # recorded in proxy.fatal
        except _TrustedTimeout:
            proxy.fatal = _Fatal("timeout", "time limit exceeded")
        except BaseException as e:  # noqa: B036 - the test's own exceptions are verdicts
            if proxy.fatal is None:
                out, err = child.take_output()
                line = _test_line(e, filename, test.get("code", ""))
                where = f"{line}\n" if line else ""
                if any(e is r for r in proxy.raised):
                    tb = getattr(e, "program_traceback", "") or f"{type(e).__name__}: {e}"
                    return _result(name, "error", f"{where}{proxy.last_call}\n{tb}", _join(out, err)), False
                detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                msg = f"{where}{detail}" + (f"\n{proxy.last_call}" if proxy.last_call else "")
                return _result(name, "failed", msg, _join(out, err)), False
        if proxy.fatal is not None:
            status, message, output = self._fail_child(child, proxy.fatal)
            if proxy.last_call:
                message = f"{message}\nduring {proxy.last_call}"
            return _result(name, status, message, output), True
        out, err = child.take_output()
        if test["kind"] == "call":
            if judge.outputs_match(got, expected, self.cfg["float_rel_tol"], self.cfg["float_abs_tol"]):
                return _result(name, "passed", "", _join(out, err)), False
            msg = f"{proxy.call_text(job['entry_point'])} returned {_short(got)}, expected {_short(expected)}"
            return _result(name, "failed", msg, _join(out, err)), False
        if proxy.n_calls == 0:
            return _result(
                name, "error", "the test never called the program (a task bug)", _join(out, err)
            ), False
        return _result(name, "passed", "", _join(out, err)), False

    def _stdio_test(self, job: dict, test: dict, deadline: float) -> dict:
        """Run the program once as a script on the test's stdin; compare its stdout."""
        name = test["name"]
        expected = str(test["expected"])
        child = self.zygote.spawn()
        keep = len(expected.encode("utf-8")) * 2 + self.cfg["max_output_bytes"]
        child.stdin = str(test.get("stdin", "")).encode("utf-8")
        if not child.stdin:
            child.close_stdin()
        child.send({"op": "stdio", "program": job["program"]})
        try:
            reply = child.receive(deadline)
        except _Fatal as e:
            status, message, output = self._fail_child(child, e)
            return _result(name, status, message, output)
        raw, rest = child.streams[0].cut(None, keep)
        stdout = raw.decode("utf-8", errors="replace")
        _, err = child.take_output(marked=False)
        self.zygote.reap(child, wait=False)
        shown = _join(_truncate(stdout, self.cfg["max_output_bytes"]), err)
        if reply.get("op") != "done":
            return _result(name, "crash", "the program broke the result channel", shown)
        if reply.get("exc"):
            exc = reply["exc"] if isinstance(reply["exc"], dict) else {}
            return _result(name, "error", str(exc.get("tb", ""))[-4000:], shown)
        if reply.get("code") != 0:
            return _result(name, "error", f"exit status {_short(reply.get('code'))}", shown)
        if rest:
            return _result(name, "failed", f"output limit exceeded (more than {keep} bytes)", shown)
        if judge.stdout_matches(stdout, expected, self.cfg["float_rel_tol"], self.cfg["float_abs_tol"]):
            return _result(name, "passed", "", shown)
        return _result(name, "failed", _first_difference(stdout, expected), shown)


def _result(name: str, status: str, message: str = "", output: str = "") -> dict:
    return {"name": name, "status": status, "message": message, "output": output}


def _truncate(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f"\n...[{len(text) - n} more characters]"


def _join(out: str, err: str) -> str:
    if out and err:
        return f"{out}\n[stderr]\n{err}"
    return out or (f"[stderr]\n{err}" if err else "")


def _first_difference(got: str, expected: str) -> str:
    g, e = got.rstrip().split("\n"), expected.rstrip().split("\n")
    for i, (a, b) in enumerate(zip(g, e)):
        if a.rstrip() != b.rstrip():
            return f"wrong output at line {i + 1}: got {_short(a)}, expected {_short(b)}"
    return f"wrong output: got {len(g)} lines, expected {len(e)}"


def main(fd: int) -> None:
    """Judge process entry point: settings frame, then one result frame per job frame."""
    sock = socket.socket(fileno=fd)
    sys.stdout = open(os.devnull, "w")  # trusted test code may print; our channel is the socket
    cfg = wire.recv_frame(sock)
    if cfg.get("cpus"):  # the zygote and every program inherit them
        try:
            os.sched_setaffinity(0, cfg["cpus"])
        except OSError:
            pass
    try:
        j = Judge(cfg)
    except Exception as e:
        wire.send_frame(sock, {"op": "fatal", "error": f"{type(e).__name__}: {e}"})
        return
    wire.send_frame(sock, {"op": "ready", "preloaded": j.zygote.preloaded})
    try:
        while True:
            job = wire.recv_frame(sock)
            if job is None:
                break
            try:
                res = j.run_job(job)
            except Exception:
                res = {"tests": [], "wall_s": 0.0, "judge_error": traceback.format_exc()[-4000:]}
                try:
                    j.close()
                finally:
                    j = Judge(cfg)
            res["job_id"] = job.get("job_id")
            wire.send_frame(sock, res)
    finally:
        j.close()
