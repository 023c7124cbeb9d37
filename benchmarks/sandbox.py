#!/usr/bin/env python3
"""Sandbox benchmark: everything measured side by side in one run, printed with ratios.

    .venv/bin/python benchmarks/sandbox.py [--quick] [--no-podman]

1. in-process C hello job (warm Executor: new Store + instantiate + run), p50/p99,
   and the same job through the executor daemon's worker pool (what zerocloud
   uses: unix socket, daemon, worker process, reply)
2. zvsh end to end (a new process per job), C hello and Python hello
3. Python 3 hello in a warm Executor
4. native fork/exec of a C hello (compiled with cc)
5. podman run --rm localhost/zerolab-node:<tag> true (when podman and the image exist)
6. 100 MB channel read by the C cat guest (and wordcount) vs native `cat > /dev/null`

The guests and the Python image are built first with the project's scripts.
No number here is asserted anywhere: this prints, it does not judge.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from zerolab.sandbox import Channel, Executor, Manifest, Mount  # noqa: E402
from zerolab.zerocloud import executord, protocol  # noqa: E402

BUILD = ROOT / "build"
BENCH = BUILD / "bench"
GUESTS = BUILD / "guests"
IMAGE = BUILD / "images" / "python.tar"
CACHE = BUILD / "cache" / "modules"
G = 4294967296
BIN = Path(sys.executable).parent


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(fn, n, warmup=1):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def fmt(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.2f} s "


def row(name, samples):
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    print(f"  {name:<48} p50 {fmt(p50)}   p99 {fmt(p99)}   (n={len(samples)})")
    return p50


def std_memory():
    return [Channel(b"", "/dev/stdin", 0, 0, G, G, 0, 0),
            Channel(None, "/dev/stdout", 0, 0, 0, 0, G, G),
            Channel(None, "/dev/stderr", 0, 0, 0, 0, G, G)]


def native_hello():
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    exe = BENCH / "hello-native"
    src = ROOT / "guests" / "hello.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def spawn_wait(argv):
    # posix_spawn + waitpid: the leanest fork/exec Python can do
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = os.posix_spawn(argv[0], argv, {}, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
        os.waitpid(pid, 0)
    finally:
        os.close(devnull)


def podman_image():
    if shutil.which("podman") is None:
        return None, "podman is not installed"
    env = dict(os.environ)
    conf = ROOT / "containers.conf"
    if conf.exists():
        env["CONTAINERS_CONF"] = str(conf)
    p = subprocess.run(["podman", "images", "--filter", "reference=localhost/zerolab-node",
                        "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, env=env)
    tags = [t for t in p.stdout.split() if t and not t.endswith(":<none>")]
    if p.returncode != 0 or not tags:
        return None, "no localhost/zerolab-node image (build it with the lab scripts first)"
    return (tags[0], env), None


def data_files(size):
    BENCH.mkdir(parents=True, exist_ok=True)
    raw = BENCH / f"random-{size >> 20}MB.bin"
    text = BENCH / f"text-{size >> 20}MB.txt"
    if not raw.exists() or raw.stat().st_size != size:
        with open(raw, "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
    if not text.exists() or text.stat().st_size != size:
        line = b"the quick brown fox jumps over the lazy dog and the cat sat on the mat again\n"
        block = line * ((1 << 20) // len(line) + 1)
        with open(text, "wb") as f:
            left = size
            while left:
                chunk = block[:min(left, 1 << 20)]
                f.write(chunk)
                left -= len(chunk)
    return raw, text


def pool_jobs(n):
    """C hello through a real executor daemon (two workers) over its unix socket."""
    folder = Path(tempfile.mkdtemp(prefix="zerolab-bench-"))
    path = str(folder / "executor.sock")
    daemon = executord.Daemon({}, str(folder / "cache"), executord.Slots(2, 4), worker_data_limit=1 << 30)
    server = executord.serve_in_thread(daemon, path)
    program = (GUESTS / "hello.wasm").read_bytes()
    header = {"op": "run", "program": {"payload": 0}, "args": ["hello"],
              "outputs": [{"alias": "/dev/stdout", "limit": 1 << 20}, {"alias": "/dev/stderr", "limit": 1 << 20}]}

    def one():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            protocol.send(s, header, [program])
            reply, out = protocol.Reader(s).message()
        assert out and out[0] == b"Hello, World!\n", reply

    try:
        return timed(one, n, 50)
    finally:
        executord.stop_serving(server, daemon)
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--no-podman", action="store_true", help="skip the podman measurement")
    args = parser.parse_args()
    n_fast = 500 if args.quick else 3000
    n_slow = 5 if args.quick else 20

    print("building guests and the Python image (no-ops when up to date)...")
    subprocess.run([str(ROOT / "scripts" / "build-guests")], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(ROOT / "scripts" / "build-python-image")], check=True, stdout=subprocess.DEVNULL)
    BENCH.mkdir(parents=True, exist_ok=True)
    ex = Executor(cache_dir=str(CACHE))
    env = dict(os.environ, ZEROLAB_CACHE_DIR=str(CACHE))
    results = {}

    print("\njob start")
    hello = Manifest(program=str(GUESTS / "hello.wasm"), channels=std_memory())
    assert ex.run(hello).stdout == b"Hello, World!\n"
    results["c_inproc"] = row("C hello, in-process (warm Executor)", timed(lambda: ex.run(hello), n_fast, 50))

    results["c_pool"] = row("C hello, executor daemon (worker pool)", pool_jobs(n_fast))

    exe = native_hello()
    if exe:
        results["fork"] = row("native C hello, fork/exec (posix_spawn)", timed(lambda: spawn_wait([str(exe)]), n_fast // 3, 10))
    else:
        print("  native C hello: skipped (no C compiler)")

    zvsh = str(BIN / "zvsh")
    results["zvsh_c"] = row("zvsh C hello (new process)", timed(
        lambda: subprocess.run([zvsh, str(GUESTS / "hello.wasm")], env=env, stdout=subprocess.DEVNULL, check=True),
        n_slow))

    py = Manifest(program=f"{IMAGE}/bin/python", args=["python", "-c", "print('Hello')"],
                  channels=std_memory() + [Channel(str(IMAGE), "/dev/1.python.tar", 3, 0, G, G, 0, 0)],
                  mounts=[Mount("/dev/1.python.tar", "/", "ro")])
    first = time.perf_counter()
    r = ex.run(py)
    first = time.perf_counter() - first
    assert r.stdout == b"Hello\n", (r.exit_state, r.stderr)
    print(f"  {'(Python module load: first run in this process)':<48}     {fmt(first)}")
    results["py_warm"] = row("Python 3 hello, in-process (warm Executor)", timed(lambda: ex.run(py), n_slow))
    hello_py = BENCH / "hello.py"
    hello_py.write_text('print("Hello")\n')
    results["zvsh_py"] = row("zvsh --zvm-image python.tar python @hello.py", timed(
        lambda: subprocess.run([zvsh, "--zvm-image", str(IMAGE), "python", f"@{hello_py}"], env=env,
                               stdout=subprocess.DEVNULL, check=True), n_slow))

    if args.no_podman:
        print("  podman run --rm: skipped (--no-podman)")
    else:
        found, why = podman_image()
        if found:
            tag, penv = found
            results["podman"] = row(f"podman run --rm {tag} true", timed(
                lambda: subprocess.run(["podman", "run", "--rm", tag, "true"], env=penv, check=True,
                                       stdout=subprocess.DEVNULL), 5 if args.quick else 10))
        else:
            print(f"  podman run --rm: skipped ({why})")

    print("\n100 MB channel read")
    raw, text = data_files(100 << 20)
    results["native_cat"] = row("native cat FILE > /dev/null", timed(
        lambda: subprocess.run(["cat", str(raw)], stdout=subprocess.DEVNULL, check=True), 5))

    def guest(prog, data, argv):
        m = Manifest(program=str(GUESTS / prog), args=argv, channels=[
            Channel("/dev/null", "/dev/stdout", 0, 0, 0, 0, G, G),
            Channel(None, "/dev/stderr", 0, 0, 0, 0, G, G),
            Channel(str(data), "/dev/1.data", 0, 0, G, G, 0, 0)])
        r = ex.run(m)
        assert r.exit_code == 0 and r.channels[2].read_bytes == 100 << 20, (r.exit_state, r.stderr)
    results["guest_cat"] = row("C cat guest, /dev/1.data -> /dev/null", timed(
        lambda: guest("cat.wasm", raw, ["cat", "/dev/1.data"]), 5))
    results["guest_wc"] = row("C wordcount guest (map) on 100 MB of text", timed(
        lambda: guest("wordcount.wasm", text, ["wordcount", "/dev/1.data"]), 3, 0))

    print("\nratios")

    def ratio(label, a, b):
        if a in results and b in results:
            print(f"  {label:<60} {results[a] / results[b]:10.1f}x")
    ratio("fork/exec native / in-process C job  (>1: sandbox faster)", "fork", "c_inproc")
    ratio("worker pool / in-process C job (the cost of isolation)", "c_pool", "c_inproc")
    ratio("fork/exec native / worker-pool C job  (>1: pool faster)", "fork", "c_pool")
    ratio("podman run / in-process C job", "podman", "c_inproc")
    ratio("zvsh C / in-process C job", "zvsh_c", "c_inproc")
    ratio("zvsh Python / warm in-process Python", "zvsh_py", "py_warm")
    if "guest_cat" in results:
        share = results["native_cat"] / results["guest_cat"] * 100
        print(f"  {'C cat guest throughput as % of native cat':<60} {share:9.0f} %")
        mbps = 100 / results["guest_cat"]
        print(f"  {'C cat guest throughput':<60} {mbps:7.0f} MB/s")
    ex.close()


if __name__ == "__main__":
    main()
