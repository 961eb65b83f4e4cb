"""What a program keeps from the host and leaves on it (regression for the review's item 4).

The review: no IPC namespace (SysV shared memory and POSIX message queues outlived the program and the
sandbox, and a later sandbox read them back); memory bounded per process, not per program; the host's
/proc readable (every command line); user namespaces could be created inside (no seccomp filter); a
program could move itself onto every core. Each is tested here through the public API, and then the
class: every way to make a namespace, every IPC kind, and what remains on the host once the sandbox has
closed (processes, IPC objects, files in /tmp and /dev/shm, mounts, cgroups).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import tempfile
import textwrap

import pytest

from search.sandbox import Sandbox, SandboxConfig, full_isolation_available
from search.tasks import CodeTask, TestCase

pytestmark = pytest.mark.skipif(not full_isolation_available(), reason="needs full isolation (root)")
KEY = 0x5EC0000 + secrets.randbelow(0xFFFF)  # SysV IPC key of this run
MQ = f"/marl-test-{secrets.token_hex(6)}"  # POSIX message queue name of this run


def P(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def _task(expected, n: int = 1) -> CodeTask:
    return CodeTask(
        "t", "", "f", [TestCase(f"t{i}", "call", args=[i], expected=expected) for i in range(n)], []
    )


def _returned(r) -> str:
    """What the program returned, from the failure message of a test that expected something else."""
    assert r.tests[0].status == "failed", r.tests[0].message
    return r.tests[0].message.split(" returned ", 1)[1].rsplit(", expected ", 1)[0]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(
        SandboxConfig(workers=1, memory_mb=256, timeout_s=4.0, test_timeout_s=3.0, max_processes=16)
    ) as s:
        yield s


# -------------------------------------------------------------------------------------------------------
# IPC
# -------------------------------------------------------------------------------------------------------
MAKE_IPC = P(f"""
    import ctypes
    def f(i):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        shm = libc.shmget({KEY}, 1 << 20, 0o1666)
        ctypes.memmove(libc.shmat(shm, None, 0), b"the answer", 10)
        msg = libc.msgget({KEY}, 0o1666)
        sem = libc.semget({KEY}, 1, 0o1666)
        mq = libc.mq_open({MQ.encode()!r}, 0o100 | 0o2, 0o666, None)
        return [shm >= 0, msg >= 0, sem >= 0, mq >= 0]
""")
FIND_IPC = P(f"""
    import ctypes
    def f(i):
        libc = ctypes.CDLL(None, use_errno=True)
        found = [libc.shmget({KEY}, 0, 0), libc.msgget({KEY}, 0), libc.semget({KEY}, 0, 0),
                 libc.mq_open({MQ.encode()!r}, 0)]
        listed = sum(len(open(f"/proc/sysvipc/{{k}}").readlines()) - 1 for k in ("shm", "msg", "sem"))
        return [x >= 0 for x in found] + [listed]
""")  # fmt: skip


def test_ipc_objects_end_with_their_program(sb):
    made = sb.run(MAKE_IPC, _task([True] * 4))
    assert made.status == "passed", made.message  # every kind was made inside
    # later programs, under both of the worker's uids, find none of them
    for r in sb.run_many([(FIND_IPC, _task([False] * 4 + [0]))] * 4):
        assert r.status == "passed", r.message
    libc = ctypes.CDLL(None, use_errno=True)  # nor does the host
    assert libc.shmget(KEY, 0, 0) == -1 and libc.msgget(KEY, 0) == -1 and libc.mq_open(MQ.encode(), 0) == -1


# -------------------------------------------------------------------------------------------------------
# memory: one bound for all the processes of a program
# -------------------------------------------------------------------------------------------------------
HOLD = P("""
    import mmap, os, time
    def f(i):
        r, w = os.pipe()
        for _ in range(10):
            if os.fork() == 0:
                m = mmap.mmap(-1, 60 << 20)
                for off in range(0, 60 << 20, 4096):
                    m[off] = 1
                os.write(w, b"x")
                time.sleep(60)
                os._exit(0)
        os.close(w)
        os.set_blocking(r, False)
        held, deadline = 0, time.time() + 2.0
        while time.time() < deadline and held < 10:
            try:
                held += len(os.read(r, 16))
            except BlockingIOError:
                time.sleep(0.01)
        return held * 60
