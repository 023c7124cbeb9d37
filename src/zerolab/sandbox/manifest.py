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


def _clip(value: str, limit: int = 60) -> str:
    """A value cut for a message, so that one bad line gives a short message."""
    return value if len(value) <= limit else value[:limit] + "..."


def _shown(value: str) -> str:
    return repr(_clip(value))


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
        # ZeroVM took any alias, even an empty one; here an alias is the guest
        # path the channel appears at, so it must be one (and not break a line).
        if not isinstance(self.alias, str) or not self.alias.startswith("/"):
            fail(f"channel alias {_shown(str(self.alias))} must be an absolute path like /dev/in")
        if "," in self.alias or "\n" in self.alias:
            fail(f"channel alias {_shown(self.alias)} contains a comma or newline")
        if isinstance(self.uri, str) and (not self.uri or "," in self.uri):
            fail(f"channel uri {_shown(self.uri)} is empty or contains a comma")
        # ZeroVM stored type and etag in 32-bit ints and so wrapped 2**32 to 0;
        # any value but the listed ones is refused here.
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
    extra: dict[str, str] = field(default_factory=dict)  # Job, NameServer, Etag and unknown keys
    source: str = "manifest"  # where it came from, for error messages
    ignored: list[int] = field(default_factory=list, compare=False, repr=False)
    """Numbers of the non-blank lines ZeroVM's parser skipped (no single '=', or an unknown key)."""

    # ------------------------------------------------------------------ parse
    @classmethod
    def parse(cls, text: str, source: str = "manifest") -> Manifest:
        """The manifest ``text`` as ZeroVM read it; ManifestError names the first line it refused."""
        singles: dict[str, int] = {}        # key -> the line it was given on
        aliases: dict[str, int] = {}
        channels: list[Channel] = []
        extra: dict[str, str] = {}
        ignored: list[int] = []
        program, timeout, memory, etag, node = "", DEFAULT_TIMEOUT, DEFAULT_MEMORY, 0, None
        for number, line in enumerate(split_lines(text, source), start=1):
            if line.count("=") != 1:
                # ZeroVM took a line only when '=' split it into exactly a key and a
                # value: a line without '=' (a "# comment") or with two is skipped.
                if line.strip(WHITESPACE):
                    ignored.append(number)
                continue
            raw_key, raw = line.split("=")
            key, value = raw_key.strip(WHITESPACE), raw.strip(WHITESPACE)
            if key == "Channel":
                channel = parse_channel(raw, number, source)
                if channel.alias in aliases:
                    raise ManifestError(
                        f"duplicate channel alias {_clip(channel.alias)} (first on line {aliases[channel.alias]})",
                        number, source)
                aliases[channel.alias] = number
                channels.append(channel)
                continue
            if key not in SINGLE_KEYS:
                # Unknown (and miscased: keys are compared exactly) keys were skipped
                # by ZeroVM; they are kept so that a rewrite loses nothing.
                extra[key] = value
                ignored.append(number)
                continue
            if key in singles:
                raise ManifestError(f"duplicate {key} (first given on line {singles[key]})", number, source)
            singles[key] = number
            if key == "Version":
                if value != VERSION:
                    raise ManifestError(f"unsupported Version {_shown(value)} (expected {VERSION})", number, source)
            elif key == "Program":
                # ZeroVM took an empty Program and then failed to open it; the
                # parser already knows it cannot run, so it says so at the line.
                if not value:
                    raise ManifestError("Program is empty", number, source)
                program = value
            elif key == "Timeout":
                # ZeroVM kept Timeout in an int32: above 2**31-1 it wrapped (2**32+50
                # became 50); its documented range is enforced instead.
                timeout = _integer("Timeout", raw, 1, MAX_TIMEOUT, number, source)
            elif key == "Memory":
                memory, etag = _memory(raw, number, source)
            elif key == "Node":
                # Only a NameServer with network channels made ZeroVM check Node >= 1;
                # zerolab has neither, so any int Node loads (an int64 one was wrapped).
                node = _integer("Node", raw, INT32_MIN, INT32_MAX, number, source)
            else:
                _tolerated(key, raw, number, source)
                extra[key] = value
        for key in MANDATORY_KEYS:
            if key not in singles:
                raise ManifestError(f"mandatory key {key} is missing", None, source)
        return cls(program=program, timeout=timeout, memory=memory, channels=channels,
                   node=node, etag=etag, extra=extra, source=source, ignored=ignored)

    @classmethod
    def load(cls, path: str) -> Manifest:
        try:
            # newline="": ZeroVM split on \n only, so a \r must reach the parser as it is.
            with open(path, encoding="utf-8", newline="") as f:
                # Enough characters to see that a file is over the byte limit.
                text = f.read(MANIFEST_SIZE_LIMIT)
        except OSError as e:
            raise ManifestError(f"cannot read: {e.strerror}", None, path) from None
        except UnicodeDecodeError:
            # ZeroVM took any bytes; a name that is not UTF-8 could not be shown
            # in a message or written back, so zerolab refuses the file.
            raise ManifestError("is not a text file (not UTF-8)", None, path) from None
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
        if self.node is not None and not INT32_MIN <= self.node <= INT32_MAX:
            raise ManifestError(f"Node = {self.node} is out of range {INT32_MIN}..{INT32_MAX}")
        # Text cannot get here (8192 lines hold fewer channels), a manifest built in code can.
        if len(self.channels) > MAX_CHANNELS:
            raise ManifestError(f"{len(self.channels)} channels, more than ZeroVM's {MAX_CHANNELS}")
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
    """A ``Channel =`` value as ZeroVM read it, refused where ZeroVM refused it
    and where zerolab cannot serve it (network and multi-uri channels)."""
    tokens = [t.strip(WHITESPACE) for t in value.split(",")]
    # ZeroVM refused fewer than 8 fields, and more too: the 8th field then held
    # the rest of the line ("0,x"), which is not a number.
    if len(tokens) != 8:
        raise ManifestError(
            f"Channel needs 8 comma-separated fields "
            f"(uri,alias,type,etag,gets,get_size,puts,put_size), got {len(tokens)}", line, source)
    uri, alias = tokens[0], tokens[1]
    if ";" in uri:
        raise ManifestError(f"multi-uri channels are not supported: {_shown(uri)}", line, source)
    try:
        network = check_source(uri)
    except ValueError as e:
        raise ManifestError(f"invalid channel name {_shown(uri)}: {e}", line, source) from None
    if network:
        raise ManifestError(f"network channels are not supported: {_shown(uri)}", line, source)
    names = ("access type", "etag", "gets", "get_size", "puts", "put_size")
    numbers = []
    for name, token in zip(names, tokens[2:]):
        try:
            numbers.append(c_integer(token))
        except (ValueError, OverflowError):
            raise ManifestError(f"invalid channel {name} token {_shown(token)}", line, source) from None
    channel = Channel(uri, alias, *numbers)
    channel.validate(line, source)
    return channel


