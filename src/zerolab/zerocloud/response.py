"""The proxy filter's answer to a job: the immediate outputs and ZeroCloud's X-Nexe-* headers.

Each X-Nexe-* header has one comma-separated element per instance that was
tried, in the order they ran (an instance that never got a report shows the
reason it failed and no accounting).  A job that failed answers with the
first failure's status, its reason and the tail of its stderr; one that ran
answers 200 with the outputs that have no swift:// path, joined.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from swift.common.swob import Response

from zerolab.sandbox import status as exit_status

from . import job as jobs
from . import protocol

STDERR_TAIL = 2000


def one_line(reason: str) -> str:
    return " ".join(reason.split())


def text(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    resp = Response(status=status, body=(reason.rstrip("\n") + "\n").encode(),
                    content_type="text/plain")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def header_value(value: str) -> str:
    """One element of an aggregated X-Nexe-* header: one line, no commas."""
    return " ".join(str(value).split()).replace(",", ";")


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


def not_run(reason: str) -> protocol.JobReport:
    """What the X-Nexe-* headers show for an instance without a report: the
    reason it failed, validator 2 (never loaded), no accounting."""
    return protocol.JobReport(exit_code=exit_status.INTERNAL, exit_state=reason or "not run", user_rc=0,
                              validator=2, etag="disable", elapsed=0.0, cdr=exit_status.NO_ACCOUNTING)


def nexe_headers(results: list[Result], started: float) -> dict[str, str]:
    reports = [r.report or not_run(r.reason) for r in results]
    return {
        "X-Nexe-System": ",".join(r.inst.name for r in results),
        "X-Nexe-Status": ",".join(header_value(r.exit_state) for r in reports),
        "X-Nexe-Retcode": ",".join(str(r.user_rc) for r in reports),
        "X-Nexe-Etag": ",".join(header_value(r.etag) for r in reports),
        "X-Nexe-Validation": ",".join(str(r.validator) for r in reports),
        "X-Nexe-Colocated": ",".join(r.colocated for r in results),
        "X-Nexe-Cdr-Line": ", ".join([f"{time.time() - started:.3f}"] + [
            f"{r.elapsed:.3f}, {r.cdr}" for r in reports]),
    }


def job_response(results: list[Result], started: float) -> Response:
    headers = nexe_headers(results, started)
    failed = next((r for r in results if r.status != 200), None)
    if failed is not None:
        headers["X-Nexe-Error"] = header_value(failed.reason)
        stderr = failed.outputs.get("/dev/stderr", b"")[-STDERR_TAIL:].decode("utf-8", "replace")
        return text(failed.status, failed.reason + ("\nstderr:\n" + stderr if stderr else ""), headers)
    body: list[bytes] = []
    ctype = None
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
