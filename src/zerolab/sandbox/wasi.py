"""WASI preview1 implemented in Python, so that the host mediates every byte.

wasmtime's built-in WASI cannot count or cap IO per file, and it would show the
guest the host's clock and entropy.  Here the guest's whole world is:

* the manifest's channels, at their aliases (``/dev/stdin``, ``/dev/3.file.txt``);
  fds 0/1/2 are ``/dev/stdin``/``/dev/stdout``/``/dev/stderr`` when declared;
* read-only trees from tar images, mounted where NVRAM's ``[fstab]`` says;
* a virtual clock and a seeded random stream (same job -> same bytes).

Every function of ``wasi_snapshot_preview1`` is defined (46 of them; CPython
for WASI imports 42).  Those without meaning here return ENOSYS or
ENOTCAPABLE instead of trapping.

The functions are defined once per Engine on a Linker; the job they serve is
found in a thread-local (``current``), set by the Executor around each run.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import posixpath
import re
import stat as stat_mod
import struct
import threading
from collections.abc import Callable
from typing import NoReturn

import wasmtime

from . import tarfs
from .manifest import Channel

# ---------------------------------------------------------------- constants
ESUCCESS, E2BIG, EACCES, EBADF, EDQUOT, EEXIST, EFAULT, EFBIG = 0, 1, 2, 8, 19, 20, 21, 22
EMFILE = 33
EINVAL, EIO, EISDIR, ELOOP, ENAMETOOLONG, ENOENT, ENOSYS = 28, 29, 31, 32, 37, 44, 52
ENOTDIR, ENOTEMPTY, ENOTSUP, EPERM, EROFS, ESPIPE, ENOTCAPABLE = 54, 55, 58, 63, 69, 70, 76

FT_UNKNOWN, FT_CHAR, FT_DIR, FT_REG = 0, 2, 3, 4
O_CREAT, O_DIRECTORY, O_EXCL, O_TRUNC = 1, 2, 4, 8
RIGHT_FD_SEEK, RIGHT_FD_TELL, RIGHT_FD_WRITE = 1 << 2, 1 << 5, 1 << 6
RIGHTS_ALL = (1 << 30) - 1
RIGHTS_CHAR = RIGHTS_ALL & ~(RIGHT_FD_SEEK | RIGHT_FD_TELL)
WHENCE_SET, WHENCE_CUR, WHENCE_END = 0, 1, 2

# The virtual clock starts at the manifest format's date (2013-06-11T00:00:00Z)
# and advances by one microsecond per clock read: programs that measure time
# see it move, but nothing of the host's time reaches them.
EPOCH_NS = 1370908800 * 10**9
CLOCK_STEP_NS = 1000

LIMIT_NAMES = ("gets", "get_size", "puts", "put_size")
# One call moves at most this much (a short read/write, which POSIX allows), so a
# guest asking for a 4 GiB read cannot make the host allocate 4 GiB at once.
MAX_IO = 16 << 20
# Everything else a guest can size in one call is bounded too, with the errno
# POSIX gives: so many iovecs (Linux's IOV_MAX), a path this long (PATH_MAX),
# this many poll subscriptions.  Without these a single call could make the
# host unpack gigabytes or loop for minutes inside one host call.
IOV_MAX = 1024
PATH_MAX = 4096
MAX_OPEN_FILES = 1024
MAX_SUBSCRIPTIONS = 4096
MAX_RANDOM = MAX_IO

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


class Fault(Exception):
    """A guest pointer outside its memory: the call returns EFAULT."""


class Errno(Exception):
    """A call refused before it touched anything: the call returns ``code``."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class GuestExit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


# ------------------------------------------------------------------ channels
class ChannelState:
    """A declared channel during one run: its backing, positions and counters."""

    def __init__(self, spec: Channel, host_fd: int | None = None, own_fd: bool = False,
                 data: bytes | bytearray | memoryview | None = None, size: int = 0, regular: bool = False):
        self.spec = spec
        self.alias = spec.alias
        self.fd = host_fd          # host file descriptor, or None for memory channels
        self.own_fd = own_fd       # close it at the end (not for our own stdin/out/err)
        self.data = data           # bytes (read-only) or bytearray (memory channel)
        self.size = size           # current size for random channels
        self.regular = regular     # host regular file: use pread/pwrite at positions
        self.rpos = 0
        self.wpos = 0
        self.gets = self.get_bytes = self.puts = self.put_bytes = 0
        self.hasher = hashlib.sha1() if spec.etag else None
        self.char = False          # NVRAM [mapping] mode=char: a terminal-like device
        self.ino = tarfs.inode("channel", spec.alias)

    def limit(self, name: str) -> int:
        limit: int = getattr(self.spec, name)
        return limit

    def close(self) -> None:
        if self.fd is not None and self.own_fd:
            os.close(self.fd)
        self.fd = None


class ChannelNode:
    """A channel's place in the guest's directory tree."""
    __slots__ = ("state", "ino")
    kind = "channel"

    def __init__(self, state: ChannelState):
        self.state = state
        self.ino = state.ino


