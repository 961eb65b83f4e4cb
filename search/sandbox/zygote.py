"""The zygote and the untrusted side of the sandbox.

The zygote is a warm interpreter started with a scrubbed environment that has
never held a test, an expected output or the host's environment. It isolates
itself once, then keeps forked children ready ("standby") for the judge, one
per uid of its slot: while a program runs under one uid, the next program's
process waits under the other, and after each reap the freed uid gets a new
standby::

    judge (trusted) <--standby + fds-- zygote (root, own mount + network namespace)
                    --reap pid------->   |  fork, in a fresh PID namespace
                                         v
                                       child: setsid, rlimits, own tempdir, one of
                                       the slot's uids, no_new_privs -> runs the program

Full isolation (root on Linux): private mount namespace whose whole tree is
read-only, with the repository, the data files and ``hide_paths`` masked by
empty tmpfs mounts, ``/root`` (0700) replaced by an empty directory with only
the Python installation bound back, and a small private tmpfs on ``/tmp``; an
empty network namespace (loopback down: every connect fails); each program in
its own PID namespace, so killing its first process kills every descendant,
including ones that called ``setsid``, and it cannot even name processes
outside; unprivileged uids of the worker slot's own, so the program can neither signal
nor ptrace the judge, the zygote or the host's processes nor read their
``/proc/<pid>/environ``, and ``RLIMIT_NPROC`` caps its processes and threads;
``PR_SET_NO_NEW_PRIVS`` so set-uid binaries cannot give root back. Fallback
("rlimit" isolation, when not root): rlimits, ``setsid`` and a process-group
kill only.

The child speaks to the judge over one socket (fd 3); its stdout and stderr
(fds 1 and 2) are append-only memory files the judge reads with ``pread``, cut
per reply at the sizes each reply reports, and bounded by ``RLIMIT_FSIZE``. It
only ever receives inputs: the judge keeps expected outputs and assertion code
to itself, so nothing the program writes on the socket can claim a pass it did
not earn (see ``judge.py``). Requests come as ``marshal`` data of plain values
(``wire.pack_request``), replies go back as JSON (``wire.dump_value``), the
format the judge decodes safely.

Every object a child touches that it shares with the zygote costs a
copy-on-write page fault (a few microseconds each), and so does every one the
zygote touches after each fork while its children share it: both hot paths use
plain descriptors, fixed binary control records and as few objects as they can.
Standard library only.
"""

from __future__ import annotations

# the C modules behind socket and signal: their Python wrappers (enums, selectors, ...) would add half a
# megabyte to the zygote, whose page tables every fork copies and every exit tears down
import _signal as signal
import _socket as socket
import builtins
import ctypes
import fcntl
import gc
import importlib
import importlib.machinery
import linecache
import marshal
import os
import resource
import struct
import sys
import traceback

try:  # imported as search.sandbox.zygote (tests) or as top-level zygote (sandbox processes)
    from . import wire
except ImportError:  # pragma: no cover - exercised in the zygote process
    import wire

F_SETFL, O_APPEND = fcntl.F_SETFL, os.O_APPEND
_FDS = struct.Struct("4i")  # the descriptors a standby child's channels travel in (SCM_RIGHTS)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x1000, 0x2000, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_MOUNT_SETATTR = 442  # same number on every architecture (asm-generic table)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
PROGRAM_FILE = "<program>"  # filename of the program in tracebacks
MAX_TB_CHARS = 4000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {fstype or src} on {target}",
    )


def _setattr(path: str, flags: int, set_: int, clr: int) -> None:
    attr = _MountAttr(set_, clr, 0, 0)
    _check(
        _libc.syscall(
            SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)
        ),
        f"mount_setattr({path})",
    )


def _blocked_ancestor(path: str) -> str | None:
    """The first directory on the way to ``path`` that other users cannot traverse (no o+x), if any."""
    cur = "/"
    for part in [p for p in os.path.abspath(path).split("/") if p]:
        cur = os.path.join(cur, part)
        if os.path.isdir(cur) and not os.stat(cur).st_mode & 0o001:
            return cur
    return None


