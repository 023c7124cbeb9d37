"""The proxy's zerocloud filter (proxy.py and its parts) as a WSGI filter, in
the way Swift tests its own middleware: a fake Swift behind it (objects,
listings, access checks), a fake ring and fake object servers that decode
the EXECUTE they get and answer in the executor protocol."""

import hashlib
import io
import json
import random
import struct
import types
from dataclasses import replace

import pytest

from zerolab.zerocloud import protocol

from .conftest import FakeResponse, call

NODES = [{"ip": "10.0.0.1", "port": 6200, "device": "sdb1"}, {"ip": "10.0.0.2", "port": 6200, "device": "sdc1"}]
OK_REPORT = protocol.JobReport(exit_code=0, exit_state="ok", user_rc=0, validator=0, etag="disable",
                               elapsed=0.25, cdr="0.01 0.02 1 12 1 5 0 0 0 0")


class Swift:
    """The rest of the pipeline: objects by path (with extra headers in
    ``meta``), a listing per container, a read ACL per container (``acls``,
    as X-Container-Read: what get_container_info gives), 403 for paths whose
    HEAD or GET refuses the caller; every subrequest recorded (and every
    EXECUTE, by ObjectServers)."""

    def __init__(self, objects=None, forbidden=()):
        self.objects = dict(objects or {})
        self.forbidden = set(forbidden)
        self.meta = {}     # object path -> extra headers of its HEAD and GET
        self.acls = {}     # container path -> X-Container-Read
        self.caller = "alice"
        self.seen = []   # (method, path) of subrequests; ("app", method, path) of passed-through requests

    def container_info(self, env, app, swift_source=None):
        """get_container_info: a container exists when it has an ACL or objects."""
        assert swift_source == "ZC"
        path = env["PATH_INFO"]
        if path not in self.acls and not any(p.startswith(path + "/") for p in self.objects):
            return {"status": 404, "read_acl": None, "storage_policy": 0}
        return {"status": 200, "read_acl": self.acls.get(path), "storage_policy": 0}

    def __call__(self, env, start_response):
        self.seen.append(("app", env["REQUEST_METHOD"], env.get("PATH_INFO")))
        return FakeResponse(204, b"", headers={"X-Passed": "yes"})(env, start_response)

    def subrequest(self, env, method, path, body=None, headers=None, agent=None, swift_source=None):
        assert swift_source == "ZC" and env.get("REMOTE_USER") == self.caller   # as the caller
        swift = self

        class Sub:
            # What make_subrequest gives: the caller's environ with this
            # method and path, an empty wsgi.input unless a body is set.
            environ = dict(env, REQUEST_METHOD=method, PATH_INFO=path, **{"wsgi.input": io.BytesIO(body or b"")})
            acl = None

            def get_response(self, app):
                data = body
                if method == "PUT":   # read the way Swift's proxy does, a chunk at a time
                    assert self.environ["CONTENT_LENGTH"].isdigit(), "a PUT without a length is 411"
                    stream = self.environ["wsgi.input"]
                    data = b"".join(iter(lambda: stream.read(65536), b""))
                    assert len(data) == int(self.environ["CONTENT_LENGTH"])
                return swift.answer(method, path, data, headers)
        return Sub()

    def answer(self, method, url, body, headers):
        path, _, query = url.partition("?")
        self.seen.append((method, path))
        if path in self.forbidden:
            return FakeResponse(403, b"forbidden")
        if method == "PUT":
            self.objects[path] = body
            return FakeResponse(201)
        if query:
            prefix = path + "/"
            names = sorted(p[len(prefix):] for p in self.objects if p.startswith(prefix))
            marker = dict(q.split("=", 1) for q in query.split("&"))["marker"]
            page = [{"name": n} for n in names if n > marker]
            return FakeResponse(200, json.dumps(page).encode()) if page else FakeResponse(204)
        if path not in self.objects:
            return FakeResponse(404, b"not found")
        data = self.objects[path]
        resp = FakeResponse(200, data if method == "GET" else b"",
                            headers=dict({"Etag": str(hash(data))}, **self.meta.get(path, {})))
        resp.content_length = len(data)
        return resp


