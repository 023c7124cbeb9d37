"""A manifest's channels during one run: their backing, positions and counters,
and how each is opened (a host path, a passed descriptor, or memory).

The quota rules that count against these counters are the Run's
(wasi.Run.channel_read / channel_write), applied on every guest read and write.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat as stat_mod

from . import tarfs
from .manifest import Channel


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
        # MD5, as ZeroVM's channel tags were (ZeroCloud stored one as the
        # ETag of the object a channel wrote).
        self.hasher = hashlib.md5(usedforsecurity=False) if spec.etag else None
        self.char = False          # NVRAM [mapping] mode=char: a terminal-like device
        self.ino = tarfs.inode("channel", spec.alias)

    def limit(self, name: str) -> int:
        limit: int = getattr(self.spec, name)
        return limit

    def close(self) -> None:
        if self.fd is not None and self.own_fd:
            os.close(self.fd)
        self.fd = None


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
