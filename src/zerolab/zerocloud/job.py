"""Where the middleware parses a job: ZeroCloud's JSON job description (a list
of nodes, doc/Servlets.md in zerovm/zerocloud) or a POSTed ``#!`` script.

Pure Python, no Swift: parse() and parse_script() turn request bodies into
Node objects or raise JobError (an HTTP status and a one-line reason);
expand() turns Nodes into the Instances that run, given the object names a
wildcard matched.

A job description is hostile until proven otherwise: everything here costs
time and memory in proportion to the body (which the proxy caps at
zerovm_maxconfig bytes) or to zerovm_maxnodes, never more.  The limits:

* nesting deeper than MAX_DEPTH (32) levels: 400, found by a scan of the text
  before json.loads (whose recursion a deep body would otherwise exhaust);
* per node: MAX_ARGS arguments, a command line of MAX_ARGS_TEXT characters
  (shlex is slow on long text), MAX_ENV variables, one of each device, and
  no more ``connect`` entries than the job may have nodes: 400;
* per path: MAX_STARS ``*`` and Swift's own name lengths (object 1024 bytes,
  account and container 256): 400;
* instances: ``count``, fan-out and nodes together at most zerovm_maxnodes,
  checked before any Instance is built: 413.

Wildcards are matched by glob_match(), linear in the name's length (no
regular expression, so nothing backtracks).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from itertools import accumulate

# Device names a node may declare, and the channel alias each one gets.
DEVICE_ALIASES = {
    "stdin": "/dev/stdin",
    "stdout": "/dev/stdout",
    "stderr": "/dev/stderr",
    "input": "/dev/input",
    "output": "/dev/output",
    "image": "/dev/image",
    "script": "/script",
}
READABLE = ("stdin", "input", "image", "script")
WRITABLE = ("stdout", "stderr", "output")
# Devices whose object decides where a node runs (image and script never do).
COLOCATING = ("stdin", "input")
# The keys of ZeroCloud's job description.  ZeroCloud ignored any other key,
# and so does zerolab, but it names them in X-Zerovm-Ignored (never silence).
NODE_KEYS = {"name", "exec", "devices", "file_list", "count", "connect", "replicate", "attach",
             "location", "args"}
EXEC_KEYS = {"path", "name", "args", "env"}
DEVICE_KEYS = {"name", "device", "path", "content_type", "meta", "mode", "min_size"}
# ZeroCloud took any name without control characters.  Names also become
# channel paths (/dev/in-NAME) and comma-joined header values, and headers
# are Latin-1: printable ASCII without space, "," and "/".
NAME = re.compile(r"[!-+\-.0-~]{1,64}")          # fullmatch: "$" would let a trailing newline in
# file://image:PATH and file://PATH: a program in the node's image device
# (a swift:// tar, or the app the job came in).
USER_IMAGE = "image"
# swift://./c/o and swift://~/c/o: the account the job was POSTed to.
OWN_ACCOUNT = (".", "~")
MAX_META = 32           # X-Object-Meta-* items per output device (Swift allows 90 per object)
MAX_META_NAME = 128     # Swift's own limits (constraints.py)
MAX_META_VALUE = 256
META_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CONNECT_PREFIX = "/dev/in-"     # a source's stdout, as its reducer reads it (zerolab's own)
# ZeroCloud's connect channels: a source writes /dev/out/<target instance>,
# which that target reads as /dev/in/<source instance>.
OUT_PREFIX = "/dev/out/"
IN_PREFIX = "/dev/in/"

DEVICE_MODES = ("file", "char", "pipe")
MAX_DEPTH = 32
MAX_REPLICATE = 3   # ZeroCloud's Servlets doc: replicate 2 and 3
MAX_ARGS = 256
MAX_ARGS_TEXT = 4096
MAX_ENV = 128
MAX_STARS = 16
MAX_CONTENT_TYPE = 256
# Swift's own limits (constraints.py): longer names could never be read or written.
MAX_OBJECT_NAME = 1024
MAX_CONTAINER_NAME = 256
MAX_ACCOUNT_NAME = 256
# The highest zerovm_maxnodes a proxy accepts: what a job may cost is stated
# in terms of it (proxy.py), so it must not be unbounded.
MAX_NODES = 1000

# A JSON string (possessive, and its closing quote optional, so that an
# unterminated string is consumed once instead of retried from every quote),
# and what is left after strings are gone that is not a bracket.
JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
NOT_BRACKET = re.compile(r"[^\[\]{}]+")
BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class JobError(Exception):
    """A job that cannot run: ``status`` is the HTTP status, str() the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def bad(reason: str) -> JobError:
    return JobError(400, reason)


