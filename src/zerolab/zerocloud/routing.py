"""Where the proxy filter sends an instance, and the EXECUTE that sends it.

An instance that reads an object where it is stored goes to the object
servers that hold its replicas (the object ring of its container's storage
policy), in the order Swift's proxy reads them (its sorting_method: shuffled
by default); ObjectServerClient sends it to one and the proxy tries the next
when one is down, has no copy or no free slot.  An instance without
such an input goes to up to three object servers picked at random, as
ZeroCloud did.

The reply to an EXECUTE (protocol.py's message) is read as it streams in:
its header, then each output copied into the instance's Spool (response.py)
a piece at a time, each piece counted against the job's output budget
before the next is read.  Payloads carried by a request (programs, inputs,
the outputs of the nodes that connect to it) are sent the same way.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventlet import Timeout
from swift.common.bufferedhttp import http_connect
from swift.common.exceptions import ConnectionTimeout
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request
from swift.proxy.controllers.base import get_container_info

from . import job as jobs
from . import protocol
from .job import JobError
from .objectquery import EXECUTE, LOCAL_ALIAS_HEADER
from .proxy_config import ProxyConfig
from .response import Segment, Spool, one_line
from .subrequests import wsgi_str

# An object server's reply is read in pieces of this size, each counted
# against the job's output budget before the next is read; payloads sent
# from a spool go in pieces of this size too.  64 KiB, like Swift's chunks:
# larger buffers are fresh mappings, and their page faults cost more than
# the extra reads.
REPLY_PIECE = 64 << 10
# What is read of an error's body for its one-line reason.
ERROR_BODY = 1000
# A device of the ring: "ip", "port", "device" and more, as Swift's rings give them.
RingNode = Mapping[str, Any]
# Shuffles the replicas where no Swift proxy application orders them.
REPLICA_SHUFFLE = random.Random()


@dataclass(frozen=True)
class Route:
    """The object servers that may run one instance, in the order to try them,
    and what the EXECUTE to each says."""

    partition: int
    nodes: list[RingNode]
    path: str                                   # /account[/container/object]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SpooledReply:
    """A reply read into a spool: its header, each payload where it lies,
    and how much of the job's output budget it took."""

    header: protocol.Header
    payloads: list[Segment]
    spool: Spool
    taken: int


@dataclass(frozen=True)
class OpenReply:
    """A 200 reply read up to the end of its header: its payloads (of
    ``lengths``, within the job's output budget) still to come on ``resp``;
    the header took ``taken`` bytes of that budget."""

    header: protocol.Header
    lengths: list[int]
    resp: Any
    conn: Any
    taken: int

    def close(self) -> None:
        for connection in (self.resp, self.conn):
            try:
                connection.close()
            except OSError:
                pass


@dataclass(frozen=True)
class Answer:
    """An object server's answer to one EXECUTE: a 200 carries the reply
    (spooled, or its bytes when no spool was asked for) and the co-location
    code, anything else a one-line reason.  ``final``: another replica would
    do no better (the reply was not a message)."""

    status: int
    reason: str = ""
    body: bytes = b""
    colocated: str = "0"
    reply: SpooledReply | None = None
    final: bool = False
    started: Started | None = None
    opened: OpenReply | None = None


@dataclass(frozen=True)
class Started:
    """An instance with streams that an object server took: its reply read
    up to the Streaming header, its stream frames and final reply still to
    come (ObjectServerClient.finish), and, for one with stream inputs, the
    socket its request goes on through in chunks."""

    node: RingNode
    conn: Any
    sock: Any
    resp: Any
    colocated: str


# A payload of a request: bytes held here, or an output in a spool.
Piece = bytes | Segment


