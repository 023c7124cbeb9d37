"""The object server's zerocloud filter (objectquery.py) as a WSGI filter, in
the way Swift tests its own middleware: a fake app behind it, a fake executor
daemon on a real unix socket, real request bodies in the executor protocol."""

import io
import os
import socket
import threading

import pytest

from zerolab.zerocloud import protocol

from .conftest import FakeResponse, call

REPORT = protocol.JobReport(exit_code=0, exit_state="ok", user_rc=0, validator=0, etag="disable",
                            elapsed=0.5, cdr="0.01 0.02 1 12 1 5 0 0 0 0")


class App:
    """What sits behind the filter: answers every request it gets with 204."""

    def __init__(self):
        self.seen = []

    def __call__(self, env, start_response):
        self.seen.append(env["REQUEST_METHOD"])
        return FakeResponse(204, b"", headers={"X-Backend": "object-server"})(env, start_response)


class Daemon:
    """An executor daemon stand-in: takes one request per connection, records
    it (with the bytes of any passed descriptor) and answers with ``reply``."""

    def __init__(self, path):
        self.path = path
        self.reply = (protocol.RunReply(REPORT, ("/dev/stdout",)), [b"hello\n"])
        self.cut_after = None   # bytes of the reply sent before hanging up (a lost worker)
        self.requests = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(4)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                reader = protocol.Reader(conn)
                header, payloads = reader.message(want_fds=True)
                fd_data = [os.pread(fd, 1000, 0) for fd in reader.fds]
                protocol.close_all(reader.fds)
                self.requests.append((header, payloads, fd_data))
                message, data = self.reply
                try:
                    if self.cut_after is not None:
                        conn.sendall(protocol.pack(message.to_wire(), data)[:self.cut_after])
                        continue
                    protocol.send(conn, message.to_wire(), data)
                except BrokenPipeError:
                    pass   # the filter stopped reading (a reply it refused), as the real daemon allows

    def close(self):
        self.listener.close()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(str(tmp_path / "executor.sock"))
    yield d
    d.close()


def job_body(request, payloads):
    return protocol.pack(request.to_wire(), payloads)


PROGRAM = b"\0asm\1\0\0\0"
REQUEST = protocol.RunRequest(
    program=protocol.ProgramSource(payload=0), program_name="swift://a/bin/p.wasm", args=("p",),
    timeout=1000, memory=1 << 40, inputs=(protocol.InputChannel("/script", payload=1),),
    outputs=(protocol.OutputChannel("/dev/stdout", 1 << 40), protocol.OutputChannel("/dev/stderr")))


def execute(mw, body, path="/sda1/7/a/c/o", headers=None, length=True):
    env = {"REQUEST_METHOD": "EXECUTE", "PATH_INFO": path, "wsgi.input": io.BytesIO(body)}
    if length:
        env["CONTENT_LENGTH"] = str(len(body))
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    status, headers, data = call(mw, env)
    return int(status.split()[0]), headers, data


def middleware(zc, app=None, **conf):
    return zc.objectquery.ObjectQueryMiddleware(app or App(), {k: str(v) for k, v in conf.items()})


def one_line_reason(data):
    text = data.decode()
    assert text.endswith("\n") and "\n" not in text[:-1], text
    return text[:-1]


# ------------------------------------------------------------ pass-through
@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "HEAD", "DELETE"])
def test_other_methods_pass_through_untouched(zc, method):
    app = App()
    status, headers, data = call(middleware(zc, app), {"REQUEST_METHOD": method, "PATH_INFO": "/sda1/7/a/c/o"})
    assert status.startswith("204") and headers["X-Backend"] == "object-server"
    assert app.seen == [method]


# ------------------------------------------------------------------ errors
def test_a_path_without_account_is_400(zc, daemon):
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path), job_body(REQUEST, [PROGRAM, b"x"]),
                              path="/sda1/7")
    assert status == 400 and one_line_reason(data) == "bad EXECUTE path /sda1/7"
    assert daemon.requests == []


def test_no_content_length_is_411(zc, daemon):
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path), b"", length=False)
    assert status == 411
    assert one_line_reason(data) == "a job request needs a Content-Length (or chunks, when it has streams)"


def test_a_chunked_request_without_streams_is_411(zc, daemon):
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path), job_body(REQUEST, [PROGRAM, b"x"]),
                              headers={"Transfer-Encoding": "chunked"}, length=False)
    assert status == 411 and one_line_reason(data) == "only a job request with stream inputs may come in chunks"
    assert daemon.requests == []


