"""The proxy-server half of zerocloud: accept a job, check access, route it to the data.

A ``POST /v1/<account>`` with ``X-Zerovm-Execute: 1.0`` is a job: a JSON job
description (``Content-Type: application/json``) or a script whose first line
is ``#!file://IMAGE:PATH`` (any other content type; POSTed to an object, the
object is the script's stdin).  Everything else passes through untouched.

For a job, this filter
  1. asks the auth middleware (``swift.authorize``) whether the caller may POST here;
  2. parses and validates it (job.py), expanding ``*`` by listing the container;
  3. HEADs every object the job reads, and GETs programs and extra inputs,
     as subrequests through the rest of the pipeline with the caller's
     identity, so that tempauth (or keystone) answers 401/403, never data;
  4. looks up where the replicas of each node's input live (the object ring)
     and sends the node to one of those object servers (objectquery.py
     executes it there: ``X-Nexe-Colocated``), trying the next replica when one
     has no copy;
  5. runs the nodes stage by stage: nodes that ``connect`` to another feed
     it their stdout as ``/dev/in-<node>`` (MapReduce);
  6. writes outputs that have a swift:// path with the caller's identity, and
     answers with the immediate outputs and ZeroCloud's X-Nexe-* headers.

Place it after the auth middleware in the pipeline:

    [filter:zerocloud]
    paste.filter_factory = zerolab.zerocloud.proxy:filter_factory
    zerovm_sysimage_devices = python

Any job, however hostile, gets a 4xx with a one-line reason naming the limit
it hit; a 500 means a bug here (one generic line with the transaction id, the
traceback in the log).  The limits on the job itself are in job.py; those on
what it costs this proxy are options (DEFAULTS):

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

What a job may cost this proxy.  Memory: the body (zerovm_maxconfig), the
parsed job and its instances (in proportion to zerovm_maxconfig and
zerovm_maxnodes), one listing page and up to zerovm_maxnodes matching names,
plus the programs and inputs it fetches (at most zerovm_maxjobinput: each is
held once and sent to every instance that needs it without a copy), plus its
outputs (at most zerovm_maxjoboutput, and about as much again while a reply
is decoded or the answer is joined).  With the defaults that is about
0.8 GiB per job at worst; jobs running at once add up.  Shared by all jobs:
the program cache, at most 32 programs and 4 x zerovm_maxnexe bytes.  Time:
parsing and matching are linear in the body and in the names listed (no
backtracking), so a job blocks this single eventlet worker for milliseconds;
the rest is I/O, bounded by zerovm_max_listing pages of subrequests and, per
instance, conn_timeout plus zerovm_timeout + 30 s.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import quote

from eventlet import GreenPool, Timeout, spawn
from swift.common.bufferedhttp import http_connect
from swift.common.exceptions import ConnectionTimeout
from swift.common.http import is_success
from swift.common.registry import register_swift_info
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request, Response
from swift.common.utils import get_logger, split_path
from swift.common.wsgi import make_subrequest
from swift.proxy.controllers.base import get_container_info

from zerolab.sandbox import status as exit_status

from . import job as jobs
from . import protocol
from .job import JobError, SwiftPath
from .objectquery import EXECUTE, LOCAL_ALIAS_HEADER

DEFAULTS = {
    "swift_dir": "/etc/swift",
    "zerovm_timeout": "10",
    "zerovm_maxinput": str(1 << 30),
    "zerovm_maxoutput": str(100 << 20),
    "zerovm_maxconfig": "65536",
    "zerovm_maxnexe": str(64 << 20),
    "zerovm_maxnexemem": str(256 << 20),
    "zerovm_maxnodes": "64",
    "zerovm_maxjobinput": str(256 << 20),
    "zerovm_maxjoboutput": str(256 << 20),
    "zerovm_max_listing": "100000",
    "zerovm_concurrency": "8",
    "zerovm_sysimage_devices": "",
    "zerovm_default_content_type": "application/octet-stream",
    "conn_timeout": "0.5",
}
JSON_TYPES = ("application/json",)
TAR_TYPES = ("application/x-tar", "application/x-gtar", "application/x-ustar")
# A container listing is read this many names a page: its body stays a few MiB
# even when every name is 1024 bytes of escaped characters.
LISTING_PAGE = 1000
LISTING_PAGE_BYTES = 16 << 20
# An object server's reply is read in pieces of this size, each counted
# against the job's output budget before the next is read.
REPLY_PIECE = 1 << 20
PROGRAM_CACHE = 32

def one_line(reason: str) -> str:
    return " ".join(reason.split())


def text(status: int, reason: str, headers=None) -> Response:
    resp = Response(status=status, body=(reason.rstrip("\n") + "\n").encode(),
                    content_type="text/plain")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def header_value(value: str) -> str:
    """One element of an aggregated X-Nexe-* header: one line, no commas."""
    return " ".join(str(value).split()).replace(",", ";")


def raise_for_read(resp, method: str, path: SwiftPath, what: str) -> None:
    """A failed read of a job's object, as the 4xx (or 503) the caller gets."""
    if resp.status_int in (401, 403):
        raise JobError(resp.status_int, f"{what}: not allowed to read {path} ({resp.status})")
    if resp.status_int == 404:
        raise JobError(404, f"{what}: {path} not found")
    if not is_success(resp.status_int):
        raise JobError(resp.status_int if resp.status_int < 500 else 503,
                       f"{what}: {method} {path} failed: {resp.status}")