def too_many_nodes(reason: str) -> JobError:
    return JobError(413, reason)


def shown(names: list[str], most: int = 5) -> str:
    """Names a caller chose, for a reason: quoted (a newline stays one line), and a few."""
    text = ", ".join(f"{n!r:.40}" for n in names[:most])
    return text + (f" and {len(names) - most} more" if len(names) > most else "")


# ------------------------------------------------------------------ wildcards
def glob_match(pattern: str, text: str) -> list[str] | None:
    """The texts each ``*`` of ``pattern`` matched in ``text``, or None.

    ``*`` matches any text (``/`` and newlines too); nothing else is special.
    The literal pieces between stars are found left to right with str.find,
    each at its leftmost place: for ``*``-only patterns that finds a match
    whenever there is one, in time linear in len(text) per piece, where a
    regular expression of ``.*`` would backtrack exponentially."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return [] if text == pattern else None
    first, last = pieces[0], pieces[-1]
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return None
    matched = []
    pos = len(first)
    for piece in pieces[1:-1]:
        at = text.find(piece, pos, end)
        if at < 0:
            return None
        matched.append(text[pos:at])
        pos = at + len(piece)
    matched.append(text[pos:end])
    return matched


@dataclass(frozen=True)
class SwiftPath:
    """swift://account/container/object (object may contain / and *)."""

    account: str
    container: str
    obj: str

    @classmethod
    def parse(cls, text: str, what: str, own_account: str | None = None) -> SwiftPath:
        """``own_account`` stands for ``.`` and ``~`` as the account (ZeroCloud's
        "the caller's own"); without it they are refused."""
        if not text.startswith("swift://"):
            raise bad(f"{what}: {text!r:.200} is not a swift://account/container/object path")
        parts = text[len("swift://"):].split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise bad(f"{what}: {text!r:.200} must name an object: swift://account/container/object")
        account, container, obj = parts
        if account in OWN_ACCOUNT:
            if own_account is None:
                raise bad(f"{what}: {text!r:.200}: no account to stand for {account!r} here; name the account")
            account = own_account
        if "*" in account or "*" in container:
            raise bad(f"{what}: wildcards are only allowed in the object name: {text!r:.200}")
        if CONTROL.search(text):
            raise bad(f"{what}: {text!r:.200} has a control character; Swift names are printable text")
        # Measured in UTF-8 bytes as Swift does; a lone surrogate cannot be encoded at all.
        try:
            sizes = [len(p.encode("utf-8")) for p in parts]
        except UnicodeEncodeError:
            raise bad(f"{what}: {text!r:.200} is not valid Unicode text") from None
        for size, limit, kind in zip(sizes, (MAX_ACCOUNT_NAME, MAX_CONTAINER_NAME, MAX_OBJECT_NAME),
                                     ("account", "container", "object")):
            if size > limit:
                raise bad(f"{what}: the {kind} name is {size} bytes, more than Swift's limit of {limit}")
        stars = obj.count("*")
        if stars > MAX_STARS:
            raise bad(f"{what}: {stars} wildcards in one path, more than {MAX_STARS}; use fewer *")
        return cls(account, container, obj)

    @property
    def wildcard(self) -> bool:
        return "*" in self.obj

    def match(self, name: str) -> list[str] | None:
        """What each ``*`` of the object name matched in ``name``, or None."""
        return glob_match(self.obj, name)

    @property
    def prefix(self) -> str:
        """The literal part before the first ``*`` (a listing prefix)."""
        return self.obj.split("*", 1)[0]

    def __str__(self) -> str:
        return f"swift://{self.account}/{self.container}/{self.obj}"


@dataclass(frozen=True)
class Program:
    """What a node executes: a wasm object in Swift, or a file in a tar image
    (a system image, or the node's own: USER_IMAGE)."""

    swift: SwiftPath | None = None
    image: str | None = None      # system image name, or USER_IMAGE (file://IMAGE:PATH)
    path: str | None = None       # member path inside that image

    def __str__(self) -> str:
        return str(self.swift) if self.swift else f"file://{self.image}:{self.path}"

    @property
    def in_user_image(self) -> bool:
        return self.image == USER_IMAGE


