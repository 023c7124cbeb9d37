"""What the swift role and zerocloud promise, checked against the real services.

Requests are made on the node itself with a small urllib client (CLIENT),
through the proxy on 127.0.0.1:8080, as the SAIO sample users.
"""

import base64
import collections
import json
import re

import pytest

PROXY = "http://127.0.0.1:8080"
AUTH = PROXY + "/auth/v1.0"
SWIFT = f"swift -A {AUTH} -U test:tester -K testing"

# Runs on the node: takes a JSON request on stdin, prints a JSON response.
CLIENT = r'''
import base64, json, sys, urllib.request, urllib.error
r = json.load(sys.stdin)
def token(user, key):
    q = urllib.request.Request(r["auth"], headers={"X-Auth-User": user, "X-Auth-Key": key})
    with urllib.request.urlopen(q) as resp:
        return resp.headers["X-Auth-Token"], resp.headers["X-Storage-Url"]
headers = dict(r.get("headers", {}))
url = r["url"]
if r.get("user"):
    tok, storage = token(r["user"], r["key"])
    headers["X-Auth-Token"] = tok
    url = storage + url
body = base64.b64decode(r["body"]) if r.get("body") is not None else None
q = urllib.request.Request(url, data=body, method=r["method"], headers=headers)
try:
    resp = urllib.request.urlopen(q, timeout=60)
    status, hdrs, data = resp.status, dict(resp.headers), resp.read()
except urllib.error.HTTPError as e:
    status, hdrs, data = e.code, dict(e.headers), e.read()
print(json.dumps({"status": status, "headers": hdrs, "body": base64.b64encode(data).decode()}))
'''

Reply = collections.namedtuple("Reply", "status headers body")


def request(host, method, url, body=None, headers=None, user="test:tester", key="testing"):
    """url is relative to the user's storage URL (/v1/AUTH_test) when user is set."""
    req = {"auth": AUTH, "method": method, "url": url, "headers": headers or {},
           "user": user, "key": key,
           "body": base64.b64encode(body).decode() if body is not None else None}
    payload = base64.b64encode(json.dumps(req).encode()).decode()
    client = base64.b64encode(CLIENT.encode()).decode()
    cmd = (f"echo {payload} | base64 -d | python3 -c "
           f"\"import base64; exec(base64.b64decode('{client}'))\"")
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    r = json.loads(out.stdout)
    return Reply(r["status"], {k.lower(): v for k, v in r["headers"].items()},
                 base64.b64decode(r["body"]))


