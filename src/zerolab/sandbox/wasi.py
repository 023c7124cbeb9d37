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
Beside this file: guest_memory.py (every guest pointer checked, in one
place), channels.py (a channel's state and how it is opened), wasi_abi.py
(preview1's numbers and the per-call limits).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import struct
import threading
from collections.abc import Callable
from typing import NoReturn

import wasmtime

from . import tarfs
from .channels import ChannelState, open_host_channel, open_memory_channel
from .guest_memory import GuestMemory
from .wasi_abi import (
    CLOCK_STEP_NS,
    EBADF,
    EDQUOT,
    EEXIST,
    EFAULT,
    EFBIG,
    EINVAL,
    EIO,
    EISDIR,
    EMFILE,
    ENOENT,
    ENOSYS,
    ENOTCAPABLE,
    ENOTDIR,
    EPOCH_NS,
    EROFS,
    ESPIPE,
    ESUCCESS,
    FT_CHAR,
    FT_DIR,
    FT_REG,
    MAX_OPEN_FILES,
    MAX_RANDOM,
    MAX_SUBSCRIPTIONS,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_TRUNC,
    RIGHT_FD_WRITE,
    RIGHTS_ALL,
    RIGHTS_CHAR,
    U32,
    U64,
    WHENCE_CUR,
    WHENCE_END,
    WHENCE_SET,
    Errno,
    Fault,
    GuestExit,
)

# Who drives a run (the Executor) opens its channels with these.
__all__ = ["Run", "ChannelState", "ChannelNode", "OpenFD", "current", "define", "unsupported_imports",
           "open_host_channel", "open_memory_channel", "MODULE", "SIGNATURES"]


# ------------------------------------------------------------------ channels
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
class Run(GuestMemory):
    """Everything one job's host calls need.  Created per job by the Executor.

    Its guest memory (reads, writes, every pointer checked) is GuestMemory's.
    """

    def __init__(self, args: list[str], env: dict[str, str], seed: bytes):
        super().__init__()
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
        self.calls = 0

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

    def channel_write(self, ch: ChannelState, data: bytes | memoryview, offset: int | None) -> tuple[int, int]:
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
