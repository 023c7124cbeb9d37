"""The proxy filter's own bounds (zerolab.zerocloud.proxy) without Swift: the
listing scan, the output budget on an object server's reply, the program
cache, and the one generic line of a 500.  Swift and eventlet are not
installed where these tests run, so the filter is imported against the
stand-ins of conftest.py (the ``zc`` fixture); the real pipeline is
exercised by the swift Molecule scenario."""

import json

import pytest

from zerolab.zerocloud import job
from zerolab.zerocloud.job import JobError, SwiftPath

from .conftest import FakeResponse


def middleware(zc, **conf):
    return zc.proxy.ProxyQueryMiddleware(app=None, conf={k: str(v) for k, v in conf.items()})


def call(mw, env=None):
    env = dict({"REQUEST_METHOD": "POST", "HTTP_X_ZEROVM_EXECUTE": "1.0", "swift.trans_id": "tx123"}, **(env or {}))
    got = {}
    body = b"".join(mw(env, lambda status, headers: got.update(status=status)))
    return got["status"], body.decode()


# ------------------------------------------------------------------- 500
def test_a_bug_is_one_generic_line_with_the_transaction_id(zc, monkeypatch):
    mw = middleware(zc)

    def broken(req, execute, started):
        raise KeyError("/etc/swift/secret-internal-path")
    monkeypatch.setattr(mw, "handle", broken)
    status, body = call(mw)
    assert status.startswith("500")
    assert body == "zerocloud internal error (transaction tx123); the proxy log has the details\n"
    assert "secret" not in body and "KeyError" not in body
    assert mw.logger.logged == ["zerocloud: internal error in transaction tx123"]


def test_a_job_error_is_its_status_and_one_line(zc, monkeypatch):
    mw = middleware(zc)

    def refused(req, execute, started):
        raise JobError(413, "too\nmany  things")
    monkeypatch.setattr(mw, "handle", refused)
    status, body = call(mw)
    assert status.startswith("413")
    assert body == "too many things\n"


@pytest.mark.parametrize("conf", [{"zerovm_maxnodes": job.MAX_NODES + 1}, {"zerovm_maxnodes": 0},
                                  {"zerovm_maxjoboutput": 0}, {"zerovm_max_listing": -1}])
def test_a_configuration_without_bounds_is_refused_at_start(zc, conf):
    with pytest.raises(ValueError):
        middleware(zc, **conf)


# --------------------------------------------------------------- listing
class Container:
    """A container listing served a page at a time, as Swift does, counting requests."""

    def __init__(self, names):
        self.names = sorted(names)
        self.queries = []

    def sub(self, req, method, path, body=b"", headers=None, query=""):
        self.queries.append(query)
        params = dict(p.split("=", 1) for p in query.split("&"))
        marker, limit = params["marker"], int(params["limit"])
        page = [n for n in self.names if n > marker][:limit]
        if not page:
            return FakeResponse(204)
        return FakeResponse(200, json.dumps([{"name": n, "bytes": 1} for n in page]).encode())


def test_listing_pages_through_and_keeps_what_matches(zc, monkeypatch):
    mw = middleware(zc)
    box = Container([f"log-{i:05d}" for i in range(2500)] + ["part-7.txt", "zz-part-1.txt"])
    monkeypatch.setattr(mw.objects, "sub", box.sub)
    assert mw.objects.list_objects(None, SwiftPath("a", "c", "*part-*.txt")) == ["part-7.txt", "zz-part-1.txt"]
    assert all(f"limit={zc.subrequests.LISTING_PAGE}" in q for q in box.queries)
    assert len(box.queries) == 3


def test_listing_scans_at_most_zerovm_max_listing_names(zc, monkeypatch):
    mw = middleware(zc, zerovm_max_listing=2500)
    box = Container([f"log-{i:06d}" for i in range(100_000)])
    monkeypatch.setattr(mw.objects, "sub", box.sub)
    with pytest.raises(JobError) as e:
        mw.objects.list_objects(None, SwiftPath("a", "c", "*.txt"))
    assert e.value.status == 413
    assert "zerovm_max_listing (2500)" in e.value.reason
    assert len(box.queries) == 3


