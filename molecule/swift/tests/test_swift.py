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

# Runs on the node: takes a JSON list of requests on stdin, prints a JSON list of
# responses.  One host.run per batch: each run costs seconds through Ansible.
CLIENT = r'''
import base64, json, sys, urllib.request, urllib.error
tokens = {}
def token(auth, user, key):
    if user not in tokens:
        q = urllib.request.Request(auth, headers={"X-Auth-User": user, "X-Auth-Key": key})
        with urllib.request.urlopen(q) as resp:
            tokens[user] = resp.headers["X-Auth-Token"], resp.headers["X-Storage-Url"]
    return tokens[user]
out = []
for r in json.load(sys.stdin):
    headers = dict(r.get("headers", {}))
    url = r["url"]
    if r.get("user"):
        tok, storage = token(r["auth"], r["user"], r["key"])
        headers["X-Auth-Token"] = tok
        url = storage + url
    body = base64.b64decode(r["body"]) if r.get("body") is not None else None
    if r.get("pad"):  # large bodies are made here: a command line has a size limit
        body = body[:1] + b" " * r["pad"] + body[1:]
    q = urllib.request.Request(url, data=body, method=r["method"], headers=headers)
    try:
        resp = urllib.request.urlopen(q, timeout=60)
        status, hdrs, data = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, dict(e.headers), e.read()
    out.append({"status": status, "headers": hdrs, "body": base64.b64encode(data).decode()})
print(json.dumps(out))
'''

Reply = collections.namedtuple("Reply", "status headers body")


def req(method, url, body=None, headers=None, user="test:tester", key="testing"):
    """One request; url is relative to the user's storage URL (/v1/AUTH_test) when user is set."""
    return {"auth": AUTH, "method": method, "url": url, "headers": headers or {},
            "user": user, "key": key,
            "body": base64.b64encode(body).decode() if body is not None else None}


def batch(host, requests):
    """Runs the requests in order on the node -> their Replies."""
    payload = base64.b64encode(json.dumps(requests).encode()).decode()
    client = base64.b64encode(CLIENT.encode()).decode()
    cmd = (f"echo {payload} | base64 -d | python3 -c "
           f"\"import base64; exec(base64.b64decode('{client}'))\"")
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    return [Reply(r["status"], {k.lower(): v for k, v in r["headers"].items()}, base64.b64decode(r["body"]))
            for r in json.loads(out.stdout)]


def request(host, *args, **kw):
    return batch(host, [req(*args, **kw)])[0]


def job(nodes, **kw):
    return req("POST", "", json.dumps(nodes).encode(),
               {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json"}, **kw)


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


def test_services_are_running_and_enabled(host):
    # one command for all (each host.run costs seconds through Ansible)
    active = host.run(f"systemctl is-active {' '.join(SERVICES)}").stdout.split()
    enabled = host.run(f"systemctl is-enabled {' '.join(SERVICES)}").stdout.split()
    assert dict(zip(SERVICES, active)) == {s: "active" for s in SERVICES}
    assert dict(zip(SERVICES, enabled)) == {s: "enabled" for s in SERVICES}


def test_ports_are_listening(host):
    listening = set(host.socket.get_listening_sockets())
    for spec in ("tcp://0.0.0.0:8080", "tcp://127.0.0.1:6200", "tcp://127.0.0.1:6201", "tcp://127.0.0.1:6202",
                 "tcp://127.0.0.1:11211", "tcp://127.0.0.1:873", "unix:///run/zerolab-executor/executor.sock"):
        assert spec in listening, (spec, sorted(listening))


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


CAT = "swift://AUTH_test/zcbin/cat.wasm"
WORDCOUNT = "swift://AUTH_test/zcbin/wordcount.wasm"
JSON_JOB = {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json"}
SCRIPT = {"X-Zerovm-Execute": "1.0", "Content-Type": "text/x-python"}
STILL_SERVES = req("GET", "/zc/part-4.txt")


def cat_job(stdin, program=CAT, args=""):
    return [{"name": "n", "exec": {"path": program, "args": args},
             "devices": [{"name": "stdin", "path": stdin}, {"name": "stdout"}]}]


# Every scenario below: a list of requests run in order (a bad job is followed
# by a plain GET, which must still work right after it).
BAD_JOBS = {
    "malformed JSON": (b"[{\"name\": ", 400, "not valid JSON"),
    "unknown device": (json.dumps([{"name": "n", "exec": {"path": CAT}, "devices": [
        {"name": "floppy", "path": "swift://AUTH_test/zc/part-1.txt"}]}]).encode(), 400, "unknown device 'floppy'"),
    "missing object": (json.dumps(cat_job("swift://AUTH_test/zc/missing.txt")).encode(), 404, "not found"),
    "another account's object": (json.dumps(cat_job("swift://AUTH_test2/private/secret.txt")).encode(),
                                 403, "not allowed to read"),
    "non-wasm program": (json.dumps(cat_job("swift://AUTH_test/zc/part-1.txt",
                                            "swift://AUTH_test/zc/not-wasm.wasm")).encode(),
                         400, "not a WebAssembly module"),
    "unknown system image": (json.dumps([{"name": "n", "exec": {"path": "file://nosuch:python"}}]).encode(),
                             400, "unknown system image"),
    "oversized job": (b"[]", 413, "zerovm_maxconfig"),
}
PAD = {"oversized job": 70000}   # bytes of spaces the client puts inside that body
SCENARIOS = {
    "metadata": [req("POST", "/zc/part-0.txt", b"", {"X-Object-Meta-Color": "blue"}),
                 req("HEAD", "/zc/part-0.txt")],
    "cat": [job([{"name": "cat", "exec": {"path": CAT},
                  "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-3.txt"}, {"name": "stdout"}]}])],
    "wordcount": [job([{"name": "wc", "exec": {"path": WORDCOUNT},
                        "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-5.txt"},
                                    {"name": "stdout"}]}])],
    "output object": [job([{"name": "copy", "exec": {"path": CAT},
                            "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-1.txt"},
                                        {"name": "stdout", "path": "swift://AUTH_test/zc/copy-1.out",
                                         "content_type": "text/x-copy"}]}]),
                      req("GET", "/zc/copy-1.out")],
    "script": [req("POST", "", b"#!file://python:python\nimport sys\nprint('sum', sum(range(10)), sys.version_info[0])\n",
                   SCRIPT)],
    "script on object": [req("POST", "/zc/part-2.txt",
                             b"#!file://python:python\nimport sys\nprint(len(sys.stdin.read().split()))\n", SCRIPT)],
    "mapreduce": [job([
        {"name": "map", "exec": {"path": WORDCOUNT},
         "devices": [{"name": "stdin", "path": "swift://AUTH_test/zc/part-*.txt"}, {"name": "stderr"}],
         "connect": ["reduce"]},
        {"name": "reduce", "exec": {"path": WORDCOUNT, "args": "-r"}, "devices": [{"name": "stdout"}]},
    ])],
    "endless loop": [job(cat_job("swift://AUTH_test/zc/part-1.txt", "swift://AUTH_test/zcbin/misbehave.wasm",
                                 "loop")), STILL_SERVES],
    "no token": [req("POST", PROXY + "/v1/AUTH_test", b"#!file://python:python\nprint(1)\n", SCRIPT, user=None)],
    "no access to the account": [req("POST", "", b"#!file://python:python\nprint(1)\n", SCRIPT,
                                     user="test:tester3", key="testing3")],
}
for name, (body, _, _) in BAD_JOBS.items():
    SCENARIOS["bad: " + name] = [dict(req("POST", "", body, JSON_JOB), pad=PAD.get(name, 0)), STILL_SERVES]


