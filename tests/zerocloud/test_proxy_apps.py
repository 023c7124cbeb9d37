"""The proxy filter with what ZeroCloud ran besides a JSON job: an app POSTed
as a tar, a job named by X-Zerovm-Source, and open/1.0 GET execution.  The
fake Swift and object servers of test_proxy_filter."""

import gzip
import io
import json
import time

import pytest

from zerolab.zerocloud import protocol
from zerolab.zerocloud.job import JobError

from .test_apps import TEMPLATE, app_of
from .test_proxy_filter import make_cluster, one_line_reason, post, ran


@pytest.fixture
def cluster(zc, monkeypatch):
    return make_cluster(zc, monkeypatch)


def get(mw, path, query="", headers=None, user="alice", env=None):
    """A GET by ``user``; /open/... paths need no header (``env`` adds to its environ)."""
    env = dict({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "REMOTE_USER": user,
                "wsgi.input": io.BytesIO(b""), "swift.trans_id": "tx1"}, **(env or {}))
    env.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    got = {}
    data = b"".join(mw(env, lambda status, hdrs: got.update(status=status, headers=dict(hdrs))))
    return int(got["status"].split()[0]), got["headers"], data


# ------------------------------------------------------------------- apps
@pytest.mark.parametrize("content_type, pack", [("application/x-tar", lambda t: t),
                                                ("application/gzip", gzip.compress)])
def test_a_posted_app_runs_its_map_with_the_tar_as_every_nodes_image(cluster, content_type, pack):
    tar = app_of()
    status, headers, data = post(cluster.filter(), pack(tar), content_type=content_type)
    assert (status, data) == (200, b"hello\n"), data
    [sent] = cluster.servers.executes
    request = sent["request"]
    assert request.program == protocol.ProgramSource(payload=0, path="bin/hello.wasm")
    assert request.program_name == "file://image:bin/hello.wasm"
    assert request.images == (protocol.ExtraImage(0),)
    assert sent["payloads"] == [tar]   # unpacked once, in the proxy


def test_an_app_posted_to_an_object_is_400(cluster):
    status, _, data = post(cluster.filter(), app_of(), path="/v1/a/c/o", content_type="application/x-tar")
    assert status == 400 and one_line_reason(data) == "POST an app (a tar) to /v1/<account>, not to an object"


def test_an_app_over_zerovm_maxnexe_is_413_before_it_is_read(cluster):
    status, _, data = post(cluster.filter(zerovm_maxnexe=4096), app_of(), content_type="application/x-tar")
    assert status == 413 and "zerovm_maxnexe" in one_line_reason(data)
    assert cluster.servers.executes == []


# -------------------------------------------------------- X-Zerovm-Source
STDIN_JOB = [{"name": "cat", "exec": {"path": "file://python:python", "args": "cat.py"},
              "devices": [{"name": "stdin"}, {"name": "stdout"}]}]


def test_a_source_job_reads_the_posted_body_as_its_pathless_stdin(cluster):
    cluster.swift.objects["/v1/a/jobs/cat.json"] = json.dumps(STDIN_JOB).encode()
    cluster.swift.meta["/v1/a/jobs/cat.json"] = {"Content-Type": "application/json"}
    status, _, data = post(cluster.filter(), b"posted data", content_type="text/plain",
                           headers={"X-Zerovm-Source": "swift://./jobs/cat.json"})
    assert (status, data) == (200, b"hello\n"), data
    assert ("GET", "/v1/a/jobs/cat.json") in cluster.swift.seen   # fetched as the caller
    [sent] = cluster.servers.executes
    assert sent["request"].inputs == (protocol.InputChannel("/dev/stdin", payload=0),)
    assert sent["payloads"] == [b"posted data"]