def isolate_filesystem_and_network(hide: list[str], expose: list[str], tmpfs_mb: int) -> str:
    """Enter a private mount + network namespace and rebuild the view of the filesystem.

    Mutates the calling process (must be root): fresh tmpfs on ``/tmp``; each
    directory of ``expose`` (the Python installation) that sits below a
    directory other users cannot traverse (``/root`` is 0700) is bind-mounted
    back onto an empty 0755 tmpfs that replaces that directory, which also hides
    the rest of it; each path of ``hide`` is covered by an empty read-only
    tmpfs; then every mount is made read-only except ``/tmp``. A directory of
    ``expose`` that ``/tmp`` or a ``hide`` path would cover (a virtual environment
    in ``/tmp`` or inside the repository) is bound back in place, read-only,
    from a descriptor opened before the covering mounts. The new network
    namespace holds only a loopback device that is down. Returns the directory
    for per-program run directories.
    """
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare(CLONE_NEWNS | CLONE_NEWNET)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)

    def _under(path: str, top: str) -> bool:
        path, top = os.path.abspath(path), os.path.abspath(top)
        return path == top or path.startswith(top.rstrip("/") + "/")

    covered = sorted(
        {
            os.path.abspath(p)
            for p in expose
            if os.path.isdir(p) and any(_under(p, c) for c in ["/tmp", *hide])
        }
    )
    covered = [p for p in covered if not any(q != p and _under(p, q) for q in covered)]
    keep_fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in covered}
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={tmpfs_mb}m,mode=0755")
    blocked: dict[str, list[str]] = {}
    for path in sorted(set(expose)):
        top = _blocked_ancestor(path)
        if top is not None and not any(path.startswith(p + "/") for p in blocked.get(top, [])):
            blocked.setdefault(top, []).append(path)
    for top, paths in blocked.items():
        stages = []
        for i, path in enumerate(paths):
            stage = f"/tmp/.stage{i}"
            os.mkdir(stage)
            _mount(path, stage, None, MS_BIND | MS_REC, None)
            stages.append(stage)
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        for stage, path in zip(stages, paths):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(stage, path, None, MS_MOVE, None)
            os.rmdir(stage)
    masked = MS_NOSUID | MS_NODEV | MS_NOEXEC  # read-only below, after the bind-backs
    for path in hide:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", masked, "size=64k,mode=0755")
    for path, fd in keep_fds.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        os.close(fd)
    _setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)
    _setattr("/tmp", 0, 0, MOUNT_ATTR_RDONLY)
    return "/tmp"


