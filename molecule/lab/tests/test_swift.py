"""What the swift role and zerocloud promise, checked against the real services
of the lab's Swift cluster: one proxy (``host``, the --hosts of pytest) and the
storage nodes of the lab inventory's swift_storage group (``storage``).

Requests are made on the proxy node itself with a small urllib client
(CLIENT), through the proxy on 127.0.0.1:8080, as the SAIO sample users.
"""

import base64
import collections
import io
import json
import pprint
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import testinfra
import wasmtime

from zerolab.lab import inventory

LAB = inventory.load()
STORAGE_NODES = {m.name: m.address for m in LAB.group("swift_storage")}

PROXY = "http://127.0.0.1:8080"
AUTH = PROXY + "/auth/v1.0"
SWIFT = f"swift -A {AUTH} -U test:tester -K testing"

# Runs on the node: takes a JSON list of requests on stdin, prints a JSON list of
# responses.  One host.run per batch: each run costs seconds through Ansible.
CLIENT = r'''
import base64, json, sys, threading, time, urllib.request, urllib.error
tokens = {}
def token(auth, user, key):
    if user not in tokens:
        q = urllib.request.Request(auth, headers={"X-Auth-User": user, "X-Auth-Key": key})
        with urllib.request.urlopen(q) as resp:
            tokens[user] = resp.headers["X-Auth-Token"], resp.headers["X-Storage-Url"]
    return tokens[user]
def run(r):
    headers = dict(r.get("headers", {}))
    url = r["url"]
    if r.get("user"):
        tok, storage = token(r["auth"], r["user"], r["key"])
        headers["X-Auth-Token"] = tok
        url = url if url.startswith("http") else storage + url
    body = base64.b64decode(r["body"]) if r.get("body") is not None else None
    if r.get("pad"):  # large bodies are made here: a command line has a size limit
        body = body[:1] + b" " * r["pad"] + body[1:]
    q = urllib.request.Request(url, data=body, method=r["method"], headers=headers)
    started = time.monotonic()
    try:
        resp = urllib.request.urlopen(q, timeout=r.get("timeout", 60))
        status, hdrs, data = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, dict(e.headers), e.read()
    except OSError as e:  # no answer (timeout, reset): status 0, the error as body; the batch goes on
        status, hdrs, data = 0, {}, repr(e).encode()
    return {"status": status, "headers": hdrs, "body": base64.b64encode(data).decode(),
            "seconds": time.monotonic() - started}
def later(r, delay, into):
    time.sleep(delay)
    into.append(run(r))
out = []
for r in json.load(sys.stdin):
    # "during": requests made from other threads while this one is in flight
    during = []
    threads = [threading.Thread(target=later, args=(d, r.get("during_delay", 0.5), during))
               for d in r.get("during", [])]
    for t in threads:
        t.start()
    reply = run(r)
    for t in threads:
        t.join()
    reply["during"] = during
    out.append(reply)
print(json.dumps(out))
'''

Reply = collections.namedtuple("Reply", "status headers body during", defaults=[()])


def req(method, url, body=None, headers=None, user="test:tester", key="testing"):
    """One request; url is relative to the user's storage URL (/v1/AUTH_test)
    when user is set, unless it is a whole URL."""
    return {"auth": AUTH, "method": method, "url": url, "headers": headers or {},
            "user": user, "key": key,
            "body": base64.b64encode(body).decode() if body is not None else None}


# The most of one argument to the shell (Linux's MAX_ARG_STRLEN is 128 KiB).
ARGUMENT = 64 * 1024


def client_command(host, requests):
    """The shell command that runs the requests in order on the node; it
    prints one JSON line.  The requests go to a file on the node first, a
    piece per command, since a batch is more than one argument may be."""
    payload = base64.b64encode(json.dumps(requests).encode()).decode()
    path = f"/tmp/zerolab-requests-{time.monotonic_ns()}"
    for at in range(0, len(payload), ARGUMENT):
        wrote = host.run(f"printf %s {payload[at:at + ARGUMENT]} >> {path}")
        assert wrote.rc == 0, wrote.stderr
    client = base64.b64encode(CLIENT.encode()).decode()
    return (f"base64 -d < {path} | python3 -c "
            f"\"import base64; exec(base64.b64decode('{client}'))\"; status=$?; rm -f {path}; exit $status")


def replies_of(line):
    def reply(r):
        return Reply(r["status"], {k.lower(): v for k, v in r["headers"].items()}, base64.b64decode(r["body"]),
                     tuple(reply(d) for d in r.get("during", ())))
    return [reply(r) for r in json.loads(line)]


def batch(host, requests):
    """Runs the requests in order on the node -> their Replies."""
    out = host.run(client_command(host, requests))
    assert out.rc == 0, out.stderr
    return replies_of(out.stdout)


def request(host, *args, **kw):
    return batch(host, [req(*args, **kw)])[0]


