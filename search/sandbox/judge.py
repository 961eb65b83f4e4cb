"""The judge: a trusted process that runs one program's tests at a time, and its entry point.

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
* A returned value passes a call test only by the exact rules of
  ``compare.py`` (a set is not a list, a float near an int is not that int,
  ``True`` is not ``1``): a lenient rule would be a reward hack.
* A reply cannot hold or break this process: it is at most
  ``max_result_bytes``, decoding it is linear work (``wire.py``: no hash
  flooding, no integer too long to convert), and this process's address space
  is capped (``judge_memory_mb``): a reply that does not fit is the program's
  ``crash``. Should the judge fail anyway, it is rebuilt (with a fresh zygote)
  and the job run once more, so a job never pays for what an earlier one broke.

Limits: a program can read the inputs it is given and can hard-code answers
for the public tests it was shown (that is what private tests are for);
stateful programs see calls sent ahead a little earlier than a sequential
harness would make them (same order); trusted test code that hashes values it
derives from a reply in other ways than the decoder foresees (lists of lists
made into tuples, say) could still meet hash collisions; then the pool's
watchdog replaces this judge and runs the jobs queued behind it again. In
``rlimit`` isolation a program runs under the caller's uid, sees its files, and
could signal or ptrace this process: a killed judge is replaced (the job is
retried once, then reported as ``crash``), but a ptraced one could be made to
lie, so use ``full`` isolation for untrusted code.

Standard library only; started by ``search.sandbox.pool`` as a fresh
interpreter that imports this file as the top-level module ``judge`` (``main``).
The pieces it is built from: ``child`` (one untrusted process's channels),
``zygote_client`` (where children come from), ``calls`` (known calls sent ahead,
the ``candidate`` proxy) and ``compare`` (output comparison).
"""

from __future__ import annotations

import builtins
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from typing import Any

try:  # imported as search.sandbox.judge (tests) or as top-level judge (judge process)
    from . import cgroup, compare, wire
    from .calls import Candidate, Pipeline, short_repr, static_calls
    from .child import SIGNALS, Child, Fatal, describe_status
    from .zygote_client import ZygoteClient
except ImportError:  # pragma: no cover - exercised in the judge process
    import cgroup
    import compare
    import wire
    from calls import Candidate, Pipeline, short_repr, static_calls
    from child import SIGNALS, Child, Fatal, describe_status
    from zygote_client import ZygoteClient


class _TrustedTimeout(Exception):
    pass


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
        self.pipeline = Pipeline(child)


