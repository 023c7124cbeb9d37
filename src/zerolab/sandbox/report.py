"""A job's Report, as ZeroVM wrote it: exit state, return code, etags, accounting.

Free of wasmtime, so that the Swift filters and the executor daemon, which
only pass reports along, can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .status import EXIT_NAMES, OK, accounting_line


@dataclass
class ChannelReport:
    alias: str
    reads: int = 0
    read_bytes: int = 0
    writes: int = 0
    write_bytes: int = 0
    etag: str | None = None


@dataclass
class Report:
    exit_code: int
    exit_state: str
    user_rc: int = 0
    validator: int = 0           # 0: the program loaded; 1: it did not
    etag: str = "disable"
    channels: list[ChannelReport] = field(default_factory=list)
    outputs: dict[str, bytes] = field(default_factory=dict)   # memory channels' contents
    elapsed: float = 0.0
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    wasi_calls: int = 0
    memory_etag: str | None = None   # when Memory's etag field is 1
    # The first channel limit the guest hit ("/dev/stdin gets limit 3
    # reached"): its call got EDQUOT and it went on, as under ZeroVM, so the
    # exit code stays the guest's; callers whose limits guard data (zerocloud)
    # decide what a hit means for them.
    quota_hit: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    @property
    def stdout(self) -> bytes | None:
        return self.outputs.get("/dev/stdout")

    @property
    def stderr(self) -> bytes | None:
        return self.outputs.get("/dev/stderr")

    @property
    def accounting(self) -> dict[str, int]:
        return {
            "reads": sum(c.reads for c in self.channels),
            "read_bytes": sum(c.read_bytes for c in self.channels),
            "writes": sum(c.writes for c in self.channels),
            "write_bytes": sum(c.write_bytes for c in self.channels),
        }

    @property
    def accounting_line(self) -> str:
        a = self.accounting
        return accounting_line(self.cpu_sys, self.cpu_user, a["reads"], a["read_bytes"], a["writes"],
                               a["write_bytes"])

    def as_text(self) -> str:
        """ZeroVM's report: validator state, daemon state, user return code,
        etag(s), accounting (sys user reads rbytes writes wbytes + 4 network
        counters, always 0 here), exit state."""
        return "\n".join([str(self.validator), "0", str(self.user_rc), self.etag, self.accounting_line,
                          self.exit_state]) + "\n"


def failure(code: int, message: str, validator: int = 0) -> Report:
    return Report(exit_code=code, exit_state=f"{EXIT_NAMES[code]}: {message}", validator=validator,
                  user_rc=0)


def first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


def trap_reason(message: str) -> str:
    """wasmtime's trap text is a backtrace; the reason is its 'wasm trap:' line."""
    for line in str(message).splitlines():
        if line.strip().startswith("wasm trap:"):
            return line.strip()[len("wasm trap:"):].strip()
    return first_line(message)
