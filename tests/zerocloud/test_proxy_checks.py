"""What the proxy filter checks before a node runs, and what after.

Before: the caller's authorization for every object a node reads where it
is stored (its program, its colocated input), by the ACL check Swift's
object GET makes; a refusal and nothing runs.  After, before the node's
result counts: the objects' HEADs, which run beside it when its program is
in the proxy's cache.  A HEAD that refuses leaves nothing of the run
returned, stored or fed on; a program changed since the cached bytes runs
again with the new ones.  The fakes are test_proxy_filter.py's; here the
object servers also log each EXECUTE in the same list as the subrequests,
so the order of the two shows."""

import threading

import pytest

from zerolab.zerocloud import protocol

from .test_proxy_filter import OK_REPORT, make_cluster, one_line_reason, post, tempauth
from .test_proxy_spool import open_in

PROGRAM = "/v1/a/bin/wc.wasm"
V1, V2, V3 = b"\0asm\1\0\0\0 one", b"\0asm\1\0\0\0 two", b"\0asm\1\0\0\0 three"
JOB = [{"name": "count", "exec": {"path": "swift://a/bin/wc.wasm"},
        "devices": [{"name": "stdin", "path": "swift://a/c/data.txt"}, {"name": "stdout"}]}]


@pytest.fixture
def cluster(zc, monkeypatch, tmp_path):
    c = make_cluster(zc, monkeypatch)
    c.swift.objects[PROGRAM] = V1
    c.spool = str(tmp_path)
    c.servers.answer = program_says
    return c


def program_says(ip, request, payloads):
    """An object server whose program prints which program it is (its last word)."""
    words = payloads[0].split() if request.program.payload == 0 else [b"image"]
    outputs = [o.alias for o in request.outputs]
    data = [b"ran " + words[-1] + b"\n" for _ in outputs]
    return 200, protocol.pack(protocol.RunReply(OK_REPORT, tuple(outputs)).to_wire(), data), {}


def warm(cluster, mw):
    """One job run (on an input of its own), so that the proxy's cache has
    the program; the logs cleared."""
    cluster.swift.objects["/v1/a/w/warm"] = b"w\n"
    status, _, data = post(mw, [dict(JOB[0], devices=[{"name": "stdin", "path": "swift://a/w/warm"},
                                                      {"name": "stdout"}])])
    assert (status, data) == (200, b"ran one\n")
    cluster.swift.seen.clear()
    cluster.servers.executes.clear()