def body_of(resp, limit: int, budget: jobs.Budget | None = None) -> bytes | None:
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


def close(app_iter) -> None:
    closer = getattr(app_iter, "close", None)
    if closer is not None:
        closer()


def read_reply(resp, budget: jobs.Budget) -> bytes:
    """An object server's reply, each piece counted against the job's output
    budget as it arrives (JobError 413 when it runs out)."""
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > budget.remaining:
        raise JobError(413, budget.reason)
    data = jobs.collect(iter(lambda: resp.read(REPLY_PIECE), b""), budget.limit, budget)
    if data is None:
        raise JobError(413, budget.reason)
    return data


class JobCost:
    """What one job holds in this proxy: its budgets, and the objects it fetched."""

    def __init__(self, max_input: int, max_output: int):
        self.inputs = jobs.Budget(max_input, f"programs and inputs this job has the proxy fetch exceed "
                                             f"zerovm_maxjobinput ({max_input} bytes)")
        self.outputs = jobs.Budget(max_output, f"outputs of this job exceed zerovm_maxjoboutput "
                                               f"({max_output} bytes)")
        self.fetched: dict[tuple, bytes] = {}


def not_run(reason: str) -> protocol.JobReport:
    """What the X-Nexe-* headers show for an instance without a report: the
    reason it failed, validator 2 (never loaded), no accounting."""
    return protocol.JobReport(exit_code=exit_status.INTERNAL, exit_state=reason or "not run", user_rc=0,
                              validator=2, etag="disable", elapsed=0.0, cdr=exit_status.NO_ACCOUNTING)


@dataclass(frozen=True)
class Plan:
    """One instance, ready to send: its request, the payloads that request
    names, the readable device read where it is stored (None: run anywhere),
    and the caller's account."""

    request: protocol.RunRequest
    payloads: list[bytes]
    local: jobs.Device | None
    account: str


class Result:
    """What happened to one instance."""

    def __init__(self, inst: jobs.Instance):
        self.inst = inst
        self.status = 200
        self.reason = ""
        self.report: protocol.JobReport | None = None
        self.outputs: dict[str, bytes] = {}
        self.colocated = "0"

    def fail(self, status: int, reason: str) -> Result:
        self.status, self.reason = status, reason
        return self


