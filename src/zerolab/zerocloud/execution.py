"""One job through the proxy filter, once parsed: every instance planned
before any runs, then the stages in order, each instance sent to an object
server that can run it, connected stdouts fed forward, outputs with a
swift:// path written as the caller.  The first failing stage ends the job.

What a node reads is checked in two steps.  Before anything runs, the
caller is authorized for every swift:// object each node reads where it is
stored (its program, its colocated input) by the same ACL check Swift's
object GET makes (subrequests.authorize_read: cheap, the container's info
is cached); a refusal is the job's answer and nothing runs.  The objects'
own HEADs (they exist, are plain objects, the input within
zerovm_maxinput, the program's etag) then run beside the nodes instead of
before them: a node whose program is in the proxy's cache is sent at once
with those bytes (a program not cached is still HEADed and fetched first).
A stage's results are accepted only once its instances' HEADs agree
(settle): an instance they refuse fails with their answer and what it
returned is dropped unread; one whose program changed since the cached
bytes runs again, once, with the new ones.  Only then are its stdouts fed
on, its outputs written or returned.

Each instance's outputs are spooled as its reply arrives (response.Spool);
connected stdouts are sent on, and outputs written, from their spools, a
piece at a time.  The job's spools go with its answer (closed when its body
is), or are closed here when the job ends in an exception.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from eventlet import GreenPool, spawn
from swift.common.http import is_success
from swift.common.swob import Request, Response

from zerolab.sandbox import status as exit_status

from . import connect_streams, protocol
from . import job as jobs
from .connect_streams import CONNECT_HEADER, TargetFeed, Wiring
from .job import JobError, SwiftPath
from .proxy_config import CONNECT_MODES, ProxyConfig
from .response import Result, Segment, Spool, answered, close_spools, header_value, job_response, streamed_response
from .routing import (
    Answer,
    ObjectServerClient,
    OpenReply,
    Piece,
    ReplicaRouter,
    RingNode,
    Route,
    Started,
    StreamedReply,
)
from .subrequests import CallerSubrequests, JobCost, Program, content_type, etag_of, refuse_unless_plain

# Statuses after which another replica may have the object or a free slot;
# anything else is final.
TRY_NEXT_REPLICA = (404, 503, 507, 429)
# Statuses of a streamed instance that no server started which the same job
# run staged may not meet: every executor was busy (a job with streams does
# not wait for a slot), or no object server answered.
STAGE_WHEN_UNSTARTED = (429, 503)


T = TypeVar("T", covariant=True)
Fed = dict[tuple[str, str | None], Segment]


class Pending(Protocol[T]):
    """A green thread's outcome (eventlet.spawn): wait() returns it, or raises."""

    def wait(self) -> T: ...


@dataclass(frozen=True)
class JobProgram:
    """A swift:// program as this job runs it: the bytes sent and their etag,
    and the object's HEAD still to agree with them when they came from the
    proxy's cache (None: checked and fetched before the run)."""

    path: SwiftPath
    program: Program
    head: Pending[Response] | None


@dataclass(frozen=True)
class Plan:
    """One instance, ready to send: its request, the payloads that request
    names (a swift:// program first), the readable device read where it is
    stored (None: run anywhere), the caller's account, and its swift://
    program."""

    request: protocol.RunRequest
    payloads: list[bytes]
    local: jobs.Device | None
    account: str
    program: JobProgram | None = None


@dataclass(frozen=True)
class Verdict:
    """What an instance's object HEADs say of its run: refused (the node's
    answer), or its program's etag now when that is not the one of the bytes
    that ran (it must run again), or neither (its result stands)."""

    refused: JobError | None = None
    changed: str | None = None


@dataclass(frozen=True)
class Launched:
    """An instance of a streamed job as its start left it: its result so
    far, what the rest of its reply comes from (None: no server took it),
    and its stream outputs' aliases by their frames' numbers."""

    result: Result
    started: Started | None
    stream_outputs: tuple[str, ...]
    streaming: bool = True   # False: a node of the job that connects nowhere, run as staged runs it


class GuessWrong(Exception):
    """An object a GET execution ran without its HEAD first is not what it
    was taken for (another type, or refused): nothing of the run is kept."""