def tempauth(req):
    """swift.authorize as tempauth decides: the account's owner (the account
    among the caller's groups), else a group or .r:* in req.acl; 401 without
    a user, 403 with one."""
    env = req.environ
    _, account, container, obj = (env["PATH_INFO"].split("/", 4) + [None, None])[1:5]
    groups = (env.get("REMOTE_USER") or "").split(",")
    if account in groups:
        return None
    acl = [a.strip() for a in (getattr(req, "acl", None) or "").split(",")]
    if (obj and ".r:*" in acl) or any(g in acl for g in groups if g):
        return None
    return FakeResponse(403 if env.get("REMOTE_USER") else 401, b"denied")


class Ring:
    devs = NODES

    def get_nodes(self, account, container, obj):
        return 7, list(NODES)


class InRingOrder:
    def shuffle(self, nodes):
        pass


class Policies:
    class default:   # Swift's attribute name
        idx = 0

    def get_object_ring(self, index, swift_dir):
        return Ring()

    def get_by_index(self, index):
        return f"policy-{index}"


class Reply:
    def __init__(self, status, data, headers=None):
        self.status, self.data = status, data
        self.headers = dict({"Content-Length": str(len(data))}, **(headers or {}))

    def read(self, n):
        piece, self.data = self.data[:n], self.data[n:]
        return piece

    def getheader(self, name):
        return self.headers.get(name)

    def close(self):
        self.closed = True


class ObjectServers:
    """Fake object servers: each EXECUTE is decoded, recorded and answered by
    ``answer(ip, request, payloads)`` -> (status, body bytes, headers), or a
    reply object of its own (read, getheader, status)."""

    def __init__(self, answer, log=None):
        self.answer = answer
        self.refuse = None   # (ip, request) -> (status, body, headers) or None: a streamed run's refusal
        self.executes = []
        self.current = None   # the record of the EXECUTE being answered
        self.log = log if log is not None else []   # ("EXECUTE", path) as each arrives

    def connect(self, ip, port, device, partition, method, path, headers=None):
        servers = self

        class Connection:
            sent = b""
            closed = False

            def __init__(self):
                self.sock = self   # a streamed start sends on conn.sock

            def send(self, data):
                self.sent += data

            sendall = send

            def close(self):
                self.closed = True

            def getresponse(self):
                chunked = headers.get("Transfer-Encoding") == "chunked"
                if not chunked:
                    assert int(headers["Content-Length"]) == len(self.sent)
                body = dechunk(self.sent, ended=False) if chunked else self.sent
                header, payloads, _ = split_message(body)
                request = protocol.RunRequest.from_wire(header)
                servers.log.append(("EXECUTE", path))
                record = {"ip": ip, "device": device, "partition": partition, "method": method, "path": path,
                          "headers": headers, "request": request, "payloads": payloads, "conn": self}
                servers.executes.append(record)
                servers.current = record
                refused = servers.refuse(ip, request) if servers.refuse is not None else None
                if request.streaming and refused is not None:
                    return Reply(*refused)
                if request.streaming:
                    return StreamedRun(servers, ip, self, record)
                got = servers.answer(ip, request, payloads)
                return got if hasattr(got, "read") else Reply(*got)
        return Connection()


def dechunk(data, ended=True):
    """A chunked HTTP body's bytes (``ended``: it must have its last chunk)."""
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        assert rest[n:n + 2] == b"\r\n", "a chunk is its size, CRLF, its bytes, CRLF"
        if n == 0:
            assert rest == b"\r\n", "nothing after the last chunk"
            return out
        out, data = out + rest[:n], rest[n + 2:]
    assert not ended, "the body did not end"
    return out


def split_message(body):
    """A request's header, its payloads, and what follows them (its stream frames)."""
    (size,) = struct.unpack("!I", body[:4])
    header = json.loads(body[4:4 + size])
    pos, payloads = 4 + size, []
    for n in header["payloads"]:
        payloads.append(body[pos:pos + n])
        pos += n
    return header, payloads, body[pos:]