class Judge:
    """Runs jobs (one program + its tests) against fresh untrusted children from one zygote."""

    CACHE_SIZE = 8192  # compiled test code and call plans kept across jobs (tasks repeat in a search)

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.zygote = ZygoteClient(cfg)
        self._compiled: dict[tuple[str, str], tuple[Any, list | None]] = {}
        self._cgroup_of = dict(zip(cfg.get("uids", []), cfg.get("cgroups", [])))
        self._ooms = self._oom_kills()
        signal.signal(signal.SIGALRM, _on_alarm)

    def _oom_kills(self) -> dict[int, int]:
        """Processes the kernel has killed so far in the memory cgroup of each of this worker's uids."""
        version = self.cfg.get("cgroup_version", "")
        return {
            uid: cgroup.oom_kills(version, path)
            for uid, path in zip(self.cfg.get("uids", []), self.cfg.get("cgroups", []))
        }

    def _memory_killed(self, child: Child) -> bool:
        """Whether the kernel killed a process of ``child``'s program for memory since the last look.

        Only the cgroup of the child's own uid counts: the program before it (the worker's other
        uid) may still be dying, and its kills are not this program's. cgroup v2 kills the whole
        program (``memory.oom.group``); cgroup v1 kills one process only, so a program whose helper
        processes are killed one by one could go on and answer. One memory bound per program means
        the same verdict on both: such a program is stopped, ``crash``."""
        if child.uid not in self._ooms:
            return False
        now = cgroup.oom_kills(self.cfg.get("cgroup_version", ""), self._cgroup_of[child.uid])
        killed = now > self._ooms[child.uid]
        self._ooms[child.uid] = now
        return killed

    def _memory_verdict(self, name: str, child: Child, output: str) -> dict:
        """Stop a program the kernel cut for memory (``_memory_killed``); its ``crash`` result."""
        self.zygote.reap(child, wait=True)
        return _result(name, "crash", self._memory_message(), output)

    def _memory_message(self) -> str:
        return (
            f"memory limit exceeded: the program's processes together held more than "
            f"{self.cfg['memory_mb']} MB and the kernel killed one"
        )

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
            self.zygote = ZygoteClient(self.cfg)
        cfg = self.cfg
        if self._ooms:
            self._ooms = self._oom_kills()  # a job answers for its own processes only
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

    def _fail_child(self, child: Child, e: Fatal) -> tuple[str, str, str]:
        """Reap a child that timed out or died; status, message and its last output."""
        try:
            out, err = child.take_output()
        except Fatal:
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
            return "timeout", SIGNALS[signal.SIGXCPU], _join(out, err)
        if e.status == "crash" and self._memory_killed(child):
            message = self._memory_message()
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
        except Fatal as e:
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
        proxy = Candidate(live.pipeline, deadline)
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
        except Fatal:
            pass  # recorded in proxy.fatal
        except _TrustedTimeout:
            proxy.fatal = Fatal("timeout", "time limit exceeded")
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
        if self._memory_killed(child):
            return self._memory_verdict(name, child, _join(out, err)), True
        if test["kind"] == "call":
            if compare.outputs_match(got, expected, self.cfg["float_rel_tol"], self.cfg["float_abs_tol"]):
                return _result(name, "passed", "", _join(out, err)), False
            call = proxy.call_text(job["entry_point"])
            msg = f"{call} returned {short_repr(got)}, expected {short_repr(expected)}"
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
        except Fatal as e:
            status, message, output = self._fail_child(child, e)
            return _result(name, status, message, output)
        raw, rest = child.streams[0].cut(None, keep)
        stdout = raw.decode("utf-8", errors="replace")
        _, err = child.take_output(marked=False)
        shown = _join(_truncate(stdout, self.cfg["max_output_bytes"]), err)
        if self._memory_killed(child):
            return self._memory_verdict(name, child, shown)
        self.zygote.reap(child, wait=False)
        if reply.get("op") != "done":
            return _result(name, "crash", "the program broke the result channel", shown)
        if reply.get("exc"):
            exc = reply["exc"] if isinstance(reply["exc"], dict) else {}
            return _result(name, "error", str(exc.get("tb", ""))[-4000:], shown)
        if reply.get("code") != 0:
            return _result(name, "error", f"exit status {short_repr(reply.get('code'))}", shown)
        if rest:
            return _result(name, "failed", f"output limit exceeded (more than {keep} bytes)", shown)
        if compare.stdout_matches(stdout, expected, self.cfg["float_rel_tol"], self.cfg["float_abs_tol"]):
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
            return f"wrong output at line {i + 1}: got {short_repr(a)}, expected {short_repr(b)}"
    return f"wrong output: got {len(g)} lines, expected {len(e)}"


def main(fd: int) -> None:
    """Judge process entry point: settings frame, then one result frame per job frame."""
    sock = socket.socket(fileno=fd)
    sys.stdout = open(os.devnull, "w")  # trusted test code may print; our channel is the socket
    cfg = wire.recv_frame(sock)
    if cfg.get("judge_memory_mb"):  # a reply too large to decode here is a MemoryError, not the host's loss
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (int(cfg["judge_memory_mb"]) << 20, hard))
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
    wire.send_frame(sock, {"op": "ready", "preloaded": j.zygote.preloaded, "notes": j.zygote.notes})
    try:
        while True:
            job = wire.recv_frame(sock)
            if job is None:
                break
            try:
                res = j.run_job(job)
            except Exception:
                # a fresh judge and zygote, and the job once more: it may only have met what an earlier job
                # left broken (an innocent program's verdict must not depend on what ran before it)
                j = _restart(j, cfg)
                try:
                    res = j.run_job(job)
                except Exception:
                    res = {"tests": [], "wall_s": 0.0, "judge_error": traceback.format_exc()[-4000:]}
                    j = _restart(j, cfg)
            res["job_id"] = job.get("job_id")
            wire.send_frame(sock, res)
    finally:
        j.close()


def _restart(j: Judge, cfg: dict) -> Judge:
    try:
        j.close()
    except Exception:  # a judge that failed may fail to close: the worker goes on with a fresh one
        pass
    return Judge(cfg)
