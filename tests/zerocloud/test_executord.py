"""The executor daemon end to end over its real unix socket, with the real sandbox
and the C guests (built by scripts/build-guests when missing)."""

import io
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from zerolab.zerocloud import executord, protocol

ROOT = Path(__file__).resolve().parents[2]
OUTS = [{"alias": "/dev/stdout", "limit": 1 << 20}, {"alias": "/dev/stderr", "limit": 1 << 20}]


@pytest.fixture(scope="module")
def guests():
    subprocess.run([str(ROOT / "scripts" / "build-guests")], check=True, stdout=subprocess.DEVNULL)
    return ROOT / "build" / "guests"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("executord")
    path = str(folder / "executor.sock")
    d = executord.Daemon({}, str(folder / "cache"), executord.Slots(2, 1), worker_data_limit=1 << 30)
    server = executord.serve_in_thread(d, path)
    yield path
    executord.stop_serving(server, d)


def call(path, header, payloads=(), fds=()):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        protocol.send(s, header, list(payloads), list(fds))
        return protocol.Reader(s).message()


def test_a_job_reads_the_object_through_a_passed_descriptor(daemon, guests, tmp_path):
    obj = tmp_path / "object"
    obj.write_bytes(b"one two two\n")
    fd = os.open(obj, os.O_RDONLY)
    obj.unlink()   # overwritten or deleted meanwhile: the job still reads what was opened
    reply, out = call(daemon, {"op": "run", "program": {"payload": 0}, "args": ["wc"],
                               "inputs": [{"alias": "/dev/stdin", "fd": 0}], "outputs": OUTS, "timeout": 5},
                      [(guests / "wordcount.wasm").read_bytes()], [fd])
    os.close(fd)
    assert reply["report"]["exit_code"] == 0, reply
    assert out[0] == b"one 1\ntwo 2\n"


def test_connected_inputs_are_reduced(daemon, guests):
    reply, out = call(daemon, {"op": "run", "program": {"payload": 0}, "args": ["reduce", "-r"],
                               "inputs": [{"alias": "/dev/in-map-1", "payload": 1},
                                          {"alias": "/dev/in-map-2", "payload": 2}], "outputs": OUTS},
                      [(guests / "wordcount.wasm").read_bytes(), b"a 1\nb 2\n", b"a 3\n"])
    assert out[0] == b"a 4\nb 2\n", reply


def test_not_wasm_and_timeout_are_reported_with_the_users_name(daemon, guests):
    reply, _ = call(daemon, {"op": "run", "program": {"payload": 0}, "program_name": "swift://a/c/x",
                             "outputs": OUTS}, [b"#!/bin/sh\n"])
    assert reply["report"]["exit_code"] == 5
    assert "swift://a/c/x is not a WebAssembly module" in reply["report"]["exit_state"]
    reply, _ = call(daemon, {"op": "run", "program": {"payload": 0}, "args": ["m", "loop"], "timeout": 1,
                             "outputs": OUTS}, [(guests / "misbehave.wasm").read_bytes()])
    assert reply["report"]["exit_code"] == 6
    assert reply["report"]["exit_state"].startswith("timeout")


def test_output_over_its_limit_is_a_quota_stop(daemon, guests):
    reply, out = call(daemon, {"op": "run", "program": {"payload": 0}, "args": ["cat"],
                               "inputs": [{"alias": "/dev/stdin", "payload": 1}],
                               "outputs": [{"alias": "/dev/stdout", "limit": 100}]},
                      [(guests / "cat.wasm").read_bytes(), b"x" * 1000])
    assert reply["report"]["exit_code"] == 8, reply
    assert len(out[0]) <= 100


def test_unknown_system_image_and_malformed_requests(daemon):
    reply, _ = call(daemon, {"op": "run", "program": {"image": "nosuch", "path": "python"}})
    assert reply["status"] == "bad-request" and "nosuch" in reply["reason"]
    reply, _ = call(daemon, {"op": "dance"})
    assert reply["status"] == "bad-request"