def parse_program(text: object, sysimages: AbstractSet[str], what: str, own_account: str | None = None) -> Program:
    if not isinstance(text, str) or not text:
        raise bad(f"{what}: exec.path must be a non-empty string")
    if text.startswith("swift://"):
        path = SwiftPath.parse(text, what, own_account)
        if path.wildcard:
            raise bad(f"{what}: exec.path cannot contain a wildcard")
        return Program(swift=path)
    if text.startswith("file://"):
        rest = text[len("file://"):]
        image, sep, member = rest.partition(":")
        if not sep or "/" in image:   # file://PATH: ZeroCloud's user image, /dev/image
            image, member = USER_IMAGE, rest
        if not image or not member.lstrip("/"):
            raise bad(f"{what}: {text!r:.200}: use file://IMAGE:PATH (a system image) or file://PATH "
                      f"(the node's image)")
        if image != USER_IMAGE and image not in sysimages:
            known = ", ".join(sorted(sysimages)) or "none configured"
            raise bad(f"{what}: unknown system image {image!r:.80} (known: {known}; file://image:PATH is "
                      f"the node's own image)")
        return Program(image=image, path=member.lstrip("/"))
    raise bad(f"{what}: exec.path {text!r:.200} must be swift://... or file://IMAGE:PATH")


@dataclass
class Device:
    name: str
    path: SwiftPath | None = None
    content_type: str | None = None
    data: bytes | None = None     # a readable device filled from the request (script POST)
    meta: dict[str, str] = field(default_factory=dict)   # X-Object-Meta-* of a stored output
    min_size: int = 0             # an output shorter than this is neither stored nor returned
    sysimage: bool = False        # a system image by name ({"name": "python"}): mounted at /
    stream: bool = False          # mode char or pipe: the guest sees a character device

    @property
    def alias(self) -> str:
        return DEVICE_ALIASES.get(self.name, f"/dev/{self.name}")


@dataclass
class Node:
    """One entry of the job description (before wildcard expansion)."""

    name: str
    program: Program
    args: list[str]
    env: dict[str, str]
    devices: list[Device]
    count: int = 1
    connect: list[str] = field(default_factory=list)
    exec_name: str | None = None
    attach: str | None = None     # the device whose object the node runs next to (None: the first readable)
    replicate: int = 1            # copies run on different replicas, their outputs compared
    ignored: list[str] = field(default_factory=list)   # keys ZeroCloud would have ignored too

    def device(self, name: str) -> Device | None:
        for d in self.devices:
            if d.name == name:
                return d
        return None

    @property
    def wildcard_device(self) -> Device | None:
        for d in self.devices:
            if d.name in READABLE and d.path is not None and d.path.wildcard:
                return d
        return None


@dataclass
class Instance:
    """One running copy of a node: what the proxy routes and the executor runs."""

    name: str                    # node name, or name-N for fan-out (ZeroCloud's naming)
    node: Node
    args: list[str]
    devices: list[Device]        # wildcards resolved
    sources: list[str] = field(default_factory=list)   # instances that feed us (connect)
    targets: list[str] = field(default_factory=list)   # instances we feed: /dev/out/<target>

    @property
    def colocate(self) -> Device | None:
        """The device whose object this instance should run next to: the one
        ``attach`` names, else stdin, else input."""
        if self.node.attach is not None:
            return next((d for d in self.devices if d.name == self.node.attach), None)
        for name in COLOCATING:
            d = next((d for d in self.devices if d.name == name), None)
            if d is not None and d.path is not None:
                return d
        return None

    @property
    def takes_whole_stdout(self) -> bool:
        """Whether each source's whole stdout comes to it (/dev/in-<source>):
        only to a target that is one instance; one of many would each get
        the same, so they get their own /dev/out partitions only."""
        return self.node.count == 1 and self.node.wildcard_device is None

    def readable(self) -> list[Device]:
        return [d for d in self.devices if d.name in READABLE]

    def writable(self) -> list[Device]:
        return [d for d in self.devices if d.name in WRITABLE]


# --------------------------------------------------------------------- parse
def nesting_depth(text: str) -> int:
    """How deep the brackets of a JSON text nest, strings left out.  Regular
    expressions and accumulate() do the work in C: a few milliseconds for a
    64 KiB body, however it is built."""
    brackets = NOT_BRACKET.sub("", JSON_STRING.sub("", text))
    return max(accumulate(map(BRACKET_STEP.__getitem__, brackets), initial=0))


