"""The executor daemon's protocol: one request, one reply, per unix-socket connection.

A message is a 4-byte big-endian length, that many bytes of JSON (the
header), then the raw payloads whose lengths the header lists under
``"payloads"``.  A request may carry open file descriptors (SCM_RIGHTS) with
its first bytes: the object server opens the object's data file and hands
the descriptor over, so the daemon reads exactly that file even if the
object is overwritten meanwhile.

The messages are the dataclasses below (RunRequest, PingRequest; RunReply,
Refusal, and the daemon's own DaemonStatus and WorkerReady); their
``to_wire()`` is the header without its "payloads", and ``parse_request()``,
``parse_reply()`` and each ``from_wire()`` take a header as it arrived and
refuse (ProtocolError, one line) a field that is missing, unknown, of the
wrong type, or that names a payload the message does not carry.  The daemon
reads requests from the network: every field is checked before it is used.

Request (proxy -> object server -> daemon -> worker)::

    {"op": "run",
     "program": {"image": "python", "path": "bin/python"} | {"payload": 0} | {"payload": 2, "path": "bin/app"},
     "program_name": "swift://a/c/prog.wasm",
     "args": [...], "env": {...}, "timeout": 10, "memory": 268435456, "max_input": 1073741824,
     "inputs": [{"alias": "/dev/stdin", "fd": 0} | {"alias": "/script", "payload": 1}],
     "outputs": [{"alias": "/dev/stdout", "limit": 104857600}, ...],
     "images": [{"payload": 2}],
     "payloads": [len0, len1, ...]}

Only "op" and "program" are required.  The object server sets "max_input"
and caps "timeout", "memory" and each output's "limit" with its own limits,
and adds the object's input as ``{"alias": ..., "fd": 0}``.

Reply::

    {"status": "ok", "report": {...}, "outputs": ["/dev/stdout", ...], "digests": ["<md5>", ...],
     "payloads": [...]}
    {"status": "busy" | "bad-request", "reason": "..."}

Streams (connect's data between running nodes): an input or output marked
``"stream": true`` is not a payload.  A request with stream inputs goes on,
after its payloads, with frames: STREAM_FRAME (the stream's number among
the request's stream inputs, a length), then that many bytes; a frame of
length 0 ends its stream, and the request ends when every stream has.  A
request with any stream at all is answered with a Streaming header first,
as soon as a worker has taken it; then frames of the stream outputs
(numbered among the request's stream outputs, length 0 ending one), then an
END_OF_STREAMS frame, then the RunReply, which names only the outputs that
are not streams.

Between the daemon and a worker (their socketpair): the daemon forwards the
request's header as it came, with the client's connected socket passed ahead
of the request's own descriptors; the worker reads the payloads from the
client and writes the reply to it directly, then sends the daemon one byte,
WORKER_DONE, once it is finished with the job (replied, or the client went
away).  Before the first byte of a reply it sets a flag in memory it shares
with the daemon: from then on the daemon must not answer the client itself,
so a worker lost after that leaves the client a cut reply, never a spliced
one.

Used by objectquery.py (in Swift's eventlet python), executord.py and worker.py.
"""

from __future__ import annotations

import array
import json
import os
import re
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

MAX_HEADER = 1 << 20
# An output's digest in a reply (RunReply.digests).
MD5_HEX = re.compile(r"(?:[0-9a-f]{32})?")
# A message's header: a JSON object (the messages below give it a shape).
Header = dict[str, Any]
READ_PIECE = 1 << 20   # the most one recv asks for
MAX_PIECES = 512   # buffers per sendmsg, under the kernel's IOV_MAX (1024)
# A worker's one message to the daemon, after each job (see above).
WORKER_DONE = b"D"
# A frame of a stream: its number, its length (0: the stream ended).
STREAM_FRAME = struct.Struct("!II")
MAX_FRAME = 1 << 20
# The frame number after which a streaming reply's RunReply follows.
END_OF_STREAMS = 0xFFFFFFFF


class ProtocolError(Exception):
    pass


def encode(header: Header, payloads: Sequence[bytes] = ()) -> bytes:
    header = dict(header, payloads=[len(p) for p in payloads])
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("!I", len(head)) + head


