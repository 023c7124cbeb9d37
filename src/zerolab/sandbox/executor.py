"""The Executor runs manifests and says how each went in a Report (ZeroVM style).

An Executor is meant to live long (the executor daemon's workers keep one):
it owns a wasmtime Engine, a Linker with the WASI host defined once, the
compiled programs and indexed images (programs.py), and one background
thread that advances the Engine's epoch (timeouts).  Each ``run()`` makes a
fresh Store, so jobs share nothing.  The report itself is report.py's.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import posixpath
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Union

import wasmtime

from . import tarfs, wasi
from .manifest import DEFAULT_LIMIT, Channel, Manifest, ManifestError, Mount
from .nvram import NVRAM
from .programs import CompiledProgram, ProgramCache, ProgramError
from .report import ChannelReport, Report, failure, first_line, trap_reason
from .status import (
    BAD_INPUT,
    BAD_MANIFEST,
    CRASH,
    GUEST_EXIT,
    INTERNAL,
    INVALID_PROGRAM,
    MEMORY,
    OK,
    TIMEOUT,
)

# Who imports the Executor finds these here too.
__all__ = ["Executor", "ImageSpec", "Report", "ChannelReport", "ProgramError", "failure"]

TICK_SECONDS = 0.01   # epoch granularity: timeouts fire within 10 ms of their deadline
# An image to mount: a tar's path (at /), or (path, mountpoint).
ImageSpec = Union[str, tuple[str, str]]


class Executor:
    """Runs jobs.  Thread-safe: several threads may call run() at once."""

    def __init__(self, cache_dir: str | None = None, max_modules: int = 64, max_images: int = 16):
        config = wasmtime.Config()
        config.epoch_interruption = True
        # A linear memory that never moves lets the host keep its base address.
        config.memory_may_move = False
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        wasi.define(self.linker)
        self.programs = ProgramCache(self.engine, self.linker, cache_dir, max_modules, max_images)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="zerolab-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.engine.increment_epoch()

    def close(self) -> None:
        self._stop.set()
        self.programs.close()

    def load_module(self, program: str) -> wasmtime.Module:
        """The compiled module for ``program``: a wasm file, or a member of a tar
        given as ``/path/image.tar/member`` (how zvsh runs ``python`` from an image
        without extracting it).  Raises ProgramError with a one-line message."""
        return self.programs.compiled(program).module

    def image(self, path: str) -> tarfs.Image:
        """The indexed tar at ``path`` (cached in memory, and in cache_dir)."""
        return self.programs.image(path)

    # ------------------------------------------------------------------ run
    def run(self, manifest: Manifest, stdin: bytes | None = None,
            images: Iterable[ImageSpec] = (), args: list[str] | None = None,
            env: dict[str, str] | None = None, mapping: dict[str, str] | None = None) -> Report:
        """Runs one job and returns its Report (never raises for a bad job).

        ``stdin``: bytes for /dev/stdin (replaces that channel's uri for this run).
        ``images``: extra tar images to mount, as paths or (path, mountpoint);
        they are trusted host files, so reads from them are not accounted.
        ``args``/``env`` override the manifest's (or its NVRAM's), and
        ``mapping`` (alias -> "char" or "file") adds to its NVRAM's [mapping].
        """
        started = time.perf_counter()
        cpu0 = os.times()
        try:
            report = self._run(manifest, stdin, images, args, env, mapping or {})
        except ManifestError as e:
            report = failure(BAD_MANIFEST, str(e))
        except MemoryError:
            report = failure(MEMORY, "the job's host side went over its memory cap")
        except Exception as e:  # a bug of ours: a report, not an exception in the caller
            report = failure(INTERNAL, f"{type(e).__name__}: {first_line(str(e))}")
        cpu1 = os.times()
        report.elapsed = time.perf_counter() - started
        report.cpu_user = cpu1.user - cpu0.user
        report.cpu_sys = cpu1.system - cpu0.system
        return report

    def _run(self, manifest: Manifest, stdin: bytes | None, images: Iterable[ImageSpec],
             args: list[str] | None, env: dict[str, str] | None, extra_mapping: dict[str, str]) -> Report:
        manifest.validate()
        # NVRAM: from the manifest object, or read from its /dev/nvram channel.
        nv_args, nv_env, mounts, mapping = manifest.args, manifest.env, manifest.mounts, {}
        nvram_channel = manifest.channel("/dev/nvram")
        if nvram_channel is not None and isinstance(nvram_channel.uri, str) and nv_args is None:
            try:
                with open(nvram_channel.uri, encoding="utf-8") as f:
                    nv = NVRAM.parse(f.read(), source=nvram_channel.uri)
            except OSError as e:
                return failure(BAD_INPUT, f"nvram {nvram_channel.uri}: {e.strerror}")
            except ManifestError as e:
                return failure(BAD_INPUT, str(e))
            nv_args, mapping = nv.args, nv.mapping
            nv_env = nv.env if nv_env is None else nv_env
            mounts = nv.mounts if mounts is None else mounts
        mapping = {**mapping, **extra_mapping}
        if args is not None:
            nv_args = list(args)
        if env is not None:
            nv_env = dict(env)
        if not nv_args:
            nv_args = [posixpath.basename(manifest.program)]
        nv_env = nv_env or {}

        try:
            program = self.programs.compiled(manifest.program)
        except ProgramError as e:
            return failure(INVALID_PROGRAM, str(e), validator=1)

        run = wasi.Run(nv_args, nv_env, job_seed(manifest, nv_args, nv_env))
        report = Report(exit_code=OK, exit_state="ok")
        try:
            prepared = self._prepare(run, manifest, stdin, images, mounts or [], mapping)
            if prepared is not None:
                return prepared
            self._execute(run, program, manifest, report)
        finally:
            for ch in run.channels:
                ch.close()
        self._finish(run, manifest, report)
        return report

    def _prepare(self, run: wasi.Run, manifest: Manifest, stdin: bytes | None, images: Iterable[ImageSpec],
                 mounts: list[Mount], mapping: dict[str, str]) -> Report | None:
        """Opens every channel and mounts every image before the guest starts
        (ZeroVM did the same: a channel that cannot open means no session)."""
        by_alias = {}
        for spec in manifest.channels:
            if spec.alias == "/dev/stdin" and stdin is not None:
                state = wasi.open_memory_channel(spec, stdin)
            elif isinstance(spec.uri, str):
                try:
                    state = wasi.open_host_channel(spec)
                except OSError as e:
                    return failure(BAD_INPUT, f"channel {spec.alias}: cannot open {spec.uri}: "
                                              f"{e.strerror or e}")
            else:
                data = spec.uri.getvalue() if isinstance(spec.uri, io.BytesIO) else spec.uri
                state = wasi.open_memory_channel(spec, data)
            state.char = mapping.get(spec.alias) == "char"
            run.channels.append(state)
            by_alias[spec.alias] = state
        if stdin is not None and "/dev/stdin" not in by_alias:
            spec = Channel(None, "/dev/stdin", 0, 0, DEFAULT_LIMIT, DEFAULT_LIMIT, 0, 0)
            state = wasi.open_memory_channel(spec, stdin)
            run.channels.append(state)
            by_alias[spec.alias] = state

        # Images first, so that channels (e.g. /dev/...) win over image members.
        for m in mounts:
            ch = by_alias.get(m.channel)
            if ch is None or not isinstance(ch.spec.uri, str):
                return failure(BAD_INPUT, f"fstab mounts {m.channel}, which is not a channel "
                                          f"backed by a file")
            try:
                image = self.image(ch.spec.uri)
            except tarfs.ImageError as e:
                return failure(BAD_INPUT, str(e))
            run.mount(image, m.mountpoint)
            run.image_channel[id(image)] = ch
        for image_spec in images:
            path, mountpoint = (image_spec, "/") if isinstance(image_spec, str) else image_spec
            try:
                image = self.image(path)
            except tarfs.ImageError as e:
                return failure(BAD_INPUT, str(e))
            run.mount(image, mountpoint)
        for state in run.channels:
            run.place_channel(state)

        for fd, alias in enumerate(("/dev/stdin", "/dev/stdout", "/dev/stderr")):
            if alias in by_alias:
                run.fds[fd] = wasi.OpenFD(wasi.ChannelNode(by_alias[alias]))
        run.fds[3] = wasi.OpenFD(run.root, "/")
        return None

    def _execute(self, run: wasi.Run, program: CompiledProgram, manifest: Manifest, report: Report) -> None:
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=manifest.memory, instances=1, tables=4, memories=1,
                         table_elements=1 << 20)
        store.set_epoch_deadline(math.ceil(manifest.timeout / TICK_SECONDS) + 1)
        wasi.current.run = run
        try:
            try:
                instance = program.pre.instantiate(store)
            except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
                text = str(e)
                if getattr(e, "trap_code", None) == wasmtime.TrapCode.INTERRUPT:
                    # The module's start function runs inside instantiate.
                    report.exit_code, report.exit_state = TIMEOUT, (
                        f"timeout: the program's start function ran longer than Timeout = {manifest.timeout} s")
                elif "memory" in text and ("limit" in text or "minimum" in text or "exceed" in text):
                    report.exit_code, report.exit_state = MEMORY, (
                        f"memory: the program needs more memory at start than Memory = {manifest.memory}")
                else:
                    report.exit_code, report.exit_state = INVALID_PROGRAM, (
                        f"invalid program: cannot instantiate: {first_line(text)}")
                    report.validator = 1
                return
            exports = instance.exports(store)
            memory = exports.get("memory")
            if not isinstance(memory, wasmtime.Memory):
                report.exit_code, report.exit_state = INVALID_PROGRAM, "invalid program: no exported memory"
                report.validator = 1
                return
            run.attach(store, memory)
            start = exports["_start"]
            if not isinstance(start, wasmtime.Func):
                report.exit_code, report.exit_state = INVALID_PROGRAM, "invalid program: _start is not a function"
                report.validator = 1
                return
            user_rc = 0
            try:
                try:
                    start(store)
                finally:
                    run.store = store   # host calls left a (now dead) Caller there
            except Exception as e:
                # The exception's frames hold the Store; wasmtime keeps the last
                # one, so drop them now or the guest's memory outlives the job.
                traceback.clear_frames(e.__traceback__)
                if run.exit_status is not None:      # proc_exit unwinds with an exception
                    user_rc = run.exit_status
                elif isinstance(e, wasmtime.Trap):
                    self._trap(run, manifest, report, e)
                    return
                elif isinstance(e, wasmtime.WasmtimeError):
                    report.exit_code, report.exit_state = CRASH, f"crash: {first_line(str(e))}"
                    return
                elif isinstance(e, MemoryError):
                    report.exit_code, report.exit_state = MEMORY, (
                        "memory: a host call of the job went over the host memory cap")
                    return
                else:  # a bug in the host functions: report it, do not crash the caller
                    report.exit_code, report.exit_state = INTERNAL, (
                        f"internal error: {type(e).__name__}: {first_line(str(e))}")
                    return
            report.user_rc = user_rc
            if user_rc != 0:
                report.exit_code = GUEST_EXIT
                if near_memory_cap(run, manifest):
                    report.exit_code, report.exit_state = MEMORY, (
                        f"memory: the guest failed at its Memory cap ({manifest.memory} bytes)")
        finally:
            run.store = store
            self._memory_tag(run, manifest, report)
            wasi.current.run = None
            # The guest's memory goes back when the job ends, not at the next
            # garbage collection: a worker near its memory cap cannot wait.
            run.store = run.memory = None

    def _trap(self, run: wasi.Run, manifest: Manifest, report: Report, trap: wasmtime.Trap) -> None:
        code = getattr(trap, "trap_code", None)
        if code == wasmtime.TrapCode.INTERRUPT:
            report.exit_code, report.exit_state = TIMEOUT, (
                f"timeout: the job ran longer than Timeout = {manifest.timeout} s")
        elif near_memory_cap(run, manifest):
            report.exit_code, report.exit_state = MEMORY, (
                f"memory: the guest crashed at its Memory cap ({manifest.memory} bytes): "
                f"{trap_reason(trap.message)}")
        else:
            report.exit_code, report.exit_state = CRASH, f"crash: {trap_reason(trap.message)}"
        report.user_rc = 0

    def _memory_tag(self, run: wasi.Run, manifest: Manifest, report: Report) -> None:
        # Memory etag (the Memory line's 2nd field): a digest of the final guest memory.
        if manifest.etag and run.memory is not None and run.store is not None:
            try:
                n = run.memory.data_len(run.store)
                digest = hashlib.md5(run.read(0, n), usedforsecurity=False).hexdigest()
                report.memory_etag = digest
            except Exception:  # the store may be unusable after a trap
                pass

    def _finish(self, run: wasi.Run, manifest: Manifest, report: Report) -> None:
        tags = []
        for ch in run.channels:
            etag = ch.hasher.hexdigest() if ch.hasher is not None else None
            report.channels.append(wasi_channel_report(ch, etag))
            if etag:
                tags.append(f"{ch.alias} {etag}")
            if ch.data is not None and ch.spec.writable:
                data = bytes(ch.data)
                report.outputs[ch.alias] = data
                if isinstance(ch.spec.uri, io.BytesIO):
                    ch.spec.uri.seek(0)
                    ch.spec.uri.truncate()
                    ch.spec.uri.write(data)
        if report.memory_etag:
            tags.append(f"/dev/memory {report.memory_etag}")
        report.etag = " ".join(tags) if tags else "disable"
        report.wasi_calls = run.calls
        report.quota_hit = run.quota_hit
        if run.quota_hit and report.exit_code in (OK, GUEST_EXIT):
            # ZeroVM's rule: the call got EDQUOT and the program went on, so
            # its exit code stands; the state says why its data may be short.
            report.exit_state = f"quota: {run.quota_hit}"


def wasi_channel_report(ch: wasi.ChannelState, etag: str | None) -> ChannelReport:
    return ChannelReport(ch.alias, ch.gets, ch.get_bytes, ch.puts, ch.put_bytes, etag)


def near_memory_cap(run: wasi.Run, manifest: Manifest) -> bool:
    """Whether the guest's memory had grown to its cap.  wasmtime refuses the
    growth (memory.grow returns -1) without telling the host, so a guest that
    fails while its memory is within a few MiB of the cap is reported as having
    run out of memory."""
    if run.memory is None or run.store is None:
        return False
    try:
        size = run.memory.data_len(run.store)
    except Exception:
        return False
    return manifest.memory - size < max(4 << 20, manifest.memory // 16)


def job_seed(manifest: Manifest, args: list[str], env: dict[str, str]) -> bytes:
    """The random_get seed: the job as the guest sees it (node, aliases and
    limits, argv, env), never host paths, so a job reruns identically anywhere."""
    parts = [str(manifest.node), str(manifest.memory)]
    parts += [f"{c.alias},{c.type},{c.gets},{c.get_size},{c.puts},{c.put_size}" for c in manifest.channels]
    parts += ["\0".join(args), "\0".join(f"{k}={v}" for k, v in sorted(env.items()))]
    return hashlib.sha256("\n".join(parts).encode()).digest()
