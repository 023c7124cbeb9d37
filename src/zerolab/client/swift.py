"""Talking to Swift: v1 auth, an app's PUT, a job's POST, through python-swiftclient.

swiftclient's functions (get_auth, head_container, put_container,
put_object) send each request once (no retries: what the client sends is
what the user asked for) over a connection made here with a read timeout.
The job's POST goes over the same kind of connection but is read as it
arrives (execute()), since post_account would hold the whole answer.
Every way they can fail, a refusal (ClientException with a status), a
connection that cannot be made or is cut, an answer that is not HTTP, a
header that is not UTF-8, becomes an AppError with one line: the status and
the server's own first line when there was an answer, the socket's reason
when there was none.
"""

from __future__ import annotations

import hashlib
import http.client
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests.exceptions
import swiftclient.client as sc  # type: ignore[import-untyped]
import urllib3.exceptions
from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]

from zerolab.zerocloud.job import SwiftPath

from .errors import AppError, one_line, quoted, server_line

DEFAULT_TIMEOUT = 300.0
PIECE = 64 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What swiftclient and the libraries under it raise for a server that is
# not there, cuts the connection, or answers something that is not HTTP.
NETWORK_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                  http.client.HTTPException, OSError, ValueError)


@dataclass(frozen=True)
class Session:
    """Where the caller's account is and the token that opens it."""

    storage_url: str
    token: str
    timeout: float = DEFAULT_TIMEOUT

    @property
    def own_account(self) -> str:
        """The account's name: the storage URL's last path segment (``/v1/AUTH_test``)."""
        name = unquote(urlsplit(self.storage_url).path.rstrip("/").rpartition("/")[2])
        if not name:
            raise AppError(f"the storage URL {quoted(self.storage_url)} names no account")
        return name

    def account_url(self, account: str) -> str:
        """The URL of ``account`` on the same cluster: the storage URL with
        its last path segment replaced (``.`` and ``~`` are the caller's own)."""
        if account in (".", "~") or account == self.own_account:
            return self.storage_url
        parts = urlsplit(self.storage_url)
        head = parts.path.rstrip("/").rpartition("/")[0]
        return urlunsplit((parts.scheme, parts.netloc, f"{head}/{quote(account, safe='')}", "", ""))

    def connection(self, url: str) -> Any:
        """swiftclient's (parsed URL, connection) for ``url``.  Redirects are
        answers, not followed: Swift's API never redirects, and following one
        would send the token (and the job) to wherever it points."""
        parsed, conn = sc.http_connection(url, timeout=self.timeout)
        conn.requests_args["allow_redirects"] = False
        return parsed, conn


@dataclass
class Answer:
    """A response as it arrives: status, reason, headers (lower-case names)
    before the body, which read() and pieces() take from the connection."""

    status: int
    reason: str
    headers: Mapping[str, str]
    response: Any
    what: str
    url: str
    timeout: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def read(self, most: int) -> bytes:
        """At most ``most`` bytes of the body (a refusal's reason)."""
        with talking(self.what, self.url, self.timeout):
            return bytes(self.response.read(most))

    def pieces(self, size: int = PIECE) -> Iterator[bytes]:
        """The whole body, piece by piece: never held whole."""
        while True:
            with talking(self.what, self.url, self.timeout):
                piece = bytes(self.response.read(size))
            if not piece:
                return
            yield piece


