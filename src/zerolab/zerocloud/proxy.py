"""The proxy-server half of zerocloud: accept a job, check access, route it to the data.

A ``POST /v1/<account>`` with ``X-Zerovm-Execute: 1.0`` is a job: a JSON job
description (``Content-Type: application/json``), an app (a tar type: a tar
with boot/system.map, apps.py), or a script whose first line is
``#!file://IMAGE:PATH`` (any other content type; POSTed to an object, the
object is the script's stdin).  With ``X-Zerovm-Source`` the job is that
object instead, and the body its stdin.  A GET of ``/open/<account>/...``
(or with ``X-Zerovm-Execute: open/1.0``) runs what is registered for the
object (open()).  Everything else passes through untouched.

For a job, this filter
  1. asks the auth middleware (``swift.authorize``) whether the caller may POST here;
  2. parses and validates it (job.py), expanding ``*`` by listing the container;
  3. before anything runs, authorizes the caller for every object a node
     reads where it is stored (its program and colocated input) by the ACL
     check Swift's object GET makes: the container's read ACL as ``req.acl``
     of a GET for the object, asked of ``swift.authorize`` (a refusal is the
     answer, no node is sent); GETs the inputs sent along, and the programs
     not in its cache after their HEAD, as subrequests through the rest of
     the pipeline with the caller's identity, so that tempauth (or keystone)
     answers 401/403, never data;
  4. looks up where the replicas of each node's input live (the object ring)
     and sends the node to one of those object servers (objectquery.py
     executes it there: ``X-Nexe-Colocated``), trying the next replica when one
     has no copy; a node whose program is cached is sent at once with those
     bytes, while the HEADs of its program and input (as the caller: there,
     readable, plain objects, the input within zerovm_maxinput, the
     program's etag that of the bytes sent) run beside it;
  5. runs the nodes stage by stage, a stage's results counting only once
     those HEADs agree (a refusal is the node's answer and its outputs are
     dropped unread; a program changed since it was cached runs again, once,
     with the new bytes): then nodes that ``connect`` to another feed it
     their stdout as ``/dev/in-<node>`` (MapReduce);
  6. writes outputs that have a swift:// path with the caller's identity, and
     answers with the immediate outputs and ZeroCloud's X-Nexe-* headers.

What is guaranteed: nothing runs that the caller is not authorized to read,
by the same ACL check Swift's object GET makes; the objects' own HEADs run
beside the node and its outputs are released (fed on, written, answered)
only once they agree.  A node may thus run on an object its HEAD then
refuses (a manifest, a symlink, one too large or gone), never returning
anything of that run.

Outputs are never held whole.  A job of one instance whose outputs all
come back goes on to the caller as its reply comes, once its HEADs agree
(execution.JobRun.run_answered_as_it_comes).  Otherwise the headers need
every node's report, so each node's reply is copied as it arrives into a spool (its
first 64 KiB in memory, the rest in an unnamed temporary file in
zerovm_spool_dir), and the answer's body is streamed from the spools in
64 KiB pieces; closing it (done by the WSGI server when the body is sent or
the client goes away) closes them.  Stdouts sent to a reducer and outputs
written as objects are read from the spools the same way.

The filter (ProxyQueryMiddleware) takes the request and parses the job; the
rest is in units of their own: subrequests.py (what is read and written as
the caller, steps 1-3 and 6), routing.py (which object servers, and the
EXECUTE to one, step 4), execution.py (the plan, the checks beside the
nodes and the stages, steps 3-5), response.py (the answer and its
headers), proxy_config.py (the options).

Place it after the auth middleware in the pipeline:

    [filter:zerocloud]
    paste.filter_factory = zerolab.zerocloud.proxy:filter_factory
    zerovm_sysimage_devices = python

Any job, however hostile, gets a 4xx with a one-line reason naming the limit
it hit, or a 200 whose X-Nexe-Status names the limit that stopped a node (a
timeout, memory, an output cut at zerovm_maxoutput: response.py); a 500 means a bug here (one generic line with the transaction id, the
traceback in the log).  The limits on the job itself are in job.py; those on
what it costs this proxy are options (proxy_config.DEFAULTS):

* ``zerovm_maxnodes`` (64, at most job.MAX_NODES = 1000): instances of a job,
  counts and wildcard fan-out included, checked before any is built: 413.
* ``zerovm_max_listing`` (100000): names a wildcard may make the proxy scan
  in its container listing (pages of 1000): 413; give a longer literal prefix
  before the first ``*``.
* ``zerovm_maxjobinput`` (256 MiB): programs and inputs this proxy fetches to
  send along with a job's nodes (inputs not read where they are stored,
  images, swift:// scripts), each object counted once per job: 413.
* ``zerovm_maxjoboutput`` (256 MiB): outputs of all of a job's instances
  together, counted as they arrive: the instance that goes over fails with
  413 and no later stage runs.
* ``zerovm_spool_dir`` (the system's temp dir): where outputs wait for the
  answer, at most zerovm_maxjoboutput per job; an existing directory, best
  not a tmpfs (its files would be memory again).

What a job may cost this proxy.  Memory: the body (zerovm_maxconfig; an
app's zerovm_maxnexe, and as much again unpacked; with X-Zerovm-Source the
body and the source, counted in zerovm_maxjobinput), the
parsed job and its instances (in proportion to zerovm_maxconfig and
zerovm_maxnodes), one listing page and up to zerovm_maxnodes matching names,
plus the programs and inputs it fetches (at most zerovm_maxjobinput: each is
held once and sent to every instance that needs it without a copy).  Of the
outputs: at most 64 KiB per instance (response.SPOOL_MEMORY; the rest is on
disk, at most zerovm_maxjoboutput), one 256 KiB piece per instance being
read (routing.REPLY_PIECE, zerovm_concurrency at once), a reply's header
while it is parsed (at most 1 MiB) and one 64 KiB piece being sent on.
With the defaults that is about 0.27 GiB per job at worst, nearly all of it
zerovm_maxjobinput; jobs running at once add up.  Shared by all jobs:
the program cache (the last version fetched of each program path), at
most 32 programs and 4 x zerovm_maxnexe bytes; the GET templates kept
(apps.TemplateCache), at most 256 x zerovm_maxconfig bytes; the types of
the last 1024 objects opened (OPENED_TYPES).  Time:
parsing and matching are linear in the body and in the names listed (no
backtracking), so a job blocks this single eventlet worker for milliseconds;
the rest is I/O, bounded by zerovm_max_listing pages of subrequests and, per
instance, conn_timeout plus zerovm_timeout + 30 s (twice, for an instance
run again after its program changed).  Requests in flight for a job: its
nodes' EXECUTEs and one stage's object HEADs, zerovm_concurrency of each,
plus one HEAD per cached program it runs.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from swift.common.registry import register_swift_info
from swift.common.swob import Request, Response
from swift.common.utils import get_logger, split_path

from . import apps
from . import job as jobs
from .execution import GuessWrong, JobRun
from .job import JobError, SwiftPath
from .proxy_config import DEFAULTS, ProxyConfig
from .response import one_line, text
from .routing import ObjectServerClient, ReplicaRouter
from .subrequests import CallerSubrequests, JobCost, content_type

# ZeroCloud's GET execution: the header's value, and the path that implies it.
OPEN = "open/1.0"
OPEN_PREFIX = "/open/"
READ_PIECE = 1 << 16
# The objects whose type a proxy worker remembers from their last GET execution.
OPENED_TYPES = 1024


class ProxyQueryMiddleware:
    def __init__(self, app: WSGIApplication, conf: Mapping[str, str]):
        self.app = app
        self.logger = get_logger(dict(DEFAULTS, **conf), log_route="zerocloud-proxy")
        self.config = config = ProxyConfig.from_conf(conf)
        self.objects = CallerSubrequests(app, config)
        self.router = ReplicaRouter(app, config)
        self.object_servers = ObjectServerClient(config)
        self.templates = apps.TemplateCache(config.template_cache)
        # Per object path, the type whose template its last GET execution ran.
        self.opened_types: OrderedDict[str, str] = OrderedDict()
        register_swift_info("zerovm", version="1.0", sysimages=sorted(config.sysimages),
                            timeout=config.timeout, max_input=config.max_input,
                            max_output=config.max_output, max_config=config.max_config,
                            max_nodes=config.max_nodes, max_job_input=config.max_job_input,
                            max_job_output=config.max_job_output, colocation=True)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        execute = env.get("HTTP_X_ZEROVM_EXECUTE")
        path = str(env.get("PATH_INFO") or "")
        if path.startswith(OPEN_PREFIX):
            # ZeroCloud's /open/<account>/<container>/<object>: a GET execution.
            env["PATH_INFO"] = "/v1/" + path[len(OPEN_PREFIX):]
            execute = OPEN
        if execute is None:
            return self.app(env, start_response)
        req = Request(env)
        started = time.time()
        try:
            resp = self.handle(req, str(execute).strip(), started)
        except JobError as e:
            resp = text(e.status, one_line(e.reason))
        except Exception:
            # A bug of ours, never the job's: the traceback goes to the log,
            # the client gets one line to quote (no exception text: it may
            # show internals, and it is not the caller's to fix).
            trans_id = env.get("swift.trans_id") or "-"
            self.logger.exception("zerocloud: internal error in transaction %s", trans_id)
            resp = text(500, f"zerocloud internal error (transaction {trans_id}); the proxy log has the details")
        answer: Iterable[bytes] = resp(env, start_response)   # swob's Response is untyped
        return answer

    def handle(self, req: Request, execute: str, started: float) -> Response:
        method = req.method[:16]
        if execute == OPEN:
            if method != "GET":
                raise JobError(400, f"open/1.0 runs a program on a GET of an object, not on a {method!a} "
                                    f"(ZeroCloud's REST methods are not supported)")
            return self.open(req, started)
        if execute != "1.0":
            raise JobError(400, f"unsupported X-Zerovm-Execute {execute!r:.40} (use 1.0, or open/1.0 on a GET)")
        if method != "POST":
            raise JobError(400, f"X-Zerovm-Execute 1.0 on a {method!a}: POST a job, or GET with open/1.0")
        try:
            version, account, container, obj = path_parts(req, 2, 4)
        except ValueError:
            raise JobError(400, f"POST a job to /v1/<account> (got {req.path})") from None
        if container and not obj:
            raise JobError(400, "POST a job to /v1/<account>, or a script to /v1/<account>/<container>/<object>")
        denied = self.authorize_execution(req, account, req)
        if denied is not None:
            return denied
        cost = JobCost(self.config.max_job_input, self.config.max_job_output)
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        source = req.headers.get("X-Zerovm-Source")
        if source is not None:
            if container:
                raise JobError(400, "POST a job with X-Zerovm-Source to /v1/<account>")
            # The job is the object; the request's body, if any, is its stdin.
            path = jobs.SwiftPath.parse(native(source.strip(), "X-Zerovm-Source"), "X-Zerovm-Source",
                                        own_account=account)
            if path.wildcard:
                raise JobError(400, "X-Zerovm-Source names one object; it cannot have a wildcard")
            posted = self.read_body(req, cost, self.config.max_job_input, "zerovm_maxjobinput", empty=True)
            data, ctype = self.objects.fetch_source(req, cost, path, "X-Zerovm-Source", self.config.max_nexe,
                                                    "zerovm_maxnexe")
            kind = apps.kind_of(data, ctype)
            if kind != "app" and len(data) > self.config.max_config:
                # Only an app may be as large as a program; a job or script is parsed whole.
                raise JobError(413, f"X-Zerovm-Source: {path} is a {kind} of {len(data)} bytes, more than "
                                    f"zerovm_maxconfig ({self.config.max_config})")
            nodes = self.parse_job(data, kind, account, cost, posted=posted)
        elif ctype in apps.TAR_TYPES:
            if container:
                raise JobError(400, "POST an app (a tar) to /v1/<account>, not to an object")
            data = self.read_body(req, cost, self.config.max_nexe, "zerovm_maxnexe")
            nodes = self.parse_job(data, "app", account, cost)
        else:
            data = self.read_body(req, cost, self.config.max_config, "zerovm_maxconfig")
            if ctype in apps.JSON_TYPES:
                if container:
                    raise JobError(400, "POST a JSON job description to /v1/<account>, not to an object")
                nodes = self.parse_job(data, "job", account, cost)
            else:
                stdin = SwiftPath(account, container, obj) if obj else None
                nodes = self.parse_job(data, "script", account, cost, stdin=stdin)
        return self.run(req, nodes, cost, started)

    def open(self, req: Request, started: float) -> Response:
        """ZeroCloud's open/1.0: a GET of an object runs what is registered
        for it (apps.py): the object itself when it is a program, its
        boot/system.map when it is an app, else the account's template for
        its content type; the answer is the job's (its stdout)."""
        try:
            version, account, container, obj = path_parts(req, 4, 4)
        except ValueError:
            raise JobError(400, f"open/1.0: GET /open/<account>/<container>/<object> (got {req.path})") from None
        if "*" in obj:
            raise JobError(400, "open/1.0: an object whose name has * cannot be opened (it would be a wildcard)")
        where = "open/1.0"
        path = SwiftPath.parse(f"swift://{account}/{container}/{obj}", where)
        denied = self.authorize_execution(req, account, Request(dict(req.environ, REQUEST_METHOD="POST",
                                                                       PATH_INFO=f"/v1/{account}")))
        if denied is not None:
            return denied
        # An object whose last GET execution ran a template runs as that
        # type again at once, its HEAD beside the run instead of before it
        # (JobRun.guessed): one round trip fewer.  When that HEAD disagrees,
        # nothing of the run is kept and the GET starts again from its HEAD.
        guess = self.opened_types.get(str(path))
        if guess is not None:
            try:
                return self.run_opened(req, path, guess, None, started)
            except (GuessWrong, JobError):
                self.opened_types.pop(str(path), None)
        head = self.objects.check_readable(req, path, where)
        return self.run_opened(req, path, content_type(head), head, started)

    def run_opened(self, req: Request, path: SwiftPath, ctype: str, head: Response | None,
                   started: float) -> Response:
        """What is registered for an object of type ``ctype``, run on it:
        checked with ``head`` (its HEAD, made before), or with one made
        beside the run when that is None (a template's run only)."""
        where = "open/1.0"
        account, container, obj = path.account, path.container, path.obj
        cost = JobCost(self.config.max_job_input, self.config.max_job_output)
        kind = opened_as(ctype, obj)
        if head is None and kind != "template":
            raise GuessWrong(f"{path}: a {kind} is run from its HEAD")
        params = {native(str(k), "the query"): native(str(v), "the query") for k, v in req.params.items()}
        if kind == "program":
            program = {"name": "open", "exec": {"path": str(path), "args": params.get("args", "")},
                       "devices": [{"name": "stdout", "content_type": params.get("content_type", "text/plain")}]}
            nodes = self.parse_job(json.dumps([program]).encode(), "job", account, cost)
        elif kind == "app":
            data, _ = self.objects.fetch_source(req, cost, path, where, self.config.max_nexe, "zerovm_maxnexe")
            nodes = self.parse_job(data, "app", account, cost)
        elif kind == "unregistered":
            raise JobError(404, f"{where}: no application registered for content type {ctype!r:.80}")
        else:
            template = self.template(req, cost, account, ctype, where)
            job = apps.fill_template(template, params, str(path), self.config.max_config)
            nodes = self.parse_job(job, "job", account, cost)
            if not any(node.connect for node in nodes):   # run as one stage: its HEAD can wait beside it
                self.remember_type(str(path), ctype)
            elif head is None:
                raise GuessWrong(f"{path}: its template connects nodes")
        # ZeroCloud's CGI variables: what the program knows of the GET.
        cgi = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/{account}/{container}/{obj}",
               "QUERY_STRING": req.query_string or "", "CONTENT_TYPE": ctype}
        for node in nodes:
            node.env = dict(cgi, **node.env)
        if head is None:
            return self.run(req, nodes, cost, started, guessed={str(path): ctype})
        # The instance that reads the object where it is stored checks it
        # with this HEAD, made before it runs, instead of another.
        return self.run(req, nodes, cost, started, heads={str(path): head})

    def template(self, req: Request, cost: JobCost, account: str, ctype: str, where: str) -> bytes:
        """The account's job template for a content type (apps.py): kept
        from an earlier GET execution, or fetched as the caller."""
        name = apps.template_path(ctype)
        assert name is not None
        registered = SwiftPath(account, apps.REGISTRY_CONTAINER, name)
        kept = self.templates.get(str(registered))
        if kept is not None:
            cost.inputs.take(len(kept))
            return kept
        try:
            template, _ = self.objects.fetch_source(req, cost, registered, where, self.config.max_config,
                                                    "zerovm_maxconfig")
        except JobError as e:
            if e.status != 404:
                raise
            raise JobError(404, f"{where}: no application registered for {ctype}: put a job template at "
                                f"/v1/{account}/{apps.REGISTRY_CONTAINER}/{name}") from None
        self.templates.put(str(registered), template)
        return template

    def remember_type(self, path: str, ctype: str) -> None:
        self.opened_types[path] = ctype
        self.opened_types.move_to_end(path)
        while len(self.opened_types) > OPENED_TYPES:
            self.opened_types.popitem(last=False)

    def authorize_execution(self, req: Request, account: str, post: Request) -> Response | None:
        """Whether the caller may run jobs billed to ``account``: what the auth
        middleware says of a POST there (``post``), as ZeroCloud allowed only
        the account's owner.  Not for a temporary URL or a request that an
        auth middleware waved through without a verdict (container sync):
        they grant one object, never the account's rights."""
        env = req.environ
        if env.get("REMOTE_USER") == ".wsgi.tempurl":
            raise JobError(403, "a temporary URL cannot run jobs: use a token of the account")
        authorize = env.get("swift.authorize")
        if authorize is None:
            if env.get("swift.authorize_override"):
                raise JobError(403, "this request's authorization cannot run jobs: use a token of the account")
            return None   # no auth middleware at all: Swift lets everything through too
        denied: Response | None = authorize(post)
        return denied

    def parse_job(self, data: bytes, kind: str, account: str, cost: JobCost, posted: bytes | None = None,
                  stdin: SwiftPath | None = None) -> list[jobs.Node]:
        """A job's nodes from what it came as: "job" (JSON), "app" (a tar
        with boot/system.map, mounted by every node) or "script" (#!)."""
        config = self.config
        if kind == "job":
            return jobs.parse(data, config.sysimages, config.max_nodes, own_account=account, posted=posted)
        if kind == "app":
            app = apps.read_app(data, config.max_nexe, config.max_config)
            if app.image is not data:   # unpacked: held beside the body
                cost.inputs.take(len(app.image))
            return jobs.parse(app.system_map, config.sysimages, config.max_nodes, own_account=account,
                              app=app.image, posted=posted)
        return jobs.parse_script(data, config.sysimages, stdin, own_account=account, posted=posted)

    def run(self, req: Request, nodes: list[jobs.Node], cost: JobCost, started: float,
            heads: Mapping[str, Response] | None = None, guessed: Mapping[str, str] | None = None) -> Response:
        stages = jobs.expand(nodes, lambda path: self.objects.list_objects(req, path), self.config.max_nodes)
        run = JobRun(req, self.config, self.objects, self.router, self.object_servers, cost, heads, guessed)
        resp = run.run(stages, started)
        # What ZeroCloud would have ignored too, said rather than silently dropped.
        ignored = jobs.ignored_keys(nodes)
        if ignored:
            resp.headers["X-Zerovm-Ignored"] = ignored
        return resp

    def read_body(self, req: Request, cost: JobCost, limit: int, option: str, empty: bool = False) -> bytes:
        """The request's body, at most ``limit`` bytes (``option`` sets it),
        taken from the job's input budget."""
        try:
            length = req.content_length
        except ValueError:
            raise JobError(400, "Content-Length is not a number") from None
        if length is not None and length > limit:
            raise JobError(413, f"the request's body is {length} bytes, more than {option} ({limit})")
        body = jobs.collect(iter(lambda: req.environ["wsgi.input"].read(READ_PIECE), b""), limit, cost.inputs)
        if body is None:
            raise JobError(413, f"the request's body is more than {option} ({limit} bytes)")
        if not body and not empty:
            raise JobError(400, "empty job: POST a JSON job description, an app (a tar) or a #! script")
        return body