class StreamingDaemon:
    """A daemon stand-in for requests with streams: takes the header and
    payloads, answers Streaming at once, reads what follows to its end, and
    sends it back as frames of stream output 0, then END_OF_STREAMS and a
    reply."""

    def __init__(self, path):
        self.path = path
        self.got = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(4)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.listener.accept()
        with conn:
            reader = protocol.Reader(conn)
            header, payloads = reader.message(want_fds=True)
            protocol.send(conn, protocol.Streaming().to_wire())
            rest = bytes(reader.buf) + b"".join(iter(lambda: conn.recv(65536), b""))
            self.got.append((header, payloads, rest))
            conn.sendall(protocol.frame(0, rest) + protocol.frame(0) + protocol.frame(protocol.END_OF_STREAMS))
            protocol.send(conn, protocol.RunReply(REPORT, ("/dev/stderr",)).to_wire(), [b"err"])


STREAM_REQUEST = protocol.RunRequest(
    program=protocol.ProgramSource(payload=0), args=("cat",),
    inputs=(protocol.InputChannel("/dev/in/map-1", stream=True),),
    outputs=(protocol.OutputChannel("/dev/out/reduce", 1000, stream=True), protocol.OutputChannel("/dev/stderr")))


def test_a_request_with_streams_comes_in_chunks_and_its_reply_is_passed_on_as_it_comes(zc, tmp_path):
    daemon = StreamingDaemon(str(tmp_path / "executor.sock"))
    frames = protocol.frame(0, b"one ") + protocol.frame(0, b"two") + protocol.frame(0)
    env = {"REQUEST_METHOD": "EXECUTE", "PATH_INFO": "/sda1/7/a", "HTTP_TRANSFER_ENCODING": "chunked",
           "wsgi.input": io.BytesIO(job_body(STREAM_REQUEST, [PROGRAM]) + frames)}
    status, headers, data = call(middleware(zc, zerovm_socket=daemon.path), env)
    assert status.startswith("200") and "Content-Length" not in headers
    assert env["eventlet.minimum_write_chunk_size"] == 0   # each frame goes at once
    [(header, payloads, rest)] = daemon.got
    assert payloads == [PROGRAM] and rest == frames   # the streams went on after the payloads
    assert header["inputs"] == [{"alias": "/dev/in/map-1", "stream": True}]
    reader = protocol.Reader(FakeSocket(data))
    assert protocol.parse_reply(reader.header()) == protocol.Streaming()
    assert reader.exact(len(protocol.frame(0, frames))) == protocol.frame(0, frames)
    assert reader.exact(8) == protocol.frame(0) and reader.exact(8) == protocol.frame(protocol.END_OF_STREAMS)
    assert reader.message() == ({"status": "ok", "report": REPORT.to_wire(), "outputs": ["/dev/stderr"],
                                 "payloads": [3]}, [b"err"])


def test_streams_past_zerovm_maxrequest_are_cut_and_the_daemon_sees_their_end(zc, tmp_path):
    daemon = StreamingDaemon(str(tmp_path / "executor.sock"))
    body = job_body(STREAM_REQUEST, [PROGRAM])
    frames = protocol.frame(0, b"x" * 5000) + protocol.frame(0)
    env = {"REQUEST_METHOD": "EXECUTE", "PATH_INFO": "/sda1/7/a", "HTTP_TRANSFER_ENCODING": "chunked",
           "wsgi.input": io.BytesIO(body + frames)}
    status, _, _ = call(middleware(zc, zerovm_socket=daemon.path, zerovm_maxrequest=len(body) + 1000), env)
    assert status.startswith("200")
    [(_, _, rest)] = daemon.got
    assert rest == b""   # the one piece would have gone past the cap: nothing of it went


class FakeSocket:
    def __init__(self, data):
        self.data = data

    def recv(self, n):
        piece, self.data = self.data[:n], self.data[n:]
        return piece


def test_a_request_over_zerovm_maxrequest_is_413_before_it_is_read(zc, daemon):
    body = job_body(REQUEST, [PROGRAM, b"x" * 1000])
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path, zerovm_maxrequest=500), body)
    assert status == 413
    assert one_line_reason(data) == f"job request of {len(body)} bytes is more than zerovm_maxrequest (500)"
    assert daemon.requests == []


