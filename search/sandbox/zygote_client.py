"""The judge's client of the zygote process (``zygote.py``) of one worker slot.

``ZygoteClient`` starts the zygote as a fresh interpreter with a scrubbed
environment (``PROGRAM_ENV``), takes the ready children it pushes ("standby",
with their channels as descriptors) and asks it to reap them.

Standard library only; imported by the judge process as a top-level module.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys

try:  # imported as search.sandbox.zygote_client (tests) or as top-level zygote_client (judge process)
    from . import wire
    from .child import Child
except ImportError:  # pragma: no cover - exercised in the judge process
    import wire
    from child import Child

_HERE = os.path.dirname(os.path.abspath(__file__))
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


class ZygoteClient:
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
        self.standby: list[tuple[int, int, list[int]]] = []  # pid, uid, descriptors
        self.reaped: dict[int, tuple[int, float]] = {}  # pid -> (wait status, cpu seconds)
        self.dying: dict[int, Child] = {}  # reap requested, not yet confirmed
        self.cpu_s = 0.0  # CPU time of every reaped child
        data = wire.dumps(cfg)
        self.sock.send(struct.pack("=Q", len(data)))
        for i in range(0, len(data), wire.SETTINGS_PIECE):
            self.sock.send(data[i : i + wire.SETTINGS_PIECE])
        reply = self._next(timeout=60.0)
        if reply.get("op") != "ready":
            self.close()
            raise RuntimeError(f"sandbox zygote failed to start: {reply.get('error', reply)}")
        self.preloaded = reply.get("preloaded", [])
        self.notes: list[str] = reply.get("notes", [])

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
            _, pid, uid = wire.STANDBY.unpack(msg)
            self.standby.append((pid, uid, fds))
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
        pid, uid, (ctl, out_r, err_r, in_w) = self.standby.pop(0)
        child = Child(pid, socket.socket(fileno=ctl), out_r, err_r, in_w, self.cfg)
        child.uid = uid
        return child

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

    def close(self, wait_s: float = 2.0) -> None:
        """Stop the zygote: it sees its channel close, kills and reaps every child it has, and exits
        (given up to ``wait_s``, then killed: its children then die with it, a moment later)."""
        try:
            self.sock.close()
        finally:
            for _, _, fds in self.standby:
                for fd in fds:
                    os.close(fd)
            self.standby = []
            for child in self.dying.values():
                child.close()
            self.dying = {}
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
