"""The executor daemon's protocol: one request, one reply, per unix-socket connection.

A message is a 4-byte big-endian length, that many bytes of JSON (the
header), then the raw payloads whose lengths the header lists under
``"payloads"``.  A request may carry open file descriptors (SCM_RIGHTS) with
its first bytes: the object server opens the object's data file and hands
the descriptor over, so the daemon reads exactly that file even if the
object is overwritten meanwhile.

Request (object server -> daemon)::

    {"op": "run",
     "program": {"image": "python", "path": "bin/python"} | {"payload": 0},
     "args": [...], "env": {...}, "timeout": 10, "memory": 268435456,
     "inputs": [{"alias": "/dev/stdin", "fd": 0} | {"alias": "/script", "payload": 1}],
     "outputs": [{"alias": "/dev/stdout", "limit": 104857600}, ...],
     "images": [{"payload": 2}],
     "payloads": [len0, len1, ...]}

Reply::

    {"status": "ok", "report": {...}, "outputs": ["/dev/stdout", ...], "payloads": [...]}
    {"status": "busy" | "bad-request", "reason": "..."}

Used by objectquery.py (in Swift's eventlet python) and executord.py.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct

MAX_HEADER = 1 << 20
RELAY_PIECE = 1 << 20


class ProtocolError(Exception):
    pass


class DestinationError(Exception):
    """Relaying failed on the receiving side (the source is fine)."""


def encode(header: dict, payloads: list[bytes] = ()) -> bytes:
    header = dict(header, payloads=[len(p) for p in payloads])
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("!I", len(head)) + head


def send(sock: socket.socket, header: dict, payloads: list[bytes] = (), fds: list[int] = ()) -> None:
    send_header(sock, dict(header, payloads=[len(p) for p in payloads]), fds)
    for p in payloads:
        if p:
            sock.sendall(p)


def frame_header(header: dict) -> bytes:
    """A header as it goes on the wire: its length, then its JSON."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("!I", len(head)) + head


def parse_header(raw: bytes) -> dict:
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


def send_header(sock: socket.socket, header: dict, fds: list[int] = ()) -> None:
    """The header alone, whose "payloads" already lists what will follow."""
    first = frame_header(header)
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

    def _fill(self, want_fds: bool, want: int = 0) -> None:
        if want_fds:
            fds = array.array("i")
            data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - (len(payload) % fds.itemsize)])
            self.fds.extend(fds)
        else:
            # Sized to what is wanted: a 1 MiB receive buffer for a 4-byte
            # header costs more than the read itself.
            data = self.sock.recv(min(max(want, 1 << 16), RELAY_PIECE))
        if not data:
            raise ProtocolError("connection closed in the middle of a message")
        self.buf += data

    def exact(self, n: int, want_fds: bool = False) -> bytes:
        while len(self.buf) < n:
            self._fill(want_fds, n - len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def header(self, want_fds: bool = False, max_payload: int | None = None) -> dict:
        """The header alone (payloads not read yet), its payload lengths checked."""
        (size,) = struct.unpack("!I", self.exact(4, want_fds))
        if size > MAX_HEADER:
            raise ProtocolError(f"header of {size} bytes is too large")
        header = parse_header(self.exact(size, want_fds))
        lengths = header.get("payloads", [])
        if max_payload is not None and sum(lengths) > max_payload:
            raise ProtocolError(f"payloads of {sum(lengths)} bytes are more than the limit of {max_payload}")
        return header

    def message(self, want_fds: bool = False, max_payload: int | None = None) -> tuple[dict, list[bytes]]:
        header = self.header(want_fds, max_payload)
        return header, [self.exact(n) for n in header.get("payloads", [])]

    def relay(self, n: int, dest: socket.socket) -> None:
        """Copies the next n bytes to ``dest`` in bounded pieces (the executor
        daemon passes payloads through without holding them whole)."""
        while n > 0:
            if not self.buf:
                try:
                    self._fill(False, n)
                except OSError as e:   # the source side failed (a timeout included)
                    raise ProtocolError(f"reading: {e}") from None
            piece = bytes(self.buf[:min(n, RELAY_PIECE)])
            del self.buf[:len(piece)]
            try:
                dest.sendall(piece)
            except OSError as e:
                raise DestinationError(str(e)) from None
            n -= len(piece)


def close_all(fds: list[int]) -> None:
    """Closes descriptors passed with a message (each once; a closed one is no error)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def decode(data: bytes) -> tuple[dict, list[bytes]]:
    """A whole message held in memory (the object server's HTTP reply body)."""
    if len(data) < 4:
        raise ProtocolError("short message")
    (size,) = struct.unpack("!I", data[:4])
    try:
        header = json.loads(data[4:4 + size])
    except ValueError:
        raise ProtocolError("header is not JSON") from None
    pos = 4 + size
    payloads = []
    for n in header.get("payloads", []):
        payloads.append(data[pos:pos + n])
        pos += n
    if pos != len(data):
        raise ProtocolError("message length does not match its header")
    return header, payloads


def pack(header: dict, payloads: list[bytes] = ()) -> bytes:
    return encode(header, payloads) + b"".join(payloads)
