"""App packages and GET templates: what ZeroCloud ran besides a job description.

Pure Python, no Swift, like job.py: the proxy filter hands these the bytes it
read (a POST body, an object fetched as the caller) and gets back a job
description to parse, or a JobError (an HTTP status and one line).

* An **app** (ZeroCloud's zapp, zpm's bundle) is a tar, gzipped or not, whose
  ``boot/system.map`` is its job description.  The tar is the user image of
  every node: mounted at ``/``, and ``file://image:PATH`` (or
  ``file://PATH``) runs a program inside it.
* A **GET template** (ZeroCloud's open/1.0 registry) is a job description
  stored at ``/v1/<account>/.zvm/<content-type>/config`` with variables
  ``{.name=default}`` filled from the GET's query string, and
  ``{.object_path}`` with the object's ``swift://`` URL.  A template read
  is kept for a while (TemplateCache), as ZeroCloud kept it.

Both are hostile input.  An app is read in memory once, in one pass, and is
never unpacked to disk here: decompression stops at the size limit (a gzip
bomb is a 413 after that many bytes, not before it fills the memory), and
tarfile's errors of any kind are a 400.  A template is filled by one linear
scan; every value goes in JSON-escaped (a query string cannot add keys or
nodes to the job, only text inside the strings the template put it in), and
the filled text stops at the size limit too.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .job import JobError

SYSTEM_MAP = "boot/system.map"
TAR_TYPES = ("application/x-tar", "application/x-gtar", "application/x-ustar",
             "application/gzip", "application/x-gzip")
JSON_TYPES = ("application/json",)
# WebAssembly programs, and ZeroVM's own type for them, run on a GET (open/1.0).
PROGRAM_TYPES = ("application/wasm", "application/x-nexe")
GZIP_MAGIC = b"\x1f\x8b"
USTAR_MAGIC = b"ustar"
USTAR_OFFSET = 257
# Where an account keeps its GET templates (ZeroCloud's zerovm_registry_path).
REGISTRY_CONTAINER = ".zvm"
# {.name} or {.name=default}: no nesting.  The default stops at the next
# brace of either kind, so a failed match never scans past where the next
# one starts: linear, where "[^}]*" made "{.a={.a={.a=..." quadratic.
VARIABLE = re.compile(r"\{\.([A-Za-z0-9_-]{1,128})(?:=([^{}]*))?\}")
OBJECT_PATH = "object_path"
# The members read before boot/system.map must have turned up: each costs
# tarfile a header parse (120,000 empty members took seconds of the proxy's
# only thread).
MAX_MEMBERS = 4096
# The templates one proxy worker keeps (each at most zerovm_maxconfig bytes).
TEMPLATE_CACHE_ENTRIES = 256
# tarfile raises these (and only these, as fuzzed) on a broken archive.
TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, UnicodeError, OverflowError, zlib.error)


@dataclass(frozen=True)
class App:
    """An app's job description and the tar its nodes mount (uncompressed)."""

    system_map: bytes
    image: bytes


def kind_of(data: bytes, content_type: str) -> str:
    """"app", "job" or "script": by the content type when it says, else by
    the bytes (an object uploaded without a type is often
    application/octet-stream)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in JSON_TYPES:
        return "job"
    if ctype in TAR_TYPES or looks_like_tar(data):
        return "app"
    return "script"


def looks_like_tar(data: bytes) -> bool:
    return data.startswith(GZIP_MAGIC) or data[USTAR_OFFSET:USTAR_OFFSET + len(USTAR_MAGIC)] == USTAR_MAGIC


def gunzip(data: bytes, max_size: int) -> bytes:
    """The tar inside a gzip stream, at most ``max_size`` bytes of it."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        tar = inflate.decompress(data, max_size + 1)
    except zlib.error as e:
        raise JobError(400, f"the app is not a readable gzip stream ({e})") from None
    if len(tar) > max_size:
        raise JobError(413, f"the app unpacks to more than zerovm_maxnexe ({max_size} bytes)")
    if not inflate.eof:
        raise JobError(400, "the app's gzip stream is cut short")
    return tar