def send(sock: socket.socket, header: Header, payloads: Sequence[bytes] = (), fds: Sequence[int] = ()) -> None:
    # Header and payloads in one sendmsg (scatter-gather): a small job's reply
    # is then one system call, and the reader wakes once, not once per piece.
    pending = [memoryview(frame_header(dict(header, payloads=[len(p) for p in payloads])))]
    pending += [memoryview(p) for p in payloads if p]
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    while pending:
        sent = sock.sendmsg(pending[:MAX_PIECES], ancillary)
        ancillary = []   # the descriptors went with the first bytes
        while pending and sent >= len(pending[0]):
            sent -= len(pending.pop(0))
        if sent:
            pending[0] = pending[0][sent:]


def frame_header(header: Header) -> bytes:
    """A header as it goes on the wire: its length, then its JSON."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("!I", len(head)) + head


def frame(number: int, data: bytes = b"") -> bytes:
    """One frame of a stream (data b"": the stream ended)."""
    return STREAM_FRAME.pack(number, len(data)) + data


def parse_frame_header(raw: bytes) -> tuple[int, int]:
    """A frame's number and length, the length checked against MAX_FRAME."""
    number, length = STREAM_FRAME.unpack(raw)
    if length > MAX_FRAME:
        raise ProtocolError(f"stream frame of {length} bytes is more than {MAX_FRAME}")
    return number, length


def parse_header(raw: bytes) -> Header:
    """A header's JSON, checked: an object whose "payloads" is a list of lengths."""
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    lengths = header.get("payloads", [])
    if not isinstance(lengths, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in lengths):
        raise ProtocolError("payloads must be a list of lengths")
    return header


def send_header(sock: socket.socket, header: Header, fds: Sequence[int] = ()) -> None:
    """The header alone, whose "payloads" already lists what will follow."""
    send_frame(sock, frame_header(header), fds)


