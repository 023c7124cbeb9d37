"""zerolab-app deploy and execute against FakeSwift on 127.0.0.1: the exact
requests sent (auth, container, object, job), the outputs and exit codes."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from zerolab.client import bundle as bundling
from zerolab.client import cli

from .conftest import KEY, TOKEN, USER, FakeSwift
from .test_bundle import SYSTEM_MAP, make_app_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(tmp_path) -> Path:
    src = make_app_dir(tmp_path / "hello")
    return Path(bundling.bundle(str(src), str(tmp_path / "hello.zapp")).path)


@pytest.fixture
def v1_env(monkeypatch, fake_swift):
    monkeypatch.setenv("ST_AUTH", fake_swift.auth_url)
    monkeypatch.setenv("ST_USER", USER)
    monkeypatch.setenv("ST_KEY", KEY)


def run(capsysbinary, *args: str) -> tuple[int, bytes, str]:
    code = cli.main(list(args))
    got = capsysbinary.readouterr()
    return code, got.out, got.err.decode()


def one_line(code: int, err: str, status: int = 1) -> str:
    assert code == status, err
    assert err.startswith("zerolab-app: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return err.removeprefix("zerolab-app: ").rstrip("\n")


AUTH = ("GET", "/auth/v1.0")


def assert_auth(fake: FakeSwift) -> None:
    first = fake.seen[0]
    assert (first.method, first.path) == AUTH
    assert first.headers["x-auth-user"] == USER and first.headers["x-auth-key"] == KEY


# ------------------------------------------------------------------ deploy
def test_deploy_authenticates_creates_the_container_and_puts_the_app(capsysbinary, fake_swift, v1_env, app):
    code, out, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp")
    assert (code, err) == (0, "")
    data = app.read_bytes()
    etag = hashlib.md5(data).hexdigest()
    assert out.decode() == f"deployed {app} to swift://AUTH_test/apps/hello.zapp ({len(data)} bytes, " \
                           f"application/gzip, etag {etag})\n"
    assert fake_swift.requests == [AUTH, ("HEAD", "/v1/AUTH_test/apps"), ("PUT", "/v1/AUTH_test/apps"),
                                   ("PUT", "/v1/AUTH_test/apps/hello.zapp")]
    assert_auth(fake_swift)
    head, container, obj = fake_swift.seen[1:]
    assert all(s.headers["x-auth-token"] == TOKEN for s in (head, container, obj))
    assert container.headers["content-length"] == "0" and container.body == b""
    assert obj.headers["content-type"] == "application/gzip"
    assert obj.headers["etag"] == etag
    assert obj.headers["content-length"] == str(len(data)) and obj.body == data
    assert fake_swift.containers[("AUTH_test", "apps")]["hello.zapp"] == (data, "application/gzip")


def test_deploy_leaves_an_existing_container_alone(capsysbinary, fake_swift, v1_env, app):
    fake_swift.containers[("AUTH_test", "apps")] = {}
    assert run(capsysbinary, "deploy", str(app), "swift://./apps/hello.zapp")[0] == 0
    assert fake_swift.requests == [AUTH, ("HEAD", "/v1/AUTH_test/apps"), ("PUT", "/v1/AUTH_test/apps/hello.zapp")]


def test_deploy_to_another_account_uses_its_url_on_the_same_cluster(capsysbinary, fake_swift, v1_env, app):
    code, out, _ = run(capsysbinary, "deploy", str(app), "swift://AUTH_other/shared/apps/hello v2.zapp")
    assert code == 0 and b"to swift://AUTH_other/shared/apps/hello v2.zapp (" in out
    assert fake_swift.requests == [AUTH, ("HEAD", "/v1/AUTH_other/shared"), ("PUT", "/v1/AUTH_other/shared"),
                                   ("PUT", "/v1/AUTH_other/shared/apps/hello%20v2.zapp")]


def test_deploy_a_plain_tar_says_so_in_its_content_type(capsysbinary, fake_swift, v1_env, app, tmp_path):
    import gzip

    tar = tmp_path / "hello.tar"
    tar.write_bytes(gzip.decompress(app.read_bytes()))
    assert run(capsysbinary, "deploy", str(tar), "apps/hello.tar")[0] == 0
    assert fake_swift.seen[-1].headers["content-type"] == "application/x-tar"


def test_a_refused_put_is_one_line_with_the_status_and_the_servers_reason(capsysbinary, fake_swift, v1_env, app):
    fake_swift.refuse[("PUT", "/v1/AUTH_test/apps/hello.zapp")] = (403, b"Forbidden: no write access\nmore\n")
    code, out, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp")
    assert out == b""
    assert one_line(code, err) == "PUT object: 403 Forbidden: Forbidden: no write access"


def test_a_head_refusal_other_than_404_still_tries_the_put(capsysbinary, fake_swift, v1_env, app):
    fake_swift.containers[("AUTH_test", "apps")] = {}
    fake_swift.refuse[("HEAD", "/v1/AUTH_test/apps")] = (403, b"")
    assert run(capsysbinary, "deploy", str(app), "apps/hello.zapp")[0] == 0
    assert fake_swift.requests[-1] == ("PUT", "/v1/AUTH_test/apps/hello.zapp")


@pytest.mark.parametrize("target, reason", [
    ("apps", "the deploy target 'apps' must be CONTAINER/OBJECT or swift://ACCOUNT/CONTAINER/OBJECT"),
    ("/hello.zapp", "the deploy target '/hello.zapp' must be CONTAINER/OBJECT or swift://ACCOUNT/CONTAINER/OBJECT"),
    ("http://x/apps/hello", "the deploy target 'http://x/apps/hello' must be CONTAINER/OBJECT or "
                            "swift://ACCOUNT/CONTAINER/OBJECT"),
    ("swift://AUTH_test/apps", "the deploy target: 'swift://AUTH_test/apps' must name an object: "
                               "swift://account/container/object"),
    ("apps/a*.zapp", "the deploy target: 'swift://./apps/a*.zapp' has * in the object name; an app is one "
                     "object (X-Zerovm-Source cannot name a wildcard)"),
    ("apps/bad\nname", "the deploy target: 'swift://./apps/bad\\nname' has a control character; Swift names "
                       "are printable text"),
])
def test_a_bad_target_is_a_usage_error_and_sends_nothing(capsysbinary, fake_swift, v1_env, app, target, reason):
    code, out, err = run(capsysbinary, "deploy", str(app), target)
    assert one_line(code, err, status=2) == reason
    assert fake_swift.seen == []


@pytest.mark.parametrize("content, reason", [
    (b"not an app at all" * 40, "is not an app: the app is not a readable tar (ReadError)"),
    (None, "cannot open the app"),
])
def test_a_file_that_is_not_an_app_is_refused_before_anything_is_sent(capsysbinary, fake_swift, v1_env,
                                                                         tmp_path, content, reason):
    path = tmp_path / "x.zapp"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(capsysbinary, "deploy", str(path), "apps/x.zapp")
    assert reason in one_line(code, err)
    assert fake_swift.seen == []


def test_an_app_that_is_a_directory_is_refused(capsysbinary, fake_swift, v1_env, tmp_path):
    code, _, err = run(capsysbinary, "deploy", str(tmp_path), "apps/x.zapp")
    assert one_line(code, err) == f"the app {str(tmp_path)!r} is a directory"


# ------------------------------------------------------------------ auth
def test_wrong_credentials_are_one_line_with_the_auth_status(capsysbinary, fake_swift, monkeypatch, app):
    monkeypatch.setenv("ST_AUTH", fake_swift.auth_url)
    monkeypatch.setenv("ST_USER", USER)
    monkeypatch.setenv("ST_KEY", "wrong")
    code, _, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp")
    assert one_line(code, err) == (   # Swift's HTML, as its text
        "auth: 401 Unauthorized: Unauthorized This server could not verify that you are authorized to access "
        "the document you requested.")
    assert fake_swift.requests == [AUTH]


def test_options_override_the_environment(capsysbinary, fake_swift, monkeypatch, app):
    monkeypatch.setenv("ST_AUTH", "http://127.0.0.1:1/auth/v1.0")
    monkeypatch.setenv("ST_USER", "someone:else")
    monkeypatch.setenv("ST_KEY", "wrong")
    monkeypatch.setenv("OS_STORAGE_URL", "http://127.0.0.1:1/v1/AUTH_nobody")
    monkeypatch.setenv("OS_AUTH_TOKEN", "stale")
    code, _, err = run(capsysbinary, "-A", fake_swift.auth_url, "deploy", str(app), "apps/hello.zapp",
                       "-U", USER, "--key", KEY)
    assert (code, err) == (0, "")
    assert_auth(fake_swift)


def test_a_storage_url_and_token_are_used_as_they_are(capsysbinary, fake_swift, monkeypatch, app):
    monkeypatch.setenv("OS_STORAGE_URL", fake_swift.storage_url)
    monkeypatch.setenv("OS_AUTH_TOKEN", TOKEN)
    assert run(capsysbinary, "deploy", str(app), "apps/hello.zapp")[0] == 0
    assert fake_swift.requests[0] == ("HEAD", "/v1/AUTH_test/apps")   # no auth request
    assert fake_swift.seen[0].headers["x-auth-token"] == TOKEN


@pytest.mark.parametrize("args, env, reason", [
    ([], {}, "no credentials: give -A URL -U USER -K KEY (or set ST_AUTH, ST_USER, ST_KEY), or "
             "--os-storage-url and --os-auth-token (OS_STORAGE_URL, OS_AUTH_TOKEN)"),
    (["-U", USER], {}, "v1 auth needs -A (ST_AUTH), -K (ST_KEY) too"),
    ([], {"ST_AUTH": "ftp://127.0.0.1/auth", "ST_USER": USER, "ST_KEY": KEY},
     "the auth URL 'ftp://127.0.0.1/auth' is not an http:// or https:// URL"),
    ([], {"OS_STORAGE_URL": "127.0.0.1/v1/AUTH_test", "OS_AUTH_TOKEN": TOKEN},
     "the storage URL '127.0.0.1/v1/AUTH_test' is not an http:// or https:// URL"),
    ([], {"OS_STORAGE_URL": "http://127.0.0.1:1/v1/AUTH_test", "OS_AUTH_TOKEN": "AUTH_tk\r\nX-Evil: 1"},
     "the token has a control character (a newline?); it cannot go in an HTTP header"),
    (["-A", "http://127.0.0.1:1/auth/v1.0", "-U", USER, "-K", "sec\nret"], {},
     "the key has a control character (a newline?); it cannot go in an HTTP header"),
    (["--timeout", "0"], {}, "--timeout 0: give seconds, more than 0 and at most a day"),
    (["--timeout", "nan"], {}, "--timeout nan: give seconds, more than 0 and at most a day"),
])
def test_missing_or_bad_credentials_are_usage_errors(capsysbinary, monkeypatch, app, args, env, reason):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code, _, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp", *args)
    assert one_line(code, err, status=2) == reason


def test_an_auth_answer_without_a_storage_url_is_refused(capsysbinary, fake_swift, monkeypatch, app):
    fake_swift.refuse[AUTH] = (200, b"")
    code, _, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp", "-A", fake_swift.auth_url,
                       "-U", USER, "-K", KEY)
    assert one_line(code, err) == (f"auth: {fake_swift.auth_url!r} answered without X-Storage-Url and "
                                   f"X-Auth-Token; is it a Swift v1 auth URL?")


# ------------------------------------------------------------------ execute
def test_execute_posts_a_local_app_as_the_job(capsysbinary, fake_swift, v1_env, app):
    code, out, err = run(capsysbinary, "execute", str(app))
    assert code == 0
    assert out == b"Hello from the sandbox\n"
    assert err == "X-Nexe-System: hello\nX-Nexe-Status: ok\nX-Nexe-Retcode: 0\n"
    assert fake_swift.requests == [AUTH, ("POST", "/v1/AUTH_test")]
    post = fake_swift.seen[1]
    assert post.headers["x-auth-token"] == TOKEN
    assert post.headers["x-zerovm-execute"] == "1.0"
    assert post.headers["content-type"] == "application/gzip"
    assert "x-zerovm-source" not in post.headers
    assert post.body == app.read_bytes()


def test_execute_runs_a_deployed_app_by_x_zerovm_source_with_stdin_as_the_body(capsysbinary, fake_swift, v1_env,
                                                                                 app, tmp_path):
    assert run(capsysbinary, "deploy", str(app), "apps/hello.zapp")[0] == 0
    fake_swift.seen.clear()
    data = tmp_path / "input.txt"
    data.write_bytes(b"one two three\n" * 1000)
    code, out, err = run(capsysbinary, "execute", "swift://AUTH_test/apps/hello.zapp", "--stdin", str(data))
    assert (code, out) == (0, b"Hello from the sandbox\n")
    assert fake_swift.requests == [AUTH, ("POST", "/v1/AUTH_test")]
    post = fake_swift.seen[1]
    assert post.headers["x-zerovm-execute"] == "1.0"
    assert post.headers["x-zerovm-source"] == "swift://AUTH_test/apps/hello.zapp"
    assert post.headers["content-length"] == str(len(data.read_bytes()))
    assert post.body == data.read_bytes()


def test_execute_without_stdin_sends_an_empty_body(capsysbinary, fake_swift, v1_env, app):
    fake_swift.containers[("AUTH_test", "apps")] = {"hello.zapp": (app.read_bytes(), "application/gzip")}
    assert run(capsysbinary, "execute", "swift://./apps/hello.zapp")[0] == 0
    post = fake_swift.seen[1]
    assert post.headers["x-zerovm-source"] == "swift://./apps/hello.zapp"
    assert post.headers.get("content-length", "0") == "0" and post.body == b""


def test_execute_reads_stdin_from_a_pipe_with_dash(capsysbinary, fake_swift, v1_env, app, monkeypatch):
    fake_swift.containers[("AUTH_test", "apps")] = {"hello.zapp": (app.read_bytes(), "application/gzip")}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped\n")))
    assert run(capsysbinary, "execute", "swift://~/apps/hello.zapp", "--stdin", "-")[0] == 0
    assert fake_swift.seen[1].body == b"piped\n"


def test_a_source_name_outside_ascii_goes_as_utf8(capsysbinary, fake_swift, v1_env, app):
    assert run(capsysbinary, "deploy", str(app), "apps/héllo.zapp")[0] == 0
    assert fake_swift.seen[-1].path == "/v1/AUTH_test/apps/h%C3%A9llo.zapp"
    assert run(capsysbinary, "execute", "swift://AUTH_test/apps/héllo.zapp")[0] == 0
    sent = fake_swift.seen[-1].headers["x-zerovm-source"]
    assert sent.encode("latin-1").decode("utf-8") == "swift://AUTH_test/apps/héllo.zapp"


@pytest.mark.parametrize("headers, code", [
    ({"X-Nexe-System": "map-1,map-2,reduce", "X-Nexe-Status": "ok,ok,ok", "X-Nexe-Retcode": "0,0,0"}, 0),
    ({"X-Nexe-System": "map-1,map-2,reduce", "X-Nexe-Status": "ok,ok,ok", "X-Nexe-Retcode": "0,3,0"}, 1),
    ({"X-Nexe-System": "hello", "X-Nexe-Status": "crash: unreachable", "X-Nexe-Retcode": "0"}, 1),
    ({"X-Nexe-System": "hello", "X-Nexe-Status": "ok", "X-Nexe-Retcode": "-1"}, 1),
])
def test_the_exit_status_is_0_only_when_every_node_ended_ok_with_0(capsysbinary, fake_swift, v1_env, app,
                                                                     headers, code):
    fake_swift.job.headers = headers
    got, out, err = run(capsysbinary, "execute", str(app))
    assert got == code and out == b"Hello from the sandbox\n"
    assert err == "".join(f"{k}: {v}\n" for k, v in headers.items())


def test_ignored_keys_are_shown_too(capsysbinary, fake_swift, v1_env, app):
    fake_swift.job.headers = dict(fake_swift.job.headers, **{"X-Zerovm-Ignored": "hello: colour"})
    assert run(capsysbinary, "execute", str(app))[2].endswith("X-Zerovm-Ignored: hello: colour\n")


def test_a_refused_job_is_one_line_with_the_status_and_reason(capsysbinary, fake_swift, v1_env):
    code, out, err = run(capsysbinary, "execute", "swift://AUTH_test/apps/missing.zapp")
    assert out == b""
    assert one_line(code, err) == "execute: 404 Not Found: X-Zerovm-Source: swift://AUTH_test/apps/missing.zapp " \
                                  "is not there"


def test_a_failed_node_gives_its_reason_line_not_its_stderr(capsysbinary, fake_swift, v1_env, app):
    fake_swift.job.status = 408
    fake_swift.job.headers = {"X-Nexe-Error": "hello: timeout after 10 s", "Content-Type": "text/plain"}
    fake_swift.job.body = b"hello: timeout after 10 s\nstderr:\nTraceback (most recent call last):\n  ...\n"
    code, out, err = run(capsysbinary, "execute", str(app))
    assert out == b""
    assert one_line(code, err) == "execute: 408 Request Timeout: hello: timeout after 10 s"


def test_an_account_post_without_zerocloud_is_not_taken_for_a_job(capsysbinary, fake_swift, v1_env, app):
    fake_swift.job.status, fake_swift.job.body = 204, b""
    code, _, err = run(capsysbinary, "execute", str(app))
    assert one_line(code, err) == ("execute: the server answered 204 No Content, not a job's answer (is "
                                   "zerocloud in the proxy's pipeline?)")


def test_a_200_without_nexe_headers_is_not_taken_for_a_job(capsysbinary, fake_swift, v1_env, app):
    fake_swift.job.headers = {"Content-Type": "text/html"}
    fake_swift.job.body = b"<html>welcome</html>"
    code, out, err = run(capsysbinary, "execute", str(app))
    assert out == b""
    assert one_line(code, err) == "execute: the server answered 200 without X-Nexe-Status and X-Nexe-Retcode: " \
                                  "not zerocloud's answer to a job"


@pytest.mark.parametrize("args, reason, status", [
    (["swift://AUTH_test/apps"], "the app: 'swift://AUTH_test/apps' must name an object: "
                                 "swift://account/container/object", 2),
    (["swift://AUTH_test/apps/*.zapp"], "the app: 'swift://AUTH_test/apps/*.zapp' has * in the object name; an "
                                        "app is one object (X-Zerovm-Source cannot name a wildcard)", 2),
    (["apps/hello.zapp"], "no app file 'apps/hello.zapp' (a stored app is named swift://ACCOUNT/CONTAINER/OBJECT)",
     1),
    (["swift://AUTH_test/apps/x", "--stdin", "/nonexistent/input"],
     "cannot open the --stdin file '/nonexistent/input': No such file or directory", 1),
    (["swift://AUTH_test/apps/x", "--stdin", "/"], "cannot open the --stdin file '/': Is a directory", 1),
])
def test_bad_execute_arguments_send_nothing(capsysbinary, fake_swift, v1_env, args, reason, status):
    code, _, err = run(capsysbinary, "execute", *args)
    assert one_line(code, err, status) == reason
    assert fake_swift.seen == []


def test_stdin_with_a_local_app_is_a_usage_error(capsysbinary, fake_swift, v1_env, app, tmp_path):
    code, _, err = run(capsysbinary, "execute", str(app), "--stdin", str(app))
    assert one_line(code, err, 2).startswith("--stdin goes with a swift:// app")
    assert fake_swift.seen == []


# ------------------------------------------------------------------ as a command
def test_the_command_runs_as_a_process_with_its_exit_status(fake_swift, app, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ST_AUTH": fake_swift.auth_url, "ST_USER": USER, "ST_KEY": KEY,
           "NO_PROXY": "127.0.0.1"}
    fake_swift.job.headers = dict(fake_swift.job.headers, **{"X-Nexe-Retcode": "7"})
    got = subprocess.run([sys.executable, "-m", "zerolab.client", "execute", str(app)], env=env,
                         capture_output=True, timeout=120, cwd=ROOT)
    assert got.returncode == 1, got.stderr
    assert got.stdout == b"Hello from the sandbox\n"
    assert got.stderr == b"X-Nexe-System: hello\nX-Nexe-Status: ok\nX-Nexe-Retcode: 7\n"
    assert json.loads(json.dumps(SYSTEM_MAP))   # the app's map is the docs' example


def test_a_large_answer_streams_through_whole(capsysbinary, fake_swift, v1_env, app):
    fake_swift.job.body = bytes(range(256)) * (12 * 1024)   # 3 MiB, in many pieces
    code, out, _ = run(capsysbinary, "execute", str(app))
    assert code == 0 and out == fake_swift.job.body


def test_help_is_not_a_failure(capsysbinary):
    assert cli.main(["--help"]) == 0
    assert b"bundle" in capsysbinary.readouterr().out


def test_without_swiftclient_bundle_works_and_the_others_say_why_in_one_line(capsysbinary, monkeypatch, app,
                                                                               tmp_path):
    monkeypatch.setitem(sys.modules, "swiftclient", None)   # import swiftclient: ImportError
    monkeypatch.setitem(sys.modules, "swiftclient.client", None)
    monkeypatch.delitem(sys.modules, "zerolab.client.swift", raising=False)
    monkeypatch.delattr("zerolab.client.swift", raising=False)
    src = make_app_dir(tmp_path / "again")
    assert run(capsysbinary, "bundle", str(src), "-o", str(tmp_path / "again.zapp"))[0] == 0
    code, _, err = run(capsysbinary, "deploy", str(app), "apps/hello.zapp")
    assert one_line(code, err).startswith("deploy and execute need python-swiftclient (")
