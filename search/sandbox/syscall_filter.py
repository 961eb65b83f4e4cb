"""A seccomp-BPF filter that every program process runs under: the system calls it may not make.

Threats it closes (each with a hostile test in ``tests/search/test_sandbox_isolation.py``):

* **New namespaces.** Without it a program can create a user namespace
  (``unshare(CLONE_NEWUSER)``), in which it holds every capability: it could
  then mount file systems, make new network or PID namespaces and reach
  kernel code that only root normally reaches. Denied: ``unshare`` and
  ``clone`` with any namespace flag, ``setns``, and ``clone3`` (its flags sit
  in memory, where a filter cannot look: it answers ``ENOSYS``, and the C
  library falls back to ``clone``).
* **Other system call tables.** On x86-64 the same numbers could be reached
  through the x32 ABI (numbers with bit 30 set) or the 32-bit ``int 0x80``
  table (another audit architecture): any call of another architecture, or
  with bit 30 set, fails with ``ENOSYS``.
* **Leaving its cores.** ``sched_setaffinity`` fails with ``EPERM``: a program
  stays on the cores its worker was given (``SandboxConfig.pin_cpus``).
* **Talking to other processes.** ``socket`` makes only ``AF_INET`` and
  ``AF_INET6`` sockets (``EAFNOSUPPORT`` otherwise), which reach nothing in the
  worker's empty network namespace. Abstract UNIX sockets, netlink and vsock
  are not bounded by uids or by the IPC namespace: a program's leftover
  process could have served one to the next program in the moment before it
  is reaped, and vsock reaches the host's own services. ``socketpair``
  (what a program needs to talk to itself) is another call, and allowed.
* **Host residue and kernel attack surface that programs do not need:** kernel
  keyrings (``add_key``, ``request_key``, ``keyctl``: keys outlive the
  process), ``io_uring`` (its operations bypass seccomp), ``bpf``,
  ``perf_event_open``, ``userfaultfd``, and the mount calls (``mount``,
  ``umount2``, ``pivot_root``, ``chroot``, the new mount API): ``ENOSYS`` or
  ``EPERM``.

Everything else is allowed. The filter is installed by each program's process
right before it runs the program (after ``PR_SET_NO_NEW_PRIVS``, which the
zygote sets), is inherited by every process and thread it makes, and cannot
be removed. Architectures: x86-64 and aarch64 (``build`` raises ``OSError``
elsewhere). Standard library only; the zygote imports it as a top-level module.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # classic BPF opcodes
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_X32_BIT = 0x40000000
# namespace flags: clone() and unshare(); CLONE_NEWTIME (0x80) is a namespace flag for unshare only
_CLONE_NS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_UNSHARE_NS = _CLONE_NS | 0x00000080
_ARCHES = {  # machine: (audit arch, system call numbers)
    "x86_64": (
        0xC000003E,
        {
            "clone": 56, "unshare": 272, "setns": 308, "clone3": 435, "sched_setaffinity": 203,
            "add_key": 248, "request_key": 249, "keyctl": 250, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "mount": 165,
            "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
            "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "socket": 41,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "clone": 220, "unshare": 97, "setns": 268, "clone3": 435, "sched_setaffinity": 122,
            "add_key": 217, "request_key": 218, "keyctl": 219, "io_uring_setup": 425, "io_uring_enter": 426,
            "io_uring_register": 427, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "mount": 40,
            "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429,
            "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
            "socket": 198,
        },
    ),
}  # fmt: skip
_AF_INET, _AF_INET6 = 2, 10
DENIED = {  # system call -> errno it fails with (clone and unshare: only with a namespace flag)
    "setns": errno.EPERM, "clone3": errno.ENOSYS, "sched_setaffinity": errno.EPERM,
    "add_key": errno.ENOSYS, "request_key": errno.ENOSYS, "keyctl": errno.ENOSYS,
    "io_uring_setup": errno.ENOSYS, "io_uring_enter": errno.ENOSYS, "io_uring_register": errno.ENOSYS,
    "bpf": errno.ENOSYS, "perf_event_open": errno.ENOSYS, "userfaultfd": errno.ENOSYS,
    "mount": errno.EPERM, "umount2": errno.EPERM, "pivot_root": errno.EPERM, "chroot": errno.EPERM,
    "open_tree": errno.EPERM, "move_mount": errno.EPERM, "fsopen": errno.EPERM, "fsconfig": errno.EPERM,
    "fsmount": errno.EPERM, "fspick": errno.EPERM, "mount_setattr": errno.EPERM,
}  # fmt: skip


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as classic BPF instructions ``(code, jt, jf, k)`` for ``machine`` (``os.uname()``'s)."""
    machine = machine or os.uname().machine
    if machine not in _ARCHES:
        raise OSError(
            errno.ENOSYS,
            f"no system call filter for machine {machine!r} (known: {', '.join(_ARCHES)}); "
            "full isolation cannot deny new namespaces there: use isolation='rlimit' knowingly",
        )
    arch, nr = _ARCHES[machine]
    code: list[tuple[int, object, object, int]] = []  # jumps name a label until resolved
    labels: dict[str, int] = {}

    def emit(op: int, k: int, jt: object = 0, jf: object = 0) -> None:
        code.append((op, jt, jf, k))

    emit(_LD_W_ABS, 4)  # seccomp_data.arch
    emit(_JEQ, arch, 0, "foreign")
    emit(_LD_W_ABS, 0)  # seccomp_data.nr
    if machine == "x86_64":
        emit(_JGE, _X32_BIT, "foreign", 0)
    for name, err in DENIED.items():
        emit(_JEQ, nr[name], f"errno{err}", 0)
    emit(_JEQ, nr["clone"], "clone", 0)
    emit(_JEQ, nr["unshare"], "unshare", 0)
    emit(_JEQ, nr["socket"], "socket", 0)
    emit(_RET, _ALLOW)
    labels["socket"] = len(code)
    emit(_LD_W_ABS, 16)  # the address family
    emit(_JEQ, _AF_INET, "allow", 0)
    emit(_JEQ, _AF_INET6, "allow", 0)
    emit(_RET, _ERRNO | errno.EAFNOSUPPORT)
    labels["allow"] = len(code)
    emit(_RET, _ALLOW)
    for name, mask in (("clone", _CLONE_NS), ("unshare", _UNSHARE_NS)):
        labels[name] = len(code)
        emit(_LD_W_ABS, 16)  # low 32 bits of args[0] (little-endian): the flags
        emit(_JSET, mask, f"errno{errno.EPERM}", 0)
        emit(_RET, _ALLOW)
    for err in sorted(set(DENIED.values())):
        labels[f"errno{err}"] = len(code)
        emit(_RET, _ERRNO | err)
    labels["foreign"] = len(code)
    emit(_RET, _ERRNO | errno.ENOSYS)
    out = []
    for i, (op, jt, jf, k) in enumerate(code):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        assert 0 <= jt < 256 and 0 <= jf < 256
        out.append((op, jt, jf, k))
    return out


def build(machine: str | None = None) -> _SockFprog:
    """The filter, ready for ``install`` (built once, in the zygote: its children only install it)."""
    insns = program(machine)
    raw = b"".join(struct.pack("=HBBI", *i) for i in insns)
    array = (_SockFilter * len(insns)).from_buffer_copy(raw)
    fprog = _SockFprog(len(insns), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    fprog._keep = array  # type: ignore[attr-defined]  # the instructions live as long as the program header
    return fprog


def install(fprog: _SockFprog, libc: ctypes.CDLL) -> None:
    """Put the calling process (and everything it starts) under the filter; needs no_new_privs or root."""
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")
