"""The executor daemon end to end over its real unix socket, with the real sandbox
and the C guests (built by scripts/build-guests when missing)."""

import os
import socket
import subprocess
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
    d = executord.Daemon({}, str(folder / "cache"), executord.Slots(2, 1))
    executord.Handler.daemon = d
    server = executord.Server(path, executord.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


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