def test_a_source_app_stored_without_a_tar_type_is_still_an_app(cluster):
    cluster.swift.objects["/v1/a/apps/hello.zapp"] = gzip.compress(app_of())
    status, _, data = post(cluster.filter(), b"", content_type="", headers={"X-Zerovm-Source": "swift://a/apps/hello.zapp"})
    assert (status, data) == (200, b"hello\n"), data
    assert cluster.servers.executes[0]["request"].program == protocol.ProgramSource(payload=0, path="bin/hello.wasm")


def test_a_source_script_reads_the_posted_body_as_stdin(cluster):
    cluster.swift.objects["/v1/a/jobs/run.py"] = b"#!file://python:python\nprint(1)\n"
    status, _, data = post(cluster.filter(), b"in", content_type="text/plain",
                           headers={"X-Zerovm-Source": "swift://a/jobs/run.py"})
    assert (status, data) == (200, b"hello\n"), data
    [sent] = cluster.servers.executes
    assert sent["request"].inputs == (protocol.InputChannel("/script", payload=0),
                                      protocol.InputChannel("/dev/stdin", payload=1))


@pytest.mark.parametrize("source, forbidden, status, reason", [
    ("swift://a/jobs/none.json", (), 404, "X-Zerovm-Source: swift://a/jobs/none.json not found"),
    ("swift://a/jobs/secret.json", ("/v1/a/jobs/secret.json",), 403, None),
    ("swift://a/jobs/*.json", (), 400, "X-Zerovm-Source names one object; it cannot have a wildcard"),
    ("/v1/a/jobs/cat.json", (), 400, None),
])
def test_a_source_that_cannot_be_read_is_a_4xx_and_nothing_runs(cluster, source, forbidden, status, reason):
    cluster.swift.objects["/v1/a/jobs/secret.json"] = json.dumps(STDIN_JOB).encode()
    cluster.swift.forbidden.update(forbidden)
    got, _, data = post(cluster.filter(), b"x", content_type="text/plain", headers={"X-Zerovm-Source": source})
    assert got == status
    line = one_line_reason(data)
    assert reason is None or line == reason
    assert cluster.servers.executes == []


def test_a_source_body_over_zerovm_maxjobinput_is_413(cluster):
    cluster.swift.objects["/v1/a/jobs/cat.json"] = json.dumps(STDIN_JOB).encode()
    status, _, data = post(cluster.filter(zerovm_maxjobinput=100), b"x" * 200, content_type="text/plain",
                           headers={"X-Zerovm-Source": "swift://a/jobs/cat.json"})
    assert status == 413 and "zerovm_maxjobinput" in one_line_reason(data)


# ---------------------------------------------------------------- open/1.0
def test_a_get_of_a_program_runs_it_with_the_querys_args_and_type(cluster):
    cluster.swift.meta["/v1/a/bin/wc.wasm"] = {"Content-Type": "application/wasm"}
    status, headers, data = get(cluster.filter(), "/open/a/bin/wc.wasm", "args=-l%20-w&content_type=text/csv")
    assert (status, data) == (200, b"hello\n"), data
    assert headers["Content-Type"].startswith("text/csv")
    [sent] = cluster.servers.executes
    assert sent["request"].args == ("open", "-l", "-w")
    assert sent["request"].program == protocol.ProgramSource(payload=0)
    assert sent["request"].env["QUERY_STRING"] == "args=-l%20-w&content_type=text/csv"
    assert sent["request"].env["REQUEST_METHOD"] == "GET"


