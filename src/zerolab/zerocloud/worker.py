"""One executor worker: a process that runs jobs in the sandbox, one at a time.

The executor daemon (executord.py) keeps a warm pool of these and hands each
job to an idle one over a socketpair: the request's header, the client's
connected socket and the object's data file (protocol.py).  The worker reads
the payloads from the client and writes the reply to it, so no byte of a job
passes through the daemon.  A worker keeps what makes jobs cheap: compiled
modules and image indexes, in memory and in the shared disk cache.  It is
also the unit that may die: a crash, a runaway host call or a blown memory cap
ends this process and its one job; the daemon reports it and starts another.

    python -m zerolab.zerocloud.worker --fd N --replying-fd N --cache-dir DIR --data-limit BYTES [--sysimage NAME=TAR]...

Its host memory is capped with RLIMIT_DATA (the guest's linear memory counts
too), and it dies with the daemon (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import posixpath
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from zerolab.sandbox import Channel, Executor, Manifest, tarfs
from zerolab.sandbox import executor as sandbox_executor
from zerolab.sandbox import report as sandbox_report
from zerolab.sandbox import status as exit_status
from zerolab.sandbox.manifest import DEFAULT_LIMIT, RND_READ_RND_WRITE, RND_READ_SEQ_WRITE, SEQ_READ_SEQ_WRITE

from . import protocol
from .stream_pipes import StreamInputs, StreamOutputs

RANDOM_OUTPUT = "/dev/output"   # ZeroCloud gave its output device random access (channel type 3)
PROGRAM_DIRS = ("", "bin/", "usr/bin/", "usr/local/bin/")
PR_SET_PDEATHSIG = 1
CLIENT_TIMEOUT = 60.0
# The largest payload a worker keeps between jobs to skip hashing it again
# (it counts against the worker's memory cap while the worker is idle).
REMEMBERED_PAYLOAD = 16 << 20
# Stream input bytes the guest has not read yet, held at most (then the
# worker stops reading its request until the guest catches up).
STREAM_BUFFER = 128 << 20
# The flag shared with the daemon (executord.Worker): 0 nothing sent yet,
# REPLYING inside a frame or the final reply, STREAMING between frames (the
# daemon may then end the reply itself: END_OF_STREAMS and a report).
REPLYING, STREAMING = 1, 2


class JobRunner:
    """Turns an executor request (protocol.py) into a sandbox run and its reply."""

    def __init__(self, sysimages: dict[str, str], cache_dir: str):
        self.sysimages = sysimages
        self.cache_dir = cache_dir
        self.executor = Executor(cache_dir=os.path.join(cache_dir, "modules"))
        self._last: dict[str, tuple[bytes, str]] = {}   # per kind: the last payload stored, its digest

    def warm(self) -> None:
        """Index the system images and compile their programs now, not at the first job."""
        for name, path in self.sysimages.items():
            try:
                image = self.executor.image(path)
                for member in ("bin/python", "bin/python3"):
                    if isinstance(image.lookup(member), tarfs.File):
                        self.executor.load_module(f"{path}/{member}")
                        break
            except Exception as e:  # a broken image is reported per job, not fatal here
                sys.stderr.write(f"executor worker: cannot warm image {name} ({path}): {e}\n")

    def stored(self, data: bytes, kind: str) -> str:
        """A payload (wasm program, tar image) as a file named by its digest,
        so the Executor's module/image caches hit on the next job."""
        # Jobs often send the same program again (a mapper's instances): the
        # bytes compared cost a tenth of hashing them again.
        last = self._last.get(kind)
        if last is not None and last[0] == data:
            digest = last[1]
        else:
            digest = hashlib.sha256(data).hexdigest()
            if len(data) <= REMEMBERED_PAYLOAD:
                self._last[kind] = (data, digest)
        folder = os.path.join(self.cache_dir, kind)
        path = os.path.join(folder, digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            # Recently used: the daemon prunes the least recently used first.
            # Only the access time moves (the module cache keys on mtime),
            # and at most hourly.
            if time.time() - st.st_atime > 3600:
                os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
        else:
            os.makedirs(folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return path

    def program(self, source: protocol.ProgramSource,
                payloads: list[bytes]) -> tuple[str, list[sandbox_executor.ImageSpec]]:
        """-> (program path for the Manifest, images to mount)."""
        member = (source.path or "").lstrip("/")
        if source.payload is not None:
            if source.path is None:
                return self.stored(payloads[source.payload], "programs"), []
            # A program inside the job's own tar image (an app's file://image:PATH).
            return self.member(self.stored(payloads[source.payload], "images"), member, "the user image")
        name = source.image
        tar = self.sysimages.get(name) if name is not None else None
        if tar is None:
            raise ValueError(f"unknown system image {name!r}")
        return self.member(tar, member, f"system image {name}")

    def member(self, tar: str, member: str, what: str) -> tuple[str, list[sandbox_executor.ImageSpec]]:
        """A program inside a tar image, looked up as a shell finds one
        (PROGRAM_DIRS), and the image mounted at / for it."""
        image = self.executor.image(tar)
        for prefix in PROGRAM_DIRS:
            if isinstance(image.lookup(prefix + member), tarfs.File):
                return f"{tar}/{prefix}{member}", [(tar, "/")]
        raise LookupError(f"program {member} not found in {what}")

    def run(self, request: protocol.RunRequest, payloads: list[bytes], fds: list[int],
            stream_in: Sequence[str] = (), stream_out: Sequence[str] = (),
            ) -> tuple[protocol.RunReply | protocol.Refusal, list[bytes]]:
        """``stream_in`` and ``stream_out``: the pipes (host paths) of the
        request's stream inputs and outputs, by number (stream_pipes.py)."""
        try:
            program, images = self.program(request.program, payloads)
            for extra in request.images:
                if extra.payload is not None:
                    image = (self.stored(payloads[extra.payload], "images"), "/")
                    if image not in images:   # the program's own image already is
                        images.append(image)
                    continue
                tar = self.sysimages.get(extra.sysimage or "")
                if tar is None:
                    raise ValueError(f"unknown system image {extra.sysimage!r}")
                if (tar, "/") not in images:   # the program's own image already is
                    images.append((tar, "/"))
        except LookupError as e:
            return protocol.RunReply(failed(exit_status.INVALID_PROGRAM, str(e))), []
        except ValueError as e:
            return protocol.Refusal("bad-request", f"bad program spec: {e}"), []
        except tarfs.ImageError as e:
            return protocol.RunReply(failed(exit_status.BAD_INPUT, str(e))), []
        channels = []
        limit = request.max_input if request.max_input is not None else DEFAULT_LIMIT
        streams_in = iter(stream_in)
        for spec in request.inputs:
            kind = SEQ_READ_SEQ_WRITE if spec.alias == "/dev/stdin" or spec.stream else RND_READ_SEQ_WRITE
            uri: str | bytes
            if spec.stream:
                uri = next(streams_in)
            elif spec.fd is not None:
                if spec.fd >= len(fds):
                    return protocol.Refusal("bad-request", f"input {spec.alias} names descriptor {spec.fd}, "
                                                           f"but {len(fds)} came with the request"), []
                uri = f"/proc/self/fd/{fds[spec.fd]}"
            else:
                uri = payloads[spec.payload or 0]
            channels.append(Channel(uri, spec.alias, kind, 0, DEFAULT_LIMIT, limit, 0, 0))
        if not any(c.alias == "/dev/stdin" for c in channels):
            # Guests expect descriptors 0-2 (CPython refuses to start without them).
            channels.append(Channel(b"", "/dev/stdin", SEQ_READ_SEQ_WRITE, 0, DEFAULT_LIMIT, DEFAULT_LIMIT, 0, 0))
        streams_out = iter(stream_out)
        for out in request.outputs:
            if out.limit is None:   # the object server always sets it: its own cap applies
                return protocol.Refusal("bad-request", f"output {out.alias} has no limit"), []
            if out.stream:
                channels.append(Channel(next(streams_out), out.alias, SEQ_READ_SEQ_WRITE, 1, 0, 0, DEFAULT_LIMIT,
                                        out.limit))
            elif out.alias == RANDOM_OUTPUT:
                # ZeroCloud's output device: written (and read back) at any offset, up to its limit.
                channels.append(Channel(None, out.alias, RND_READ_RND_WRITE, 1, DEFAULT_LIMIT, DEFAULT_LIMIT,
                                        DEFAULT_LIMIT, out.limit))
            else:
                channels.append(Channel(None, out.alias, SEQ_READ_SEQ_WRITE, 1, 0, 0, DEFAULT_LIMIT, out.limit))
        for alias in ("/dev/stdout", "/dev/stderr"):
            if not any(c.alias == alias for c in channels):
                # Not asked for: written to nothing, as ZeroVM gave /dev/null
                # (CPython will not start without descriptors 1 and 2).
                channels.append(Channel(os.devnull, alias, SEQ_READ_SEQ_WRITE, 0, 0, 0, DEFAULT_LIMIT, DEFAULT_LIMIT))
        manifest = Manifest(program=program, timeout=max(1, request.timeout if request.timeout is not None else 10),
                            memory=request.memory if request.memory is not None else 256 << 20,
                            channels=channels, node=1)
        args = list(request.args) or [posixpath.basename(program)]
        report = self.executor.run(manifest, images=images, args=args, env=dict(request.env),
                                   mapping={alias: "char" for alias in request.char})
        if report.quota_hit and report.exit_code in (exit_status.OK, exit_status.GUEST_EXIT, exit_status.CRASH):
            # Here every limit is the cluster's (zerovm_maxoutput, the input's
            # size), not one the job chose: what the guest wrote or read past
            # it is missing, so the node did not finish its work.
            # (and a guest that crashed after the hit crashed on cut data)
            report.exit_code, report.exit_state = exit_status.QUOTA, f"quota: {report.quota_hit}"
        if request.program_name:   # name the program as the user did, not our cache file
            report.exit_state = report.exit_state.replace(program, request.program_name)
        names = tuple(out.alias for out in request.outputs if not out.stream)   # streams went as they came
        data = [report.outputs.get(a, b"") for a in names]
        return protocol.RunReply(job_report(report), names, output_digests(report, names, data)), data


def output_digests(report: sandbox_report.Report, names: Sequence[str], data: Sequence[bytes]) -> tuple[str, ...]:
    """Each output's MD5: a sequential channel's tag is that already (its
    bytes in the order written); the random-access output's is taken now."""
    tags = {ch.alias: ch.etag for ch in report.channels}
    return tuple(tag if alias != RANDOM_OUTPUT and (tag := tags.get(alias)) else
                 hashlib.md5(content, usedforsecurity=False).hexdigest()
                 for alias, content in zip(names, data))


def failed(code: int, message: str, validator: int = 1) -> protocol.JobReport:
    return job_report(sandbox_report.failure(code, message, validator=validator))


def job_report(report: sandbox_report.Report) -> protocol.JobReport:
    return protocol.JobReport(exit_code=report.exit_code, exit_state=report.exit_state, user_rc=report.user_rc,
                              validator=report.validator, etag=report.etag, elapsed=round(report.elapsed, 6),
                              cdr=report.accounting_line)


def serve(sock: socket.socket, runner: JobRunner, replying: mmap.mmap) -> None:
    """One job at a time until the daemon closes its end."""
    while True:
        reader = protocol.Reader(sock)
        try:
            header = reader.header(want_fds=True)
        except (OSError, protocol.ProtocolError):
            protocol.close_all(reader.fds)
            return   # the daemon went away (or stopped us mid-message)
        if not reader.fds:
            return   # no client to answer: not the daemon speaking
        client = socket.socket(fileno=reader.fds[0])
        try:
            answer(client, runner, header, reader.fds[1:], replying)
        finally:
            client.close()
            protocol.close_all(reader.fds[1:])
        sock.sendall(protocol.WORKER_DONE)


def answer(client: socket.socket, runner: JobRunner, header: protocol.Header, fds: list[int],
           replying: mmap.mmap) -> None:
    """Reads the job's payloads from the client, runs it, and replies to the client."""
    # A client that stops sending does not hold this worker longer than this
    # (the daemon's deadline usually ends it first).
    client.settimeout(CLIENT_TIMEOUT)
    incoming = protocol.Reader(client)
    try:
        payloads = [incoming.exact(n) for n in protocol.payload_lengths(header)]
    except (OSError, protocol.ProtocolError):
        return   # the client went away before its job was whole: no one to answer
    reply: protocol.RunReply | protocol.Refusal
    data: list[bytes] = []
    try:
        request = protocol.parse_request(header)
        if isinstance(request, protocol.RunRequest) and request.streaming:
            answer_streaming(client, incoming, runner, request, payloads, fds, replying)
            return
        if isinstance(request, protocol.RunRequest):
            reply, data = runner.run(request, payloads, fds)
        else:
            reply = protocol.Refusal("bad-request", "a worker only runs jobs")
    except protocol.ProtocolError as e:
        reply = protocol.Refusal("bad-request", f"malformed job: {e}")
    except (KeyError, IndexError, TypeError, ValueError) as e:
        reply = protocol.Refusal("bad-request", f"malformed job: {type(e).__name__}: {e}")
    except MemoryError:
        reply = protocol.RunReply(failed(
            exit_status.MEMORY, "memory: the job's host side went over its memory cap", 0))
    replying[0] = REPLYING   # from here on, the daemon must not answer the client itself
    try:
        protocol.send(client, reply.to_wire(), data)
    except OSError:
        pass   # the client went away meanwhile: no one to tell


def answer_streaming(client: socket.socket, incoming: protocol.Reader, runner: JobRunner,
                     request: protocol.RunRequest, payloads: list[bytes], fds: list[int],
                     replying: mmap.mmap) -> None:
    """A job with streams: Streaming at once, then its stream outputs' frames
    as the guest writes them while its stream inputs' frames are read, then
    END_OF_STREAMS and the reply (protocol.py)."""
    deadline = time.monotonic() + max(1, request.timeout if request.timeout is not None else 10)
    lock = threading.Lock()

    def send(data: bytes) -> None:
        with lock:
            replying[0] = REPLYING
            try:
                client.sendall(data)
            finally:
                replying[0] = STREAMING

    try:
        send(protocol.frame_header(protocol.Streaming().to_wire()))
    except OSError:
        return   # the client went away: no one to run it for
    inputs = StreamInputs(client, bytes(incoming.buf), len(request.stream_inputs), STREAM_BUFFER, deadline)
    outputs = StreamOutputs(len(request.stream_outputs), send)
    inputs.start()
    outputs.start()
    reply: protocol.RunReply | protocol.Refusal
    data: list[bytes] = []
    try:
        reply, data = runner.run(request, payloads, fds, inputs.uris, outputs.uris)
    except MemoryError:
        reply = protocol.RunReply(failed(
            exit_status.MEMORY, "memory: the job's host side went over its memory cap", 0))
    finally:
        inputs.finish()
        outputs.finish()
    if isinstance(reply, protocol.RunReply) and reply.report.exit_code != exit_status.TIMEOUT:
        # What the guest read was cut: its outputs cannot count.
        if inputs.timed_out:
            reply, data = protocol.RunReply(failed(
                exit_status.TIMEOUT, f"timeout: its stream inputs had not ended after Timeout = "
                                     f"{request.timeout} s", 0)), []
        elif inputs.error is not None:
            reply, data = protocol.RunReply(failed(exit_status.BAD_INPUT, f"bad streams: {inputs.error}", 0)), []
    with lock:
        replying[0] = REPLYING
        try:
            client.sendall(protocol.frame(protocol.END_OF_STREAMS))
            protocol.send(client, reply.to_wire(), data)
        except OSError:
            pass   # the client went away meanwhile: no one to tell


def die_with_parent() -> None:
    """SIGKILL when the daemon dies, so no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:   # the daemon was already gone before prctl
        sys.exit(0)


# glibc serves allocations above M_MMAP_THRESHOLD with fresh mappings and
# gives freed heap above M_TRIM_THRESHOLD back to the kernel, so every job's
# megabyte buffers (inputs read, outputs written) would start on untouched
# pages.  A page fault is dear in a VM: for an identity job over 1 MB this
# was half of the run (2.3 ms against 1.4 ms in-process, measured).  A warm
# worker keeps up to REUSE_BELOW-sized buffers in its heap for the next job,
# and at most KEEP_FREE bytes of freed heap (counted in its RLIMIT_DATA).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
REUSE_BELOW = 16 << 20
KEEP_FREE = 64 << 20


def reuse_large_buffers() -> None:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, REUSE_BELOW)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE)
    except (OSError, AttributeError):
        pass   # not glibc: its own allocator's defaults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zerolab-executor-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the socket to the daemon")
    parser.add_argument("--replying-fd", type=int, required=True,
                        help="a page shared with the daemon: its first byte is set before each reply")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--data-limit", type=int, default=0, help="RLIMIT_DATA in bytes (0: none)")
    parser.add_argument("--sysimage", action="append", default=[], metavar="NAME=TAR")
    args = parser.parse_args(argv)
    die_with_parent()
    reuse_large_buffers()
    if args.data_limit:
        resource.setrlimit(resource.RLIMIT_DATA, (args.data_limit, args.data_limit))
    sysimages = dict(item.split("=", 1) for item in args.sysimage)
    sock = socket.socket(fileno=args.fd)
    replying = mmap.mmap(args.replying_fd, mmap.PAGESIZE)
    os.close(args.replying_fd)
    runner = JobRunner(sysimages, args.cache_dir)
    runner.warm()
    protocol.send(sock, protocol.WorkerReady(os.getpid()).to_wire())
    serve(sock, runner, replying)
    return 0


if __name__ == "__main__":
    sys.exit(main())
