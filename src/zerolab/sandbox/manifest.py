"""ZeroVM manifest (Version 20130611): parse, validate, build in code, serialize.

The text is read as ZeroVM's own parser (src/main/manifest.c) read it, line kind
by line kind; docs/sandbox.md has the table.  In short: lines are split on
``\n`` only; a line counts only if it holds exactly one ``=`` (any other line is
skipped, which is all ZeroVM had of "comments"); keys are case sensitive and
unknown ones are skipped (kept here in ``extra`` and written back); numbers are
C's ``strtoll(s, NULL, 0)``: decimal, ``0x`` hex or leading-zero octal, an empty
field meaning 0.  What ZeroVM refused is refused with a one-line
:class:`ManifestError` naming the line.  Where zerolab refuses more (a NUL, a
file past ZeroVM's buffer, text past line 8192, a relative alias, values that C
silently wrapped), the code says why.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from typing import Union

VERSION = "20130611"
# zvsh's defaults: 4 GiB limits mean "no limit" for a 32-bit guest.
DEFAULT_LIMIT = 4294967296
DEFAULT_MEMORY = 4294967296
DEFAULT_TIMEOUT = 50
MAX_MEMORY = 4294967296  # wasm32 linear memory cannot be larger
MAX_TIMEOUT = 2147483647

# ZeroVM's limits (src/main/manifest.c, src/channels/nservice.h, channel.h).
# Its buffer was MANIFEST_SIZE_LIMIT bytes with no room for the terminating NUL,
# so the largest manifest it read safely was one byte less.
MANIFEST_SIZE_LIMIT = 0x80000
MANIFEST_LINES_LIMIT = 0x2000
MAX_CHANNELS = 10914        # ChannelsCtor failed at MAX_CHANNELS_NUMBER (10915) channels
JOB_NAME_LIMIT = 108        # UNIX_PATH_MAX: the Job value's length before trimming
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# g_strstrip trims C's isspace() set, not Python's wider str.strip() set.
WHITESPACE = " \t\n\v\f\r"

# Channel access types, numbered as ZeroVM's doc/channels.txt numbers them.
SEQ_READ_SEQ_WRITE = 0
RND_READ_SEQ_WRITE = 1
SEQ_READ_RND_WRITE = 2
RND_READ_RND_WRITE = 3

# Keys ZeroVM knew but zerolab does not act on: checked as ZeroVM checked them,
# then kept in ``extra`` so that old manifests load and write back unchanged.
TOLERATED_KEYS = ("Job", "NameServer", "Etag")
SINGLE_KEYS = ("Version", "Program", "Timeout", "Memory", "Node") + TOLERATED_KEYS
MANDATORY_KEYS = ("Version", "Program", "Timeout", "Memory")
# A name whose part before the first ':' is one of these (any case) was a
# network address to ZeroVM (the PROTOCOLS list of src/main/manifest.h).
PROTOCOLS = frozenset(("tcp", "udp", "ipc", "inproc", "pgm", "epgm", "regular", "directory",
                       "character", "block", "fifo", "link", "socket"))

# strtoll with base 0 after trimming: sign, then 0x-hex, 0-octal or decimal.
_C_INTEGER = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))")
_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = re.compile(rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}")  # inet_pton's dotted quad

# A channel's source/destination: a host path, or data kept in memory.
ChannelURI = Union[str, bytes, bytearray, io.BytesIO, None]


def _one_line(text: str) -> str:
    # Values in messages come from hostile text: escape anything that could
    # break the line (\r, \x85, \u2028...) or hide what follows.
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shown(value: str, limit: int = 60) -> str:
    """A value quoted for a message, cut so that one bad line gives a short message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


class ManifestError(ValueError):
    """A manifest that cannot be run.  str() is one line naming what is wrong."""

    def __init__(self, message: str, line: int | None = None, source: str = "manifest"):
        self.line = line
        self.source = source
        where = f"{source} line {line}" if line is not None else source
        super().__init__(_one_line(f"{where}: {message}"))


def parse_int(token: str) -> int:
    """zvsh.cfg's integers: decimal, 0x hexadecimal, or C-style leading-zero octal.

    Not the manifest's reader (that is :func:`c_integer`): zvsh's messages rely
    on this one refusing an empty token and returning values of any size.
    """
    t = token.strip()
    if not t:
        raise ValueError("empty number")
    neg = t.startswith("-")
    digits = t[1:] if neg else t
    if digits.lower().startswith("0x"):
        value = int(digits[2:], 16)
    elif len(digits) > 1 and digits.startswith("0"):
        value = int(digits[1:], 8)
    else:
        value = int(digits, 10)
    return -value if neg else value