""")
SHM_GB = P("""
    import ctypes
    def f(i):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        held = 0
        for k in range(16):
            sid = libc.shmget(0x1000 + k, 64 << 20, 0o1600)
            addr = libc.shmat(sid, None, 0) if sid >= 0 else None
            if addr in (None, ctypes.c_void_p(-1).value):
                break
            ctypes.memset(addr, 1, 64 << 20)
            libc.shmdt(ctypes.c_void_p(addr))  # detached: in no process's address space, still held
            held += 64
        return held
""")


def test_memory_is_bounded_per_program_not_per_process(sb):
    if sb.memory_bound == "rlimit":
        pytest.skip("no memory cgroup here: each process is bounded, a program by max_processes x memory_mb")
    r = sb.run(HOLD, _task(-1))  # 10 processes of 60 MB each: 600 MB if the bound were per process
    # cgroup v1 kills one process at a time, cgroup v2 the whole program: both give the program the
    # same verdict (a process of it was killed for memory), never an answer
    assert r.tests[0].status == "crash" and "memory limit exceeded" in r.tests[0].message, r.tests[0].message
    # the same in stdio mode: the program is stopped although its main process was never killed
    stdio = CodeTask("t", "", "main", [TestCase("t0", "stdio", stdin="", expected="600\n")], [], kind="stdio")
    r = sb.run(HOLD + "print(f(0))\n", stdio)
    assert r.tests[0].status == "crash" and "memory limit exceeded" in r.tests[0].message, r.tests[0].message
    r = sb.run(SHM_GB, _task(-1))  # SysV shared memory counts too (the review: 1 GB, uncounted)
    assert r.status == "crash" and "memory limit exceeded" in r.message, r.message
    assert sb.run("def f(i):\n    return -1\n", _task(-1)).status == "passed"


def test_a_memory_kill_is_charged_to_the_program_of_its_own_uid_only(tmp_path):
    # a worker runs programs under two uids in turn: the one before may still be dying (and be cut
    # for memory) while the next runs; only kills in the running program's own cgroup are its own
    from types import SimpleNamespace

    from search.sandbox.judge import Judge

    paths = []
    for uid in (7001, 7002):
        (tmp_path / str(uid)).mkdir()
        (tmp_path / str(uid) / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 0\n")
        paths.append(str(tmp_path / str(uid)))
    judge = Judge.__new__(Judge)  # the attribution rule alone, without a zygote
    judge.cfg = {"uids": [7001, 7002], "cgroups": paths, "cgroup_version": "cgroup1", "memory_mb": 64}
    judge._cgroup_of = dict(zip(judge.cfg["uids"], paths))
    judge._ooms = judge._oom_kills()
    running = SimpleNamespace(uid=7002)
    (tmp_path / "7001" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 3\n")
    assert not judge._memory_killed(running)  # the neighbour's kills
    (tmp_path / "7002" / "memory.oom_control").write_text("oom_kill_disable 0\noom_kill 1\n")
    assert judge._memory_killed(running)  # its own
    assert not judge._memory_killed(running)  # counted once
    assert not judge._memory_killed(SimpleNamespace(uid=-1))  # no cgroup: never


def test_without_a_memory_cgroup_shared_memory_is_still_bounded_per_program():
    with Sandbox(SandboxConfig(workers=1, memory_mb=256, memory_cgroup=False)) as s:
        assert s.memory_bound == "rlimit"
        held = int(_returned(s.run(SHM_GB, _task(-1))))
        assert held <= s.cfg.memory_mb


# -------------------------------------------------------------------------------------------------------
# /proc, namespaces, cores, keyrings
# -------------------------------------------------------------------------------------------------------
def test_proc_shows_only_the_programs_own_processes(sb):
    prog = P("""
        import os, time
        def f(i):
            child = os.fork()
            if child == 0:
                time.sleep(30)
                os._exit(0)
            time.sleep(0.1)
            pids = sorted(n for n in os.listdir("/proc") if n.isdigit())
            lines = [open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode() for p in pids]
            try:
                open("/proc/1/cmdline").read()
                init = "readable"
            except OSError:
                init = "hidden"
            return [len(pids), sorted(set(lines)), init]
    """)
    got = _returned(sb.run(prog, _task(None)))
    assert got.startswith("[2, [") and got.endswith("], 'hidden']") and "pytest" not in got, got


NAMESPACES = P("""
    import ctypes, mmap, os, platform, subprocess, threading
    def f(i):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        x86 = platform.machine() == "x86_64"
        nr = {"clone": 56, "unshare": 272, "setns": 308, "clone3": 435} if x86 else {
              "clone": 220, "unshare": 97, "setns": 268, "clone3": 435}
        flags = {"user": 0x10000000, "mnt": 0x20000, "net": 0x40000000, "pid": 0x20000000, "uts": 0x4000000,
                 "ipc": 0x8000000, "cgroup": 0x2000000}
        flags["all"] = sum(flags.values())
        out = {}
        for name, flag in {**flags, "time": 0x80}.items():  # CLONE_NEWTIME: unshare only (clone: signal)
            out["unshare " + name] = libc.unshare(flag)
            if name != "time":
                out["clone " + name] = libc.syscall(nr["clone"], flag | 17, 0, 0, 0, 0)  # 17: SIGCHLD
                if out["clone " + name] == 0:
                    os._exit(0)
        out["clone3"] = libc.syscall(nr["clone3"], 0, 0)
        out["setns"] = libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0)
        if x86:
            out["x32 unshare"] = libc.syscall(0x40000000 | 272, flags["user"])
            # int 0x80: the 32-bit table, unshare is 310 there
            code = bytes([0x53, 0xB8, 0x36, 0x01, 0, 0, 0xBB, 0, 0, 0, 0x10, 0xCD, 0x80, 0x5B, 0xC3])
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(code)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
            out["int80 unshare"] = -1 if ctypes.CFUNCTYPE(ctypes.c_int)(addr)() != 0 else 0
        ok = [k for k, v in out.items() if v != -1]
        # and what programs do need still works: fork, threads, subprocess, unshare without namespaces
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        pid_ = os.fork()
        if pid_ == 0:
            os._exit(3)
        works = os.waitpid(pid_, 0)[1] >> 8 == 3 and libc.unshare(0x400) == 0
        works = works and subprocess.run(["true"]).returncode == 0
        return [ok, works]
