"""The programs and images a long-lived Executor keeps, and the disk cache behind them.

Compiled modules are kept in memory (bounded, oldest out) and, with a
``cache_dir``, serialized to disk content-addressed; tar images are indexed
once and kept the same way.  Every failure to load a program is a
ProgramError with one line for the user.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Union

import wasmtime

from . import tarfs, wasi
from .report import first_line

try:
    ENGINE_TAG = "wasmtime-" + importlib.metadata.version("wasmtime") + "-zerolab-v1"
except importlib.metadata.PackageNotFoundError:
    ENGINE_TAG = "wasmtime-unknown-zerolab-v1"
# A compiled module's identity: the real path, the tar member (None: a plain
# wasm file), and the file's size, mtime and inode.
ModuleKey = tuple[str, Union[str, None], int, int, int]
FileStamp = tuple[int, int, int]


@dataclass(frozen=True)
class CompiledProgram:
    module: wasmtime.Module
    pre: wasmtime.InstancePre


class ProgramError(Exception):
    pass


class ProgramCache:
    """Compiled programs and indexed images, shared by every job of an Executor.  Thread-safe."""

    def __init__(self, engine: wasmtime.Engine, linker: wasmtime.Linker, cache_dir: str | None = None,
                 max_modules: int = 64, max_images: int = 16):
        self.engine = engine
        self.linker = linker
        self.cache_dir = cache_dir
        self.max_modules = max_modules
        self.max_images = max_images
        self._modules: dict[ModuleKey, CompiledProgram] = {}
        self._by_name: dict[str, tuple[str, FileStamp, CompiledProgram]] = {}
        self._images: dict[tarfs.ImageKey, tarfs.Image] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        for image in self._images.values():
            image.close()

    def load_module(self, program: str) -> wasmtime.Module:
        """The compiled module for ``program``: a wasm file, or a member of a tar
        given as ``/path/image.tar/member`` (how zvsh runs ``python`` from an image
        without extracting it).  Raises ProgramError with a one-line message."""
        return self.compiled(program).module

    def compiled(self, program: str) -> CompiledProgram:
        """load_module's module, with its imports resolved (what a run instantiates)."""
        # Fast path for warm jobs: one stat() of the program decides whether the
        # cached module is still current (same size, mtime and inode).
        with self._lock:
            hit = self._by_name.get(program)
        if hit is not None:
            path, stamp, compiled = hit
            try:
                st = os.stat(path)
                if (st.st_size, st.st_mtime_ns, st.st_ino) == stamp:
                    return compiled
            except OSError:
                pass
        host_path, member = split_program(program)
        if host_path is None:
            raise ProgramError(f"program {program} not found")
        try:
            st = os.stat(host_path)
        except OSError as e:
            raise ProgramError(f"program {program}: {e.strerror}") from None
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        key: ModuleKey = (os.path.realpath(host_path), member, *stamp)
        with self._lock:
            cached = self._modules.get(key)
        if cached is not None:
            with self._lock:
                self._by_name[program] = (host_path, stamp, cached)
            return cached
        module = self._load_uncached(host_path, member, key, program)
        # InstancePre: import resolution done once, so each job only instantiates.
        compiled = CompiledProgram(module, self.linker.instantiate_pre(module))
        with self._lock:
            self._modules[key] = compiled
            self._by_name[program] = (host_path, stamp, compiled)
            # A long-lived Executor sees many programs: keep the most recent ones.
            while len(self._modules) > self.max_modules:
                old = self._modules.pop(next(iter(self._modules)))
                self._by_name = {k: v for k, v in self._by_name.items() if v[2] is not old}
        return compiled

    def _load_uncached(self, host_path: str, member: str | None, key: ModuleKey,
                       program: str) -> wasmtime.Module:
        """Compiles, or loads a serialized module from cache_dir.  The disk cache is
        content-addressed (sha256 of the wasm), so a copy of a known program (zvsh's
        boot.1 in a new save dir) is not compiled again; a small by-stat entry maps
        (path, size, mtime, inode) to that digest so known files are not even hashed."""
        module = None
        stat_entry = None
        if self.cache_dir:
            stat_entry = os.path.join(self.cache_dir, "by-stat",
                                      hashlib.sha256(repr((key, ENGINE_TAG)).encode()).hexdigest())
            try:
                with open(stat_entry) as f:
                    module = self._deserialize(f.read().strip())
            except OSError:
                pass
        if module is None:
            wasm = self._read_program(host_path, member, program)
            digest = hashlib.sha256(ENGINE_TAG.encode() + wasm).hexdigest()
            module = self._deserialize(digest) if self.cache_dir else None
            if module is None:
                try:
                    module = wasmtime.Module(self.engine, wasm)
                except wasmtime.WasmtimeError as e:
                    raise ProgramError(f"program {program} does not validate: {first_line(str(e))}") from None
                self._check_program(module, program)
                if self.cache_dir:
                    self._cache_write(os.path.join(self.cache_dir, f"{digest}.cwasm"), module.serialize())
            if stat_entry:
                self._cache_write(stat_entry, digest.encode())
        self._check_program(module, program)
        return module

    def _read_program(self, host_path: str, member: str | None, program: str) -> bytes:
        try:
            if member is None:
                with open(host_path, "rb") as f:
                    wasm = f.read()
            else:
                image = self.image(host_path)
                node = image.lookup(member)
                if not isinstance(node, tarfs.File):
                    raise ProgramError(f"program {member} not found in image {host_path}")
                wasm = image.pread(node, 0, node.size)
        except OSError as e:
            raise ProgramError(f"program {program}: {e.strerror}") from None
        except tarfs.ImageError as e:
            raise ProgramError(str(e)) from None
        if wasm[:4] != b"\0asm":
            raise ProgramError(f"program {program} is not a WebAssembly module")
        return wasm

    @staticmethod
    def _check_program(module: wasmtime.Module, program: str) -> None:
        bad = wasi.unsupported_imports(module)
        if bad:
            raise ProgramError(f"program {program} imports {', '.join(bad[:3])}, "
                               f"which the sandbox does not provide (only {wasi.MODULE})")
        if "_start" not in [e.name for e in module.exports]:
            raise ProgramError(f"program {program} has no _start (not a WASI command)")

    def _deserialize(self, digest: str) -> wasmtime.Module | None:
        # Only files this code wrote are read back: cache_dir must be private to
        # the user (deserializing is trusting the bytes to be wasmtime's own).
        if not self.cache_dir:
            return None
        path = os.path.join(self.cache_dir, f"{digest}.cwasm")
        if not os.path.exists(path):
            return None
        try:
            return wasmtime.Module.deserialize_file(self.engine, path)
        except wasmtime.WasmtimeError:
            return None  # another wasmtime version or config: compile again

    @staticmethod
    def _cache_write(path: str, data: bytes | bytearray) -> None:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)   # atomic: a concurrent reader never sees half a file
        except OSError:
            pass  # a cache we cannot write only costs time

    def image(self, path: str) -> tarfs.Image:
        """The indexed tar at ``path`` (cached in memory, and pickled in cache_dir)."""
        try:
            key = tarfs.image_key(path)
        except OSError as e:
            raise tarfs.ImageError(f"image {path}: {e.strerror}") from None
        with self._lock:
            image = self._images.pop(key, None)
            if image is not None:
                self._images[key] = image   # most recently used last
        if image is not None:
            return image
        image = None
        disk = None
        if self.cache_dir:
            disk = os.path.join(self.cache_dir,
                                hashlib.sha256(repr((key, "index-v2", ENGINE_TAG)).encode()).hexdigest() + ".idx")
            try:
                with open(disk, "rb") as f:
                    image = pickle.load(f)
                image.path = key[0]
            except Exception:  # a stale or foreign cache entry: index again
                image = None
        if image is None:
            if not tarfs.is_tar(path):
                raise tarfs.ImageError(f"image {path} is not a tar file")
            image = tarfs.index_tar(path)
            if disk:
                self._cache_write(disk, pickle.dumps(image, protocol=pickle.HIGHEST_PROTOCOL))
        with self._lock:
            self._images[key] = image
            # Bounded like the modules: an evicted image closes its file once
            # no running job holds it (Image.__del__).
            while len(self._images) > self.max_images:
                self._images.pop(next(iter(self._images)))
        return image


def split_program(program: str) -> tuple[str | None, str | None]:
    """``/a/b.wasm`` -> (that path, None); ``/a/python.tar/bin/python`` ->
    ("/a/python.tar", "bin/python") when /a/python.tar is a file."""
    if os.path.isfile(program):
        return program, None
    head, tail = program, ""
    while head and head != "/" and head != ".":
        head, base = os.path.split(head)
        tail = base if not tail else f"{base}/{tail}"
        if os.path.isfile(head):
            return head, tail
    return None, None