def send_frame(sock: socket.socket, first: bytes, fds: Sequence[int] = ()) -> None:
    """A header already framed (frame_header, Reader.frame)."""
    if fds:
        sent = sock.sendmsg([first], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        sock.sendall(first[sent:])   # a stream socket may take part of it; the rest needs no descriptors
    else:
        sock.sendall(first)


class Reader:
    """Reads a message from a socket, keeping descriptors passed with it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.fds: list[int] = []
        self.frame = b""   # the last header as it came (length and JSON), to pass it on as it is

    def _fill(self, want_fds: bool, want: int = 0) -> None:
        if want_fds:
            # No further than asked: the daemon reads a request's header alone
            # and hands the socket, payloads unread, to a worker.
            fds = array.array("i")
            data, anc, _flags, _addr = self.sock.recvmsg(max(want, 1), socket.CMSG_SPACE(16 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - (len(payload) % fds.itemsize)])
            self.fds.extend(fds)
        else:
            # Sized to what is wanted: a 1 MiB receive buffer for a 4-byte
            # header costs more than the read itself.
            data = self.sock.recv(min(max(want, 1 << 16), READ_PIECE))
        if not data:
            raise ProtocolError("connection closed in the middle of a message")
        self.buf += data

    def exact(self, n: int, want_fds: bool = False) -> bytes:
        while len(self.buf) < n:
            self._fill(want_fds, n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def header(self, want_fds: bool = False, max_payload: int | None = None) -> Header:
        """The header alone (payloads not read yet), its payload lengths checked."""
        head = self.exact(4, want_fds)
        (size,) = struct.unpack("!I", head)
        if size > MAX_HEADER:
            raise ProtocolError(f"header of {size} bytes is too large")
        raw = self.exact(size, want_fds)
        self.frame = head + raw
        header = parse_header(raw)
        lengths = header.get("payloads", [])
        if max_payload is not None and sum(lengths) > max_payload:
            raise ProtocolError(f"payloads of {sum(lengths)} bytes are more than the limit of {max_payload}")
        return header

    def message(self, want_fds: bool = False, max_payload: int | None = None) -> tuple[Header, list[bytes]]:
        header = self.header(want_fds, max_payload)
        return header, [self.exact(n) for n in header.get("payloads", [])]


def close_all(fds: list[int]) -> None:
    """Closes descriptors passed with a message (each once; a closed one is no error)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def decode(data: bytes) -> tuple[Header, list[bytes]]:
    """A whole message held in memory (the object server's HTTP reply body)."""
    if len(data) < 4:
        raise ProtocolError("short message")
    (size,) = struct.unpack("!I", data[:4])
    if size > MAX_HEADER:
        raise ProtocolError(f"header of {size} bytes is too large")
    header = parse_header(data[4:4 + size])
    pos = 4 + size
    payloads = []
    for n in header.get("payloads", []):
        payloads.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise ProtocolError("message length does not match its header")
    return header, payloads


def pack(header: Header, payloads: Sequence[bytes] = ()) -> bytes:
    return encode(header, payloads) + b"".join(payloads)


# ------------------------------------------------------------------ messages
# A header's own framing, not part of any message's fields.
FRAMING = frozenset({"payloads"})
# JSON integers are unbounded; sizes and counts here fit in 64 bits, and a
# timeout in what a socket timeout and the manifest's Timeout accept.
MAX_INTEGER = (1 << 63) - 1
MAX_TIMEOUT = (1 << 31) - 1


def payload_lengths(header: Mapping[str, Any]) -> list[int]:
    """The lengths of the payloads that follow a header (parse_header checked them)."""
    lengths = header.get("payloads", [])
    return list(lengths) if isinstance(lengths, list) else []


class WireObject:
    """One JSON object of a message, read field by field: each getter refuses
    (ProtocolError naming the field) a value of the wrong type, and the
    constructor refuses missing and unknown keys."""

    def __init__(self, raw: object, what: str, required: Iterable[str] = (), optional: Iterable[str] = ()):
        if not isinstance(raw, dict):
            raise ProtocolError(f"{what} must be a JSON object")
        required, optional = frozenset(required), frozenset(optional)
        # The messages are sorted out only when wrong (every request is checked
        # twice, by the daemon and by its worker).
        if not raw.keys() >= required:
            raise ProtocolError(f"{what} lacks {', '.join(sorted(required - raw.keys()))}")
        if not raw.keys() <= required | optional:
            unknown = sorted(str(k) for k in raw.keys() - required - optional)
            shown = ", ".join(f"{k!r:.40}" for k in unknown[:5])
            raise ProtocolError(f"{what} has unknown field(s) {shown}")
        self.raw: dict[str, Any] = raw
        self.what = what

    def has(self, key: str) -> bool:
        return key in self.raw

    def _wrong(self, key: str, kind: str) -> ProtocolError:
        return ProtocolError(f"{self.what}.{key} must be {kind}")

    def integer(self, key: str, minimum: int | None = None, maximum: int = MAX_INTEGER) -> int:
        value = self.raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer")
        if minimum is not None and value < minimum:
            raise self._wrong(key, f"at least {minimum}")
        if value > maximum:
            raise self._wrong(key, f"at most {maximum}")
        return value

    def optional_integer(self, key: str, minimum: int | None = None, maximum: int = MAX_INTEGER) -> int | None:
        return self.integer(key, minimum, maximum) if self.raw.get(key) is not None else None

    def number(self, key: str) -> float:
        value = self.raw.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self._wrong(key, "a number")
        return float(value)

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if self.raw.get(key) is not None else None

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._wrong(key, "a list of strings")
        return tuple(value)

    def text_map(self, key: str) -> dict[str, str]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self._wrong(key, "an object of strings")
        return dict(value)

    def objects(self, key: str) -> list[object]:
        value = self.raw.get(key, [])
        if not isinstance(value, list):
            raise self._wrong(key, "a list")
        return value


def _without_none(fields: Header) -> Header:
    return {k: v for k, v in fields.items() if v is not None}


def _payload_index(obj: WireObject, payloads: int) -> int:
    index = obj.integer("payload", minimum=0)
    if index >= payloads:
        raise ProtocolError(f"{obj.what} names payload {index}, but the message carries {payloads}")
    return index


@dataclass(frozen=True)
class ProgramSource:
    """What a node runs: the wasm bytes of a payload, a program inside a
    payload that is a tar image (``path`` set: a user image, ZeroCloud's
    ``file://image:PATH``), or a program in one of the executor's system
    images."""

    payload: int | None = None
    image: str | None = None
    path: str | None = None

    def to_wire(self) -> Header:
        if self.payload is not None:
            return _without_none({"payload": self.payload, "path": self.path})
        return {"image": self.image, "path": self.path}

    @classmethod
    def from_wire(cls, raw: object, payloads: int) -> ProgramSource:
        if isinstance(raw, dict) and "payload" in raw:
            obj = WireObject(raw, "program", required=("payload",), optional=("path",))
            return cls(payload=_payload_index(obj, payloads), path=obj.optional_text("path"))
        obj = WireObject(raw, "program", required=("image", "path"))
        return cls(image=obj.text("image"), path=obj.text("path"))


def _stream_flag(obj: WireObject) -> bool:
    if obj.raw.get("stream") is not True:
        raise ProtocolError(f"{obj.what}.stream must be true when present")
    return True


@dataclass(frozen=True)
class InputChannel:
    """A readable device: a payload of the message, a passed descriptor, or
    a stream whose frames follow the payloads."""

    alias: str
    payload: int | None = None
    fd: int | None = None
    stream: bool = False

    def to_wire(self) -> Header:
        return _without_none({"alias": self.alias, "payload": self.payload, "fd": self.fd,
                              "stream": True if self.stream else None})

    @classmethod
    def from_wire(cls, raw: object, payloads: int) -> InputChannel:
        if isinstance(raw, dict) and "fd" in raw:
            obj = WireObject(raw, "input", required=("alias", "fd"))
            return cls(obj.text("alias"), fd=obj.integer("fd", minimum=0))
        if isinstance(raw, dict) and "stream" in raw:
            obj = WireObject(raw, "input", required=("alias", "stream"))
            return cls(obj.text("alias"), stream=_stream_flag(obj))
        obj = WireObject(raw, "input", required=("alias", "payload"))
        return cls(obj.text("alias"), payload=_payload_index(obj, payloads))


@dataclass(frozen=True)
class OutputChannel:
    """A writable device and the most bytes it may take (None: the
    receiver's limit); a stream's bytes go in frames as they are written."""

    alias: str
    limit: int | None = None
    stream: bool = False

    def to_wire(self) -> Header:
        return _without_none({"alias": self.alias, "limit": self.limit, "stream": True if self.stream else None})

    @classmethod
    def from_wire(cls, raw: object) -> OutputChannel:
        obj = WireObject(raw, "output", required=("alias",), optional=("limit", "stream"))
        return cls(obj.text("alias"), obj.optional_integer("limit", minimum=0),
                   stream=_stream_flag(obj) if obj.has("stream") else False)


@dataclass(frozen=True)
class ExtraImage:
    """A tar image mounted at / besides the program's own: a payload, or
    one of the executor's system images by name."""

    payload: int | None = None
    sysimage: str | None = None

    def to_wire(self) -> Header:
        if self.payload is not None:
            return {"payload": self.payload}
        return {"sysimage": self.sysimage}

    @classmethod
    def from_wire(cls, raw: object, payloads: int) -> ExtraImage:
        if isinstance(raw, dict) and "sysimage" in raw:
            return cls(sysimage=WireObject(raw, "image", required=("sysimage",)).text("sysimage"))
        return cls(_payload_index(WireObject(raw, "image", required=("payload",)), payloads))


@dataclass(frozen=True)
class RunRequest:
    """One node to run.  None (or absent on the wire) leaves a limit to the receiver."""

    program: ProgramSource
    program_name: str | None = None     # as the user wrote it, for messages
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: int | None = None          # seconds
    memory: int | None = None           # bytes of guest memory
    max_input: int | None = None        # bytes a readable device may give
    inputs: tuple[InputChannel, ...] = ()
    outputs: tuple[OutputChannel, ...] = ()
    images: tuple[ExtraImage, ...] = ()
    char: tuple[str, ...] = ()          # channels the guest sees as character devices (ZeroCloud's mode)

    @property
    def stream_inputs(self) -> tuple[str, ...]:
        """The aliases of the stream inputs, by their frames' numbers."""
        return tuple(i.alias for i in self.inputs if i.stream)

    @property
    def stream_outputs(self) -> tuple[str, ...]:
        """The aliases of the stream outputs, by their frames' numbers."""
        return tuple(o.alias for o in self.outputs if o.stream)

    @property
    def streaming(self) -> bool:
        """Whether the reply begins with a Streaming header (protocol above)."""
        return any(i.stream for i in self.inputs) or any(o.stream for o in self.outputs)

    op: ClassVar[str] = "run"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"op", "program", "program_name", "args", "env", "timeout", "memory", "max_input", "inputs",
         "outputs", "images", "char"})

    def to_wire(self) -> Header:
        return _without_none({
            "op": self.op, "program": self.program.to_wire(), "program_name": self.program_name,
            "args": list(self.args), "env": dict(self.env), "timeout": self.timeout, "memory": self.memory,
            "max_input": self.max_input, "inputs": [i.to_wire() for i in self.inputs],
            "outputs": [o.to_wire() for o in self.outputs], "images": [i.to_wire() for i in self.images],
            "char": list(self.char) or None})

    @classmethod
    def from_wire(cls, header: Mapping[str, Any]) -> RunRequest:
        obj = WireObject(dict(header), "request", required=("op", "program"), optional=cls.FIELDS | FRAMING)
        if obj.raw["op"] != cls.op:
            raise ProtocolError(f"request.op must be {cls.op!r}")
        payloads = len(payload_lengths(header))
        return cls(
            program=ProgramSource.from_wire(obj.raw["program"], payloads),
            program_name=obj.optional_text("program_name"),
            args=obj.texts("args"),
            env=obj.text_map("env"),
            timeout=obj.optional_integer("timeout", minimum=0, maximum=MAX_TIMEOUT),
            memory=obj.optional_integer("memory", minimum=0),
            max_input=obj.optional_integer("max_input", minimum=0),
            inputs=tuple(InputChannel.from_wire(i, payloads) for i in obj.objects("inputs")),
            outputs=tuple(OutputChannel.from_wire(o) for o in obj.objects("outputs")),
            images=tuple(ExtraImage.from_wire(i, payloads) for i in obj.objects("images")),
            char=obj.texts("char"))