@pytest.fixture(scope="module")
def replies(host, data):
    """name -> the Replies of that scenario, all run in one batch on the node."""
    names = list(SCENARIOS)
    flat = [r for n in names for r in SCENARIOS[n]]
    got = iter(batch(host, flat))
    return {n: [next(got) for _ in SCENARIOS[n]] for n in names}


def test_plain_post_still_updates_metadata(replies):
    post, head = replies["metadata"]
    assert post.status == 202, post
    assert head.headers["x-object-meta-color"] == "blue"


# ------------------------------------------------------------------- jobs
def test_job_runs_next_to_its_object(replies):
    (r,) = replies["cat"]
    assert r.status == 200, r
    assert r.body == TEXTS[3]
    assert r.headers["x-nexe-system"] == "cat"
    assert r.headers["x-nexe-status"] == "ok"
    assert r.headers["x-nexe-retcode"] == "0"
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-nexe-colocated"]), r.headers
    assert "x-nexe-etag" in r.headers and "x-nexe-cdr-line" in r.headers


def test_wordcount_of_one_object(replies):
    (r,) = replies["wordcount"]
    assert r.status == 200, r
    assert r.body == local_wordcount([TEXTS[5]])


def test_job_writes_its_output_object(replies):
    r, got = replies["output object"]
    assert r.status == 200, r
    assert got.body == TEXTS[1]
    assert got.headers["content-type"].startswith("text/x-copy")


def test_python_script_post(replies):
    (r,) = replies["script"]
    assert r.status == 200, r
    assert r.body == b"sum 45 3\n"


def test_python_script_post_to_an_object_reads_it_as_stdin(replies):
    (r,) = replies["script on object"]
    assert r.status == 200, r
    assert int(r.body) == len(TEXTS[2].split())


def test_mapreduce_wordcount_equals_local_count(replies):
    (r,) = replies["mapreduce"]
    assert r.status == 200, r
    names = r.headers["x-nexe-system"].split(",")
    assert names == [f"map-{i}" for i in range(1, 10)] + ["reduce"]
    assert r.body == local_wordcount(TEXTS)
    colocated = r.headers["x-nexe-colocated"].split(",")
    assert all(c != "0" for c in colocated[:9]) and colocated[9] == "0"


# -------------------------------------------------------------- bad jobs
@pytest.mark.parametrize("name", list(BAD_JOBS))
def test_bad_job_gets_4xx_with_reason_and_get_still_works(replies, name):
    _, status, reason = BAD_JOBS[name]
    r, get = replies["bad: " + name]
    assert r.status == status, r
    assert reason in r.body.decode(), r.body
    assert b"Traceback" not in r.body
    assert get.status == 200 and get.body == TEXTS[4]


def test_other_accounts_object_is_never_returned(replies):
    r, _ = replies["bad: another account's object"]
    assert b"the other account's secret" not in r.body


def test_endless_loop_times_out(replies):
    r, get = replies["endless loop"]
    assert r.status == 408, r
    assert "timeout" in r.body.decode()
    assert r.headers["x-nexe-status"].startswith("timeout")
    assert get.status == 200 and get.body == TEXTS[4]


def test_job_without_token_is_refused(replies):
    (r,) = replies["no token"]
    assert r.status == 401, r


def test_job_in_an_account_the_user_does_not_own_is_refused(replies):
    (r,) = replies["no access to the account"]
    assert r.status == 403, r
