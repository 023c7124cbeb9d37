"""A server that answers garbage, too little, too much or nothing: one line
on stderr and exit status 1, never a traceback.  Only 127.0.0.1 is used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zerolab.client import bundle as bundling
from zerolab.client import cli

from .conftest import RawServer
from .test_bundle import make_app_dir

NEXE = b"X-Nexe-System: hello\r\nX-Nexe-Status: ok\r\nX-Nexe-Retcode: 0\r\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("app")
    return bundling.bundle(str(make_app_dir(root / "hello")), str(root / "hello.zapp")).path


def execute(capsysbinary, server: RawServer, app: str, timeout: str = "5") -> tuple[int, bytes, str]:
    code = cli.main(["execute", app, "--os-storage-url", f"{server.url}/v1/AUTH_test",
                     "--os-auth-token", "AUTH_tk", "--timeout", timeout])
    got = capsysbinary.readouterr()
    return code, got.out, got.err.decode()


def one_line(code: int, err: str, server: RawServer | None = None) -> str:
    assert code == 1, err
    assert err.startswith("zerolab-app: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    line = err.removeprefix("zerolab-app: ").rstrip("\n")
    return line.replace(server.url, "URL") if server else line


@pytest.mark.parametrize("reply, reason", [
    (b"garbage\r\n\r\n", r"execute: URL: the answer is not HTTP \(it starts 'garbage\\r\\n'\)"),
    (b"hello world", r"execute: URL: the answer is not HTTP \(it starts 'hello world'\)"),
    (b"", "execute: URL: the server closed the connection without answering"),
    (b"HTTP/1.1 100 Continue\r\n\r\n", "execute: URL: the server closed the connection without answering"),
    (b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n", "execute: URL: the answer has a line longer than "
                                                               "HTTP allows"),
    (b"HTTP/1.1 200 OK\r\nX-Nexe-Retcode: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
     "execute: URL: the answer has a header that is not UTF-8"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "execute: the server answered 200 without "
                                                         "X-Nexe-Status and X-Nexe-Retcode: not zerocloud's answer "
                                                         "to a job"),
    (b"HTTP/1.1 200 OK\r\nX-Nexe-Status: ok\r\nX-Nexe-Retcode: zero\r\nContent-Length: 0\r\n\r\n",
     "execute: X-Nexe-Retcode 'zero' is not a list of numbers"),
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 47\r\n\r\n<html>\n<body>\n<p>broken\x1b[31m</p>"
     b"</body></html>\n", r"execute: 500 Internal Server Error: broken\\x1b\[31m"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "execute: 503 Service Unavailable"),
    (b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\n\n\n", "execute: 999 Whatever"),
    (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 20\r\n\r\n" + b"x" * 5, "execute: 401 Unauthorized: xxxxx"),
])
def test_a_broken_answer_is_one_line(capsysbinary, app, reply, reason):
    with RawServer(reply) as server:
        code, out, err = execute(capsysbinary, server, app)
    assert out == b""
    assert re.fullmatch(reason, one_line(code, err, server)), err


def test_a_body_cut_short_after_the_headers_is_reported_after_what_came(capsysbinary, app):
    reply = b"HTTP/1.1 200 OK\r\n" + NEXE + b"Content-Length: 100\r\n\r\nonly this"
    with RawServer(reply) as server:
        code, out, err = execute(capsysbinary, server, app)
    assert code == 1 and out == b"only this"
    lines = err.splitlines()
    assert lines[:3] == ["X-Nexe-System: hello", "X-Nexe-Status: ok", "X-Nexe-Retcode: 0"]
    assert lines[3:] == [f"zerolab-app: execute: {server.url}: the connection closed before the whole answer came"]


def test_a_broken_chunked_body_is_one_line_too(capsysbinary, app):
    reply = b"HTTP/1.1 200 OK\r\n" + NEXE + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n"
    with RawServer(reply) as server:
        code, out, err = execute(capsysbinary, server, app)
    assert code == 1 and err.splitlines()[-1].startswith(f"zerolab-app: execute: {server.url}: ")


def test_an_answer_without_a_length_is_read_until_the_connection_closes(capsysbinary, app):
    with RawServer(b"HTTP/1.1 200 OK\r\n" + NEXE + b"\r\nbody until close") as server:
        code, out, err = execute(capsysbinary, server, app)
    assert (code, out) == (0, b"body until close")


@pytest.mark.parametrize("status", [b"301 Moved Permanently", b"307 Temporary Redirect"])
def test_a_redirect_is_not_followed_with_the_token(capsysbinary, app, status):
    with RawServer() as elsewhere:
        reply = b"HTTP/1.1 %s\r\nLocation: %s/v1/AUTH_evil\r\nContent-Length: 0\r\n\r\n" % (
            status, elsewhere.url.encode())
        with RawServer(reply) as server:
            code, out, err = execute(capsysbinary, server, app)
        assert elsewhere.connections == 0
    assert one_line(code, err) == f"execute: {status.decode()}"


def test_a_server_that_never_answers_times_out(capsysbinary, app):
    with RawServer(hold=True) as server:
        code, out, err = execute(capsysbinary, server, app, timeout="0.5")
    assert one_line(code, err, server) == "execute: URL: no answer within 0.5 seconds"


def test_nothing_listening_is_one_line(capsysbinary, app):
    with RawServer() as server:
        url = server.url
    code = cli.main(["execute", app, "--os-storage-url", f"{url}/v1/AUTH_test", "--os-auth-token", "t"])
    err = capsysbinary.readouterr().err.decode()
    assert one_line(code, err) == f"execute: {url}: Connection refused"


@pytest.mark.parametrize("reply, reason", [
    (b"xx\r\n\r\n", r"auth: URL: the answer is not HTTP \(it starts 'xx\\r\\n'\)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhtml",
     "auth: 'URL/auth/v1.0' answered without X-Storage-Url and X-Auth-Token; is it a Swift v1 auth URL\\?"),
    (b"HTTP/1.1 200 OK\r\nX-Storage-Url: ftp://x/v1/A\r\nX-Auth-Token: t\r\nContent-Length: 0\r\n\r\n",
     "auth: the storage URL 'ftp://x/v1/A' is not an http:// or https:// URL"),
    (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 35\r\n\r\n<html><h1>Unauthorized</h1></html>\n",
     "auth: 401 Unauthorized"),
])
def test_a_broken_auth_answer_is_one_line(capsysbinary, app, reply, reason):
    with RawServer(reply) as server:
        code = cli.main(["execute", app, "-A", f"{server.url}/auth/v1.0", "-U", "u", "-K", "k", "--timeout", "5"])
    err = capsysbinary.readouterr().err.decode()
    assert re.fullmatch(reason, one_line(code, err, server)), err


STATUS_LINES = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda status, reason: b"HTTP/1.1 %d %s" % (status, reason),
              st.integers(min_value=-5, max_value=1200), st.binary(max_size=20)))
HEADER_LINES = st.lists(st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"X-Nexe-Status: ok", b"X-Nexe-Retcode: 0", b"X-Nexe-Retcode: 0,1", b"Content-Length: 3",
                     b"Content-Length: -1", b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked",
                     b"Content-Encoding: gzip", b"X-Nexe-System: a\xffb", b"Connection: close"])), max_size=8)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(STATUS_LINES, HEADER_LINES, st.binary(max_size=200))
def test_any_answer_is_a_clean_exit_never_a_traceback(capsysbinary, app, status, headers, body):
    reply = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body
    with RawServer(reply) as server:
        code, out, err = execute(capsysbinary, server, app, timeout="2")
    assert code in (0, 1)
    assert "Traceback" not in err and "internal error" not in err
    ours = [line for line in err.splitlines() if line.startswith("zerolab-app: ")]
    others = [line for line in err.splitlines() if not line.startswith("zerolab-app: ")]
    assert len(ours) <= 1 and all(line.startswith(("X-Nexe-", "X-Zerovm-")) for line in others), err
    assert code == 0 or ours or others   # a failure always says something


def test_the_fuzzed_app_is_a_real_one(app):
    assert Path(app).read_bytes()[:2] == b"\x1f\x8b"