class ReplicaRouter:
    def __init__(self, app: object, config: ProxyConfig):
        self.app = app
        self.config = config
        # Swift's proxy application, at the end of the pipeline: it orders
        # replicas for reads as its operator configured (sorting_method).
        self.proxy_app: Any = app
        while not hasattr(self.proxy_app, "sort_nodes") and hasattr(self.proxy_app, "app"):
            self.proxy_app = self.proxy_app.app

    def replica_order(self, nodes: list[RingNode], policy: Any) -> list[RingNode]:
        """The replicas in the order to try them.  Not ring order: a ring
        gives the first replica of most partitions to a few devices (a fresh
        3-host lab ring sent all of a 24-object MapReduce to one host)."""
        if hasattr(self.proxy_app, "sort_nodes"):
            return list(self.proxy_app.sort_nodes(list(nodes), policy=policy))
        shuffled = list(nodes)
        REPLICA_SHUFFLE.shuffle(shuffled)
        return shuffled

    def route(self, req: Request, local: jobs.Device | None, account: str) -> Route:
        if local is not None and local.path is not None:
            path = local.path
            # The container's storage policy picks the object ring.
            env = dict(req.environ, PATH_INFO=wsgi_str(f"/v1/{path.account}/{path.container}"))
            info = get_container_info(env, self.app, swift_source="ZC")
            policy_index = int(info.get("storage_policy") or 0)
            ring = POLICIES.get_object_ring(policy_index, self.config.swift_dir)
            partition, nodes = ring.get_nodes(path.account, path.container, path.obj)
            nodes = self.replica_order(nodes, POLICIES.get_by_index(policy_index))
            return Route(partition, nodes, "/" + "/".join((path.account, path.container, path.obj)),
                         self.headers(req, policy_index, {LOCAL_ALIAS_HEADER: local.alias}))
        # No input object: any object server will do (ZeroCloud picked one at random).
        policy_index = int(POLICIES.default.idx)
        ring = POLICIES.get_object_ring(policy_index, self.config.swift_dir)
        nodes = [d for d in ring.devs if d]
        random.shuffle(nodes)
        return Route(0, nodes[:3], "/" + account, self.headers(req, policy_index, {}))

    @staticmethod
    def headers(req: Request, policy_index: int, extra: dict[str, str]) -> dict[str, str]:
        return dict(extra, **{"X-Backend-Storage-Policy-Index": str(policy_index),
                              "X-Trans-Id": req.environ.get("swift.trans_id", "")})


def read_reply(resp: Any, budget: jobs.Budget) -> bytes:
    """An object server's reply, whole, each piece counted against the job's
    output budget as it arrives (JobError 413 when it runs out)."""
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > budget.remaining:
        raise JobError(413, budget.reason)
    data = jobs.collect(iter(lambda: resp.read(REPLY_PIECE), b""), budget.limit, budget)
    if data is None:
        raise JobError(413, budget.reason)
    return data