class ProxyQueryMiddleware:
    def __init__(self, app, conf: dict):
        self.app = app
        conf = dict(DEFAULTS, **conf)
        self.logger = get_logger(conf, log_route="zerocloud-proxy")
        self.swift_dir = conf["swift_dir"]
        self.timeout = int(conf["zerovm_timeout"])
        self.max_input = int(conf["zerovm_maxinput"])
        self.max_output = int(conf["zerovm_maxoutput"])
        self.max_config = int(conf["zerovm_maxconfig"])
        self.max_nexe = int(conf["zerovm_maxnexe"])
        self.max_memory = int(conf["zerovm_maxnexemem"])
        self.max_nodes = int(conf["zerovm_maxnodes"])
        self.max_job_input = int(conf["zerovm_maxjobinput"])
        self.max_job_output = int(conf["zerovm_maxjoboutput"])
        self.max_listing = int(conf["zerovm_max_listing"])
        # What a job may cost is stated in terms of these (module docstring):
        # a configuration that leaves one unbounded is refused at start.
        if not 1 <= self.max_nodes <= jobs.MAX_NODES:
            raise ValueError(f"zerovm_maxnodes must be between 1 and {jobs.MAX_NODES} (got {self.max_nodes})")
        for option in ("zerovm_maxjobinput", "zerovm_maxjoboutput", "zerovm_max_listing"):
            if int(conf[option]) < 1:
                raise ValueError(f"{option} must be a positive number (got {conf[option]})")
        self.concurrency = int(conf["zerovm_concurrency"])
        self.conn_timeout = float(conf["conn_timeout"])
        self.sysimages = set(conf["zerovm_sysimage_devices"].split())
        self.default_content_type = conf["zerovm_default_content_type"]
        # Compiled elsewhere, but fetched here: programs by (path, etag).
        self.programs: OrderedDict = OrderedDict()
        register_swift_info("zerovm", version="1.0", sysimages=sorted(self.sysimages),
                            timeout=self.timeout, max_input=self.max_input,
                            max_output=self.max_output, max_config=self.max_config,
                            max_nodes=self.max_nodes, max_job_input=self.max_job_input,
                            max_job_output=self.max_job_output, colocation=True)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, env, start_response):
        if env.get("REQUEST_METHOD") != "POST" or "HTTP_X_ZEROVM_EXECUTE" not in env:
            return self.app(env, start_response)
        req = Request(env)
        started = time.time()
        try:
            resp = self.handle(req, started)
        except JobError as e:
            resp = text(e.status, one_line(e.reason))
        except Exception:
            # A bug of ours, never the job's: the traceback goes to the log,
            # the client gets one line to quote (no exception text: it may
            # show internals, and it is not the caller's to fix).
            trans_id = env.get("swift.trans_id") or "-"
            self.logger.exception("zerocloud: internal error in transaction %s", trans_id)
            resp = text(500, f"zerocloud internal error (transaction {trans_id}); the proxy log has the details")
        return resp(env, start_response)

    def handle(self, req: Request, started: float) -> Response:
        if req.headers["X-Zerovm-Execute"].strip() != "1.0":
            raise JobError(400, f"unsupported X-Zerovm-Execute {req.headers['X-Zerovm-Execute']!r} (use 1.0)")
        try:
            version, account, container, obj = split_path(req.path, 2, 4, True)
        except ValueError:
            raise JobError(400, f"POST a job to /v1/<account> (got {req.path})") from None
        if container and not obj:
            raise JobError(400, "POST a job to /v1/<account>, or a script to /v1/<account>/<container>/<object>")
        authorize = req.environ.get("swift.authorize")
        if authorize is not None:
            denied = authorize(req)
            if denied is not None:
                return denied
        body = self.read_body(req)
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype in JSON_TYPES:
            if container:
                raise JobError(400, "POST a JSON job description to /v1/<account>, not to an object")
            nodes = jobs.parse(body, self.sysimages, self.max_nodes)
        elif ctype in TAR_TYPES:
            raise JobError(400, "POSTing a ZeroVM image (tar) is not supported; POST a JSON job description")
        else:
            stdin = SwiftPath(account, container, obj) if obj else None
            nodes = jobs.parse_script(body, self.sysimages, stdin)
        stages = jobs.expand(nodes, lambda path: self.list_objects(req, path), self.max_nodes)
        return self.run(req, stages, started)

    def read_body(self, req: Request) -> bytes:
        try:
            length = req.content_length
        except ValueError:
            raise JobError(400, "Content-Length is not a number") from None
        if length is not None and length > self.max_config:
            raise JobError(413, f"job is {length} bytes, more than zerovm_maxconfig ({self.max_config})")
        body = req.environ["wsgi.input"].read(self.max_config + 1)
        if len(body) > self.max_config:
            raise JobError(413, f"job is more than zerovm_maxconfig ({self.max_config}) bytes")
        if not body:
            raise JobError(400, "empty job: POST a JSON job description or a #! script")
        return body

    # ---------------------------------------------------------- subrequests
    def sub(self, req: Request, method: str, path: SwiftPath, body: bytes = b"",
            headers=None, query: str = ""):
        """A subrequest through the rest of the pipeline, as the caller."""
        url = "/v1/" + "/".join(quote(p) for p in (path.account, path.container, path.obj) if p)
        if query:
            url += "?" + query
        sub = make_subrequest(req.environ, method=method, path=url, body=body or None,
                              headers=headers, agent="%(orig)s zerocloud", swift_source="ZC")
        return sub.get_response(self.app)

    def check_readable(self, req: Request, path: SwiftPath, what: str):
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
            data = self.fetch(req, path, what, self.max_input, "zerovm_maxinput", cost.inputs)
            cost.fetched[key] = data
        return data

    def program(self, req: Request, cost: JobCost, path: SwiftPath, what: str) -> bytes:
        """The wasm bytes of a swift:// program: HEAD every time (access), GET when new."""
        head = self.check_readable(req, path, what)
        key = ("program", str(path), head.headers.get("Etag"))
        data = cost.fetched.get(key)
        if data is not None:
            return data
        data = self.programs.get(key)
        if data is None:
            data = self.fetch(req, path, what, self.max_nexe, "zerovm_maxnexe", cost.inputs)
            self.programs[key] = data
            # Bounded in count and in bytes: a user who uploads large programs
            # cannot make the cache hold 32 x zerovm_maxnexe.
            while len(self.programs) > PROGRAM_CACHE or (
                    len(self.programs) > 1 and sum(map(len, self.programs.values())) > 4 * self.max_nexe):
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
            if scanned > self.max_listing:
                raise JobError(413, f"{path}: more than zerovm_max_listing ({self.max_listing}) names to scan; "
                                    f"put a longer literal prefix before the first *")
            names += [name for name in page if path.match(name) is not None]
            if len(names) > self.max_nodes:
                raise JobError(413, f"{path} matches more than zerovm_maxnodes ({self.max_nodes}) objects")
            # A short page is the last; a marker that does not move on would list the same page forever.
            if len(page) < LISTING_PAGE or page[-1] <= marker:
                break
            marker = page[-1]
        return names

    # ------------------------------------------------------------------ run
    def run(self, req: Request, stages: list[list[jobs.Instance]], started: float) -> Response:
        cost = JobCost(self.max_job_input, self.max_job_output)
        # Everything a node reads is checked before anything runs.
        plans: dict[str, Plan] = {}
        for stage in stages:
            for inst in stage:
                plans[inst.name] = self.plan(req, inst, cost)
        results: list[Result] = []
        fed: dict[str, bytes] = {}     # instance name -> stdout, for connect
        pool = GreenPool(self.concurrency)
        for stage in stages:
            stage_results = list(pool.imap(lambda i: self.execute(req, i, plans[i.name], fed, cost), stage))
            results += stage_results
            if any(r.status != 200 for r in stage_results):
                break
            for r in stage_results:
                if r.inst.node.connect:
                    fed[r.inst.name] = r.outputs.get("/dev/stdout", b"")
            for r in stage_results:
                self.store_outputs(req, r)
            if any(r.status != 200 for r in stage_results):
                break
        return self.respond(results, started)

    def plan(self, req: Request, inst: jobs.Instance, cost: JobCost) -> Plan:
        """The executor request for one instance (protocol.py), and its payloads."""
        account = req.split_path(2, 4, True)[1]
        where = f"node {inst.name!r}"
        payloads: list[bytes] = []
        inputs: list[protocol.InputChannel] = []
        images: list[protocol.ExtraImage] = []
        local = inst.colocate
        # The input's HEAD runs while the program is checked: two round trips at once.
        local_head = spawn(self.check_readable, req, local.path, where) if local is not None else None
        program = inst.node.program
        if program.swift is not None:
            payloads.append(self.program(req, cost, program.swift, where))
            source = protocol.ProgramSource(payload=len(payloads) - 1)
        else:
            source = protocol.ProgramSource(image=program.image, path=program.path)
        argv0 = inst.node.exec_name or inst.name
        target = None
        for dev in inst.readable():
            if dev.data is not None:
                payloads.append(dev.data)
                inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
            elif dev is local:
                head = local_head.wait()
                size = head.content_length or 0
                if size > self.max_input:
                    raise JobError(413, f"{where}: {dev.path} is {size} bytes, more than zerovm_maxinput ({self.max_input})")
                target = dev
            else:   # read elsewhere: fetched here, sent along
                data = self.fetch_input(req, cost, dev.path, where)
                payloads.append(data)
                if dev.name == "image":
                    images.append(protocol.ExtraImage(len(payloads) - 1))
                else:
                    inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
        # No single output may be larger than what the whole job may return.
        limit = min(self.max_output, self.max_job_output)
        outputs = [protocol.OutputChannel(dev.alias, limit) for dev in inst.writable()]
        if inst.node.connect and inst.node.device("stdout") is None:
            outputs.append(protocol.OutputChannel("/dev/stdout", limit))
        request = protocol.RunRequest(
            program=source, program_name=str(program), args=(argv0, *inst.args), env=inst.node.env,
            timeout=self.timeout, memory=self.max_memory, inputs=tuple(inputs), outputs=tuple(outputs),
            images=tuple(images))
        return Plan(request, payloads, target, account)

    def execute(self, req: Request, inst: jobs.Instance, plan: Plan, fed: dict[str, bytes],
                cost: JobCost) -> Result:
        result = Result(inst)
        payloads = list(plan.payloads)
        inputs = list(plan.request.inputs)
        for source in inst.sources:
            payloads.append(fed.get(source, b""))
            inputs.append(protocol.InputChannel(jobs.CONNECT_PREFIX + source, payload=len(payloads) - 1))
        request = replace(plan.request, inputs=tuple(inputs))
        # Sent as its pieces: one joined body per instance in flight would
        # copy every program and input it carries.
        pieces = [protocol.encode(request.to_wire(), payloads)] + [p for p in payloads if p]
        length = sum(map(len, pieces))
        local = plan.local
        if local is not None:
            # The container's storage policy picks the object ring.
            env = dict(req.environ, PATH_INFO=f"/v1/{local.path.account}/{local.path.container}")
            info = get_container_info(env, self.app, swift_source="ZC")
            policy_index = int(info.get("storage_policy") or 0)
            ring = POLICIES.get_object_ring(policy_index, self.swift_dir)
            partition, nodes = ring.get_nodes(local.path.account, local.path.container, local.path.obj)
            path = "/" + "/".join((local.path.account, local.path.container, local.path.obj))
            headers = {LOCAL_ALIAS_HEADER: local.alias}
        else:
            # No input object: any object server will do (ZeroCloud picked one at random).
            policy_index = int(POLICIES.default.idx)
            ring = POLICIES.get_object_ring(policy_index, self.swift_dir)
            nodes = [d for d in ring.devs if d]
            random.shuffle(nodes)
            partition, nodes = 0, nodes[:3]
            path = "/" + plan.account
            headers = {}
        headers.update({"X-Backend-Storage-Policy-Index": str(policy_index),
                        "Content-Length": str(length),
                        "X-Trans-Id": req.environ.get("swift.trans_id", "")})
        last = (503, f"node {inst.name!r}: no object server could run it")
        for node in nodes:
            status, reason, data, colocated = self.send(node, partition, path, headers, pieces, cost.outputs)
            if status == 200:
                try:
                    header, outputs = protocol.decode(data)
                    reply = protocol.RunReply.from_wire(header)
                except protocol.ProtocolError as e:
                    cost.outputs.give_back(len(data))
                    return result.fail(503, f"node {inst.name!r}: bad reply from {node['ip']}: {e}")
                result.report = reply.report
                result.outputs = dict(zip(reply.outputs, outputs))
                result.colocated = colocated
                status = exit_status.http_status(reply.report.exit_code)
                if status != 200:
                    result.fail(status, f"node {inst.name!r}: {reply.report.exit_state}")
                return result
            last = (status, f"node {inst.name!r}: {reason}")
            # Another replica may have the object or a free slot; anything else is final.
            if status not in (404, 503, 507, 429):
                break
        if last[0] == 404 and local is not None:
            last = (404, f"node {inst.name!r}: {local.path} not found on any replica")
        return result.fail(*last)

    def send(self, node: dict, partition, path: str, headers: dict, pieces: list[bytes],
             outputs: jobs.Budget):
        """One EXECUTE to one object server -> (status, reason, body, colocated).

        The reply is taken from the job's output budget as it is read (413
        when it runs out); a reply that is not kept (an error) is given back."""
        try:
            with ConnectionTimeout(self.conn_timeout):
                conn = http_connect(node["ip"], node["port"], node["device"], partition, EXECUTE,
                                    path, headers=headers)
            with Timeout(self.timeout + 30):
                for piece in pieces:
                    conn.send(piece)
                resp = conn.getresponse()
                data = read_reply(resp, outputs)
        except JobError as e:
            return e.status, e.reason, b"", "0"
        except (Exception, Timeout) as e:
            return 503, f"object server {node['ip']}:{node['port']}/{node['device']} failed: {e}", b"", "0"
        if resp.status != 200:
            outputs.give_back(len(data))
            return resp.status, one_line(data[:1000].decode("utf-8", "replace")), b"", "0"
        return resp.status, "", data, resp.getheader("X-Nexe-Colocated") or "0"

    def store_outputs(self, req: Request, result: Result) -> None:
        for dev in result.inst.writable():
            if dev.path is None:
                continue
            data = result.outputs.get(dev.alias, b"")
            headers = {"Content-Type": dev.content_type or self.default_content_type}
            resp = self.sub(req, "PUT", dev.path, body=data, headers=headers)
            if not is_success(resp.status_int):
                status = resp.status_int if resp.status_int < 500 else 503
                result.fail(status, f"node {result.inst.name!r}: cannot write {dev.path}: {resp.status}")
                return

    # ------------------------------------------------------------- response
    def respond(self, results: list[Result], started: float) -> Response:
        reports = [r.report or not_run(r.reason) for r in results]
        headers = {
            "X-Nexe-System": ",".join(r.inst.name for r in results),
            "X-Nexe-Status": ",".join(header_value(r.exit_state) for r in reports),
            "X-Nexe-Retcode": ",".join(str(r.user_rc) for r in reports),
            "X-Nexe-Etag": ",".join(header_value(r.etag) for r in reports),
            "X-Nexe-Validation": ",".join(str(r.validator) for r in reports),
            "X-Nexe-Colocated": ",".join(r.colocated for r in results),
            "X-Nexe-Cdr-Line": ", ".join([f"{time.time() - started:.3f}"] + [
                f"{r.elapsed:.3f}, {r.cdr}" for r in reports]),
        }
        failed = next((r for r in results if r.status != 200), None)
        if failed is not None:
            headers["X-Nexe-Error"] = header_value(failed.reason)
            stderr = failed.outputs.get("/dev/stderr", b"")[-2000:].decode("utf-8", "replace")
            return text(failed.status, failed.reason + ("\nstderr:\n" + stderr if stderr else ""), headers)
        body, ctype = [], None
        for r in results:
            if r.inst.node.connect:
                continue   # its stdout went to the nodes it connects to
            for dev in r.inst.writable():
                if dev.path is None:
                    body.append(r.outputs.get(dev.alias, b""))
                    ctype = ctype or dev.content_type
        resp = Response(status=200, body=b"".join(body), content_type=ctype or "text/plain")
        for k, v in headers.items():
            resp.headers[k] = v
        return resp


def filter_factory(global_conf, **local_conf):
    conf = dict(global_conf, **local_conf)

    def factory(app):
        return ProxyQueryMiddleware(app, conf)
    return factory
