"""A guest's linear memory as the host sees it: the one place where a guest
offset becomes a host address.

Every pointer and length a guest passes is checked here, as unsigned 32-bit,
against the memory's current size, before any host memory is touched
(wasmtime hands i32s to Python signed, so a "negative" pointer would
otherwise reach below the guest's memory).  A bad one is a Fault, which the
host call returns as EFAULT.
"""

from __future__ import annotations

import ctypes
import struct

import wasmtime

from .wasi_abi import EINVAL, ENAMETOOLONG, IOV_MAX, MAX_IO, PATH_MAX, U32, Errno, Fault


class GuestMemory:
    """One job's view of its guest's memory (attached once the guest is instantiated)."""

    def __init__(self) -> None:
        self.memory: wasmtime.Memory | None = None
        self.store: wasmtime.Store | wasmtime.Caller | None = None
        self.base = 0
        self.mem_len = 0

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

    def view(self, ptr: int, n: int) -> memoryview:
        """Guest bytes [ptr, ptr + n) in place, not copied.  Valid only during
        the host call that asked for it: the guest does not run meanwhile and
        its memory does not move (memory_may_move(False)); whoever keeps the
        bytes copies them."""
        address = self.check(ptr, n)
        return memoryview((ctypes.c_char * n).from_address(address)).cast("B") if n else memoryview(b"")

    def gather(self, iovs: list[tuple[int, int]]) -> bytes | memoryview:
        # One buffer (the usual write): a view, so that its bytes are copied
        # once, into where they go, and no fresh host buffer is touched.
        if len(iovs) == 1:
            return self.view(*iovs[0])
        return b"".join(self.read(buf, length) for buf, length in iovs)