def job(host, nodes, **kw):
    return request(host, "POST", "", json.dumps(nodes).encode(),
                   {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json"}, **kw)


def put(host, path, data, **kw):
    r = request(host, "PUT", path, data, {"Content-Type": "text/plain"}, **kw)
    assert r.status == 201, r


def local_wordcount(texts):
    counts = collections.Counter()
    for t in texts:
        counts.update(w.lower() for w in re.findall(rb"[A-Za-z0-9']+", t))
    return b"".join(b"%s %d\n" % (w, n) for w, n in sorted(counts.items()))


TEXTS = [(b"The quick brown fox jumps over the lazy dog %d times. " % i) * (i + 3)
         + b"ZeroVM ZeroCloud swift's data, node %d.\n" % i for i in range(9)]


@pytest.fixture(scope="module")
def data(host):
    """Objects the job tests read: the guests, nine text parts, another account's object.
    Uploaded with swiftclient in one command (each host.run costs seconds)."""
    files = [(f"part-{i}.txt", t) for i, t in enumerate(TEXTS)]
    files.append(("not-wasm.wasm", b"#!/bin/sh\necho this is no WebAssembly\n"))
    files.append(("secret.txt", b"the other account's secret\n"))
    script = ["set -e", "rm -rf /tmp/zcdata && mkdir /tmp/zcdata && cd /tmp/zcdata"]
    script += [f"echo {base64.b64encode(d).decode()} | base64 -d > {n}" for n, d in files]
    script += [
        f"{SWIFT} upload zc part-*.txt not-wasm.wasm",
        f"cd /opt/zerolab/guests && {SWIFT} upload zcbin --header 'Content-Type: application/wasm' "
        "wordcount.wasm cat.wasm hello.wasm misbehave.wasm",
        f"cd /tmp/zcdata && swift -A {AUTH} -U test2:tester2 -K testing2 upload private secret.txt",
    ]
    out = host.run("\n".join(script))
    assert out.rc == 0, out.stderr
    return True


# --------------------------------------------------------------- services
SERVICES = ["memcached", "rsync", "zerolab-executor", "swift-proxy", "swift-account",
            "swift-container", "swift-object", "swift-object-replicator", "swift-object-updater"]


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_running_and_enabled(host, name):
    svc = host.service(name)
    assert svc.is_running, name
    assert svc.is_enabled, name


@pytest.mark.parametrize("spec", ["tcp://0.0.0.0:8080", "tcp://127.0.0.1:6200", "tcp://127.0.0.1:6201",
                                  "tcp://127.0.0.1:6202", "tcp://127.0.0.1:11211", "tcp://127.0.0.1:873",
                                  "unix:///run/zerolab-executor/executor.sock"])
def test_port_is_listening(host, spec):
    assert host.socket(spec).is_listening, spec


def test_four_devices_in_three_rings(host):
    for ring in ("account", "container", "object"):
        out = host.run(f"swift-ring-builder /etc/swift/{ring}.builder").stdout
        assert "1024 partitions, 3.000000 replicas" in out, out
        for dev in ("d1", "d2", "d3", "d4"):
            assert re.search(rf"\s{dev}\s", out), (ring, dev)
    assert host.file("/srv/node/d1").user == "swift"


def test_storage_backend_was_reported_and_supports_xattrs(host):
    # In an unprivileged container there is no loop device: folders are used.
    assert host.run("setfattr -n user.test -v 1 /srv/node/d2 && getfattr -n user.test /srv/node/d2").rc == 0


def test_pipeline_has_zerocloud_after_tempauth(host):
    conf = host.file("/etc/swift/proxy-server.conf").content_string
    pipeline = re.search(r"^pipeline = (.*)$", conf, re.M).group(1).split()
    assert pipeline.index("zerocloud") == pipeline.index("tempauth") + 1
    assert pipeline[-1] == "proxy-server"
    for line in ("user_admin_admin = admin .admin .reseller_admin", "user_test_tester = testing .admin",
                 "user_test_tester2 = testing2 .admin", "user_test_tester3 = testing3",
                 "user_test2_tester2 = testing2 .admin"):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line
    assert "zerocloud-object" in host.file("/etc/swift/object-server.conf").content_string


def test_swift_info_lists_zerovm(host):
    r = request(host, "GET", PROXY + "/info", user=None)
    info = json.loads(r.body)
    assert info["zerovm"]["version"] == "1.0"
    assert "python" in info["zerovm"]["sysimages"]
    assert "tempauth" in info


# -------------------------------------------------------------- plain API
def test_swiftclient_round_trip(host):
    host.run("head -c 300000 /dev/urandom > /tmp/rt.bin")
    assert host.run(f"{SWIFT} stat").rc == 0
    up = host.run(f"cd /tmp && {SWIFT} upload roundtrip rt.bin")
    assert up.rc == 0, up.stderr
    down = host.run(f"{SWIFT} download roundtrip rt.bin -o /tmp/rt.back")
    assert down.rc == 0, down.stderr
    assert host.run("cmp /tmp/rt.bin /tmp/rt.back").rc == 0
    assert "rt.bin" in host.run(f"{SWIFT} list roundtrip").stdout
    assert host.run(f"{SWIFT} delete roundtrip rt.bin").rc == 0
    assert "rt.bin" not in host.run(f"{SWIFT} list roundtrip").stdout


def test_plain_post_still_updates_metadata(host, data):
    r = request(host, "POST", "/zc/part-0.txt", b"", {"X-Object-Meta-Color": "blue"})
    assert r.status == 202, r
    r = request(host, "HEAD", "/zc/part-0.txt")
    assert r.headers["x-object-meta-color"] == "blue"


# ------------------------------------------------------------------- jobs
def test_job_runs_next_to_its_object(host, data):
    r = job(host, [{"name": "cat", "exec": {"path": "swift://AUTH_test/zcbin/cat.wasm"},
                    "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-3.txt"},
                                {"name": "stdout"}]}])
    assert r.status == 200, r
    assert r.body == TEXTS[3]
    assert r.headers["x-nexe-system"] == "cat"
    assert r.headers["x-nexe-status"] == "ok"
    assert r.headers["x-nexe-retcode"] == "0"
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-nexe-colocated"]), r.headers
    assert "x-nexe-etag" in r.headers and "x-nexe-cdr-line" in r.headers


def test_job_args_and_wordcount_on_one_object(host, data):
    r = job(host, [{"name": "wc", "exec": {"path": "swift://AUTH_test/zcbin/wordcount.wasm"},
                    "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-5.txt"},
                                {"name": "stdout"}]}])
    assert r.status == 200, r
    assert r.body == local_wordcount([TEXTS[5]])


def test_job_writes_its_output_object(host, data):
    r = job(host, [{"name": "copy", "exec": {"path": "swift://AUTH_test/zcbin/cat.wasm"},
                    "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-1.txt"},
                                {"name": "stdout", "path": "swift://AUTH_test/zc/copy-1.out",
                                 "content_type": "text/x-copy"}]}])
    assert r.status == 200, r
    got = request(host, "GET", "/zc/copy-1.out")
    assert got.body == TEXTS[1]
    assert got.headers["content-type"].startswith("text/x-copy")


