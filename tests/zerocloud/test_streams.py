"""Streams through a running node (connect's data, stream_pipes.py), end to
end over the executor daemon's real socket with the real sandbox and the C
guests: frames in while the guest runs, frames out as it writes."""

import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from zerolab.zerocloud import executord, protocol
from zerolab.zerocloud.worker import STREAMING

ROOT = Path(__file__).resolve().parents[2]


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


class Client:
    """One streaming request on the daemon's socket."""

    def __init__(self, path, header, payloads):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        protocol.send(self.sock, header, payloads)
        self.reader = protocol.Reader(self.sock)

    def send(self, number, data=b""):
        self.sock.sendall(protocol.frame(number, data))

    def first(self):
        return protocol.parse_reply(self.reader.header())

    def next_frame(self):
        return protocol.parse_frame_header(self.reader.exact(protocol.STREAM_FRAME.size))

    def frames_until_end(self):
        """Each stream's bytes until END_OF_STREAMS, then the reply and its payloads."""
        streams, ended = {}, set()
        while True:
            number, length = self.next_frame()
            if number == protocol.END_OF_STREAMS:
                break
            if length == 0:
                ended.add(number)
            streams[number] = streams.get(number, b"") + self.reader.exact(length)
        header = self.reader.header()
        return streams, ended, protocol.RunReply.from_wire(header), \
            [self.reader.exact(n) for n in header["payloads"]]

    def close(self):
        self.sock.close()


def cat(guests, **extra):
    return dict({"op": "run", "program": {"payload": 0}, "args": ["cat"], "timeout": 10,
                 "inputs": [{"alias": "/dev/stdin", "stream": True}],
                 "outputs": [{"alias": "/dev/stdout", "limit": 16 << 20, "stream": True},
                             {"alias": "/dev/stderr", "limit": 1 << 20}]}, **extra), \
        [(guests / "cat.wasm").read_bytes()]


def test_bytes_go_through_a_running_node_before_its_input_ends(daemon, guests):
    client = Client(daemon, *cat(guests))
    try:
        assert client.first() == protocol.Streaming()
        client.send(0, b"hello ")
        # The guest's output comes back while its input is still open.
        assert client.next_frame() == (0, 6)
        assert client.reader.exact(6) == b"hello "
        client.send(0, b"world")
        client.send(0)
        streams, ended, reply, payloads = client.frames_until_end()
    finally:
        client.close()
    assert streams == {0: b"world"} and ended == {0}
    assert reply.report.exit_code == 0, reply
    assert reply.outputs == ("/dev/stderr",) and payloads == [b""]   # the stream is not in the reply
    # The stream's digest is taken as for any output: ZeroVM's etag of what was written.
    assert "/dev/stdout " in reply.report.etag


def test_a_job_with_streams_is_refused_soon_when_every_worker_stays_running(daemon, guests):
    # The others of its job may be what holds the workers: it must not wait long for one.
    running = [Client(daemon, *cat(guests)) for _ in range(2)]
    try:
        assert all(isinstance(c.first(), protocol.Streaming) for c in running)
        refused = Client(daemon, *cat(guests))
        t = time.monotonic()
        reply = refused.first()
        refused.close()
        assert isinstance(reply, protocol.Refusal) and reply.status == "busy"
        assert reply.reason == "2 jobs running on this node; a job with streams waits 0.25 s at most"
        assert 0.25 <= time.monotonic() - t < 5
    finally:
        for c in running:
            c.send(0)
            c.frames_until_end()
            c.close()


def reducer_of_two_maps(daemon, guests):
    """A word count reducer whose inputs are map-1's and map-2's streams, read in that order."""
    header = {"op": "run", "program": {"payload": 0}, "args": ["reduce", "-r"], "timeout": 10,
              "inputs": [{"alias": "/dev/in-map-1", "stream": True}, {"alias": "/dev/in-map-2", "stream": True}],
              "outputs": [{"alias": "/dev/stdout", "limit": 1 << 20}]}
    return Client(daemon, header, [(guests / "wordcount.wasm").read_bytes()])


def test_streams_are_read_in_the_guests_order_whatever_order_they_come_in(daemon, guests):
    # The reducer reads /dev/in-map-1 first; map-2's data, all of it, comes first.
    client = reducer_of_two_maps(daemon, guests)
    try:
        assert client.first() == protocol.Streaming()
        big = b"b 1\n" * 50000   # 200 kB: more than a pipe holds while map-1's stream is read
        client.send(1, big[:100000])
        client.send(1, big[100000:])
        client.send(1)
        client.send(0, b"a 1\nb 2\n")
        client.send(0)
        streams, _, reply, payloads = client.frames_until_end()
    finally:
        client.close()
    assert streams == {}
    assert reply.report.exit_code == 0, reply
    assert payloads == [b"a 1\nb 50002\n"]


