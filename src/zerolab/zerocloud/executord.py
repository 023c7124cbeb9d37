"""The node's executor daemon: a warm pool of sandbox workers behind a unix socket.

    python -m zerolab.zerocloud.executord --config /etc/zerolab/executor.conf

The object server's zerocloud filter connects, sends one job (protocol.py)
with the object's data file as an open descriptor, and reads the report and
outputs back.  The daemon itself runs no guest code: it reads and checks the
request's header, then hands it, the connection and the data file to an idle
worker process (worker.py), which reads the payloads from the connection and
writes the reply to it; no payload passes through the daemon.  A worker keeps
compiled modules and image indexes warm, so a small job costs a fresh wasm
Store, not a process start.

Isolation: whatever a job does, it can only end its own worker.  A worker
that crashes (a signal), goes over its host memory cap, or is still inside a
host call at the job's deadline is killed and replaced; its job gets a report
that says which (from the daemon, unless the worker had begun its reply: the
client then sees that reply cut short), and every other job goes on.

Capacity: ``maxpool`` workers, so at most that many jobs run at once;
``maxqueue`` more may wait for one (a job with streams at most
STREAMS_SLOT_WAIT: the other instances of its own job may hold the slots);
beyond that a job is refused as busy (the filter answers 429) before its
payloads are read.  systemd is told READY=1 once the socket listens and the workers are warm; with socket activation
(``LISTEN_FDS``) the socket is systemd's and outlives a restart.
"""

from __future__ import annotations

import argparse
import configparser
import mmap
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from zerolab.sandbox import status as exit_status

from . import protocol
from .worker import CLIENT_TIMEOUT, REPLYING, STREAMING, failed

MAX_REQUEST_PAYLOAD = 256 << 20
# Past the job's own timeout, the worker has this long to answer before it is
# killed: the guest's own deadline (an epoch interrupt) normally ends it first.
KILL_GRACE = 2.0
WORKER_START_TIMEOUT = 300.0   # a cold cache compiles the Python image first
SD_LISTEN_FDS_START = 3
# A worker writing its reply is past its job's deadline; this only catches one
# that stopped (each write to the client has the worker's own CLIENT_TIMEOUT).
REPLY_TIMEOUT = 600.0
# The longest a job with streams waits for a slot: long enough for the jobs
# of the last request to give theirs back, short enough that one waiting on
# its own job's slots goes to another replica soon (the others of its job,
# started already, wait on it meanwhile).
STREAMS_SLOT_WAIT = 0.25


