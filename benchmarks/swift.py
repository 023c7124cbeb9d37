#!/usr/bin/env python3
"""zerocloud vs plain Swift, side by side in one run, against a live proxy.

    .venv/bin/python benchmarks/swift.py        # from the checkout, against the running lab
    python3 swift.py --url http://127.0.0.1:8080   # on the Swift proxy node itself

From the checkout it finds the lab's proxy itself (the first host of the
inventory's swift_proxy group, at its address and swift_proxy_port) and the guests
in build/guests; on a node (standard library only), the proxy on loopback and
the guests in /opt/zerolab/guests.  E.g. in the Molecule container:
    podman cp benchmarks/swift.py zerolab-swift-proxy1:/tmp/ && podman exec zerolab-swift-proxy1 python3 /tmp/swift.py

Measures, with the standard library only:
  1. GET of a 1 MB object   vs  an identity job (cat.wasm) returning it: p50 ratio;
     and vs a GET execution of it (ZeroCloud's open/1.0: the account's
     template for its content type runs cat.wasm on it)
  2. GET of a 10 MB text + a word count here  vs  a word count job next to it
  3. small jobs per second (hello.wasm, several clients at once)
  4. an object set (24 objects, --set-mb in all): a MapReduce word count
     (a map node per object, one reducer) vs GET of every object + a word
     count here, p50 ratio; the share of map nodes that ran on a storage
     node holding their object (X-Nexe-Colocated); and, run on the proxy
     node, the bytes its network interfaces moved for each, against the
     bytes of the objects
  5. connect streamed vs staged (X-Zerolab-Connect), on 6 objects of the set
     and one reducer (7 nodes: within zerovm_concurrency): the MapReduce,
     and mappers passing their whole objects on (cat.wasm) to one word count
Targets: identity p50 <= 2x GET; GET execution p50 <= 2x GET; >= 60 small jobs/s on 2 cores; colocation
100%; the MapReduce moves <= 10% of its input through the proxy.
"""

import argparse
import http.client
import json
import os
import random
import re
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
OPEN_TYPE = "application/x-zerolab-bench"
NODE_GUESTS = Path("/opt/zerolab/guests")


def lab_proxy_url(inventory_path=None):
    """The lab's Swift proxy from the inventory, or loopback where there is no checkout (on a node)."""
    try:
        from zerolab.lab import inventory
    except ImportError:
        return "http://127.0.0.1:8080"
    try:
        lab = inventory.load(inventory_path or inventory.DEFAULT_INVENTORY)
    except inventory.InventoryError as error:
        raise SystemExit(f"cannot find the lab's Swift proxy: {error}") from None
    from zerolab.lab.hostconfig import on_a_local_network

    swift = lab.group("swift_proxy")[0]
    if not on_a_local_network(swift.address):
        # Its traffic would leave this machine: no lab is there, and none may be probed.
        raise SystemExit(f"the lab is down: {swift.name}'s address {swift.address} is on no network of this machine; "
                         "bring it up with scripts/lab up, or pass --url")
    return f"http://{swift.address}:{swift.vars.get('swift_proxy_port', lab.vars.get('swift_proxy_port', 8080))}"


def default_guests():
    return str(NODE_GUESTS if NODE_GUESTS.is_dir() else CHECKOUT / "build" / "guests")


class Client:
    """One keep-alive connection, authenticated with tempauth."""

    def __init__(self, url, user, key):
        self.base = urllib.parse.urlsplit(url)
        status, headers, _ = self.call("GET", "/auth/v1.0", headers={"X-Auth-User": user, "X-Auth-Key": key})
        assert status == 200, f"auth failed: {status}"
        self.token = headers["x-auth-token"]
        self.path = urllib.parse.urlsplit(headers["x-storage-url"]).path
        self.account = self.path.rsplit("/", 1)[-1]

    def call(self, method, path, body=None, headers=None):
        if not hasattr(self, "conn"):
            self.conn = http.client.HTTPConnection(self.base.hostname, self.base.port or 80, timeout=120)
        headers = dict(headers or {})
        if hasattr(self, "token"):
            headers["X-Auth-Token"] = self.token
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def put(self, name, data, ctype="application/octet-stream"):
        status, _, body = self.call("PUT", f"{self.path}/{name}", data, {"Content-Type": ctype})
        assert status in (201, 202), (name, status, body)

    def get(self, name):
        status, _, data = self.call("GET", f"{self.path}/{name}")
        assert status == 200, (name, status)
        return data

    def job(self, nodes):
        return self.job_with_headers(nodes)[1]

    def open(self, name):
        """A GET execution of an object (/open/<account>/<name>)."""
        status, _, data = self.call("GET", f"/open/{self.account}/{name}")
        assert status == 200, (name, status, data[:300])
        return data

    def job_with_headers(self, nodes, extra=None):
        status, headers, data = self.call("POST", self.path, json.dumps(nodes).encode(),
                                          {"X-Zerovm-Execute": "1.0", "Content-Type": "application/json",
                                           **(extra or {})})
        assert status == 200, (status, data[:300])
        return headers, data


