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
"""

from __future__ import annotations

import json
import random
import time
from collections import OrderedDict
from urllib.parse import quote

from eventlet import GreenPool, Timeout, spawn
from swift.common.bufferedhttp import http_connect
from swift.common.exceptions import ConnectionTimeout
from swift.common.http import is_success
from swift.common.storage_policy import POLICIES
from swift.common.swob import Request, Response
from swift.common.utils import get_logger, split_path
from swift.common.registry import register_swift_info
from swift.common.wsgi import make_subrequest
from swift.proxy.controllers.base import get_container_info

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
    "zerovm_concurrency": "8",
    "zerovm_sysimage_devices": "",
    "zerovm_default_content_type": "application/octet-stream",
    "conn_timeout": "0.5",
}
JSON_TYPES = ("application/json",)
TAR_TYPES = ("application/x-tar", "application/x-gtar", "application/x-ustar")

# The sandbox's exit codes (zerolab.sandbox.executor) and the HTTP status a
# job gets for them: the job's own result is 200 (see X-Nexe-Status/Retcode);
# what a limit stopped is 408/413; what could not run is 400.
OK, GUEST_EXIT, BAD_MANIFEST, BAD_INPUT, INVALID_PROGRAM, TIMEOUT, MEMORY, QUOTA, CRASH = 0, 1, 3, 4, 5, 6, 7, 8, 9
EXIT_STATUS = {OK: 200, GUEST_EXIT: 200, CRASH: 200, TIMEOUT: 408, MEMORY: 413, QUOTA: 413,
               BAD_MANIFEST: 400, BAD_INPUT: 400, INVALID_PROGRAM: 400}


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


class Result:
    """What happened to one instance."""

    def __init__(self, inst: jobs.Instance):
        self.inst = inst
        self.status = 200
        self.reason = ""
        self.report: dict = {}
        self.outputs: dict[str, bytes] = {}
        self.colocated = "0"

    def fail(self, status: int, reason: str) -> "Result":
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
        self.concurrency = int(conf["zerovm_concurrency"])
        self.conn_timeout = float(conf["conn_timeout"])
        self.sysimages = set(conf["zerovm_sysimage_devices"].split())
        self.default_content_type = conf["zerovm_default_content_type"]
        # Compiled elsewhere, but fetched here: programs by (path, etag).
        self.programs: OrderedDict = OrderedDict()
        register_swift_info("zerovm", version="1.0", sysimages=sorted(self.sysimages),
                            timeout=self.timeout, max_input=self.max_input,
                            max_output=self.max_output, max_config=self.max_config,
                            max_nodes=self.max_nodes, colocation=True)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, env, start_response):
        if env.get("REQUEST_METHOD") != "POST" or "HTTP_X_ZEROVM_EXECUTE" not in env:
            return self.app(env, start_response)
        req = Request(env)
        started = time.time()
        try:
            resp = self.handle(req, started)
        except JobError as e:
            resp = text(e.status, e.reason)
        except Exception as e:  # a bug of ours: logged, and one line to the client
            self.logger.exception("zerocloud: job failed")
            resp = text(500, f"zerocloud internal error: {type(e).__name__}: {e}")
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
        if req.content_length is not None and req.content_length > self.max_config:
            raise JobError(413, f"job is {req.content_length} bytes, more than zerovm_maxconfig ({self.max_config})")
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

    def fetch(self, req: Request, path: SwiftPath, what: str, limit: int) -> bytes:
        resp = self.sub(req, "GET", path)
        raise_for_read(resp, "GET", path, what)
        if resp.content_length is not None and resp.content_length > limit:
            raise JobError(413, f"{what}: {path} is {resp.content_length} bytes, more than the limit of {limit}")
        return resp.body

    def program(self, req: Request, path: SwiftPath, what: str) -> bytes:
        """The wasm bytes of a swift:// program: HEAD every time (access), GET when new."""
        head = self.check_readable(req, path, what)
        key = (str(path), head.headers.get("Etag"))
        data = self.programs.get(key)
        if data is None:
            data = self.fetch(req, path, what, self.max_nexe)
            self.programs[key] = data
            while len(self.programs) > 32:
                self.programs.popitem(last=False)
        else:
            self.programs.move_to_end(key)
        return data

    def list_objects(self, req: Request, path: SwiftPath) -> list[str]:
        """Objects of path's container that match its wildcard, listed as the caller."""
        pattern = path.matcher()
        names, marker = [], ""
        while True:
            query = f"format=json&prefix={quote(path.prefix)}&marker={quote(marker)}"
            resp = self.sub(req, "GET", SwiftPath(path.account, path.container, ""), query=query)
            if resp.status_int in (401, 403):
                raise JobError(resp.status_int, f"not allowed to list swift://{path.account}/{path.container}")
            if resp.status_int == 404:
                raise JobError(404, f"container swift://{path.account}/{path.container} not found")
            if not is_success(resp.status_int):
                raise JobError(503, f"listing swift://{path.account}/{path.container} failed: {resp.status}")
            page = json.loads(resp.body or b"[]")
            if not page:
                break
            names += [e["name"] for e in page if "name" in e and pattern.match(e["name"])]
            marker = page[-1].get("name", "")
            if len(names) > self.max_nodes:
                raise JobError(413, f"{path} matches more than {self.max_nodes} objects")
            if resp.status_int == 204 or len(page) < 10000:
                break
        return names

    # ------------------------------------------------------------------ run
    def run(self, req: Request, stages: list[list[jobs.Instance]], started: float) -> Response:
        # Everything a node reads is checked before anything runs.
        plans = {}
        for stage in stages:
            for inst in stage:
                plans[inst.name] = self.plan(req, inst)
        results: list[Result] = []
        fed: dict[str, bytes] = {}     # instance name -> stdout, for connect
        pool = GreenPool(self.concurrency)
        for stage in stages:
            stage_results = list(pool.imap(lambda i: self.execute(req, i, plans[i.name], fed), stage))
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

    def plan(self, req: Request, inst: jobs.Instance) -> dict:
        """The executor request for one instance (protocol.py), and its payloads."""
        account = req.split_path(2, 4, True)[1]
        where = f"node {inst.name!r}"
        payloads: list[bytes] = []
        header: dict = {"op": "run", "timeout": self.timeout, "memory": self.max_memory,
                        "env": inst.node.env, "inputs": [], "outputs": [], "images": []}
        local = inst.colocate
        # The input's HEAD runs while the program is checked: two round trips at once.
        local_head = spawn(self.check_readable, req, local.path, where) if local is not None else None
        program = inst.node.program
        if program.swift is not None:
            payloads.append(self.program(req, program.swift, where))
            header["program"] = {"payload": len(payloads) - 1}
        else:
            header["program"] = {"image": program.image, "path": program.path}
        header["program_name"] = str(program)
        argv0 = inst.node.exec_name or inst.name
        header["args"] = [argv0] + inst.args
        target = None
        for dev in inst.readable():
            if dev.data is not None:
                payloads.append(dev.data)
                header["inputs"].append({"alias": dev.alias, "payload": len(payloads) - 1})
            elif dev is local:
                head = local_head.wait()
                size = head.content_length or 0
                if size > self.max_input:
                    raise JobError(413, f"{where}: {dev.path} is {size} bytes, more than zerovm_maxinput ({self.max_input})")
                target = dev
            else:   # read elsewhere: fetched here, sent along
                data = self.fetch(req, dev.path, where, self.max_input)
                payloads.append(data)
                if dev.name == "image":
                    header["images"].append({"payload": len(payloads) - 1})
                else:
                    header["inputs"].append({"alias": dev.alias, "payload": len(payloads) - 1})
        for dev in inst.writable():
            header["outputs"].append({"alias": dev.alias, "limit": self.max_output})
        if inst.node.connect and inst.node.device("stdout") is None:
            header["outputs"].append({"alias": "/dev/stdout", "limit": self.max_output})
        return {"header": header, "payloads": payloads, "local": target, "account": account}

    def execute(self, req: Request, inst: jobs.Instance, plan: dict, fed: dict) -> Result:
        result = Result(inst)
        header = json.loads(json.dumps(plan["header"]))
        payloads = list(plan["payloads"])
        for source in inst.sources:
            payloads.append(fed.get(source, b""))
            header["inputs"].append({"alias": jobs.CONNECT_PREFIX + source, "payload": len(payloads) - 1})
        body = protocol.pack(header, payloads)
        local = plan["local"]
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
            path = "/" + plan["account"]
            headers = {}
        headers.update({"X-Backend-Storage-Policy-Index": str(policy_index),
                        "Content-Length": str(len(body)),
                        "X-Trans-Id": req.environ.get("swift.trans_id", "")})
        last = (503, f"node {inst.name!r}: no object server could run it")
        for node in nodes:
            status, reason, data, colocated = self.send(node, partition, path, headers, body)
            if status == 200:
                try:
                    reply, outputs = protocol.decode(data)
                except protocol.ProtocolError as e:
                    return result.fail(503, f"node {inst.name!r}: bad reply from {node['ip']}: {e}")
                result.report = reply.get("report", {})
                result.outputs = dict(zip(reply.get("outputs", []), outputs))
                result.colocated = colocated
                code = result.report.get("exit_code", 10)
                status = EXIT_STATUS.get(code, 503)
                if status != 200:
                    result.fail(status, f"node {inst.name!r}: {result.report.get('exit_state', 'failed')}")
                return result
            last = (status, f"node {inst.name!r}: {reason}")
            # Another replica may have the object or a free slot; anything else is final.
            if status not in (404, 503, 507, 429):
                break
        if last[0] == 404 and local is not None:
            last = (404, f"node {inst.name!r}: {local.path} not found on any replica")
        return result.fail(*last)

    def send(self, node: dict, partition, path: str, headers: dict, body: bytes):
        """One EXECUTE to one object server -> (status, reason, body, colocated)."""
        try:
            with ConnectionTimeout(self.conn_timeout):
                conn = http_connect(node["ip"], node["port"], node["device"], partition, EXECUTE,
                                    path, headers=headers)
            with Timeout(self.timeout + 30):
                conn.send(body)
                resp = conn.getresponse()
                data = resp.read()
        except (Exception, Timeout) as e:
            return 503, f"object server {node['ip']}:{node['port']}/{node['device']} failed: {e}", b"", "0"
        reason = data.decode("utf-8", "replace").strip() if resp.status != 200 else ""
        return resp.status, reason, data, resp.getheader("X-Nexe-Colocated") or "0"

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
        headers = {
            "X-Nexe-System": ",".join(r.inst.name for r in results),
            "X-Nexe-Status": ",".join(header_value(r.report.get("exit_state", r.reason or "not run"))
                                      for r in results),
            "X-Nexe-Retcode": ",".join(str(r.report.get("user_rc", 0)) for r in results),
            "X-Nexe-Etag": ",".join(header_value(r.report.get("etag", "disable")) for r in results),
            "X-Nexe-Validation": ",".join(str(r.report.get("validator", 2)) for r in results),
            "X-Nexe-Colocated": ",".join(r.colocated for r in results),
            "X-Nexe-Cdr-Line": ", ".join([f"{time.time() - started:.3f}"] + [
                f"{r.report.get('elapsed', 0):.3f}, {r.report.get('cdr', '0 0 0 0 0 0 0 0 0 0')}"
                for r in results]),
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