def test_listing_matches_over_zerovm_maxnodes_are_413(zc, monkeypatch):
    mw = middleware(zc, zerovm_maxnodes=10)
    box = Container([f"part-{i}" for i in range(50)])
    monkeypatch.setattr(mw.objects, "sub", box.sub)
    with pytest.raises(JobError) as e:
        mw.objects.list_objects(None, SwiftPath("a", "c", "part-*"))
    assert e.value.status == 413 and "zerovm_maxnodes (10)" in e.value.reason


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"name": "x"}', b"[" * 50000, b"\xff"])
def test_a_listing_that_is_not_json_is_503_not_a_traceback(zc, monkeypatch, body):
    mw = middleware(zc)
    monkeypatch.setattr(mw.objects, "sub", lambda *a, **k: FakeResponse(200, body))
    with pytest.raises(JobError) as e:
        mw.objects.list_objects(None, SwiftPath("a", "c", "*"))
    assert e.value.status == 503 and "not a JSON listing" in e.value.reason


def test_a_listing_whose_marker_does_not_move_ends(zc, monkeypatch):
    mw = middleware(zc)
    same = json.dumps([{"name": "a"}] * zc.subrequests.LISTING_PAGE).encode()
    calls = []

    def stuck(*a, **k):
        calls.append(1)
        return FakeResponse(200, same)
    monkeypatch.setattr(mw.objects, "sub", stuck)
    with pytest.raises(JobError):   # every "a" matches: over zerovm_maxnodes before any loop
        mw.objects.list_objects(None, SwiftPath("a", "c", "*"))
    assert mw.objects.list_objects(None, SwiftPath("a", "c", "b*")) == []
    assert len(calls) <= 3


# ---------------------------------------------------------- object server
class Reply:
    """An object server's reply as http.client gives it: read in pieces."""

    def __init__(self, data, status=200, length=True):
        self.data, self.status = data, status
        self.headers = {"Content-Length": str(len(data))} if length else {}

    def read(self, n):
        piece, self.data = self.data[:n], self.data[n:]
        return piece

    def getheader(self, name):
        return self.headers.get(name)


def budget(limit=1000):
    return job.Budget(limit, f"outputs of this job exceed zerovm_maxjoboutput ({limit} bytes)")


def test_a_reply_within_the_budget_is_counted(zc):
    b = budget()
    assert zc.routing.read_reply(Reply(b"x" * 600), b) == b"x" * 600
    assert b.used == 600


@pytest.mark.parametrize("length", [True, False])
def test_a_reply_over_the_budget_is_413_and_nothing_is_kept(zc, monkeypatch, length):
    monkeypatch.setattr(zc.routing, "REPLY_PIECE", 100)
    b = budget()
    b.take(500)
    with pytest.raises(JobError) as e:
        zc.routing.read_reply(Reply(b"x" * 600, length=length), b)
    assert e.value.status == 413 and e.value.reason == "outputs of this job exceed zerovm_maxjoboutput (1000 bytes)"
    assert b.used == 500


class Connection:
    def __init__(self, reply):
        self.sent = []
        self.reply = reply

    def send(self, data):
        self.sent.append(bytes(data))

    def getresponse(self):
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


NODE = {"ip": "10.0.0.1", "port": 6200, "device": "sdb1"}