def timed_side_by_side(first, second, n):
    """n timings of each, taken in turns (first, second, first, ...), so that
    Swift's background daemons or a busy minute weigh on both alike."""
    times = ([], [])
    for _ in range(n):
        for fn, out in zip((first, second), times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return times


def interface_bytes():
    """Bytes received and sent by this machine's network interfaces but
    loopback: on the proxy node (its client on loopback), what the proxy
    moved to and from the storage nodes."""
    total = 0
    for iface in Path("/sys/class/net").iterdir():
        if iface.name != "lo":
            total += sum(int((iface / "statistics" / f"{way}_bytes").read_text()) for way in ("rx", "tx"))
    return total


def measured_bytes(fn):
    before = interface_bytes()
    result = fn()
    return result, interface_bytes() - before


def wordcount(texts):
    """The word counts of the texts together (a word never spans two), as the job prints them;
    one text in memory at a time."""
    counts = Counter()
    for data in texts:
        counts.update(w.lower() for w in re.findall(rb"[A-Za-z0-9']+", data))
    return b"".join(b"%s %d\n" % (w, n) for w, n in sorted(counts.items()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="the Swift proxy (default: the lab's, from its inventory)")
    p.add_argument("--inventory", help="the lab inventory to find the proxy in (default: inventories/lab/hosts.yml)")
    p.add_argument("--user", default="test:tester")
    p.add_argument("--key", default="testing")
    p.add_argument("--guests", default=default_guests(), help="folder of hello.wasm, cat.wasm, wordcount.wasm")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--set-mb", type=float, default=100.0, help="size of the MapReduce's object set (24 objects)")
    a = p.parse_args()
    a.url = a.url or lab_proxy_url(a.inventory)
    missing = [g for g in ("cat", "wordcount", "hello") if not os.path.exists(os.path.join(a.guests, f"{g}.wasm"))]
    if missing:
        raise SystemExit(f"no {', '.join(m + '.wasm' for m in missing)} in {a.guests}: run scripts/build-guests "
                         "or pass --guests")

    try:
        c = Client(a.url, a.user, a.key)
    except OSError as e:
        raise SystemExit(f"no Swift proxy answers at {a.url} ({e.strerror or e}): the lab is down? "
                         f"bring it up with scripts/lab up, or pass --url") from None
    acct = c.account
    c.put("bench", b"")
    for g in ("cat", "wordcount", "hello"):
        with open(os.path.join(a.guests, f"{g}.wasm"), "rb") as f:
            c.put(f"bench/{g}.wasm", f.read(), "application/wasm")
    rnd = random.Random(42)
    one_mb = bytes(rnd.getrandbits(8) for _ in range(1 << 20))
    c.put("bench/1mb.bin", one_mb)
    # The same bytes under a type whose GET template runs cat.wasm on them.
    c.put("bench/1mb.open", one_mb, OPEN_TYPE)
    c.put(".zvm", b"")
    c.put(f".zvm/{OPEN_TYPE}/config", json.dumps([
        {"name": "cat", "exec": {"path": f"swift://{acct}/bench/cat.wasm"},
         "devices": [{"name": "stdin", "path": "{.object_path}"}, {"name": "stdout"}]}]).encode(), "application/json")
    words = [b"zero", b"cloud", b"swift", b"object", b"sandbox", b"wasm", b"data", b"node", b"job", b"ring"]
    text = b" ".join(rnd.choice(words) + b"%d" % rnd.randrange(500) for _ in range(1_400_000))[:10 << 20]
    c.put("bench/10mb.txt", text, "text/plain")

    def node(name, prog, stdin=None, args=""):
        devices = [{"name": "stdout"}]
        if stdin:
            devices.insert(0, {"name": "stdin", "path": f"swift://{acct}/bench/{stdin}"})
        return [{"name": name, "exec": {"path": f"swift://{acct}/bench/{prog}.wasm", "args": args},
                 "devices": devices}]

    # correctness first: a benchmark of wrong answers is worthless
    assert c.job(node("id", "cat", "1mb.bin")) == one_mb
    assert c.open("bench/1mb.open") == one_mb
    assert c.job(node("wc", "wordcount", "10mb.txt")) == wordcount([text])
    assert c.job(node("hello", "hello")).strip()

    rows = []
    get1, job1 = timed_side_by_side(lambda: c.get("bench/1mb.bin"), lambda: c.job(node("id", "cat", "1mb.bin")),
                                    a.runs)
    rows.append(("1 MB: GET", statistics.median(get1), None))
    rows.append(("1 MB: identity job (cat.wasm)", statistics.median(job1), statistics.median(job1) / statistics.median(get1)))
    get_o, open1 = timed_side_by_side(lambda: c.get("bench/1mb.bin"), lambda: c.open("bench/1mb.open"), a.runs)
    rows.append(("1 MB: GET (again, beside the next)", statistics.median(get_o), None))
    rows.append(("1 MB: GET execution (open/1.0)", statistics.median(open1),
                 statistics.median(open1) / statistics.median(get_o)))

    n10 = max(3, a.runs // 6)
    get10, job10 = timed_side_by_side(lambda: wordcount([c.get("bench/10mb.txt")]),
                                      lambda: c.job(node("wc", "wordcount", "10mb.txt")), n10)
    rows.append(("10 MB: GET + word count here", statistics.median(get10), None))
    rows.append(("10 MB: word count job", statistics.median(job10), statistics.median(job10) / statistics.median(get10)))

    done = []
    stop = time.perf_counter() + a.seconds

    def worker():
        w = Client(a.url, a.user, a.key)
        n = 0
        while time.perf_counter() < stop:
            w.job(node("hello", "hello"))
            n += 1
        done.append(n)

    threads = [threading.Thread(target=worker) for _ in range(a.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = sum(done) / (time.perf_counter() - t0)

    # The object set: 24 texts, each its own words and counts.  Named by
    # their size: another run's set of another size is other objects, never
    # an overwrite that a replica may not have yet (a PUT needs 2 of 3), on
    # which a map node would count the old words.
    parts = 24
    size = int(a.set_mb * (1 << 20)) // parts
    corpus = {}
    for i in range(parts):
        name = f"set{size}-{i:02d}.txt"
        corpus[name] = (text[i * 4099 % len(text):] + text)[:size]
        c.put(f"bench/{name}", corpus[name], "text/plain")
    set_bytes = sum(len(t) for t in corpus.values())
    mapreduce = [
        {"name": "map", "exec": {"path": f"swift://{acct}/bench/wordcount.wasm"},
         "devices": [{"name": "stdin", "path": f"swift://{acct}/bench/set{size}-*.txt"}], "connect": ["reduce"]},
        {"name": "reduce", "exec": {"path": f"swift://{acct}/bench/wordcount.wasm", "args": "-r"},
         "devices": [{"name": "stdout"}]},
    ]
    expected = wordcount(corpus.values())

    def run_mapreduce():
        headers, data = c.job_with_headers(mapreduce)
        assert data == expected, data[:300]
        return headers["x-nexe-colocated"].split(",")[:-1]

    def download_and_count():
        # one object at a time, as a client would (100 MB of words at once would not fit a small node)
        assert wordcount(c.get(f"bench/{name}") for name in sorted(corpus)) == expected
        return None

    colocated, job_bytes = measured_bytes(run_mapreduce)
    _, get_bytes = measured_bytes(download_and_count)
    near = sum(1 for place in colocated if place != "0")
    hosts = sorted({place.split("/")[0] for place in colocated if place != "0"})
    nset = max(2, a.runs // 10)
    getset, jobset = timed_side_by_side(download_and_count, run_mapreduce, nset)
    set_label = f"{set_bytes / (1 << 20):.0f} MB set"
    rows.append((f"{set_label}: GET all + word count here", statistics.median(getset), None))
    rows.append((f"{set_label}: MapReduce job", statistics.median(jobset),
                 statistics.median(jobset) / statistics.median(getset)))

    # connect streamed vs staged, on 6 of the objects: the same MapReduce
    # (little data between the stages: word counts), and a pipeline whose
    # mappers pass their whole objects on (cat.wasm) to one word count.
    few = sorted(corpus)[:6]
    for name in few:
        c.put(f"bench/few-{name}", corpus[name], "text/plain")
    few_inputs = [{"name": "stdin", "path": f"swift://{acct}/bench/few-set{size}-*.txt"}]
    few_expected = wordcount(corpus[name] for name in few)
    few_mb = sum(len(corpus[n]) for n in few) / (1 << 20)
    pipelines = {
        "MapReduce": [dict(mapreduce[0], devices=few_inputs), mapreduce[1]],
        "cat to one count": [
            {"name": "map", "exec": {"path": f"swift://{acct}/bench/cat.wasm"}, "devices": few_inputs,
             "connect": ["count"]},
            {"name": "count", "exec": {"path": f"swift://{acct}/bench/wordcount.wasm",
                                       "args": " ".join(f"/dev/in-map-{i}" for i in range(1, len(few) + 1))},
             "devices": [{"name": "stdout"}]}],
    }

    def connected(nodes, mode):
        def run():
            headers, data = c.job_with_headers(nodes, {"X-Zerolab-Connect": mode})
            assert data == few_expected, data[:300]
            assert headers["x-zerolab-connect"] == (mode if mode == "streamed" else "staged: asked for"), headers
        return run
    for label, nodes in pipelines.items():
        staged, streamed = timed_side_by_side(connected(nodes, "staged"), connected(nodes, "streamed"), nset)
        rows.append((f"{few_mb:.1f} MB, 6 maps: {label}, staged", statistics.median(staged), None))
        rows.append((f"{few_mb:.1f} MB, 6 maps: {label}, streamed", statistics.median(streamed),
                     statistics.median(streamed) / statistics.median(staged)))

    print(f"{'measurement':44} {'p50 ms':>9} {'ratio':>7}")
    for name, sec, ratio in rows:
        print(f"{name:44} {sec * 1000:9.1f} {('%.2fx' % ratio) if ratio else '':>7}")
    print(f"{'small jobs (hello.wasm), ' + str(a.clients) + ' clients':44} {rate:9.1f} jobs/s")
    print(f"colocation: {near}/{len(colocated)} map nodes ran next to their object "
          f"({100 * near / len(colocated):.0f}%), on {', '.join(hosts) or 'no host'}")
    on_proxy = urllib.parse.urlsplit(a.url).hostname in ("127.0.0.1", "localhost", "::1")
    if on_proxy:
        print(f"bytes through the proxy's network: MapReduce {job_bytes} "
              f"({100 * job_bytes / set_bytes:.1f}% of the {set_bytes} input bytes); "
              f"GET all {get_bytes} ({100 * get_bytes / set_bytes:.1f}%)")
    else:
        print("bytes through the proxy's network: not measured (run this on the proxy node, --url http://127.0.0.1:8080)")
    ident, opened = rows[1][2], rows[3][2]
    print(f"\ntargets: identity p50 <= 2x GET: {'met' if ident <= 2 else 'MISSED'} ({ident:.2f}x); "
          f"GET execution p50 <= 2x GET: {'met' if opened <= 2 else 'MISSED'} ({opened:.2f}x); "
          f">= 60 small jobs/s: {'met' if rate >= 60 else 'MISSED'} ({rate:.0f}/s); "
          f"colocation 100%: {'met' if near == len(colocated) else 'MISSED'}"
          + (f"; MapReduce bytes <= 10% of input: {'met' if job_bytes <= set_bytes / 10 else 'MISSED'}"
             if on_proxy else ""))


if __name__ == "__main__":
    main()
