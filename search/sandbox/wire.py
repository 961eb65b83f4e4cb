"""Plain-data wire format between the trusted judge and an untrusted program.

Only plain built-in values cross the boundary: ``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``
and ``frozenset``. They travel as JSON with tags for the types JSON lacks, so a
tuple stays a tuple and ``1`` stays distinct from ``1.0`` and from ``True``::

    tuple -> {"T": [...]}      dict -> {"D": [[k, v], ...]}   set -> {"S": [...]}
    frozenset -> {"Z": [...]}  bytes -> {"B": base64}         complex -> {"C": [re, im]}
    big int -> {"I": hex}      nan / inf / -inf -> {"F": "nan" | "inf" | "-inf"}

``dump_value`` runs inside the untrusted process, so whatever it produces is
only a claim; ``decode_value`` is the trust boundary: it accepts nothing but
well-formed tagged JSON within the size and depth limits and returns fresh
plain objects, never calling code that the program could have defined
(no unpickling, no ``__eq__`` or ``__hash__`` of foreign classes).

Frames are a 4-byte big-endian length followed by UTF-8 JSON.

This module is imported both as ``search.sandbox.wire`` and, inside the
sandbox's own processes, as the top-level module ``wire``; it uses only the
standard library.
"""

from __future__ import annotations

import base64
import json
import marshal
import math
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

MAX_DEPTH = 100  # nesting limit for values on the wire
MAX_FRAME_BYTES = 16 * 1024 * 1024  # default limit on one frame
_BIG = 1 << 62  # ints at or beyond this magnitude travel as hex
HEADER = struct.Struct(">I")  # frame length


# The judge and the zygote exchange three messages per program; they travel as fixed binary records, so
# the zygote's loop builds no JSON (every object it touches costs a page fault after each fork). Other
# control messages (settings, ready, errors) are JSON objects, whose first byte is "{".
REAP = struct.Struct("=cq")  # b"R", pid: judge -> zygote, kill and wait for this child
REAPED = struct.Struct("=cqid")  # b"D", pid, wait status, CPU seconds: zygote -> judge
STANDBY = struct.Struct("=cq")  # b"S", pid (+ 4 descriptors): zygote -> judge, a ready child


class WireError(ValueError):
    """A value or frame that does not follow the wire format."""


class Unserializable(TypeError):
    """A value the program returned that is not plain data."""


def dump_value(v: Any, depth: int = 0) -> str:
    """A plain Python value as tagged JSON text, in one pass.

    Subclasses of ``int``, ``float`` and ``str`` are reduced to their base value
    through the base-class slot (so an overridden ``__eq__`` or ``__int__`` never
    matters); numpy scalars and arrays go through ``tolist()``. Anything else
    raises ``Unserializable``. What the untrusted process sends its return values
    with: in a freshly forked process every object that JSON's encoder machinery
    touches costs a copy-on-write page fault, and this path touches few.
    """
    if depth > MAX_DEPTH:
        raise Unserializable(f"value nested deeper than {MAX_DEPTH} levels (or cyclic)")
    t = type(v)
    if t is str:
        return _quote(v)
    if t is int:
        return int.__repr__(v) if -_BIG < v < _BIG else '{"I":"' + format(v, "x") + '"}'
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is float:
        if math.isfinite(v):
            return float.__repr__(v)
        return '{"F":"nan"}' if math.isnan(v) else ('{"F":"inf"}' if v > 0 else '{"F":"-inf"}')
    d = depth + 1
    if t is list:
        return "[" + ",".join([dump_value(x, d) for x in v]) + "]"
    if t is tuple:
        return '{"T":[' + ",".join([dump_value(x, d) for x in v]) + "]}"
    if t is dict:
        pairs = ["[" + dump_value(k, d) + "," + dump_value(x, d) + "]" for k, x in v.items()]
        return '{"D":[' + ",".join(pairs) + "]}"
    if t is set:
        return '{"S":[' + ",".join([dump_value(x, d) for x in v]) + "]}"
    if t is frozenset:
        return '{"Z":[' + ",".join([dump_value(x, d) for x in v]) + "]}"
    if t is bytes:
        return '{"B":"' + base64.b64encode(v).decode("ascii") + '"}'
    if t is complex:
        return '{"C":[' + dump_value(v.real, d) + "," + dump_value(v.imag, d) + "]}"
    if isinstance(v, int):
        return dump_value(int.__int__(v), depth)
    if isinstance(v, float):
        return dump_value(float.__float__(v), depth)
    if isinstance(v, str):
        return _quote(str.__str__(v))
    if getattr(t, "__module__", "") == "numpy" and hasattr(v, "tolist"):
        return dump_value(v.tolist(), d)
    raise Unserializable(f"a value of type {t.__name__!r} is not plain data")


