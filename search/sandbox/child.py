"""The judge's end of one untrusted process: its control socket, output files and stdin pipe.

A ``Child`` is a process the zygote forked (``zygote.py``) and handed over
ready ("standby"): the judge sends it requests and reads its replies in order,
and cuts what it printed (two append-only memory files) at the sizes each
reply reports. A child that dies, hangs past its deadline or breaks the
framing raises ``Fatal``; whatever the child writes is only ever "the value the
program returned" (see ``judge.py`` for the threat model).

Standard library only; imported by the judge process as a top-level module.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time

try:  # imported as search.sandbox.child (tests) or as top-level child (judge process)
    from . import wire
except ImportError:  # pragma: no cover - exercised in the judge process
    import wire

SIGNALS = {
    signal.SIGXCPU: "CPU time limit exceeded (SIGXCPU)",
    signal.SIGXFSZ: "file size limit exceeded (SIGXFSZ)",
    signal.SIGKILL: "killed (SIGKILL)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV), e.g. a stack overflow",
    signal.SIGABRT: "aborted (SIGABRT)",
}


class Fatal(Exception):
    """The child can no longer be used for this test: ``status`` is "timeout" or "crash"."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def describe_status(status: int) -> str:
    """Human-readable wait status of a child that ended on its own."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return SIGNALS.get(sig, f"killed by signal {signal.Signals(sig).name}")
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
        self.uid = -1  # the sandbox uid it runs under (set by ZygoteClient.spawn)
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
        """The next reply, feeding stdin meanwhile; ``Fatal`` on timeout or death."""
        while True:
            try:
                frame = self.reader.pop()
            except wire.WireError as e:
                raise Fatal("crash", f"the program broke the result channel ({e})") from None
            if frame is not None:
                if type(frame) is not dict or type(frame.get("op")) is not str:
                    raise Fatal("crash", "the program broke the result channel (reply is not a message)")
                self.marks = frame.get("o")
                return frame
            now = time.monotonic()
            if now >= deadline:
                raise Fatal("timeout", "time limit exceeded")
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
                    raise Fatal("crash", "")
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
