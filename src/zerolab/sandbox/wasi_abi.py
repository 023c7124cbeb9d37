"""WASI preview1's numbers, and the limits the sandbox puts on one host call.

Shared by the guest memory (guest_memory.py), the channels (channels.py) and
the host functions (wasi.py).
"""

from __future__ import annotations

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
