"""A job's outputs through the proxy filter are never held whole: spooled as
they arrive (response.Spool), streamed to the client, to a reducer and to a
PUT a piece at a time, capped per job by zerovm_maxjoboutput, and the spool
files are gone once the answer is closed, however early.  The fakes are
test_proxy_filter.py's; the object servers here answer with replies made up
as they are read, so that the test holds no output whole either."""

import functools
import hashlib
import io
import json
import os
import struct
import tracemalloc

import pytest

from zerolab.zerocloud import protocol

from .test_proxy_filter import OK_REPORT, WORDCOUNT, make_cluster, one_line_reason, post, ran

MiB = 1 << 20
BLOCK = bytes(range(251)) * 4   # a pattern that no piece size divides


def pattern(start, n):
    """Bytes start..start+n of an endless repetition of BLOCK."""
    out = bytearray()
    pos = start % len(BLOCK)
    while len(out) < n:
        out += BLOCK[pos:pos + n - len(out)]
        pos = 0
    return bytes(out)


@functools.cache
def digest_of(size, algorithm="sha256"):
    h = hashlib.new(algorithm)
    for start in range(0, size, MiB):
        h.update(pattern(start, min(MiB, size - start)))
    return h.hexdigest()


class StreamedReply:
    """An object server's 200 to an EXECUTE: the reply header, then outputs
    of the given sizes made of the pattern, produced only as they are read."""

    status = 200

    def __init__(self, outputs, report=OK_REPORT, length=True, cut=0, digests=False):
        aliases = tuple(alias for alias, _ in outputs)
        self.sizes = [size for _, size in outputs]
        # digests: each output's MD5 in the reply, as the worker sends it
        md5s = tuple(digest_of(size, "md5") for size in self.sizes) if digests else ()
        head = json.dumps(dict(protocol.RunReply(report, aliases, md5s).to_wire(), payloads=self.sizes)).encode()
        self.head = struct.pack("!I", len(head)) + head
        self.total = len(self.head) + sum(self.sizes)
        self.end = self.total - cut   # cut: the connection drops that many bytes early
        self.pos = 0
        self.headers = {"X-Nexe-Colocated": "c0c0"}
        if length:
            self.headers["Content-Length"] = str(self.total)

    def read(self, n):
        n = min(n, self.end - self.pos)
        if n <= 0:
            return b""
        if self.pos < len(self.head):
            piece = self.head[self.pos:self.pos + n]
        else:   # every payload is the pattern, from its own start
            offset = self.pos - len(self.head)
            for size in self.sizes:
                if offset < size:
                    piece = pattern(offset, min(n, size - offset))
                    break
                offset -= size
        self.pos += len(piece)
        return piece

    def getheader(self, name):
        return self.headers.get(name)

    def close(self):
        self.closed = True


def answering(outputs_for, **kwargs):
    """Object servers that give every instance the outputs ``outputs_for(request)`` names."""
    def answer(ip, request, payloads):
        return StreamedReply(outputs_for(request), **kwargs)
    return answer


def stdout_of(size):
    return answering(lambda request: [("/dev/stdout", size)])


@pytest.fixture
def cluster(zc, monkeypatch, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    c = make_cluster(zc, monkeypatch)
    c.spool = str(spool)
    return c


def start(mw, body):
    """The filter called as a WSGI server would: (status, headers, the body's iterable, unread)."""
    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/a", "wsgi.input": io.BytesIO(json.dumps(body).encode()),
           "CONTENT_TYPE": "application/json", "HTTP_X_ZEROVM_EXECUTE": "1.0", "REMOTE_USER": "alice",
           "swift.trans_id": "tx1"}
    got = {}
    body_iter = mw(env, lambda status, headers: got.update(status=status, headers=dict(headers)))
    return int(got["status"].split()[0]), got["headers"], body_iter


