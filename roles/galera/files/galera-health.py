#!/usr/bin/python3
"""HTTP health check of one Galera node, for load balancers.

GET or HEAD (any path) answers 200 when the node is Synced, ready and in the
Primary component, and 503 otherwise, with the wsrep status in the body.  It
asks the local server through its unix socket as the OS user it runs as (a
MariaDB account that authenticates with unix_socket and has no privileges).

It is built not to be knocked over: the status is read at most once per
--max-age seconds whatever the request rate, at most --max-connections
requests are served at once (others are closed at once), and a client has
--timeout seconds in all to send its request.
"""

import argparse
import functools
import getpass
import http.server
import io
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pymysql  # type: ignore[import-untyped]

QUERY = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN "
    "('wsrep_local_state_comment', 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_cluster_size')"
)
# A load balancer's request is a few hundred bytes; anything much larger is not one.
MAX_REQUEST_HEAD = 8192
DATABASE_TIMEOUT = 2.0

Status = dict[str, str]


def read_status(socket_path: str, user: str, timeout: float = DATABASE_TIMEOUT) -> Status:
    """The node's wsrep status, read through the unix socket (raises on any failure)."""
    connection = pymysql.connect(
        unix_socket=socket_path,
        user=user,
        connect_timeout=timeout,
        read_timeout=timeout,
        write_timeout=timeout,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(QUERY)
            return {str(name): str(value) for name, value in cursor.fetchall()}
    finally:
        connection.close()


def is_healthy(status: Status) -> bool:
    return (
        status.get("wsrep_local_state_comment") == "Synced"
        and status.get("wsrep_cluster_status") == "Primary"
        and status.get("wsrep_ready") == "ON"
    )


def answer(status: Status, error: str) -> tuple[int, bytes]:
    """The HTTP status code and body for a status and the error met reading it ("" if none)."""
    healthy = is_healthy(status)
    lines = ["Synced" if healthy else "not synced"]
    lines += [f"{name}: {value}" for name, value in sorted(status.items())]
    if error:
        lines.append(f"error: {error}")
    return (200 if healthy else 503), ("\n".join(lines) + "\n").encode()


class StatusCache:
    """The last status read, refreshed at most once per max_age seconds, by one caller at a time.

    While one request refreshes it, the others get the previous value rather than
    queue behind the database: a flood of requests makes at most one query at a time.
    """

    def __init__(
        self, read: Callable[[], Status], max_age: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._clock = clock
        self._refreshing = threading.Lock()
        self._value: tuple[Status, str] | None = None
        self._read_at = 0.0

    def _stale(self) -> bool:
        return self._value is None or self._clock() - self._read_at >= self._max_age

    def get(self) -> tuple[Status, str]:
        """The status and the error met reading it ("" if none)."""
        # Before the first read there is nothing to answer with: wait for it (it has its own timeouts).
        if self._stale() and self._refreshing.acquire(blocking=self._value is None):
            try:
                if self._stale():  # another caller may have refreshed it while this one waited
                    try:
                        value: tuple[Status, str] = (self._read(), "")
                    except Exception as error:  # whatever failed, the answer is 503 and says why
                        value = ({}, str(error) or type(error).__name__)
                    # Counted from the end of the read, so a slow database is not asked back to back.
                    self._value, self._read_at = value, self._clock()
            finally:
                self._refreshing.release()
        assert self._value is not None
        return self._value


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "galera-health"
    sys_version = ""

    def __init__(self, request: Any, client_address: Any, server: Any, *, cache: StatusCache, timeout: float) -> None:
        self.cache = cache
        self.request_timeout = timeout
        request.settimeout(timeout)  # bounds every write too: a client that does not read is dropped
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        """One request per connection, read within one deadline and one size limit."""
        try:
            head = self._read_head()
        except OSError:  # timed out (TimeoutError is an OSError) or reset: nothing to answer
            return
        if len(head) > MAX_REQUEST_HEAD:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(431)
            return
        self.rfile.close()
        self.rfile = io.BytesIO(head)  # http.server parses the head from here, as it would from the socket
        self.handle_one_request()

    def _read_head(self) -> bytes:
        """The request line and headers.

        The socket timeout alone bounds each recv, not the whole: a client that sends
        a byte every few seconds would hold its connection (and a slot) for hours.
        """
        deadline = time.monotonic() + self.request_timeout
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) <= MAX_REQUEST_HEAD:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.connection.settimeout(remaining)
            chunk = self.connection.recv(MAX_REQUEST_HEAD + 1 - len(head))
            if not chunk:
                break
            head += chunk
        self.connection.settimeout(self.request_timeout)
        return head

    def _answer(self, with_body: bool) -> None:
        code, body = answer(*self.cache.get())
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Load balancers ask every second or so: do not fill the journal.
        pass


class HealthServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: Callable[..., Handler], max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer's own would look the address up in DNS (getfqdn): slow, or stuck when DNS is.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Full: close at once rather than queue, so idle or slow clients cannot pile up.
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start (TasksMax): give its slot back
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up is routine; anything else is a bug worth one line, not a traceback.
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"galera-health: {type(error).__name__}: {error}", file=sys.stderr)


def make_server(
    bind: str, port: int, cache: StatusCache, *, timeout: float = 3.0, max_connections: int = 32
) -> HealthServer:
    return HealthServer((bind, port), functools.partial(Handler, cache=cache, timeout=timeout), max_connections)


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (the node's cluster address)")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock", help="the MariaDB server's unix socket")
    parser.add_argument("--max-age", type=positive, default=1.0, help="seconds a status read is reused")
    parser.add_argument("--timeout", type=positive, default=3.0, help="seconds a client has to send its request")
    parser.add_argument("--max-connections", type=int, default=32, help="requests served at once")
    args = parser.parse_args(argv)
    if args.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cache = StatusCache(functools.partial(read_status, args.socket, getpass.getuser()), args.max_age)
    server = make_server(args.bind, args.port, cache, timeout=args.timeout, max_connections=args.max_connections)
    server.serve_forever()


if __name__ == "__main__":
    main()
