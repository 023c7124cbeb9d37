"""A Swift stand-in on 127.0.0.1 for the client's tests, and a raw socket
server that answers whatever bytes a test gives it.

FakeSwift answers as a Swift proxy with tempauth and the zerocloud filter
would, for the few requests zerolab-app sends: v1 auth (user test:tester,
key testing), a container's HEAD and PUT, an object's PUT, and a job's POST
to the account.  It records every request (method, path, headers, body) so
that a test asserts exactly what the client sent.  Only loopback is used.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

import pytest

USER, KEY, TOKEN = "test:tester", "testing", "AUTH_tk0123456789"
ACCOUNT = "AUTH_test"
UNAUTHORIZED = (b"<html><h1>Unauthorized</h1><p>This server could not verify that you are authorized to "
                b"access the document you requested.</p></html>")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Job:
    """What the fake answers a job's POST with."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {
        "X-Nexe-System": "hello", "X-Nexe-Status": "ok", "X-Nexe-Retcode": "0",
        "X-Nexe-Etag": "disable", "X-Nexe-Validation": "0", "X-Nexe-Cdr-Line": "0.1, 0.1, 0 0 0 0 0 0 0 0 0 0"})
    body: bytes = b"Hello from the sandbox\n"


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that stops reading an answer it does not want closes with
    bytes unread, and the kernel resets the connection: socketserver would
    print that reset to stderr, which the tests capture and check."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)   # type: ignore[arg-type]


class FakeSwift:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.containers: dict[tuple[str, str], dict[str, tuple[bytes, str]]] = {}
        self.job = Job()
        self.refuse: dict[tuple[str, str], tuple[int, bytes]] = {}   # (method, path) -> answer
        self.server = QuietServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth_url = f"{self.url}/auth/v1.0"
        self.storage_url = f"{self.url}/v1/{ACCOUNT}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def requests(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.seen]

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                assert "chunked" not in (self.headers.get("Transfer-Encoding") or "")
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.seen.append(Seen(self.command, self.path, headers, body))
                refused = fake.refuse.get((self.command, self.path))
                if refused is not None:
                    return self.answer(refused[0], refused[1], {"Content-Type": "text/plain"})
                if self.path == "/auth/v1.0":
                    if headers.get("x-auth-user") == USER and headers.get("x-auth-key") == KEY:
                        return self.answer(200, b"", {"X-Storage-Url": fake.storage_url, "X-Auth-Token": TOKEN,
                                                      "X-Storage-Token": TOKEN})
                    return self.answer(401, UNAUTHORIZED, {"Content-Type": "text/html"})
                if headers.get("x-auth-token") != TOKEN:
                    return self.answer(401, UNAUTHORIZED, {"Content-Type": "text/html"})
                parts = [unquote(p) for p in self.path.split("?")[0].split("/", 4)[1:]]
                if len(parts) < 2 or parts[0] != "v1":
                    return self.answer(404, b"Not Found\n")
                account, rest = parts[1], parts[2:]
                if self.command == "POST" and not rest:
                    return fake.post(self, account, headers, body)
                if len(rest) == 1:
                    key = (account, rest[0])
                    if self.command == "HEAD":
                        return self.answer(204 if key in fake.containers else 404)
                    if self.command == "PUT":
                        existed = key in fake.containers
                        fake.containers.setdefault(key, {})
                        return self.answer(202 if existed else 201, b"")
                if len(rest) == 2 and self.command == "PUT":
                    objects = fake.containers.get((account, rest[0]))
                    if objects is None:
                        return self.answer(404, b"<html><h1>Not Found</h1><p>The resource could not be found."
                                                b"</p></html>")
                    etag = hashlib.md5(body).hexdigest()
                    if headers.get("etag", etag) != etag:
                        return self.answer(422, b"Unprocessable Entity\n")
                    objects[rest[1]] = (body, headers.get("content-type", ""))
                    return self.answer(201, b"", {"Etag": etag})
                return self.answer(405, b"Method Not Allowed\n")

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_any

        return Handler

    def post(self, handler: http.server.BaseHTTPRequestHandler, account: str, headers: dict[str, str],
             body: bytes) -> None:
        answer = handler.answer   # type: ignore[attr-defined]
        if headers.get("x-zerovm-execute") != "1.0":
            return answer(204)   # an account POST (metadata), as Swift without zerocloud
        source = headers.get("x-zerovm-source")
        if source is not None:
            raw = source.encode("latin-1").decode("utf-8")
            _, _, path = raw.partition("swift://")
            src_account, container, obj = path.split("/", 2)
            if src_account in (".", "~"):
                src_account = account
            stored = self.containers.get((src_account, container), {}).get(obj)
            if stored is None:
                return answer(404, f"X-Zerovm-Source: {raw} is not there\n".encode(), {"Content-Type": "text/plain"})
        return answer(self.job.status, self.job.body, self.job.headers)

    def __enter__(self) -> FakeSwift:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_swift():
    with FakeSwift() as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No credentials or proxies from the machine running the tests."""
    for name in ("ST_AUTH", "ST_USER", "ST_KEY", "OS_STORAGE_URL", "OS_AUTH_TOKEN", "OS_AUTH_URL",
                 "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class RawServer:
    """Answers every connection with ``reply`` (after reading the request's
    head), then closes it; ``hold`` keeps the connection open without a word
    until the test ends (a server that never answers)."""

    def __init__(self, reply: bytes = b"", hold: bool = False):
        self.reply = reply
        self.hold = hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 1 << 16:
                        piece = conn.recv(65536)
                        if not piece:
                            break
                        head += piece
                    if self.hold:
                        self.stop.wait(30)
                        continue
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)   # wakes accept() at once
        except OSError:
            pass
        self.listener.close()
        self.thread.join(timeout=10)