def test_send_sends_pieces_and_answers_413_when_the_job_is_over_budget(zc, monkeypatch):
    mw = middleware(zc)
    conns = []

    def connect(reply):
        def http_connect(*a, **k):
            conns.append(Connection(reply))
            return conns[-1]
        monkeypatch.setattr(zc.routing, "http_connect", http_connect)

    b = budget(1000)
    send = mw.object_servers.send
    connect(Reply(b"y" * 300))
    assert send(NODE, 0, "/a", {}, [b"head", b"program", b"input"], b) == zc.routing.Answer(200, "", b"y" * 300, "0")
    assert conns[-1].sent == [b"head", b"program", b"input"]
    connect(Reply(b"y" * 800))
    answer = send(NODE, 0, "/a", {}, [b"h"], b)
    assert (answer.status, answer.body) == (413, b"") and "zerovm_maxjoboutput" in answer.reason
    assert b.used == 300
    connect(Reply(b"busy\nnow", status=429))
    answer = send(NODE, 0, "/a", {}, [b"h"], b)
    assert (answer.status, answer.reason) == (429, "busy now")
    assert b.used == 300
    connect(OSError("connection refused"))
    assert send(NODE, 0, "/a", {}, [b"h"], b).status == 503
    assert b.used == 300


# ---------------------------------------------------------------- fetches
def test_body_of_reads_at_most_the_limit_and_closes(zc):
    closed = []

    class Stream:
        def __init__(self):
            self.read = 0

        def __iter__(self):
            for _ in range(1000):
                self.read += 1
                yield b"z" * 100

        def close(self):
            closed.append(True)
    stream = Stream()
    assert zc.subrequests.body_of(FakeResponse(200, app_iter=stream), 250) is None
    assert stream.read == 3 and closed == [True]
    assert zc.subrequests.body_of(FakeResponse(200, b"small"), 250) == b"small"


def test_programs_count_once_per_job_and_the_cache_is_bounded_in_bytes(zc, monkeypatch):
    nexe = 1000
    mw = middleware(zc, zerovm_maxnexe=nexe)
    gets = []
    monkeypatch.setattr(mw.objects, "check_readable", lambda req, path, what: FakeResponse(200, headers={"Etag": "e"}))

    def sub(req, method, path, **k):
        gets.append(str(path))
        return FakeResponse(200, b"w" * nexe)
    monkeypatch.setattr(mw.objects, "sub", sub)
    cost = zc.subrequests.JobCost(10 * nexe, 10 * nexe)
    for i in range(8):
        for _ in range(3):   # three instances of each program: fetched and counted once
            mw.objects.program(None, cost, SwiftPath("a", "bin", f"p{i}.wasm"), "node")
    assert len(gets) == 8
    assert cost.inputs.used == 8 * nexe
    assert sum(map(len, mw.objects.programs.values())) <= 4 * nexe
    with pytest.raises(JobError) as e:   # the job's budget: 10 programs' worth
        for i in range(8, 11):
            mw.objects.program(None, cost, SwiftPath("a", "bin", f"p{i}.wasm"), "node")
    assert e.value.status == 413 and "zerovm_maxjobinput" in e.value.reason


# ------------------------------------------------------- what ZeroCloud also had
@pytest.mark.parametrize("method", ["HEAD", "PUT", "POST", "DELETE"])
def test_open_on_another_method_than_get_is_400_not_the_object_itself(zc, method):
    # Passing it on would answer with the object (or change it): a silent
    # and different answer from ZeroCloud's.
    status, body = call(middleware(zc), {"REQUEST_METHOD": method, "HTTP_X_ZEROVM_EXECUTE": "open/1.0",
                                         "PATH_INFO": "/v1/AUTH_test/c/o"})
    assert status.startswith("400")
    assert "open/1.0 runs a program on a GET" in body and body.count("\n") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_execute_1_0_on_another_method_than_post_is_400(zc, method):
    status, body = call(middleware(zc), {"REQUEST_METHOD": method, "HTTP_X_ZEROVM_EXECUTE": "1.0",
                                         "PATH_INFO": "/v1/AUTH_test/c/o"})
    assert status.startswith("400")
    assert "POST a job, or GET with open/1.0" in body and body.count("\n") == 1
