"""The proxy filter's answer to a job: the immediate outputs and ZeroCloud's X-Nexe-* headers.

Each X-Nexe-* header has one comma-separated element per instance, in the
order they ran (an instance that never got a report shows the reason it
failed and no accounting).  A job that could not run (refused, a node that
could not start, an answer the proxy could not take) answers with that
failure's status, its reason and the tail of its stderr.  One that ran
answers 200 with the outputs that have no swift:// path, one after another,
as ZeroCloud did also when a limit stopped a node (timeout, memory, quota:
Result.node_failed): that node's status says so, its outputs are dropped,
the nodes of later stages are not run, X-Nexe-Error names the first such
node, and the other nodes' outputs are kept.

Outputs are never held whole.  Each instance's reply is spooled as it
arrives (Spool: its first SPOOL_MEMORY bytes in memory, the rest in an
unnamed temporary file in zerovm_spool_dir); the headers, which need every
instance's report, go out first, then the body is streamed from the spools
in CLIENT_PIECE pieces (OutputStream), and closing it, which the WSGI server
does when the body is sent or the client goes away, closes the spools.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from swift.common.swob import Response

from zerolab.sandbox import status as exit_status

from . import job as jobs
from . import protocol
from .http_status import status_line

STDERR_TAIL = 2000
MAX_ETAG_ELEMENT = 512
# An instance's outputs are held in memory up to this many bytes, then in a file.
SPOOL_MEMORY = 64 << 10
# The answer's body is sent in pieces of this size (Swift's client_chunk_size).
CLIENT_PIECE = 64 << 10


def one_line(reason: str) -> str:
    return " ".join(reason.split())


def text(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    resp = Response(status=status_line(status), body=(reason.rstrip("\n") + "\n").encode(),
                    content_type="text/plain")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def header_value(value: str) -> str:
    """One element of an aggregated X-Nexe-* header: one line, no commas."""
    return " ".join(str(value).split()).replace(",", ";")


class Spool:
    """One instance's outputs, one after another as they arrived: the first
    ``memory`` bytes in memory, then all of them in an unnamed temporary file
    in ``directory`` (None: the system's), gone when the spool is closed."""

    def __init__(self, directory: str | None, memory: int = SPOOL_MEMORY):
        self.file = tempfile.SpooledTemporaryFile(max_size=memory, mode="w+b", dir=directory)
        self.memory = memory
        self.size = 0
        self.on_disk = False

    def append(self, data: bytes) -> None:
        # Rolled over before the piece that would go past the memory, not
        # after it: a 1 MiB piece is not held in memory on its way to the file.
        if not self.on_disk and self.size + len(data) > self.memory:
            self.file.rollover()
            self.on_disk = True
        self.file.seek(self.size)
        self.file.write(data)
        self.size += len(data)

    def read(self, offset: int, size: int) -> bytes:
        # Every reader seeks first: instances of a stage read their inputs
        # from the same spools at once (green threads, one at a time here).
        self.file.seek(offset)
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True, eq=False)
class Segment:
    """One output: ``length`` bytes of a spool from ``offset``, and their
    MD5 as the worker that wrote them reported it ("": not known)."""

    spool: Spool
    offset: int
    length: int
    md5: str = ""

    def __len__(self) -> int:
        return self.length

    def pieces(self, size: int) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.length
        while pos < end:
            piece = self.spool.read(pos, min(size, end - pos))
            if not piece:
                raise OSError(f"spool ended at {pos} of an output that ends at {end}")
            pos += len(piece)
            yield piece

    def tail(self, size: int) -> bytes:
        start = max(self.offset, self.offset + self.length - size)
        return self.spool.read(start, self.offset + self.length - start)

    def reader(self) -> SegmentReader:
        return SegmentReader(self)


class SegmentReader:
    """An output as a file to read (a PUT subrequest's wsgi.input)."""

    def __init__(self, segment: Segment):
        self.segment = segment
        self.pos = 0

    def read(self, size: int | None = -1) -> bytes:
        left = self.segment.length - self.pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = self.segment.spool.read(self.segment.offset + self.pos, n)
        self.pos += len(data)
        return data


def close_spools(spools: Sequence[Spool]) -> None:
    for spool in spools:
        spool.close()


class OutputStream:
    """The answer's body: outputs streamed from their spools, in pieces.

    Closing it (the WSGI server does once the body is sent, or when the
    client goes away) closes every spool of the job; so does reading it to
    the end.  No __len__: swob takes an empty iterable for no body at all."""

    def __init__(self, outputs: Sequence[Segment], spools: Sequence[Spool]):
        self.outputs = list(outputs)
        self.spools = list(spools)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for output in self.outputs:
                yield from output.pieces(CLIENT_PIECE)
        finally:
            self.close()

    def close(self) -> None:
        close_spools(self.spools)


class Result:
    """What happened to one instance: its outputs are segments of its spool,
    which took ``taken`` bytes of the job's output budget."""

    def __init__(self, inst: jobs.Instance):
        self.inst = inst
        self.status = 200
        self.reason = ""
        self.report: protocol.JobReport | None = None
        self.outputs: dict[str, Segment] = {}
        self.colocated = "0"
        self.spool: Spool | None = None
        self.taken = 0
        self.skipped = False
        self.diverged = False   # replicated copies that wrote different data

    def fail(self, status: int, reason: str) -> Result:
        self.status, self.reason = status, reason
        return self

    def skip(self, reason: str) -> Result:
        """Not run, because a node it comes after was stopped."""
        self.status, self.reason, self.skipped = 424, reason, True
        return self

    @property
    def node_failed(self) -> bool:
        """Whether this instance's failure is its own outcome (a limit
        stopped it, or it was skipped after one that was) rather than the
        job's: ZeroCloud answered such a job 200, the node's status saying
        what happened, with the other nodes' outputs."""
        if self.skipped or self.diverged:
            return True
        return self.status != 200 and self.report is not None and \
            self.report.exit_code in exit_status.NODE_LIMITS