class OpenFD:
    __slots__ = ("node", "pos", "path", "append")

    def __init__(self, node: tarfs.Node, path: str = "/", append: bool = False):
        self.node = node      # ChannelNode, tarfs.File or tarfs.Dir
        self.pos = 0          # for tar files
        self.path = path      # for directories: absolute guest path
        self.append = append


# ----------------------------------------------------------------- one job
class Run:
    """Everything one job's host calls need.  Created per job by the Executor."""

    def __init__(self, args: list[str], env: dict[str, str], seed: bytes):
        self.args = [a.encode() + b"\0" for a in args]
        self.env = [f"{k}={v}".encode() + b"\0" for k, v in env.items()]
        self.fds: dict[int, OpenFD] = {}
        self.channels: list[ChannelState] = []
        self.root = tarfs.Dir(ino=tarfs.inode("dir", "/"))
        self.own_dirs = {id(self.root)}   # dirs built for this run (safe to modify)
        self.image_channel: dict[int, ChannelState] = {}  # id(Image) -> channel that carries it
        self.clock = 0
        self._seed = seed
        self._rand_counter = 0
        self.quota_hit: str | None = None
        self.exit_status: int | None = None   # set by proc_exit
        self.memory: wasmtime.Memory | None = None
        self.store: wasmtime.Store | wasmtime.Caller | None = None
        self.base = 0
        self.mem_len = 0
        self.calls = 0

    # ------------------------------------------------------------ memory
    def attach(self, store: wasmtime.Store | wasmtime.Caller, memory: wasmtime.Memory) -> None:
        self.store = store
        self.memory = memory
        # The Engine is configured with memory_may_move(False), so the base stays put.
        self.base = ctypes.addressof(memory.data_ptr(store).contents)
        self.mem_len = memory.data_len(store)

    def check(self, ptr: int, n: int) -> int:
        """The host address of guest bytes [ptr, ptr + n), or Fault.  The one
        place where a guest offset becomes a host address: both numbers must
        be unsigned 32-bit (wasmtime hands i32s to Python signed, so a
        "negative" pointer would otherwise reach below the guest's memory)."""
        if not (0 <= ptr <= U32 and 0 <= n <= U32):
            raise Fault()
        end = ptr + n
        if end > self.mem_len:
            if self.memory is None or self.store is None:
                raise Fault()
            self.mem_len = self.memory.data_len(self.store)
            if end > self.mem_len:
                raise Fault()
        return self.base + ptr

    def read(self, ptr: int, n: int) -> bytes:
        return ctypes.string_at(self.check(ptr, n), n) if n else b""

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            ctypes.memmove(self.check(ptr, len(data)), data, len(data))

    def u32(self, ptr: int) -> int:
        value: int = struct.unpack("<I", self.read(ptr, 4))[0]
        return value

    def put_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<I", value))

    def put_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def iovecs(self, ptr: int, count: int) -> list[tuple[int, int]]:
        """The (buffer, length) pairs, each checked to lie inside guest memory
        (before any IO happens), cut to MAX_IO bytes in total.  At most IOV_MAX
        of them (EINVAL beyond, as writev says), so the array is small."""
        if count == 0:
            return []
        if count > IOV_MAX:
            raise Errno(EINVAL)
        raw = struct.unpack("<%dI" % (2 * count), self.read(ptr, 8 * count))
        out, total = [], 0
        for buf, length in zip(raw[0::2], raw[1::2]):
            self.check(buf, length)
            length = min(length, MAX_IO - total)
            if length > 0:          # empty iovecs are legal (wasi-libc's stdio sends them)
                out.append((buf, length))
                total += length
        return out

    def path(self, ptr: int, n: int) -> str:
        """A path argument: at most PATH_MAX bytes (ENAMETOOLONG beyond)."""
        if n > PATH_MAX:
            raise Errno(ENAMETOOLONG)
        return self.read(ptr, n).decode("utf-8", "replace")

    def scatter(self, iovs: list[tuple[int, int]], data: bytes) -> None:
        off = 0
        for buf, length in iovs:
            if off >= len(data):
                break
            chunk = data[off:off + length]
            self.write(buf, chunk)
            off += len(chunk)

    def gather(self, iovs: list[tuple[int, int]]) -> bytes:
        if len(iovs) == 1:
            return self.read(*iovs[0])
        return b"".join(self.read(buf, length) for buf, length in iovs)

    # ------------------------------------------------------ determinism
    def now(self) -> int:
        self.clock += CLOCK_STEP_NS
        return self.clock

    def random(self, n: int) -> bytes:
        # SHAKE-256 over a seed derived from the job and a call counter:
        # reproducible, independent of the host, and linear in n (one C call).
        out = hashlib.shake_256(self._seed + self._rand_counter.to_bytes(8, "little")).digest(n)
        self._rand_counter += 1
        return out

    # ------------------------------------------------------- filesystem
    def mkdirs(self, path: str) -> tarfs.Dir:
        """The directory at ``path``, created (and un-shared from images) as needed."""
        d = self.root
        walked = ""
        for part in [p for p in path.split("/") if p]:
            walked = f"{walked}/{part}"
            child = d.children.get(part)
            if isinstance(child, tarfs.Dir) and id(child) in self.own_dirs:
                d = child
                continue
            fresh = tarfs.Dir(child.mtime if isinstance(child, tarfs.Dir) else 0,
                              tarfs.inode("dir", walked.lstrip("/")))
            if isinstance(child, tarfs.Dir):   # copy-on-write: never modify a cached image tree
                fresh.children = dict(child.children)
            self.own_dirs.add(id(fresh))
            d.children[part] = fresh
            d = fresh
        return d

    def mount(self, image: tarfs.Image, mountpoint: str) -> None:
        d = self.mkdirs(mountpoint)
        d.children.update(image.root.children)
        d.mtime = image.root.mtime

    def place_channel(self, state: ChannelState) -> None:
        parent = self.mkdirs(posixpath.dirname(state.alias))
        parent.children[posixpath.basename(state.alias)] = ChannelNode(state)

    def lookup(self, dirfd: int, path: str) -> tuple[int, tarfs.Node | None, str]:
        """-> (errno, node, absolute guest path)"""
        fd = self.fds.get(dirfd)
        if fd is None:
            return EBADF, None, ""
        if not isinstance(fd.node, tarfs.Dir):
            return ENOTDIR, None, ""
        full = posixpath.normpath(posixpath.join(fd.path, path))
        if full.startswith("//"):
            full = full[1:]
        node = tarfs.resolve(self.root, full)
        if node is None:
            return ENOENT, None, full
        return ESUCCESS, node, full

    def new_fd(self, open_fd: OpenFD) -> int:
        if len(self.fds) >= MAX_OPEN_FILES:
            raise Errno(EMFILE)
        n = 3
        while n in self.fds:
            n += 1
        self.fds[n] = open_fd
        return n

    # ------------------------------------------------------------ quotas
    def _quota(self, ch: ChannelState, name: str) -> int:
        if self.quota_hit is None:
            self.quota_hit = f"{ch.alias} {name} limit {ch.limit(name)} reached"
        return EDQUOT

    def channel_read(self, ch: ChannelState, n: int, offset: int | None) -> tuple[int, bytes]:
        """ZeroVM's read rules: the gets count is checked first, then the request
        is cut to what get_size still allows; nothing left -> EDQUOT.
        -> (errno, data)"""
        if n == 0:
            return ESUCCESS, b""
        if ch.gets >= ch.spec.gets:
            return self._quota(ch, "gets"), b""
        left = ch.spec.get_size - ch.get_bytes
        if left <= 0:
            return self._quota(ch, "get_size"), b""
        n = min(n, left)
        pos = ch.rpos if offset is None else offset
        try:
            if ch.data is not None:
                data = bytes(ch.data[pos:pos + n])
            elif ch.fd is None:   # closed: the run is over
                return EBADF, b""
            elif ch.regular:
                data = os.pread(ch.fd, n, pos)
            else:
                data = os.read(ch.fd, n)
        except OSError:
            return EIO, b""
        ch.gets += 1
        ch.get_bytes += len(data)
        if offset is None:
            ch.rpos += len(data)
        if ch.hasher is not None:
            ch.hasher.update(data)
        return ESUCCESS, data

    def channel_write(self, ch: ChannelState, data: bytes, offset: int | None) -> tuple[int, int]:
        """-> (errno, bytes written).  Data beyond put_size is cut, then EDQUOT."""
        if not data:
            return ESUCCESS, 0
        if ch.puts >= ch.spec.puts:
            return self._quota(ch, "puts"), 0
        left = ch.spec.put_size - ch.put_bytes
        if left <= 0:
            return self._quota(ch, "put_size"), 0
        data = data[:left]
        pos = ch.wpos if offset is None else offset
        if ch.data is not None and pos + len(data) > ch.spec.put_size:
            # A memory channel lives in host memory: it never grows past put_size
            # bytes, whatever offset the guest seeks or writes to.
            return EFBIG, 0
        try:
            if ch.data is not None:
                buf = ch.data
                if not isinstance(buf, bytearray):   # a read-only channel's bytes
                    return EBADF, 0
                if pos > len(buf):
                    buf.extend(bytes(pos - len(buf)))
                buf[pos:pos + len(data)] = data
            elif ch.fd is None:   # closed: the run is over
                return EBADF, 0
            elif ch.regular:
                done = 0
                while done < len(data):
                    done += os.pwrite(ch.fd, data[done:], pos + done)
            else:
                done = 0
                while done < len(data):
                    done += os.write(ch.fd, data[done:])
        except OSError:
            return EIO, 0
        ch.puts += 1
        ch.put_bytes += len(data)
        if offset is None:
            ch.wpos += len(data)
        ch.size = max(ch.size, pos + len(data))
        if ch.hasher is not None:
            ch.hasher.update(data)
        return ESUCCESS, len(data)

    def file_read(self, node: tarfs.File, pos: int, n: int) -> tuple[int, bytes]:
        """A read of an image member, counted against the image's channel if it has one."""
        ch = self.image_channel.get(id(node.image))
        if ch is not None and n:
            if ch.gets >= ch.spec.gets:
                return self._quota(ch, "gets"), b""
            left = ch.spec.get_size - ch.get_bytes
            if left <= 0:
                return self._quota(ch, "get_size"), b""
            n = min(n, left)
        if node.image is None:   # mounted members always have their image
            return EIO, b""
        try:
            data = node.image.pread(node, pos, n)
        except OSError:
            return EIO, b""
        if ch is not None and n:
            ch.gets += 1
            ch.get_bytes += len(data)
        return ESUCCESS, data


