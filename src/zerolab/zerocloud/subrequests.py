"""What the proxy filter reads and writes in Swift for a job, as the caller.

Before a node runs, the caller is authorized for each swift:// object it
reads where it is stored (its program and its colocated input) the way
Swift's object controller authorizes a GET: the container's read ACL (its
info, cached in the request and in memcache) set as ``req.acl`` on a GET
subrequest for the object, handed to the auth middleware's
``swift.authorize`` (authorize_read).  No request leaves the proxy for it
once the container's info is cached.

Every object a job touches also goes through the rest of the proxy pipeline
as a subrequest with the caller's identity (``make_subrequest`` keeps the
auth environment), so tempauth or keystone answers 401/403, never data: a
HEAD for each object a node reads where it is stored (check_readable: it
must exist, and be a plain object), a GET for programs and inputs sent
along, a paged listing for wildcards, a PUT for each output with a swift://
path (its body read from the output's spool as the rest of the pipeline
asks for it, never held whole).  The bytes fetched count against the job's
input budget (JobCost); programs are also kept in a small cache shared by
jobs, the last version seen of each (cached_program).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from swift.common.http import is_success
from swift.common.swob import Request, Response
from swift.common.wsgi import make_subrequest
from swift.proxy.controllers.base import get_container_info

from . import job as jobs
from .job import JobError, SwiftPath
from .proxy_config import ProxyConfig

# A container listing is read this many names a page: its body stays a few MiB
# even when every name is 1024 bytes of escaped characters.
LISTING_PAGE = 1000
LISTING_PAGE_BYTES = 16 << 20
PROGRAM_CACHE = 32
# What a job fetched is kept by kind, path and (for programs) etag.
FetchKey = tuple[str, ...]


class Readable(Protocol):
    """A request body to stream: what a WSGI app reads of wsgi.input."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Program:
    """A swift:// program's bytes and the etag Swift gave them ("" when it gave none)."""

    etag: str
    data: bytes


class JobCost:
    """What one job holds in this proxy: its budgets, and the objects it fetched."""

    def __init__(self, max_input: int, max_output: int):
        self.inputs = jobs.Budget(max_input, f"programs and inputs this job has the proxy fetch exceed "
                                             f"zerovm_maxjobinput ({max_input} bytes)")
        self.outputs = jobs.Budget(max_output, f"outputs of this job exceed zerovm_maxjoboutput "
                                               f"({max_output} bytes)")
        self.fetched: dict[FetchKey, bytes] = {}


def raise_for_read(resp: Response, method: str, path: SwiftPath, what: str) -> None:
    """A failed read of a job's object, as the 4xx (or 503) the caller gets."""
    if resp.status_int in (401, 403):
        raise JobError(resp.status_int, f"{what}: not allowed to read {path} ({resp.status})")
    if resp.status_int == 404:
        raise JobError(404, f"{what}: {path} not found")
    if not is_success(resp.status_int):
        raise JobError(resp.status_int if resp.status_int < 500 else 503,
                       f"{what}: {method} {path} failed: {resp.status}")


def etag_of(resp: Response) -> str:
    return str(resp.headers.get("Etag") or "")


def object_url(path: SwiftPath, query: str = "") -> str:
    url = "/v1/" + "/".join(quote(p) for p in (path.account, path.container, path.obj) if p)
    return url + "?" + query if query else url


def wsgi_str(text: str) -> str:
    """A native string as a WSGI environ holds it (UTF-8 bytes read as Latin-1),
    which is how Swift's get_container_info reads PATH_INFO."""
    return text.encode("utf-8").decode("latin-1")