class StreamedRun:
    """The reply to a request with streams, as the executor sends it: the
    Streaming header at once; then, when read on, the run: its stream
    inputs' frames (which must all have come, ended) made payloads, so that
    ``answer`` sees the request as a staged one; the outputs it marked
    streams sent back as frames, END_OF_STREAMS, and the RunReply of the rest."""

    status = 200

    def __init__(self, servers, ip, conn, record):
        self.servers, self.ip, self.conn, self.record = servers, ip, conn, record
        self.data = protocol.frame_header(protocol.Streaming().to_wire())
        self.ran = False
        self.headers = {}

    def getheader(self, name):
        return self.headers.get(name)

    def close(self):
        self.closed = True

    def read(self, n):
        if not self.data and not self.ran:
            self.ran = True
            self.data = self.run()
        piece, self.data = self.data[:n], self.data[n:]
        return piece

    def run(self):
        request = self.record["request"]
        chunked = self.record["headers"].get("Transfer-Encoding") == "chunked"
        _, payloads, frames = split_message(dechunk(self.conn.sent) if chunked else self.conn.sent)
        streams = {alias: b"" for alias in request.stream_inputs}
        ended = set()
        while frames:
            number, length = protocol.STREAM_FRAME.unpack(frames[:8])
            alias = request.stream_inputs[number]
            assert alias not in ended, f"a frame of {alias} after its end"
            if length == 0:
                ended.add(alias)
            streams[alias] += frames[8:8 + length]
            frames = frames[8 + length:]
        assert ended == set(streams), f"streams not ended: {set(streams) - ended}"
        inputs = []
        for i in request.inputs:
            if i.stream:
                inputs.append(protocol.InputChannel(i.alias, payload=len(payloads)))
                payloads.append(streams[i.alias])
            else:
                inputs.append(i)
        outputs = tuple(replace(o, stream=False) for o in request.outputs)
        staged = replace(request, inputs=tuple(inputs), outputs=outputs)
        self.record.update(request=staged, payloads=payloads, streamed=request)
        self.servers.current = self.record
        status, body, self.headers = self.servers.answer(self.ip, staged, payloads)
        assert status == 200, "a streamed run's refusals come before its Streaming header"
        header, data = protocol.decode(body)
        reply = protocol.RunReply.from_wire(header)
        by_alias = dict(zip(reply.outputs, data))
        out = b"".join(protocol.frame(number, by_alias.get(alias, b"")) + protocol.frame(number)
                       for number, alias in enumerate(request.stream_outputs))
        kept = [alias for alias in reply.outputs if alias not in request.stream_outputs]
        digests = dict(zip(reply.outputs, reply.digests))
        return out + protocol.frame(protocol.END_OF_STREAMS) + protocol.pack(
            replace(reply, outputs=tuple(kept), digests=tuple(digests[a] for a in kept if a in digests)).to_wire(),
            [by_alias[alias] for alias in kept])


def ran(stdout=b"hello\n", report=OK_REPORT, colocated="c0c0", digests=True):
    """An object server's answer for a job that ran: its report and stdout,
    with each output's MD5 as the worker sends it (digests=False: as an
    older worker, without)."""
    def answer(ip, request, payloads):
        outputs = [o.alias for o in request.outputs]
        data = [stdout if a == "/dev/stdout" else b"" for a in outputs]
        md5s = tuple(hashlib.md5(d).hexdigest() for d in data) if digests else ()
        return 200, protocol.pack(protocol.RunReply(report, tuple(outputs), md5s).to_wire(), data), \
            {"X-Nexe-Colocated": colocated}
    return answer


@pytest.fixture
def cluster(zc, monkeypatch):
    """The filter in front of a fake Swift, with the ring and object servers steered by each test."""
    return make_cluster(zc, monkeypatch)


def make_cluster(zc, monkeypatch):
    swift = Swift({"/v1/a/c/data.txt": b"one two\n", "/v1/a/bin/wc.wasm": b"\0asm\1\0\0\0"})
    servers = ObjectServers(ran(), log=swift.seen)
    monkeypatch.setattr(zc.subrequests, "make_subrequest", swift.subrequest)
    monkeypatch.setattr(zc.routing, "POLICIES", Policies())
    monkeypatch.setattr(zc.routing, "get_container_info", swift.container_info)
    monkeypatch.setattr(zc.subrequests, "get_container_info", swift.container_info)
    monkeypatch.setattr(zc.routing, "http_connect", servers.connect)
    # Replicas in ring order, so that a test knows which one is asked first.
    monkeypatch.setattr(zc.routing, "REPLICA_SHUFFLE", InRingOrder())

    class Cluster:
        def __init__(self):
            self.swift, self.servers = swift, servers

        def filter(self, **conf):
            conf = dict({"zerovm_sysimage_devices": "python", "zerovm_timeout": 10, "zerovm_connect": "staged"},
                        **conf)
            return zc.proxy.ProxyQueryMiddleware(swift, {k: str(v) for k, v in conf.items()})
    return Cluster()


