"""One memory bound for all the processes of a program: a memory cgroup per sandbox uid.

Threat: ``RLIMIT_AS`` bounds each process, not the program. A program that
forks ``max_processes`` children each holding ``memory_mb`` (12 forks x 400 MB
held 2.3 GB), or that fills SysV shared memory or its tmpfs (neither is in any
process's address space), takes memory from the host, which may have no swap.

Each of the sandbox's uids runs one program at a time, so a cgroup per uid
is a cgroup per program: the zygote moves each program's first process into
the cgroup of its uid before the program starts, and everything the program
starts inherits it. The kernel then counts anonymous memory, page cache,
tmpfs and SysV shared memory, and kernel memory, of all its processes
together, and kills one of them (``crash``) when the total would pass the
limit (``memory.max`` / ``memory.limit_in_bytes``; swap is bounded to zero
where the kernel accounts it).

Where: a child of this process's own cgroup, ``marl-sandbox-<uid>``; the
uid's lock (``pool._lock_uid``) makes the name ours. cgroup v2 is used when
its memory controller is enabled for the children of this process's cgroup
(``cgroup.subtree_control``; the sandbox never changes the host's cgroup
settings), else the cgroup v1 memory hierarchy. Neither is there (no root, a
container that delegates none, cgroup v2 whose memory controller this
process's cgroup cannot hand down because it holds processes): ``find_parent``
says why, and programs are bounded by ``RLIMIT_AS`` per process only, so by
``max_processes x memory_mb`` in all; the zygote then also caps each program's
SysV shared memory (``kernel.shmall`` of its IPC namespace). Standard library
only.
"""

from __future__ import annotations

import errno
import os
import time

PREFIX = "marl-sandbox-"


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy: ``"memory"`` (v1) and ``""`` (v2) -> path in the hierarchy."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def _mounts(fstype: str) -> list[tuple[str, str, set[str]]]:
    """(root in the hierarchy, mount point, super options) of every mount of ``fstype``."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields, rfields = left.split(), right.split()
            if rfields[0] == fstype:
                out.append((fields[3], fields[4], set(rfields[2].split(","))))
    return out


def _place(path: str, mounts: list[tuple[str, str, set[str]]]) -> str | None:
    """The directory of hierarchy path ``path`` under one of ``mounts`` (a mount may show a subtree)."""
    for root, point, _ in mounts:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return os.path.join(point, path[len(root) :].lstrip("/"))
    return None


def _read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as fh:
        return fh.read()


def find_parent() -> tuple[str, str]:
    """Where this process may create memory cgroups: ``("cgroup2" | "cgroup1", directory)``, or
    ``("", why not)``."""
    try:
        own = _own_cgroups()
        reasons = []
        if "" in own:
            d = _place(own[""], _mounts("cgroup2"))
            if d is None:
                reasons.append("cgroup v2 is not mounted here")
            elif "memory" not in _read(d, "cgroup.controllers").split():
                reasons.append(f"cgroup v2 has no memory controller at {d}")
            elif "memory" in _read(d, "cgroup.subtree_control").split() and os.access(d, os.W_OK):
                return "cgroup2", d
            else:  # enabling it is the host's choice (and impossible while d holds processes, as it does)
                reasons.append(f"cgroup v2 at {d} does not hand its memory controller down")
        if "memory" in own:
            mounts = [m for m in _mounts("cgroup") if "memory" in m[2]]
            d = _place(own["memory"], mounts)
            if d is not None and os.access(d, os.W_OK):
                return "cgroup1", d
            reasons.append("the cgroup v1 memory hierarchy is not mounted writable here")
        return "", "; ".join(reasons) or "no memory cgroup hierarchy"
    except OSError as e:
        return "", f"cgroups unreadable ({e})"


def create(version: str, parent: str, uid: int, memory_mb: int) -> str:
    """The memory cgroup of sandbox uid ``uid`` (made, or taken over from a sandbox that died) with its
    limit set to ``memory_mb`` and swap to none; its path."""
    path = os.path.join(parent, f"{PREFIX}{uid}")
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    limit = str(memory_mb * 1024 * 1024)
    if version == "cgroup2":
        _write(path, "memory.max", limit)
        _write(path, "memory.swap.max", "0", optional=True)
        _write(path, "memory.oom.group", "1", optional=True)  # an OOM kill takes the whole program
    else:
        _write(path, "memory.limit_in_bytes", limit)
        _write(path, "memory.memsw.limit_in_bytes", limit, optional=True)  # memory + swap
    return path


def _write(path: str, name: str, value: str, optional: bool = False) -> None:
    try:
        with open(os.path.join(path, name), "w") as fh:
            fh.write(value)
    except OSError as e:
        if not (optional and e.errno in (errno.ENOENT, errno.EINVAL, errno.EACCES, errno.EPERM)):
            raise


def oom_kills(version: str, path: str) -> int:
    """How many processes the kernel killed in cgroup ``path`` for passing its limit (-1: unknown)."""
    name = "memory.events" if version == "cgroup2" else "memory.oom_control"
    try:
        with open(os.path.join(path, name)) as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return -1


def remove(path: str, wait_s: float = 2.0) -> None:
    """Remove an empty cgroup, waiting up to ``wait_s`` for its last processes to finish exiting."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
