"""HTTP status lines for swob.Response, on both the proxy and the object server.

swob.Response takes a bare number only for the statuses its own table
knows, and 429 (Too Many Requests) is not among them in the Swift this
runs on: given 429 it raises KeyError, and the job gets a 500.  A status
line is taken as it is.
"""

from __future__ import annotations

from http import HTTPStatus


def status_line(status: int) -> str:
    """``429`` -> ``"429 Too Many Requests"``; a code outside HTTP's list keeps the number alone as its phrase."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} {status}"