class BudgetedReader:
    """Reads a reply, taking every byte from the job's output budget."""

    def __init__(self, resp: Any, budget: jobs.Budget):
        self.resp = resp
        self.budget = budget
        self.taken = 0

    def read(self, n: int) -> bytes:
        data: bytes = self.resp.read(n)
        self.budget.take(len(data))
        self.taken += len(data)
        return data

    def exact(self, n: int) -> bytes:
        pieces = []
        while n > 0:
            piece = self.read(min(n, REPLY_PIECE))
            if not piece:
                raise protocol.ProtocolError("connection closed in the middle of a message")
            pieces.append(piece)
            n -= len(piece)
        return b"".join(pieces)


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP body (b"": the body's end)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def send_pieces(conn: Any, pieces: Sequence[Piece], chunked: bool) -> Any:
    """An EXECUTE's body, its pieces in turn (each as a chunk when
    ``chunked``: the body goes on after them) -> the server's response."""
    for piece in pieces:
        for part in [piece] if isinstance(piece, bytes) else piece.pieces(REPLY_PIECE):
            conn.send(chunk(part) if chunked else part)
    return conn.getresponse()


def refused(resp: Any) -> Answer:
    """An object server's answer other than 200: its status and the first line or so of its body."""
    return Answer(resp.status, one_line(resp.read(ERROR_BODY).decode("utf-8", "replace")))


def read_exact(resp: Any, n: int) -> bytes:
    data: bytes = resp.read(n)
    if len(data) != n:
        raise protocol.ProtocolError("connection closed in the middle of a message")
    return data


def spool_reply(resp: Any, budget: jobs.Budget, spool: Spool) -> SpooledReply:
    """An object server's reply read into ``spool`` as it streams in, each
    piece counted against the job's output budget (JobError 413 when it runs
    out; protocol.ProtocolError when it is not one whole message).  On any
    error what was taken is given back and the spool is closed."""
    reader = BudgetedReader(resp, budget)
    try:
        header, lengths = read_reply_header(resp, reader, budget)
    except BaseException:
        budget.give_back(reader.taken)
        spool.close()
        raise
    return spool_payloads(reader, header, lengths, budget, spool)


def read_reply_header(resp: Any, reader: BudgetedReader, budget: jobs.Budget) -> tuple[protocol.Header, list[int]]:
    """A reply's header and its payloads' lengths, which must fit in the budget."""
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > budget.remaining:
        raise JobError(413, budget.reason)
    (size,) = struct.unpack("!I", reader.exact(4))
    if size > protocol.MAX_HEADER:
        raise protocol.ProtocolError(f"header of {size} bytes is too large")
    header = protocol.parse_header(reader.exact(size))
    lengths = protocol.payload_lengths(header)
    if sum(lengths) > budget.remaining:
        raise JobError(413, budget.reason)
    return header, lengths


def spool_payloads(reader: BudgetedReader, header: protocol.Header, lengths: list[int], budget: jobs.Budget,
                   spool: Spool) -> SpooledReply:
    """The rest of a reply, its header read, copied into ``spool``; on any
    error what was taken is given back and the spool is closed."""
    try:
        payloads = []
        for n in lengths:
            start = spool.size
            while spool.size - start < n:
                piece = reader.read(min(REPLY_PIECE, n - (spool.size - start)))
                if not piece:
                    raise protocol.ProtocolError("message length does not match its header")
                spool.append(piece)
            payloads.append(Segment(spool, start, n))
        if reader.read(1):
            raise protocol.ProtocolError("message length does not match its header")
    except BaseException:
        budget.give_back(reader.taken)
        spool.close()
        raise
    return SpooledReply(header, payloads, spool, reader.taken)


class StreamedReply:
    """The answer's body read straight from an opened reply: of its
    payloads, those ``kept`` are passed on a piece at a time, the others
    read and dropped; every byte is taken from the job's output budget.
    Closing it (the WSGI server does) hangs up on the object server."""

    def __init__(self, opened: OpenReply, kept: Sequence[bool], budget: jobs.Budget, timeout: float):
        self.opened = opened
        self.kept = list(kept)
        self.reader = BudgetedReader(opened.resp, budget)
        self.timeout = timeout

    def __iter__(self) -> Iterator[bytes]:
        try:
            for n, keep in zip(self.opened.lengths, self.kept):
                while n > 0:
                    with Timeout(self.timeout):
                        piece = self.reader.read(min(REPLY_PIECE, n))
                    if not piece:
                        raise protocol.ProtocolError("message length does not match its header")
                    n -= len(piece)
                    if keep:
                        yield piece
        finally:
            self.close()

    def close(self) -> None:
        self.opened.close()


def failed(e: BaseException, node: RingNode) -> Answer:
    """What an EXECUTE that raised answers: the job's limit (JobError), a
    reply that was not a message (no other replica would do better), or the
    object server's failure."""
    if isinstance(e, JobError):
        return Answer(e.status, e.reason)
    if isinstance(e, protocol.ProtocolError):
        return Answer(503, f"bad reply from {node['ip']}: {e}", final=True)
    return Answer(503, f"object server {node['ip']}:{node['port']}/{node['device']} failed: {e}")


class ObjectServerClient:
    def __init__(self, config: ProxyConfig):
        self.config = config

    def send(self, node: RingNode, partition: int, path: str, headers: Mapping[str, str],
             pieces: Sequence[Piece], outputs: jobs.Budget, spool: Callable[[], Spool] | None = None) -> Answer:
        """One EXECUTE to one object server.

        A 200's reply is taken from the job's output budget as it is read
        (413 when it runs out): into a spool that ``spool`` makes (the
        answer's ``reply``), or without one whole into ``body``.  Another
        status is the first line or so of its body, nothing taken."""
        try:
            conn = self.connect(node, partition, path, headers)
            with Timeout(self.config.timeout + 30):
                resp = send_pieces(conn, pieces, chunked=False)
                if resp.status != 200:
                    return refused(resp)
                colocated = resp.getheader("X-Nexe-Colocated") or "0"
                if spool is None:
                    return Answer(200, "", read_reply(resp, outputs), colocated)
                return Answer(200, "", colocated=colocated, reply=spool_reply(resp, outputs, spool()))
        except (Exception, Timeout) as e:
            return failed(e, node)

    def open_reply(self, node: RingNode, partition: int, path: str, headers: Mapping[str, str],
                   pieces: Sequence[Piece], outputs: jobs.Budget) -> Answer:
        """One EXECUTE to one object server, its 200's reply read up to its
        payloads (the answer's ``opened``: checked against the job's output
        budget, not yet taken from it), for its caller to stream or spool.
        Another status is the first line or so of its body."""
        conn = None
        try:
            conn = self.connect(node, partition, path, headers)
            with Timeout(self.config.timeout + 30):
                resp = send_pieces(conn, pieces, chunked=False)
                if resp.status != 200:
                    answer = refused(resp)
                    conn.close()
                    return answer
                reader = BudgetedReader(resp, outputs)
                try:
                    header, lengths = read_reply_header(resp, reader, outputs)
                except BaseException:
                    outputs.give_back(reader.taken)
                    raise
            colocated = resp.getheader("X-Nexe-Colocated") or "0"
            return Answer(200, colocated=colocated, opened=OpenReply(header, lengths, resp, conn, reader.taken))
        except (Exception, Timeout) as e:
            if conn is not None:
                conn.close()
            return failed(e, node)

    def spool_opened(self, opened: OpenReply, node: RingNode, colocated: str, outputs: jobs.Budget,
                     spool: Spool) -> Answer:
        """The rest of an opened reply, spooled as send's."""
        try:
            reader = BudgetedReader(opened.resp, outputs)
            reader.taken = opened.taken   # given back with the rest on an error
            with Timeout(self.config.timeout + 30):
                reply = spool_payloads(reader, opened.header, opened.lengths, outputs, spool)
            return Answer(200, colocated=colocated, reply=reply)
        except (Exception, Timeout) as e:
            return failed(e, node)
        finally:
            opened.close()

    def start(self, node: RingNode, partition: int, path: str, headers: Mapping[str, str],
              pieces: Sequence[Piece], chunked: bool) -> Answer:
        """An EXECUTE of an instance with streams, up to the moment the object
        server's executor took it (its Streaming header): then ``started``
        holds what ObjectServerClient.finish reads.  With ``chunked`` (it has
        stream inputs) the request goes in chunks, its streams' frames after
        these pieces, and its body ends only when they have.  Another status
        is the first line or so of its body."""
        where = f"{node['ip']}:{node['port']}/{node['device']}"
        conn = None
        try:
            conn = self.connect(node, partition, path, headers)
            # Kept here: http.client may let go of it once the response began.
            sock = conn.sock
            with Timeout(self.config.timeout + 30):
                resp = send_pieces(conn, pieces, chunked)
                if resp.status != 200:
                    answer = refused(resp)
                    conn.close()
                    return answer
                (size,) = struct.unpack("!I", read_exact(resp, 4))
                if size > protocol.MAX_HEADER:
                    raise protocol.ProtocolError(f"header of {size} bytes is too large")
                reply = protocol.parse_reply(protocol.parse_header(read_exact(resp, size)))
                if not isinstance(reply, protocol.Streaming):
                    raise protocol.ProtocolError(f"a request with streams was answered {reply.status!r}")
            colocated = resp.getheader("X-Nexe-Colocated") or "0"
            return Answer(200, started=Started(node, conn, sock, resp, colocated))
        except (Exception, Timeout) as e:
            if conn is not None:
                conn.close()
            if isinstance(e, protocol.ProtocolError):
                return Answer(503, f"bad reply from {node['ip']}: {e}", final=True)
            return Answer(503, f"object server {where} failed: {e}")

    def connect(self, node: RingNode, partition: int, path: str, headers: Mapping[str, str]) -> Any:
        """An EXECUTE's connection to one object server, its headers sent."""
        with ConnectionTimeout(self.config.conn_timeout):
            return http_connect(node["ip"], node["port"], node["device"], partition, EXECUTE,
                                path, headers=dict(headers))

    def abandon(self, started: Started) -> None:
        """Hangs up on a started instance: its streams break off, and its
        node ends on its own (a stream input cut short fails it; a stream
        output nobody reads holds it at most to its deadline)."""
        for connection in (started.resp, started.conn, started.sock):
            try:
                connection.close()
            except OSError:
                pass

    def finish(self, started: Started, outputs: jobs.Budget, spool: Callable[[], Spool],
               on_frame: Callable[[int, bytes], None]) -> Answer:
        """The rest of a started instance's reply: each frame of its stream
        outputs handed to ``on_frame`` (number, data; b"" ends a stream) as
        it comes, then its reply, spooled as send's."""
        try:
            with Timeout(self.config.timeout + 30):
                while True:
                    number, length = protocol.parse_frame_header(
                        read_exact(started.resp, protocol.STREAM_FRAME.size))
                    if number == protocol.END_OF_STREAMS:
                        break
                    on_frame(number, read_exact(started.resp, length) if length else b"")
                reply = spool_reply(started.resp, outputs, spool())
            return Answer(200, colocated=started.colocated, reply=reply)
        except (Exception, Timeout) as e:
            return failed(e, started.node)
        finally:
            started.conn.close()