def parse(body: bytes, sysimages: AbstractSet[str], max_nodes: int = 64, own_account: str | None = None,
          app: bytes | None = None, posted: bytes | None = None) -> list[Node]:
    """A JSON job description -> its nodes, validated.  Raises JobError.

    ``own_account`` is the account the job was POSTed to: swift://./ and
    swift://~/ paths name it.  ``app`` is the tar the description came in
    (apps.py): every node without an image device of its own mounts it.
    ``posted`` is the request's body when the job itself came from
    elsewhere (X-Zerovm-Source): a ``stdin`` device without a path reads it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("job description is not UTF-8 text") from None
    if nesting_depth(text) > MAX_DEPTH:
        raise bad(f"job description is nested deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"job description is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError:   # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise bad("job description is not valid JSON: a number has too many digits") from None
    except RecursionError:   # the depth scan should have stopped it; never a 500 if it did not
        raise bad(f"job description is nested deeper than {MAX_DEPTH} levels") from None
    # A \ud800 escape decodes to a lone surrogate that no later step could
    # encode (URLs, headers); the whole document is small, so check it whole.
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad("job description has a \\uXXXX escape that is not a Unicode character") from None
    if isinstance(doc, dict):
        doc = [doc]   # ZeroCloud accepted a single node too
    if not isinstance(doc, list) or not doc:
        raise bad("job description must be a non-empty JSON list of nodes")
    if len(doc) > max_nodes:
        raise too_many_nodes(f"job has {len(doc)} nodes, more than zerovm_maxnodes ({max_nodes})")
    nodes = [parse_node(n, i, sysimages, max_nodes, own_account, app, posted) for i, n in enumerate(doc)]
    names: set[str] = set()
    for n in nodes:
        if n.name in names:
            raise bad(f"node name {n.name!r} is used more than once")
        names.add(n.name)
    check_instance_names(nodes)
    check_connections(nodes)
    # Before any container is listed: a count alone can be over the limit.
    check_fixed_instances(nodes, max_nodes)
    return nodes


def parse_node(raw: object, index: int, sysimages: AbstractSet[str], max_nodes: int = 64,
               own_account: str | None = None, app: bytes | None = None, posted: bytes | None = None) -> Node:
    where = f"node {index + 1}"
    if not isinstance(raw, dict):
        raise bad(f"{where}: must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise bad(f"{where}: name must be 1-64 printable ASCII characters without space, ',' or '/' "
                  f"(got {name!r:.80})")
    where = f"node {name!r}"
    ignored = [f"{name}: {key}" for key in sorted(set(raw) - NODE_KEYS)]
    replicate = raw.get("replicate", 1)
    # ZeroCloud: 1 (its default) and 0 both mean one copy; 2 and 3 run that
    # many copies, on different replicas, and compare what they wrote.
    if not isinstance(replicate, int) or isinstance(replicate, bool) or not 0 <= replicate <= MAX_REPLICATE:
        raise bad(f"{where}: replicate must be 0 or 1 (one copy), 2 or 3 (copies compared) "
                  f"(got {replicate!r:.40})")
    if raw.get("location") is not None:
        raise bad(f"{where}: location is not supported: zerolab places each node next to its own data; "
                  f"leave location out")
    ex = raw.get("exec")
    if not isinstance(ex, dict):
        raise bad(f"{where}: exec must be an object with a path")
    ignored += [f"{name}: exec.{key}" for key in sorted(set(ex) - EXEC_KEYS)]
    program = parse_program(ex.get("path"), sysimages, where, own_account)
    # ZeroCloud's Servlets doc shows args beside exec as well as in it.
    if "args" in raw and "args" in ex:
        raise bad(f"{where}: args is given twice, in exec and beside it; keep one")
    args = ex["args"] if "args" in ex else raw.get("args", "")
    if isinstance(args, list) and all(isinstance(a, str) for a in args):
        arg_list = list(args)
    elif isinstance(args, str):
        if len(args) > MAX_ARGS_TEXT:
            raise bad(f"{where}: exec.args is {len(args)} characters, more than {MAX_ARGS_TEXT}; "
                      f"pass long data in an input object")
        try:
            arg_list = shlex.split(args)
        except ValueError as e:
            raise bad(f"{where}: exec.args: {e}") from None
    else:
        raise bad(f"{where}: exec.args must be a string (a command line)")
    if len(arg_list) > MAX_ARGS:
        raise bad(f"{where}: exec.args has {len(arg_list)} arguments, more than {MAX_ARGS}; "
                  f"pass long data in an input object")
    env = ex.get("env", {})
    if not isinstance(env, dict):
        raise bad(f"{where}: exec.env must be an object of strings")
    if len(env) > MAX_ENV:
        raise bad(f"{where}: exec.env has {len(env)} variables, more than {MAX_ENV}")
    for k, v in env.items():
        if not ENV_KEY.fullmatch(k) or not isinstance(v, str):
            raise bad(f"{where}: exec.env entry {k!r:.80} needs an identifier name and a string value")
    exec_name = ex.get("name")
    if exec_name is not None and not isinstance(exec_name, str):
        raise bad(f"{where}: exec.name must be a string")

    raw_devices = raw.get("devices", raw.get("file_list", []))
    if not isinstance(raw_devices, list):
        raise bad(f"{where}: devices must be a list")
    # Each device may be declared once, so there can be no more than there are names.
    most = len(DEVICE_ALIASES) + len(sysimages)
    if len(raw_devices) > most:
        raise bad(f"{where}: {len(raw_devices)} devices, more than the {most} device names "
                  f"({', '.join([*DEVICE_ALIASES, *sorted(sysimages)])})")
    devices = []
    seen: set[str] = set()
    for d in raw_devices:
        device = parse_device(d, where, sysimages, own_account, posted)
        if not device.sysimage:
            ignored += [f"{name}: device {device.name}.{key}" for key in sorted(set(d) - DEVICE_KEYS)]
        if device.name in seen:
            raise bad(f"{where}: device {device.name!r} is declared twice")
        seen.add(device.name)
        devices.append(device)
    if app is not None and "image" not in seen:
        devices.append(Device("image", data=app))
    elif program.in_user_image and "image" not in seen:
        raise bad(f"{where}: exec.path {program} is a file in the node's image: give the node an image "
                  f"device with a swift:// path to a tar, or POST the job inside an app (a tar with "
                  f"{'boot/system.map'})")
    # (device name, path) of the devices with a wildcard
    wild = [(d.name, d.path) for d in devices if d.path is not None and d.path.wildcard]
    wild_readable = [(device_name, path) for device_name, path in wild if device_name in READABLE]
    if len(wild_readable) > 1:
        raise bad(f"{where}: only one readable device may have a wildcard")
    if any(device_name in ("image", "script") for device_name, _ in wild_readable):
        raise bad(f"{where}: image and script devices cannot have wildcards")
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad(f"{where}: count must be a positive integer")
    if count > max_nodes:
        raise too_many_nodes(f"{where}: count {count} is more than zerovm_maxnodes ({max_nodes})")
    if wild and not wild_readable:
        # ZeroCloud: with count, an output's * is the instance's number.
        if count == 1 or any(path.obj.count("*") != 1 for _, path in wild):
            raise bad(f"{where}: a wildcard in an output path needs a wildcard input to fill it, or a count "
                      f"(one * for the instance's number)")
    for device_name, path in wild:
        if not wild_readable:
            break
        input_name, input_path = wild_readable[0]
        if device_name in WRITABLE and path.obj.count("*") != input_path.obj.count("*"):
            raise bad(f"{where}: {device_name} path must have as many * as {input_name}'s")
    connect = raw.get("connect", [])
    if not isinstance(connect, list) or not all(isinstance(c, str) for c in connect):
        raise bad(f"{where}: connect must be a list of node names")
    if len(connect) > max_nodes:
        raise bad(f"{where}: connect has {len(connect)} entries, more than zerovm_maxnodes ({max_nodes})")
    if len(set(connect)) != len(connect):
        raise bad(f"{where}: connect names a node more than once")
    attach = raw.get("attach", "default")
    if attach == "default":
        attach = None
    elif not isinstance(attach, str) or attach not in seen:
        raise bad(f"{where}: attach must be \"default\" or the name of one of the node's devices "
                  f"(got {attach!r:.80})")
    else:
        device = next(d for d in devices if d.name == attach)
        if device.path is None or device.name not in READABLE:
            raise bad(f"{where}: attach names device {attach!r}, which reads no swift:// object; "
                      f"a node runs next to an object it reads")
    return Node(name=name, program=program, args=arg_list, env=dict(env), devices=devices,
                count=count, connect=list(connect), exec_name=exec_name, attach=attach, ignored=ignored,
                replicate=max(1, replicate))


def parse_device(raw: object, where: str, sysimages: AbstractSet[str] = frozenset(),
                 own_account: str | None = None, posted: bytes | None = None) -> Device:
    if not isinstance(raw, dict):
        raise bad(f"{where}: each device must be a JSON object")
    name = raw.get("name", raw.get("device"))
    if name == "debug":
        raise bad(f"{where}: the debug (network) device is not supported")
    if isinstance(name, str) and name in sysimages and name not in DEVICE_ALIASES:
        # ZeroCloud's system image device: the image's files under /, read-only.
        if raw.get("path") is not None:
            raise bad(f"{where}: device {name} is a system image, which has no path; leave path out")
        return Device(name=name, sysimage=True)
    if not isinstance(name, str) or name not in DEVICE_ALIASES:
        known = [*DEVICE_ALIASES, *sorted(sysimages)]
        raise bad(f"{where}: unknown device {name!r:.80} (allowed: {', '.join(known)})")
    path = raw.get("path")
    data = None
    if path is not None:
        if not isinstance(path, str):
            raise bad(f"{where}: device {name} path must be a string")
        path = SwiftPath.parse(path, f"{where} device {name}", own_account)
    elif name == "stdin" and posted is not None:
        data = posted   # ZeroCloud: a pathless stdin reads the request's body
    elif name in READABLE:
        also = " (or, with X-Zerovm-Source, none: it reads the POST's body)" if name == "stdin" else ""
        raise bad(f"{where}: device {name} is readable and needs a swift:// path{also}")
    ctype = raw.get("content_type")
    if ctype is not None and (not isinstance(ctype, str) or CONTROL.search(ctype)
                              or len(ctype) > MAX_CONTENT_TYPE):
        raise bad(f"{where}: device {name} content_type must be a one-line string of at most "
                  f"{MAX_CONTENT_TYPE} characters")
    # ZeroCloud's device modes change what stat() says of the channel.  WASI
    # has no FIFO type: "pipe", like "char", is a character device (no seek).
    mode = raw.get("mode", "file")
    if mode not in DEVICE_MODES:
        raise bad(f"{where}: device {name} mode {mode!r:.40} is not a mode: use file, char or pipe")
    if mode != "file" and name in ("image", "script"):
        raise bad(f"{where}: device {name} is a file the node reads whole; it has no mode but file")
    min_size = raw.get("min_size", 0)
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 0:
        raise bad(f"{where}: device {name} min_size must be a whole number of bytes")
    if min_size and name not in WRITABLE:
        raise bad(f"{where}: device {name} is readable; min_size is for output devices")
    meta = parse_meta(raw.get("meta", {}), f"{where} device {name}")
    if meta and (name not in WRITABLE or path is None):
        raise bad(f"{where}: device {name}: meta is for output devices stored at a swift:// path")
    return Device(name=name, path=path, content_type=ctype, data=data, meta=meta, min_size=min_size,
                  stream=mode != "file")


def parse_meta(raw: object, where: str) -> dict[str, str]:
    """A device's ``meta``: X-Object-Meta-NAME: VALUE headers of the stored output."""
    if not isinstance(raw, dict):
        raise bad(f"{where}: meta must be an object of strings")
    if len(raw) > MAX_META:
        raise bad(f"{where}: meta has {len(raw)} items, more than {MAX_META}")
    for key, value in raw.items():
        if not META_NAME.fullmatch(key):
            raise bad(f"{where}: meta name {key!r:.80} must be 1-{MAX_META_NAME} letters, digits, - or _")
        if not isinstance(value, str) or CONTROL.search(value) or len(value) > MAX_META_VALUE:
            raise bad(f"{where}: meta {key!r} must be a one-line string of at most {MAX_META_VALUE} characters")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise bad(f"{where}: meta {key!r} must be Latin-1 text (it becomes an HTTP header)") from None
    return dict(raw)