def read_app(data: bytes, max_size: int, max_map: int) -> App:
    """An app's ``boot/system.map`` (at most ``max_map`` bytes) and its tar
    (at most ``max_size`` bytes once unpacked)."""
    tar = gunzip(data, max_size) if data.startswith(GZIP_MAGIC) else data
    if len(tar) > max_size:
        raise JobError(413, f"the app is more than zerovm_maxnexe ({max_size} bytes)")
    try:
        with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
            offset = -1
            for number, member in enumerate(archive, start=1):
                if number > MAX_MEMBERS:
                    raise JobError(400, f"the app has no {SYSTEM_MAP} among its first {MAX_MEMBERS} members: "
                                        f"put it first (zerolab-app bundle does)")
                if archive.offset <= offset:
                    # Each member moves on; one that does not is a loop (CVE-2025-8194).
                    raise JobError(400, "the app is not a readable tar (a member's size loops back)")
                offset = archive.offset
                if member.name.removeprefix("./") != SYSTEM_MAP:
                    continue
                if not member.isfile():
                    raise JobError(400, f"the app's {SYSTEM_MAP} is not a regular file")
                if member.size > max_map:
                    raise JobError(413, f"the app's {SYSTEM_MAP} is {member.size} bytes, more than "
                                        f"zerovm_maxconfig ({max_map})")
                content = archive.extractfile(member)
                assert content is not None   # a regular file has content
                return App(content.read(), tar)
    except TAR_ERRORS as e:
        raise JobError(400, f"the app is not a readable tar ({type(e).__name__})") from None
    raise JobError(400, f"the app has no {SYSTEM_MAP}: put its JSON job description there")


def fill_template(template: bytes, params: Mapping[str, str], object_url: str, max_size: int) -> bytes:
    """A GET template with its variables filled: ``{.object_path}`` is the
    object's URL, ``{.name=default}`` the query's ``name`` or the default
    (nothing when there is none).  Values are JSON-escaped, so they stay
    inside the string the template put them in."""
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        raise JobError(400, "the GET template is not UTF-8 text") from None
    size = len(text)

    def value(match: re.Match[str]) -> str:
        nonlocal size
        name, default = match.group(1), match.group(2) or ""
        filled = object_url if name == OBJECT_PATH else params.get(name, default)
        escaped = json.dumps(filled, ensure_ascii=False)[1:-1]
        size += len(escaped) - len(match.group(0))
        if size > max_size:
            raise JobError(413, f"the filled GET template is more than zerovm_maxconfig ({max_size} bytes); "
                                f"shorten the query string")
        return escaped

    return VARIABLE.sub(value, text).encode("utf-8")


def template_path(content_type: str) -> str | None:
    """The registry object for a content type (``type/subtype/config``), or
    None for a type that cannot name one."""
    ctype = content_type.split(";")[0].strip().lower()
    kind, sep, sub = ctype.partition("/")
    if not sep or not re.fullmatch(r"[a-z0-9!#$&^_.+-]{1,127}", kind) \
            or not re.fullmatch(r"[a-z0-9!#$&^_.+-]{1,127}", sub):
        return None
    return f"{kind}/{sub}/config"


class TemplateCache:
    """The GET templates this proxy worker read, by registry path, each kept
    ``seconds`` after it was read (ZeroCloud kept them 60 s in memcache): a
    template replaced or removed meanwhile still runs until then, and a GET
    execution saves the template's subrequest.  Only templates that were
    there are kept: one put where a GET found none is used at once.  At
    most ``entries``, the least recently used dropped first; 0 seconds keeps
    none."""

    def __init__(self, seconds: float, entries: int = TEMPLATE_CACHE_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.entries = entries
        self.clock = clock
        self.kept: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, path: str) -> bytes | None:
        found = self.kept.get(path)
        if found is None:
            return None
        expires, template = found
        if self.clock() >= expires:
            del self.kept[path]
            return None
        self.kept.move_to_end(path)
        return template

    def put(self, path: str, template: bytes) -> None:
        if self.seconds <= 0:
            return
        self.kept[path] = (self.clock() + self.seconds, template)
        self.kept.move_to_end(path)
        while len(self.kept) > self.entries:
            self.kept.popitem(last=False)