def answers_as_it_comes(stages: list[list[jobs.Instance]]) -> bool:
    """Whether a job is one instance, run once, that writes no object: all
    it returns goes to the caller, who can have it as it comes."""
    if len(stages) != 1 or len(stages[0]) != 1:
        return False
    inst = stages[0][0]
    return inst.node.replicate <= 1 and all(dev.path is None for dev in inst.writable())


class JobRun:
    """The stages of one job, run for the caller of ``req``."""

    def __init__(self, req: Request, config: ProxyConfig, objects: CallerSubrequests, router: ReplicaRouter,
                 object_servers: ObjectServerClient, cost: JobCost, heads: Mapping[str, Response] | None = None,
                 guessed: Mapping[str, str] | None = None):
        self.req = req
        # Object HEADs the request made before the job (a GET execution's
        # object), by swift:// path: an instance reading one checks it with
        # that answer instead of asking again.
        self.heads = dict(heads or {})
        # Objects a GET execution ran before their HEAD, by swift:// path,
        # and the type it took each for: the instance that reads one where it
        # is stored checks it beside its run, and a HEAD that disagrees
        # raises GuessWrong (proxy.open then makes the HEAD first).
        self.guessed = dict(guessed or {})
        self.config = config
        self.objects = objects
        self.router = router
        self.object_servers = object_servers
        self.cost = cost   # what the job has cost since its request came (its app, its source)
        self.spools: list[Spool] = []   # every reply kept, until the answer is closed
        # Per program path, the version this job runs, and the new one
        # fetched when the object changed under a cached version.
        self.programs: dict[str, JobProgram] = {}
        self.refetched: dict[str, Pending[Program]] = {}

    def run(self, stages: list[list[jobs.Instance]], started: float) -> Response:
        try:
            return self.run_stages(stages, started)
        except BaseException:
            close_spools(self.spools)
            raise

    def run_stages(self, stages: list[list[jobs.Instance]], started: float) -> Response:
        staged_because = self.connect_mode(stages)
        # Every node authorized for what it reads (and what is sent along
        # fetched) before anything runs.
        plans: dict[str, Plan] = {}
        for stage in stages:
            for inst in stage:
                plans[inst.name] = self.plan(inst)
        if set(self.guessed) - {str(p.local.path) for p in plans.values() if p.local is not None}:
            raise GuessWrong("no instance reads the object where it is stored, so none would check it")
        # The objects' HEADs start now and run beside the nodes, a stage's
        # after the stage before's; a stage waits for its own before its
        # results count.
        checks: list[Pending[list[Verdict]]] = []
        for stage in stages:
            checks.append(spawn(self.check_stage, stage, plans, checks[-1] if checks else None))
        if staged_because is None and answers_as_it_comes(stages):
            return self.run_answered_as_it_comes(stages[0][0], plans[stages[0][0].name], checks[0], started)
        if staged_because == "":
            streamed = self.run_streamed(stages, plans, checks)
            if not isinstance(streamed, str):
                return self.answer(streamed, started, "streamed")
            staged_because = streamed
        results: list[Result] = []
        # What connect feeds on: (source, None) -> its stdout, (source, target) -> its /dev/out/<target>.
        fed: Fed = {}
        pool = GreenPool(self.config.concurrency)
        for number, (stage, checked) in enumerate(zip(stages, checks)):
            stage_results = list(pool.imap(lambda i: self.execute(i, plans[i.name], fed), stage))
            # Nothing a run returned is fed on, written or answered before this.
            stage_results = self.settle(stage_results, checked.wait(), plans, fed, pool)
            results += stage_results
            if any(r.status != 200 and not r.node_failed for r in stage_results):
                break   # the job's answer is that failure
            finished = [r for r in stage_results if r.status == 200]
            for r in finished:
                stdout = r.outputs.get("/dev/stdout")
                if r.inst.node.connect and stdout is not None:
                    fed[r.inst.name, None] = stdout
                for target in r.inst.targets:
                    out = r.outputs.get(jobs.OUT_PREFIX + target)
                    if out is not None:
                        fed[r.inst.name, target] = out
            for r in finished:
                self.store_outputs(r)
            if any(r.status != 200 and not r.node_failed for r in stage_results):
                break
            stopped = next((r for r in stage_results if r.node_failed), None)
            if stopped is not None:
                # What comes after a stopped node would read its missing
                # output: not run, and said so per node.
                later = stages[number + 1:]
                results += [Result(inst).skip(f"not run: node {stopped.inst.name!r} was stopped")
                            for rest in later for inst in rest]
                break
        return self.answer(results, started, None if staged_because is None else f"staged: {staged_because}")

    def run_answered_as_it_comes(self, inst: jobs.Instance, plan: Plan, checked: Pending[list[Verdict]],
                                 started: float) -> Response:
        """A job of one instance whose outputs all come back to the caller:
        its reply is read up to its payloads, and once its HEADs agree it
        goes on to the caller as it comes, not spooled (its Etag is the
        worker's MD5).  A reply that cannot (a node stopped, several
        outputs, no digest) is spooled and answered as any run; one the
        HEADs do not accept is hung up on, unread, and settled as any."""
        pieces, route = self.request_of(inst, plan, {})
        headers = dict(route.headers, **{"Content-Length": str(sum(map(len, pieces)))})
        answer, node = self.first_to_take(inst, plan, route, lambda node: self.object_servers.open_reply(
            node, route.partition, route.path, headers, pieces, self.cost.outputs))
        opened = answer.opened
        result, reply = Result(inst), None
        if node is None or opened is None:
            result.fail(answer.status, answer.reason)
        else:
            result, reply = self.take_header(result, opened, node, answer.colocated)
        if opened is not None and node is not None and reply is not None:
            digests = dict(zip(reply.outputs, reply.digests))
            lengths = dict(zip(reply.outputs, opened.lengths))
            kept, _ = answered(inst, lengths)
            if result.status != 200 or len(kept) > 1 or any(not digests.get(alias) for alias in kept):
                spooled = self.object_servers.spool_opened(opened, node, answer.colocated, self.cost.outputs,
                                                           self.new_spool())
                if spooled.status == 200:
                    result = self.take_reply(Result(inst), spooled, node)
                else:
                    result = Result(inst).fail(spooled.status, f"node {inst.name!r}: {spooled.reason}")
            else:
                try:
                    [verdict] = checked.wait()
                except BaseException:
                    opened.close()
                    raise
                if verdict.refused is None and verdict.changed is None:
                    body = StreamedReply(opened, [alias in kept for alias in reply.outputs], self.cost.outputs,
                                         self.config.timeout + 30)
                    return streamed_response(result, lengths, digests, started, body)
                opened.close()   # settled below as a refused or changed run, its outputs never read
                self.cost.outputs.give_back(opened.taken)
        settled = self.settle([result], checked.wait(), {inst.name: plan}, {}, GreenPool(1))
        return self.answer(settled, started, None)

    def take_header(self, result: Result, opened: OpenReply, node: RingNode,
                    colocated: str) -> tuple[Result, protocol.RunReply | None]:
        """An opened reply's header as the instance's result so far: its
        report and status (its outputs still on the wire)."""
        try:
            reply = protocol.RunReply.from_wire(opened.header)
        except protocol.ProtocolError as e:
            opened.close()
            self.cost.outputs.give_back(opened.taken)
            return result.fail(503, f"node {result.inst.name!r}: bad reply from {node['ip']}: {e}"), None
        result.report, result.colocated = reply.report, colocated
        status = exit_status.http_status(reply.report.exit_code)
        if status != 200:
            result.fail(status, f"node {result.inst.name!r}: {reply.report.exit_state}")
        return result, reply

    def answer(self, results: list[Result], started: float, mode: str | None) -> Response:
        resp = job_response(results, started, self.spools)
        if mode is not None:
            resp.headers[CONNECT_HEADER] = header_value(mode)
        return resp

    def connect_mode(self, stages: list[list[jobs.Instance]]) -> str | None:
        """How the job's connect runs: "" streamed, else why staged (None:
        the job has no connect).  The filter's zerovm_connect says; a
        request's X-Zerolab-Connect: staged stages that job too."""
        wanted = self.req.headers.get(CONNECT_HEADER)
        if wanted is not None and wanted not in CONNECT_MODES:
            raise JobError(400, f"{CONNECT_HEADER} must be streamed or staged (got {wanted!r:.40})")
        if not any(inst.sources for stage in stages for inst in stage):
            return None
        # A request may ask for staged, never for more than the operator allows.
        if self.config.connect == "staged":
            return "zerovm_connect = staged"
        if wanted == "staged":
            return "asked for"
        return connect_streams.why_staged(stages, self.config.concurrency) or ""

    def run_streamed(self, stages: list[list[jobs.Instance]], plans: dict[str, Plan],
                     checks: list[Pending[list[Verdict]]]) -> list[Result] | str:
        """Every instance at once, connect's channels streamed between them
        (connect_streams.py): started last stage first, so that a target
        takes its request before its sources' first frames; then every
        reply read side by side, each source's frames sent on to its
        targets as they come.  The results then stand as a staged run's
        would: the HEADs' verdicts, then stage by stage, a failure ending
        the job and a stopped node dropping what came after it, since that
        read its stopped output.  A string: why nothing of this run is kept
        and the job runs staged (an instance found no free executor at once,
        or a program changed while it ran)."""
        instances = [inst for stage in stages for inst in stage]
        wiring = connect_streams.wire(instances)
        feeds = {inst.name: TargetFeed(wiring.inputs[inst.name]) for inst in instances if inst.name in wiring.inputs}
        pool = GreenPool(len(instances))
        launched = dict(pool.imap(lambda inst: (inst.name, self.start(inst, plans[inst.name], wiring)),
                                  reversed(instances)))
        unstarted = next((launch.result for launch in launched.values()
                          if launch.started is None and launch.result.status in STAGE_WHEN_UNSTARTED), None)
        if unstarted is not None:
            for launch in launched.values():
                if launch.started is not None:
                    self.object_servers.abandon(launch.started)
            return f"not every node could start at once ({unstarted.reason})"
        for name, feed in feeds.items():
            taken = launched[name].started
            feed.sock = taken.sock if taken is not None else None
        results = list(pool.imap(lambda inst: self.finish(inst, plans[inst.name], launched[inst.name], wiring, feeds),
                                 instances))
        verdicts = [verdict for checked in checks for verdict in checked.wait()]
        if any(verdict.changed is not None for verdict in verdicts):
            for result in results:
                self.discard(result)
            return "a program changed while the job ran"
        for result, verdict in zip(results, verdicts):
            if verdict.refused is not None:
                self.discard(result)
                result.fail(verdict.refused.status, verdict.refused.reason)
        kept: list[Result] = []
        for stage in stages:
            stage_results, results = results[:len(stage)], results[len(stage):]
            kept += stage_results
            if any(r.status != 200 and not r.node_failed for r in stage_results):
                break   # the job's answer is that failure
            for r in stage_results:
                if r.status == 200:
                    self.store_outputs(r)
            if any(r.status != 200 and not r.node_failed for r in stage_results):
                break
            stopped = next((r for r in stage_results if r.node_failed), None)
            if stopped is not None:
                for r in results:
                    self.discard(r)
                kept += [Result(r.inst).skip(f"dropped: node {stopped.inst.name!r} was stopped")
                         for r in results]
                results = []
                break
        for r in results:   # after a failure: not answered
            self.discard(r)
        return kept

    def start(self, inst: jobs.Instance, plan: Plan, wiring: Wiring) -> Launched:
        """The instance sent with its connect channels as streams, up to the
        moment a server took it (or none did: its result says why)."""
        inputs = [*plan.request.inputs,
                  *(protocol.InputChannel(alias, stream=True) for alias in wiring.inputs.get(inst.name, []))]
        streamed = wiring.outputs.get(inst.name, set())
        outputs = [replace(o, stream=True) if o.alias in streamed else o for o in plan.request.outputs]
        request = replace(plan.request, inputs=tuple(inputs), outputs=tuple(outputs))
        if not request.streaming:
            return Launched(Result(inst), None, (), streaming=False)
        header = protocol.frame_header(dict(request.to_wire(), payloads=[len(p) for p in plan.payloads]))
        pieces: list[Piece] = [header, *(p for p in plan.payloads if len(p))]
        route = self.router.route(self.req, plan.local, plan.account)
        chunked = bool(request.stream_inputs)
        headers = dict(route.headers, **({"Transfer-Encoding": "chunked"} if chunked else
                                         {"Content-Length": str(sum(map(len, pieces)))}))
        answer, node = self.first_to_take(inst, plan, route, lambda node: self.object_servers.start(
            node, route.partition, route.path, headers, pieces, chunked))
        if node is None:
            return Launched(Result(inst).fail(answer.status, answer.reason), None, ())
        return Launched(Result(inst), answer.started, request.stream_outputs)

    def finish(self, inst: jobs.Instance, plan: Plan, launched: Launched, wiring: Wiring,
               feeds: dict[str, TargetFeed]) -> Result:
        """The rest of a started instance's reply, its stream frames sent on
        to its targets as they come; each of its targets' streams from it
        ended after, however it went.  A node without streams runs now."""
        if not launched.streaming:
            return self.execute(inst, plan, {})
        result, started, aliases = launched.result, launched.started, launched.stream_outputs
        if started is not None:
            def on_frame(number: int, data: bytes) -> None:
                # Counted as staged counts these outputs when it spools them.
                self.cost.outputs.take(len(data))
                if number < len(aliases):
                    for target, alias in wiring.routes[inst.name, aliases[number]]:
                        feeds[target].send(alias, data)
            answer = self.object_servers.finish(started, self.cost.outputs, self.new_spool, on_frame)
            if answer.status != 200:
                answer = Answer(answer.status, f"node {inst.name!r}: {answer.reason}")
            result = self.take_reply(result, answer, started.node)
        for target in inst.targets:
            feeds[target].end([alias for output in wiring.outputs.get(inst.name, ())
                               for t, alias in wiring.routes[inst.name, output] if t == target])
        return result

    def plan(self, inst: jobs.Instance) -> Plan:
        """The executor request for one instance (protocol.py), and its payloads."""
        req, cost, config = self.req, self.cost, self.config
        account = req.split_path(2, 4, True)[1]
        where = f"node {inst.name!r}"
        payloads: list[bytes] = []
        inputs: list[protocol.InputChannel] = []
        images: list[protocol.ExtraImage] = []
        local = inst.colocate
        program = inst.node.program
        # Nothing runs that the caller may not read: the ACL check of a GET,
        # for what the node reads where it is stored (what is sent along is
        # fetched below, as the caller).
        if program.swift is not None:
            self.objects.authorize_read(req, program.swift, where)
        if local is not None and local.path is not None:
            self.objects.authorize_read(req, local.path, where)
        job_program = None
        if program.swift is not None:
            job_program = self.job_program(program.swift, where)
            payloads.append(job_program.program.data)   # payload 0: run_again replaces it
        argv0 = inst.node.exec_name or inst.name
        target = None
        user_image = None   # the payload of the node's image device
        images += [protocol.ExtraImage(sysimage=dev.name) for dev in inst.devices if dev.sysimage]
        for dev in inst.readable():
            if dev.name == "image":   # a tar mounted at /: always sent along, never read in place
                data = dev.data if dev.data is not None else \
                    self.objects.fetch_input(req, cost, dev.path, where) if dev.path is not None else b""
                payloads.append(data)
                user_image = len(payloads) - 1
                images.append(protocol.ExtraImage(user_image))
            elif dev.data is not None:
                payloads.append(dev.data)
                inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
            elif dev is local and dev.path is not None:   # read where it is stored: check_instance
                target = dev
            elif dev.path is not None:   # read elsewhere: fetched here, sent along
                data = self.objects.fetch_input(req, cost, dev.path, where)
                payloads.append(data)
                inputs.append(protocol.InputChannel(dev.alias, payload=len(payloads) - 1))
        if job_program is not None:
            source = protocol.ProgramSource(payload=0)
        elif program.in_user_image:
            assert user_image is not None   # job.parse_node: such a node has an image device
            source = protocol.ProgramSource(payload=user_image, path=program.path)
        else:
            source = protocol.ProgramSource(image=program.image, path=program.path)
        # No single output may be larger than what the whole job may return.
        limit = min(config.max_output, config.max_job_output)
        outputs = [protocol.OutputChannel(dev.alias, limit) for dev in inst.writable()]
        if inst.node.connect and inst.node.device("stdout") is None:
            outputs.append(protocol.OutputChannel("/dev/stdout", limit))
        outputs += [protocol.OutputChannel(jobs.OUT_PREFIX + target, limit) for target in inst.targets]
        request = protocol.RunRequest(
            program=source, program_name=str(program), args=(argv0, *inst.args), env=inst.node.env,
            timeout=config.timeout, memory=config.max_memory, inputs=tuple(inputs), outputs=tuple(outputs),
            images=tuple(images), char=tuple(dev.alias for dev in inst.devices if dev.stream))
        return Plan(request, payloads, target, account, job_program)

    def job_program(self, path: SwiftPath, where: str) -> JobProgram:
        """The version of a swift:// program this job runs, the same for all
        its instances: the cached bytes, whose HEAD starts now and must
        agree before any result counts, or else the object checked and
        fetched now (HEAD, then GET when the cache lacks that etag)."""
        key = str(path)
        found = self.programs.get(key)
        if found is None:
            cached = self.objects.cached_program(path)
            if cached is not None:
                self.objects.take_program(self.cost, path, cached)
                found = JobProgram(path, cached, spawn(self.objects.sub, self.req, "HEAD", path))
            else:
                found = JobProgram(path, self.objects.program(self.req, self.cost, path, where), None)
            self.programs[key] = found
        return found

    def check_stage(self, stage: list[jobs.Instance], plans: dict[str, Plan],
                    before: Pending[list[Verdict]] | None) -> list[Verdict]:
        # One stage's HEADs at a time, zerovm_concurrency at once (each imap
        # has a pool of its own): a job has no more in flight than that,
        # besides its nodes and its programs' HEADs.
        if before is not None:
            before.wait()
        pool = GreenPool(self.config.concurrency)
        return list(pool.imap(lambda inst: self.check_instance(inst, plans[inst.name]), stage))

    def check_instance(self, inst: jobs.Instance, plan: Plan) -> Verdict:
        """The HEADs of what the instance reads where it is stored, as
        they were made before it ran: its input (there, readable, a plain
        object, within zerovm_maxinput) and its cached program (the same,
        and the etag of the bytes it ran)."""
        where = f"node {inst.name!r}"
        refused: JobError | None = None
        if plan.local is not None and plan.local.path is not None:
            guessed = self.guessed.get(str(plan.local.path))
            try:
                made = self.heads.get(str(plan.local.path))
                head = made if made is not None else self.objects.check_readable(self.req, plan.local.path, where)
                if guessed is not None and content_type(head) != guessed:
                    raise GuessWrong(f"{plan.local.path} is no longer {guessed}")
                size = head.content_length or 0
                if size > self.config.max_input:
                    raise JobError(413, f"{where}: {plan.local.path} is {size} bytes, more than zerovm_maxinput "
                                        f"({self.config.max_input})")
            except JobError as e:
                if guessed is not None:
                    raise GuessWrong(f"{plan.local.path}: {e.reason}") from None
                refused = e
        changed = None
        program = plan.program
        if program is not None and program.head is not None:
            # Waited for after the input's HEAD, which ran meanwhile; the
            # program's refusal comes first, as when it was checked first.
            head = program.head.wait()
            try:
                refuse_unless_plain(head, program.path, where)
            except JobError as e:
                return Verdict(refused=e)
            if etag_of(head) != program.program.etag:
                changed = etag_of(head)
        return Verdict(refused=refused) if refused is not None else Verdict(changed=changed)

    def settle(self, results: list[Result], verdicts: list[Verdict], plans: dict[str, Plan],
               fed: Fed, pool: GreenPool) -> list[Result]:
        """A stage's results as its HEADs have them: a refused instance fails
        with their answer and what it returned is dropped unread; one that
        ran a program changed since runs again with the new bytes."""
        again: list[tuple[Result, str]] = []
        for result, verdict in zip(results, verdicts):
            if verdict.refused is not None:
                self.discard(result)
                result.fail(verdict.refused.status, verdict.refused.reason)
            elif verdict.changed is not None:
                again.append((result, verdict.changed))
        if not again:
            return results
        rerun = {r.inst.name: r for r in pool.imap(lambda a: self.run_again(a[0], a[1], plans, fed), again)}
        return [rerun.get(r.inst.name, r) for r in results]

    def run_again(self, result: Result, etag: str, plans: dict[str, Plan], fed: Fed) -> Result:
        """An instance run again with its program's new version (fetched once
        per job), which must be the one its HEAD saw: a program that changes
        twice while the job runs is a 503."""
        self.discard(result)
        inst, plan = result.inst, plans[result.inst.name]
        where = f"node {inst.name!r}"
        assert plan.program is not None   # only a cached program can have changed
        path = plan.program.path
        pending = self.refetched.get(str(path))
        if pending is None:
            pending = self.refetched[str(path)] = spawn(self.objects.program, self.req, self.cost, path, where)
        try:
            program = pending.wait()
        except JobError as e:   # its reason names the instance that fetched it first
            return Result(inst).fail(e.status, e.reason)
        if program.etag != etag:
            return Result(inst).fail(503, f"{where}: program {path} changed while the job ran")
        plan = replace(plan, payloads=[program.data, *plan.payloads[1:]],
                       program=JobProgram(path, program, None))
        return self.execute(inst, plan, fed)

    def discard(self, result: Result) -> None:
        """Drops what an instance's run returned, unread: its spool closed,
        its output budget given back, no report or output left to show."""
        if result.spool is not None:
            self.spools.remove(result.spool)
            result.spool.close()
            self.cost.outputs.give_back(result.taken)
        result.spool, result.taken, result.outputs, result.report, result.colocated = None, 0, {}, None, "0"

    def execute(self, inst: jobs.Instance, plan: Plan, fed: Fed) -> Result:
        pieces, route = self.request_of(inst, plan, fed)
        if inst.node.replicate > 1:
            return self.run_copies(inst, plan, route, pieces)
        return self.run_on(inst, plan, route, pieces)[0]

    def request_of(self, inst: jobs.Instance, plan: Plan, fed: Fed) -> tuple[list[Piece], Route]:
        """An instance's EXECUTE, as its pieces, and where it may go."""
        payloads: list[Piece] = list(plan.payloads)
        inputs = list(plan.request.inputs)
        for source in inst.sources:
            if inst.takes_whole_stdout:
                payloads.append(fed.get((source, None), b""))
                inputs.append(protocol.InputChannel(jobs.CONNECT_PREFIX + source, payload=len(payloads) - 1))
            payloads.append(fed.get((source, inst.name), b""))
            inputs.append(protocol.InputChannel(jobs.IN_PREFIX + source, payload=len(payloads) - 1))
        request = replace(plan.request, inputs=tuple(inputs))
        # Sent as its pieces: one joined body per instance in flight would
        # copy every program and input it carries; spooled ones are read a
        # piece at a time.
        header = protocol.frame_header(dict(request.to_wire(), payloads=[len(p) for p in payloads]))
        pieces: list[Piece] = [header, *(p for p in payloads if len(p))]
        return pieces, self.router.route(self.req, plan.local, plan.account)

    def run_copies(self, inst: jobs.Instance, plan: Plan, route: Route, pieces: list[Piece]) -> Result:
        """ZeroCloud's ``replicate``: copies of the instance, one after
        another, each on a host none of the others ran on (for a colocated
        node, another replica of its object), each compared with the first
        as it comes: the same exit and return codes and the same digests of
        every channel (ZeroVM's determinism), or the node is stopped with
        "replicas disagree".  The first copy's outputs are the node's; a
        later copy's are dropped as soon as it is compared."""
        first: Result | None = None
        places: list[str] = []
        differing: list[str] = []
        servers = list(route.nodes)
        for number in range(1, inst.node.replicate + 1):
            result, used = self.run_on(inst, plan, replace(route, nodes=servers), pieces)
            if used is None:   # no server left that could run this copy
                if first is not None:
                    self.discard(first)
                return result.fail(result.status, f"{result.reason} (copy {number} of replicate "
                                                  f"{inst.node.replicate})")
            # Later copies on other hosts: two devices of one host are one failure.
            servers = [s for s in servers if (s.get("ip"), s.get("port")) != (used.get("ip"), used.get("port"))]
            places.append(result.colocated)
            if first is None:
                first = result
                if result.status != 200:
                    break   # stopped by a limit: nothing to compare
                continue
            if result.report is None or first.report is None or \
                    (result.report.exit_code, result.report.user_rc, result.report.etag) != \
                    (first.report.exit_code, first.report.user_rc, first.report.etag):
                differing.append(result.colocated)
            self.discard(result)   # only its report counted: its outputs go at once
        assert first is not None   # replicate is at least 2
        first.colocated = " ".join(places)
        if differing and first.status == 200 and first.report is not None:
            where = " ".join([places[0], *differing])
            first.report = replace(first.report, exit_state=f"replicas disagree ({where})")
            first.diverged = True
            first.fail(409, f"node {inst.name!r}: its {len(places)} copies wrote different data ({where})")
        return first

    def run_on(self, inst: jobs.Instance, plan: Plan, route: Route,
               pieces: list[Piece]) -> tuple[Result, RingNode | None]:
        """The instance sent to the first of the route's servers that runs
        it (the next one when a server has no copy of its object or no free
        slot): its result, and that server (None: none ran it)."""
        headers = dict(route.headers, **{"Content-Length": str(sum(map(len, pieces)))})
        answer, node = self.first_to_take(inst, plan, route, lambda node: self.object_servers.send(
            node, route.partition, route.path, headers, pieces, self.cost.outputs, self.new_spool))
        result = self.take_reply(Result(inst), answer, node)
        return result, node if result.report is not None else None

    def first_to_take(self, inst: jobs.Instance, plan: Plan, route: Route,
                      send: Callable[[RingNode], Answer]) -> tuple[Answer, RingNode | None]:
        """``send`` to the route's servers in turn until one takes the
        instance (a 200): its answer and that server, or the last refusal
        and None."""
        last = Answer(503, f"node {inst.name!r}: no object server could run it")
        for node in route.nodes:
            answer = send(node)
            if answer.status == 200:
                return answer, node
            last = Answer(answer.status, f"node {inst.name!r}: {answer.reason}")
            if answer.final or answer.status not in TRY_NEXT_REPLICA:
                break
        if last.status == 404 and plan.local is not None:
            last = Answer(404, f"node {inst.name!r}: {plan.local.path} not found on any replica")
        return last, None

    def take_reply(self, result: Result, answer: Answer, node: RingNode | None) -> Result:
        """An object server's answer as the instance's result: its report
        and spooled outputs, its status from the report's exit code."""
        inst = result.inst
        spooled = answer.reply
        if node is None or spooled is None:
            return result.fail(answer.status, answer.reason)
        try:
            reply = protocol.RunReply.from_wire(spooled.header)
        except protocol.ProtocolError as e:
            self.cost.outputs.give_back(spooled.taken)
            spooled.spool.close()
            return result.fail(503, f"node {inst.name!r}: bad reply from {node['ip']}: {e}")
        self.spools.append(spooled.spool)
        result.spool, result.taken = spooled.spool, spooled.taken
        result.report = reply.report
        # The worker's MD5 of each output: the answer's Etag without a second read.
        digests = reply.digests or ("",) * len(reply.outputs)
        result.outputs = {alias: replace(segment, md5=md5)
                          for alias, segment, md5 in zip(reply.outputs, spooled.payloads, digests)}
        result.colocated = answer.colocated
        status = exit_status.http_status(reply.report.exit_code)
        if status != 200:
            result.fail(status, f"node {inst.name!r}: {reply.report.exit_state}")
        return result

    def new_spool(self) -> Spool:
        return Spool(self.config.spool_dir)

    def store_outputs(self, result: Result) -> None:
        for dev in result.inst.writable():
            if dev.path is None:
                continue
            output = result.outputs.get(dev.alias)
            if (len(output) if output is not None else 0) < dev.min_size:
                continue   # ZeroCloud's min_size: a shorter output is not kept
            resp = self.objects.store(self.req, dev.path, output.reader() if output is not None else io.BytesIO(),
                                      len(output) if output is not None else 0, dev.content_type, dev.meta)
            if not is_success(resp.status_int):
                status = resp.status_int if resp.status_int < 500 else 503
                result.fail(status, f"node {result.inst.name!r}: cannot write {dev.path}: {resp.status}")
                return
