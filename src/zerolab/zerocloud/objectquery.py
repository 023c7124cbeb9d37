"""The object-server half of zerocloud: run one job node next to its data.

The proxy half (proxy.py) sends ``EXECUTE /<device>/<partition>/<account>
[/<container>/<object>]`` straight to an object server that holds a replica
of the node's input.  A method of its own, not POST: an object server without
this filter answers 405 instead of mistaking a job for a metadata update.

The body is the executor request (protocol.py) without its descriptor; this
filter opens the object's data file on this device, caps the job's limits
with its own configuration, hands both to the node's executor daemon over
its unix socket and returns the daemon's reply.  A request with streams
(connect's data, while the node runs) comes in chunks: what follows its
payloads is copied to the daemon as it arrives, beside the reply, which is
passed on as it comes (chunked, each piece at once) from its first header.  Replies: 200 with the report
and outputs, and ``X-Nexe-Colocated: <node>/<device>`` when the job read its
object here (zerovm_node_name: the storage host's inventory name); 404 when this device has no copy (the proxy tries another
replica); 409 for objects stored encrypted; 413 for an input over
zerovm_maxinput; 429 when the executor is busy; 503 when it is unreachable.

    [filter:zerocloud-object]
    paste.filter_factory = zerolab.zerocloud.objectquery:filter_factory
    zerovm_socket = /run/zerolab-executor/executor.sock
    zerovm_timeout = 10
    zerovm_node_name = swift-storage1
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import unquote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from eventlet import Timeout, spawn
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request, Response
from swift.common.utils import get_logger, split_path
from swift.obj.diskfile import DiskFileError, DiskFileNotExist

from . import protocol
from .http_status import status_line

EXECUTE = "EXECUTE"
LOCAL_ALIAS_HEADER = "X-Zerocloud-Local-Alias"
DEFAULTS = {
    "zerovm_socket": "/run/zerolab-executor/executor.sock",
    "zerovm_timeout": "10",
    "zerovm_maxinput": str(1 << 30),
    "zerovm_maxoutput": str(100 << 20),
    "zerovm_maxnexemem": str(256 << 20),
    # The request body (program, scripts, mapper outputs), passed to the
    # executor in pieces; the executor daemon's max_request must be as large.
    "zerovm_maxrequest": str(256 << 20),
    # How X-Nexe-Colocated names this storage node: its inventory name.
    "zerovm_node_name": socket.gethostname(),
}
# Request bodies and outputs pass through in pieces of this size (Swift's
# own network_chunk_size): buffers this small are reused from the heap, where
# 1 MiB ones were fresh mappings whose page faults cost more than the copy
# (an identity job over 1 MB: about 0.5 ms in this filter alone).
PIECE = 64 << 10
# How long the end of a request with streams may come after its answer's:
# the proxy ends it with the last stream, before the node can finish.
BODY_END_WAIT = 10


class BinaryStream(Protocol):
    """The request body as WSGI gives it (wsgi.input)."""

    def read(self, size: int = -1, /) -> bytes: ...


# What the daemon answered to a job it runs: its reply (or Streaming), the
# lengths of the outputs that follow, what reads them, the executor's
# socket, and the copier of the request's streams (None: it has none).
ExecutorAnswer = tuple[protocol.RunReply | protocol.Streaming, list[int], protocol.Reader, socket.socket, Any]


def text(status: int, reason: str) -> Response:
    return Response(status=status_line(status), body=(reason.rstrip("\n") + "\n").encode(),
                    content_type="text/plain")


class ObjectQueryMiddleware:
    def __init__(self, app: WSGIApplication, conf: Mapping[str, str]):
        self.app = app
        conf = dict(DEFAULTS, **conf)
        self.logger = get_logger(conf, log_route="zerocloud-object")
        self.socket_path = conf["zerovm_socket"]
        self.timeout = int(conf["zerovm_timeout"])
        self.max_input = int(conf["zerovm_maxinput"])
        self.max_output = int(conf["zerovm_maxoutput"])
        self.max_memory = int(conf["zerovm_maxnexemem"])
        self.max_request = int(conf["zerovm_maxrequest"])
        self.node_name = conf["zerovm_node_name"]
        # The object server's own app, which knows its devices and DiskFiles
        # (Swift's, untyped: found by the method it has).
        self.controller: Any = app
        while not hasattr(self.controller, "get_diskfile") and hasattr(self.controller, "app"):
            self.controller = self.controller.app

    def __call__(self, env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if env.get("REQUEST_METHOD") != EXECUTE:
            return self.app(env, start_response)
        req = Request(env)
        try:
            resp = self.execute(req)
        except Exception as e:  # one line in the log and to the proxy, never a traceback to a client
            self.logger.exception("zerocloud: job failed")
            resp = text(500, f"object server failed to run the job: {type(e).__name__}: {e}")
        answer: Iterable[bytes] = resp(env, start_response)   # swob's Response is untyped
        return answer

    def execute(self, req: Request) -> Response:
        try:
            # As the object server itself does: names arrive quoted.
            device, partition, account, container, obj = split_path(unquote(req.path), 3, 5, True)
        except ValueError:
            return text(400, f"bad EXECUTE path {req.path}")
        length = req.content_length
        chunked = "chunked" in req.headers.get("Transfer-Encoding", "").lower()
        if length is None and not chunked:
            return text(411, "a job request needs a Content-Length (or chunks, when it has streams)")
        if length is not None and length > self.max_request:
            return text(413, f"job request of {length} bytes is more than zerovm_maxrequest ({self.max_request})")
        body = req.environ["wsgi.input"]
        try:
            header, streams = read_header(body, length, self.max_request)
            request = protocol.RunRequest.from_wire(header)
        except protocol.ProtocolError as e:
            return text(400, f"malformed job request: {e}")
        if length is None and not request.stream_inputs:
            return text(411, "only a job request with stream inputs may come in chunks")
        if any(i.fd is not None for i in request.inputs):
            return text(400, "malformed job request: only this server passes descriptors; "
                             "inputs from the proxy name payloads")
        lengths = protocol.payload_lengths(header)
        request = self.capped(request)

        fds = []
        colocated = "0"
        local_alias = req.headers.get(LOCAL_ALIAS_HEADER)
        if local_alias:
            if not obj:
                return text(400, "a local input needs an object path")
            opened = self.open_object(req, device, partition, account, container, obj)
            if isinstance(opened, Response):
                return opened
            fds.append(opened)
            request = replace(request, inputs=(protocol.InputChannel(local_alias, fd=0),) + request.inputs)
            # Where the job ran next to its object: this host and device.
            colocated = f"{self.node_name}/{device}"
        try:
            answer = self.call_executor(request, lengths, body, fds, streams)
        finally:
            for fd in fds:
                os.close(fd)
        if isinstance(answer, Response):
            return answer
        reply, output_lengths, reader, sock, copier = answer
        if isinstance(reply, protocol.Streaming):
            # Frames go on as the node writes them: no length, and each piece
            # sent at once rather than gathered to eventlet's 4 KiB.
            req.environ["eventlet.minimum_write_chunk_size"] = 0
            resp = Response(status=200, app_iter=relay(reader.frame, reader, sock, copier),
                            content_type="application/octet-stream")
            resp.headers["X-Nexe-Colocated"] = colocated
            return resp
        head = protocol.frame_header(dict(reply.to_wire(), payloads=output_lengths))
        resp = Response(status=200, app_iter=stream_reply(head, reader, sock, output_lengths, self.logger),
                        content_type="application/octet-stream")
        resp.content_length = len(head) + sum(output_lengths)
        resp.headers["X-Nexe-Colocated"] = colocated
        return resp

    def open_object(self, req: Request, device: str, partition: str, account: str, container: str,
                    obj: str) -> int | Response:
        """-> an open descriptor of the object's data file, or an error Response."""
        try:
            policy = POLICIES.get_by_index(int(req.headers.get("X-Backend-Storage-Policy-Index", 0)))
        except ValueError:
            policy = None
        if policy is None:
            return text(400, "unknown storage policy")
        try:
            df = self.controller.get_diskfile(device, partition, account, container, obj,
                                              policy=policy)
        except DiskFileError as e:   # device not mounted (DiskFileDeviceUnavailable) and friends
            return text(507, f"device {device} unavailable: {e}")
        try:
            with df.open():
                meta = df.get_metadata()
                if any(k.lower().startswith("x-object-sysmeta-crypto-") for k in meta):
                    return text(409, f"/{account}/{container}/{obj} is stored encrypted; "
                                     f"jobs read data files and need the encryption filter off")
                size = int(meta.get("Content-Length", 0))
                if size > self.max_input:
                    return text(413, f"/{account}/{container}/{obj} is {size} bytes, more than "
                                     f"zerovm_maxinput ({self.max_input})")
                return os.open(df._data_file, os.O_RDONLY | os.O_CLOEXEC)
        except DiskFileNotExist:
            return text(404, f"/{account}/{container}/{obj} is not on device {device}")

    def capped(self, request: protocol.RunRequest) -> protocol.RunRequest:
        """The request with this node's limits, which win over whatever it asks for."""
        return replace(
            request,
            timeout=min(request.timeout or self.timeout, self.timeout),
            memory=min(request.memory or self.max_memory, self.max_memory),
            max_input=self.max_input,
            outputs=tuple(replace(out, limit=min(out.limit if out.limit is not None else self.max_output,
                                                 self.max_output))
                          for out in request.outputs))

    def call_executor(self, request: protocol.RunRequest, lengths: list[int], body: BinaryStream,
                      fds: list[int], streams: int = 0) -> Response | ExecutorAnswer:
        """Sends the job, its payloads copied from ``body`` in pieces (then,
        beside the reply, up to ``streams`` bytes of its streams), and reads
        the reply's header -> (reply, output lengths, reader, socket) with the
        outputs still to read, or an error Response."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The daemon enforces the job's own timeout; this one only catches a hung daemon.
        sock.settimeout((request.timeout or self.timeout) + 30)
        try:
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            return text(503, f"executor not reachable at {self.socket_path}: {e.strerror or e}")
        copier = None
        try:
            protocol.send_header(sock, dict(request.to_wire(), payloads=lengths), fds)
            try:
                copy(body, sock, sum(lengths))
            except OSError:
                pass   # the daemon may have refused the job (busy) without reading it: its reply says
            if request.stream_inputs:
                copier = spawn(self.copy_streams, body, sock, streams)
            reader = protocol.Reader(sock)
            header = reader.header()
            reply = protocol.parse_reply(header)
        except (OSError, protocol.ProtocolError) as e:
            stop(copier, sock)
            return text(503, f"executor failed: {e}")
        if isinstance(reply, protocol.Refusal):
            stop(copier, sock)
            if reply.status == "busy":
                return text(429, f"too many jobs: {reply.reason}")
            return text(400, f"executor refused the job: {reply.reason}")
        if isinstance(reply, protocol.Streaming):
            return reply, [], reader, sock, copier
        if copier is not None:
            stop(copier, sock)
            return text(503, "executor failed: a job with streams was answered without a Streaming header")
        return reply, protocol.payload_lengths(header), reader, sock, None

    def copy_streams(self, body: BinaryStream, sock: socket.socket, most: int) -> None:
        """The request's frames to the daemon one at a time, as each comes
        (read by its own length: a read of a fixed size would wait for more
        of a chunked body than a frame), up to ``most`` bytes; past that, at
        a bad frame, or when the body breaks off, the daemon's side is shut
        and the node fails on its streams' missing end."""
        try:
            while True:
                head = body.read(protocol.STREAM_FRAME.size)
                if len(head) < protocol.STREAM_FRAME.size:
                    break
                _, length = protocol.parse_frame_header(head)
                if protocol.STREAM_FRAME.size + length > most:
                    self.logger.error("zerocloud: a job's streams went over zerovm_maxrequest")
                    break
                data = read_exact(body, length)
                most -= protocol.STREAM_FRAME.size + length
                sock.sendall(head + data)
        except (OSError, ValueError, protocol.ProtocolError) as e:   # the proxy went away, or the run ended first
            self.logger.error(f"zerocloud: a job's streams stopped: {e}")
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def read_exact(stream: BinaryStream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise protocol.ProtocolError("request body ended early")
    return data


def read_header(body: BinaryStream, length: int | None, most: int) -> tuple[protocol.Header, int]:
    """The executor request's header from the body, its payloads (what
    follows) checked to make up the rest of ``length``, or (a request with
    streams: None, or room for frames after them) to fit in it; and in
    ``most`` bytes, when the body comes in chunks.  -> the header, and the
    most its streams may then bring."""
    if length is not None and length < 4:
        raise protocol.ProtocolError("short message")
    room = (length if length is not None else most) - 4
    (size,) = struct.unpack("!I", read_exact(body, 4))
    if size > protocol.MAX_HEADER or size > room:
        raise protocol.ProtocolError(f"header of {size} bytes does not fit")
    header = protocol.parse_header(read_exact(body, size))
    payloads = sum(protocol.payload_lengths(header))
    inputs = header.get("inputs", [])
    if not isinstance(inputs, list):
        raise protocol.ProtocolError("inputs must be a list")
    streams = any(isinstance(i, dict) and i.get("stream") for i in inputs)
    if payloads > room - size or (not streams and length is not None and payloads != room - size):
        raise protocol.ProtocolError("message length does not match its header")
    return header, room - size - payloads


def copy(body: BinaryStream, sock: socket.socket, n: int) -> None:
    while n > 0:
        piece = body.read(min(n, PIECE))
        if not piece:
            raise protocol.ProtocolError("request body ended early")
        sock.sendall(piece)
        n -= len(piece)


def stream_reply(head: bytes, reader: protocol.Reader, sock: socket.socket, lengths: list[int],
                 logger: Any) -> Iterator[bytes]:
    """The reply to the proxy, outputs passed on in pieces as the executor sends them.

    A reply that stops short (its worker was lost while writing it) is logged
    in one line and raised: the status and length are sent by then, and an
    error from the body is what makes the server drop the connection, so the
    proxy sees a short reply (503, "bad reply") rather than wait for the rest."""
    total, sent = sum(lengths), 0
    try:
        yield head
        for n in lengths:
            while n > 0:
                try:
                    piece = reader.exact(min(n, PIECE))
                except (OSError, protocol.ProtocolError) as e:
                    got = sent + len(reader.buf)
                    reason = f"the executor's reply stopped after {got} of {total} output bytes: {e}"
                    logger.error(f"zerocloud: {reason}")
                    raise protocol.ProtocolError(reason) from None
                n -= len(piece)
                sent += len(piece)
                yield piece
    finally:
        sock.close()


def relay(head: bytes, reader: protocol.Reader, sock: socket.socket, copier: Any) -> Iterator[bytes]:
    """A streaming reply to the proxy as the executor sends it, to its end
    (the proxy checks its frames and its last message: a reply cut short is
    a bad reply there).  The request's streams are the copier's to read to
    their end (the proxy ends the body with the last of them) before this
    answer ends: after it, eventlet reads what is left of the request itself,
    and two readers of one connection break both."""
    try:
        yield head
        if reader.buf:
            yield bytes(reader.buf)
        while True:
            piece = sock.recv(PIECE)
            if not piece:
                break
            yield piece
        if copier is not None:
            with Timeout(BODY_END_WAIT, False):
                copier.wait()
    finally:
        stop(copier, sock)


def stop(copier: Any, sock: socket.socket) -> None:
    """The executor's socket closed, and the copier of the request's streams
    stopped if it still runs."""
    if copier is not None:
        copier.kill()
    sock.close()


def filter_factory(global_conf: Mapping[str, str],
                   **local_conf: str) -> Callable[[WSGIApplication], ObjectQueryMiddleware]:
    conf = dict(global_conf, **local_conf)

    def factory(app: WSGIApplication) -> ObjectQueryMiddleware:
        return ObjectQueryMiddleware(app, conf)
    return factory