def test_python_script_post(host, data):
    script = b"#!file://python:python\nimport sys\nprint('sum', sum(range(10)), sys.version_info[0])\n"
    r = request(host, "POST", "", script, {"X-Zerovm-Execute": "1.0", "Content-Type": "text/x-python"})
    assert r.status == 200, r
    assert r.body == b"sum 45 3\n"


def test_python_script_post_to_an_object_reads_it_as_stdin(host, data):
    script = b"#!file://python:python\nimport sys\nprint(len(sys.stdin.read().split()))\n"
    r = request(host, "POST", "/zc/part-2.txt", script,
                {"X-Zerovm-Execute": "1.0", "Content-Type": "text/x-python"})
    assert r.status == 200, r
    assert int(r.body) == len(TEXTS[2].split())


def test_mapreduce_wordcount_equals_local_count(host, data):
    r = job(host, [
        {"name": "map", "exec": {"path": "swift://AUTH_test/zcbin/wordcount.wasm"},
         "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-*.txt"}, {"name": "stderr"}],
         "connect": ["reduce"]},
        {"name": "reduce", "exec": {"path": "swift://AUTH_test/zcbin/wordcount.wasm", "args": "-r"},
         "devices": [{"name": "stdout"}]},
    ])
    assert r.status == 200, r
    names = r.headers["x-nexe-system"].split(",")
    assert names == [f"map-{i}" for i in range(1, 10)] + ["reduce"]
    assert r.body == local_wordcount(TEXTS)
    colocated = r.headers["x-nexe-colocated"].split(",")
    assert all(c != "0" for c in colocated[:9]) and colocated[9] == "0"


# -------------------------------------------------------------- bad jobs
def still_serves(host):
    r = request(host, "GET", "/zc/part-4.txt")
    assert r.status == 200 and r.body == TEXTS[4]


def cat_job(stdin, program="swift://AUTH_test/zcbin/cat.wasm", args=""):
    return [{"name": "n", "exec": {"path": program, "args": args},
             "devices": [{"name": "stdin", "path": stdin}, {"name": "stdout"}]}]


@pytest.mark.parametrize("body,status,reason", [
    (b"[{\"name\": ", 400, "not valid JSON"),
    (json.dumps([{"name": "n", "exec": {"path": "swift://AUTH_test/zcbin/cat.wasm"},
                  "devices": [{"name": "floppy", "path": "swift://AUTH_test/zc/part-1.txt"}]}]).encode(),
     400, "unknown device 'floppy'"),
    (json.dumps(cat_job("swift://AUTH_test/zc/missing.txt")).encode(), 404, "not found"),
    (json.dumps(cat_job("swift://AUTH_test2/private/secret.txt")).encode(), 403, "not allowed to read"),
    (json.dumps(cat_job("swift://AUTH_test/zc/part-1.txt", "swift://AUTH_test/zc/not-wasm.wasm")).encode(),
     400, "not a WebAssembly module"),
    (json.dumps([{"name": "n", "exec": {"path": "file://nosuch:python"}}]).encode(), 400, "unknown system image"),
])
def test_bad_job_gets_4xx_with_reason(host, data, body, status, reason):
    r = request(host, "POST", "", body, {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json"})
    assert r.status == status, r
    assert reason in r.body.decode(), r.body
    assert b"Traceback" not in r.body
    still_serves(host)


def test_other_accounts_object_is_never_returned(host, data):
    r = job(host, cat_job("swift://AUTH_test2/private/secret.txt"))
    assert r.status == 403
    assert b"secret" not in r.body.replace(b"secret.txt", b"")


def test_endless_loop_times_out(host, data):
    r = job(host, cat_job("swift://AUTH_test/zc/part-1.txt", "swift://AUTH_test/zcbin/misbehave.wasm", "loop"))
    assert r.status == 408, r
    assert "timeout" in r.body.decode()
    assert r.headers["x-nexe-status"].startswith("timeout")
    still_serves(host)


def test_job_without_token_is_refused(host, data):
    r = request(host, "POST", PROXY + "/v1/AUTH_test", b"#!file://python:python\nprint(1)\n",
                {"X-Zerovm-Execute": "1.0", "Content-Type": "text/plain"}, user=None)
    assert r.status == 401, r


def test_oversized_job_gets_413(host, data):
    r = request(host, "POST", "", b"[" + b" " * 70000 + b"]",
                {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json"})
    assert r.status == 413, r
    assert "zerovm_maxconfig" in r.body.decode()