def ignored_keys(nodes: list[Node], most: int = 10) -> str:
    """The keys ZeroCloud would have ignored, as one header value: ASCII (a
    key is the caller's text), a few, each cut short."""
    keys = [key for n in nodes for key in n.ignored]
    text = ", ".join(ascii(key)[1:-1][:80] for key in keys[:most])
    return text + (f" and {len(keys) - most} more" if len(keys) > most else "")


def check_instance_names(nodes: list[Node]) -> None:
    """A node of several instances is name-1, name-2...: no other node may be
    called that (in ZeroCloud one silently took the other's place)."""
    several = {n.name for n in nodes if n.count > 1 or n.wildcard_device is not None}
    for n in nodes:
        base, dash, number = n.name.rpartition("-")
        if dash and number.isdigit() and base in several:
            raise bad(f"node name {n.name!r} is the name of an instance of node {base!r} "
                      f"({base}-1, {base}-2...); rename one of them")


def check_connections(nodes: list[Node]) -> None:
    """connect feeds a node's outputs to other nodes (MapReduce): its stdout
    to every instance of each, and its /dev/out/<instance> to that one.  The
    data flows forward only: no cycles."""
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for dest in n.connect:
            if dest not in by_name:
                raise bad(f"node {n.name!r} connects to unknown node {dest!r:.80}")
            if dest == n.name:
                raise bad(f"node {n.name!r} connects to itself; only forward connections are supported")
            out = n.device("stdout")
            if out is not None and out.path is not None:
                raise bad(f"node {n.name!r} sends its stdout to {dest!r}; its stdout cannot also have a path")
    stage_numbers(nodes)   # raises on a cycle


