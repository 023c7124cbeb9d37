"""One executor worker: a process that runs jobs in the sandbox, one at a time.

The executor daemon (executord.py) keeps a warm pool of these and hands each
job to an idle one over a socketpair (protocol.py, with the object's data file
as a passed descriptor).  A worker keeps what makes jobs cheap: compiled
modules and image indexes, in memory and in the shared disk cache.  It is
also the unit that may die: a crash, a runaway host call or a blown memory cap
ends this process and its one job; the daemon reports it and starts another.

    python -m zerolab.zerocloud.worker --fd N --cache-dir DIR --data-limit BYTES [--sysimage NAME=TAR]...

Its host memory is capped with RLIMIT_DATA (the guest's linear memory counts
too), and it dies with the daemon (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import posixpath
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any

from zerolab.sandbox import Channel, Executor, Manifest, tarfs
from zerolab.sandbox import executor as sandbox_executor
from zerolab.sandbox import status as exit_status
from zerolab.sandbox.manifest import DEFAULT_LIMIT, RND_READ_SEQ_WRITE, SEQ_READ_SEQ_WRITE

from . import protocol

PROGRAM_DIRS = ("", "bin/", "usr/bin/", "usr/local/bin/")
PR_SET_PDEATHSIG = 1


class JobRunner:
    """Turns an executor request (protocol.py) into a sandbox run and its reply."""

    def __init__(self, sysimages: dict[str, str], cache_dir: str):
        self.sysimages = sysimages
        self.cache_dir = cache_dir
        self.executor = Executor(cache_dir=os.path.join(cache_dir, "modules"))

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
        digest = hashlib.sha256(data).hexdigest()
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

    def run(self, header: dict, payloads: list[bytes], fds: list[int]) -> tuple[dict, list[bytes]]:
        try:
            program, images = self.program(header["program"], payloads)
            for extra in header.get("images", []):
                images.append((self.stored(payloads[extra["payload"]], "images"), "/"))
        except LookupError as e:
            return {"status": "ok", "report": failed(exit_status.INVALID_PROGRAM, str(e))}, []
        except (KeyError, IndexError, TypeError, ValueError) as e:
            return {"status": "bad-request", "reason": f"bad program spec: {e}"}, []
        except tarfs.ImageError as e:
            return {"status": "ok", "report": failed(exit_status.BAD_INPUT, str(e))}, []
        channels = []
        for spec in header.get("inputs", []):
            alias = spec["alias"]
            kind = SEQ_READ_SEQ_WRITE if alias == "/dev/stdin" else RND_READ_SEQ_WRITE
            limit = int(header.get("max_input", DEFAULT_LIMIT))
            uri: Any
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
        if header.get("program_name"):   # name the program as the user did, not our cache file
            report.exit_state = report.exit_state.replace(program, str(header["program_name"]))
        names = [s["alias"] for s in header.get("outputs", [])]
        data = [report.outputs.get(a, b"") for a in names]
        return {"status": "ok", "report": report_dict(report), "outputs": names}, data


def failed(code: int, message: str, validator: int = 1) -> dict:
    return report_dict(sandbox_executor.failure(code, message, validator=validator))


def report_dict(report: sandbox_executor.Report) -> dict:
    return {
        "exit_code": report.exit_code,
        "exit_state": report.exit_state,
        "user_rc": report.user_rc,
        "validator": report.validator,
        "etag": report.etag,
        "elapsed": round(report.elapsed, 6),
        "cdr": report.accounting_line,
    }


def serve(sock: socket.socket, runner: JobRunner) -> None:
    """One job at a time until the daemon closes its end."""
    while True:
        reader = protocol.Reader(sock)
        try:
            header, payloads = reader.message(want_fds=True)
        except protocol.ProtocolError:
            return   # the daemon went away (or stopped us mid-message)
        try:
            reply, data = runner.run(header, payloads, reader.fds)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            reply, data = {"status": "bad-request", "reason": f"malformed job: {type(e).__name__}: {e}"}, []
        except MemoryError:
            reply, data = {"status": "ok", "report": failed(
                exit_status.MEMORY, "memory: the job's host side went over its memory cap", 0)}, []
        finally:
            protocol.close_all(reader.fds)
        protocol.send(sock, reply, data)


def die_with_parent() -> None:
    """SIGKILL when the daemon dies, so no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:   # the daemon was already gone before prctl
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zerolab-executor-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the socket to the daemon")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--data-limit", type=int, default=0, help="RLIMIT_DATA in bytes (0: none)")
    parser.add_argument("--sysimage", action="append", default=[], metavar="NAME=TAR")
    args = parser.parse_args(argv)
    die_with_parent()
    if args.data_limit:
        resource.setrlimit(resource.RLIMIT_DATA, (args.data_limit, args.data_limit))
    sysimages = dict(item.split("=", 1) for item in args.sysimage)
    sock = socket.socket(fileno=args.fd)
    runner = JobRunner(sysimages, args.cache_dir)
    runner.warm()
    protocol.send(sock, {"status": "ready", "pid": os.getpid()})
    serve(sock, runner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