def job(nodes, headers=None, **kw):
    return req("POST", "", json.dumps(nodes).encode(),
               {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json", **(headers or {})}, **kw)


def local_wordcount(texts):
    counts = collections.Counter()
    for t in texts:
        counts.update(w.lower() for w in re.findall(rb"[A-Za-z0-9']+", t))
    return b"".join(b"%s %d\n" % (w, n) for w, n in sorted(counts.items()))


# 24 objects: the MapReduce's map nodes spread over every storage node.
TEXTS = [(b"The quick brown fox jumps over the lazy dog %d times. " % i) * (i % 9 + 3)
         + b"ZeroVM ZeroCloud swift's data, node %d.\n" % i for i in range(24)]
# Swift lists a container in byte order: the map nodes read the parts in this order.
PARTS = sorted(f"part-{i}.txt" for i in range(len(TEXTS)))


@pytest.fixture(scope="module")
def storage():
    """Each storage node of the lab inventory: name -> testinfra host."""
    return {name: testinfra.get_host(f"podman://zerolab-{name}") for name in STORAGE_NODES}


# Run on the proxy: for each "container/object" on stdin, where the object
# ring puts it -> JSON {name: {"partition", "hash", "nodes": [[ip, device], ...]}}.
WHERE = r"""
import json, sys
from swift.common.ring import Ring
from swift.common.utils import hash_path
ring = Ring("/etc/swift", ring_name="object")
out = {}
for name in sys.stdin.read().split():
    container, obj = name.split("/", 1)
    part, nodes = ring.get_nodes("AUTH_test", container, obj)
    out[name] = {"partition": part, "hash": hash_path("AUTH_test", container, obj),
                 "nodes": [[n["ip"], n["device"]] for n in nodes]}
print(json.dumps(out))
"""


def replicas_of(host, names):
    """name -> [(storage host, device), ...] where the object ring puts its replicas (and partition, hash)."""
    out = host.run(f"echo {' '.join(names)} | python3 -c '{WHERE}'")
    assert out.rc == 0, out.stderr
    by_ip = {ip: name for name, ip in STORAGE_NODES.items()}
    return {name: {"partition": w["partition"], "hash": w["hash"],
                   "replicas": [(by_ip.get(ip, ip), device) for ip, device in w["nodes"]]}
            for name, w in json.loads(out.stdout).items()}


def data_file_exists(node, device, where):
    """Whether an object's .data file is on this storage node's device."""
    folder = f"/srv/node/{device}/objects/{where['partition']}/{where['hash'][-3:]}/{where['hash']}"
    return node.run(f"ls {folder}/*.data").rc == 0


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
PROXY_SERVICES = ["memcached", "swift-proxy"]
STORAGE_SERVICES = ["rsync", "zerolab-executor", "zerolab-executor.socket", "swift-account", "swift-container",
                    "swift-object", "swift-object-replicator", "swift-container-replicator", "swift-object-updater",
                    "swift-object-auditor"]


def states(node, services):
    # one command for all (each host.run costs seconds through Ansible)
    active = node.run(f"systemctl is-active {' '.join(services)}").stdout.split()
    enabled = node.run(f"systemctl is-enabled {' '.join(services)}").stdout.split()
    return dict(zip(services, zip(active, enabled)))


def test_proxy_runs_the_proxy_tier_only(host):
    assert states(host, PROXY_SERVICES) == {s: ("active", "enabled") for s in PROXY_SERVICES}
    # No storage server and no executor on the proxy: jobs run where the data is.
    assert host.run("systemctl is-active swift-object zerolab-executor").stdout.split() == ["inactive", "inactive"]
    assert not host.file("/etc/systemd/system/zerolab-executor.service").exists
    assert not host.file("/etc/swift/object-server.conf").exists


def test_storage_nodes_run_the_storage_tier_only(storage):
    for name, node in storage.items():
        assert states(node, STORAGE_SERVICES) == {s: ("active", "enabled") for s in STORAGE_SERVICES}, name
        assert node.run("systemctl is-active swift-proxy").stdout.strip() == "inactive", name


def test_ports_are_listening(host, storage):
    listening = set(host.socket.get_listening_sockets())
    proxy_ip = LAB.group("swift_proxy")[0].address
    for spec in ("tcp://0.0.0.0:8080", "tcp://127.0.0.1:11211", f"tcp://{proxy_ip}:11211"):
        assert spec in listening, (spec, sorted(listening))
    for name, node in storage.items():
        listening = set(node.socket.get_listening_sockets())
        ip = STORAGE_NODES[name]
        for spec in (f"tcp://{ip}:6200", f"tcp://{ip}:6201", f"tcp://{ip}:6202", f"tcp://{ip}:873",
                     "unix:///run/zerolab-executor/executor.sock"):
            assert spec in listening, (name, spec, sorted(listening))


def test_rings_list_every_storage_host_and_are_the_same_everywhere(host, storage):
    for ring in ("account", "container", "object"):
        out = host.run(f"swift-ring-builder /etc/swift/builders/{ring}.builder").stdout
        assert "1024 partitions, 3.000000 replicas" in out, out
        # two devices on each storage host, each host a zone of its own
        devices = re.findall(r"^\s+\d+\s+\d+\s+(\d+)\s+(\S+):\d+\s+\S+:\d+\s+(\S+)\s", out, re.M)
        assert sorted(devices) == sorted((str(zone), ip, dev) for zone, ip in enumerate(STORAGE_NODES.values(), 1)
                                         for dev in ("d1", "d2")), out
        digest = host.file(f"/etc/swift/{ring}.ring.gz").md5sum
        for name, node in storage.items():
            assert node.file(f"/etc/swift/{ring}.ring.gz").md5sum == digest, (ring, name)
    for name, node in storage.items():
        assert node.file("/srv/node/d1").user == "swift", name


def test_storage_backend_supports_xattrs(storage):
    # In an unprivileged container there is no loop device: folders are used.
    for name, node in storage.items():
        assert node.run("setfattr -n user.test -v 1 /srv/node/d2 && getfattr -n user.test /srv/node/d2").rc == 0, name


def test_each_objects_replicas_are_on_three_hosts(host, storage, data):
    where = replicas_of(host, [f"zc/{name}" for name in PARTS[:6]])
    for name, w in where.items():
        hosts = [h for h, _ in w["replicas"]]
        assert sorted(hosts) == sorted(STORAGE_NODES), (name, w)
        for node_name, device in w["replicas"]:
            assert data_file_exists(storage[node_name], device, w), (name, node_name, device)


def test_pipeline_has_zerocloud_after_tempauth(host):
    conf = host.file("/etc/swift/proxy-server.conf").content_string
    pipeline = re.search(r"^pipeline = (.*)$", conf, re.M).group(1).split()
    assert pipeline.index("zerocloud") == pipeline.index("tempauth") + 1
    assert pipeline[-1] == "proxy-server"
    assert re.search(r"^memcache_servers = [0-9.]+:11211$", conf, re.M), conf
    for line in ("user_admin_admin = admin .admin .reseller_admin", "user_test_tester = testing .admin",
                 "user_test_tester2 = testing2 .admin", "user_test_tester3 = testing3",
                 "user_test2_tester2 = testing2 .admin"):
        assert re.search(rf"^{re.escape(line)}$", conf, re.M), line


def test_object_servers_run_zerocloud_under_their_inventory_name(storage):
    for name, node in storage.items():
        conf = node.file("/etc/swift/object-server.conf").content_string
        assert "zerocloud-object" in conf
        assert f"zerovm_node_name = {name}" in conf


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


# Counts the words of its stdin (a swift:// object, or the POST's body).
COUNT_PY = "import os, sys; print(os.environ.get('PREFIX', 'words'), len(sys.stdin.read().split()))"
COUNT_STDIN = [{"name": "count", "exec": {"path": "file://python:python", "args": ["-c", COUNT_PY]},
                "devices": [{"name": "stdin"}, {"name": "stdout"}]}]
COUNT_TEMPLATE = json.dumps([{"name": "count", "exec": {"path": "file://python:python", "args": ["-c", COUNT_PY],
                                                         "env": {"PREFIX": "{.prefix=counted}"}},
                              "devices": [{"name": "stdin", "path": "{.object_path}"},
                                          {"name": "stdout", "content_type": "text/x-count"}]}]).encode()


def app_tar():
    """An app: boot/system.map runs hello.py (in the app, mounted at /) with
    the python system image, on an object next to it; and cat.wasm, a
    program inside the app (file://image:PATH), on that script."""
    system_map = [
        {"name": "hello", "exec": {"path": "file://python:python", "args": "/hello.py"},
         "devices": [{"name": "stdin", "path": "swift://./zc/part-1.txt"}, {"name": "stdout"}]},
        {"name": "show", "exec": {"path": "file://image:bin/cat.wasm", "args": "/hello.py"},
         "devices": [{"name": "stdout"}]},
    ]
    files = {"boot/system.map": json.dumps(system_map).encode(), "hello.py": HELLO_PY,
             "bin/cat.wasm": (GUESTS / "cat.wasm").read_bytes()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


ROOT = Path(__file__).resolve().parents[3]
GUESTS = ROOT / "build" / "guests"
HELLO_PY = b"import sys\nprint('hello from an app:', len(sys.stdin.read().split()), 'words')\n"
APP = app_tar()


PARTITION_PY = """
import collections, os, re, sys
outs = [open('/dev/out/' + name, 'w') for name in sorted(os.listdir('/dev/out'))]
words = collections.Counter(w.lower() for w in re.findall("[A-Za-z0-9']+", sys.stdin.read()))
for word, n in words.items():
    outs[sum(word.encode()) % len(outs)].write(f'{word} {n}\\n')
"""
SUM_PY = """
import collections, os
total = collections.Counter()
for name in os.listdir('/dev/in'):
    for line in open('/dev/in/' + name):
        word, n = line.split()
        total[word] += int(n)
print(''.join(f'{w} {n}\\n' for w, n in sorted(total.items())), end='')
"""


# The parts part-2*.txt: part-2 and part-20 to part-23.
FEW = [2, 20, 21, 22, 23]
MAPREDUCE_FEW = [
    {"name": "map", "exec": {"path": "file://python:python", "args": ["-c", PARTITION_PY]},
     "devices": [{"name": "stdin", "path": "swift://./zc/part-2*.txt"}], "connect": ["red"]},
    {"name": "red", "exec": {"path": "file://python:python", "args": ["-c", SUM_PY]}, "count": 2,
     "devices": [{"name": "stdout"}]},
]


def smoke_app(script=b"import sys\nsys.stdout.write('hello')\n"):
    """The tarball of ZeroCloud's smoketest: main.py, and boot/system.map running it."""
    system_map = [{"name": "example", "exec": {"path": "file://python:python", "args": "main.py"},
                   "devices": [{"name": "python"}, {"name": "stdout"}]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in (("main.py", script), ("boot/system.map", json.dumps(system_map).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


SMOKE_APP = smoke_app()
PPRINT_PY = (b"import json\nimport pprint\n\nwith open('/dev/input') as fp:\n    data = fp.read()\n"
             b"    data = json.loads(data)\n    print(pprint.pformat(data))\n")
GEOMETRIES = (b'{"geometries": [{"coordinates": [100.0, 0.0], "type": "Point"},\n'
              b'                {"coordinates": [[101.0, 0.0], [102.0, 1.0]],\n'
              b'                 "type": "LineString"}],\n "type": "GeometryCollection"}')


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
    "replicate 4": (json.dumps([{**cat_job("swift://AUTH_test/zc/part-1.txt")[0], "replicate": 4}]).encode(),
                    400, "replicate must be 0 or 1 (one copy), 2 or 3"),
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
    # ZeroCloud's MapReduce: each mapper partitions its counts over the two
    # reducers through /dev/out/<reducer>; each reducer sums its /dev/in/*.
    "mapreduce /dev/out": [job([
        {"name": "map", "exec": {"path": "file://python:python", "args": ["-c", PARTITION_PY]},
         "devices": [{"name": "stdin", "path": "swift://./zc/part-*.txt"}], "connect": ["red"]},
        {"name": "red", "exec": {"path": "file://python:python", "args": ["-c", SUM_PY]}, "count": 2,
         "devices": [{"name": "stdout"}]},
    ])],
    # The same on 5 parts (7 nodes, within zerovm_concurrency), connect
    # streamed (the filter's default), then asked for staged.
    "mapreduce streamed": [job(MAPREDUCE_FEW), job(MAPREDUCE_FEW, {"X-Zerolab-Connect": "staged"})],
    # ZeroCloud's own vagrant smoketest, replayed: a tarball POSTed, a job
    # description whose image device is a stored tarball, and a GET with
    # open/1.0 of a JSON object its account has a template for.  The one
    # change: its system image was called python2.7, the lab's is python.
    "zerocloud's smoketest": [
        req("PUT", "/zcsmoke"),
        req("POST", "", SMOKE_APP, {"X-Zerovm-Execute": "1.0", "Content-Type": "application/x-tar"}),
        req("PUT", "/zcsmoke/hello.zapp", SMOKE_APP, {"Content-Type": "application/x-tar"}),
        job([{"name": "example", "exec": {"path": "file://python:python", "args": "main.py"},
              "devices": [{"name": "python"}, {"name": "stdout"},
                          {"name": "image", "path": "swift://~/zcsmoke/hello.zapp"}]}]),
        req("PUT", "/zcsmoke/pprint.zapp", smoke_app(PPRINT_PY), {"Content-Type": "application/x-tar"}),
        req("PUT", "/.zvm", b""),
        req("PUT", "/.zvm/application/json/config", json.dumps([
            {"name": "prettyprint", "exec": {"path": "file://python:python", "args": "main.py"},
             "devices": [{"name": "python"}, {"name": "stdout"}, {"name": "input", "path": "{.object_path}"},
                         {"name": "image", "path": "swift://~/zcsmoke/pprint.zapp"}]}]).encode()),
        req("PUT", "/zcsmoke/data.json", GEOMETRIES, {"Content-Type": "application/json"}),
        req("GET", "/zcsmoke/data.json", None, {"X-Zerovm-Execute": "open/1.0"}),
    ],
    # Three copies of a node, on the object's three replicas, compared.
    "replicated node": [job([{**cat_job("swift://AUTH_test/zc/part-2.txt")[0], "replicate": 3}])],
    # As ZeroCloud's docs write a job: a system image device, a name with "-",
    # args beside exec, the caller's own account as ".", replicate 0, a key
    # zerolab does not know; meta on an output, min_size on another.
    "zerocloud's own job": [
        job([{"name": "my-job", "exec": {"path": "swift://./zcbin/cat.wasm"}, "args": "/lib/python3.11/this.py",
              "replicate": 0, "priority": 5,
              "devices": [{"name": "python"}, {"name": "stdin", "path": "swift://~/zc/part-1.txt"},
                          {"name": "stdout", "path": "swift://./zc/zen.out", "meta": {"Made-By": "zerolab"}},
                          {"name": "stderr", "path": "swift://./zc/zen.err", "min_size": 1}]}]),
        req("GET", "/zc/zen.out"), req("GET", "/zc/zen.err")],
    # An app (ZeroCloud's zapp): POSTed, then stored and run by X-Zerovm-Source.
    "app": [req("POST", "", APP, {"X-Zerovm-Execute": "1.0", "Content-Type": "application/gzip"}),
            req("PUT", "/zc/hello.zapp", APP, {"Content-Type": "application/octet-stream"}),
            req("POST", "", None, {"X-Zerovm-Execute": "1.0", "X-Zerovm-Source": "swift://./zc/hello.zapp"})],
    "x-zerovm-source": [req("PUT", "/zc/count.json", json.dumps(COUNT_STDIN).encode(),
                            {"Content-Type": "application/json"}),
                        req("POST", "", b"one two three", {"X-Zerovm-Execute": "1.0",
                                                           "X-Zerovm-Source": "swift://./zc/count.json"})],
    # GET execution: a program object, a template registered for text/plain
    # (by /open/... and by the header), a type nothing is registered for.
    "open/1.0 GET": [
        req("GET", PROXY + "/open/AUTH_test/zcbin/hello.wasm"),
        req("PUT", "/.zvm", b""),
        req("PUT", "/.zvm/text/plain/config", COUNT_TEMPLATE, {"Content-Type": "application/json"}),
        req("GET", PROXY + "/open/AUTH_test/zc/part-6.txt?prefix=words"),
        req("GET", "/zc/part-7.txt", None, {"X-Zerovm-Execute": "open/1.0"}),
        req("PUT", "/zc/data.bin", b"\0\1", {"Content-Type": "application/x-zerolab-unregistered"}),
        req("GET", PROXY + "/open/AUTH_test/zc/data.bin"),
        STILL_SERVES],
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
    # the storage host and device that ran it
    host_name, device = r.headers["x-nexe-colocated"].split("/")
    assert host_name in STORAGE_NODES and device in ("d1", "d2"), r.headers
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


def test_a_job_as_zerocloud_wrote_it(replies):
    r, out, err = replies["zerocloud's own job"]
    assert r.status == 200, r
    assert r.headers["x-nexe-system"] == "my-job"
    assert r.headers["x-zerovm-ignored"] == "my-job: priority"
    # cat read the file from the python system image, mounted at /
    assert out.status == 200 and out.body.startswith(b's = """Gur Mra bs Clguba'), out
    assert out.headers["x-object-meta-made-by"] == "zerolab"
    # an empty stderr is shorter than its min_size: not stored
    assert err.status == 404, err


def test_an_app_runs_posted_and_from_x_zerovm_source(replies):
    posted, put, sourced = replies["app"]
    assert put.status == 201, put
    expected = b"hello from an app: %d words\n" % len(TEXTS[1].split()) + HELLO_PY
    for r in (posted, sourced):
        assert r.status == 200, r
        assert r.headers["x-nexe-system"] == "hello,show"
        assert r.headers["x-nexe-status"] == "ok,ok"
        assert r.body == expected
        # hello ran next to its object; show reads nothing and ran anywhere
        assert r.headers["x-nexe-colocated"].split(",")[0].split("/")[0] in STORAGE_NODES, r.headers


def test_a_job_from_x_zerovm_source_reads_the_posts_body_as_stdin(replies):
    put, r = replies["x-zerovm-source"]
    assert put.status == 201, put
    assert (r.status, r.body) == (200, b"words 3\n"), r


def test_a_get_runs_the_program_or_the_template_registered_for_the_objects_type(replies):
    program, _, put, by_path, by_header, _, unregistered, plain = replies["open/1.0 GET"]
    assert (program.status, program.body) == (200, b"Hello, World!\n"), program
    assert put.status == 201, put
    assert (by_path.status, by_path.body) == (200, b"words %d\n" % len(TEXTS[6].split())), by_path
    assert by_path.headers["content-type"].startswith("text/x-count")
    assert by_path.headers["x-nexe-colocated"].split("/")[0] in STORAGE_NODES, by_path.headers
    assert (by_header.status, by_header.body) == (200, b"counted %d\n" % len(TEXTS[7].split())), by_header
    assert unregistered.status == 404 and b"no application registered for" in unregistered.body, unregistered
    assert plain.status == 200, plain


def test_the_app_command_bundles_deploys_and_executes_an_app(tmp_path):
    """zerolab-app from this machine against the lab's proxy, as a user would."""
    proxy = LAB.group("swift_proxy")[0].address
    app = tmp_path / "wc-app"
    (app / "boot").mkdir(parents=True)
    (app / "count.py").write_text(COUNT_PY.replace("; ", "\n") + "\n")
    (app / "boot" / "system.map").write_text(json.dumps([
        {"name": "count", "exec": {"path": "file://python:python", "args": "/count.py"},
         "devices": [{"name": "stdin"}, {"name": "stdout"}]}]))
    (tmp_path / "in.txt").write_text("a b c d e\n")
    env = {"ST_AUTH": f"http://{proxy}:8080/auth/v1.0", "ST_USER": "test:tester", "ST_KEY": "testing",
           "PATH": "/usr/bin:/bin"}

    def app_command(*args):
        return subprocess.run([sys.executable, "-m", "zerolab.client", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    for args in (["bundle", str(app), "-o", "wc.zapp"], ["deploy", "wc.zapp", "zcapps/wc.zapp"]):
        done = app_command(*args)
        assert done.returncode == 0, done.stderr
    done = app_command("execute", "swift://AUTH_test/zcapps/wc.zapp", "--stdin", "in.txt")
    assert (done.returncode, done.stdout) == (0, "words 5\n"), done.stderr


def test_mapreduce_wordcount_equals_local_count(replies):
    (r,) = replies["mapreduce"]
    assert r.status == 200, r
    names = r.headers["x-nexe-system"].split(",")
    assert names == [f"map-{i}" for i in range(1, len(TEXTS) + 1)] + ["reduce"]
    assert r.body == local_wordcount(TEXTS)


def test_mapreduce_through_dev_out_to_two_reducers_equals_local_count(replies):
    (r,) = replies["mapreduce /dev/out"]
    assert r.status == 200, r
    assert r.headers["x-nexe-system"].split(",")[-2:] == ["red-1", "red-2"]
    assert set(r.headers["x-nexe-status"].split(",")) == {"ok"}, r.headers
    lines = r.body.decode().splitlines()
    assert sorted(lines) == local_wordcount(TEXTS).decode().splitlines()
    assert len(lines) == len(set(w.split()[0] for w in lines))   # each word counted by one reducer


def test_a_streamed_mapreduce_answers_as_the_staged_one_and_the_local_count(replies):
    streamed, staged = replies["mapreduce streamed"]
    assert (streamed.status, staged.status) == (200, 200), (streamed, staged)
    assert streamed.headers["x-zerolab-connect"] == "streamed", streamed.headers
    assert staged.headers["x-zerolab-connect"] == "staged: asked for", staged.headers
    assert streamed.headers["x-nexe-system"] == "map-1,map-2,map-3,map-4,map-5,red-1,red-2"
    assert set(streamed.headers["x-nexe-status"].split(",")) == {"ok"}, streamed.headers
    assert streamed.body == staged.body
    assert sorted(streamed.body.decode().splitlines()) == \
        local_wordcount([TEXTS[i] for i in FEW]).decode().splitlines()


def test_zerocloud_smoketest_replayed(replies):
    _, tarball, put, described, *_, opened = replies["zerocloud's smoketest"]
    assert put.status == 201, put
    for r in (tarball, described):
        assert (r.status, r.headers.get("x-nexe-retcode"), r.body) == (200, "0", b"hello"), r
    assert (opened.status, opened.headers.get("x-nexe-retcode")) == (200, "0"), opened
    assert opened.body == (pprint.pformat(json.loads(GEOMETRIES)) + "\n").encode(), opened


def test_a_replicated_node_runs_on_every_replica_and_its_copies_agree(replies):
    (r,) = replies["replicated node"]
    assert (r.status, r.body) == (200, TEXTS[2]), r
    assert r.headers["x-nexe-status"] == "ok", r.headers
    hosts = [where.split("/")[0] for where in r.headers["x-nexe-colocated"].split()]
    assert sorted(hosts) == sorted(STORAGE_NODES), r.headers


def test_every_map_node_ran_on_a_host_holding_its_object(host, replies):
    (r,) = replies["mapreduce"]
    colocated = r.headers["x-nexe-colocated"].split(",")
    assert colocated[-1] == "0"   # the reducer reads no object
    where = replicas_of(host, [f"zc/{name}" for name in PARTS])
    ran_on = [tuple(c.split("/")) for c in colocated[:-1]]
    for name, place in zip(PARTS, ran_on):
        assert place in where[f"zc/{name}"]["replicas"], (name, place, where[f"zc/{name}"])
    # spread over the cluster, not all on one node
    assert len({h for h, _ in ran_on}) >= 2, ran_on


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
    # ZeroCloud's answer: the job's 200, the node's status saying it timed out
    assert (r.status, r.body) == (200, b""), r
    assert r.headers["x-nexe-status"].startswith("timeout")
    assert r.headers["x-nexe-error"].startswith("node 'n': timeout")
    assert get.status == 200 and get.body == TEXTS[4]


def test_job_without_token_is_refused(replies):
    (r,) = replies["no token"]
    assert r.status == 401, r


def test_job_in_an_account_the_user_does_not_own_is_refused(replies):
    (r,) = replies["no access to the account"]
    assert r.status == 403, r


# ----------------------------------------------------- the executor's privileges
EXECUTOR = "zerolab-executor"
SOCKET = "/run/zerolab-executor/executor.sock"
# Facts about the running executor, one per line as key=value (one host.run).
EXECUTOR_FACTS = rf"""
pid=$(systemctl show -p MainPID --value {EXECUTOR}.service)
echo "owner=$(stat -c %U /proc/$pid)"
echo "workers=$(ps -o user:32= --ppid $pid | sort -u | paste -sd,)"
echo "passwd=$(getent passwd {EXECUTOR})"
echo "groups=$(id -Gn {EXECUTOR})"
echo "socket=$(stat -c '%U %G %a %F' {SOCKET})"
echo "folder=$(stat -c '%U %G %a' $(dirname {SOCKET}))"
echo "conf=$(stat -c '%U %G %a' /etc/zerolab/executor.conf)"
echo "devices=$(stat -c '%U %G %a' /srv/node)"
sed -n 's/^\(NoNewPrivs\|Seccomp\|CapEff\|CapBnd\):\s*/\1=/p' /proc/$pid/status
echo "read_devices=$(setpriv --reuid={EXECUTOR} --regid={EXECUTOR} --clear-groups ls /srv/node/d1 2>&1 && echo READABLE)"
echo "read_swift_conf=$(setpriv --reuid={EXECUTOR} --regid={EXECUTOR} --clear-groups cat /etc/swift/swift.conf 2>&1 \
    >/dev/null && echo READABLE)"
systemctl show {EXECUTOR}.service -p User -p Group -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp \
    -p PrivateDevices -p PrivateNetwork -p RestrictAddressFamilies -p RestrictNamespaces -p LockPersonality \
    -p CapabilityBoundingSet -p SystemCallErrorNumber -p InaccessiblePaths -p MemoryMax -p TasksMax -p OOMPolicy \
    -p RuntimeDirectory -p Requires
"""


@pytest.fixture(scope="module")
def executor(storage):
    node = next(iter(storage.values()))
    out = node.run(EXECUTOR_FACTS)
    assert out.rc == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_executor_runs_as_its_own_user_without_shell_or_home(executor):
    assert executor["owner"] == EXECUTOR
    assert executor["workers"] == EXECUTOR   # its worker processes too
    name, _, _, _, _, home, shell = executor["passwd"].split(":")
    assert (name, home, shell) == (EXECUTOR, "/nonexistent", "/usr/sbin/nologin")
    assert executor["groups"] == EXECUTOR    # not in group swift
    assert executor["conf"] == f"root {EXECUTOR} 640"


def test_executor_cannot_read_swifts_devices_or_secrets(executor):
    assert executor["devices"] == "root swift 750"
    assert "Permission denied" in executor["read_devices"], executor["read_devices"]
    assert "Permission denied" in executor["read_swift_conf"], executor["read_swift_conf"]


def test_executor_socket_is_systemds_and_only_swift_may_connect(executor):
    assert executor["socket"] == f"{EXECUTOR} swift 660 socket"
    assert executor["folder"] == "root root 755"
    assert f"{EXECUTOR}.socket" in executor["Requires"].split()
    assert executor["RuntimeDirectory"] == ""    # would delete the socket's folder at every stop


def test_executor_is_sandboxed_by_systemd(executor):
    # enforced even in the lab's containers (no mount or network namespaces there: see the role's README)
    assert executor["NoNewPrivs"] == "1"
    assert executor["Seccomp"] == "2"
    assert int(executor["CapEff"], 16) == 0 and int(executor["CapBnd"], 16) == 0
    # the unit as written (namespaces are applied where systemd may create them)
    expected = {"User": EXECUTOR, "Group": EXECUTOR, "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes", "PrivateNetwork": "yes",
                "RestrictAddressFamilies": "AF_UNIX", "RestrictNamespaces": "yes", "LockPersonality": "yes",
                "CapabilityBoundingSet": "", "OOMPolicy": "continue", "TasksMax": "256",
                "MemoryMax": str(2 << 30)}
    assert {k: executor[k] for k in expected} == expected
    assert "/srv/node" in executor["InaccessiblePaths"].split()
    assert executor["SystemCallErrorNumber"] in ("1", "EPERM")


# ----------------------------------------------------------- hostile jobs
# Each hostile job is followed by a plain GET and a normal job, which must
# both work; the executor daemon must neither restart nor change its process.
HOSTILE_WAT = {
    # random_get and fd_write given pointers past the end of memory (EFAULT
    # for the guest), then a correct write: the guest goes on and exits 0.
    "efault.wasm": r"""
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "survived\n")
  (func (export "_start")
    (drop (call $random_get (i32.const -16) (i32.const 16)))
    (drop (call $fd_write (i32.const 1) (i32.const -8) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
""",
    # The module's start function never returns: instantiation itself must time out.
    "start-loop.wasm": """
(module
  (memory (export "memory") 1)
  (func $forever (loop $again (br $again)))
  (start $forever)
  (func (export "_start")))
""",
    # Memory grown to its cap, then fd_write with 2^31-1 iovecs, 1000 times;
    # then the last call's errno written to stdout, and exit 0.
    "iovs.wasm": r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "fd_write errno 00\n")
  (func (export "_start") (local $i i32) (local $errno i32)
    (block $full
      (loop $grow
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $grow)))
    (loop $write
      (local.set $errno (call $fd_write (i32.const 1) (i32.const 0) (i32.const 0x7fffffff) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $write (i32.lt_u (local.get $i) (i32.const 1000))))
    (i32.store8 (i32.const 79) (i32.add (i32.const 48) (i32.div_u (local.get $errno) (i32.const 10))))
    (i32.store8 (i32.const 80) (i32.add (i32.const 48) (i32.rem_u (local.get $errno) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 18))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
""",
}
LONG_NAME = "a" * 1000
# 14 stars and a "b" no object name has: a backtracking matcher tries ~1000^13 ways on LONG_NAME.
BACKTRACKING = "*a" * 13 + "*b"
PART_1 = "swift://AUTH_test/zc/part-1.txt"
HEALTHCHECK = req("GET", PROXY + "/healthcheck", user=None)
NORMAL_JOB = job(cat_job("swift://AUTH_test/zc/part-4.txt"))
HOSTILE = {
    "bad guest pointers": job(cat_job(PART_1, "swift://AUTH_test/zchostile/efault.wasm")),
    "endless start function": job(cat_job(PART_1, "swift://AUTH_test/zchostile/start-loop.wasm")),
    "huge iovec count at the memory cap": job(cat_job(PART_1, "swift://AUTH_test/zchostile/iovs.wasm")),
    "JSON nested 5000 deep": req("POST", "", b"[" * 5000 + b"]" * 5000, JSON_JOB),
    "a billion instances": job([{"name": "many", "exec": {"path": CAT}, "count": 1000000000,
                                 "devices": [{"name": "stdout"}]}]),
    "backtracking wildcard": dict(job(cat_job("swift://AUTH_test/zclong/" + BACKTRACKING)),
                                  during=[HEALTHCHECK], during_delay=1.0),
    "endless guest": job(cat_job(PART_1, "swift://AUTH_test/zcbin/misbehave.wasm", "loop")),
}
SHOW_EXECUTOR = f"systemctl show -p MainPID -p NRestarts -p ActiveState {EXECUTOR}.service | paste -sd ' '"


def executors(storage):
    """Each storage node's executor: name -> its MainPID, NRestarts and ActiveState."""
    return {name: dict(kv.split("=", 1) for kv in node.run(SHOW_EXECUTOR).stdout.split())
            for name, node in storage.items()}


@pytest.fixture(scope="module")
def hostile(host, storage, data):
    """name -> (the hostile job's Reply, the GET after it, the normal job after it); plus
    "setup" (the uploads), "healthcheck" (at the end), and every executor's MainPID,
    NRestarts and ActiveState "before" and "after"; the requests all from one host.run."""
    setup = [req("PUT", "/zchostile"), req("PUT", "/zclong"),
             req("PUT", "/zclong/" + LONG_NAME, b"an object with a long name\n")]
    setup += [req("PUT", "/zchostile/" + name, bytes(wasmtime.wat2wasm(wat)), {"Content-Type": "application/wasm"})
              for name, wat in HOSTILE_WAT.items()]
    flat = setup + [r for name in HOSTILE for r in (HOSTILE[name], STILL_SERVES, NORMAL_JOB)] + [HEALTHCHECK]
    before = executors(storage)
    out = host.run(client_command(host, flat))
    assert out.rc == 0, out.stderr
    got = replies_of(out.stdout)
    result = {"setup": got[:len(setup)], "healthcheck": got[-1], "before": before, "after": executors(storage)}
    rest = iter(got[len(setup):-1])
    for name in HOSTILE:
        result[name] = (next(rest), next(rest), next(rest))
    return result


def test_hostile_programs_were_uploaded(hostile):
    assert all(r.status in (201, 202) for r in hostile["setup"]), hostile["setup"]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_after_a_hostile_job_get_and_jobs_still_work(hostile, name):
    r, get, normal = hostile[name]
    assert 0 < r.status < 500, r            # answered, and not as a server failure
    assert b"Traceback" not in r.body
    assert get.status == 200 and get.body == TEXTS[4], get
    assert normal.status == 200 and normal.body == TEXTS[4], normal


def test_guest_pointers_out_of_memory_get_efault_and_the_guest_goes_on(hostile):
    r, _, _ = hostile["bad guest pointers"]
    assert r.status == 200, r
    assert b"survived" in r.body
    assert r.headers["x-nexe-retcode"] == "0"


def test_start_function_that_never_returns_times_out(hostile):
    r, _, _ = hostile["endless start function"]
    assert r.status == 200, r
    assert r.headers["x-nexe-status"].startswith("timeout"), r.headers


def test_huge_iovec_count_is_an_error_for_the_guest_not_the_node(hostile):
    r, _, _ = hostile["huge iovec count at the memory cap"]
    assert r.status < 500, r
    # the guest went on: fd_write of 2^31-1 iovecs failed with an errno (EINVAL is 28); or a limit stopped it
    if r.status == 200 and r.headers["x-nexe-status"] == "ok":
        errno = re.search(rb"fd_write errno (\d+)", r.body)
        assert errno and int(errno.group(1)) != 0, r.body


def test_deeply_nested_json_is_400_with_a_one_line_reason(hostile):
    r, _, _ = hostile["JSON nested 5000 deep"]
    assert r.status == 400, r
    assert len(r.body.strip().splitlines()) == 1, r.body
    assert b"Traceback" not in r.body and b"RecursionError" not in r.body


def test_a_billion_instances_is_413(hostile):
    r, _, _ = hostile["a billion instances"]
    assert r.status == 413, r


def test_backtracking_wildcard_is_refused_in_time_and_the_proxy_answers_meanwhile(hostile):
    r, _, _ = hostile["backtracking wildcard"]
    assert r.status in (400, 404, 413), r   # 0: no answer within the client's 60 s
    (health,) = r.during
    assert health.status == 200 and health.body == b"OK", health


def test_endless_guest_times_out(hostile):
    r, _, _ = hostile["endless guest"]
    assert r.status == 200, r
    assert r.headers["x-nexe-status"].startswith("timeout")


def test_executor_survived_every_hostile_job(hostile):
    assert hostile["healthcheck"].status == 200
    for name in STORAGE_NODES:
        before, after = hostile["before"][name], hostile["after"][name]
        assert before["ActiveState"] == after["ActiveState"] == "active", (name, before, after)
        assert before["MainPID"] != "0"
        assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"]), (name, before, after)


# ------------------------------------------------- socket activation (last: it restarts the executor)
def test_jobs_queue_on_the_socket_while_the_executor_is_down(host, storage, data, hostile):
    """The socket is systemd's: with the daemon stopped (on every storage node,
    so that the job cannot go elsewhere) it still listens, a job's connection
    waits in its backlog and starts the daemon (socket activation)."""
    socket_id = f"stat -c '%i %U %G %a' {SOCKET}"
    before, stopped = {}, {}
    for name, node in storage.items():
        out = node.run(f"{socket_id}; systemctl stop {EXECUTOR}.service; systemctl is-active {EXECUTOR}.service")
        before[name], stopped[name] = out.stdout.strip().splitlines()
    # "failed" in a podman container on cgroup v1: systemd may miss the emptied cgroup and
    # end the stop by its timeout (see the unit); the socket is what matters here
    assert set(stopped.values()) <= {"inactive", "failed"}, stopped
    (r,) = batch(host, [NORMAL_JOB])
    assert r.status == 200 and r.body == TEXTS[4], r
    ran_on, _ = r.headers["x-nexe-colocated"].split("/")
    out = storage[ran_on].run(f"systemctl is-active {EXECUTOR}.service {EXECUTOR}.socket")
    assert out.stdout.split() == ["active", "active"], (ran_on, out.stdout)
    for name, node in storage.items():
        assert node.run(socket_id).stdout.strip() == before[name], name   # the same socket (inode), owner and mode
        node.run(f"systemctl start {EXECUTOR}.service")


# -------------------------------------------- the benchmark, so that it does not rot
def test_the_swift_benchmark_runs_on_the_node_in_a_quick_mode(host):
    """Not a timed test: benchmarks/swift.py checks its answers before it times
    anything (an identity job returns the object, a word count job equals the
    local count), and here it must get through them and print its table."""
    bench = Path(__file__).resolve().parents[3] / "benchmarks" / "swift.py"
    subprocess.run(["podman", "cp", str(bench), f"{host.backend.name}:/tmp/zerolab-benchmark-swift.py"], check=True)
    out = host.run("python3 /tmp/zerolab-benchmark-swift.py --runs 3 --seconds 1 --clients 2 --set-mb 2")
    print(out.stdout)
    assert out.rc == 0, out.stderr
    assert re.search(r"^1 MB: identity job \(cat\.wasm\)\s+[0-9.]+\s+[0-9.]+x$", out.stdout, re.M), out.stdout
    assert re.search(r"^1 MB: GET execution \(open/1\.0\)\s+[0-9.]+\s+[0-9.]+x$", out.stdout, re.M), out.stdout
    assert re.search(r"^2 MB set: MapReduce job\s+[0-9.]+\s+[0-9.]+x$", out.stdout, re.M), out.stdout
    # Its answers, not its times: every map node next to its object, and the
    # proxy's bytes measured for both (on a 2 MB set the MapReduce's fixed
    # cost, programs and map outputs, is about the size of the set; the full
    # run's 100 MB set is what compares them).
    assert re.search(r"^colocation: 24/24 map nodes ran next to their object \(100%\)", out.stdout, re.M), out.stdout
    moved = re.search(r"^bytes through the proxy's network: MapReduce (\d+) .* GET all (\d+) ", out.stdout, re.M)
    assert moved and int(moved.group(1)) > 0 and int(moved.group(2)) >= 2 << 20, out.stdout
    assert re.search(r"^targets: identity p50 <= 2x GET: (met|MISSED)", out.stdout, re.M), out.stdout


# ------------------------------------------ a storage node down (last: it stops a node)
def podman(*args):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=180)


WHILE_DOWN = b"written while a storage node was down\n"


@pytest.fixture(scope="module")
def node_down(host, storage, data):
    """The last storage node stopped; meanwhile every part read back, the
    MapReduce run, and an object written.  Then the node started again, and
    the seconds until the replicators have put that object on it."""
    down = list(STORAGE_NODES)[-1]
    stopped = podman("stop", "--time", "30", f"zerolab-{down}")
    assert stopped.returncode == 0, stopped.stderr
    try:
        requests = [req("GET", f"/zc/{name}") for name in PARTS]
        requests += [SCENARIOS["mapreduce"][0], req("PUT", "/zc/while-down.txt", WHILE_DOWN),
                     req("GET", "/zc/while-down.txt")]
        got = batch(host, requests)
    finally:
        started = podman("start", f"zerolab-{down}")
    assert started.returncode == 0, started.stderr
    # Its servers up again (the executor warms its workers for some seconds,
    # the object server starts after it), so that the tests after this one
    # find the node as it was.
    began = time.monotonic()
    while time.monotonic() - began < 120:
        units = storage[down].run(f"systemctl is-active {' '.join(STORAGE_SERVICES)}").stdout.split()
        if units == ["active"] * len(STORAGE_SERVICES):   # (its exit status: 0 when any one is)
            break
        time.sleep(1)
    where = replicas_of(host, ["zc/while-down.txt"])["zc/while-down.txt"]
    (device,) = [dev for node, dev in where["replicas"] if node == down]
    began, level = time.monotonic(), None
    while time.monotonic() - began < 240:
        if data_file_exists(storage[down], device, where):
            level = time.monotonic() - began
            break
        time.sleep(3)
    return {"down": down, "gets": got[:len(PARTS)], "mapreduce": got[len(PARTS)],
            "put": got[len(PARTS) + 1], "get": got[len(PARTS) + 2], "level after": level}


def test_with_a_storage_node_down_every_object_is_still_read(node_down):
    for name, r in zip(PARTS, node_down["gets"]):
        assert r.status == 200 and r.body == TEXTS[int(name.removeprefix("part-").removesuffix(".txt"))], (name, r)


def test_with_a_storage_node_down_jobs_are_rerouted_to_other_replicas(node_down):
    r = node_down["mapreduce"]
    assert r.status == 200, r
    assert r.body == local_wordcount(TEXTS)
    ran_on = [c.split("/")[0] for c in r.headers["x-nexe-colocated"].split(",")[:-1]]
    # every map node still next to a replica of its object, none on the stopped node
    assert node_down["down"] not in ran_on and set(ran_on) <= set(STORAGE_NODES), ran_on


def test_an_object_written_while_a_node_was_down_reaches_it_when_it_returns(node_down):
    assert node_down["put"].status == 201, node_down["put"]
    assert node_down["get"].status == 200 and node_down["get"].body == WHILE_DOWN
    assert node_down["level after"] is not None, f"{node_down['down']} still lacks while-down.txt after 240 s"
