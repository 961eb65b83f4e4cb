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
                                       child: setsid, own IPC namespace, rlimits, its
                                       memory cgroup, own run directory, one of the
                                       slot's uids, seccomp filter -> runs the program

Threat model of full isolation (root on Linux); each threat has a hostile test
(``tests/search/test_hostile.py`` and ``test_sandbox_*.py``):

* **Reading answer keys or the host.** The zygote's root is a new one
  (``isolate_filesystem_and_network``): only the system directories (``/usr``,
  ``/etc``, ``/lib*``, ``/bin``, ``/sbin``) and the Python installation and its
  site-packages are there, read-only, and inside those, every path of
  ``hidden.default_hidden_paths`` is removed (overlay whiteouts); the zygote
  checks that none of them can be read before it serves a program, and
  refuses to start otherwise. No checkout of the repository, no home
  directory, no ``/work``, ``/var`` or ``/sys``: not masked, absent.
* **Seeing or touching other processes.** Each program has its own PID
  namespace (killing its first process kills every descendant, ``setsid`` or
  not) and an unprivileged uid of the worker slot's own, so it can neither
  signal nor ptrace the judge, the zygote, the other uid's program or the
  host's processes; ``/proc`` is mounted ``hidepid=invisible``, so it lists and
  shows only the program's own processes (no host command line, no
  environment; before Linux 5.8, whose proc mounts share their options, it
  stays empty). ``PR_SET_NO_NEW_PRIVS``: set-uid binaries cannot give root back.
* **The network.** An empty network namespace (loopback down: every connect
  fails).
* **Leaving something for a later program, or on the host.** Each program
  has its own IPC namespace, so its SysV shared memory, queues and semaphores
  and its POSIX message queues end with it. Its files live in a run directory
  on a tmpfs of its uid (``tmpfs_mb``; one per uid, so a full one cannot fail
  the program of the other uid that may start while it is emptied), removed
  entirely when it is reaped (``_rmtree``: any depth, past ``PATH_MAX``,
  whatever permissions it set). Its processes die with it (PID namespace) and
  the zygote dies with the judge, its children with it (``PR_SET_PDEATHSIG``).
* **Exhausting the host.** ``RLIMIT_CPU``, ``RLIMIT_AS`` (per process),
  ``RLIMIT_NPROC`` (processes and threads), ``RLIMIT_FSIZE``,
  ``RLIMIT_NOFILE``; a memory cgroup per uid (``cgroup.py``), which the zygote
  moves each program into before it runs, bounds all of a program's processes,
  its tmpfs files and its shared memory together (without one: SysV shared
  memory is capped per IPC namespace, and a program may hold
  ``max_processes x memory_mb``).
* **Escaping the above with the kernel's help.** A seccomp filter
  (``syscall_filter.py``) denies every way to make a namespace (a user
  namespace would give it every capability), ``setns``, the other system
  call tables, ``sched_setaffinity`` (it stays on its worker's cores), kernel
  keyrings, ``io_uring``, ``bpf``, ``userfaultfd`` and the mount calls.

Fallback ("rlimit" isolation, when not root): rlimits, the seccomp filter,
``setsid`` and a process-group kill only; the program has the caller's uid and
sees the caller's files.

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
import errno
import fcntl
import gc
import importlib
import importlib.machinery
import linecache
import marshal
import os
import resource
import stat
import struct
import sys
import traceback

try:  # imported as search.sandbox.zygote (tests) or as top-level zygote (sandbox processes)
    from . import syscall_filter, wire
except ImportError:  # pragma: no cover - exercised in the zygote process
    import syscall_filter
    import wire

F_SETFL, O_APPEND = fcntl.F_SETFL, os.O_APPEND
_FDS = struct.Struct("4i")  # the descriptors a standby child's channels travel in (SCM_RIGHTS)
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWIPC = 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 0x1000, 0x2000, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_MOUNT_SETATTR = 442  # same number on every architecture (asm-generic table)
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, -1)
MNT_DETACH = 2
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


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _outermost(paths: list[str]) -> list[str]:
    return [p for p in sorted(set(paths)) if not any(q != p and _under(p, q) for q in paths)]