def post(mw, body, path="/v1/a", content_type="application/json", headers=None, length=True, env=None):
    """The job POSTed by alice (``env`` adds to or changes its environ)."""
    if isinstance(body, (list, dict)):
        body = json.dumps(body).encode()
    env = dict({"REQUEST_METHOD": "POST", "PATH_INFO": path, "wsgi.input": io.BytesIO(body),
                "CONTENT_TYPE": content_type, "HTTP_X_ZEROVM_EXECUTE": "1.0", "REMOTE_USER": "alice",
                "swift.trans_id": "tx1"}, **(env or {}))
    if length:
        env["CONTENT_LENGTH"] = str(len(body))
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    status, headers, data = call(mw, env)
    return int(status.split()[0]), headers, data


def one_line_reason(data):
    text = data.decode()
    assert text.endswith("\n") and "\n" not in text[:-1], text
    return text[:-1]


WORDCOUNT = [{"name": "wc", "exec": {"path": "file://python:python", "args": "wc.py -l"},
              "devices": [{"name": "stdin", "path": "swift://a/c/data.txt"}, {"name": "stdout"}]}]


# ------------------------------------------------------------ pass-through
# (X-Zerovm-Execute on a GET is a 400: test_job_proxy.py)
@pytest.mark.parametrize("method, headers", [("GET", {}), ("PUT", {}), ("POST", {}),
                                             ("GET", {"HTTP_X_OBJECT_META_ZEROVM": "1.0"})])
def test_requests_that_are_not_jobs_pass_through_untouched(cluster, method, headers):
    mw = cluster.filter()
    env = dict({"REQUEST_METHOD": method, "PATH_INFO": "/v1/a/c/o", "wsgi.input": io.BytesIO(b"")}, **headers)
    status, got, data = call(mw, env)
    assert status.startswith("204") and got["X-Passed"] == "yes"
    assert cluster.swift.seen == [("app", method, "/v1/a/c/o")]
    assert cluster.servers.executes == []


# -------------------------------------------------------------------- jobs
def test_a_job_runs_next_to_its_input_and_answers_with_stdout_and_nexe_headers(cluster):
    status, headers, data = post(cluster.filter(zerovm_maxoutput=1000), WORDCOUNT)
    assert status == 200, data
    assert data == b"hello\n"
    assert headers["X-Nexe-System"] == "wc"
    assert headers["X-Nexe-Status"] == "ok"
    assert headers["X-Nexe-Retcode"] == "0"
    assert headers["X-Nexe-Etag"] == "disable"
    assert headers["X-Nexe-Validation"] == "0"
    assert headers["X-Nexe-Colocated"] == "c0c0"
    assert headers["X-Nexe-Cdr-Line"].split(", ")[1:] == ["0.250", "0.01 0.02 1 12 1 5 0 0 0 0"]
    assert "X-Nexe-Error" not in headers
    # Read access checked as the caller before it ran; the object itself not fetched.
    assert ("HEAD", "/v1/a/c/data.txt") in cluster.swift.seen
    assert ("GET", "/v1/a/c/data.txt") not in cluster.swift.seen
    [sent] = cluster.servers.executes
    assert (sent["ip"], sent["partition"], sent["method"], sent["path"]) == ("10.0.0.1", 7, "EXECUTE", "/a/c/data.txt")
    assert sent["headers"]["X-Zerocloud-Local-Alias"] == "/dev/stdin"
    assert sent["headers"]["X-Backend-Storage-Policy-Index"] == "0"
    assert sent["headers"]["X-Trans-Id"] == "tx1"
    request = sent["request"]
    assert request.program == protocol.ProgramSource(image="python", path="python")
    assert request.program_name == "file://python:python"
    assert request.args == ("wc", "wc.py", "-l")
    assert (request.timeout, request.inputs) == (10, ())
    assert request.outputs == (protocol.OutputChannel("/dev/stdout", 1000),)


def test_a_replica_without_the_object_is_skipped(cluster):
    asked = []

    def only_the_second_asked_has_it(ip, request, payloads):
        asked.append(ip)
        if len(asked) == 1:
            return 404, b"/a/c/data.txt is not on device sdb1\n", {}
        return ran()(ip, request, payloads)
    cluster.servers.answer = only_the_second_asked_has_it
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert (status, data) == (200, b"hello\n")
    assert sorted(asked) == ["10.0.0.1", "10.0.0.2"]