@pytest.mark.parametrize("header, reason", [
    ({"op": "run", "program": {"payload": 0}, "timeout": "forever"}, "request.timeout must be an integer"),
    ({"op": "run", "program": {"payload": 0}, "timeout": 10 ** 30}, "request.timeout must be at most"),
    ({"op": "run", "program": {"payload": 0}, "args": "cat /etc/passwd"}, "request.args must be a list"),
    ({"op": "run", "program": {"payload": 5}}, "program names payload 5"),
    ({"op": "run", "program": {"payload": 0}, "inputs": [{"alias": "/dev/stdin", "fd": 3}]},
     "names descriptor 3, but 0 came with the request"),
    ({"op": "run", "program": {"payload": 0}, "outputs": [{"alias": "/dev/stdout"}]}, "has no limit"),
    ({"op": "run", "program": {"payload": 0}, "extra": 1}, "unknown field(s) 'extra'"),
])
def test_a_request_of_the_wrong_shape_is_a_one_line_refusal(daemon, header, reason):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon)
        try:
            protocol.send(s, header, [b"\0asm\1\0\0\0"])
        except BrokenPipeError:
            pass   # refused on its header, before the payload was read
        reply, _ = protocol.Reader(s).message()
    assert reply["status"] == "bad-request", reply
    assert reason in reply["reason"] and "Traceback" not in reply["reason"]
    assert ping(daemon)["status"] == "ok"


def test_slots_refuse_beyond_pool_and_queue():
    slots = executord.Slots(pool=1, queue=1)
    assert slots.acquire()                    # runs
    waiter = threading.Thread(target=slots.acquire)
    waiter.start()                            # waits in the queue
    deadline = time.monotonic() + 5
    while slots.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert slots.waiting == 1
    assert not slots.acquire()                # pool and queue full: busy (HTTP 429)
    slots.release()
    waiter.join(5)
    assert slots.running == 1 and slots.waiting == 0


def test_a_slot_waited_for_a_while_is_refused_when_none_is_given_back_meanwhile():
    slots = executord.Slots(pool=1, queue=4)
    assert slots.acquire(0.01)                # a free slot: taken at once
    t = time.monotonic()
    assert not slots.acquire(0.2)             # the queue has room, but this one waits 0.2 s at most
    assert time.monotonic() - t >= 0.2 and slots.waiting == 0
    threading.Timer(0.1, slots.release).start()
    assert slots.acquire(5)                   # one given back meanwhile: taken
    assert slots.running == 1


# ------------------------------------------------------------ isolation
def ping(path):
    return call(path, {"op": "ping"})[0]


def run_in_thread(path, header, payloads):
    box = {}

    def go():
        box["reply"] = call(path, header, payloads)
    t = threading.Thread(target=go)
    t.start()
    return t, box


def worker_pids():
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return pids