def open_in(directory):
    """The files this process has open in ``directory`` (spool files have no
    name there: they show as deleted), with their sizes."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(directory + "/"):
                found.append(os.fstat(int(fd)).st_size)
        except OSError:
            pass   # the descriptor listdir itself used
    return found


# ------------------------------------------------------------ big outputs
def test_a_large_output_comes_back_whole_through_a_spool_file_and_little_memory(cluster):
    size = 16 * MiB + 12345
    cluster.servers.answer = stdout_of(size)
    mw = cluster.filter(zerovm_spool_dir=cluster.spool, zerovm_maxoutput=64 * MiB, zerovm_maxjoboutput=64 * MiB)
    tracemalloc.start()
    try:
        status, headers, body = start(mw, WORDCOUNT)
        assert status == 200
        # Headers first, the body still on disk: the whole output in one unnamed file.
        assert headers["Content-Length"] == str(size)
        assert headers["X-Nexe-Status"] == "ok"
        assert open_in(cluster.spool) == [size]
        h = hashlib.sha256()
        got = 0
        for piece in body:
            assert len(piece) <= 64 << 10
            h.update(piece)
            got += len(piece)
        body.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == size and h.hexdigest() == digest_of(size)
    # What the proxy held at once: a few pieces, not the 16 MiB output.
    assert peak < 2 * MiB, peak
    assert open_in(cluster.spool) == []


def test_small_outputs_stay_in_memory_and_outputs_follow_one_another(cluster):
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 1000), ("/dev/output", 3000)])
    job = [dict(WORDCOUNT[0], devices=WORDCOUNT[0]["devices"] + [{"name": "output"}])]
    status, headers, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), job)
    assert status == 200 and open_in(cluster.spool) == []   # under 64 KiB: no file at all
    data = b"".join(body)
    assert data == pattern(0, 1000) + pattern(0, 3000)
    assert headers["Content-Length"] == "4000"


# ------------------------------------------- one instance: straight through
def replying(outputs, **kwargs):
    """Object servers whose every reply is one StreamedReply with digests, kept to look at."""
    replies = []

    def answer(ip, request, payloads):
        replies.append(StreamedReply(outputs, digests=True, **kwargs))
        return replies[-1]
    return answer, replies


def test_one_instances_output_goes_straight_to_the_caller_with_its_workers_md5(cluster):
    size = 16 * MiB + 12345
    cluster.servers.answer, replies = replying([("/dev/stdout", size)])
    mw = cluster.filter(zerovm_spool_dir=cluster.spool, zerovm_maxoutput=64 * MiB, zerovm_maxjoboutput=64 * MiB)
    digest_of(size, "md5")   # the fake's digest, made before the proxy's memory is traced
    tracemalloc.start()
    try:
        status, headers, body = start(mw, WORDCOUNT)
        assert status == 200
        assert headers["Content-Length"] == str(size) and headers["X-Nexe-Status"] == "ok"
        assert headers["Etag"] == digest_of(size, "md5")
        assert replies[0].pos < 64 << 10   # headers sent before the output was read
        h = hashlib.sha256()
        for piece in body:
            assert len(piece) <= 64 << 10
            assert open_in(cluster.spool) == []   # never spooled
            h.update(piece)
        body.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.hexdigest() == digest_of(size)
    assert peak < 2 * MiB, peak
    assert replies[0].closed


def test_outputs_not_answered_are_read_and_dropped_on_the_way(cluster):
    # stdout is answered; the stderr the job does not name comes back too (a
    # worker may send it) and must not reach the body.
    cluster.servers.answer, _ = replying([("/dev/stderr", 70000), ("/dev/stdout", 100000)])
    status, headers, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert (status, data) == (200, pattern(0, 100000))
    assert headers["Etag"] == hashlib.md5(data).hexdigest()


def test_a_client_that_goes_away_hangs_up_on_the_object_server(cluster):
    cluster.servers.answer, replies = replying([("/dev/stdout", 4 * MiB)])
    status, _, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    pieces = iter(body)
    assert status == 200 and next(pieces) == pattern(0, 64 << 10)
    body.close()
    assert replies[0].closed and replies[0].pos < MiB


def test_a_reply_its_heads_refuse_is_hung_up_on_unread(cluster):
    cluster.swift.forbidden.add("/v1/a/c/data.txt")   # its HEAD, beside the run, refuses
    cluster.servers.answer, replies = replying([("/dev/stdout", 4 * MiB)])
    status, _, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 403 and pattern(0, 100) not in data
    assert replies[0].closed and replies[0].pos < 64 << 10


def test_a_reply_cut_short_on_the_way_ends_the_body_with_an_error(cluster):
    cluster.servers.answer, replies = replying([("/dev/stdout", 2 * MiB)], cut=1000)
    status, headers, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 200 and headers["Content-Length"] == str(2 * MiB)
    with pytest.raises(protocol.ProtocolError, match="message length does not match its header"):
        b"".join(body)   # the WSGI server drops the connection: the client sees a short body
    assert replies[0].closed


def test_two_answered_outputs_are_spooled_and_hashed_together(cluster):
    cluster.servers.answer, _ = replying([("/dev/stdout", 1000), ("/dev/output", 3000)])
    job = [dict(WORDCOUNT[0], devices=WORDCOUNT[0]["devices"] + [{"name": "output"}])]
    status, headers, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), job)
    assert (status, data) == (200, pattern(0, 1000) + pattern(0, 3000))
    assert headers["Etag"] == hashlib.md5(data).hexdigest()


# --------------------------------------------------------------- the cap
@pytest.mark.parametrize("length", [True, False], ids=["by-content-length", "by-the-header-lengths"])
def test_a_job_over_zerovm_maxjoboutput_is_413_with_one_line_and_nothing_left(cluster, length):
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 3 * MiB)], length=length)
    mw = cluster.filter(zerovm_spool_dir=cluster.spool, zerovm_maxjoboutput=MiB)
    status, headers, data = post(mw, WORDCOUNT)
    assert status == 413
    reason = f"node 'wc': outputs of this job exceed zerovm_maxjoboutput ({MiB} bytes)"
    assert one_line_reason(data) == reason
    assert headers["X-Nexe-Error"] == reason
    assert len(cluster.servers.executes) == 1   # another replica would answer the same
    assert open_in(cluster.spool) == []


def test_the_cap_is_for_the_whole_job_not_each_instance(cluster):
    cluster.swift.objects["/v1/a/c/more.txt"] = b"three\n"
    # Each reply fits alone; the two together do not.  No Content-Length:
    # the second goes over while it is being read.
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 600 << 10)], length=False)
    job = [dict(WORDCOUNT[0], devices=[{"name": "stdin", "path": "swift://a/c/*.txt"}, {"name": "stdout"}])]
    status, headers, data = post(cluster.filter(zerovm_spool_dir=cluster.spool, zerovm_maxjoboutput=MiB), job)
    assert status == 413
    assert one_line_reason(data).endswith(f"outputs of this job exceed zerovm_maxjoboutput ({MiB} bytes)")
    assert headers["X-Nexe-System"] == "wc-1,wc-2"
    assert open_in(cluster.spool) == []


def test_a_reply_shorter_than_its_header_says_is_a_bad_reply_and_not_retried(cluster):
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 2 * MiB)], cut=1000)
    status, _, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 503
    assert one_line_reason(data) == ("node 'wc': bad reply from 10.0.0.1: "
                                     "message length does not match its header")
    assert len(cluster.servers.executes) == 1
    assert open_in(cluster.spool) == []


# ------------------------------------------------------- closing the spools
def test_the_spool_file_is_gone_when_the_client_stops_reading_early(cluster):
    cluster.servers.answer = stdout_of(4 * MiB)
    status, _, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 200 and open_in(cluster.spool) == [4 * MiB]
    pieces = iter(body)
    assert next(pieces) == pattern(0, 64 << 10)
    body.close()   # what the WSGI server does when the client goes away
    assert open_in(cluster.spool) == []


def test_the_spool_file_is_gone_when_the_body_is_closed_unread(cluster):
    cluster.servers.answer = stdout_of(MiB)
    status, _, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 200 and open_in(cluster.spool) == [MiB]
    body.close()
    assert open_in(cluster.spool) == []


def test_the_spool_file_is_gone_once_the_body_is_read_to_the_end(cluster):
    cluster.servers.answer = stdout_of(MiB)
    _, _, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert sum(map(len, body)) == MiB
    assert open_in(cluster.spool) == []


def test_a_node_that_could_not_run_answers_the_tail_of_its_stderr_and_closes_its_spools(cluster):
    report = protocol.JobReport(exit_code=5, exit_state="invalid program: not wasm", user_rc=0, validator=1,
                                etag="disable", elapsed=0.1, cdr="0.00 0.00 0 0 0 0 0 0 0 0")
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 2 * MiB), ("/dev/stderr", 300 << 10)],
                                       report=report)
    status, _, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 400
    tail = pattern((300 << 10) - 2000, 2000).decode("utf-8", "replace")
    assert data.decode() == "node 'wc': invalid program: not wasm\nstderr:\n" + tail + "\n"
    assert open_in(cluster.spool) == []


def test_a_node_stopped_by_a_limit_drops_its_spooled_outputs_at_once(cluster):
    report = protocol.JobReport(exit_code=6, exit_state="timeout: ran longer than 10 s", user_rc=0, validator=0,
                                etag="disable", elapsed=10.0, cdr="9.00 1.00 0 0 0 0 0 0 0 0")
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", 2 * MiB)], report=report)
    status, headers, body = start(cluster.filter(zerovm_spool_dir=cluster.spool), WORDCOUNT)
    assert status == 200 and b"".join(body) == b""
    assert open_in(cluster.spool) == []


# ------------------------------------------------- outputs sent onward
def test_outputs_written_as_objects_arrive_whole(cluster):
    size = 5 * MiB + 7
    cluster.servers.answer = answering(lambda request: [("/dev/stdout", size), ("/dev/stderr", 0)])
    job = [{"name": "copy", "exec": {"path": "file://python:python"},
            "devices": [{"name": "stdin", "path": "swift://a/c/data.txt"},
                        {"name": "stdout", "path": "swift://a/out/big.bin"},
                        {"name": "stderr", "path": "swift://a/out/empty.txt", "content_type": "text/plain"}]}]
    status, _, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), job)
    assert (status, data) == (200, b"")
    stored = cluster.swift.objects["/v1/a/out/big.bin"]
    assert len(stored) == size and hashlib.sha256(stored).hexdigest() == digest_of(size)
    assert cluster.swift.objects["/v1/a/out/empty.txt"] == b""   # an empty PUT still says its length
    assert open_in(cluster.spool) == []


def test_a_mappers_large_stdout_reaches_its_reducer_whole(cluster):
    size = 3 * MiB + 1

    def answer(ip, request, payloads):
        if request.args[0] == "map":
            return StreamedReply([("/dev/stdout", size)])
        return ran(b"reduced\n")(ip, request, payloads)
    cluster.servers.answer = answer
    job = [{"name": "map", "exec": {"path": "file://python:python"},
            "devices": [{"name": "stdin", "path": "swift://a/c/data.txt"}], "connect": ["reduce"]},
           {"name": "reduce", "exec": {"path": "file://python:python"}, "devices": [{"name": "stdout"}]}]
    status, headers, data = post(cluster.filter(zerovm_spool_dir=cluster.spool), job)
    assert (status, data) == (200, b"reduced\n")
    assert headers["X-Nexe-System"] == "map,reduce"
    reduce = cluster.servers.executes[-1]
    assert reduce["request"].inputs == (protocol.InputChannel("/dev/in-map", payload=0),
                                        protocol.InputChannel("/dev/in/map", payload=1))
    fed, out = reduce["payloads"]
    assert out == b""   # map wrote nothing to /dev/out/reduce
    assert len(fed) == size and hashlib.sha256(fed).hexdigest() == digest_of(size)
    assert open_in(cluster.spool) == []


def test_a_spool_dir_that_is_not_a_directory_is_refused_at_start(cluster, tmp_path):
    with pytest.raises(ValueError, match="zerovm_spool_dir"):
        cluster.filter(zerovm_spool_dir=str(tmp_path / "missing"))


def test_the_body_md5_is_the_one_taken_as_it_arrived_or_read_again_for_several_outputs(tmp_path):
    from zerolab.zerocloud.response import Segment, Spool, body_md5
    spool = Spool(str(tmp_path), memory=4)
    spool.append(b"hello ")
    spool.append(b"world\n")
    one = Segment(spool, 0, 6, hashlib.md5(b"hello ").hexdigest())
    two = Segment(spool, 6, 6)
    assert body_md5([one]) == hashlib.md5(b"hello ").hexdigest()
    assert body_md5([two]) == hashlib.md5(b"world\n").hexdigest()   # not taken: read
    assert body_md5([one, two]) == hashlib.md5(b"hello world\n").hexdigest()
    assert body_md5([]) == hashlib.md5(b"").hexdigest()
    spool.close()