def c_integer(token: str) -> int:
    """A manifest number as ZeroVM's ToInt read it (g_ascii_strtoll, base 0).

    ValueError: not a number (trailing text, ``0x`` alone, ``08``, ``1_000``,
    non-ASCII digits).  OverflowError: outside int64, where strtoll set ERANGE.
    Both were ZeroVM's "invalid numeric value".
    """
    t = token.strip(WHITESPACE)
    if not t:
        return 0  # strtoll converts nothing and sets no error: ZeroVM read it as 0
    m = _C_INTEGER.fullmatch(t)
    if m is None:
        raise ValueError(f"not a C integer: {_shown(t)}")
    sign, hexa, octal, decimal = m.groups()
    digits, base = (hexa, 16) if hexa is not None else (octal, 8) if octal is not None else (decimal, 10)
    digits = digits.lstrip("0") or "0"
    if len(digits) > 22:  # longer than any int64 in any base: don't convert megabytes of digits
        raise OverflowError(f"out of int64 range: {_shown(t)}")
    n = -int(digits, base) if sign == "-" else int(digits, base)
    if not INT64_MIN <= n <= INT64_MAX:
        raise OverflowError(f"out of int64 range: {_shown(t)}")
    return n


def check_source(name: str) -> bool:
    """ZeroVM's ParseName rules for a channel name or NameServer: True for a
    network address (protocol:host:port), False for a file; ValueError says
    why ZeroVM refused it."""
    name = name.strip(WHITESPACE)
    parts = name.split(":", 2)
    protocol = parts[0].strip(WHITESPACE)
    # g_ascii_strcasecmp: ASCII case folding only (str.lower would fold the Kelvin sign to k)
    if protocol.isascii() and protocol.lower() in PROTOCOLS:
        if len(parts) < 3:
            raise ValueError("a network address is protocol:host:port")
        host, port = parts[1], parts[2]
        if "." in host:
            # inet_pton's dotted quad; 0.0.0.0 too was refused (ZeroVM read a zero result as failure)
            if not _IPV4.fullmatch(host.strip(WHITESPACE)) or host.strip(WHITESPACE) == "0.0.0.0":
                raise ValueError(f"malformed ip {_shown(host)}")
        else:
            _host_or_port(host)
        _host_or_port(port)
        return True
    if len(parts) > 1:
        raise ValueError("':' is allowed only in protocol:host:port")
    if not name.startswith("/"):
        raise ValueError("only absolute paths are allowed")
    return False


def _host_or_port(token: str) -> None:
    try:
        c_integer(token)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid number {_shown(token.strip(WHITESPACE))}") from None


@dataclass
class Channel:
    """One ``Channel = uri,alias,type,etag,gets,get_size,puts,put_size`` line.

    ``uri`` is a host path (``/dev/stdin``, ``/dev/stdout`` and ``/dev/stderr``
    mean this process's own streams), or, for in-process use, ``bytes`` /
    ``BytesIO`` to read from, or ``None``: an empty input, or an output kept in
    memory and returned in the report.
    """

    uri: ChannelURI
    alias: str
    type: int = SEQ_READ_SEQ_WRITE
    etag: int = 0
    gets: int = DEFAULT_LIMIT
    get_size: int = DEFAULT_LIMIT
    puts: int = DEFAULT_LIMIT
    put_size: int = DEFAULT_LIMIT

    @property
    def readable(self) -> bool:
        return self.gets > 0 and self.get_size > 0

    @property
    def writable(self) -> bool:
        return self.puts > 0 and self.put_size > 0

    @property
    def random_read(self) -> bool:
        return self.type in (RND_READ_SEQ_WRITE, RND_READ_RND_WRITE)

    @property
    def random_write(self) -> bool:
        return self.type in (SEQ_READ_RND_WRITE, RND_READ_RND_WRITE)

    def uri_text(self) -> str:
        if isinstance(self.uri, str):
            return self.uri
        return "<memory>"

    def line(self) -> str:
        return "Channel = %s,%s,%d,%d,%d,%d,%d,%d" % (
            self.uri_text(), self.alias, self.type, self.etag,
            self.gets, self.get_size, self.puts, self.put_size)

    def validate(self, line: int | None = None, source: str = "manifest") -> None:
        def fail(msg: str) -> None:
            raise ManifestError(msg, line, source)
        if not isinstance(self.alias, str) or not self.alias.startswith("/"):
            fail(f"channel alias {self.alias!r} must be an absolute path like /dev/in")
        if "," in self.alias or "\n" in self.alias:
            fail(f"channel alias {self.alias!r} contains a comma or newline")
        if isinstance(self.uri, str) and (not self.uri or "," in self.uri):
            fail(f"channel uri {self.uri!r} is empty or contains a comma")
        if self.type not in (0, 1, 2, 3):
            fail(f"invalid channel access type {self.type} (expected 0..3)")
        if self.etag not in (0, 1):
            fail(f"invalid channel etag {self.etag} (expected 0 or 1)")
        for name in ("gets", "get_size", "puts", "put_size"):
            if getattr(self, name) < 0:
                fail(f"negative channel limit {name} = {getattr(self, name)}")