class View:
    """The filesystem programs see, decided from the host's view before anything is mounted.

    ``trees`` are the host directories shown (the system directories and the
    Python installation), each at its own path; ``hidden`` the paths inside
    them that must not show (``hidden.default_hidden_paths``). Each hidden path
    belongs to the innermost tree that holds it, and that tree is shown as a
    read-only overlay whose top layer holds a whiteout for each of them, so one
    mount hides any number of paths (a tree with none is a plain bind mount).
    A hidden path outside every tree needs nothing: it is not there at all. A
    hidden path that is a tree, or holds one, shows that tree and nothing else
    (the Python installation is never hidden).
    """

    SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

    def __init__(self, hide: list[str], expose: list[str]):
        self.links: dict[str, str] = {}  # symlinked system directories (/bin -> usr/bin), made again
        shown = []
        for p in self.SYSTEM:
            if os.path.islink(p):
                self.links[p] = os.readlink(p)
            elif os.path.isdir(p):
                shown.append(p)
        shown += [os.path.realpath(p) for p in expose if os.path.isdir(p)]
        self.all_trees = sorted(set(shown))
        self.hidden = sorted({os.path.realpath(h) for h in hide if os.path.lexists(h)})
        held: dict[str, list[str]] = {}  # tree -> the hidden paths it holds (it is the innermost that does)
        for h in self.hidden:
            inner = [t for t in self.all_trees if _under(h, t) and h != t]
            if inner:
                held.setdefault(max(inner, key=len), []).append(h)
        self.whiteouts = {  # per tree, relative to it; a path inside another hidden one needs nothing more
            tree: [os.path.relpath(h, tree) for h in _outermost(paths)] for tree, paths in held.items()
        }
        top = _outermost(self.all_trees)
        self.mounts = top + sorted(t for t in self.whiteouts if t not in top)  # outer ones first
        for t in self.mounts:
            if _under(t, "/proc") or _under(t, "/dev"):
                raise OSError(errno.EINVAL, f"cannot show {t} to programs: it lies in /proc or /dev")
        # the programs' run directories live on a tmpfs here: /tmp, unless a tree lies there (a venv)
        self.run_root = "/tmp" if not any(_under(t, "/tmp") for t in self.mounts) else "/sandbox-tmp"