""")


def test_no_namespace_can_be_made_by_any_system_call(sb):
    assert _returned(sb.run(NAMESPACES, _task(None))) == "[[], True]"


def test_no_socket_reaches_another_process(sb):
    # abstract UNIX sockets, netlink and vsock are bounded by no uid and no IPC namespace (vsock not even
    # by the network namespace): a leftover process of one program could serve the next; AF_INET reaches
    # nothing in the empty network namespace (test_hostile.py); a program still talks to itself
    prog = P("""
        import asyncio, socket
        def f(i):
            made = []
            for family, kind in ((socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM),
                                 (socket.AF_NETLINK, socket.SOCK_RAW), (40, socket.SOCK_STREAM),  # AF_VSOCK
                                 (socket.AF_PACKET, socket.SOCK_RAW), (38, socket.SOCK_SEQPACKET)):  # AF_ALG
                try:
                    socket.socket(family, kind).close()
                    made.append(family)
                except OSError:
                    pass
            a, b = socket.socketpair()
            a.sendall(b"self")
            asyncio.run(asyncio.sleep(0))  # its event loop wakes itself through a socketpair
            return [made, b.recv(4)]
    """)  # fmt: skip
    assert _returned(sb.run(prog, _task(None))) == "[[], b'self']"


def test_programs_stay_on_their_cores(tmp_path, monkeypatch):
    from search.sandbox import pool

    monkeypatch.setattr(pool, "_CPU_LOCK_DIR", str(tmp_path))  # cores no other sandbox here holds
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: nothing to move to")
    prog = P(f"""
        import os
        def f(i):
            try:
                os.sched_setaffinity(0, {cores!r})
                moved = "moved"
            except OSError as e:
                moved = e.strerror
            return [moved, sorted(os.sched_getaffinity(0))]
    """)
    with Sandbox(SandboxConfig(workers=len(cores))) as s:
        mine = s.worker_cpus
        results = s.run_many([(prog, _task(None))] * (2 * len(cores)))
    seen = {_returned(r) for r in results}
    assert seen <= {f"['Operation not permitted', {c!r}]" for c in mine if c} and seen, seen


def test_kernel_keyrings_are_out_of_reach(sb):
    prog = P("""
        import ctypes
        def f(i):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            key = libc.syscall(248, b"user", b"marl", b"secret", 6, -4)  # add_key to the user keyring
            return [key, ctypes.get_errno()]
    """)
    got = _returned(sb.run(prog, _task(None)))
    assert got == "[-1, 38]" or os.uname().machine != "x86_64", got  # ENOSYS


# -------------------------------------------------------------------------------------------------------
# what remains on the host once the sandbox has closed
# -------------------------------------------------------------------------------------------------------
def _host_state(uids: set[int], pids: set[int]) -> dict:
    """What a sandbox could leave: IPC objects and processes of its uids, the processes ``pids`` (its
    judges and zygotes), files of its uids or with its names in /tmp and /dev/shm, this namespace's
    mounts, its memory cgroups."""
    ipc = {}
    for kind, uid_col in (("shm", 7), ("msg", 7), ("sem", 4)):  # /proc/sysvipc: where the owner's uid is
        with open(f"/proc/sysvipc/{kind}") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
        ipc[kind] = sorted(r[1] for r in rows if int(r[uid_col]) in uids)
    procs = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = os.stat(f"/proc/{name}")
            except OSError:
                continue
            if st.st_uid in uids or int(name) in pids:
                procs.append(int(name))
    files = {}
    for d in (tempfile.gettempdir(), "/dev/shm"):
        entries = []
        for e in os.listdir(d):
            try:
                owner = os.lstat(os.path.join(d, e)).st_uid
            except OSError:
                continue
            if owner in uids or "marl" in e:
                entries.append(e)
        files[d] = sorted(entries)
    with open("/proc/self/mountinfo") as fh:
        mounts = sorted(line.split(" - ")[0].split(None, 4)[4] for line in fh)
    from search.sandbox import cgroup

    version, parent = cgroup.find_parent()
    cgroups = sorted(e for e in os.listdir(parent) if e.startswith(cgroup.PREFIX)) if version else []
    return {"ipc": ipc, "processes": sorted(procs), "files": files, "mounts": mounts, "cgroups": cgroups}


def test_nothing_remains_on_the_host_after_close():
    cfg = SandboxConfig(workers=2, timeout_s=2.0, test_timeout_s=1.5, max_processes=16)
    with Sandbox(cfg) as warm:  # the machine-wide lock files (uids, cores) exist from here on, by design
        uids = {u.key for u in warm._uids}
    mark = f"marl-residue-{secrets.token_hex(6)}"
    before = _host_state(uids, set())
    leave = P(f"""
        import ctypes, os, signal, time
        def f(i):
            libc = ctypes.CDLL(None, use_errno=True)
            for k in range(3):
                libc.shmget({KEY} + 100 + k, 4096, 0o1666)
                libc.msgget({KEY} + 100 + k, 0o1666)
                libc.semget({KEY} + 100 + k, 1, 0o1666)
            libc.mq_open(b"/{mark}", 0o100 | 0o2, 0o666, None)
            for d in ("/tmp", "/dev/shm", "/var/tmp", "."):
                try:
                    open(os.path.join(d, "{mark}"), "w").write("left")
                except OSError:
                    pass
            os.makedirs("a/" * 200, exist_ok=True)
            if os.fork() == 0:  # a daemon that ignores what it can
                os.setsid()
                for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                    signal.signal(s, signal.SIG_IGN)
                while True:
                    time.sleep(0.05)
            return "left"
    """)
    with Sandbox(cfg) as s:
        assert {u.key for u in s._uids} == uids
        results = s.run_many([(leave, _task("left"))] * 4)
        assert all(r.status == "passed" for r in results), [r.message for r in results]
        pids = {w.proc.pid for w in s._workers}
        for judge in list(pids):  # and their zygotes
            with open(f"/proc/{judge}/task/{judge}/children") as fh:
                pids |= {int(p) for p in fh.read().split()}
        during = _host_state(uids, pids)
        assert during["processes"] and during["ipc"] == before["ipc"]  # the probe sees what runs
    after = _host_state(uids, pids)
    assert after == before
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mq_open(f"/{mark}".encode(), 0) == -1