def running_worker(before_cpu):
    """The worker whose CPU time grew since before_cpu (the one running the loop)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = int(fields[11]) + int(fields[12])
            if cpu > before_cpu.get(pid, 0) + 10:   # ticks: it is spinning
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker is running the job")


def settled(path):
    """Waits until every worker is started and idle (a starting worker burns CPU too)."""
    deadline = time.monotonic() + 60
    while ping(path)["workers_idle"] < ping(path)["workers"]:
        assert time.monotonic() < deadline, ping(path)
        time.sleep(0.05)


def cpu_times():
    out = {}
    for pid in worker_pids():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[pid] = int(fields[11]) + int(fields[12])
    return out


@pytest.mark.parametrize("sig, words", [(9, "SIGKILL"), (6, "SIGABRT")])
def test_a_worker_that_dies_ends_one_job_and_the_daemon_serves_on(daemon, guests, sig, words):
    settled(daemon)
    lost = ping(daemon)["workers_lost"]
    before = cpu_times()
    t, box = run_in_thread(daemon, {"op": "run", "program": {"payload": 0}, "args": ["m", "loop"],
                                    "timeout": 20, "outputs": OUTS}, [(guests / "misbehave.wasm").read_bytes()])
    os.kill(running_worker(before), sig)
    t.join(30)
    report = box["reply"][0]["report"]
    assert report["exit_code"] == 9, report            # crash, this job only
    assert words in report["exit_state"]
    assert ping(daemon)["workers_lost"] == lost + 1
    reply, out = call(daemon, {"op": "run", "program": {"payload": 0}, "args": ["cat"],
                               "inputs": [{"alias": "/dev/stdin", "payload": 1}], "outputs": OUTS},
                      [(guests / "cat.wasm").read_bytes(), b"still serving"])
    assert out[0] == b"still serving", reply


def test_a_worker_stuck_in_the_host_is_stopped_at_the_deadline(daemon, guests):
    # SIGSTOP stands for a host call that never returns: the guest's own
    # deadline (an epoch interrupt) cannot fire there; the daemon's must.
    settled(daemon)
    before = cpu_times()
    t, box = run_in_thread(daemon, {"op": "run", "program": {"payload": 0}, "args": ["m", "loop"],
                                    "timeout": 2, "outputs": OUTS}, [(guests / "misbehave.wasm").read_bytes()])
    os.kill(running_worker(before), 19)
    t.join(30)
    assert not t.is_alive()
    report = box["reply"][0]["report"]
    assert report["exit_code"] == 6, report
    assert "Timeout = 2 s" in report["exit_state"]
    assert ping(daemon)["workers"] == 2


def test_payloads_over_the_cap_are_refused_before_they_are_read(daemon):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon)
        protocol.send_header(s, {"op": "run", "program": {"payload": 0},
                                 "payloads": [executord.MAX_REQUEST_PAYLOAD + 1]})
        reply, _ = protocol.Reader(s).message()   # answered without a byte of payload sent
    assert reply["status"] == "bad-request"
    assert "more than the limit" in reply["reason"]


# ------------------------------------------- the client's socket, held by a worker
# The daemon hands the connection to a worker, which reads the payloads from it
# and writes the reply to it.
def cat_request(timeout=20, payload=1000):
    return {"op": "run", "program": {"payload": 0}, "args": ["cat"], "timeout": timeout,
            "inputs": [{"alias": "/dev/stdin", "payload": 1}],
            "outputs": [{"alias": "/dev/stdout", "limit": 8 << 20}, {"alias": "/dev/stderr", "limit": 1 << 20}]}


def send_part(s, guests, header, payload, part):
    """The request with only ``part`` bytes of its second payload (of ``payload`` announced)."""
    program = (guests / "cat.wasm").read_bytes()
    protocol.send_header(s, dict(header, payloads=[len(program), payload]))
    s.sendall(program + b"x" * part)


def test_a_client_that_hangs_up_mid_payload_costs_no_worker(daemon, guests):
    settled(daemon)
    before = ping(daemon)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon)
        send_part(s, guests, cat_request(), 100000, 10)
    # The worker sees the hang-up at once (not after its 60 s client timeout),
    # goes back to the pool and is not replaced.
    deadline = time.monotonic() + 10
    while ping(daemon)["jobs"] == before["jobs"] or ping(daemon)["workers_idle"] < before["workers"]:
        assert time.monotonic() < deadline, ping(daemon)
        time.sleep(0.05)
    after = ping(daemon)
    assert (after["workers_started"], after["workers_lost"]) == (before["workers_started"], before["workers_lost"])
    reply, out = call(daemon, cat_request(), [(guests / "cat.wasm").read_bytes(), b"next"])
    assert out[0] == b"next", reply


def test_a_client_that_stalls_mid_payload_gets_the_deadline(daemon, guests):
    settled(daemon)
    lost = ping(daemon)["workers_lost"]
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(daemon)
        send_part(s, guests, cat_request(timeout=1), 100000, 10)
        reply, _ = protocol.Reader(s).message()   # the connection stays open, the rest never comes
    report = reply["report"]
    assert report["exit_code"] == 6 and "Timeout = 1 s" in report["exit_state"], report
    assert time.monotonic() - started < 1 + executord.KILL_GRACE + 5
    assert ping(daemon)["workers_lost"] == lost + 1
    settled(daemon)


def test_a_host_memory_cap_ends_the_job_not_the_daemon(tmp_path, guests):
    path = str(tmp_path / "small.sock")
    d = executord.Daemon({}, str(tmp_path / "cache"), executord.Slots(1, 1), worker_data_limit=200 << 20)
    server = executord.serve_in_thread(d, path)
    try:
        reply, out = call(path, {"op": "run", "program": {"payload": 0}, "args": ["m", "alloc"],
                                 "memory": 1 << 30, "outputs": OUTS}, [(guests / "misbehave.wasm").read_bytes()])
        report = reply["report"]
        # Either the guest's malloc was refused (contained) or the worker died: never the daemon.
        assert report["exit_code"] in (1, 7, 9), report
        reply, out = call(path, {"op": "run", "program": {"payload": 0}, "args": ["cat"],
                                 "inputs": [{"alias": "/dev/stdin", "payload": 1}], "outputs": OUTS},
                          [(guests / "cat.wasm").read_bytes(), b"next job"])
        assert reply["status"] == "ok" and out[0] == b"next job", reply
    finally:
        executord.stop_serving(server, d)


# With a daemon of their own (serve_in_thread points the handler at it: after
# the tests that use the module's daemon).
@pytest.fixture
def one_worker(tmp_path):
    """A daemon with one worker -> (socket path, that worker's pid, the daemon)."""
    path = str(tmp_path / "one.sock")
    d = executord.Daemon({}, str(tmp_path / "cache"), executord.Slots(1, 1), worker_data_limit=1 << 30)
    server = executord.serve_in_thread(d, path)
    [worker] = list(d.pool.idle.queue)
    yield path, worker.proc.pid, d
    executord.stop_serving(server, d)


def sockets_of(pid):
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def test_a_worker_killed_holding_the_client_socket_before_replying_is_a_crash_report(one_worker, guests):
    path, pid, _ = one_worker
    idle_sockets = sockets_of(pid)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        send_part(s, guests, cat_request(), 100000, 10)
        deadline = time.monotonic() + 10
        while sockets_of(pid) == idle_sockets:   # until the worker has taken the connection
            assert time.monotonic() < deadline, "the worker never took the client's socket"
            time.sleep(0.01)
        os.kill(pid, 9)
        reply, _ = protocol.Reader(s).message()
    report = reply["report"]
    assert report["exit_code"] == 9 and "SIGKILL" in report["exit_state"], report
    assert ping(path)["workers_lost"] == 1


def test_a_worker_lost_mid_reply_leaves_a_cut_reply_never_a_spliced_one(one_worker, guests):
    path, pid, _ = one_worker
    size = 4 << 20
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        protocol.send(s, cat_request(), [(guests / "cat.wasm").read_bytes(), b"x" * size])
        # The reply has begun (bytes to read); unread, it cannot end (4 MiB is
        # far more than a socket holds): the worker is killed in the middle.
        assert select.select([s], [], [], 20)[0]
        os.kill(pid, 9)
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    (head,) = struct.unpack("!I", data[:4])
    header = json.loads(data[4:4 + head])
    assert header["payloads"] == [size, 0] and header["report"]["exit_code"] == 0, header
    body = bytes(data[4 + head:])
    assert 0 < len(body) < size
    assert body == b"x" * len(body)   # nothing of a failure reply after it
    deadline = time.monotonic() + 10
    while ping(path)["workers_lost"] != 1:
        assert time.monotonic() < deadline, ping(path)
        time.sleep(0.05)
    reply, out = call(path, cat_request(), [(guests / "cat.wasm").read_bytes(), b"served on"])
    assert out[0] == b"served on", reply


def test_the_socket_outlives_a_restart_with_socket_activation(tmp_path, guests):
    """systemd holds the listening socket: a job sent while the daemon restarts waits and is served."""
    conf = tmp_path / "executor.conf"
    sock_path = tmp_path / "activated.sock"
    conf.write_text(f"[executor]\nsocket = {sock_path}\ncache_dir = {tmp_path / 'cache'}\nmaxpool = 1\n")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(16)
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS'] = '1'; "
                "os.environ['LISTEN_PID'] = str(os.getpid()); "
                "os.execv(sys.executable, [sys.executable, '-m', 'zerolab.zerocloud.executord', '--config', sys.argv[2]])")

    def start():
        return subprocess.Popen([sys.executable, "-c", launcher, str(listener.fileno()), str(conf)],
                                pass_fds=[listener.fileno()], stderr=subprocess.DEVNULL)

    first = start()
    try:
        assert ping(str(sock_path))["status"] == "ok"
        first.kill()
        first.wait()
        # Nothing listens now, but the socket is still there: the connection queues.
        t, box = run_in_thread(str(sock_path), {"op": "run", "program": {"payload": 0}, "args": ["cat"],
                                                "inputs": [{"alias": "/dev/stdin", "payload": 1}], "outputs": OUTS},
                               [(guests / "cat.wasm").read_bytes(), b"queued"])
        second = start()
        t.join(60)
        assert box["reply"][1][0] == b"queued"
    finally:
        for p in (first, locals().get("second")):
            if p is not None:
                p.kill()
                p.wait()
        listener.close()