def stage_numbers(nodes: list[Node]) -> dict[str, int]:
    """Each node's stage: one more than its deepest source's (0 without one).

    Kahn's topological order, without recursion: a chain as long as the node
    limit allows costs no stack.  Nodes never freed of their sources are on,
    or after, a cycle."""
    by_name = {n.name: n for n in nodes}
    waiting = {n.name: 0 for n in nodes}   # sources not yet placed
    for n in nodes:
        for dest in n.connect:
            if dest in waiting:
                waiting[dest] += 1
    stage = {name: 0 for name, count in waiting.items() if count == 0}
    ready = list(stage)
    while ready:
        name = ready.pop()
        for dest in by_name[name].connect:
            if dest not in waiting:
                continue
            stage[dest] = max(stage.get(dest, 0), stage[name] + 1)
            waiting[dest] -= 1
            if waiting[dest] == 0:
                ready.append(dest)
    stuck = [n.name for n in nodes if waiting[n.name] > 0]
    if stuck:
        shown = ", ".join(stuck[:8]) + (", ..." if len(stuck) > 8 else "")
        raise bad(f"connect forms a cycle (nodes that would wait forever: {shown})")
    return stage


def check_fixed_instances(nodes: list[Node], max_nodes: int) -> None:
    """The instances a job has before any wildcard is listed, against the limit."""
    fixed = sum(n.count * n.replicate for n in nodes if n.wildcard_device is None)
    if fixed > max_nodes:
        raise too_many_nodes(f"job asks for {fixed} instances (replicated copies included), more than "
                             f"zerovm_maxnodes ({max_nodes}); "
                             f"lower the counts or split the job")