def test_replicas_are_tried_in_a_shuffled_order_so_jobs_spread(zc, cluster, monkeypatch):
    # Ring order would send every job to the first replica of its partition,
    # which a fresh ring gives to a few devices.
    monkeypatch.setattr(zc.routing, "REPLICA_SHUFFLE", random.Random())
    first = set()
    for _ in range(40):
        cluster.servers.executes.clear()
        status, _, _ = post(cluster.filter(), WORDCOUNT)
        assert status == 200
        first.add(cluster.servers.executes[0]["ip"])
    assert first == {"10.0.0.1", "10.0.0.2"}


def test_replicas_are_tried_in_the_order_swifts_proxy_reads_them(zc):
    class ProxyApp:
        def sort_nodes(self, nodes, policy=None):
            self.policy = policy
            return sorted(nodes, key=lambda n: n["ip"], reverse=True)

    class Filter:   # a filter between zerocloud and the proxy application
        app = ProxyApp()

    router = zc.routing.ReplicaRouter(Filter(), config=None)
    assert [n["ip"] for n in router.replica_order(list(NODES), "policy-0")] == ["10.0.0.2", "10.0.0.1"]
    assert Filter.app.policy == "policy-0"


def test_a_swift_program_and_a_script_are_sent_as_payloads_and_outputs_stored(cluster):
    job = [{"name": "count", "exec": {"path": "swift://a/bin/wc.wasm"},
            "devices": [{"name": "stdin", "path": "swift://a/c/data.txt"},
                        {"name": "stdout", "path": "swift://a/out/count.txt", "content_type": "text/plain"}]}]
    status, headers, data = post(cluster.filter(), job)
    assert (status, data) == (200, b"")
    [sent] = cluster.servers.executes
    assert sent["request"].program == protocol.ProgramSource(payload=0)
    assert sent["payloads"] == [b"\0asm\1\0\0\0"]
    assert cluster.swift.objects["/v1/a/out/count.txt"] == b"hello\n"


def test_a_script_posted_to_an_object_reads_it_as_stdin(cluster):
    status, _, data = post(cluster.filter(), b"#!file://python:python\nprint(1)\n", path="/v1/a/c/data.txt",
                           content_type="text/x-python")
    assert (status, data) == (200, b"hello\n")
    [sent] = cluster.servers.executes
    assert sent["path"] == "/a/c/data.txt"
    assert sent["request"].inputs == (protocol.InputChannel("/script", payload=0),)
    assert sent["payloads"] == [b"#!file://python:python\nprint(1)\n"]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("body, kwargs, status, reason", [
    (WORDCOUNT, {"headers": {"X-Zerovm-Execute": "2.0"}}, 400, "unsupported X-Zerovm-Execute '2.0' (use 1.0, or open/1.0 on a GET)"),
    (WORDCOUNT, {"path": "/v1/a/c"}, 400,
     "POST a job to /v1/<account>, or a script to /v1/<account>/<container>/<object>"),
    (WORDCOUNT, {"path": "/v1/a/c/o"}, 400, "POST a JSON job description to /v1/<account>, not to an object"),
    (b"", {}, 400, "empty job: POST a JSON job description, an app (a tar) or a #! script"),
    (b"{not json", {}, 400, None),
    (b"x" * 70000, {}, 413, "the request's body is 70000 bytes, more than zerovm_maxconfig (65536)"),
    (b"x" * 70000, {"length": False}, 413, "the request's body is more than zerovm_maxconfig (65536 bytes)"),
    (b"\0" * 10240, {"content_type": "application/x-tar"}, 400, "the app has no boot/system.map: put its JSON "
                                                             "job description there"),
    (b"\1" * 10, {"content_type": "application/x-tar"}, 400, "the app is not a readable tar (ReadError)"),
    ([dict(WORDCOUNT[0], count=100)], {}, 413, None),
])
def test_a_job_that_cannot_run_is_a_4xx_with_one_line(cluster, body, kwargs, status, reason):
    got, headers, data = post(cluster.filter(), body, **kwargs)
    assert got == status
    line = one_line_reason(data)
    assert reason is None or line == reason
    assert cluster.servers.executes == []