class _State:
    """What the zygote knows: its settings, never a test."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.full = cfg["isolation"] == "full"
        self.uids = [int(u) for u in cfg["uids"]]  # two per slot: one runs a program, one stands by
        self.run_root = ""
        self.pidns_fd = -1
        self.n_runs = 0
        self.runs: dict[int, tuple[str, int]] = {}  # pid -> (run dir, uid)
        self.sock: socket.socket | None = None  # control socket to the judge
        self.standby: tuple[int, list[int]] | None = None  # forked child waiting for a program
        self.std: list[int] = []  # the zygote's own 0, 1, 2 and a placeholder for 3, kept at 16 and up
        self.limits: list[tuple[int, tuple[int, int]]] = []  # every child's (full isolation: the same)
        self.fd_limit = 1024  # the zygote's RLIMIT_NOFILE: children close every descriptor from 4 below it


def _spawn(state: _State, uid: int) -> None:
    """Fork a standby child for a coming program under ``uid``, with fresh channels; keep the judge's ends.

    Called only when no other process of ``uid`` is alive: the program running
    meanwhile has the slot's other uid, so it can never reach this one's
    working directory (0700) or processes.
    """
    ctl_judge, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # stdout/stderr are append-only memory files: writing wakes nobody, the judge reads them with
    # pread, and RLIMIT_FSIZE bounds them (a flood ends in EFBIG)
    out, err = os.memfd_create("stdout", os.MFD_CLOEXEC), os.memfd_create("stderr", os.MFD_CLOEXEC)
    for fd in (out, err):
        _check(_libc.fcntl(fd, F_SETFL, O_APPEND), "fcntl(F_SETFL, O_APPEND)")
    in_r, in_w = os.pipe()
    theirs = [ctl_child.detach(), out, err, in_r]
    state.n_runs += 1
    run_dir = f"{state.run_root}/run{state.n_runs}"
    os.mkdir(run_dir, 0o700)
    if state.full:
        os.chown(run_dir, uid, uid)
        # a fresh PID namespace per program: its first process is the namespace's init,
        # and when init dies the kernel kills every other process in it.
        _check(_libc.setns(state.pidns_fd, CLONE_NEWPID), "setns(own pid namespace)")
        _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    # the child's channels go to 0-3 right before the fork and the zygote's own come back right after,
    # so the child only has to close the rest (each call it makes costs page faults)
    dup2 = os.dup2
    dup2(in_r, 0)
    dup2(out, 1)
    dup2(err, 2)
    dup2(theirs[0], 3, inheritable=False)
    try:
        pid = os.fork()
    except OSError:
        _restore_std(state)
        raise
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            _child_main(state, run_dir, uid)
        except BaseException:
            try:
                os.write(2, traceback.format_exc().encode()[-MAX_TB_CHARS:])
            finally:
                os._exit(70)
        os._exit(0)
    _restore_std(state)
    for fd in (theirs[0], in_r):
        os.close(fd)
    state.runs[pid] = (run_dir, uid)
    state.standby = (pid, [ctl_judge.detach(), out, err, in_w])


def _reap(state: _State, pid: int) -> tuple[int, float]:
    """Kill a child (and with it its PID namespace, or its process group); its wait status and CPU seconds."""
    try:
        if state.full:
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        _, status, usage = os.wait4(pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
    except ChildProcessError:
        status, cpu = 0, 0.0
    while True:  # orphans reparented to us (rlimit isolation), and anything else already dead
        try:
            other, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if other == 0:
            break
    run_dir, _ = state.runs.pop(pid, ("", 0))
    if run_dir:
        try:
            os.rmdir(run_dir)  # most programs leave it empty
        except OSError:
            _rmtree(run_dir)
    return status, cpu


def _rmtree(path: str) -> None:
    """Remove a run directory and whatever the program left in it, ignoring errors (what
    ``shutil.rmtree(path, ignore_errors=True)`` does, without importing shutil into the zygote)."""
    for top, dirs, files in os.walk(path, topdown=False):  # never descends into links
        for name, is_dir in [(n, False) for n in files] + [(n, True) for n in dirs]:
            p = f"{top}/{name}"
            try:
                if is_dir and not os.path.islink(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def _kill_all_of_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (our slot's uid, held under a lock): kill(-1) from that uid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)  # every process this uid may signal, except the caller
        except BaseException:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _count_user_tasks(uid: int) -> int:
    """Processes plus threads of ``uid`` (what RLIMIT_NPROC counts)."""
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return n


def _high_copy(fd: int) -> int:
    """A copy of ``fd`` at 16 or above (of /dev/null if ``fd`` is closed)."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16)
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            return fcntl.fcntl(null, fcntl.F_DUPFD_CLOEXEC, 16)
        finally:
            os.close(null)


def _restore_std(state: _State) -> None:
    """The zygote's own 0, 1, 2 and the placeholder on 3 back, after a fork."""
    for i, fd in enumerate(state.std):
        os.dup2(fd, i, inheritable=i < 3)