current = threading.local()


# ------------------------------------------------------- struct helpers
def _filestat(node: tarfs.Node, run: Run) -> bytes:
    if isinstance(node, ChannelNode):
        ch = node.state
        ft = FT_CHAR if ch.char else FT_REG
        size = ch.size
        mtime = EPOCH_NS
    elif isinstance(node, tarfs.Dir):
        ft, size, mtime = FT_DIR, 4096, node.mtime * 10**9
    elif isinstance(node, tarfs.File):
        ft, size, mtime = FT_REG, node.size, node.mtime * 10**9
    else:   # lookups follow symlinks, and the sandbox places nothing but channels
        raise TypeError(f"no file status for {node!r}")
    return struct.pack("<QQBxxxxxxxQQQQQ", 1, node.ino, ft, 1, size, mtime, mtime, mtime)


def _filetype(node: tarfs.Node) -> int:
    if isinstance(node, ChannelNode):
        return FT_CHAR if node.state.char else FT_REG
    if isinstance(node, tarfs.Dir):
        return FT_DIR
    return FT_REG


# ------------------------------------------------------------ functions
# Each function receives the Run first; pointers are offsets in guest memory.

def args_sizes_get(run: Run, argc_ptr: int, size_ptr: int) -> int:
    run.put_u32(argc_ptr, len(run.args))
    run.put_u32(size_ptr, sum(len(a) for a in run.args))
    return ESUCCESS