def test_the_disk_cache_is_pruned_oldest_first(tmp_path):
    folder = tmp_path / "cache"
    (folder / "programs").mkdir(parents=True)
    now = time.time()
    for i in range(10):
        f = folder / "programs" / f"p{i}"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (now - 3600 + i, now - 3600 + i))
    fresh = folder / "programs" / "fresh"
    fresh.write_bytes(b"x" * 1000)
    freed = executord.prune_cache(str(folder), 5000)
    left = sorted(p.name for p in (folder / "programs").iterdir())
    assert freed == 6000
    assert left == ["fresh", "p6", "p7", "p8", "p9"]


def test_a_system_image_device_mounts_the_image_at_the_root(tmp_path, guests):
    # ZeroCloud's {"name": "python"} device: the system image's files under /,
    # read-only, whatever program the node runs.
    tar = tmp_path / "data.tar"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("etc/motd")
        info.size = len(b"from the image\n")
        t.addfile(info, io.BytesIO(b"from the image\n"))
    d = executord.Daemon({"data": str(tar)}, str(tmp_path / "cache"), executord.Slots(1, 1),
                         worker_data_limit=1 << 30)
    server = executord.serve_in_thread(d, str(tmp_path / "executor.sock"))
    try:
        request = {"op": "run", "program": {"payload": 0}, "args": ["cat", "/etc/motd"], "outputs": OUTS,
                   "images": [{"sysimage": "data"}]}
        reply, out = call(str(tmp_path / "executor.sock"), request, [(guests / "cat.wasm").read_bytes()])
        assert reply["report"]["exit_code"] == 0, reply
        assert out[0] == b"from the image\n"
        reply, _ = call(str(tmp_path / "executor.sock"), {**request, "images": [{"sysimage": "nosuch"}]},
                        [(guests / "cat.wasm").read_bytes()])
        assert reply["status"] == "bad-request" and "unknown system image 'nosuch'" in reply["reason"]
    finally:
        executord.stop_serving(server, d)