def test_a_get_runs_the_accounts_template_for_the_objects_type_next_to_it(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    status, _, data = get(cluster.filter(), "/v1/a/c/data.txt", "format=html",
                          headers={"X-Zerovm-Execute": "open/1.0"})
    assert (status, data) == (200, b"hello\n"), data
    [sent] = cluster.servers.executes
    assert sent["path"] == "/a/c/data.txt"   # next to the object, read as stdin
    assert sent["request"].args == ("show", "show.py", "html")
    assert sent["request"].env["PATH_INFO"] == "/a/c/data.txt"


def test_a_get_of_an_app_runs_its_map(cluster):
    cluster.swift.objects["/v1/a/apps/hello.zapp"] = app_of()
    cluster.swift.meta["/v1/a/apps/hello.zapp"] = {"Content-Type": "application/x-tar"}
    status, _, data = get(cluster.filter(), "/open/a/apps/hello.zapp")
    assert (status, data) == (200, b"hello\n"), data


def test_a_get_of_a_type_nothing_is_registered_for_is_404_saying_where_to_register(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    status, _, data = get(cluster.filter(), "/open/a/c/data.txt")
    assert status == 404
    assert one_line_reason(data) == ("open/1.0: no application registered for text/plain: put a job template "
                                     "at /v1/a/.zvm/text/plain/config")
    assert cluster.servers.executes == []


@pytest.mark.parametrize("path, status", [("/open/a/c", 400), ("/open/a/c/x*y", 400), ("/open/a/c/none", 404)])
def test_a_get_of_no_object_is_a_4xx(cluster, path, status):
    got, _, data = get(cluster.filter(), path)
    assert got == status
    one_line_reason(data)
    assert cluster.servers.executes == []


def test_a_get_of_an_object_the_caller_may_not_read_runs_nothing(cluster):
    cluster.swift.forbidden.add("/v1/a/c/data.txt")
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    status, _, data = get(cluster.filter(), "/open/a/c/data.txt")
    assert status == 403
    assert cluster.servers.executes == []


def test_a_template_filled_over_zerovm_maxconfig_is_413(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = b'["' + b"{.x}" * 100 + b'"]'
    status, _, data = get(cluster.filter(zerovm_maxconfig=1000), "/open/a/c/data.txt", "x=" + "y" * 100)
    assert status == 413 and "shorten the query string" in one_line_reason(data)


def test_a_plain_get_passes_through(cluster):
    status, headers, _ = get(cluster.filter(), "/v1/a/c/data.txt")
    assert status == 204 and headers.get("X-Passed") == "yes"
    assert cluster.swift.seen == [("app", "GET", "/v1/a/c/data.txt")]


# ------------------------------------------------- who may run (review fixes)
def test_a_temporary_url_or_an_unjudged_override_cannot_run_jobs(cluster):
    cluster.swift.meta["/v1/a/bin/wc.wasm"] = {"Content-Type": "application/wasm"}
    for env in ({"REMOTE_USER": ".wsgi.tempurl", "swift.authorize": lambda req: None},
                {"swift.authorize_override": True}):
        status, _, data = post(cluster.filter(), app_of(), content_type="application/x-tar", env=env)
        assert status == 403, data
        mw = cluster.filter()
        got = get(mw, "/v1/a/bin/wc.wasm", headers={"X-Zerovm-Execute": "open/1.0"}, env=env)
        assert got[0] == 403
    assert cluster.servers.executes == []


def test_a_get_execution_needs_the_right_to_run_jobs_in_the_account_not_only_to_read(zc, cluster):
    from .test_proxy_filter import tempauth
    cluster.swift.meta["/v1/a/bin/wc.wasm"] = {"Content-Type": "application/wasm"}
    cluster.swift.acls["/v1/a/bin"] = ".r:*"   # anyone may read it
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/open/a/bin/wc.wasm", "QUERY_STRING": "", "REMOTE_USER": "bob",
           "wsgi.input": io.BytesIO(b""), "swift.trans_id": "tx1", "swift.authorize": tempauth}
    cluster.swift.caller = "bob"
    status = {}
    b"".join(cluster.filter()(env, lambda s, h: status.update(s=s)))
    assert status["s"].startswith("403")
    assert cluster.servers.executes == []


def test_a_source_that_is_a_job_is_bounded_by_zerovm_maxconfig(cluster):
    cluster.swift.objects["/v1/a/jobs/big.json"] = b"[" + b" " * 70000 + b"]"
    cluster.swift.meta["/v1/a/jobs/big.json"] = {"Content-Type": "application/json"}
    status, _, data = post(cluster.filter(), b"", content_type="", headers={"X-Zerovm-Source": "swift://a/jobs/big.json"})
    assert status == 413 and "zerovm_maxconfig" in one_line_reason(data)


def test_an_empty_body_with_a_source_is_an_empty_stdin(cluster):
    cluster.swift.objects["/v1/a/jobs/cat.json"] = json.dumps(STDIN_JOB).encode()
    cluster.swift.meta["/v1/a/jobs/cat.json"] = {"Content-Type": "application/json"}
    status, _, data = post(cluster.filter(), b"", content_type="", headers={"X-Zerovm-Source": "swift://a/jobs/cat.json"})
    assert status == 200, data
    assert cluster.servers.executes[0]["request"].inputs == (protocol.InputChannel("/dev/stdin", payload=0),)


def test_an_apps_unpacked_bytes_count_against_zerovm_maxjobinput(cluster):
    big = app_of(**{"blob.bin": b"\0" * (2 << 20)})   # 2 MiB of zeros: a few KiB gzipped
    status, _, data = post(cluster.filter(zerovm_maxjobinput=1 << 20), gzip.compress(big),
                           content_type="application/gzip")
    assert status == 413 and "zerovm_maxjobinput" in one_line_reason(data)


def test_path_parts_are_the_names_the_wsgi_path_spells(zc):
    req = zc.proxy.Request({"PATH_INFO": "/v1/a/c/x y\xc3\xa9*"})   # UTF-8 read as Latin-1, as WSGI has it
    assert zc.proxy.path_parts(req, 4, 4) == ["v1", "a", "c", "x yé*"]
    with pytest.raises(JobError) as e:
        zc.proxy.path_parts(zc.proxy.Request({"PATH_INFO": "/v1/a/\xff"}), 2, 4)
    assert e.value.status == 400


# ------------------------------------------------ open/1.0: round trips saved
def test_a_get_execution_heads_its_object_once(cluster):
    """The instance that reads the object where it is stored is checked with
    the HEAD the GET made before anything ran, not a second one."""
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    status, _, data = get(cluster.filter(), "/open/a/c/data.txt")
    assert (status, data) == (200, b"hello\n"), data
    assert cluster.swift.seen.count(("HEAD", "/v1/a/c/data.txt")) == 1


def test_a_repeated_get_execution_runs_the_template_it_kept_without_fetching_it(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    template = ("GET", "/v1/a/.zvm/text/plain/config")
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    assert cluster.swift.seen.count(template) == 1
    status, _, data = get(mw, "/open/a/c/data.txt")
    assert (status, data) == (200, b"hello\n"), data
    assert cluster.swift.seen.count(template) == 1   # kept: no second subrequest
    assert cluster.servers.executes[-1]["request"].args == ("show", "show.py", "xml")
    # Past zerovm_template_cache seconds it is read again.
    mw.templates.clock = lambda: time.monotonic() + 61
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    assert cluster.swift.seen.count(template) == 2


def test_a_repeated_get_execution_runs_at_once_with_its_objects_head_beside(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    assert mw.opened_types == {"swift://a/c/data.txt": "text/plain"}
    del cluster.swift.seen[:]
    status, headers, data = get(mw, "/open/a/c/data.txt")
    assert (status, data) == (200, b"hello\n"), data
    # One HEAD (the run's check) and one run: nothing made twice.
    assert cluster.swift.seen.count(("HEAD", "/v1/a/c/data.txt")) == 1
    assert [entry[0] for entry in cluster.swift.seen].count("EXECUTE") == 1
    assert headers["X-Nexe-Colocated"] != "0"


def test_an_object_gone_since_its_last_get_execution_is_the_same_404(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    del cluster.swift.objects["/v1/a/c/data.txt"], cluster.swift.meta["/v1/a/c/data.txt"]
    gone = get(mw, "/open/a/c/data.txt")
    never = get(cluster.filter(), "/open/a/c/data.txt")
    assert gone[0] == never[0] == 404
    assert one_line_reason(gone[2]) == one_line_reason(never[2])
    assert mw.opened_types == {}


def test_a_template_that_connects_is_always_run_from_the_objects_head(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    pipeline = [{"name": "show", "exec": {"path": "file://python:python", "args": "show.py"}, "connect": ["sum"],
                 "devices": [{"name": "stdin", "path": "{.object_path}"}]},
                {"name": "sum", "exec": {"path": "file://python:python", "args": "sum.py"},
                 "devices": [{"name": "stdout"}]}]
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = json.dumps(pipeline).encode()
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    assert mw.opened_types == {}


def test_an_object_whose_type_changed_runs_its_new_types_template(cluster):
    cluster.swift.objects["/v1/a/c/data"] = b"a,b\n"
    cluster.swift.meta["/v1/a/c/data"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    cluster.swift.objects["/v1/a/.zvm/text/csv/config"] = TEMPLATE.replace(b"show.py", b"table.py")
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data")[0] == 200
    cluster.swift.meta["/v1/a/c/data"] = {"Content-Type": "text/csv"}
    cluster.servers.answer = lambda ip, request, payloads: ran(" ".join(request.args).encode())(ip, request, payloads)
    runs = len(cluster.servers.executes)
    status, _, data = get(mw, "/open/a/c/data")
    # Run first as the text/plain it was (its HEAD beside), that run dropped
    # unanswered, then from its HEAD as the text/csv it is.
    assert [e["request"].args[1] for e in cluster.servers.executes[runs:]] == ["show.py", "table.py"]
    assert (status, data) == (200, b"show table.py xml"), data
    # A type with no template: the 404 names that type's place, though the
    # templates of the types before are kept.
    cluster.swift.meta["/v1/a/c/data"] = {"Content-Type": "text/x-other"}
    status, _, data = get(mw, "/open/a/c/data")
    assert status == 404
    assert one_line_reason(data) == ("open/1.0: no application registered for text/x-other: put a job template "
                                     "at /v1/a/.zvm/text/x-other/config")


@pytest.mark.parametrize("seconds, later", [("0", 0), ("60", 61)])
def test_a_template_removed_is_404_once_it_is_no_longer_kept(cluster, seconds, later):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    mw = cluster.filter(zerovm_template_cache=seconds)
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    del cluster.swift.objects["/v1/a/.zvm/text/plain/config"]
    if later:   # kept until then, as ZeroCloud kept it
        assert get(mw, "/open/a/c/data.txt")[0] == 200
        mw.templates.clock = lambda: time.monotonic() + later
    status, _, data = get(mw, "/open/a/c/data.txt")
    assert status == 404 and "put a job template at /v1/a/.zvm/text/plain/config" in one_line_reason(data)


def test_a_template_put_after_a_404_runs_at_once(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 404
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    assert get(mw, "/open/a/c/data.txt")[0] == 200


def test_a_kept_template_counts_against_zerovm_maxjobinput(cluster):
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    mw = cluster.filter(zerovm_maxjobinput=len(TEMPLATE) - 1)
    for _ in range(2):   # fetched, then kept: the same 413 either way
        status, _, data = get(mw, "/open/a/c/data.txt")
        assert status == 413 and "zerovm_maxjobinput" in one_line_reason(data), data


def test_an_object_the_caller_may_no_longer_read_returns_nothing_of_a_run(cluster):
    # Run again as the type it had, its HEAD beside the run (as a POSTed
    # job's): that HEAD refuses, nothing of the run is answered, and the GET
    # is made again from a HEAD, which answers.
    cluster.swift.meta["/v1/a/c/data.txt"] = {"Content-Type": "text/plain"}
    cluster.swift.objects["/v1/a/.zvm/text/plain/config"] = TEMPLATE
    mw = cluster.filter()
    assert get(mw, "/open/a/c/data.txt")[0] == 200
    cluster.swift.forbidden.add("/v1/a/c/data.txt")
    status, _, data = get(mw, "/open/a/c/data.txt")
    assert status == 403 and b"hello" not in data
    assert one_line_reason(data)