def check_url(url: str, what: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 (a bad port raises ValueError here)
    except ValueError as e:
        raise AppError(f"{what} {quoted(url)} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AppError(f"{what} {quoted(url)} is not an http:// or https:// URL")
    return url


def causes(e: BaseException) -> list[BaseException]:
    """``e`` and everything in its chain of causes and arguments, nearest first."""
    found: list[BaseException] = []
    todo: list[BaseException] = [e]
    while todo and len(found) < 64:
        cause = todo.pop(0)
        if any(cause is f for f in found):
            continue
        found.append(cause)
        todo.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)
        todo.extend(a for a in cause.args if isinstance(a, BaseException))
        reason = getattr(cause, "reason", None)   # urllib3's MaxRetryError keeps it there
        if isinstance(reason, BaseException):
            todo.append(reason)
    return found


def check_header_value(value: str, what: str) -> str:
    """A credential that goes in a header: refused when it has a control
    character (requests would refuse it with the value in its message)."""
    if CONTROL.search(value):
        raise AppError(f"{what} has a control character (a newline?); it cannot go in an HTTP header")
    return value


def network_reason(e: BaseException, timeout: float) -> str:
    """Why no answer came, in the words of the first cause that says it plainly."""
    chain = causes(e)
    for cause in chain:
        if isinstance(cause, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(cause, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)):
            return "the connection closed before the whole answer came"
        if isinstance(cause, http.client.LineTooLong):
            return "the answer has a line longer than HTTP allows"
        if isinstance(cause, http.client.BadStatusLine):
            return f"the answer is not HTTP (it starts {quoted(str(cause.args[0] if cause.args else ''), 60)})"
    for cause in chain:
        if isinstance(cause, OSError) and cause.strerror and not isinstance(cause, TimeoutError):
            return cause.strerror
    for cause in chain:
        if isinstance(cause, (TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
            return f"no answer within {timeout:g} seconds"
    if isinstance(e, UnicodeError):
        return "the answer has a header that is not UTF-8"
    return one_line(f"{type(e).__name__}: {e}", 200)


@contextmanager
def talking(what: str, url: str, timeout: float) -> Iterator[None]:
    """Turns what swiftclient raises into one AppError line about ``what``."""
    try:
        yield
    except ClientException as e:
        if e.http_status:
            raise refused(what, int(e.http_status), str(e.http_reason or ""),
                          e.http_response_content, e.http_response_headers) from None
        raise AppError(f"{what}: {one_line(str(e.msg), 200)}") from None
    except NETWORK_ERRORS as e:
        where = urlsplit(url)
        raise AppError(f"{what}: {where.scheme}://{where.netloc}: {network_reason(e, timeout)}") from None


def refused(what: str, status: int, reason: str, body: bytes | str | None,
            headers: Mapping[str, str] | None) -> AppError:
    """A non-2xx: the status, and the server's one-line reason (its body's
    first line, else its X-Nexe-Error)."""
    line = server_line(body)
    if not line and headers is not None:
        line = one_line(str(headers.get("X-Nexe-Error") or headers.get("x-nexe-error") or ""))
    text = f"{what}: {status} {one_line(reason, 80)}".rstrip()
    return AppError(f"{text}: {line}" if line and line != reason else text)


# ------------------------------------------------------------------ auth
def authenticate(auth_url: str, user: str, key: str, timeout: float = DEFAULT_TIMEOUT) -> Session:
    """v1 auth as the ``swift`` CLI does it: GET ``auth_url`` with X-Auth-User
    and X-Auth-Key, and take X-Storage-Url and X-Auth-Token."""
    check_url(auth_url, "the auth URL")
    check_header_value(user, "the user")
    check_header_value(key, "the key")
    unlike_auth = AppError(f"auth: {quoted(auth_url)} answered without X-Storage-Url and X-Auth-Token; "
                           f"is it a Swift v1 auth URL?")
    with talking("auth", auth_url, timeout):
        try:
            url, token = sc.get_auth(auth_url, user, key, auth_version="1.0", timeout=timeout)
        except ClientException as e:
            if e.http_status and 200 <= int(e.http_status) < 300:   # a 2xx with a body but no storage URL
                raise unlike_auth from None
            raise
    if not url or not token:
        raise unlike_auth
    return Session(check_url(str(url), "auth: the storage URL"), check_header_value(str(token), "auth: the token"),
                   timeout)


def direct(storage_url: str, token: str, timeout: float = DEFAULT_TIMEOUT) -> Session:
    return Session(check_url(storage_url, "the storage URL"), check_header_value(token, "the token"), timeout)


# ------------------------------------------------------------------ deploy
def deploy(session: Session, target: SwiftPath, data: bytes, content_type: str) -> str:
    """PUTs ``data`` as ``target``'s object, creating its container when a
    HEAD says it is missing; returns the object's etag."""
    url = session.account_url(target.account)
    conn = session.connection(url)
    try:
        with talking("HEAD container", url, session.timeout):
            try:
                sc.head_container(url, session.token, target.container, http_conn=conn)
                missing = False
            except ClientException as e:
                if not e.http_status:
                    raise
                # 404: create it.  Any other refusal (a caller allowed to write
                # into the container but not to HEAD it): the object's PUT says.
                missing = e.http_status == 404
        if missing:
            with talking("PUT container", url, session.timeout):
                sc.put_container(url, session.token, target.container, http_conn=conn)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        with talking("PUT object", url, session.timeout):
            sc.put_object(url, session.token, target.container, target.obj, contents=data,
                          content_type=content_type, etag=etag, http_conn=conn)
    finally:
        conn[1].close()
    return etag


# ------------------------------------------------------------------ execute
@contextmanager
def execute(session: Session, headers: Mapping[str, str], body: bytes | IO[bytes] | None) -> Iterator[Answer]:
    """POSTs a job to the caller's account and gives its answer, whatever its
    status, as soon as the headers are in; the body streams from it.

    post_account would send the same request, but it reads the whole answer
    into memory first: a job's output may be hundreds of megabytes, and a
    hostile server's may never end.  So the request goes through swiftclient's
    own connection (the same headers' encoding, timeout and TLS options)."""
    url = session.storage_url
    parsed, conn = session.connection(url)
    try:
        with talking("execute", url, session.timeout):
            conn.request("POST", parsed.path, body, {"X-Auth-Token": session.token, **headers})
            response = conn.getresponse()
            answer_headers = {str(k).lower(): str(v) for k, v in response.getheaders()}
        yield Answer(int(response.status), str(response.reason or ""), answer_headers, response, "execute", url,
                     session.timeout)
    finally:
        conn.close()