class Slots:
    """maxpool running, maxqueue waiting, the rest refused."""

    def __init__(self, pool: int, queue: int):
        self.pool, self.queue = pool, queue
        self.running = self.waiting = 0
        self.cond = threading.Condition()

    def acquire(self, most: float | None = None) -> bool:
        """A slot, waiting in the queue for one at most ``most`` seconds
        (None: as long as it takes); False: refused."""
        with self.cond:
            if self.running >= self.pool:
                if self.waiting >= self.queue:
                    return False
                self.waiting += 1
                try:
                    if not self.cond.wait_for(lambda: self.running < self.pool, timeout=most):
                        return False
                finally:
                    self.waiting -= 1
            self.running += 1
            return True

    def release(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify()


class WorkerLost(Exception):
    """The worker did not finish its job: ``report`` says what happened to it,
    or is None when the worker was inside a reply (the client has a cut one).
    ``streaming``: the worker had sent whole stream frames, so the report
    goes after an END_OF_STREAMS frame (protocol.py)."""

    def __init__(self, report: protocol.JobReport | None, streaming: bool = False):
        super().__init__(report.exit_state if report else "lost while replying")
        self.report = report
        self.streaming = streaming


class Worker:
    """One worker process and the daemon's end of its socketpair."""

    def __init__(self, command: list[str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # One shared byte: the worker sets it before the first byte of its
        # reply, so a worker lost after that is known to have begun one; it
        # costs no message (and no wake-up of the daemon) per job.
        flag = os.memfd_create("zerolab-worker-replying")
        try:
            os.ftruncate(flag, mmap.PAGESIZE)
            self.replying = mmap.mmap(flag, mmap.PAGESIZE)
            self.proc = subprocess.Popen(command + ["--fd", str(theirs.fileno()), "--replying-fd", str(flag)],
                                         pass_fds=[theirs.fileno(), flag], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
            os.close(flag)
        self.sock = ours
        self.jobs = 0
        ours.settimeout(WORKER_START_TIMEOUT)
        try:
            hello = protocol.Reader(ours).header()
        except (OSError, protocol.ProtocolError) as e:
            self.kill()
            raise RuntimeError(f"executor worker did not start: {self.exit_reason() or e}") from None
        try:
            protocol.WorkerReady.from_wire(hello)
        except protocol.ProtocolError:
            self.kill()
            raise RuntimeError(f"executor worker said {hello!r:.200} instead of ready") from None

    def call(self, request: protocol.RunRequest, frame: bytes, fds: list[int], deadline: float) -> None:
        """Hands one job to the worker: its header ``frame`` as the client
        sent it, and ``fds``, the client's socket first.  The worker reads the
        payloads from the client and replies to it; this returns once it is
        done with the job.  Raises WorkerLost when the worker died or missed
        the deadline (the caller discards it)."""
        self.replying[0] = 0
        try:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            protocol.send_frame(self.sock, frame, fds)
            try:
                said = self.sock.recv(1)
            except TimeoutError:
                if self.replying[0] != REPLYING:
                    raise
                # The job has run; its reply goes at the client's pace (each
                # write bounded by the worker's own client timeout).
                self.sock.settimeout(REPLY_TIMEOUT)
                said = self.sock.recv(1)
            if said == protocol.WORKER_DONE:
                self.jobs += 1
                return
            report = failed(exit_status.CRASH, self.death_reason(), 0)
        except TimeoutError:
            report = failed(exit_status.TIMEOUT, self.timeout_reason(request), 0)
        except OSError:
            report = failed(exit_status.CRASH, self.death_reason(), 0)
        self.stop()   # before the flag is read: a live worker could still set it
        # Once the worker is inside a reply, only it could have finished it.
        state = self.replying[0]
        raise WorkerLost(None if state == REPLYING else report, streaming=state == STREAMING)

    @staticmethod
    def timeout_reason(request: protocol.RunRequest) -> str:
        timeout = request.timeout if request.timeout is not None else "?"
        return f"the job ran longer than Timeout = {timeout} s (its worker was stopped)"

    def death_reason(self) -> str:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "the job's worker stopped answering"
        return f"the job's worker process {self.exit_reason()}"

    def exit_reason(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of host memory)" if -code == signal.SIGABRT else ""
            return f"was killed by {name}{hint}"
        return f"exited with status {code}"

    def stop(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()

    def kill(self) -> None:
        self.stop()
        self.sock.close()
        self.replying.close()


class Pool:
    """``size`` warm workers; a lost one is replaced in the background.

    Workers are started by one long-lived thread: a worker asks to be killed
    when the thread that started it ends (PR_SET_PDEATHSIG follows the thread,
    not the process), so no short-lived thread may start one."""

    def __init__(self, size: int, command: list[str], recycle_after: int = 10000):
        self.size = size
        self.command = command
        self.recycle_after = recycle_after
        # The most recently used worker first: its memory and the CPU's caches
        # are the warmest (round-robin over idle workers cost a small job ~10 %).
        self.idle: queue.LifoQueue[Worker] = queue.LifoQueue()
        self._wanted: queue.Queue[None] = queue.Queue()
        self.lost = 0
        self.started = 0

    def start(self) -> None:
        """Starts every worker and returns once all are warm.  The first one
        warms the disk cache; the others then start from it."""
        threading.Thread(target=self._spawner, name="executord-spawner", daemon=True).start()
        for _ in range(self.size):
            self._wanted.put(None)
        while self.idle.qsize() < self.size:
            time.sleep(0.05)

    def _spawner(self) -> None:
        while True:
            self._wanted.get()
            while True:
                try:
                    worker = Worker(self.command)
                    break
                except Exception as e:  # keep trying: a pool that shrinks to nothing serves no one
                    sys.stderr.write(f"executord: {e}; retrying in 1 s\n")
                    time.sleep(1)
            self.started += 1
            self.idle.put(worker)

    def take(self, timeout: float) -> Worker | None:
        try:
            return self.idle.get(timeout=timeout)
        except queue.Empty:
            return None

    def give_back(self, worker: Worker) -> None:
        if worker.jobs >= self.recycle_after:   # bounds what a long life may leak
            self.discard(worker, lost=False)
        else:
            self.idle.put(worker)

    def discard(self, worker: Worker, lost: bool = True) -> None:
        self.lost += lost
        worker.kill()
        self._wanted.put(None)

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().kill()
            except queue.Empty:
                return


class Daemon:
    def __init__(self, sysimages: dict[str, str], cache_dir: str, slots: Slots, *,
                 max_request: int = MAX_REQUEST_PAYLOAD, worker_data_limit: int = 0,
                 cache_max_bytes: int = 2 << 30):
        self.sysimages = sysimages
        self.cache_dir = cache_dir
        self.slots = slots
        self.max_request = max_request
        self.cache_max_bytes = cache_max_bytes
        command = [sys.executable, "-m", "zerolab.zerocloud.worker", "--cache-dir", cache_dir,
                   "--data-limit", str(worker_data_limit)]
        for name, path in sysimages.items():
            command += ["--sysimage", f"{name}={path}"]
        self.pool = Pool(slots.pool, command)
        self.jobs = 0
        self._pruned = 0.0
        self._prune_lock = threading.Lock()

    def start(self) -> None:
        os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
        prune_cache(self.cache_dir, self.cache_max_bytes)
        self.pool.start()

    def close(self) -> None:
        self.pool.close()

    def status(self) -> protocol.DaemonStatus:
        return protocol.DaemonStatus(jobs=self.jobs, sysimages=tuple(sorted(self.sysimages)), workers=self.pool.size,
                                     workers_idle=self.pool.idle.qsize(), workers_lost=self.pool.lost,
                                     workers_started=self.pool.started)

    def after_job(self) -> None:
        self.jobs += 1
        # The disk cache (programs, images, compiled modules) is pruned to its
        # size now and then, not on every job.
        if time.monotonic() - self._pruned > 60 and self._prune_lock.acquire(blocking=False):
            try:
                self._pruned = time.monotonic()
                prune_cache(self.cache_dir, self.cache_max_bytes)
            finally:
                self._prune_lock.release()


def prune_cache(folder: str, max_bytes: int, keep_younger_than: float = 60.0) -> int:
    """Deletes the least recently used files under ``folder`` until it holds at
    most ``max_bytes``; files touched in the last minute stay (a job may be
    about to open them).  Returns the bytes freed."""
    files = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            files.append((max(st.st_mtime, st.st_atime), st.st_size, path))
    total = sum(size for _, size, _ in files)
    freed = 0
    now = time.time()
    for used, size, path in sorted(files):
        if total - freed <= max_bytes:
            break
        if now - used < keep_younger_than:
            continue
        try:
            os.unlink(path)
            freed += size
        except OSError:
            pass
    return freed


class Handler(socketserver.BaseRequestHandler):
    daemon: Daemon

    def handle(self) -> None:
        # A client that stops sending mid-request must not hold a slot forever.
        self.request.settimeout(CLIENT_TIMEOUT)
        reader = protocol.Reader(self.request)
        try:
            try:
                # Only the header is read before a slot is taken; its payload
                # lengths are checked against the cap first.
                header = reader.header(want_fds=True, max_payload=self.daemon.max_request)
                request = protocol.parse_request(header)
            except (protocol.ProtocolError, OSError) as e:
                self.reply(protocol.Refusal("bad-request", str(e)))
                return
            if isinstance(request, protocol.PingRequest):
                self.reply(self.daemon.status())
                return
            timeout = max(1, request.timeout if request.timeout is not None else 10)
            # A job with streams runs beside the others of its job, which may
            # hold the slots it would wait for: it waits only for a slot
            # that is being given back, then goes elsewhere.
            if not self.daemon.slots.acquire(STREAMS_SLOT_WAIT if request.streaming else None):
                self.reply(protocol.Refusal("busy", f"{self.daemon.slots.pool} jobs running on this node" + (
                    f"; a job with streams waits {STREAMS_SLOT_WAIT:g} s at most" if request.streaming else
                    f" and {self.daemon.slots.queue} waiting")))
                return
            try:
                self.run(reader, request, timeout)
            finally:
                self.daemon.slots.release()
        finally:
            protocol.close_all(reader.fds)

    def run(self, reader: protocol.Reader, request: protocol.RunRequest, timeout: int) -> None:
        worker = self.daemon.pool.take(timeout=WORKER_START_TIMEOUT)
        if worker is None:
            self.reply(protocol.Refusal("busy", "no executor worker became ready"))
            return
        deadline = time.monotonic() + timeout + KILL_GRACE
        try:
            worker.call(request, reader.frame, [self.request.fileno(), *reader.fds], deadline)
        except WorkerLost as e:
            self.daemon.pool.discard(worker)
            if e.report is not None:
                if e.streaming:
                    self.send(protocol.frame(protocol.END_OF_STREAMS))
                self.reply(protocol.RunReply(e.report))
        else:
            self.daemon.pool.give_back(worker)
        self.daemon.after_job()

    def send(self, data: bytes) -> None:
        try:
            self.request.sendall(data)
        except OSError:
            pass  # the object server gave up (its own timeout); nothing to tell

    def reply(self, message: protocol.RunReply | protocol.Refusal | protocol.DaemonStatus) -> None:
        try:
            protocol.send(self.request, message.to_wire())
        except OSError:
            pass  # the object server gave up (its own timeout); nothing to tell


def serve_in_thread(daemon: Daemon, path: str) -> Server:
    """A running daemon inside this process (tests, benchmarks): its socket at
    ``path``, its workers warm, a thread serving.  ``stop_serving`` ends it."""
    Handler.daemon = daemon
    server = listening_socket(path)
    daemon.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_serving(server: Server, daemon: Daemon) -> None:
    server.shutdown()
    server.server_close()
    daemon.close()


class Server(socketserver.UnixStreamServer):
    """Connections are handled by a fixed set of threads, started once (a new
    thread per job cost more than a small job's run).  Enough of them for every
    slot and queue place, plus a few to answer "busy" at once.

    The threads take turns accepting (one waits in accept, the others on a
    lock): a connection is handled by the thread that woke for it, not handed
    on to another, which would cost a second wake-up per job."""

    request_queue_size = 128
    threads = 32

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler], bind_and_activate: bool = True):
        super().__init__(path, handler, bind_and_activate)
        self._stopping = threading.Event()
        self._turn = threading.Lock()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.socket.settimeout(poll_interval)   # how soon a stop is noticed
        for i in range(self.threads):
            threading.Thread(target=self._serve, name=f"executord-{i}", daemon=True).start()
        while not self._stopping.wait(poll_interval):
            pass

    def _serve(self) -> None:
        while True:
            with self._turn:
                if self._stopping.is_set():
                    return
                try:
                    request, client_address = self.get_request()
                except TimeoutError:
                    continue
                except OSError:   # the socket was closed
                    return
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def shutdown(self) -> None:
        """Stops accepting; jobs being handled finish on their own."""
        self._stopping.set()
        # Returns once no thread is inside accept(): the socket may then be
        # closed without one accepting on whatever reuses its descriptor.
        with self._turn:
            pass


def listening_socket(path: str) -> Server:
    """The socket systemd passed (socket activation), or one bound at ``path``."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        server = Server(path, Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=SD_LISTEN_FDS_START)
        return server
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o117)   # socket rw for the owner and group (the object server)
    try:
        return Server(path, Handler)
    finally:
        os.umask(old)


def notify_ready() -> None:
    """sd_notify(READY=1) without libsystemd: one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(b"READY=1")


@dataclass(frozen=True)
class DaemonConfig:
    """/etc/zerolab/executor.conf: [executor] and [sysimages] (name = tar path)."""

    socket: str
    cache_dir: str
    maxpool: int
    maxqueue: int
    max_request: int
    worker_memory: int
    cache_max_bytes: int
    sysimages: dict[str, str]


def load_config(path: str) -> DaemonConfig:
    cp = configparser.ConfigParser()
    if not cp.read(path):
        raise SystemExit(f"executord: cannot read {path}")
    ex: Mapping[str, str] = cp["executor"] if cp.has_section("executor") else {}
    try:
        return DaemonConfig(
            socket=ex.get("socket", "/run/zerolab-executor/executor.sock"),
            cache_dir=ex.get("cache_dir", "/var/cache/zerolab-executor"),
            maxpool=int(ex.get("maxpool", "4")),
            maxqueue=int(ex.get("maxqueue", "16")),
            max_request=int(ex.get("max_request", str(MAX_REQUEST_PAYLOAD))),
            worker_memory=int(ex.get("worker_memory", str(768 << 20))),
            cache_max_bytes=int(ex.get("cache_max_bytes", str(2 << 30))),
            sysimages=dict(cp["sysimages"]) if cp.has_section("sysimages") else {},
        )
    except ValueError as e:
        raise SystemExit(f"executord: {path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="executord", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/zerolab/executor.conf")
    args = parser.parse_args(argv)
    conf = load_config(args.config)
    daemon = Daemon(conf.sysimages, conf.cache_dir, Slots(conf.maxpool, conf.maxqueue),
                    max_request=conf.max_request, worker_data_limit=conf.worker_memory,
                    cache_max_bytes=conf.cache_max_bytes)
    started = time.monotonic()
    Handler.daemon = daemon
    server = listening_socket(conf.socket)
    server.threads = conf.maxpool + conf.maxqueue + 8
    daemon.start()
    sys.stderr.write(f"executord: listening on {conf.socket}, {conf.maxpool} workers warm in "
                     f"{time.monotonic() - started:.1f} s, maxqueue {conf.maxqueue}, "
                     f"images {', '.join(conf.sysimages) or 'none'}\n")
    notify_ready()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Workers go with the daemon (they die with it anyway: PDEATHSIG), but
        # killed and reaped here systemd sees the unit empty at once.
        daemon.close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