class Thread:
    """eventlet.spawn as a real thread: what runs in it may wait for what the caller does."""

    def __init__(self, fn, *args):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self.run, args=(fn, args), daemon=True)
        self.thread.start()

    def run(self, fn, args):
        try:
            self.value = fn(*args)
        except Exception as e:
            self.error = e

    def wait(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.value


# ------------------------------------------------------------- overlap
def test_a_cached_program_runs_before_the_objects_heads_answer(cluster, zc, monkeypatch):
    mw = cluster.filter()
    warm(cluster, mw)
    monkeypatch.setattr(zc.execution, "spawn", Thread)
    executed = threading.Event()
    waited = []
    answer, execute = cluster.swift.answer, cluster.servers.answer

    def head_after_execute(method, url, body, headers):
        if method == "HEAD":   # answers only once the EXECUTE has arrived (or 2 s later)
            waited.append(executed.wait(2))
        return answer(method, url, body, headers)

    def execute_and_open_the_heads(ip, request, payloads):
        executed.set()
        return execute(ip, request, payloads)
    monkeypatch.setattr(cluster.swift, "answer", head_after_execute)
    cluster.servers.answer = execute_and_open_the_heads
    status, _, data = post(mw, JOB)
    assert (status, data) == (200, b"ran one\n")
    assert waited == [True, True]   # both HEADs waited for the EXECUTE
    assert cluster.swift.seen[0] == ("EXECUTE", "/a/c/data.txt")
    assert sorted(cluster.swift.seen[1:]) == [("HEAD", PROGRAM), ("HEAD", "/v1/a/c/data.txt")]
    [sent] = cluster.servers.executes
    assert sent["payloads"] == [V1]


def test_an_uncached_program_is_headed_and_fetched_before_it_runs(cluster):
    status, _, data = post(cluster.filter(), JOB)
    assert (status, data) == (200, b"ran one\n")
    seen = cluster.swift.seen
    assert seen.index(("HEAD", PROGRAM)) < seen.index(("GET", PROGRAM)) < seen.index(("EXECUTE", "/a/c/data.txt"))
    assert seen.count(("EXECUTE", "/a/c/data.txt")) == 1


def test_instances_of_one_program_share_its_head_and_its_bytes(cluster):
    mw = cluster.filter()
    warm(cluster, mw)
    cluster.swift.objects["/v1/a/c/more.txt"] = b"three\n"
    job = [dict(JOB[0], devices=[{"name": "stdin", "path": "swift://a/c/*.txt"}, {"name": "stdout"}])]
    status, _, data = post(mw, job)
    assert (status, data) == (200, b"ran one\nran one\n")
    assert cluster.swift.seen.count(("HEAD", PROGRAM)) == 1
    assert ("GET", PROGRAM) not in cluster.swift.seen


# ---------------------------------------------------------- the ACL first
BOB = {"REMOTE_USER": "b,bob", "swift.authorize": tempauth}


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_a_program_the_acl_refuses_is_403_and_nothing_runs_even_from_the_cache(cluster, cached):
    mw = cluster.filter()
    if cached:
        warm(cluster, mw)   # alice's job put it in the cache
    cluster.swift.caller = "b,bob"
    cluster.swift.acls["/v1/a/c"] = "bob"   # bob may read the input, not the program
    status, headers, data = post(mw, JOB, path="/v1/b", env=BOB)
    assert status == 403
    assert one_line_reason(data) == "node 'count': not allowed to read swift://a/bin/wc.wasm (403 Fake)"
    assert cluster.servers.executes == []
    assert cluster.swift.seen == []   # no HEAD, no GET: the ACL said no


def test_an_anonymous_caller_refused_by_the_acl_is_401(cluster):
    cluster.swift.caller = None
    # A POST tempauth lets through (another middleware's doing), then the ACL.
    status, _, data = post(cluster.filter(), JOB, env={"REMOTE_USER": None, "swift.authorize": lambda req: (
        None if req.environ["REQUEST_METHOD"] == "POST" else tempauth(req))})
    assert status == 401 and "not allowed to read swift://a/bin/wc.wasm (401 Fake)" in one_line_reason(data)
    assert cluster.servers.executes == []


def test_what_the_acl_grants_runs(cluster):
    cluster.swift.caller = "b,bob"
    cluster.swift.acls.update({"/v1/a/c": "bob", "/v1/a/bin": ".r:*"})
    status, _, data = post(cluster.filter(), JOB, path="/v1/b", env=BOB)
    assert (status, data) == (200, b"ran one\n")


@pytest.mark.parametrize("caller, status, reason", [
    ("a,alice", 404, "node 'count': swift://a/nowhere/data.txt not found"),
    # Only one who may read the container learns that it is not there.
    ("b,bob", 403, "node 'count': not allowed to read swift://a/nowhere/data.txt (403 Fake)"),
])
def test_a_missing_container_is_404_to_its_reader_only(cluster, caller, status, reason):
    cluster.swift.caller = caller
    cluster.swift.acls["/v1/a/bin"] = ".r:*"
    job = [dict(JOB[0], devices=[{"name": "stdin", "path": "swift://a/nowhere/data.txt"}, {"name": "stdout"}])]
    got, _, data = post(cluster.filter(), job, path="/v1/" + caller[0],
                        env={"REMOTE_USER": caller, "swift.authorize": tempauth})
    assert (got, one_line_reason(data)) == (status, reason)
    assert cluster.servers.executes == []


# ------------------------------------------------ a HEAD that says no after
MAPREDUCE = [{"name": "map", "exec": {"path": "swift://a/bin/wc.wasm"},
              "devices": [{"name": "stdin", "path": "swift://a/c/*.txt"},
                          {"name": "output", "path": "swift://a/out/*.res"}],
              "connect": ["reduce"]},
             {"name": "reduce", "exec": {"path": "file://python:python"}, "devices": [{"name": "stdout"}]}]


@pytest.mark.parametrize("refusal, status, reason", [
    ("slo", 400, "node 'map-1': swift://a/c/data.txt is a large object or symlink; jobs read plain objects"),
    ("symlink", 400, "node 'map-1': swift://a/c/data.txt is a large object or symlink; jobs read plain objects"),
    ("403", 403, "node 'map-1': not allowed to read swift://a/c/data.txt (403 Fake)"),
    ("gone", 404, "node 'map-1': swift://a/c/data.txt not found"),
    ("too big", 413, "node 'map-1': swift://a/c/data.txt is 8 bytes, more than zerovm_maxinput (7)"),
])
def test_an_input_head_that_refuses_after_the_run_leaves_nothing_of_it(cluster, refusal, status, reason):
    mw = cluster.filter(zerovm_spool_dir=cluster.spool, zerovm_maxinput=7 if refusal == "too big" else 1000)
    warm(cluster, mw)
    cluster.swift.objects["/v1/a/c/more.txt"] = b"three\n"
    if refusal == "slo":
        cluster.swift.meta["/v1/a/c/data.txt"] = {"X-Static-Large-Object": "True"}
    elif refusal == "symlink":
        cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Location": "/v1/a/secret/data.txt"}
    elif refusal == "403":
        cluster.swift.forbidden.add("/v1/a/c/data.txt")
    elif refusal == "gone":   # deleted between the listing and the HEAD
        real = cluster.swift.answer

        def deleted(method, url, body, headers):
            return real(method, url + "-gone" if url == "/v1/a/c/data.txt" else url, body, headers)
        cluster.swift.answer = deleted
    got, headers, data = post(mw, MAPREDUCE)
    assert (got, one_line_reason(data)) == (status, reason)
    # Both mappers ran (their checks had not answered yet); neither output
    # was written, fed to the reducer or answered.
    assert [e["path"] for e in cluster.servers.executes] == ["/a/c/data.txt", "/a/c/more.txt"]
    assert not any(method == "PUT" for method, _ in cluster.swift.seen)
    assert not any(p.startswith("/v1/a/out/") for p in cluster.swift.objects)
    assert b"ran" not in data
    assert headers["X-Nexe-System"] == "map-1,map-2"
    assert headers["X-Nexe-Status"].split(",")[0] == reason.replace(",", ";")
    assert headers["X-Nexe-Colocated"].split(",")[0] == "0"
    assert open_in(cluster.spool) == []


def test_a_cached_program_whose_head_refuses_leaves_nothing_of_the_run(cluster):
    mw = cluster.filter(zerovm_spool_dir=cluster.spool)
    warm(cluster, mw)
    cluster.swift.forbidden.add(PROGRAM)
    job = [dict(JOB[0], devices=JOB[0]["devices"][:1] + [{"name": "stdout", "path": "swift://a/out/count"}])]
    status, headers, data = post(mw, job)
    assert (status, one_line_reason(data)) == (403, "node 'count': not allowed to read swift://a/bin/wc.wasm "
                                                    "(403 Fake)")
    assert len(cluster.servers.executes) == 1
    assert "/v1/a/out/count" not in cluster.swift.objects
    assert headers["X-Nexe-Cdr-Line"].split(", ")[1:] == ["0.000", "0 0 0 0 0 0 0 0 0 0"]   # no accounting shown
    assert open_in(cluster.spool) == []


# ---------------------------------------------------- a program overwritten
def test_a_program_overwritten_since_it_was_cached_runs_again_with_the_new_bytes(cluster):
    mw = cluster.filter(zerovm_spool_dir=cluster.spool)
    warm(cluster, mw)
    cluster.swift.objects[PROGRAM] = V2
    job = [dict(JOB[0], devices=JOB[0]["devices"][:1] + [{"name": "stdout", "path": "swift://a/out/count"}])]
    status, _, data = post(mw, job)
    assert (status, data) == (200, b"")
    assert [e["payloads"] for e in cluster.servers.executes] == [[V1], [V2]]
    assert cluster.swift.objects["/v1/a/out/count"] == b"ran two\n"
    assert [m for m, p in cluster.swift.seen if p == "/v1/a/out/count"] == ["PUT"]   # written once
    seen = cluster.swift.seen
    first, again = (i for i, e in enumerate(seen) if e[0] == "EXECUTE")
    assert first < seen.index(("GET", PROGRAM)) < again
    assert open_in(cluster.spool) == []
    # The cache has the new version now: the next job runs it at once.
    cluster.servers.executes.clear()
    assert post(mw, JOB)[2] == b"ran two\n"
    assert [e["payloads"] for e in cluster.servers.executes] == [[V2]]


def test_the_first_run_of_an_overwritten_program_gives_back_its_share_of_the_output_budget(cluster):
    reply = len(protocol.pack(protocol.RunReply(OK_REPORT, ("/dev/stdout",)).to_wire(), [b"ran one\n"]))
    mw = cluster.filter(zerovm_maxjoboutput=reply + reply // 2)   # one reply fits, two do not
    warm(cluster, mw)
    cluster.swift.objects[PROGRAM] = V2
    status, _, data = post(mw, JOB)
    assert (status, data) == (200, b"ran two\n")


def test_a_program_that_changes_twice_while_the_job_runs_is_503(cluster):
    mw = cluster.filter(zerovm_spool_dir=cluster.spool)
    warm(cluster, mw)
    cluster.swift.objects[PROGRAM] = V2
    real = cluster.swift.answer

    def changes_again(method, url, body, headers):
        resp = real(method, url, body, headers)
        if (method, url) == ("HEAD", PROGRAM):   # once the check has seen V2: V3
            cluster.swift.objects[PROGRAM] = V3
        return resp
    cluster.swift.answer = changes_again
    status, _, data = post(mw, JOB)
    assert (status, one_line_reason(data)) == (503, "node 'count': program swift://a/bin/wc.wasm changed "
                                                    "while the job ran")
    assert [e["payloads"] for e in cluster.servers.executes] == [[V1]]
    assert open_in(cluster.spool) == []
