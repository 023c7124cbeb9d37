"""One job through the proxy filter, once parsed: every instance planned (what
it reads checked and fetched) before any runs, then the stages in order, each
instance sent to an object server that can run it, connected stdouts fed
forward, outputs with a swift:// path written as the caller.  The first
failing stage ends the job.

Each instance's outputs are spooled as its reply arrives (response.Spool);
connected stdouts are sent on, and outputs written, from their spools, a
piece at a time.  The job's spools go with its answer (closed when its body
is), or are closed here when the job ends in an exception.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

from eventlet import GreenPool, spawn
from swift.common.http import is_success
from swift.common.swob import Request, Response

from zerolab.sandbox import status as exit_status

from . import job as jobs
from . import protocol
from .job import JobError
from .proxy_config import ProxyConfig
from .response import Result, Segment, Spool, close_spools, job_response
from .routing import ObjectServerClient, Piece, ReplicaRouter
from .subrequests import CallerSubrequests, JobCost

# Statuses after which another replica may have the object or a free slot;
# anything else is final.
TRY_NEXT_REPLICA = (404, 503, 507, 429)


@dataclass(frozen=True)
class Plan:
    """One instance, ready to send: its request, the payloads that request
    names, the readable device read where it is stored (None: run anywhere),
    and the caller's account."""

    request: protocol.RunRequest
    payloads: list[bytes]
    local: jobs.Device | None
    account: str