def opened_as(ctype: str, obj: str) -> str:
    """What a GET execution of an object of this type runs: the object
    itself ("program"), its boot/system.map ("app"), the account's template
    for the type ("template"), or nothing registered ("unregistered")."""
    if ctype in apps.PROGRAM_TYPES or obj.endswith(".wasm"):
        return "program"
    if ctype in apps.TAR_TYPES:
        return "app"
    return "template" if apps.template_path(ctype) is not None else "unregistered"


def native(text: str, what: str) -> str:
    """A WSGI string (UTF-8 bytes read as Latin-1: PATH_INFO, the query,
    headers) as the text it spells."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise JobError(400, f"{what} is not UTF-8 text") from None


def path_parts(req: Request, minsegs: int, maxsegs: int) -> list[str]:
    """The request's path, split as Swift does (version, account, ...), each
    part as the name it spells: not req.path, which swob quotes."""
    return list(split_path(native(str(req.environ.get("PATH_INFO") or ""), "the path"), minsegs, maxsegs, True))


def filter_factory(global_conf: Mapping[str, str], **local_conf: str) -> Callable[[WSGIApplication], ProxyQueryMiddleware]:
    conf = dict(global_conf, **local_conf)

    def factory(app: WSGIApplication) -> ProxyQueryMiddleware:
        return ProxyQueryMiddleware(app, conf)
    return factory