@dataclass(frozen=True)
class PingRequest:
    """Asks the daemon how it is (DaemonStatus)."""

    op: ClassVar[str] = "ping"

    def to_wire(self) -> Header:
        return {"op": self.op}


def parse_request(header: Mapping[str, Any]) -> RunRequest | PingRequest:
    op = header.get("op")
    if op == PingRequest.op:
        WireObject(dict(header), "ping", required=("op",), optional=FRAMING)
        return PingRequest()
    if op == RunRequest.op:
        return RunRequest.from_wire(header)
    raise ProtocolError(f"unknown op {op!r:.40}")


@dataclass(frozen=True)
class JobReport:
    """How one node's run went (zerolab.sandbox.status has the exit codes)."""

    exit_code: int
    exit_state: str
    user_rc: int
    validator: int
    etag: str
    elapsed: float
    cdr: str        # ZeroVM's accounting line (status.accounting_line)

    FIELDS: ClassVar[tuple[str, ...]] = ("exit_code", "exit_state", "user_rc", "validator", "etag",
                                         "elapsed", "cdr")

    def to_wire(self) -> Header:
        return {"exit_code": self.exit_code, "exit_state": self.exit_state, "user_rc": self.user_rc,
                "validator": self.validator, "etag": self.etag, "elapsed": self.elapsed, "cdr": self.cdr}

    @classmethod
    def from_wire(cls, raw: object) -> JobReport:
        obj = WireObject(raw, "report", required=cls.FIELDS)
        return cls(exit_code=obj.integer("exit_code"), exit_state=obj.text("exit_state"),
                   user_rc=obj.integer("user_rc"), validator=obj.integer("validator"), etag=obj.text("etag"),
                   elapsed=obj.number("elapsed"), cdr=obj.text("cdr"))