def test_an_input_the_caller_may_not_read_is_403_and_nothing_runs(cluster):
    cluster.swift.caller = "b,bob"
    cluster.swift.acls["/v1/a/c"] = "a:carol"
    status, _, data = post(cluster.filter(), WORDCOUNT, path="/v1/b",
                           env={"REMOTE_USER": "b,bob", "swift.authorize": tempauth})
    assert status == 403
    assert one_line_reason(data) == "node 'wc': not allowed to read swift://a/c/data.txt (403 Fake)"
    assert cluster.servers.executes == []
    assert cluster.swift.seen == []   # refused by the ACL: not even a HEAD


def test_an_input_whose_head_refuses_the_caller_is_403_and_nothing_it_returned_is_answered(cluster):
    # The ACL lets the caller in; the object's HEAD, which ran beside the node, does not.
    cluster.swift.forbidden.add("/v1/a/c/data.txt")
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert status == 403
    assert one_line_reason(data) == "node 'wc': not allowed to read swift://a/c/data.txt (403 Fake)"
    assert b"hello" not in data
    assert headers["X-Nexe-Status"] == "node 'wc': not allowed to read swift://a/c/data.txt (403 Fake)"
    assert (headers["X-Nexe-Colocated"], headers["X-Nexe-Validation"]) == ("0", "2")


def test_a_missing_input_is_404(cluster):
    del cluster.swift.objects["/v1/a/c/data.txt"]
    status, _, data = post(cluster.filter(), WORDCOUNT)
    assert status == 404 and one_line_reason(data) == "node 'wc': swift://a/c/data.txt not found"


def test_auth_middleware_denial_is_returned_as_it_is(cluster):
    mw = cluster.filter()
    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/a", "wsgi.input": io.BytesIO(b"[]"), "CONTENT_LENGTH": "2",
           "HTTP_X_ZEROVM_EXECUTE": "1.0", "swift.authorize": lambda req: FakeResponse(401, b"who are you\n")}
    status, _, data = call(mw, env)
    assert status.startswith("401") and data == b"who are you\n"
    assert cluster.swift.seen == [] and cluster.servers.executes == []


TIMED_OUT = protocol.JobReport(exit_code=6, exit_state="timeout: ran longer than 10 s", user_rc=0, validator=0,
                               etag="disable", elapsed=10.0, cdr="9.00 1.00 0 0 0 0 0 0 0 0")


def timed_out(ip, request, payloads):
    outputs = [o.alias for o in request.outputs] + ["/dev/stderr"]
    data = [b"partial" if a == "/dev/stdout" else b"Traceback: slow\n" for a in outputs]
    return 200, protocol.pack(protocol.RunReply(TIMED_OUT, tuple(outputs)).to_wire(), data), {}


def test_a_node_stopped_by_its_timeout_is_its_status_in_a_200_as_zerocloud_answered(cluster):
    cluster.servers.answer = timed_out
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert (status, data) == (200, b"")   # what it wrote before the limit is not its result
    assert headers["X-Nexe-Error"] == "node 'wc': timeout: ran longer than 10 s"
    assert headers["X-Nexe-Status"] == "timeout: ran longer than 10 s"
    assert headers["X-Nexe-Cdr-Line"].split(", ")[1:] == ["10.000", "9.00 1.00 0 0 0 0 0 0 0 0"]


def test_one_stopped_node_keeps_the_others_outputs_and_skips_what_comes_after_it(cluster):
    cluster.swift.objects["/v1/a/c/more.txt"] = b"three\n"

    def second_times_out(ip, request, payloads):
        if request.args[0] == "map-2":
            return timed_out(ip, request, payloads)
        return ran(stdout=b"from " + request.args[0].encode() + b"\n")(ip, request, payloads)
    cluster.servers.answer = second_times_out
    job = [{"name": "map", "exec": {"path": "file://python:python"},
            "devices": [{"name": "stdin", "path": "swift://a/c/*.txt"}, {"name": "stdout"}]},
           {"name": "other", "exec": {"path": "file://python:python"}, "devices": [{"name": "stdout"}],
            "connect": ["reduce"]},
           {"name": "reduce", "exec": {"path": "file://python:python"}, "devices": [{"name": "stdout"}]}]
    status, headers, data = post(cluster.filter(), job)
    assert (status, data) == (200, b"from map-1\n"), data
    assert headers["X-Nexe-System"] == "map-1,map-2,other,reduce"
    assert headers["X-Nexe-Status"] == ("ok,timeout: ran longer than 10 s,ok,"
                                        "not run: node 'map-2' was stopped")
    assert headers["X-Nexe-Error"] == "node 'map-2': timeout: ran longer than 10 s"
    assert [e["request"].args[0] for e in cluster.servers.executes] == ["map-1", "map-2", "other"]


