"""The Galera health endpoint (roles/galera/files/galera-health.py) against a real
server on 127.0.0.1, with a fake status reader in place of MariaDB: its answers,
its cache, and that no client can knock it over or hold it."""

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import load_role_file

health = load_role_file("galera", "galera-health.py")

SYNCED = {
    "wsrep_cluster_size": "3",
    "wsrep_cluster_status": "Primary",
    "wsrep_local_state_comment": "Synced",
    "wsrep_ready": "ON",
}
DESYNCED = {**SYNCED, "wsrep_local_state_comment": "Donor/Desynced"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Reader:
    """A fake read_status: counts its calls, returns (or raises) what it is told, after a delay."""

    def __init__(self, result: dict[str, str] | BaseException = SYNCED, delay: float = 0.0) -> None:
        self.result, self.delay, self.calls = result, delay, 0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self._lock:
            self.calls += 1
        time.sleep(self.delay)
        if isinstance(self.result, BaseException):
            raise self.result
        return dict(self.result)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[int, Reader, FakeClock]]]:
    """Start a server on 127.0.0.1 (any free port); returns its port, its reader and its clock."""
    servers = []

    def start(reader: Reader | None = None, max_age: float = 1.0, **options: float) -> tuple[int, Reader, FakeClock]:
        reader = reader or Reader()
        clock = FakeClock()
        server = health.make_server("127.0.0.1", 0, health.StatusCache(reader, max_age, clock), **options)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server.server_address[1], reader, clock

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def exchange(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send data (then end the sending side if half_close), and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(data)
        if half_close:
            client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        return received


def get(port: int, method: str = "GET", path: str = "/") -> tuple[int, bytes]:
    """The status code and body of one request."""
    response = exchange(port, f"{method} {path} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_synced_node_answers_200_with_its_status(serve):
    port, _, _ = serve()
    code, body = get(port, path="/any/path?x=1")
    assert code == 200
    assert body.decode() == (
        "Synced\n"
        "wsrep_cluster_size: 3\n"
        "wsrep_cluster_status: Primary\n"
        "wsrep_local_state_comment: Synced\n"
        "wsrep_ready: ON\n"
    )


@pytest.mark.parametrize(
    "status",
    [DESYNCED, {**SYNCED, "wsrep_cluster_status": "non-Primary"}, {**SYNCED, "wsrep_ready": "OFF"}, {}],
    ids=["desynced", "non-primary", "not-ready", "empty"],
)
def test_unhealthy_node_answers_503(serve, status):
    port, _, _ = serve(Reader(status))
    code, body = get(port)
    assert code == 503
    lines = body.decode().splitlines()
    assert lines[0] == "not synced"
    assert lines[1:] == [f"{name}: {value}" for name, value in sorted(status.items())]


def test_donor_line_is_what_molecule_looks_for(serve):
    port, _, _ = serve(Reader(DESYNCED))
    response = exchange(port, b"GET / HTTP/1.0\r\n\r\n").decode()
    assert response.startswith("HTTP/1.0 503 ")
    assert "\nwsrep_local_state_comment: Donor/Desynced\n" in response


def test_head_answers_the_same_without_a_body(serve):
    port, _, _ = serve()
    response = exchange(port, b"HEAD / HTTP/1.1\r\nHost: lb\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert f"\r\nContent-Length: {len(get(port)[1])}\r\n".encode() in head + b"\r\n"
    assert body == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_refused_without_reading_the_status(serve, method):
    port, reader, _ = serve()
    code, _ = get(port, method=method)
    assert code == 501
    assert reader.calls == 0


@pytest.mark.parametrize(
    "error, text",
    [(RuntimeError("Can't connect to local server through socket"), "Can't connect to local server through socket"),
     (TimeoutError(), "TimeoutError")],
    ids=["raises", "times-out"],
)
def test_a_failed_read_answers_503_with_an_error_line(serve, error, text):
    port, reader, clock = serve(Reader(error))
    code, body = get(port)
    assert code == 503
    assert body.decode() == f"not synced\nerror: {text}\n"
    # The server is still there, and says so once the database is back.
    reader.result, clock.now = SYNCED, 1.0
    assert get(port)[0] == 200


def test_the_real_reader_gives_up_on_a_server_that_never_answers(tmp_path):
    # A socket that accepts and then says nothing, like a wedged mariadbd.
    path = str(tmp_path / "mysqld.sock")
    with socket.socket(socket.AF_UNIX) as wedged:
        wedged.bind(path)
        wedged.listen()
        started = time.monotonic()
        status, error = health.StatusCache(lambda: health.read_status(path, "galera-health", timeout=0.3)).get()
        assert time.monotonic() - started < 1.5
    assert status == {} and "timed out" in error
    status, error = health.StatusCache(lambda: health.read_status(str(tmp_path / "absent.sock"), "x", 0.3)).get()
    assert status == {} and "Can't connect" in error


def test_cache_reads_at_most_once_per_max_age():
    reader, clock = Reader(), FakeClock()
    cache = health.StatusCache(reader, 1.0, clock)
    for now, calls in [(0.0, 1), (0.5, 1), (0.99, 1), (1.0, 2), (1.5, 2), (2.1, 3)]:
        clock.now = now
        assert cache.get() == (SYNCED, "")
        assert reader.calls == calls, now


def test_fifty_concurrent_requests_make_one_read(serve):
    port, reader, clock = serve(Reader(delay=0.2), max_connections=64)
    answers: list[int] = []

    def ask() -> None:
        answers.append(get(port)[0])

    for round_ in range(2):
        threads = [threading.Thread(target=ask) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert reader.calls == round_ + 1
        clock.now += 1.0
    assert answers == [200] * 100


def test_requests_during_a_slow_refresh_get_the_cached_status(serve):
    port, reader, clock = serve(Reader())
    assert get(port)[0] == 200
    reader.result, reader.delay, clock.now = DESYNCED, 0.5, 1.0
    slow = threading.Thread(target=get, args=(port,))
    slow.start()
    time.sleep(0.1)  # the slow refresh has begun
    started = time.monotonic()
    assert get(port)[0] == 200  # the old value, at once
    assert time.monotonic() - started < 0.5
    slow.join(5)
    assert get(port)[0] == 503
    assert reader.calls == 2


def test_a_slow_client_is_dropped_while_others_are_answered(serve):
    port, _, _ = serve(timeout=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        slow.sendall(b"GET / HT")
        started = time.monotonic()
        assert get(port)[0] == 200
        assert time.monotonic() - started < 0.4
        assert slow.recv(1024) == b""  # closed by the server, unanswered
        assert 0.4 < time.monotonic() - started < 1.5


def test_a_client_trickling_bytes_is_dropped_at_the_deadline(serve):
    # Each byte comes well within the timeout: only a deadline on the whole request drops it.
    port, _, _ = serve(timeout=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
        started = time.monotonic()
        with pytest.raises(OSError):
            for byte in b"GET / HTTP/1.1\r\nHost: lb\r\n":
                slow.sendall(bytes([byte]))
                time.sleep(0.1)
            pytest.fail("the server kept reading past its deadline")
        assert time.monotonic() - started < 1.5


def test_an_oversized_request_is_refused(serve):
    port, reader, _ = serve()
    response = exchange(port, b"GET / HTTP/1.1\r\n" + b"X-Padding: " + b"a" * 20000 + b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 431 ")
    assert reader.calls == 0


def test_more_idle_connections_than_slots_do_not_block_the_server(serve):
    port, _, _ = serve(timeout=0.5, max_connections=4)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.1)  # all four accepted and holding a slot
        started = time.monotonic()
        try:
            refused = exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        except ConnectionError:  # reset: closed before it read what was sent
            refused = b""
        assert refused == b""  # closed at once, not queued
        assert time.monotonic() - started < 0.3
        time.sleep(0.6)  # the idle ones time out and give their slots back
        assert get(port)[0] == 200
    finally:
        for client in idle:
            client.close()


@pytest.fixture(scope="module")
def shared_server():
    server = health.make_server("127.0.0.1", 0, health.StatusCache(Reader(), 1.0), timeout=0.3)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300), terminate=st.booleans())
def test_garbage_never_kills_the_server(shared_server, capfd, garbage, terminate):
    # Half-closed, so that garbage with no end is parsed at once rather than after the timeout.
    response = exchange(shared_server, garbage + (b"\r\n\r\n" if terminate else b""), half_close=True)
    assert b"Traceback" not in response
    assert get(shared_server)[0] == 200
    assert capfd.readouterr().err == ""  # nothing logged per request, not even a bad one


def test_options_and_their_defaults():
    args = health.parse_args([])
    assert (args.bind, args.port, args.socket) == ("127.0.0.1", 9200, "/run/mysqld/mysqld.sock")
    assert (args.max_age, args.timeout, args.max_connections) == (1.0, 3.0, 32)
    args = health.parse_args(["--bind", "10.89.61.11", "--max-age", "0.5", "--timeout", "2", "--max-connections", "8"])
    assert (args.bind, args.max_age, args.timeout, args.max_connections) == ("10.89.61.11", 0.5, 2.0, 8)
    for bad in (["--max-age", "0"], ["--timeout", "-1"], ["--max-connections", "0"]):
        with pytest.raises(SystemExit):
            health.parse_args(bad)