@dataclass(frozen=True)
class RunReply:
    """A node ran (or was stopped): its report, the aliases of the outputs
    whose bytes follow as the payloads, in that order, and each one's MD5
    (hex; "" or none at all: not known), so that the proxy need not hash
    what it answers with (its Etag)."""

    report: JobReport
    outputs: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()

    status: ClassVar[str] = "ok"

    def to_wire(self) -> Header:
        wire: Header = {"status": self.status, "report": self.report.to_wire(), "outputs": list(self.outputs)}
        if self.digests:
            wire["digests"] = list(self.digests)
        return wire

    @classmethod
    def from_wire(cls, header: Mapping[str, Any]) -> RunReply:
        obj = WireObject(dict(header), "reply", required=("status", "report"),
                         optional={"outputs", "digests"} | FRAMING)
        if obj.raw["status"] != cls.status:
            raise ProtocolError(f"reply.status must be {cls.status!r}")
        reply = cls(JobReport.from_wire(obj.raw["report"]), obj.texts("outputs"), obj.texts("digests"))
        if len(reply.outputs) != len(payload_lengths(header)):
            raise ProtocolError(f"reply names {len(reply.outputs)} outputs but carries "
                                f"{len(payload_lengths(header))} payloads")
        if reply.digests and (len(reply.digests) != len(reply.outputs)
                              or not all(MD5_HEX.fullmatch(d) for d in reply.digests)):
            raise ProtocolError("reply.digests must be one MD5 (32 hex digits, or \"\") per output")
        return reply