class JobRun:
    """The stages of one job, run for the caller of ``req``."""

    def __init__(self, req: Request, config: ProxyConfig, objects: CallerSubrequests, router: ReplicaRouter,
                 object_servers: ObjectServerClient):
        self.req = req
        self.config = config
        self.objects = objects
        self.router = router
        self.object_servers = object_servers
        self.cost = JobCost(config.max_job_input, config.max_job_output)
        self.spools: list[Spool] = []   # every reply kept, until the answer is closed

    def run(self, stages: list[list[jobs.Instance]], started: float) -> Response:
        try:
            return self.run_stages(stages, started)
        except BaseException:
            close_spools(self.spools)
            raise

    def run_stages(self, stages: list[list[jobs.Instance]], started: float) -> Response:
        # Everything a node reads is checked before anything runs.
        plans: dict[str, Plan] = {}
        for stage in stages:
            for inst in stage:
                plans[inst.name] = self.plan(inst)
        results: list[Result] = []
        fed: dict[str, Segment] = {}     # instance name -> stdout, for connect
        pool = GreenPool(self.config.concurrency)
        for stage in stages:
            stage_results = list(pool.imap(lambda i: self.execute(i, plans[i.name], fed), stage))
            results += stage_results
            if any(r.status != 200 for r in stage_results):
                break
            for r in stage_results:
                stdout = r.outputs.get("/dev/stdout")
                if r.inst.node.connect and stdout is not None:
                    fed[r.inst.name] = stdout
            for r in stage_results:
                self.store_outputs(r)
            if any(r.status != 200 for r in stage_results):
                break
        return job_response(results, started, self.spools)

    def plan(self, inst: jobs.Instance) -> Plan:
        """The executor request for one instance (protocol.py), and its payloads."""
        req, cost, config = self.req, self.cost, self.config
        account = req.split_path(2, 4, True)[1]
        where = f"node {inst.name!r}"
        payloads: list[bytes] = []
        inputs: list[protocol.InputChannel] = []
        images: list[protocol.ExtraImage] = []
        local = inst.colocate
        # The input's HEAD runs while the program is checked: two round trips at once.
        local_head = (spawn(self.objects.check_readable, req, local.path, where)
                      if local is not None and local.path is not None else None)
        program = inst.node.program
        if program.swift is not None:
            payloads.append(self.objects.program(req, cost, program.swift, where))
            source = protocol.ProgramSource(payload=len(payloads) - 1)
        else:
            source = protocol.ProgramSource(image=program.image, path=program.path)
        argv0 = inst.node.exec_name or inst.name
        target = None
        for dev in inst.readable():
            if dev.data is not None:
                payloads.append(dev.data)
                inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
            elif dev is local and local_head is not None:
                head = local_head.wait()
                size = head.content_length or 0
                if size > config.max_input:
                    raise JobError(413, f"{where}: {dev.path} is {size} bytes, more than zerovm_maxinput "
                                        f"({config.max_input})")
                target = dev
            elif dev.path is not None:   # read elsewhere: fetched here, sent along
                data = self.objects.fetch_input(req, cost, dev.path, where)
                payloads.append(data)
                if dev.name == "image":
                    images.append(protocol.ExtraImage(len(payloads) - 1))
                else:
                    inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
        # No single output may be larger than what the whole job may return.
        limit = min(config.max_output, config.max_job_output)
        outputs = [protocol.OutputChannel(dev.alias, limit) for dev in inst.writable()]
        if inst.node.connect and inst.node.device("stdout") is None:
            outputs.append(protocol.OutputChannel("/dev/stdout", limit))
        request = protocol.RunRequest(
            program=source, program_name=str(program), args=(argv0, *inst.args), env=inst.node.env,
            timeout=config.timeout, memory=config.max_memory, inputs=tuple(inputs), outputs=tuple(outputs),
            images=tuple(images))
        return Plan(request, payloads, target, account)

    def execute(self, inst: jobs.Instance, plan: Plan, fed: dict[str, Segment]) -> Result:
        result = Result(inst)
        payloads: list[Piece] = list(plan.payloads)
        inputs = list(plan.request.inputs)
        for source in inst.sources:
            payloads.append(fed.get(source, b""))
            inputs.append(protocol.InputChannel(jobs.CONNECT_PREFIX + source, payload=len(payloads) - 1))
        request = replace(plan.request, inputs=tuple(inputs))
        # Sent as its pieces: one joined body per instance in flight would
        # copy every program and input it carries; spooled ones are read a
        # piece at a time.
        header = protocol.frame_header(dict(request.to_wire(), payloads=[len(p) for p in payloads]))
        pieces: list[Piece] = [header, *(p for p in payloads if len(p))]
        route = self.router.route(self.req, plan.local, plan.account)
        headers = dict(route.headers, **{"Content-Length": str(sum(map(len, pieces)))})
        last = (503, f"node {inst.name!r}: no object server could run it")
        for node in route.nodes:
            answer = self.object_servers.send(node, route.partition, route.path, headers, pieces,
                                              self.cost.outputs, self.new_spool)
            if answer.reply is not None:   # a 200, spooled
                spooled = answer.reply
                try:
                    reply = protocol.RunReply.from_wire(spooled.header)
                except protocol.ProtocolError as e:
                    self.cost.outputs.give_back(spooled.taken)
                    spooled.spool.close()
                    return result.fail(503, f"node {inst.name!r}: bad reply from {node['ip']}: {e}")
                self.spools.append(spooled.spool)
                result.report = reply.report
                result.outputs = dict(zip(reply.outputs, spooled.payloads))
                result.colocated = answer.colocated
                status = exit_status.http_status(reply.report.exit_code)
                if status != 200:
                    result.fail(status, f"node {inst.name!r}: {reply.report.exit_state}")
                return result
            last = (answer.status, f"node {inst.name!r}: {answer.reason}")
            if answer.final or answer.status not in TRY_NEXT_REPLICA:
                break
        if last[0] == 404 and plan.local is not None:
            last = (404, f"node {inst.name!r}: {plan.local.path} not found on any replica")
        return result.fail(*last)

    def new_spool(self) -> Spool:
        return Spool(self.config.spool_dir)

    def store_outputs(self, result: Result) -> None:
        for dev in result.inst.writable():
            if dev.path is None:
                continue
            output = result.outputs.get(dev.alias)
            resp = self.objects.store(self.req, dev.path, output.reader() if output is not None else io.BytesIO(),
                                      len(output) if output is not None else 0, dev.content_type)
            if not is_success(resp.status_int):
                status = resp.status_int if resp.status_int < 500 else 503
                result.fail(status, f"node {result.inst.name!r}: cannot write {dev.path}: {resp.status}")
                return