def encode_value(v: Any) -> Any:
    """``v``'s tagged form as parsed JSON (``dump_value``'s rules and errors)."""
    return _DECODER.decode(dump_value(v))


def _decode(j: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
    t = type(j)
    if j is None or t is bool or t is str or t is int:
        return j
    if t is float:
        if not math.isfinite(j):
            raise WireError("non-finite float outside an F tag")
        return j
    if t is list:
        return [_decode(x, depth + 1) for x in j]
    if t is not dict or len(j) != 1:
        raise WireError(f"malformed value of JSON type {t.__name__}")
    ((tag, body),) = j.items()
    if tag == "I" and type(body) is str:
        try:
            return int(body, 16)
        except ValueError as e:
            raise WireError(f"bad big int {body[:40]!r}") from e
    if tag == "F" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "B" and type(body) is str:
        try:
            return base64.b64decode(body.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as e:
            raise WireError("bad base64 bytes") from e
    if type(body) is not list:
        raise WireError(f"tag {tag!r} needs a list body")
    items = [_decode(x, depth + 1) for x in body]
    try:
        if tag == "T":
            return tuple(items)
        if tag == "S":
            return set(items)
        if tag == "Z":
            return frozenset(items)
        if tag == "C" and len(items) == 2 and all(type(x) in (int, float) for x in items):
            return complex(items[0], items[1])
        if tag == "D":
            out = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("dict entries must be [key, value] pairs")
                out[pair[0]] = pair[1]
            return out
    except TypeError as e:  # unhashable key or set element
        raise WireError(f"unhashable element in tag {tag!r}: {e}") from e
    raise WireError(f"unknown tag {tag!r}")


def decode_value(j: Any) -> Any:
    """Inverse of ``encode_value`` for JSON already parsed; raises ``WireError`` on anything else."""
    return _decode(j, 0)


def _no_constants(name: str) -> Any:
    raise WireError(f"JSON constant {name} is not allowed")


# built once: json.dumps/json.loads with options build a new encoder or decoder on every call, and in a
# freshly forked sandbox process every new object costs copy-on-write page faults
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_quote = json.encoder.encode_basestring_ascii  # what _ENCODER writes strings with (C when available)
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def dumps(obj: Any) -> bytes:
    """Serialise a frame body (already wire-encoded) to bytes; strict JSON, no NaN."""
    return _ENCODER.encode(obj).encode("utf-8")


def loads(data: bytes) -> Any:
    """Parse a frame body; raises ``WireError`` on invalid UTF-8/JSON, NaN tokens or excessive nesting."""
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise WireError(f"frame is not valid JSON: {type(e).__name__}") from e


def pack_frame(obj: Any) -> bytes:
    """Length-prefixed frame for ``obj``."""
    body = dumps(obj)
    return HEADER.pack(len(body)) + body


def pack_request(obj: Any) -> bytes:
    """Length-prefixed frame of a request from the judge to a program: ``marshal`` (version 2, so no
    shared references) of plain data the judge built. Only the untrusted side reads these frames (a
    fresh process decodes marshal with far fewer page faults than JSON); the judge never unmarshals
    anything a program sends. ``ValueError`` for anything that is not exactly a plain built-in type."""
    body = marshal.dumps(obj, 2)
    return HEADER.pack(len(body)) + body


def send_frame(sock: socket.socket, obj: Any) -> None:
    """Blocking send of one frame."""
    sock.sendall(pack_frame(obj))


def recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Blocking read of exactly ``n`` bytes; ``None`` on EOF before the first byte."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise WireError(f"connection closed inside a frame ({len(buf)} of {n} bytes)")
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Blocking read of one frame; ``None`` on a clean EOF."""
    head = recv_exact(sock, HEADER.size)
    if head is None:
        return None
    (n,) = HEADER.unpack(head)
    if n > max_bytes:
        raise WireError(f"frame of {n} bytes exceeds the limit of {max_bytes}")
    body = recv_exact(sock, n)
    if body is None:
        raise WireError("connection closed after a frame header")
    return loads(body)


class FrameReader:
    """Incremental frame parser for non-blocking sockets: ``feed`` bytes, ``pop`` parsed frames."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES):
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pop(self) -> Any | None:
        """Next complete frame, or ``None`` if more bytes are needed; raises ``WireError``."""
        if len(self._buf) < HEADER.size:
            return None
        (n,) = HEADER.unpack_from(self._buf)
        if n > self.max_bytes:
            raise WireError(f"frame of {n} bytes exceeds the limit of {self.max_bytes}")
        if len(self._buf) < HEADER.size + n:
            return None
        body = bytes(self._buf[HEADER.size : HEADER.size + n])
        del self._buf[: HEADER.size + n]
        return loads(body)