@pytest.mark.parametrize("answer, status, reason", [
    ((429, b"too many jobs: 4 running\n", {}), 429, "node 'wc': too many jobs: 4 running"),
    ((200, b"\0\0\0\x02{}", {}), 503, "node 'wc': bad reply from 10.0.0.1: reply lacks"),
    ((400, b"malformed job request: x\n", {}), 400, "node 'wc': malformed job request: x"),
])
def test_an_object_server_that_cannot_run_it_is_its_status(cluster, answer, status, reason):
    cluster.servers.answer = lambda ip, request, payloads: answer
    got, headers, data = post(cluster.filter(), WORDCOUNT)
    assert got == status
    assert one_line_reason(data).startswith(reason)
    assert headers["X-Nexe-Status"].startswith(reason.replace(",", ";")[:20])
    assert headers["X-Nexe-Validation"] == "2" and headers["X-Nexe-Retcode"] == "0"
    # Busy: the next replica is tried; a bad reply or a 400 is final.
    assert len(cluster.servers.executes) == (2 if status == 429 else 1)


def test_a_wildcard_fans_out_and_each_header_has_one_element_per_instance(cluster):
    cluster.swift.objects["/v1/a/c/more.txt"] = b"three\n"

    def guest_exit_for_more(ip, request, payloads):
        if not cluster.servers.executes[-1]["path"].endswith("/more.txt"):
            return ran(b"one\n")(ip, request, payloads)
        report = protocol.JobReport(exit_code=1, exit_state="guest exit: 3", user_rc=3, validator=0,
                                    etag="/dev/stdout 1a2b", elapsed=1.0, cdr="0.00 0.10 1 6 1 2 0 0 0 0")
        return ran(b"two\n", report, colocated="d1d1")(ip, request, payloads)
    cluster.servers.answer = guest_exit_for_more
    job = [dict(WORDCOUNT[0], devices=[{"name": "stdin", "path": "swift://a/c/*.txt"}, {"name": "stdout"}])]
    status, headers, data = post(cluster.filter(), job)
    assert status == 200   # a guest's own non-zero exit is the job's result, not an HTTP error
    assert data == b"one\ntwo\n"
    assert sorted(e["path"] for e in cluster.servers.executes) == ["/a/c/data.txt", "/a/c/more.txt"]
    assert headers["X-Nexe-System"] == "wc-1,wc-2"
    assert headers["X-Nexe-Status"] == "ok,guest exit: 3"
    assert headers["X-Nexe-Retcode"] == "0,3"
    assert headers["X-Nexe-Etag"] == "disable,/dev/stdout 1a2b"
    assert headers["X-Nexe-Colocated"] == "c0c0,d1d1"
    assert headers["X-Nexe-Cdr-Line"].split(", ")[1:] == ["0.250", "0.01 0.02 1 12 1 5 0 0 0 0",
                                                           "1.000", "0.00 0.10 1 6 1 2 0 0 0 0"]


def test_connect_sends_each_dev_out_channel_to_its_target_instance(cluster):
    # ZeroCloud's MapReduce: each mapper partitions its output over the
    # reducers by writing /dev/out/<reducer>; each reducer reads /dev/in/<mapper>.
    def answer(ip, request, payloads):
        name = request.args[0]
        outputs = [o.alias for o in request.outputs]
        data = [f"{name} to {alias.rsplit('/', 1)[1]}".encode() if alias.startswith("/dev/out/") else
                f"{name} read {sorted(payloads)}".encode() for alias in outputs]
        return 200, protocol.pack(protocol.RunReply(OK_REPORT, tuple(outputs)).to_wire(), data), {}
    cluster.servers.answer = answer
    job = [{"name": "map", "exec": {"path": "file://python:python"}, "count": 2, "connect": ["red"]},
           {"name": "red", "exec": {"path": "file://python:python"}, "count": 2, "devices": [{"name": "stdout"}]}]
    status, headers, data = post(cluster.filter(), job)
    assert status == 200, data
    assert headers["X-Nexe-System"] == "map-1,map-2,red-1,red-2"
    maps, reds = cluster.servers.executes[:2], cluster.servers.executes[2:]
    for m in maps:
        assert [o.alias for o in m["request"].outputs] == ["/dev/stdout", "/dev/out/red-1", "/dev/out/red-2"]
    red1 = reds[0]["request"]
    # Their own partitions only: a whole stdout goes to a target of one instance.
    assert [i.alias for i in red1.inputs] == ["/dev/in/map-1", "/dev/in/map-2"]
    assert reds[0]["payloads"] == [b"map-1 to red-1", b"map-2 to red-1"]
    assert reds[1]["payloads"] == [b"map-1 to red-2", b"map-2 to red-2"]