# -------------------------------------------------------------------- script
def parse_script(body: bytes, sysimages: AbstractSet[str], stdin: SwiftPath | None = None,
                 own_account: str | None = None, posted: bytes | None = None) -> list[Node]:
    """A POSTed script whose first line is ``#!file://IMAGE:PATH [args]`` (or
    ``#!swift://...``): one node running the interpreter on ``/script``, with
    the object as stdin when the POST went to an object, else ``posted`` (the
    POST's body when the script came from X-Zerovm-Source)."""
    first, _, _ = body.partition(b"\n")
    if not first.startswith(b"#!"):
        raise bad("a script must start with a #! line naming its interpreter, e.g. #!file://python:python")
    try:
        line = first[2:].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad("the #! line is not UTF-8 text") from None
    words = line.split()
    if not words:
        raise bad("the #! line names no interpreter")
    if len(words) > MAX_ARGS:
        raise bad(f"the #! line has {len(words)} words, more than {MAX_ARGS}")
    program = parse_program(words[0], sysimages, "script", own_account)
    if program.in_user_image:
        raise bad("a script's #! line names a system image (file://IMAGE:PATH) or a swift:// program; "
                  "a script has no image of its own")
    name = (program.path or (program.swift.obj if program.swift else "")).rsplit("/", 1)[-1] or "script"
    devices = [Device("script", data=body), Device("stdout"), Device("stderr")]
    if stdin is not None:
        devices.append(Device("stdin", path=stdin))
    elif posted is not None:
        devices.append(Device("stdin", data=posted))
    return [Node(name="script", program=program, args=words[1:] + ["/script"], env={},
                 devices=devices, exec_name=name)]