def _limits(cfg: dict, full: bool, uid: int) -> list[tuple[int, tuple[int, int]]]:
    """The resource limits of a program's process, as (resource, (soft, hard)) pairs."""
    mb = 1024 * 1024
    cpu = max(1, int(-(-float(cfg["cpu_s"]) // 1)))
    nproc = cfg["max_processes"]
    if not full:  # our own uid: its existing processes count too
        nproc += _count_user_tasks(uid)
    return [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (cfg["memory_mb"] * mb, cfg["memory_mb"] * mb)),
        (resource.RLIMIT_FSIZE, (cfg["fsize_mb"] * mb, cfg["fsize_mb"] * mb)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NOFILE, (cfg["max_open_files"], cfg["max_open_files"])),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
        (resource.RLIMIT_NPROC, (nproc, nproc)),
    ]


def _child_main(state: _State, run_dir: str, uid: int) -> None:  # pragma: no cover - child
    """Runs in a fresh child with its channels at 0-3 (ctl socket 3, stdout file 1, stderr file 2, stdin
    pipe 0), placed by the zygote right before the fork."""
    os.setsid()
    os.closerange(4, state.fd_limit)
    os.chdir(run_dir)
    # here, not by prlimit from the zygote: that needs CAP_SYS_RESOURCE once the child has another uid
    setrlimit = resource.setrlimit
    for res, lim in state.limits or _limits(state.cfg, state.full, uid):
        setrlimit(res, lim)
    if state.full:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            raise RuntimeError("failed to drop root")
    # after the uid change (which clears it): die with the zygote
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    # the environment is the zygote's, scrubbed (zygote_client.PROGRAM_ENV); HOME and TMPDIR are ".";
    # sys.stdin/stdout/stderr already wrap fds 0, 1 and 2, which now are the program's; sys.argv and
    # the hook that seeds ``random`` on import were set in the zygote
    if "random" in sys.modules:  # preloaded on request after all (its after-fork hook reseeded it)
        sys.modules["random"].seed(0)
    _serve(3)


class _SeedRandomOnImport:
    """Meta-path hook: when the program first imports ``random``, seed it with 0 right after.

    A program's randomness is then the same on every run (the platform's runs
    are reproducible), while the zygote itself never imports ``random``: its
    after-fork reseed hook would cost every child a few dozen page faults.
    """

    def find_spec(self, name: str, path=None, target=None):
        if name != "random":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader

        class _Loader:
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                real.exec_module(module)
                module.seed(0)

        spec.loader = _Loader()
        return spec


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass


def _describe(e: BaseException) -> dict:
    """Exception type, message and the traceback frames that belong to the program."""
    try:
        msg = str(e)[:MAX_TB_CHARS]
    except BaseException:
        msg = "<unprintable exception>"
    try:
        tb = traceback.extract_tb(e.__traceback__)
        frames = traceback.StackSummary.from_list([f for f in tb if f.filename == PROGRAM_FILE])
        text = "Traceback (most recent call last):\n" if frames else ""
        text += "".join(frames.format()) + f"{type(e).__name__}: {msg}"
    except BaseException:
        text = f"{type(e).__name__}: {msg}"
    return {"op": "exc", "type": type(e).__name__, "msg": msg, "tb": text[-MAX_TB_CHARS:]}


def _load(program: str, name: str) -> dict:
    linecache.cache[PROGRAM_FILE] = (len(program), None, program.splitlines(True), PROGRAM_FILE)
    ns: dict = {"__name__": name, "__builtins__": builtins}
    exec(compile(program, PROGRAM_FILE, "exec"), ns)
    return ns


def _resolve(ns: dict, entry: str):
    """The callable named ``entry``: a top-level function, or a method of ``Solution`` (LeetCode style)."""
    if entry in ns and callable(ns[entry]):
        return ns[entry]
    owner, _, method = entry.rpartition(".")
    cls = ns.get(owner or "Solution")
    if isinstance(cls, type) and hasattr(cls, method):
        return lambda *a, **k: getattr(cls(), method)(*a, **k)
    raise NameError(f"the program does not define {entry!r}")


def _output_sizes() -> list[int]:
    """Sizes of the output files (the end offset: ``lseek`` returns it without the stat object)."""
    sizes = []
    for fd in (1, 2):
        try:
            sizes.append(_lseek(fd, 0, 2))
        except OSError:
            sizes.append(-1)
    return sizes


# The child's side of its channel (descriptor 3) is made of module-level functions: they exist in the
# zygote already, so a child creates no function objects (each new object can cost a page fault).
_lseek, _read, _write, _unmarshal = os.lseek, os.read, os.write, marshal.loads
_LIMIT = 1 << 20  # max_result_bytes, set by the zygote from its settings


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd`` (None at end of file): plain reads of the descriptor, exact sizes, so no
    buffer to keep and no copies."""
    data = _read(fd, n)
    while len(data) < n:
        more = _read(fd, n - len(data))
        if not more:
            return None
        data += more
    return data


def _recv(fd: int) -> dict | None:
    """The judge's next request (``wire.pack_request``: a length header, then marshal data)."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, int.from_bytes(head, "big"))
    return None if body is None else _unmarshal(body)


def _sendall(fd: int, data: bytes) -> None:
    while data:
        data = data[_write(fd, data) :]


def _reply(fd: int, obj: dict | str | None) -> None:
    """Send a reply: a message, ``None`` for "loaded", or (a string) the JSON text of the value the
    function returned; each with the output sizes."""
    _flush()
    o = _output_sizes()  # lets the judge cut the output at the same point as the replies
    limit = _LIMIT
    try:
        if obj is None or type(obj) is str:  # the common replies, without the JSON encoder
            text = '{"op":"loaded"' if obj is None else '{"op":"ret","value":' + obj
            body = (text + f',"o":[{o[0]:d},{o[1]:d}]}}').encode()
            data = wire.HEADER.pack(len(body)) + body
        else:
            obj["o"] = o
            data = wire.pack_frame(obj)
    except MemoryError:
        data = b""
    if not data or len(data) - 4 > limit:
        size = f"{len(data) - 4} bytes" if data else "too large to encode"
        msg = f"the value is too large ({size}; limit {limit})"
        data = wire.pack_frame({"op": "unser", "msg": msg, "o": o})
    _sendall(fd, data)


def _call(fn, msg: dict) -> dict | str:
    """Call the program's function as the request says: the JSON text of its value, or a message."""
    try:
        value = fn(*msg["args"], **msg["kwargs"])
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: they are the program's
        return _describe(e)
    try:
        return wire.dump_value(value)
    except wire.Unserializable as e:
        return {"op": "unser", "msg": str(e)}
    except RecursionError:
        return {"op": "unser", "msg": "value nested too deeply (or cyclic)"}
    except MemoryError:
        return {"op": "unser", "msg": "value too large to encode"}


def _serve(fd: int) -> None:  # pragma: no cover - child
    """Answer the judge: load the program once, then one reply per call (or run it once on stdin)."""
    msg = _recv(fd)
    if msg is None:
        return
    if msg["op"] == "stdio":
        try:
            _load(msg["program"], "__main__")
            code, exc = 0, None
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            exc = None if isinstance(e.code, int) or e.code is None else _describe(e)
        except BaseException as e:
            code, exc = 1, _describe(e)
        _flush()
        _sendall(fd, wire.pack_frame({"op": "done", "code": code, "exc": exc, "o": _output_sizes()}))
        _recv(fd)  # wait to be killed
        return
    try:
        fn = _resolve(_load(msg["program"], "__solution__"), msg["entry"])
    except BaseException as e:
        _reply(fd, _describe(e))
        _recv(fd)
        return
    _reply(fd, None)
    while True:
        msg = _recv(fd)
        if msg is None or msg.get("op") != "call":
            return
        _reply(fd, _call(fn, msg))


def main(ctl_fd: int) -> None:
    """Zygote entry point: read settings, isolate, preload, then serve spawn/reap requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # die with the judge
    # the zygote's descriptors live at 16 and up: 0-3 are where each child's channels go (_spawn)
    high = fcntl.fcntl(ctl_fd, fcntl.F_DUPFD_CLOEXEC, 16)
    os.close(ctl_fd)
    std = [_high_copy(fd) for fd in (0, 1, 2)]
    os.dup2(std[0], 3, inheritable=False)  # a placeholder, so no new descriptor lands on 3
    sock = socket.socket(fileno=high)  # SOCK_SEQPACKET: one message per request, fds attached
    state = _State(wire.loads(sock.recv(1 << 20)))
    state.sock = sock
    state.std = [*std, std[0]]
    state.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cfg = state.cfg
    global _LIMIT
    _LIMIT = int(cfg["max_result_bytes"])
    try:
        if state.full:
            state.run_root = isolate_filesystem_and_network(
                list(cfg["hide"]),
                [sys.base_prefix, sys.prefix, sys.exec_prefix, *cfg.get("site_paths", [])],
                cfg["tmpfs_mb"],
            )
            state.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            for uid in state.uids:
                _kill_all_of_uid(uid)  # leftovers of a sandbox that died before cleaning up
        else:
            state.run_root = cfg["run_root"]
        os.chdir("/")
        # inherited by every child: execve can never grant privileges (set-uid binaries, file caps)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
        _add_site_paths(list(cfg.get("site_paths", [])))
        loaded = []
        for name in cfg["preload"]:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception:
                pass
    except Exception as e:
        sock.send(wire.dumps({"op": "fatal", "error": f"{type(e).__name__}: {e}"}))
        return
    if state.full:
        state.limits = _limits(cfg, True, state.uids[0])
    sys.argv = [PROGRAM_FILE]
    if "random" not in sys.modules:
        sys.meta_path.insert(0, _SeedRandomOnImport())  # takes effect in the children only
    gc.collect()
    gc.freeze()  # children never scan (and so never copy-on-write) the zygote's objects
    try:
        sock.send(wire.dumps({"op": "ready", "preloaded": loaded}))
        for uid in state.uids:
            _push_standby(state, uid)
        reap, reaped = wire.REAP, wire.REAPED
        while True:
            msg = sock.recv(1 << 16)
            if not msg:
                break
            if len(msg) == reap.size and msg[:1] == b"R":
                pid = reap.unpack(msg)[1]
                uid = state.runs.get(pid, ("", state.uids[0]))[1]
                status, cpu = _reap(state, pid)
                sock.send(reaped.pack(b"D", pid, status, cpu))
                _push_standby(state, uid)  # ready for the program after next, while the next one runs
            else:
                error = f"unknown request {msg[:40]!r}"
                sock.send(wire.dumps({"op": "error", "error": error}))
    except OSError:  # the judge went away
        pass
    for pid in list(state.runs):
        _reap(state, pid)


def _add_site_paths(dirs: list[str]) -> None:
    """What ``site.addsitedir`` does for the import path, minus running code: each directory, and the
    directories named by path lines of its ``.pth`` files (``import`` lines are skipped)."""
    for d in dirs:
        if not os.path.isdir(d) or d in sys.path:
            continue
        sys.path.append(d)
        for name in sorted(os.listdir(d)):
            if not name.endswith(".pth"):
                continue
            try:
                with open(os.path.join(d, name), encoding="utf-8") as fh:
                    lines = fh.read().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith(("#", "import ", "import\t")):
                    continue
                p = os.path.abspath(os.path.join(d, line))
                if os.path.isdir(p) and p not in sys.path:
                    sys.path.append(p)


def _push_standby(state: _State, uid: int) -> None:
    """Fork a child under ``uid`` and hand the judge its channels right away."""
    assert state.sock is not None
    try:
        _spawn(state, uid)
    except OSError as e:
        state.sock.send(wire.dumps({"op": "error", "error": f"could not start a process: {e}"}))
        return
    assert state.standby is not None
    pid, fds = state.standby
    state.standby = None
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FDS.pack(*fds))]
    state.sock.sendmsg([wire.STANDBY.pack(b"S", pid)], rights)
    for fd in fds:
        os.close(fd)
