"""What the client says when something is wrong: one line, and an exit status.

Every refusal and failure becomes an AppError: its str() is the line printed
after ``zerolab-app:``, its ``exit_status`` is 2 for a command line that
cannot mean anything (a bad option, a bad swift:// path, no credentials) and
1 for everything else (a file, a directory, the network, the server).
"""

from __future__ import annotations

import html
import re

USAGE = 2
FAILED = 1

# Control characters (a newline among them) and the other unprintables that
# would break a line or a terminal: shown escaped, never written raw.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# An HTML tag (no nesting, no backtracking: "<" to the next ">").
TAG = re.compile(r"<[^<>]{0,1000}>")


class AppError(Exception):
    """A one-line reason the command stopped, and the exit status it gives."""

    def __init__(self, reason: str, exit_status: int = FAILED):
        super().__init__(one_line(reason, 1000))
        self.exit_status = exit_status


class UsageError(AppError):
    def __init__(self, reason: str):
        super().__init__(reason, USAGE)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    flat = " ".join(UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", t) for t in text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def quoted(text: str, limit: int = 200) -> str:
    """A name the user or a server chose, quoted so that it stays one line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"


def server_line(body: bytes | str | None, limit: int = 300) -> str:
    """The first non-empty line of a server's answer, made printable; of an
    HTML answer (Swift's own errors), the first line of its text."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    text = text[:64 * 1024]
    if text.lstrip().startswith("<"):
        text = html.unescape(TAG.sub(" ", text))
    for line in text.splitlines():
        if line.strip():
            return one_line(line, limit)
    return ""