# -------------------------------------------------------------------- expand
def expand(nodes: list[Node], list_objects: Callable[[SwiftPath], list[str]],
           max_nodes: int = 64) -> list[list[Instance]]:
    """Nodes -> stages of Instances, in the order they must run.

    A node whose readable device has ``*`` becomes one instance per matching
    object (``list_objects`` returns the names that match; any that do not
    are skipped), named name-1, -2...; ``count`` > 1 does the same without
    objects.  A node runs after every node that connects to it; each source's
    stdout becomes its ``/dev/in-<source>``, and the source's
    ``/dev/out/<instance>`` its ``/dev/in/<source>``.  The total of instances
    is checked against ``max_nodes`` before any is built.
    """
    check_fixed_instances(nodes, max_nodes)
    stage = stage_numbers(nodes)
    room = max_nodes - sum(n.count * n.replicate for n in nodes if n.wildcard_device is None)
    objects: dict[str, list[str]] = {}
    for n in nodes:
        wild = n.wildcard_device
        if wild is None or wild.path is None:
            continue
        matching = []
        for obj in list_objects(wild.path):
            if isinstance(obj, str) and wild.path.match(obj) is not None and storable(obj):
                matching.append(obj)
                if len(matching) * n.replicate > room:
                    raise too_many_nodes(f"node {n.name!r}: {wild.path} and the rest of the job make more "
                                         f"instances than zerovm_maxnodes ({max_nodes})")
        if not matching:
            raise JobError(404, f"node {n.name!r}: no object matches {wild.path}")
        room -= len(matching) * n.replicate
        objects[n.name] = matching

    instances: dict[str, list[Instance]] = {}
    for n in nodes:
        wild = n.wildcard_device
        if wild is not None:
            made = [Instance(f"{n.name}-{i}", n, list(n.args), [fill(d, wild, obj) for d in n.devices])
                    for i, obj in enumerate(objects[n.name], start=1)]
        elif n.count > 1:
            made = [Instance(f"{n.name}-{i}", n, list(n.args), [numbered(d, i) for d in n.devices])
                    for i in range(1, n.count + 1)]
        else:
            made = [Instance(n.name, n, list(n.args), list(n.devices))]
        instances[n.name] = made
    for n in nodes:
        for dest in n.connect:
            for target in instances[dest]:
                target.sources += [i.name for i in instances[n.name]]
            for source in instances[n.name]:
                source.targets += [i.name for i in instances[dest]]
    stages: list[list[Instance]] = [[] for _ in range(1 + max(stage.values(), default=-1))]
    for n in nodes:
        stages[stage[n.name]].extend(instances[n.name])
    return stages


def storable(name: str) -> bool:
    """Whether Swift could hold an object of this name: a listing from a
    broken backend is no reason for a 500 further on."""
    try:
        return 0 < len(name.encode("utf-8")) <= MAX_OBJECT_NAME
    except UnicodeEncodeError:
        return False


def fill(device: Device, wild: Device, obj: str) -> Device:
    """The device of one fan-out instance: the matched object for the wildcard
    input, and outputs with the same text in place of their ``*``."""
    if device.path is None or not device.path.wildcard:
        return device
    if device is wild:
        return replace(device, path=SwiftPath(device.path.account, device.path.container, obj))
    matched = wild.path.match(obj) if wild.path is not None else None
    if matched is None:
        raise ValueError(f"{obj!r} does not match {wild.path}")   # expand passes matching names only
    pieces = device.path.obj.split("*")
    filled = pieces[0] + "".join(text + piece for text, piece in zip(matched, pieces[1:]))
    size = len(filled.encode("utf-8"))
    if size > MAX_OBJECT_NAME:
        raise bad(f"{device.name} path filled from {obj!r:.80} would be {size} bytes, "
                  f"more than Swift's limit of {MAX_OBJECT_NAME}")
    return replace(device, path=SwiftPath(device.path.account, device.path.container, filled))


def numbered(device: Device, number: int) -> Device:
    """The device of instance ``number`` of a node with a count: an output's
    ``*`` is the number (ZeroCloud's rule); anything else as it is."""
    if device.path is None or not device.path.wildcard:
        return device
    return replace(device, path=replace(device.path, obj=device.path.obj.replace("*", str(number))))


# -------------------------------------------------------------------- budget
class Budget:
    """Bytes one job may make the proxy hold, counted as they arrive.

    take() refuses (413, the budget's reason) the piece that would go over;
    give_back() returns what was taken for data thrown away (a failed read,
    a replica that is tried again)."""

    def __init__(self, limit: int, reason: str):
        self.limit = limit
        self.reason = reason
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise JobError(413, self.reason)
        self.used += n

    def give_back(self, n: int) -> None:
        self.used = max(0, self.used - n)


def collect(chunks: Iterable[bytes], limit: int, budget: Budget | None = None) -> bytes | None:
    """The chunks joined, or None once they are more than ``limit`` bytes;
    every chunk kept is taken from ``budget`` (JobError 413 when it runs out).
    On None or an exception what was taken is given back: nothing is kept."""
    budget = budget if budget is not None else Budget(limit, "")
    kept: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                budget.give_back(size - len(chunk))
                return None
            budget.take(len(chunk))
            kept.append(chunk)
    except BaseException:
        budget.give_back(sum(map(len, kept)))
        raise
    return b"".join(kept)


# -------------------------------------------------------------------- listing
def listing_names(body: bytes) -> list[str] | None:
    """The object names of one page of a JSON container listing, in order, or
    None when the body is not such a listing (a broken backend, not the
    caller's doing).  Entries without a name Swift could store are left out."""
    try:
        page = json.loads(body or b"[]")
    except (ValueError, RecursionError):
        return None
    if not isinstance(page, list):
        return None
    return [e["name"] for e in page if isinstance(e, dict) and isinstance(e.get("name"), str) and storable(e["name"])]
