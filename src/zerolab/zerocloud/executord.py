"""The node's executor daemon: a warm zerolab.sandbox.Executor behind a unix socket.

    python -m zerolab.zerocloud.executord --config /etc/zerolab/executor.conf

The object server's zerocloud filter connects, sends one job (protocol.py)
with the object's data file as an open descriptor, and reads the report and
outputs back.  The daemon keeps compiled modules and image indexes between
jobs (in memory, and in cache_dir across restarts), so a small job costs a
fresh wasm Store, not a process start.  At most ``maxpool`` jobs run at once;
``maxqueue`` more may wait for a slot; beyond that a job is refused as busy
(the filter answers 429).  systemd is told READY=1 once the socket listens
and the system images are warm.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import os
import posixpath
import socket
import socketserver
import sys
import threading
import time

from zerolab.sandbox import Channel, Executor, Manifest, tarfs
from zerolab.sandbox import executor as sandbox_executor
from zerolab.sandbox.manifest import DEFAULT_LIMIT, RND_READ_SEQ_WRITE, SEQ_READ_SEQ_WRITE

from . import protocol

PROGRAM_DIRS = ("", "bin/", "usr/bin/", "usr/local/bin/")
MAX_REQUEST_PAYLOAD = 1 << 30


class Slots:
    """maxpool running, maxqueue waiting, the rest refused."""

    def __init__(self, pool: int, queue: int):
        self.pool, self.queue = pool, queue
        self.running = self.waiting = 0
        self.cond = threading.Condition()

    def acquire(self) -> bool:
        with self.cond:
            if self.running >= self.pool:
                if self.waiting >= self.queue:
                    return False
                self.waiting += 1
                while self.running >= self.pool:
                    self.cond.wait()
                self.waiting -= 1
            self.running += 1
            return True

    def release(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify()


class Daemon:
    def __init__(self, sysimages: dict[str, str], cache_dir: str, slots: Slots):
        self.sysimages = sysimages
        self.cache_dir = cache_dir
        self.executor = Executor(cache_dir=os.path.join(cache_dir, "modules"))
        self.slots = slots
        self.jobs = 0

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
                sys.stderr.write(f"executord: cannot warm image {name} ({path}): {e}\n")

    # ------------------------------------------------------------- helpers
    def stored(self, data: bytes, kind: str) -> str:
        """A payload (wasm program, tar image) as a file named by its digest,
        so the Executor's module/image caches hit on the next job."""
        digest = hashlib.sha256(data).hexdigest()
        folder = os.path.join(self.cache_dir, kind)
        path = os.path.join(folder, digest)
        if not os.path.exists(path):
            os.makedirs(folder, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return path

    def program(self, spec: dict, payloads: list[bytes]) -> tuple[str, list]:
        """-> (program path for the Manifest, images to mount)."""
        if "payload" in spec:
            return self.stored(payloads[spec["payload"]], "programs"), []
        name, member = spec.get("image"), str(spec.get("path", "")).lstrip("/")
        tar = self.sysimages.get(name)
        if tar is None:
            raise ValueError(f"unknown system image {name!r}")
        image = self.executor.image(tar)
        for prefix in PROGRAM_DIRS:
            if isinstance(image.lookup(prefix + member), tarfs.File):
                return f"{tar}/{prefix}{member}", [(tar, "/")]
        raise LookupError(f"program {member} not found in system image {name}")

    # ----------------------------------------------------------------- run
    def run(self, header: dict, payloads: list[bytes], fds: list[int]) -> tuple[dict, list[bytes]]:
        try:
            program, images = self.program(header["program"], payloads)
            for extra in header.get("images", []):
                images.append((self.stored(payloads[extra["payload"]], "images"), "/"))
        except LookupError as e:
            return {"status": "ok", "report": failed(sandbox_executor.INVALID_PROGRAM, str(e))}, []
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return {"status": "bad-request", "reason": f"bad program spec: {e}"}, []
        except tarfs.ImageError as e:
            return {"status": "ok", "report": failed(sandbox_executor.BAD_INPUT, str(e))}, []
        channels = []
        for spec in header.get("inputs", []):
            alias = spec["alias"]
            kind = SEQ_READ_SEQ_WRITE if alias == "/dev/stdin" else RND_READ_SEQ_WRITE
            limit = int(header.get("max_input", DEFAULT_LIMIT))
            if "fd" in spec:
                uri = f"/proc/self/fd/{fds[spec['fd']]}"
            else:
                uri = payloads[spec["payload"]]
            channels.append(Channel(uri, alias, kind, 0, DEFAULT_LIMIT, limit, 0, 0))
        if not any(c.alias == "/dev/stdin" for c in channels):
            # Guests expect descriptors 0-2 (CPython refuses to start without them).
            channels.append(Channel(b"", "/dev/stdin", SEQ_READ_SEQ_WRITE, 0, DEFAULT_LIMIT, DEFAULT_LIMIT, 0, 0))
        for spec in header.get("outputs", []):
            channels.append(Channel(None, spec["alias"], SEQ_READ_SEQ_WRITE, 1, 0, 0,
                                    DEFAULT_LIMIT, int(spec["limit"])))
        manifest = Manifest(program=program, timeout=max(1, int(header.get("timeout", 10))),
                            memory=int(header.get("memory", 256 << 20)), channels=channels, node=1)
        args = [str(a) for a in header.get("args", [])] or [posixpath.basename(program)]
        env = {str(k): str(v) for k, v in header.get("env", {}).items()}
        report = self.executor.run(manifest, images=images, args=args, env=env)
        self.jobs += 1
        if header.get("program_name"):   # name the program as the user did, not our cache file
            report.exit_state = report.exit_state.replace(program, str(header["program_name"]))
        names = [s["alias"] for s in header.get("outputs", [])]
        data = [report.outputs.get(a, b"") for a in names]
        return {"status": "ok", "report": report_dict(report), "outputs": names}, data


def failed(code: int, message: str) -> dict:
    return report_dict(sandbox_executor.failure(code, message, validator=1))


def report_dict(report) -> dict:
    a = report.accounting
    return {
        "exit_code": report.exit_code,
        "exit_state": report.exit_state,
        "user_rc": report.user_rc,
        "validator": report.validator,
        "etag": report.etag,
        "elapsed": round(report.elapsed, 6),
        "cdr": "%.2f %.2f %d %d %d %d 0 0 0 0" % (report.cpu_sys, report.cpu_user, a["reads"],
                                                    a["read_bytes"], a["writes"], a["write_bytes"]),
    }


class Handler(socketserver.BaseRequestHandler):
    daemon: Daemon

    def handle(self) -> None:
        reader = protocol.Reader(self.request)
        try:
            header, payloads = reader.message(want_fds=True, max_payload=MAX_REQUEST_PAYLOAD)
        except (protocol.ProtocolError, OSError) as e:
            self.reply({"status": "bad-request", "reason": str(e)}, [], reader.fds)
            return
        op = header.get("op")
        if op == "ping":
            self.reply({"status": "ok", "jobs": self.daemon.jobs,
                        "sysimages": sorted(self.daemon.sysimages)}, [], reader.fds)
            return
        if op != "run":
            self.reply({"status": "bad-request", "reason": f"unknown op {op!r}"}, [], reader.fds)
            return
        if not self.daemon.slots.acquire():
            self.reply({"status": "busy", "reason": f"{self.daemon.slots.pool} jobs running and "
                                                    f"{self.daemon.slots.queue} waiting on this node"},
                       [], reader.fds)
            return
        try:
            reply, data = self.daemon.run(header, payloads, reader.fds)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            reply, data = {"status": "bad-request", "reason": f"malformed job: {type(e).__name__}: {e}"}, []
        except Exception as e:  # never lose the connection silently: report one line
            reply, data = {"status": "ok", "report": failed(sandbox_executor.INTERNAL,
                                                             f"{type(e).__name__}: {e}")}, []
        finally:
            self.daemon.slots.release()
        self.reply(reply, data, reader.fds)

    def reply(self, header: dict, data: list[bytes], fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            protocol.send(self.request, header, data)
        except OSError:
            pass  # the object server gave up (its own timeout); nothing to tell


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


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


def load_config(path: str) -> dict:
    cp = configparser.ConfigParser()
    if not cp.read(path):
        raise SystemExit(f"executord: cannot read {path}")
    ex = cp["executor"] if cp.has_section("executor") else {}
    return {
        "socket": ex.get("socket", "/run/zerolab-executor/executor.sock"),
        "cache_dir": ex.get("cache_dir", "/var/cache/zerolab-executor"),
        "maxpool": int(ex.get("maxpool", "4")),
        "maxqueue": int(ex.get("maxqueue", "16")),
        "sysimages": dict(cp["sysimages"]) if cp.has_section("sysimages") else {},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="executord", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/zerolab/executor.conf")
    args = parser.parse_args(argv)
    conf = load_config(args.config)
    daemon = Daemon(conf["sysimages"], conf["cache_dir"], Slots(conf["maxpool"], conf["maxqueue"]))
    started = time.monotonic()
    daemon.warm()
    Handler.daemon = daemon
    path = conf["socket"]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o117)   # socket rw for the owner and group (the object server)
    try:
        server = Server(path, Handler)
    finally:
        os.umask(old)
    sys.stderr.write(f"executord: listening on {path}, warm in {time.monotonic() - started:.1f} s, "
                     f"maxpool {conf['maxpool']}, maxqueue {conf['maxqueue']}, "
                     f"images {', '.join(conf['sysimages']) or 'none'}\n")
    notify_ready()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