def _strings_get(run: Run, items: list[bytes], ptrs: int, buf: int) -> int:
    for item in items:
        run.put_u32(ptrs, buf)
        run.write(buf, item)
        ptrs += 4
        buf += len(item)
    return ESUCCESS


def args_get(run: Run, argv: int, argv_buf: int) -> int:
    return _strings_get(run, run.args, argv, argv_buf)


def environ_sizes_get(run: Run, count_ptr: int, size_ptr: int) -> int:
    run.put_u32(count_ptr, len(run.env))
    run.put_u32(size_ptr, sum(len(e) for e in run.env))
    return ESUCCESS


def environ_get(run: Run, environ: int, environ_buf: int) -> int:
    return _strings_get(run, run.env, environ, environ_buf)


def clock_res_get(run: Run, clock_id: int, res_ptr: int) -> int:
    if clock_id > 3:
        return EINVAL
    run.put_u64(res_ptr, CLOCK_STEP_NS)
    return ESUCCESS


def clock_time_get(run: Run, clock_id: int, precision: int, time_ptr: int) -> int:
    if clock_id > 3:
        return EINVAL
    t = run.now()
    run.put_u64(time_ptr, EPOCH_NS + t if clock_id == 0 else t)
    return ESUCCESS


def random_get(run: Run, buf: int, length: int) -> int:
    run.check(buf, length)   # before generating: a bogus length must not cost host memory
    # Filled in bounded pieces, so the host never holds more than MAX_RANDOM at once.
    done = 0
    while done < length:
        piece = min(MAX_RANDOM, length - done)
        run.write(buf + done, run.random(piece))
        done += piece
    return ESUCCESS


def proc_exit(run: Run, code: int) -> NoReturn:
    # The exit status is kept on the Run, not only in the exception: wasmtime-py
    # passes host exceptions back through one global, which threads could race on.
    run.exit_status = code
    raise GuestExit(code)


def proc_raise(run: Run, sig: int) -> int:
    return ENOSYS


def sched_yield(run: Run) -> int:
    return ESUCCESS