def test_a_request_that_ends_after_its_streams_did_is_read_to_the_end(daemon, guests):
    # The object server shuts its side once the proxy's body has ended: the
    # guest may not have read what came yet (here all of map-2's, waiting
    # while it reads map-1).
    client = reducer_of_two_maps(daemon, guests)
    try:
        assert client.first() == protocol.Streaming()
        lines = b"x 1\n" * 100_000
        for at in range(0, len(lines), 1 << 16):
            client.send(1, lines[at:at + (1 << 16)])
        client.send(1)
        client.send(0, b"y 2\n")
        client.send(0)
        client.sock.shutdown(socket.SHUT_WR)
        _, _, reply, payloads = client.frames_until_end()
    finally:
        client.close()
    assert reply.report.exit_code == 0, reply
    assert payloads == [b"x 100000\ny 2\n"]


def test_a_stream_that_does_not_end_is_a_timeout_not_a_short_input(daemon, guests):
    client = Client(daemon, *cat(guests, timeout=1))
    try:
        assert client.first() == protocol.Streaming()
        client.send(0, b"half")
        streams, _, reply, _ = client.frames_until_end()
    finally:
        client.close()
    assert reply.report.exit_code == 6, reply   # status.TIMEOUT
    assert reply.report.exit_state.startswith("timeout")
    assert streams.get(0, b"") in (b"", b"half")


@pytest.mark.parametrize("frame, reason", [
    (struct.pack("!II", 7, 1) + b"x", "stream 7, which is not an open stream input"),
    (protocol.frame(0) + protocol.frame(0, b"late"), "stream 0, which is not an open stream input"),
    (struct.pack("!II", 0, protocol.MAX_FRAME + 1), f"more than {protocol.MAX_FRAME}"),
])
def test_a_bad_frame_fails_the_node_in_one_line(daemon, guests, frame, reason):
    client = Client(daemon, *cat(guests))
    try:
        assert client.first() == protocol.Streaming()
        client.sock.sendall(frame)
        _, _, reply, payloads = client.frames_until_end()
    finally:
        client.close()
    assert reply.report.exit_code == 4, reply   # status.BAD_INPUT
    assert reason in reply.report.exit_state and "\n" not in reply.report.exit_state
    assert payloads == []


def test_a_request_that_ends_before_its_streams_fails_the_node(daemon, guests):
    client = Client(daemon, *cat(guests))
    try:
        assert client.first() == protocol.Streaming()
        client.send(0, b"some")
        client.sock.shutdown(socket.SHUT_WR)
        _, _, reply, _ = client.frames_until_end()
    finally:
        client.close()
    assert reply.report.exit_code == 4, reply
    assert "the request ended before its streams did" in reply.report.exit_state


def test_a_client_that_stops_reading_holds_the_guest_not_the_worker_memory(daemon, guests):
    # 4 MB through cat to a client that reads nothing until the end: the
    # guest waits in its writes (pipe and socket full), then finishes.
    client = Client(daemon, *cat(guests))
    try:
        assert client.first() == protocol.Streaming()
        for _ in range(64):
            client.send(0, b"z" * 65536)
        client.send(0)
        streams, ended, reply, _ = client.frames_until_end()
    finally:
        client.close()
    assert reply.report.exit_code == 0, reply
    assert streams[0] == b"z" * (64 * 65536) and ended == {0}


def test_a_worker_lost_between_frames_ends_the_streams_then_reports_the_crash(tmp_path, guests):
    d = executord.Daemon({}, str(tmp_path / "cache"), executord.Slots(1, 1), worker_data_limit=1 << 30)
    path = str(tmp_path / "one.sock")
    server = executord.serve_in_thread(d, path)
    try:
        [worker] = list(d.pool.idle.queue)
        client = Client(path, *cat(guests))
        try:
            assert client.first() == protocol.Streaming()
            client.send(0, b"x")
            assert client.next_frame() == (0, 1) and client.reader.exact(1) == b"x"
            # Between frames for the daemon too: the worker marks its send
            # done just after the bytes left, which the client may see first.
            deadline = time.monotonic() + 5
            while worker.replying[0] != STREAMING and time.monotonic() < deadline:
                time.sleep(0.001)
            os.kill(worker.proc.pid, 9)
            streams, _, reply, _ = client.frames_until_end()
        finally:
            client.close()
        # The daemon's own report, after END_OF_STREAMS: never spliced into a frame.
        assert reply.report.exit_code == 9 and "SIGKILL" in reply.report.exit_state, reply
    finally:
        executord.stop_serving(server, d)