def split_lines(text: str, source: str = "manifest") -> list[str]:
    """The manifest's lines as ZeroVM split them: on ``\\n`` only (a lone ``\\r``
    or U+2028 is inside a line), at most 8192 lines, the last holding the rest."""
    if "\0" in text:
        # ZeroVM read the manifest as a C string and so ignored everything from
        # a NUL on, half a line included; refused rather than silently cut.
        at = text.index("\0")
        raise ManifestError("holds a NUL character (ZeroVM ignored the text after it)",
                            text.count("\n", 0, at) + 1, source)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size >= MANIFEST_SIZE_LIMIT:
        # ZeroVM read at most this many bytes into a buffer of the same size:
        # a longer manifest was cut, and one this long overran the buffer.
        raise ManifestError(f"is {size} bytes, ZeroVM's limit is {MANIFEST_SIZE_LIMIT - 1}", None, source)
    lines = text.split("\n", MANIFEST_LINES_LIMIT - 1)
    # Past line 8192 ZeroVM glued the rest onto that line, which then usually
    # had several '=' and was skipped whole: blank lines there change nothing,
    # anything else (a channel that would silently vanish) is refused.
    for offset, rest in enumerate(lines[-1].split("\n")[1:], start=1):
        if rest.strip(WHITESPACE):
            raise ManifestError(f"is past ZeroVM's limit of {MANIFEST_LINES_LIMIT} lines",
                                len(lines) + offset, source)
    return lines


def _integer(key: str, raw: str, lo: int, hi: int, line: int, source: str) -> int:
    token = raw.strip(WHITESPACE)
    try:
        n = c_integer(token)
    except ValueError:
        raise ManifestError(f"{key} must be an integer, got {_shown(token)}", line, source) from None
    except OverflowError:
        n = hi + 1
    if not lo <= n <= hi:
        raise ManifestError(f"{key} = {_clip(token)} is out of range {lo}..{hi}", line, source)
    return n


def _memory(raw: str, line: int, source: str) -> tuple[int, int]:
    """``Memory = <bytes>,<etag>``: ZeroVM split it in two at the first comma."""
    size_token, comma, etag_token = raw.partition(",")
    if not comma:
        raise ManifestError(f"Memory must be '<bytes>,<etag 0|1>', got {_shown(raw.strip(WHITESPACE))}",
                            line, source)
    try:
        etag = c_integer(etag_token)
    except (ValueError, OverflowError):
        etag = -1
    if etag not in (0, 1):
        raise ManifestError(
            f"invalid memory etag token {_shown(etag_token.strip(WHITESPACE))} (expected 0 or 1)", line, source)
    try:
        memory = c_integer(size_token)
    except ValueError:
        raise ManifestError(f"invalid memory size token {_shown(size_token.strip(WHITESPACE))}",
                            line, source) from None
    except OverflowError:
        memory = -1
    # ZeroVM refused <= 0 and > 4 GiB; its higher floor (its 16 MiB NaCl stack
    # plus an 8 MiB heap) has no wasm counterpart, so the floor is one wasm page.
    if not 65536 <= memory <= MAX_MEMORY:
        raise ManifestError(f"memory size {_clip(size_token.strip(WHITESPACE))} "
                            f"is out of range 65536..{MAX_MEMORY}", line, source)
    return memory, etag


def _tolerated(key: str, raw: str, line: int, source: str) -> None:
    """Job, NameServer, Etag: not acted on here, but refused where ZeroVM refused them."""
    if key == "Job" and len(raw.encode("utf-8", "surrogatepass")) > JOB_NAME_LIMIT:
        raise ManifestError(f"Job is longer than {JOB_NAME_LIMIT} bytes (a unix socket path)", line, source)
    if key == "NameServer":
        try:
            check_source(raw)
        except ValueError as e:
            raise ManifestError(f"invalid NameServer {_shown(raw.strip(WHITESPACE))}: {e}", line, source) from None


def os_path(uri: ChannelURI) -> str | None:
    """The host path of a channel, if it has one."""
    return os.fspath(uri) if isinstance(uri, str) else None