@pytest.mark.parametrize("body, reason", [
    (b"\0\0\0\x05[1,2]", "malformed job request: header is not a JSON object"),
    (b"\0\0\0\x02{}", "malformed job request: request lacks op, program"),
    (protocol.pack({"op": "run", "program": {"payload": 0}, "timeout": "soon"}, [PROGRAM]),
     "malformed job request: request.timeout must be an integer"),
    (protocol.pack({"op": "run", "program": {"payload": 0}, "inputs": [{"alias": "/dev/stdin", "fd": 0}]},
                   [PROGRAM]),
     "malformed job request: only this server passes descriptors; inputs from the proxy name payloads"),
    (protocol.pack({"op": "run", "program": {"payload": 0}}, [PROGRAM])[:-1],
     "malformed job request: message length does not match its header"),
    (protocol.pack({"op": "run", "program": {"payload": 0}, "inputs": 5}, [PROGRAM]),
     "malformed job request: inputs must be a list"),
    (protocol.pack({"op": "run", "program": {"payload": 0}, "inputs": {"stream": True}}, [PROGRAM]),
     "malformed job request: inputs must be a list"),
])
def test_a_malformed_request_is_400_with_one_line(zc, daemon, body, reason):
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path), body)
    assert status == 400 and one_line_reason(data) == reason
    assert daemon.requests == []


def test_an_unreachable_executor_is_503(zc, tmp_path):
    status, _, data = execute(middleware(zc, zerovm_socket=tmp_path / "nobody.sock"),
                              job_body(REQUEST, [PROGRAM, b"x"]))
    assert status == 503 and one_line_reason(data).startswith(f"executor not reachable at {tmp_path}")


@pytest.mark.parametrize("refusal, status, reason", [
    (protocol.Refusal("busy", "4 jobs running"), 429, "too many jobs: 4 jobs running"),
    (protocol.Refusal("bad-request", "unknown op"), 400, "executor refused the job: unknown op"),
])
def test_a_refusal_by_the_executor_is_its_status(zc, daemon, refusal, status, reason):
    daemon.reply = (refusal, [])
    got, _, data = execute(middleware(zc, zerovm_socket=daemon.path), job_body(REQUEST, [PROGRAM, b"x"]))
    assert got == status and one_line_reason(data) == reason


def test_a_malformed_executor_reply_is_503(zc, daemon):
    daemon.reply = (protocol.RunReply(REPORT, ("/dev/stdout", "/dev/stderr")), [b"only one"])
    status, _, data = execute(middleware(zc, zerovm_socket=daemon.path), job_body(REQUEST, [PROGRAM, b"x"]))
    assert status == 503
    assert one_line_reason(data) == "executor failed: reply names 2 outputs but carries 1 payloads"


# -------------------------------------------------------------------- jobs
def test_a_job_is_capped_by_this_node_and_its_reply_streamed_back(zc, daemon):
    mw = middleware(zc, zerovm_socket=daemon.path, zerovm_timeout=10, zerovm_maxnexemem=1 << 28,
                    zerovm_maxoutput=1000, zerovm_maxinput=5000)
    status, headers, data = execute(mw, job_body(REQUEST, [PROGRAM, b"print(1)"]), path="/sda1/7/a")
    assert status == 200
    assert headers["X-Nexe-Colocated"] == "0"
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(data)
    reply_header, outputs = protocol.decode(data)
    assert protocol.parse_reply(reply_header) == protocol.RunReply(REPORT, ("/dev/stdout",))
    assert outputs == [b"hello\n"]
    [(header, payloads, fd_data)] = daemon.requests
    sent = protocol.RunRequest.from_wire(header)
    assert (sent.timeout, sent.memory, sent.max_input) == (10, 1 << 28, 5000)
    assert sent.outputs == (protocol.OutputChannel("/dev/stdout", 1000), protocol.OutputChannel("/dev/stderr", 1000))
    assert sent.inputs == REQUEST.inputs and sent.program == REQUEST.program and sent.args == ("p",)
    assert payloads == [PROGRAM, b"print(1)"] and fd_data == []


def test_a_reply_cut_short_by_the_executor_is_one_log_line_and_a_dropped_connection(zc, daemon):
    """A worker lost while writing its reply: the 200 and its length are out,
    so the body raises (the server then drops the connection and the proxy
    sees a short reply), and the log says why in one line."""
    daemon.reply = (protocol.RunReply(REPORT, ("/dev/stdout",)), [b"x" * 1000])
    head = len(protocol.encode(daemon.reply[0].to_wire(), daemon.reply[1]))
    daemon.cut_after = head + 100
    mw = middleware(zc, zerovm_socket=daemon.path)
    request = job_body(REQUEST, [PROGRAM, b"x"])
    env = {"REQUEST_METHOD": "EXECUTE", "PATH_INFO": "/sda1/7/a", "wsgi.input": io.BytesIO(request),
           "CONTENT_LENGTH": str(len(request))}
    got = {}
    body = mw(env, lambda status, headers: got.update(status=status, headers=dict(headers)))
    assert got["status"].startswith("200") and int(got["headers"]["Content-Length"]) == head + 1000
    received = bytearray()
    with pytest.raises(protocol.ProtocolError, match="stopped after 100 of 1000 output bytes"):
        for piece in body:
            received += piece
    assert len(received) < head + 1000
    [line] = mw.logger.logged
    assert line.startswith("zerocloud: the executor's reply stopped after 100 of 1000 output bytes") and "\n" not in line