@dataclass
class Mount:
    """An NVRAM ``[fstab]`` entry: a tar image channel mounted in the guest."""

    channel: str          # alias of the channel holding the tar, e.g. /dev/2.python.tar
    mountpoint: str = "/"
    access: str = "ro"


@dataclass
class Manifest:
    """A ZeroVM manifest, plus (optionally) the NVRAM zvsh would have written.

    ``args``/``env``/``mounts`` play the role of ``/dev/nvram``: when they are
    None and the manifest has a ``/dev/nvram`` channel, the runtime reads the
    NVRAM file named by that channel at run time (as ZeroVM's ZRT did).
    """

    program: str
    timeout: int = DEFAULT_TIMEOUT
    memory: int = DEFAULT_MEMORY
    channels: list[Channel] = field(default_factory=list)
    node: int | None = 1
    etag: int = 0
    version: str = VERSION
    args: list[str] | None = None
    env: dict[str, str] | None = None
    mounts: list[Mount] | None = None
    extra: dict[str, str] = field(default_factory=dict)  # tolerated keys (Job, NameServer, ...)
    source: str = "manifest"  # where it came from, for error messages

    # ------------------------------------------------------------------ parse
    @classmethod
    def parse(cls, text: str, source: str = "manifest") -> Manifest:
        values: dict[str, tuple[int, str]] = {}
        channels: list[tuple[int, str]] = []
        extra: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if "=" not in stripped:
                raise ManifestError(f"expected 'Key = value', got {stripped[:60]!r}", number, source)
            key, value = (part.strip() for part in stripped.split("=", 1))
            if not key:
                raise ManifestError("missing key before '='", number, source)
            if key == "Channel":
                channels.append((number, value))
            elif key in SINGLE_KEYS:
                if key in values:
                    raise ManifestError(
                        f"duplicate {key} (first given on line {values[key][0]})", number, source)
                values[key] = (number, value)
            else:
                # ZeroVM ignores unknown keys; we keep them so a rewrite loses nothing.
                extra[key] = value
        for key in MANDATORY_KEYS:
            if key not in values:
                raise ManifestError(f"mandatory key {key} is missing", None, source)

        def bounded_int(key: str, lo: int, hi: int) -> int:
            line, value = values[key]
            try:
                n = parse_int(value)
            except ValueError:
                raise ManifestError(f"{key} must be an integer, got {value!r}", line, source) from None
            if not lo <= n <= hi:
                raise ManifestError(f"{key} = {n} is out of range {lo}..{hi}", line, source)
            return n

        line, version = values["Version"]
        if version != VERSION:
            raise ManifestError(f"unsupported Version {version!r} (expected {VERSION})", line, source)
        line, program = values["Program"]
        if not program:
            raise ManifestError("Program is empty", line, source)
        timeout = bounded_int("Timeout", 1, MAX_TIMEOUT)
        line, mem_value = values["Memory"]
        tokens = [t.strip() for t in mem_value.split(",")]
        if len(tokens) != 2:
            raise ManifestError(
                f"Memory must be '<bytes>,<etag 0|1>', got {mem_value!r}", line, source)
        try:
            memory = parse_int(tokens[0])
        except ValueError:
            raise ManifestError(f"invalid memory size token {tokens[0]!r}", line, source) from None
        if not 65536 <= memory <= MAX_MEMORY:
            raise ManifestError(f"memory size {memory} is out of range 65536..{MAX_MEMORY}", line, source)
        if tokens[1] not in ("0", "1"):
            raise ManifestError(f"invalid memory etag token {tokens[1]!r} (expected 0 or 1)", line, source)
        etag = int(tokens[1])
        node = bounded_int("Node", 1, MAX_TIMEOUT) if "Node" in values else None
        for key in TOLERATED_KEYS:
            if key in values:
                extra[key] = values[key][1]

        parsed: list[Channel] = []
        seen: dict[str, int] = {}
        for line, value in channels:
            channel = parse_channel(value, line, source)
            if channel.alias in seen:
                raise ManifestError(
                    f"duplicate channel alias {channel.alias} (first on line {seen[channel.alias]})",
                    line, source)
            seen[channel.alias] = line
            parsed.append(channel)
        return cls(program=program, timeout=timeout, memory=memory, channels=parsed,
                   node=node, etag=etag, extra=extra, source=source)

    @classmethod
    def load(cls, path: str) -> Manifest:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(512 * 1024 + 1)
        except OSError as e:
            raise ManifestError(f"cannot read: {e.strerror}", None, path) from None
        except UnicodeDecodeError:
            raise ManifestError("is not a text file", None, path) from None
        if len(text) > 512 * 1024:
            raise ManifestError("is larger than 512 KiB (ZeroVM's limit)", None, path)
        return cls.parse(text, source=path)

    # -------------------------------------------------------------- serialize
    def dumps(self) -> str:
        """The manifest text, laid out as zvsh wrote it (see the seed's manifest.1)."""
        lines = []
        if self.node is not None:
            lines.append(f"Node = {self.node}")
        lines += [f"Version = {self.version}", f"Timeout = {self.timeout}",
                  f"Memory = {self.memory},{self.etag}", f"Program = {self.program}"]
        lines += [c.line() for c in self.channels]
        lines += [f"{k} = {v}" for k, v in self.extra.items()]
        return "\n".join(lines) + "\n"

    def validate(self) -> None:
        """Checks a manifest built in code the way parse() checks text."""
        if self.version != VERSION:
            raise ManifestError(f"unsupported Version {self.version!r} (expected {VERSION})")
        if not self.program:
            raise ManifestError("Program is empty")
        if not isinstance(self.timeout, (int, float)) or not 0 < self.timeout <= MAX_TIMEOUT:
            raise ManifestError(f"Timeout = {self.timeout} is out of range 1..{MAX_TIMEOUT}")
        if not 65536 <= self.memory <= MAX_MEMORY:
            raise ManifestError(f"memory size {self.memory} is out of range 65536..{MAX_MEMORY}")
        if self.etag not in (0, 1):
            raise ManifestError(f"invalid memory etag {self.etag} (expected 0 or 1)")
        seen = set()
        for c in self.channels:
            c.validate()
            if c.alias in seen:
                raise ManifestError(f"duplicate channel alias {c.alias}")
            seen.add(c.alias)

    def channel(self, alias: str) -> Channel | None:
        for c in self.channels:
            if c.alias == alias:
                return c
        return None


def parse_channel(value: str, line: int | None = None, source: str = "manifest") -> Channel:
    tokens = [t.strip() for t in value.split(",")]
    if len(tokens) != 8:
        raise ManifestError(
            f"Channel needs 8 comma-separated fields "
            f"(uri,alias,type,etag,gets,get_size,puts,put_size), got {len(tokens)}", line, source)
    uri, alias = tokens[0], tokens[1]
    if ";" in uri:
        raise ManifestError(f"multi-uri channels are not supported: {uri!r}", line, source)
    if uri.startswith(("tcp:", "udp:", "ipc:")):
        raise ManifestError(f"network channels are not supported: {uri!r}", line, source)
    names = ("access type", "etag", "gets", "get_size", "puts", "put_size")
    numbers = []
    for name, token in zip(names, tokens[2:]):
        try:
            numbers.append(parse_int(token))
        except ValueError:
            raise ManifestError(f"invalid channel {name} token {token!r}", line, source) from None
    channel = Channel(uri, alias, *numbers)
    channel.validate(line, source)
    return channel


def os_path(uri: ChannelURI) -> str | None:
    """The host path of a channel, if it has one."""
    return os.fspath(uri) if isinstance(uri, str) else None