def isolate_filesystem_and_network(
    hide: list[str], expose: list[str], tmpfs_mb: int, uids: list[int]
) -> tuple[str, list[str]]:
    """Enter a private mount + network namespace whose root shows only ``View(hide, expose)``.

    Mutates the calling process (must be root). The new root is a small tmpfs
    with the trees bound (or overlaid) at their own paths, read-only; a
    minimal ``/dev`` (null, zero, full, random, urandom and the ``fd`` links);
    a ``/proc`` that shows each program only its own processes
    (``hidepid=invisible``: every other process has another uid; Linux 5.8 and
    later, an empty ``/proc`` before); and for each
    of ``uids`` a writable tmpfs of ``tmpfs_mb`` for its programs' run
    directories (``<run root>/<uid>``: a program can fill only its own uid's, which
    the zygote empties before that uid's next program; the judge may already run
    a program of the other uid meanwhile). The old root is
    detached (``pivot_root``), so nothing else of the host can be reached by any
    path. Every source is opened before the first mount, so no mount can cover
    another's source: what programs see does not depend on mount order. Last,
    every hidden path is checked from inside the new root (``_check_hidden``):
    one that can still be read is an ``OSError``, and the zygote refuses to
    start (fail closed). The new network namespace holds only a loopback device
    that is down. Returns the run root and notes for the log.
    """
    view = View(hide, expose)
    old_umask = os.umask(0o022)
    notes: list[str] = []
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare(CLONE_NEWNS | CLONE_NEWNET)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    # held in this namespace (a mount of another namespace cannot be bound), before anything is mounted
    fds = {t: os.open(t, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for t in view.mounts}
    root = "/tmp" if os.path.isdir("/tmp") else "/mnt"  # any directory: every source is held by a descriptor
    _mount("tmpfs", root, "tmpfs", MS_NOSUID, "size=1m,mode=0755")
    layers = root + "/.layers"
    os.mkdir(layers)
    _mount("tmpfs", layers, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700")
    masks: set[tuple[int, int]] = set()
    for i, tree in enumerate(view.mounts):
        target = root + tree
        os.makedirs(target, mode=0o755, exist_ok=True)
        source = f"/proc/self/fd/{fds[tree]}"
        if tree not in view.whiteouts:
            _mount(source, target, None, MS_BIND | MS_REC, None)
            continue
        layer = f"{layers}/{i}"
        os.mkdir(layer)
        for rel in view.whiteouts[tree]:
            os.makedirs(os.path.dirname(f"{layer}/{rel}"), mode=0o755, exist_ok=True)
            os.mknod(f"{layer}/{rel}", stat.S_IFCHR, os.makedev(0, 0))  # an overlay whiteout
        try:
            _mount("overlay", target, "overlay", MS_RDONLY, f"lowerdir={layer}:{source}")
        except OSError as e:  # no overlayfs here (or too deeply stacked): a mount per hidden path
            notes.append(
                f"overlayfs failed on {tree} ({e.strerror}): {len(view.whiteouts[tree])} mounts hide it"
            )
            _mount(source, target, None, MS_BIND | MS_REC, None)
            masks |= _mask_each(root, tree, view.whiteouts[tree])
    _umount(layers)
    os.rmdir(layers)
    for link, to in view.links.items():
        os.symlink(to, root + link)
    _make_dev(root)
    for d in ("/proc", view.run_root):
        os.makedirs(root + d, mode=0o755, exist_ok=True)
    for fd in fds.values():
        os.close(fd)
    _enter_root(root)
    _setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0)
    os.umask(old_umask)
    _check_hidden(view, masks)
    _mount("tmpfs", view.run_root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
    for uid in sorted(set(uids)):
        os.mkdir(f"{view.run_root}/{uid}", 0o755)
        opts = f"size={tmpfs_mb}m,mode=0755"
        _mount("tmpfs", f"{view.run_root}/{uid}", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    if _kernel_at_least(5, 8):
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    else:  # before 5.8 every proc mount of a PID namespace shares its options: the host's would change
        notes.append("kernel before 5.8: programs get an empty /proc (a private one needs per-mount options)")
    return view.run_root, notes


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        have = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return have >= (major, minor)


def _mask_each(root: str, tree: str, rels: list[str]) -> set[tuple[int, int]]:
    """Cover each hidden path of ``tree`` (bound at ``root + tree``) with an empty tmpfs or an empty file;
    the (device, inode) of each mask."""
    empty = root + "/.empty"
    if not os.path.exists(empty):
        os.close(os.open(empty, os.O_CREAT | os.O_WRONLY, 0o444))
    out = set()
    for rel in rels:
        target = f"{root}{tree}/{rel}"
        if os.path.isdir(target) and not os.path.islink(target):
            _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755")
        else:
            _mount(empty, target, None, MS_BIND, None)
        st = os.lstat(target)
        out.add((st.st_dev, st.st_ino))
    return out


def _make_dev(root: str) -> None:
    """A minimal /dev: the harmless character devices (made, or bound from the host's where mknod is
    refused) and the usual links."""
    dev = root + "/dev"
    os.mkdir(dev, 0o755)
    for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
        try:
            os.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(1, minor))
            os.chmod(f"{dev}/{name}", 0o666)
        except PermissionError:
            os.close(os.open(f"{dev}/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
            _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND, None)
    for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                     ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(to, f"{dev}/{name}")


def _enter_root(root: str) -> None:
    """Make ``root`` this mount namespace's root and detach the old one (``pivot_root(".", ".")``);
    where the root cannot be pivoted (an initramfs), move it onto / and chroot."""
    os.chdir(root)
    if _libc.syscall(SYS_PIVOT_ROOT, b".", b".") == 0:
        _check(_libc.umount2(b".", MNT_DETACH), "umount2(old root)")
    else:
        _mount(root, "/", None, MS_MOVE, None)
        _check(_libc.chroot(b"."), "chroot")
    os.chdir("/")


def _umount(path: str) -> None:
    _check(_libc.umount2(path.encode(), MNT_DETACH), f"umount2({path})")


def _check_hidden(view: View, masks: set[tuple[int, int]]) -> None:
    """Fail closed: raise if any hidden path can be read in the new root."""
    root_dev = os.lstat("/").st_dev

    def visible(path: str) -> str | None:
        if path in view.all_trees:  # the Python installation or a system directory: shown on purpose
            return None
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if (st.st_dev, st.st_ino) in masks:
            return None
        if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:  # a directory of the skeleton: look inside
            for name in os.listdir(path):
                found = visible(f"{path.rstrip('/')}/{name}")
                if found:
                    return found
            return None
        return path

    for h in view.hidden:
        found = visible(h)
        if found:
            raise OSError(
                errno.EACCES,
                f"{found} must be hidden from programs but would be readable in the sandbox; "
                "refusing to start (report this: the view in zygote.View missed it)",
            )


class _State:
    """What the zygote knows: its settings, never a test."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.full = cfg["isolation"] == "full"
        self.uids = [int(u) for u in cfg["uids"]]  # two per slot: one runs a program, one stands by
        self.run_root = ""  # where each program's run directory is made
        self.cgroup_fds: dict[
            int, int
        ] = {}  # uid -> its memory cgroup's cgroup.procs, opened before isolation
        self.ipc_limits: list[tuple[bytes, bytes]] = []  # /proc/sys files of each program's IPC namespace
        self.filter = None  # the seccomp filter every program runs under (syscall_filter.build)
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
    run_dir = (
        f"{state.run_root}/{uid}/run{state.n_runs}" if state.full else f"{state.run_root}/run{state.n_runs}"
    )
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
    cg = state.cgroup_fds.get(uid)
    if cg is not None:  # before the judge can hand the child a program: every process it makes is counted
        try:
            os.write(cg, str(pid).encode())
        except OSError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
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
    """Remove a run directory and whatever the program left in it, best effort, in constant stack and
    descriptors: one directory open at a time, entries addressed relative to it (so a tree nested past
    ``PATH_MAX`` or 100,000 levels deep goes too), parents reached through "..", links removed and never
    followed, directories the program made unreadable made readable again (it had our uid)."""
    opened = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, opened)
    except OSError:
        return
    pending: list[list[str]] = []  # per level, from the top: subdirectories still to remove
    names: list[str] = []  # the directory open at each level below the top, by name in its parent
    while True:
        subdirs = []
        try:
            entries = list(os.scandir(fd))
        except OSError:
            entries = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass
        pending.append(subdirs)
        while not pending[-1]:  # this level is done: remove its directory from the parent
            pending.pop()
            if not names:
                os.close(fd)
                try:
                    os.rmdir(path)
                except OSError:
                    pass
                return
            parent = os.open("..", opened & ~os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(names.pop(), dir_fd=fd)
            except OSError:
                pass
        name = pending[-1].pop()
        try:
            try:
                child = os.open(name, opened, dir_fd=fd)
            except PermissionError:  # the program took its own permissions away
                os.chmod(name, 0o700, dir_fd=fd)
                child = os.open(name, opened, dir_fd=fd)
        except OSError:
            continue
        os.close(fd)
        fd = child
        names.append(name)


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
    if state.full:
        # an IPC namespace of its own: SysV IPC objects and POSIX message queues end with the program
        # (no later program can read them back, even one whose predecessor is still being reaped)
        _check(_libc.unshare(CLONE_NEWIPC), "unshare(CLONE_NEWIPC)")
        for name, value in state.ipc_limits:  # no memory cgroup: SysV IPC bounded per program instead
            fd = os.open(name, os.O_WRONLY)
            os.write(fd, value)
            os.close(fd)
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
    # after the uid change (which clears both): die with the zygote; be dumpable again, so that the
    # program's /proc entries are its own and it sees its own children there (hidepid=invisible shows a
    # process only to those that may ptrace it: its uid holds nothing else; core files stay off)
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if state.full:
        _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")
    if state.filter is not None:  # last: no new namespaces, no other cores, for it and all it starts
        syscall_filter.install(state.filter, _libc)
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
    state = _State(wire.loads(_recv_settings(sock)))
    state.sock = sock
    state.std = [*std, std[0]]
    state.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cfg = state.cfg
    global _LIMIT
    _LIMIT = int(cfg["max_result_bytes"])
    notes: list[str] = []
    try:
        try:
            state.filter = syscall_filter.build()
        except OSError:
            if state.full:
                raise
            notes.append("no system call filter for this machine: programs may create namespaces")
        if state.full:
            state.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            for uid, path in zip(state.uids, cfg.get("cgroups") or []):
                fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                state.cgroup_fds[uid] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 16)
                os.close(fd)
            if not state.cgroup_fds:
                mb, page = int(cfg["memory_mb"]), os.sysconf("SC_PAGE_SIZE")
                state.ipc_limits = [
                    (b"/proc/sys/kernel/shmmax", str(mb << 20).encode()),
                    (b"/proc/sys/kernel/shmall", str((mb << 20) // page).encode()),
                    (b"/proc/sys/kernel/msgmni", b"16"),
                ]
            for uid in state.uids:
                _kill_all_of_uid(uid)  # leftovers of a sandbox that died before cleaning up
            state.run_root, more = isolate_filesystem_and_network(
                list(cfg["hide"]),
                [sys.base_prefix, sys.prefix, sys.exec_prefix, *cfg.get("site_paths", [])],
                int(cfg["tmpfs_mb"]),
                state.uids,
            )
            notes += more
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
        sock.send(wire.dumps({"op": "ready", "preloaded": loaded, "notes": notes}))
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


def _recv_settings(sock: socket.socket) -> bytes:
    """The settings: their size, then pieces of at most ``wire.SETTINGS_PIECE`` bytes (a message of the
    control socket cannot hold them all: the hidden paths alone may pass 200 kB)."""
    (n,) = struct.unpack("=Q", sock.recv(8))
    data = bytearray()
    while len(data) < n:
        piece = sock.recv(wire.SETTINGS_PIECE)
        if not piece:
            raise OSError(errno.EPIPE, "the judge went away while sending the settings")
        data += piece
    return bytes(data)


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
    state.sock.sendmsg([wire.STANDBY.pack(b"S", pid, uid)], rights)
    for fd in fds:
        os.close(fd)