class DiskFile:
    def __init__(self, path, meta, missing=None):
        self._data_file = str(path)
        self.meta = meta
        self.missing = missing

    def open(self):
        if self.missing is not None:   # as Swift's: the DiskFile is made, opening it finds nothing
            raise self.missing
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_metadata(self):
        return self.meta


class ObjectServer(App):
    """The object server's own app, which knows its DiskFiles."""

    def __init__(self, zc, files):
        super().__init__()
        self.zc, self.files = zc, files

    def get_diskfile(self, device, partition, account, container, obj, policy):
        missing = DiskFile("/nonexistent", {}, self.zc.objectquery.DiskFileNotExist())
        return self.files.get((account, container, obj), missing)


class Policies:
    def get_by_index(self, index):
        return "policy-0" if index == 0 else None


def test_a_local_input_is_passed_as_the_objects_open_data_file(zc, daemon, tmp_path, monkeypatch):
    data_file = tmp_path / "1700000000.00000.data"
    data_file.write_bytes(b"object data")
    monkeypatch.setattr(zc.objectquery, "POLICIES", Policies())
    server = ObjectServer(zc, {("a", "c", "o"): DiskFile(data_file, {"Content-Length": "11"})})
    mw = middleware(zc, server, zerovm_socket=daemon.path, zerovm_node_name="swift-storage2")
    status, headers, _ = execute(mw, job_body(REQUEST, [PROGRAM, b"x"]),
                                 headers={"X-Zerocloud-Local-Alias": "/dev/stdin",
                                          "X-Backend-Storage-Policy-Index": "0"})
    assert status == 200
    # The storage host (its inventory name) and the device that ran it.
    assert headers["X-Nexe-Colocated"] == "swift-storage2/sda1"
    [(header, _, fd_data)] = daemon.requests
    assert protocol.RunRequest.from_wire(header).inputs == (
        protocol.InputChannel("/dev/stdin", fd=0), protocol.InputChannel("/script", payload=1))
    assert fd_data == [b"object data"]


@pytest.mark.parametrize("files, headers, status, reason", [
    ({}, {}, 404, "/a/c/o is not on device sda1"),
    ({"Content-Length": "11", "X-Object-Sysmeta-Crypto-Body-Meta": "x"}, {}, 409,
     "/a/c/o is stored encrypted; jobs read data files and need the encryption filter off"),
    ({"Content-Length": "99999"}, {}, 413, "/a/c/o is 99999 bytes, more than zerovm_maxinput (1000)"),
    ({"Content-Length": "11"}, {"X-Backend-Storage-Policy-Index": "5"}, 400, "unknown storage policy"),
])
def test_a_local_input_that_cannot_be_read_here_is_its_status(zc, daemon, tmp_path, monkeypatch,
                                                             files, headers, status, reason):
    data_file = tmp_path / "1700000000.00000.data"
    data_file.write_bytes(b"object data")
    monkeypatch.setattr(zc.objectquery, "POLICIES", Policies())
    server = ObjectServer(zc, {("a", "c", "o"): DiskFile(data_file, files)} if files else {})
    mw = middleware(zc, server, zerovm_socket=daemon.path, zerovm_maxinput=1000)
    got, _, data = execute(mw, job_body(REQUEST, [PROGRAM, b"x"]),
                           headers=dict({"X-Zerocloud-Local-Alias": "/dev/stdin"}, **headers))
    assert got == status and one_line_reason(data) == reason
    assert daemon.requests == []


def test_a_streaming_answer_ends_only_after_the_requests_streams_were_read_to_their_end(zc):
    # eventlet reads what is left of a request once its answer ends: the
    # copier of its streams must be done by then, or two readers share it.
    log = []

    class Executor(FakeSocket):
        def close(self):
            log.append("executor closed")

    class Copier:
        def wait(self):
            log.append("copier waited for")

        def kill(self):
            log.append("copier stopped")

    reader = protocol.Reader(Executor(b""))
    for piece in zc.objectquery.relay(b"head", reader, Executor(b"frames"), Copier()):
        log.append(piece)
    log.append("answer ended")
    assert log == [b"head", b"frames", "copier waited for", "copier stopped", "executor closed", "answer ended"]
