"""Where the middleware parses a job: ZeroCloud's JSON job description (a list
of nodes, doc/Servlets.md in zerovm/zerocloud) or a POSTed ``#!`` script.

Pure Python, no Swift: parse() and parse_script() turn request bodies into
Node objects or raise JobError (an HTTP status and a one-line reason);
expand() turns Nodes into the Instances that run, given the object names a
wildcard matched.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

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
NODE_KEYS = {"name", "exec", "devices", "file_list", "count", "connect", "replicate", "attach",
             "location"}
EXEC_KEYS = {"path", "name", "args", "env"}
DEVICE_KEYS = {"name", "device", "path", "content_type", "meta", "mode", "min_size"}
NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
CONNECT_PREFIX = "/dev/in-"


class JobError(Exception):
    """A job that cannot run: ``status`` is the HTTP status, str() the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def bad(reason: str) -> JobError:
    return JobError(400, reason)


@dataclass(frozen=True)
class SwiftPath:
    """swift://account/container/object (object may contain / and *)."""

    account: str
    container: str
    obj: str

    @classmethod
    def parse(cls, text: str, what: str) -> "SwiftPath":
        if not text.startswith("swift://"):
            raise bad(f"{what}: {text!r} is not a swift://account/container/object path")
        parts = text[len("swift://"):].split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise bad(f"{what}: {text!r} must name an object: swift://account/container/object")
        if "*" in parts[0] or "*" in parts[1]:
            raise bad(f"{what}: wildcards are only allowed in the object name: {text!r}")
        return cls(*parts)

    @property
    def wildcard(self) -> bool:
        return "*" in self.obj

    def matcher(self) -> re.Pattern:
        return re.compile("^" + ".*".join(re.escape(p) for p in self.obj.split("*")) + "$")

    @property
    def prefix(self) -> str:
        """The literal part before the first ``*`` (a listing prefix)."""
        return self.obj.split("*", 1)[0]

    def __str__(self) -> str:
        return f"swift://{self.account}/{self.container}/{self.obj}"


@dataclass(frozen=True)
class Program:
    """What a node executes: a wasm object in Swift, or a file in a system image."""

    swift: Optional[SwiftPath] = None
    image: Optional[str] = None      # system image name (file://IMAGE:PATH)
    path: Optional[str] = None       # member path inside that image

    def __str__(self) -> str:
        return str(self.swift) if self.swift else f"file://{self.image}:{self.path}"


def parse_program(text, sysimages: set[str], what: str) -> Program:
    if not isinstance(text, str) or not text:
        raise bad(f"{what}: exec.path must be a non-empty string")
    if text.startswith("swift://"):
        path = SwiftPath.parse(text, what)
        if path.wildcard:
            raise bad(f"{what}: exec.path cannot contain a wildcard")
        return Program(swift=path)
    if text.startswith("file://"):
        rest = text[len("file://"):]
        image, sep, member = rest.partition(":")
        if not sep or not image or not member:
            raise bad(f"{what}: {text!r}: use file://IMAGE:PATH with a system image name")
        if image not in sysimages:
            known = ", ".join(sorted(sysimages)) or "none configured"
            raise bad(f"{what}: unknown system image {image!r} (known: {known})")
        return Program(image=image, path=member.lstrip("/"))
    raise bad(f"{what}: exec.path {text!r} must be swift://... or file://IMAGE:PATH")


@dataclass
class Device:
    name: str
    path: Optional[SwiftPath] = None
    content_type: Optional[str] = None
    data: Optional[bytes] = None     # a readable device filled from the request (script POST)

    @property
    def alias(self) -> str:
        return DEVICE_ALIASES[self.name]


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
    exec_name: Optional[str] = None

    def device(self, name: str) -> Optional[Device]:
        for d in self.devices:
            if d.name == name:
                return d
        return None

    @property
    def wildcard_device(self) -> Optional[Device]:
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
    sources: list[str] = field(default_factory=list)   # instances whose stdout feeds us

    @property
    def colocate(self) -> Optional[Device]:
        """The device whose object this instance should run next to."""
        for name in COLOCATING:
            d = next((d for d in self.devices if d.name == name), None)
            if d is not None and d.path is not None:
                return d
        return None

    def readable(self) -> list[Device]:
        return [d for d in self.devices if d.name in READABLE]

    def writable(self) -> list[Device]:
        return [d for d in self.devices if d.name in WRITABLE]


