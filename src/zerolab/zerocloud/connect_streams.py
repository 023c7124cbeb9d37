"""connect, streamed: every instance of a job runs at once and what a source
writes to the nodes it connects to goes on to them while it runs, through
the proxy a frame at a time (protocol.py's streams), instead of each stage
waiting for the whole outputs of the one before.

Which channels are streams (wire): a source's ``/dev/out/<target>`` feeds
its target's ``/dev/in/<source>``; its stdout feeds ``/dev/in-<source>`` of
each target that is one instance (as staged connect has it).  A stdout that
no target reads is an output as before.

A job is streamed only where that gives the same result as running it
stage by stage (why_staged): every instance fits in zerovm_concurrency (a
target must be running while its sources are), no node is replicated (its
copies would each need the stream), and no connecting node keeps its
stdout as a device of its own (it would have to go two ways).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventlet import Semaphore

from . import job as jobs
from . import protocol
from .routing import chunk

# The request header that may ask for staged, and the answer's header that
# says which mode ran (and why staged).
CONNECT_HEADER = "X-Zerolab-Connect"


def why_staged(stages: Sequence[Sequence[jobs.Instance]], concurrency: int) -> str | None:
    """Why this job runs stage by stage, or None when it can be streamed."""
    instances = [inst for stage in stages for inst in stage]
    if len(instances) > concurrency:
        return f"its {len(instances)} instances are more than zerovm_concurrency ({concurrency})"
    for inst in instances:
        if inst.node.replicate > 1:
            return f"node {inst.node.name!r} is replicated"
        if inst.node.connect and inst.node.device("stdout") is not None:
            return f"node {inst.node.name!r} keeps the stdout it connects"
    return None


@dataclass
class Wiring:
    """Which channels are streams and where each goes."""

    # target -> the aliases of its stream inputs, in the order of their numbers
    inputs: dict[str, list[str]] = field(default_factory=dict)
    # source -> the aliases of the outputs it streams
    outputs: dict[str, set[str]] = field(default_factory=dict)
    # (source, output alias) -> [(target, input alias)]
    routes: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, source: str, output: str, target: str, alias: str) -> None:
        self.inputs.setdefault(target, []).append(alias)
        self.outputs.setdefault(source, set()).add(output)
        self.routes.setdefault((source, output), []).append((target, alias))


def wire(instances: Sequence[jobs.Instance]) -> Wiring:
    wiring = Wiring()
    for target in instances:
        for source in target.sources:
            if target.takes_whole_stdout:
                wiring.add(source, "/dev/stdout", target.name, jobs.CONNECT_PREFIX + source)
            wiring.add(source, jobs.OUT_PREFIX + target.name, target.name, jobs.IN_PREFIX + source)
    return wiring


class TargetFeed:
    """One target's request body while it runs: its sources' frames, each sent
    as a chunk as it comes; each stream's end; and the body's end with the
    last stream's (the target's object server reads the body to its end
    before its answer ends).  Frames for a target that did not start, or
    whose connection broke, are dropped: its result is not kept then."""

    def __init__(self, aliases: Sequence[str]):
        self.numbers = {alias: number for number, alias in enumerate(aliases)}
        self.open = set(self.numbers)
        self.sock: Any = None
        self.broken = False
        self.lock = Semaphore()   # a frame's chunk goes whole, whichever source sends

    def send(self, alias: str, data: bytes) -> None:
        if alias not in self.open:
            return
        piece = chunk(protocol.frame(self.numbers[alias], data))
        if not data:
            self.open.discard(alias)
            if not self.open:
                piece += chunk(b"")
        self._send(piece)

    def end(self, aliases: Sequence[str]) -> None:
        """Ends what a source did not end itself (it failed, or never started)."""
        for alias in aliases:
            self.send(alias, b"")

    def _send(self, data: bytes) -> None:
        if self.sock is None or self.broken:
            return
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.broken = True   # its own reply says what happened
            except BaseException:
                # Cut mid-chunk (the sender's deadline): nothing may follow
                # a partial chunk on this body.
                self.broken = True
                raise