def fd_read(run: Run, fd: int, iovs_ptr: int, iovs_len: int, nread_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    iovs = run.iovecs(iovs_ptr, iovs_len)
    want = sum(length for _, length in iovs)
    node = f.node
    if isinstance(node, ChannelNode):
        err, data = run.channel_read(node.state, want, None)
    elif isinstance(node, tarfs.File):
        err, data = run.file_read(node, f.pos, want)
        f.pos += len(data)
    else:
        return EISDIR
    if err:
        return err
    run.scatter(iovs, data)
    run.put_u32(nread_ptr, len(data))
    return ESUCCESS


def fd_pread(run: Run, fd: int, iovs_ptr: int, iovs_len: int, offset: int, nread_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    iovs = run.iovecs(iovs_ptr, iovs_len)
    want = sum(length for _, length in iovs)
    node = f.node
    if isinstance(node, ChannelNode):
        if not node.state.spec.random_read:
            return ESPIPE
        err, data = run.channel_read(node.state, want, offset)
    elif isinstance(node, tarfs.File):
        err, data = run.file_read(node, offset, want)
    else:
        return EISDIR
    if err:
        return err
    run.scatter(iovs, data)
    run.put_u32(nread_ptr, len(data))
    return ESUCCESS


def fd_write(run: Run, fd: int, iovs_ptr: int, iovs_len: int, nwritten_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    node = f.node
    if not isinstance(node, ChannelNode):
        return EBADF if isinstance(node, tarfs.File) else EISDIR
    data = run.gather(run.iovecs(iovs_ptr, iovs_len))
    ch = node.state
    offset = ch.size if (f.append and ch.spec.random_write) else None
    err, n = run.channel_write(ch, data, offset)
    if err:
        return err
    if offset is not None:
        ch.wpos = offset + n
    run.put_u32(nwritten_ptr, n)
    return ESUCCESS


def fd_pwrite(run: Run, fd: int, iovs_ptr: int, iovs_len: int, offset: int, nwritten_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    node = f.node
    if not isinstance(node, ChannelNode):
        return EBADF if isinstance(node, tarfs.File) else EISDIR
    if not node.state.spec.random_write:
        return ESPIPE
    data = run.gather(run.iovecs(iovs_ptr, iovs_len))
    err, n = run.channel_write(node.state, data, offset)
    if err:
        return err
    run.put_u32(nwritten_ptr, n)
    return ESUCCESS


def fd_seek(run: Run, fd: int, offset: int, whence: int, newoffset_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    node = f.node
    if isinstance(node, tarfs.Dir):
        return EISDIR
    if whence not in (WHENCE_SET, WHENCE_CUR, WHENCE_END):
        return EINVAL
    if isinstance(node, tarfs.File):
        base = {WHENCE_SET: 0, WHENCE_CUR: f.pos, WHENCE_END: node.size}[whence]
        if base + offset < 0:
            return EINVAL
        f.pos = base + offset
        run.put_u64(newoffset_ptr, f.pos)
        return ESUCCESS
    if not isinstance(node, ChannelNode):   # symlinks are followed: none is ever open
        return EBADF
    ch = node.state
    spec = ch.spec
    # ZeroVM access types: a sequential side has no position to move.
    if not (spec.random_read or spec.random_write):
        return ESPIPE
    current_pos = ch.rpos if spec.random_read else ch.wpos
    base = {WHENCE_SET: 0, WHENCE_CUR: current_pos, WHENCE_END: ch.size}[whence]
    new = base + offset
    if new < 0:
        return EINVAL
    if spec.random_read:
        ch.rpos = new
    if spec.random_write:
        ch.wpos = new
    run.put_u64(newoffset_ptr, new)
    return ESUCCESS


def fd_tell(run: Run, fd: int, offset_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    node = f.node
    if isinstance(node, tarfs.File):
        run.put_u64(offset_ptr, f.pos)
        return ESUCCESS
    if isinstance(node, ChannelNode):
        spec = node.state.spec
        if not (spec.random_read or spec.random_write):
            return ESPIPE
        run.put_u64(offset_ptr, node.state.rpos if spec.random_read else node.state.wpos)
        return ESUCCESS
    return EISDIR


def fd_close(run: Run, fd: int) -> int:
    if run.fds.pop(fd, None) is None:
        return EBADF
    return ESUCCESS


def fd_renumber(run: Run, fd: int, to: int) -> int:
    if fd not in run.fds or to not in run.fds:
        return EBADF
    run.fds[to] = run.fds.pop(fd)
    return ESUCCESS


def fd_fdstat_get(run: Run, fd: int, buf: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    ft = _filetype(f.node)
    rights = RIGHTS_CHAR if ft == FT_CHAR else RIGHTS_ALL
    flags = 1 if f.append else 0
    run.write(buf, struct.pack("<BxHxxxxQQ", ft, flags, rights, rights))
    return ESUCCESS


def fd_fdstat_set_flags(run: Run, fd: int, flags: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    f.append = bool(flags & 1)
    return ESUCCESS


def fd_fdstat_set_rights(run: Run, fd: int, base: int, inheriting: int) -> int:
    return ESUCCESS if fd in run.fds else EBADF


def fd_filestat_get(run: Run, fd: int, buf: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    run.write(buf, _filestat(f.node, run))
    return ESUCCESS


def fd_filestat_set_size(run: Run, fd: int, size: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    # Channels have a fixed extent in ZeroVM; images are read-only.
    return ENOTCAPABLE if isinstance(f.node, ChannelNode) else EROFS


def fd_filestat_set_times(run: Run, fd: int, atim: int, mtim: int, flags: int) -> int:
    return EBADF if fd not in run.fds else ENOTCAPABLE


def fd_advise(run: Run, fd: int, offset: int, length: int, advice: int) -> int:
    return ESUCCESS if fd in run.fds else EBADF


def fd_allocate(run: Run, fd: int, offset: int, length: int) -> int:
    return EBADF if fd not in run.fds else ENOTCAPABLE


def fd_datasync(run: Run, fd: int) -> int:
    return ESUCCESS if fd in run.fds else EBADF


fd_sync = fd_datasync


def fd_prestat_get(run: Run, fd: int, buf: int) -> int:
    # One preopen: the guest's root, at fd 3 (wasi-libc resolves absolute paths through it).
    f = run.fds.get(fd)
    if fd != 3 or f is None or not isinstance(f.node, tarfs.Dir):
        return EBADF
    run.write(buf, struct.pack("<BxxxI", 0, 1))
    return ESUCCESS


def fd_prestat_dir_name(run: Run, fd: int, path_ptr: int, path_len: int) -> int:
    if fd != 3 or fd not in run.fds:
        return EBADF
    run.write(path_ptr, b"/"[:path_len])
    return ESUCCESS


def fd_readdir(run: Run, fd: int, buf: int, buf_len: int, cookie: int, bufused_ptr: int) -> int:
    f = run.fds.get(fd)
    if f is None:
        return EBADF
    d = f.node
    if not isinstance(d, tarfs.Dir):
        return ENOTDIR
    entries = [(".", d), ("..", d)] + sorted(d.children.items())
    out = bytearray()
    for i in range(cookie, len(entries)):
        name, node = entries[i]
        raw = name.encode()
        ft = FT_DIR if isinstance(node, tarfs.Dir) else (
            FT_CHAR if isinstance(node, ChannelNode) and node.state.char else FT_REG)
        out += struct.pack("<QQIBxxx", i + 1, node.ino, len(raw), ft) + raw
        if len(out) >= buf_len:
            break
    data = bytes(out[:buf_len])
    run.write(buf, data)
    run.put_u32(bufused_ptr, len(data))
    return ESUCCESS


def path_open(run: Run, dirfd: int, dirflags: int, path_ptr: int, path_len: int, oflags: int, rights_base: int,
              rights_inheriting: int, fdflags: int, fd_ptr: int) -> int:
    path = run.path(path_ptr, path_len)
    err, node, full = run.lookup(dirfd, path)
    if err == ENOENT:
        # Nothing outside the manifest exists, and there is nowhere to create files.
        return EROFS if oflags & O_CREAT else ENOENT
    if err or node is None:
        return err or ENOENT
    if oflags & O_CREAT and oflags & O_EXCL:
        return EEXIST
    if isinstance(node, tarfs.Dir):
        fd = run.new_fd(OpenFD(node, full))
    elif oflags & O_DIRECTORY:
        return ENOTDIR
    elif isinstance(node, tarfs.File):
        if rights_base & RIGHT_FD_WRITE or oflags & O_TRUNC:
            return EROFS
        fd = run.new_fd(OpenFD(node))
    else:
        # A channel: O_TRUNC is ignored (channels keep their extent, as in ZeroVM).
        fd = run.new_fd(OpenFD(node, append=bool(fdflags & 1)))
    run.put_u32(fd_ptr, fd)
    return ESUCCESS


def path_filestat_get(run: Run, dirfd: int, flags: int, path_ptr: int, path_len: int, buf: int) -> int:
    path = run.path(path_ptr, path_len)
    err, node, _ = run.lookup(dirfd, path)
    if err or node is None:
        return err or ENOENT
    run.write(buf, _filestat(node, run))
    return ESUCCESS


def _read_only(run: Run, dirfd: int, path_ptr: int, path_len: int) -> int:
    path = run.path(path_ptr, path_len)
    err, node, _ = run.lookup(dirfd, path)
    if err == EBADF or err == ENOTDIR:
        return err
    return EROFS


def path_create_directory(run: Run, dirfd: int, path_ptr: int, path_len: int) -> int:
    return _read_only(run, dirfd, path_ptr, path_len)


def path_remove_directory(run: Run, dirfd: int, path_ptr: int, path_len: int) -> int:
    return _read_only(run, dirfd, path_ptr, path_len)


def path_unlink_file(run: Run, dirfd: int, path_ptr: int, path_len: int) -> int:
    return _read_only(run, dirfd, path_ptr, path_len)


def path_filestat_set_times(run: Run, dirfd: int, flags: int, path_ptr: int, path_len: int, atim: int, mtim: int,
                            fst_flags: int) -> int:
    return _read_only(run, dirfd, path_ptr, path_len)


def path_link(run: Run, old_fd: int, old_flags: int, old_ptr: int, old_len: int, new_fd: int, new_ptr: int,
              new_len: int) -> int:
    return _read_only(run, new_fd, new_ptr, new_len)


def path_rename(run: Run, old_fd: int, old_ptr: int, old_len: int, new_fd: int, new_ptr: int, new_len: int) -> int:
    return _read_only(run, new_fd, new_ptr, new_len)


def path_symlink(run: Run, old_ptr: int, old_len: int, dirfd: int, new_ptr: int, new_len: int) -> int:
    return _read_only(run, dirfd, new_ptr, new_len)


def path_readlink(run: Run, dirfd: int, path_ptr: int, path_len: int, buf: int, buf_len: int,
                  bufused_ptr: int) -> int:
    # Symlinks inside images are followed for the guest; none is visible as a link.
    path = run.path(path_ptr, path_len)
    err, _, _ = run.lookup(dirfd, path)
    return err or EINVAL


def poll_oneoff(run: Run, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
    """Clock waits complete at once by advancing the virtual clock (a guest's
    sleep() costs no host time); fd waits report the fd ready."""
    if nsubs == 0 or nsubs > MAX_SUBSCRIPTIONS:
        return EINVAL
    raw = run.read(in_ptr, 48 * nsubs)
    events = []
    clocks = []
    for i in range(nsubs):
        userdata, tag = struct.unpack_from("<QB", raw, 48 * i)
        if tag == 0:
            clock_id, timeout, _precision, flags = struct.unpack_from("<IxxxxQQH", raw, 48 * i + 16)
            clocks.append((userdata, clock_id, timeout, flags))
        elif tag in (1, 2):
            (fd,) = struct.unpack_from("<I", raw, 48 * i + 16)
            err = ESUCCESS if fd in run.fds else EBADF
            events.append(struct.pack("<QHBxxxxxQHxxxxxx", userdata, err, tag, 0, 0))
        else:
            return EINVAL
    if not events and clocks:
        # wake the earliest clock subscription; time jumps there
        def delay(c: tuple[int, int, int, int]) -> int:
            _, clock_id, timeout, flags = c
            if flags & 1:  # absolute time
                now = EPOCH_NS + run.clock if clock_id == 0 else run.clock
                return max(0, timeout - now)
            return timeout
        first = min(clocks, key=delay)
        run.clock += delay(first)
        events.append(struct.pack("<QHBxxxxxQHxxxxxx", first[0], 0, 0, 0, 0))
    run.write(out_ptr, b"".join(events))
    run.put_u32(nevents_ptr, len(events))
    return ESUCCESS


def sock_accept(run: Run, fd: int, flags: int, fd_ptr: int) -> int:
    return ENOTCAPABLE


def sock_recv(run: Run, fd: int, ri_data: int, ri_data_len: int, ri_flags: int, ro_datalen: int,
              ro_flags: int) -> int:
    return ENOTCAPABLE


def sock_send(run: Run, fd: int, si_data: int, si_data_len: int, si_flags: int, so_datalen: int) -> int:
    return ENOTCAPABLE


def sock_shutdown(run: Run, fd: int, how: int) -> int:
    return ENOTCAPABLE


# ------------------------------------------------------------- signatures
I32, I64 = "i", "I"
SIGNATURES: dict[str, tuple[str, str]] = {
    # name: (params, results) with i = i32, I = i64
    "args_get": ("ii", "i"), "args_sizes_get": ("ii", "i"),
    "environ_get": ("ii", "i"), "environ_sizes_get": ("ii", "i"),
    "clock_res_get": ("ii", "i"), "clock_time_get": ("iIi", "i"),
    "fd_advise": ("iIIi", "i"), "fd_allocate": ("iII", "i"),
    "fd_close": ("i", "i"), "fd_datasync": ("i", "i"),
    "fd_fdstat_get": ("ii", "i"), "fd_fdstat_set_flags": ("ii", "i"),
    "fd_fdstat_set_rights": ("iII", "i"), "fd_filestat_get": ("ii", "i"),
    "fd_filestat_set_size": ("iI", "i"), "fd_filestat_set_times": ("iIIi", "i"),
    "fd_pread": ("iiiIi", "i"), "fd_prestat_get": ("ii", "i"),
    "fd_prestat_dir_name": ("iii", "i"), "fd_pwrite": ("iiiIi", "i"),
    "fd_read": ("iiii", "i"), "fd_readdir": ("iiiIi", "i"),
    "fd_renumber": ("ii", "i"), "fd_seek": ("iIii", "i"),
    "fd_sync": ("i", "i"), "fd_tell": ("ii", "i"), "fd_write": ("iiii", "i"),
    "path_create_directory": ("iii", "i"), "path_filestat_get": ("iiiii", "i"),
    "path_filestat_set_times": ("iiiiIIi", "i"), "path_link": ("iiiiiii", "i"),
    "path_open": ("iiiiiIIii", "i"), "path_readlink": ("iiiiii", "i"),
    "path_remove_directory": ("iii", "i"), "path_rename": ("iiiiii", "i"),
    "path_symlink": ("iiiii", "i"), "path_unlink_file": ("iii", "i"),
    "poll_oneoff": ("iiii", "i"), "proc_exit": ("i", ""), "proc_raise": ("i", "i"),
    "sched_yield": ("", "i"), "random_get": ("ii", "i"),
    "sock_accept": ("iii", "i"), "sock_recv": ("iiiiii", "i"),
    "sock_send": ("iiiii", "i"), "sock_shutdown": ("ii", "i"),
}
MODULE = "wasi_snapshot_preview1"


def _valtype(c: str) -> wasmtime.ValType:
    return wasmtime.ValType.i32() if c == I32 else wasmtime.ValType.i64()


# The few parameters that preview1 declares signed (fd_seek's filedelta, the
# exit code); every other integer a guest passes is unsigned.
SIGNED = {"fd_seek": {1}, "proc_exit": {0}}


def unsigned_args(name: str, args: tuple[int, ...]) -> list[int]:
    """A host function's arguments as preview1 means them: wasmtime passes every
    i32/i64 to Python as a signed int, so a pointer at or above 2 GiB arrives
    negative.  Each is masked to its width here, before any function sees it."""
    params = SIGNATURES[name][0]
    out = [a & (U32 if c == I32 else U64) for c, a in zip(params, args)]
    for i in SIGNED.get(name, ()):
        bits = 32 if params[i] == I32 else 64
        if out[i] >= 1 << (bits - 1):
            out[i] -= 1 << bits
    return out


def _wrap(name: str, fn: Callable[..., int]) -> Callable[..., int]:
    def host_call(caller: wasmtime.Caller, *args: int) -> int:
        run: Run = current.run
        run.store = caller   # memory length lookups must go through the live caller
        run.calls += 1
        try:
            return fn(run, *unsigned_args(name, args))
        except Fault:
            return EFAULT
        except Errno as e:
            return e.code
    host_call.__name__ = fn.__name__
    return host_call


def define(linker: wasmtime.Linker) -> None:
    """Defines every preview1 function on ``linker`` (once per Engine)."""
    g = globals()
    for name, (params, results) in SIGNATURES.items():
        ty = wasmtime.FuncType([_valtype(c) for c in params], [_valtype(c) for c in results])
        linker.define_func(MODULE, name, ty, _wrap(name, g[name]), access_caller=True)


def unsupported_imports(module: wasmtime.Module) -> list[str]:
    """Imports the sandbox cannot satisfy (a guest may only use preview1 functions)."""
    bad = []
    for imp in module.imports:
        if imp.module != MODULE or imp.name not in SIGNATURES or not isinstance(imp.type, wasmtime.FuncType):
            bad.append(f"{imp.module}.{imp.name}")
    return bad


def open_host_channel(spec: Channel) -> ChannelState:
    """Opens a channel whose uri is a host path.  Raises OSError (caller reports it)."""
    uri = spec.uri
    if not isinstance(uri, str):
        raise OSError(errno.EINVAL, "not a host path", spec.alias)
    std = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if uri in std:
        # Our own streams: use the descriptors, do not reopen (reopening
        # /dev/stdout of a file would truncate or reposition it).
        fd = std[uri]
        st = os.fstat(fd)
        regular = stat_mod.S_ISREG(st.st_mode)
        state = ChannelState(spec, fd, own_fd=False, size=st.st_size if regular else 0,
                             regular=False)
        return state
    passed = re.fullmatch(r"/proc/self/fd/(\d+)", uri)
    if passed and not spec.writable:
        # A descriptor handed over by the caller (the object server's data
        # file): used as it is, not reopened, so the file's own permissions
        # do not matter to the executor's user.
        fd = os.dup(int(passed.group(1)))
        st = os.fstat(fd)
        regular = stat_mod.S_ISREG(st.st_mode)
        return ChannelState(spec, fd, own_fd=True, size=st.st_size if regular else 0, regular=regular)
    if spec.writable:
        flags = os.O_CREAT | (os.O_RDWR if spec.readable else os.O_WRONLY)
        if not spec.readable and spec.type == 0:
            flags |= os.O_TRUNC   # a sequential output starts empty
    else:
        flags = os.O_RDONLY
    fd = os.open(uri, flags | os.O_CLOEXEC, 0o644)
    st = os.fstat(fd)
    if stat_mod.S_ISDIR(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(21, "Is a directory", uri)
    regular = stat_mod.S_ISREG(st.st_mode)
    state = ChannelState(spec, fd, own_fd=True, size=st.st_size if regular else 0, regular=regular)
    if spec.type == 1 and regular:
        state.wpos = st.st_size   # appendable channel: writes follow the last byte
    return state


def open_memory_channel(spec: Channel, data: bytes | bytearray | memoryview | None) -> ChannelState:
    buf: bytes | bytearray | memoryview
    if spec.writable:
        buf = bytearray(data or b"")
    else:
        buf = data if isinstance(data, (bytes, memoryview)) else bytes(data or b"")
    state = ChannelState(spec, None, data=buf, size=len(buf))
    if spec.type == 1:
        state.wpos = len(buf)
    return state
