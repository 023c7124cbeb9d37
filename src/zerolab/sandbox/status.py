"""How a job ended, as a number, a name and an HTTP status, and its accounting line.

The one table of exit codes (documented in docs/sandbox.md): the sandbox
(executor.py) reports them, ``zerovm`` and ``zvsh`` exit with them, the
executor daemon sends them in its reply, and the proxy filter turns them into
its HTTP status and ZeroVM's ``X-Nexe-*`` headers.

Standard library only: the proxy and object server filters import this in
Swift's own python, where wasmtime is not installed (tests/sandbox/
test_status.py checks that importing it leaves wasmtime unloaded).
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
GUEST_EXIT: Final = 1        # the guest ran and returned a non-zero code (see user_rc)
USAGE: Final = 2             # bad command line (argparse's own code)
BAD_MANIFEST: Final = 3
BAD_INPUT: Final = 4         # missing/unreadable channel file, unknown image, bad NVRAM
INVALID_PROGRAM: Final = 5   # missing, not wasm, or needs imports the sandbox lacks
TIMEOUT: Final = 6
MEMORY: Final = 7
QUOTA: Final = 8             # a channel limit was hit (the guest's call got EDQUOT)
CRASH: Final = 9             # the guest trapped (out-of-bounds access, unreachable, ...)
INTERNAL: Final = 10

EXIT_NAMES: Final[dict[int, str]] = {
    OK: "ok", GUEST_EXIT: "guest exit", USAGE: "usage", BAD_MANIFEST: "bad manifest",
    BAD_INPUT: "bad input", INVALID_PROGRAM: "invalid program", TIMEOUT: "timeout",
    MEMORY: "memory", QUOTA: "quota", CRASH: "crash", INTERNAL: "internal error"}

# The HTTP status a zerocloud job gets for an instance that ended so: the job's
# own result is 200 (the caller reads X-Nexe-Status and X-Nexe-Retcode); what a
# limit stopped is 408/413; what could not run is 400.  A code missing here
# (usage, internal error, or one this proxy does not know) means the node
# failed on our side: 503.
HTTP_STATUS: Final[dict[int, int]] = {
    OK: 200, GUEST_EXIT: 200, CRASH: 200, TIMEOUT: 408, MEMORY: 413, QUOTA: 413,
    BAD_MANIFEST: 400, BAD_INPUT: 400, INVALID_PROGRAM: 400}
HTTP_STATUS_OTHERWISE: Final = 503
# What a limit stopped: in a zerocloud job that is the node's outcome (its
# X-Nexe-Status), not the job's, as ZeroCloud answered.
NODE_LIMITS: Final = (TIMEOUT, MEMORY, QUOTA)


def http_status(exit_code: int) -> int:
    return HTTP_STATUS.get(exit_code, HTTP_STATUS_OTHERWISE)


def accounting_line(cpu_sys: float, cpu_user: float, reads: int, read_bytes: int,
                    writes: int, write_bytes: int) -> str:
    """ZeroVM's accounting (the report's 5th line, each node's part of
    X-Nexe-Cdr-Line): system and user CPU seconds, reads, bytes read, writes,
    bytes written, then ZeroVM's four network counters, always 0 here."""
    return "%.2f %.2f %d %d %d %d 0 0 0 0" % (cpu_sys, cpu_user, reads, read_bytes, writes, write_bytes)


# What X-Nexe-Cdr-Line shows for an instance that never ran.
NO_ACCOUNTING: Final = "0 0 0 0 0 0 0 0 0 0"