# --------------------------------------------------------------------- parse
def parse(body: bytes, sysimages: set[str], max_nodes: int = 64) -> list[Node]:
    """A JSON job description -> its nodes, validated.  Raises JobError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("job description is not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"job description is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if isinstance(doc, dict):
        doc = [doc]   # ZeroCloud accepted a single node too
    if not isinstance(doc, list) or not doc:
        raise bad("job description must be a non-empty JSON list of nodes")
    if len(doc) > max_nodes:
        raise JobError(413, f"job has {len(doc)} nodes, more than the limit of {max_nodes}")
    nodes = [parse_node(n, i, sysimages) for i, n in enumerate(doc)]
    names = [n.name for n in nodes]
    for name in names:
        if names.count(name) > 1:
            raise bad(f"node name {name!r} is used more than once")
    check_connections(nodes)
    return nodes


def parse_node(raw, index: int, sysimages: set[str]) -> Node:
    where = f"node {index + 1}"
    if not isinstance(raw, dict):
        raise bad(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - NODE_KEYS)
    if unknown:
        raise bad(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise bad(f"{where}: name must be 1-64 letters, digits or _ (got {name!r})")
    where = f"node {name!r}"
    if raw.get("replicate", 1) != 1:
        raise bad(f"{where}: replicate other than 1 is not supported")
    ex = raw.get("exec")
    if not isinstance(ex, dict):
        raise bad(f"{where}: exec must be an object with a path")
    unknown = sorted(set(ex) - EXEC_KEYS)
    if unknown:
        raise bad(f"{where}: unknown exec key(s) {', '.join(unknown)}")
    program = parse_program(ex.get("path"), sysimages, where)
    args = ex.get("args", "")
    if isinstance(args, list) and all(isinstance(a, str) for a in args):
        arg_list = list(args)
    elif isinstance(args, str):
        try:
            arg_list = shlex.split(args)
        except ValueError as e:
            raise bad(f"{where}: exec.args: {e}") from None
    else:
        raise bad(f"{where}: exec.args must be a string (a command line)")
    env = ex.get("env", {})
    if not isinstance(env, dict):
        raise bad(f"{where}: exec.env must be an object of strings")
    for k, v in env.items():
        if not ENV_KEY.match(k) or not isinstance(v, str):
            raise bad(f"{where}: exec.env entry {k!r} needs an identifier name and a string value")
    exec_name = ex.get("name")
    if exec_name is not None and not isinstance(exec_name, str):
        raise bad(f"{where}: exec.name must be a string")

    raw_devices = raw.get("devices", raw.get("file_list", []))
    if not isinstance(raw_devices, list):
        raise bad(f"{where}: devices must be a list")
    devices = []
    for d in raw_devices:
        devices.append(parse_device(d, where))
    seen = [d.name for d in devices]
    for dname in seen:
        if seen.count(dname) > 1:
            raise bad(f"{where}: device {dname!r} is declared twice")
    wild = [d for d in devices if d.path is not None and d.path.wildcard]
    wild_readable = [d for d in wild if d.name in READABLE]
    if len(wild_readable) > 1:
        raise bad(f"{where}: only one readable device may have a wildcard")
    if any(d.name in ("image", "script") for d in wild_readable):
        raise bad(f"{where}: image and script devices cannot have wildcards")
    if wild and not wild_readable:
        raise bad(f"{where}: a wildcard in an output path needs a wildcard input to fill it")
    for d in wild:
        if d.name in WRITABLE and d.path.obj.count("*") != wild_readable[0].path.obj.count("*"):
            raise bad(f"{where}: {d.name} path must have as many * as {wild_readable[0].name}'s")

    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise bad(f"{where}: count must be a positive integer")
    connect = raw.get("connect", [])
    if not isinstance(connect, list) or not all(isinstance(c, str) for c in connect):
        raise bad(f"{where}: connect must be a list of node names")
    return Node(name=name, program=program, args=arg_list, env=dict(env), devices=devices,
                count=count, connect=list(connect), exec_name=exec_name)


def parse_device(raw, where: str) -> Device:
    if not isinstance(raw, dict):
        raise bad(f"{where}: each device must be a JSON object")
    unknown = sorted(set(raw) - DEVICE_KEYS)
    if unknown:
        raise bad(f"{where}: unknown device key(s) {', '.join(unknown)}")
    name = raw.get("name", raw.get("device"))
    if name == "debug":
        raise bad(f"{where}: the debug (network) device is not supported")
    if name not in DEVICE_ALIASES:
        raise bad(f"{where}: unknown device {name!r} (allowed: {', '.join(DEVICE_ALIASES)})")
    path = raw.get("path")
    if path is not None:
        if not isinstance(path, str):
            raise bad(f"{where}: device {name} path must be a string")
        path = SwiftPath.parse(path, f"{where} device {name}")
    elif name in READABLE:
        raise bad(f"{where}: device {name} is readable and needs a swift:// path")
    ctype = raw.get("content_type")
    if ctype is not None and (not isinstance(ctype, str) or "\n" in ctype or "\r" in ctype):
        raise bad(f"{where}: device {name} content_type must be a one-line string")
    return Device(name=name, path=path, content_type=ctype)


def check_connections(nodes: list[Node]) -> None:
    """connect feeds a node's stdout to other nodes (MapReduce).  Without
    network channels, the data flows forward only: no cycles, and each
    destination is a single node."""
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for dest in n.connect:
            if dest not in by_name:
                raise bad(f"node {n.name!r} connects to unknown node {dest!r}")
            if dest == n.name:
                raise bad(f"node {n.name!r} connects to itself; only forward connections are supported")
            target = by_name[dest]
            if target.count != 1 or target.wildcard_device is not None:
                raise bad(f"node {n.name!r} connects to {dest!r}, which has several instances; "
                          f"a connect destination must be a single node")
            out = n.device("stdout")
            if out is not None and out.path is not None:
                raise bad(f"node {n.name!r} sends its stdout to {dest!r}; its stdout cannot also have a path")
    # cycle check: depth-first over connect edges
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 1:
            raise bad(f"connect forms a cycle: {' -> '.join(trail + [name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for dest in by_name[name].connect:
            visit(dest, trail + [name])
        state[name] = 2

    for n in nodes:
        visit(n.name, [])


# -------------------------------------------------------------------- script
def parse_script(body: bytes, sysimages: set[str], stdin: Optional[SwiftPath] = None) -> list[Node]:
    """A POSTed script whose first line is ``#!file://IMAGE:PATH [args]`` (or
    ``#!swift://...``): one node running the interpreter on ``/script``, with
    the object as stdin when the POST went to an object."""
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
    program = parse_program(words[0], sysimages, "script")
    name = (program.path or program.swift.obj).rsplit("/", 1)[-1] or "script"
    devices = [Device("script", data=body), Device("stdout"), Device("stderr")]
    if stdin is not None:
        devices.append(Device("stdin", path=stdin))
    return [Node(name="script", program=program, args=words[1:] + ["/script"], env={},
                 devices=devices, exec_name=name)]


# -------------------------------------------------------------------- expand
def expand(nodes: list[Node], list_objects: Callable[[SwiftPath], list[str]],
           max_nodes: int = 64) -> list[list[Instance]]:
    """Nodes -> stages of Instances, in the order they must run.

    A node whose readable device has ``*`` becomes one instance per matching
    object (``list_objects`` returns the names that match), named name-1, -2...;
    ``count`` > 1 does the same without objects.  A node runs after every node
    that connects to it; each source's stdout becomes its ``/dev/in-<source>``.
    """
    instances: dict[str, list[Instance]] = {}
    total = 0
    for n in nodes:
        wild = n.wildcard_device
        made = []
        if wild is not None:
            names = list_objects(wild.path)
            if not names:
                raise JobError(404, f"node {n.name!r}: no object matches {wild.path}")
            pattern = wild.path.matcher()
            for i, obj in enumerate(names, start=1):
                parts = pattern.match(obj)
                if parts is None:   # the lister returned something the pattern does not match
                    raise JobError(500, f"node {n.name!r}: listing returned {obj!r}")
                made.append(Instance(f"{n.name}-{i}", n, list(n.args),
                                     [fill(d, wild, obj) for d in n.devices]))
        elif n.count > 1:
            made = [Instance(f"{n.name}-{i}", n, list(n.args), list(n.devices))
                    for i in range(1, n.count + 1)]
        else:
            made = [Instance(n.name, n, list(n.args), list(n.devices))]
        total += len(made)
        if total > max_nodes:
            raise JobError(413, f"job expands to more than {max_nodes} nodes")
        instances[n.name] = made
    for n in nodes:
        for dest in n.connect:
            for target in instances[dest]:
                target.sources += [i.name for i in instances[n.name]]
    # stages: a node's stage is one more than its deepest source's
    depth: dict[str, int] = {}

    def stage_of(name: str) -> int:
        if name not in depth:
            sources = [m.name for m in nodes if name in m.connect]
            depth[name] = 1 + max((stage_of(s) for s in sources), default=-1)
        return depth[name]

    stages: list[list[Instance]] = []
    for n in nodes:
        s = stage_of(n.name)
        while len(stages) <= s:
            stages.append([])
        stages[s].extend(instances[n.name])
    return stages


def fill(device: Device, wild: Device, obj: str) -> Device:
    """The device of one fan-out instance: the matched object for the wildcard
    input, and outputs with the same text in place of their ``*``."""
    if device.path is None or not device.path.wildcard:
        return device
    if device is wild:
        return Device(device.name, SwiftPath(device.path.account, device.path.container, obj),
                      device.content_type)
    matched = stars(wild.path.obj, obj)
    pieces = device.path.obj.split("*")
    filled = pieces[0]
    for text, piece in zip(matched, pieces[1:]):
        filled += text + piece
    return Device(device.name, SwiftPath(device.path.account, device.path.container, filled),
                  device.content_type)


def stars(pattern: str, obj: str) -> list[str]:
    """The texts each ``*`` of ``pattern`` matched in ``obj``."""
    regex = "^" + "(.*)".join(re.escape(p) for p in pattern.split("*")) + "$"
    m = re.match(regex, obj)
    return list(m.groups()) if m else []