@dataclass(frozen=True)
class Refusal:
    """A request that was not run: "busy" (try another node later) or "bad-request"."""

    status: Literal["busy", "bad-request"]
    reason: str

    def to_wire(self) -> Header:
        return {"status": self.status, "reason": self.reason}

    @classmethod
    def from_wire(cls, header: Mapping[str, Any]) -> Refusal:
        obj = WireObject(dict(header), "reply", required=("status", "reason"), optional=FRAMING)
        status = obj.raw["status"]
        if status == "busy":
            return cls("busy", obj.text("reason"))
        if status == "bad-request":
            return cls("bad-request", obj.text("reason"))
        raise ProtocolError(f"reply.status {status!r:.40} is not a refusal")


@dataclass(frozen=True)
class Streaming:
    """A worker took a request with streams: frames follow (protocol above)."""

    status: ClassVar[str] = "streaming"

    def to_wire(self) -> Header:
        return {"status": self.status}

    @classmethod
    def from_wire(cls, header: Mapping[str, Any]) -> Streaming:
        WireObject(dict(header), "reply", required=("status",), optional=FRAMING)
        if payload_lengths(header):
            raise ProtocolError("a streaming reply's first header carries no payloads")
        return cls()


def parse_reply(header: Mapping[str, Any]) -> RunReply | Refusal | Streaming:
    if header.get("status") == RunReply.status:
        return RunReply.from_wire(header)
    if header.get("status") == Streaming.status:
        return Streaming.from_wire(header)
    if header.get("status") in ("busy", "bad-request"):
        return Refusal.from_wire(header)
    raise ProtocolError(f"unknown reply status {header.get('status')!r:.40}")


@dataclass(frozen=True)
class DaemonStatus:
    """The daemon's answer to a ping."""

    jobs: int
    sysimages: tuple[str, ...]
    workers: int
    workers_idle: int
    workers_lost: int
    workers_started: int

    status: ClassVar[str] = "ok"

    def to_wire(self) -> Header:
        return {"status": self.status, "jobs": self.jobs, "sysimages": list(self.sysimages),
                "workers": self.workers, "workers_idle": self.workers_idle,
                "workers_lost": self.workers_lost, "workers_started": self.workers_started}


@dataclass(frozen=True)
class WorkerReady:
    """A worker's first message to the daemon: warm, and which process it is."""

    pid: int

    status: ClassVar[str] = "ready"

    def to_wire(self) -> Header:
        return {"status": self.status, "pid": self.pid}

    @classmethod
    def from_wire(cls, header: Mapping[str, Any]) -> WorkerReady:
        obj = WireObject(dict(header), "hello", required=("status", "pid"), optional=FRAMING)
        if obj.raw["status"] != cls.status:
            raise ProtocolError(f"hello.status must be {cls.status!r}")
        return cls(obj.integer("pid"))