def not_run(reason: str) -> protocol.JobReport:
    """What the X-Nexe-* headers show for an instance without a report: the
    reason it failed, validator 2 (never loaded), no accounting."""
    return protocol.JobReport(exit_code=exit_status.INTERNAL, exit_state=reason or "not run", user_rc=0,
                              validator=2, etag="disable", elapsed=0.0, cdr=exit_status.NO_ACCOUNTING)


def etag_element(etag: str) -> str:
    """A node's channel digests, or when there are many (a source of a wide
    connect has one per target) the SHA-1 of them: a header line must stay
    well under what HTTP clients read (http.client: 64 KiB)."""
    if len(etag) <= MAX_ETAG_ELEMENT:
        return etag
    return "digests-sha1 " + hashlib.sha1(etag.encode(), usedforsecurity=False).hexdigest()


def nexe_headers(results: list[Result], started: float) -> dict[str, str]:
    reports = [r.report or not_run(r.reason) for r in results]
    return {
        "X-Nexe-System": ",".join(r.inst.name for r in results),
        "X-Nexe-Status": ",".join(header_value(r.exit_state) for r in reports),
        "X-Nexe-Retcode": ",".join(str(r.user_rc) for r in reports),
        "X-Nexe-Etag": ",".join(header_value(etag_element(r.etag)) for r in reports),
        "X-Nexe-Validation": ",".join(str(r.validator) for r in reports),
        "X-Nexe-Colocated": ",".join(r.colocated for r in results),
        "X-Nexe-Cdr-Line": ", ".join([f"{time.time() - started:.3f}"] + [
            f"{r.elapsed:.3f}, {r.cdr}" for r in reports]),
    }


def job_response(results: list[Result], started: float, spools: Sequence[Spool]) -> Response:
    """The answer; the job's spools go with it (closed with its body, or now
    when the answer does not stream them)."""
    try:
        headers = nexe_headers(results, started)
        failed = next((r for r in results if r.status != 200 and not r.node_failed), None)
        if failed is not None:
            headers["X-Nexe-Error"] = header_value(failed.reason)
            stderr_output = failed.outputs.get("/dev/stderr")
            stderr = (stderr_output.tail(STDERR_TAIL).decode("utf-8", "replace")
                      if stderr_output is not None else "")
            close_spools(spools)
            return text(failed.status, failed.reason + ("\nstderr:\n" + stderr if stderr else ""), headers)
        stopped = next((r for r in results if r.node_failed), None)
        if stopped is not None:
            headers["X-Nexe-Error"] = header_value(stopped.reason)
        body: list[Segment] = []
        ctype = None
        for r in results:
            if r.inst.node.connect or r.status != 200:
                continue   # its stdout went to the nodes it connects to, or it did not finish
            aliases, own_type = answered(r.inst, {alias: len(output) for alias, output in r.outputs.items()})
            body += [r.outputs[alias] for alias in aliases]
            ctype = ctype or own_type
        resp = Response(status=200, app_iter=OutputStream(body, spools), content_type=ctype or "text/plain")
        resp.content_length = sum(output.length for output in body)
        for k, v in headers.items():
            resp.headers[k] = v
        # ZeroCloud sent the MD5 of the time; the MD5 of the body is what an
        # HTTP client can check.  A body of one output has it from the
        # worker's reply; several are read once more, before the headers go
        # (at most zerovm_maxjoboutput).
        resp.headers["Etag"] = body_md5(body)
        if any(r.report is not None for r in results):
            resp.headers["X-Nexe-Cached"] = "true"   # run by a warm executor daemon, as ZeroCloud's daemon mode
    except BaseException:
        close_spools(spools)
        raise
    return resp


def answered(inst: jobs.Instance, lengths: Mapping[str, int]) -> tuple[list[str], str | None]:
    """Of an instance's outputs (their lengths, by alias), those the answer
    carries, in order: without a path, not empty, at least min_size; and
    the answer's type its first pathless device names."""
    aliases: list[str] = []
    ctype = None
    for dev in inst.writable():
        if dev.path is None:
            length = lengths.get(dev.alias, 0)
            if length and length >= dev.min_size:
                aliases.append(dev.alias)
            ctype = ctype or dev.content_type
    return aliases, ctype


def streamed_response(result: Result, lengths: Mapping[str, int], digests: Mapping[str, str], started: float,
                      body: Iterable[bytes]) -> Response:
    """The answer of a job of one instance whose reply goes straight on
    (execution.JobRun.stream_answer): the headers job_response would give,
    its outputs' ``lengths`` and ``digests`` by alias, then ``body``, which
    carries what answered() keeps of them."""
    aliases, ctype = answered(result.inst, lengths)
    resp = Response(status=200, app_iter=body, content_type=ctype or "text/plain")
    resp.content_length = sum(lengths[alias] for alias in aliases)
    for k, v in nexe_headers([result], started).items():
        resp.headers[k] = v
    resp.headers["Etag"] = digests[aliases[0]] if aliases else hashlib.md5(usedforsecurity=False).hexdigest()
    resp.headers["X-Nexe-Cached"] = "true"
    return resp


def body_md5(body: Sequence[Segment]) -> str:
    if len(body) == 1 and body[0].md5:
        return body[0].md5
    digest = hashlib.md5(usedforsecurity=False)
    for output in body:
        for piece in output.pieces(CLIENT_PIECE):
            digest.update(piece)
    return digest.hexdigest()