REPLICATED = [dict(WORDCOUNT[0], replicate=2)]


def test_replicated_copies_run_on_different_replicas_and_agree(cluster):
    report = protocol.JobReport(exit_code=0, exit_state="ok", user_rc=0, validator=0,
                                etag="/dev/stdout 4f0c", elapsed=0.25, cdr="0.01 0.02 1 12 1 5 0 0 0 0")
    cluster.servers.answer = ran(report=report)
    status, headers, data = post(cluster.filter(), REPLICATED)
    assert (status, data) == (200, b"hello\n")   # the first copy's output, once
    assert sorted(e["ip"] for e in cluster.servers.executes) == ["10.0.0.1", "10.0.0.2"]
    assert headers["X-Nexe-System"] == "wc" and headers["X-Nexe-Status"] == "ok"
    assert headers["X-Nexe-Colocated"] == "c0c0 c0c0"


def test_replicated_copies_that_write_different_data_stop_the_node(cluster):
    def by_server(ip, request, payloads):
        report = replace(OK_REPORT, etag=f"/dev/stdout {ip}")
        return ran(stdout=ip.encode(), report=report, colocated=ip)(ip, request, payloads)
    cluster.servers.answer = by_server
    status, headers, data = post(cluster.filter(), REPLICATED)
    assert (status, data) == (200, b"")
    assert headers["X-Nexe-Status"] == "replicas disagree (10.0.0.1 10.0.0.2)"
    assert headers["X-Nexe-Error"] == "node 'wc': its 2 copies wrote different data (10.0.0.1 10.0.0.2)"


def test_a_copy_with_no_other_replica_left_to_run_on_is_503(cluster):
    status, headers, data = post(cluster.filter(), [dict(WORDCOUNT[0], replicate=3)])   # two servers only
    assert status == 503
    assert one_line_reason(data) == "node 'wc': no object server could run it (copy 3 of replicate 3)"


def test_the_answer_has_the_md5_of_its_body_as_etag_and_says_it_ran_warm(cluster):
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert (status, data) == (200, b"hello\n")
    assert headers["Etag"] == hashlib.md5(b"hello\n").hexdigest()
    assert headers["X-Nexe-Cached"] == "true"


def test_the_etag_of_one_output_is_its_workers_md5_not_hashed_again(zc, cluster, monkeypatch):
    # The answer is made without an MD5 of its own: any would fail.
    monkeypatch.setattr(zc.response, "hashlib", types.SimpleNamespace(sha1=hashlib.sha1))
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert (status, data) == (200, b"hello\n")
    assert headers["Etag"] == hashlib.md5(b"hello\n").hexdigest()


def test_a_reply_without_digests_is_hashed_for_its_etag(cluster):
    cluster.servers.answer = ran(b"older worker\n", digests=False)
    status, headers, data = post(cluster.filter(), WORDCOUNT)
    assert (status, data) == (200, b"older worker\n")
    assert headers["Etag"] == hashlib.md5(b"older worker\n").hexdigest()


def test_a_devices_mode_char_or_pipe_reaches_the_executor_as_a_character_channel(cluster):
    job = [dict(WORDCOUNT[0], devices=[{"name": "stdin", "path": "swift://a/c/data.txt", "mode": "pipe"},
                                       {"name": "stdout", "mode": "file"}])]
    status, _, data = post(cluster.filter(), job)
    assert status == 200, data
    request = cluster.servers.executes[0]["request"]
    assert request.char == ("/dev/stdin",)
    assert protocol.RunRequest.from_wire(protocol.decode(protocol.pack(request.to_wire(), []))[0]).char == \
        ("/dev/stdin",)
