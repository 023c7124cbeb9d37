"""What the proxy filter reads and writes in Swift for a job, as the caller.

Every object a job touches goes through the rest of the proxy pipeline as a
subrequest with the caller's identity (``make_subrequest`` keeps the auth
environment), so tempauth or keystone answers 401/403, never data: a HEAD
for each object a node reads where it is stored, a GET for programs and
inputs sent along, a paged listing for wildcards, a PUT for each output
with a swift:// path (its body read from the output's spool as the rest of
the pipeline asks for it, never held whole).  The bytes fetched count
against the job's input budget (JobCost); programs are also kept in a small
cache shared by jobs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import quote

from swift.common.http import is_success
from swift.common.swob import Request, Response
from swift.common.wsgi import make_subrequest

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
        url = "/v1/" + "/".join(quote(p) for p in (path.account, path.container, path.obj) if p)
        if query:
            url += "?" + query
        sub = make_subrequest(req.environ, method=method, path=url, headers=headers,
                              agent="%(orig)s zerocloud", swift_source="ZC")
        if body is not None:
            # Always with its length, 0 included: a PUT without one is 411.
            sub.environ["wsgi.input"] = body
            sub.environ["CONTENT_LENGTH"] = str(length)
        return sub.get_response(self.app)

    def check_readable(self, req: Request, path: SwiftPath, what: str) -> Response:
        resp = self.sub(req, "HEAD", path)
        raise_for_read(resp, "HEAD", path, what)
        if any(h in resp.headers for h in ("X-Static-Large-Object", "X-Object-Manifest", "Content-Location")):
            raise JobError(400, f"{what}: {path} is a large object or symlink; jobs read plain objects")
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

    def fetch_input(self, req: Request, cost: JobCost, path: SwiftPath, what: str) -> bytes:
        """An input sent along with the node: fetched once per job, however
        many instances read it."""
        key = ("input", str(path))
        data = cost.fetched.get(key)
        if data is None:
            data = self.fetch(req, path, what, self.config.max_input, "zerovm_maxinput", cost.inputs)
            cost.fetched[key] = data
        return data

    def program(self, req: Request, cost: JobCost, path: SwiftPath, what: str) -> bytes:
        """The wasm bytes of a swift:// program: HEAD every time (access), GET when new."""
        head = self.check_readable(req, path, what)
        key = ("program", str(path), str(head.headers.get("Etag")))
        data = cost.fetched.get(key)
        if data is not None:
            return data
        data = self.programs.get(key)
        max_nexe = self.config.max_nexe
        if data is None:
            data = self.fetch(req, path, what, max_nexe, "zerovm_maxnexe", cost.inputs)
            self.programs[key] = data
            # Bounded in count and in bytes: a user who uploads large programs
            # cannot make the cache hold 32 x zerovm_maxnexe.
            while len(self.programs) > PROGRAM_CACHE or (
                    len(self.programs) > 1 and sum(map(len, self.programs.values())) > 4 * max_nexe):
                self.programs.popitem(last=False)
        else:
            cost.inputs.take(len(data))   # held by this job too, cached or not
            self.programs.move_to_end(key)
        cost.fetched[key] = data
        return data

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

    def store(self, req: Request, path: SwiftPath, body: Readable, length: int, content_type: str | None) -> Response:
        """Writes one output (``length`` bytes read from ``body`` as they are
        sent on), as the caller: the response says whether it could."""
        headers = {"Content-Type": content_type or self.config.default_content_type}
        return self.sub(req, "PUT", path, body=body, length=length, headers=headers)