def test_a_program_inside_the_jobs_own_image_runs_with_the_image_at_the_root(tmp_path, guests):
    # An app's file://image:bin/cat: the program is a member of a payload
    # that is a tar, which is also the node's filesystem.
    image = io.BytesIO()
    with tarfile.open(fileobj=image, mode="w") as t:
        for name, data in (("bin/cat", (guests / "cat.wasm").read_bytes()), ("etc/motd", b"from the app\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    request = {"op": "run", "program": {"payload": 0, "path": "cat"}, "args": ["cat", "/etc/motd"],
               "outputs": OUTS, "images": [{"payload": 0}]}
    d = executord.Daemon({}, str(tmp_path / "cache"), executord.Slots(1, 1), worker_data_limit=1 << 30)
    server = executord.serve_in_thread(d, str(tmp_path / "executor.sock"))
    try:
        reply, out = call(str(tmp_path / "executor.sock"), request, [image.getvalue()])
        assert reply["report"]["exit_code"] == 0, reply
        assert out[0] == b"from the app\n"
        reply, _ = call(str(tmp_path / "executor.sock"), {**request, "program": {"payload": 0, "path": "bin/nosuch"}},
                        [image.getvalue()])
        assert "program bin/nosuch not found in the user image" in reply["report"]["exit_state"], reply
    finally:
        executord.stop_serving(server, d)