def content_type(head: Response) -> str:
    """An object's type as its HEAD gives it, without parameters."""
    return str(head.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def refuse_unless_plain(head: Response, path: SwiftPath, what: str) -> None:
    """JobError unless an object's HEAD says the caller may read it and it is
    a plain object (not a large object manifest or a symlink, whose data are
    elsewhere)."""
    raise_for_read(head, "HEAD", path, what)
    if any(h in head.headers for h in ("X-Static-Large-Object", "X-Object-Manifest", "Content-Location")):
        raise JobError(400, f"{what}: {path} is a large object or symlink; jobs read plain objects")


def body_of(resp: Response, limit: int, budget: jobs.Budget | None = None) -> bytes | None:
    """A subrequest's body, or None when it is more than ``limit`` bytes: read
    in the pieces it streams in, never more than limit + one piece."""
    if resp.content_length is not None and resp.content_length > limit:
        close(resp.app_iter)
        return None
    chunks: Iterable[bytes] = resp.app_iter if resp.app_iter is not None else [resp.body]
    try:
        return jobs.collect(chunks, limit, budget)
    finally:
        close(resp.app_iter)


def close(app_iter: object) -> None:
    closer = getattr(app_iter, "close", None)
    if closer is not None:
        closer()


class CallerSubrequests:
    """Subrequests through the rest of the pipeline (``app``), as the caller of ``req``."""

    def __init__(self, app: object, config: ProxyConfig):
        self.app = app
        self.config = config
        # Compiled elsewhere, but fetched here: programs by (path, etag).
        self.programs: OrderedDict[FetchKey, bytes] = OrderedDict()

    def sub(self, req: Request, method: str, path: SwiftPath, body: Readable | None = None, length: int = 0,
            headers: Mapping[str, str] | None = None, query: str = "") -> Response:
        """A subrequest through the rest of the pipeline, as the caller;
        ``body``, if any, is its wsgi.input, ``length`` bytes long."""
        sub = make_subrequest(req.environ, method=method, path=object_url(path, query), headers=headers,
                              agent="%(orig)s zerocloud", swift_source="ZC")
        if body is not None:
            # Always with its length, 0 included: a PUT without one is 411.
            sub.environ["wsgi.input"] = body
            sub.environ["CONTENT_LENGTH"] = str(length)
        return sub.get_response(self.app)

    def container_info(self, req: Request, path: SwiftPath) -> dict[str, Any]:
        """Swift's info on path's container, from the request's infocache or
        memcache when there (get_container_info bypasses auth: it says
        nothing about the caller's access)."""
        # One infocache for every lookup of this job, as Swift's controllers
        # share one per request.
        req.environ.setdefault("swift.infocache", {})
        env = dict(req.environ, PATH_INFO=wsgi_str(f"/v1/{path.account}/{path.container}"))
        info: dict[str, Any] = get_container_info(env, self.app, swift_source="ZC")
        return info

    def authorize_read(self, req: Request, path: SwiftPath, what: str) -> None:
        """JobError (the auth middleware's 401/403) unless the caller may GET
        path, decided as Swift's object controller decides a GET: the
        container's read ACL as ``req.acl`` of a GET for the object, asked of
        ``swift.authorize``.  Without swift.authorize (no auth middleware, or
        one that stood aside for ``swift.authorize_override``) Swift lets the
        GET through, and so does this.  Then a container that does not exist
        is a 404, told only to a caller who may read it (to anyone else Swift
        answers the refusal, and so does this)."""
        info = self.container_info(req, path)
        authorize = req.environ.get("swift.authorize")
        if authorize is not None:
            sub = make_subrequest(req.environ, method="GET", path=object_url(path),
                                  agent="%(orig)s zerocloud", swift_source="ZC")
            sub.acl = info.get("read_acl")
            denied = authorize(sub)
            if denied:
                raise_for_read(denied, "GET", path, what)
                raise JobError(403, f"{what}: not allowed to read {path} ({denied.status})")
        if info.get("status") == 404:
            raise JobError(404, f"{what}: {path} not found")

    def check_readable(self, req: Request, path: SwiftPath, what: str) -> Response:
        """The object's HEAD, as the caller: JobError unless it is there, the
        caller may read it and it is a plain object."""
        resp = self.sub(req, "HEAD", path)
        refuse_unless_plain(resp, path, what)
        return resp

    def fetch(self, req: Request, path: SwiftPath, what: str, limit: int, option: str,
              budget: jobs.Budget) -> bytes:
        """An object's bytes, at most ``limit`` (the option that sets it named
        in the 413), taken from the job's input budget as they arrive."""
        resp = self.sub(req, "GET", path)
        raise_for_read(resp, "GET", path, what)
        data = body_of(resp, limit, budget)
        if data is None:
            raise JobError(413, f"{what}: {path} is more than {option} ({limit} bytes)")
        return data

    def fetch_source(self, req: Request, cost: JobCost, path: SwiftPath, what: str, limit: int,
                     option: str) -> tuple[bytes, str]:
        """What a job comes from when it is not the request's body (an
        X-Zerovm-Source, an app or a template a GET runs): its bytes, taken
        from the job's input budget, and its content type.  The GET goes
        through the pipeline as the caller, so Swift's own ACL check decides."""
        resp = self.sub(req, "GET", path)
        raise_for_read(resp, "GET", path, what)
        data = body_of(resp, limit, cost.inputs)
        if data is None:
            raise JobError(413, f"{what}: {path} is more than {option} ({limit} bytes)")
        return data, str(resp.headers.get("Content-Type") or "")

    def fetch_input(self, req: Request, cost: JobCost, path: SwiftPath, what: str) -> bytes:
        """An input sent along with the node: fetched once per job, however
        many instances read it."""
        key = ("input", str(path))
        data = cost.fetched.get(key)
        if data is None:
            data = self.fetch(req, path, what, self.config.max_input, "zerovm_maxinput", cost.inputs)
            cost.fetched[key] = data
        return data

    def program(self, req: Request, cost: JobCost, path: SwiftPath, what: str) -> Program:
        """A swift:// program checked before it runs: HEAD (access, a plain
        object), then GET unless the cache has the bytes of that etag."""
        head = self.check_readable(req, path, what)
        etag = etag_of(head)
        key = ("program", str(path), etag)
        data = cost.fetched.get(key)
        if data is not None:
            return Program(etag, data)
        data = self.programs.get(key) if etag else None
        if data is None:
            resp = self.sub(req, "GET", path)
            raise_for_read(resp, "GET", path, what)
            data = body_of(resp, self.config.max_nexe, cost.inputs)
            if data is None:
                raise JobError(413, f"{what}: {path} is more than zerovm_maxnexe ({self.config.max_nexe} bytes)")
            # The GET's etag is the one of these bytes, should the object
            # have changed since the HEAD.
            etag = etag_of(resp) or etag
            key = ("program", str(path), etag)
            self.cache_program(path, Program(etag, data))
        else:
            cost.inputs.take(len(data))   # held by this job too, cached or not
            self.programs.move_to_end(key)
        cost.fetched[key] = data
        return Program(etag, data)

    def cache_program(self, path: SwiftPath, program: Program) -> None:
        """Keeps the last version seen of each program (one with an etag:
        the cache's bytes are run before their HEAD, which must then agree)."""
        if not program.etag:
            return
        for key in [k for k in self.programs if k[1] == str(path)]:
            del self.programs[key]
        self.programs[("program", str(path), program.etag)] = program.data
        # Bounded in count and in bytes: a user who uploads large programs
        # cannot make the cache hold 32 x zerovm_maxnexe.
        max_nexe = self.config.max_nexe
        while len(self.programs) > PROGRAM_CACHE or (
                len(self.programs) > 1 and sum(map(len, self.programs.values())) > 4 * max_nexe):
            self.programs.popitem(last=False)

    def cached_program(self, path: SwiftPath) -> Program | None:
        """The last version of path's program this proxy fetched, if it still
        holds it.  Not checked against anything: whoever runs it must have
        authorized the caller and must have its HEAD agree before using the
        result."""
        for (_, cached_path, etag), data in self.programs.items():
            if cached_path == str(path):
                return Program(etag, data)
        return None

    def take_program(self, cost: JobCost, path: SwiftPath, program: Program) -> None:
        """A cached program's bytes counted against the job's input budget,
        once per job like a fetched one."""
        key = ("program", str(path), program.etag)
        if key not in cost.fetched:
            cost.inputs.take(len(program.data))
            cost.fetched[key] = program.data

    def list_objects(self, req: Request, path: SwiftPath) -> list[str]:
        """Objects of path's container that match its wildcard, listed as the
        caller: at most zerovm_max_listing names scanned, zerovm_maxnodes kept."""
        container = f"swift://{path.account}/{path.container}"
        max_listing, max_nodes = self.config.max_listing, self.config.max_nodes
        names: list[str] = []
        scanned = 0
        marker = ""
        while True:
            query = f"format=json&limit={LISTING_PAGE}&prefix={quote(path.prefix)}&marker={quote(marker)}"
            resp = self.sub(req, "GET", SwiftPath(path.account, path.container, ""), query=query)
            if resp.status_int in (401, 403):
                raise JobError(resp.status_int, f"not allowed to list {container}")
            if resp.status_int == 404:
                raise JobError(404, f"container {container} not found")
            if not is_success(resp.status_int):
                raise JobError(503, f"listing {container} failed: {resp.status}")
            if resp.status_int == 204:
                break
            body = body_of(resp, LISTING_PAGE_BYTES)
            page = jobs.listing_names(body) if body is not None else None
            if page is None:   # the container server's doing, not the caller's
                raise JobError(503, f"listing {container} returned a body that is not a JSON listing")
            scanned += len(page)
            if scanned > max_listing:
                raise JobError(413, f"{path}: more than zerovm_max_listing ({max_listing}) names to scan; "
                                    f"put a longer literal prefix before the first *")
            names += [name for name in page if path.match(name) is not None]
            if len(names) > max_nodes:
                raise JobError(413, f"{path} matches more than zerovm_maxnodes ({max_nodes}) objects")
            # A short page is the last; a marker that does not move on would list the same page forever.
            if len(page) < LISTING_PAGE or page[-1] <= marker:
                break
            marker = page[-1]
        return names

    def store(self, req: Request, path: SwiftPath, body: Readable, length: int, content_type: str | None,
              meta: Mapping[str, str] | None = None) -> Response:
        """Writes one output (``length`` bytes read from ``body`` as they are
        sent on), as the caller, with the device's ``meta`` as X-Object-Meta-*
        headers: the response says whether it could."""
        headers = {"Content-Type": content_type or self.config.default_content_type,
                   **{f"X-Object-Meta-{name}": value for name, value in (meta or {}).items()}}
        return self.sub(req, "PUT", path, body=body, length=length, headers=headers)
