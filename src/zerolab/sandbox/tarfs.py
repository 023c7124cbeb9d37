"""A read-only directory tree served straight from a tar file.

An image (``python.tar``) is indexed once: every member's data offset, size,
mtime and mode.  Guests then read members with ``os.pread`` at that offset, so
nothing is extracted.  Indexes are cached by the Executor (keyed by the tar's
path, size and mtime) and may be pickled to a cache directory for one-shot CLIs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import tarfile
from typing import Any, Protocol, Union


@functools.lru_cache(maxsize=4096)   # every job asks again for /dev and its channels
def inode(kind: str, path: str) -> int:
    """A stable inode number from a node's path: the same image or channel gives
    the guest the same st_ino in every run and every process (determinism)."""
    return int.from_bytes(hashlib.blake2b(f"{kind}:{path}".encode(), digest_size=7).digest(), "little")


class Dir:
    __slots__ = ("children", "mtime", "ino")
    kind = "dir"

    def __init__(self, mtime: int = 0, ino: int = 0):
        self.children: dict[str, Node] = {}
        self.mtime = mtime
        self.ino = ino


class File:
    """A regular file inside a tar: ``size`` bytes at ``offset`` of the tar."""
    __slots__ = ("offset", "size", "mtime", "ino", "image")
    kind = "file"

    def __init__(self, offset: int, size: int, mtime: int, ino: int = 0):
        self.offset = offset
        self.size = size
        self.mtime = mtime
        self.ino = ino
        self.image: Image | None = None  # set when mounted


class Symlink:
    __slots__ = ("target", "ino")
    kind = "symlink"

    def __init__(self, target: str, ino: int = 0):
        self.target = target
        self.ino = ino


class Placed(Protocol):
    """A node a runtime places in the tree besides the tar's own (the
    sandbox's channels): tarfs only walks past it."""

    @property
    def ino(self) -> int: ...


Node = Union[Dir, File, Symlink, Placed]
# What identifies an indexed image: its real path, size, mtime and inode.
ImageKey = tuple[str, int, int, int]


class ImageError(Exception):
    """An image that cannot be used; str() is one line."""


class Image:
    """An indexed tar: ``root`` is its tree; ``fd`` is opened lazily per process."""

    def __init__(self, path: str, root: Dir, key: ImageKey):
        self.path = path
        self.root = root
        self.key = key
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    def pread(self, node: File, pos: int, n: int) -> bytes:
        n = max(0, min(n, node.size - pos))
        return os.pread(self.fd, n, node.offset + pos) if n else b""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        # An image dropped from a bounded cache closes its file once no job uses it.
        self.close()

    def lookup(self, path: str) -> Node | None:
        """Finds a member by path (relative to the image root), following symlinks."""
        return resolve(self.root, path)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "root": self.root, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.root, self.key = state["path"], state["root"], state["key"]
        self._fd = None
        _attach(self.root, self)


def image_key(path: str) -> ImageKey:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _attach(d: Dir, image: Image) -> None:
    for child in d.children.values():
        if isinstance(child, File):
            child.image = image
        elif isinstance(child, Dir):
            _attach(child, image)


def is_tar(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def index_tar(path: str) -> Image:
    """Reads the tar's headers (not its data) into a tree.  Compressed tars are refused:
    serving members by offset needs an uncompressed tar."""
    try:
        key = image_key(path)
        with open(path, "rb") as f:
            magic = f.read(3)
        if magic[:2] == b"\x1f\x8b" or magic == b"BZh" or magic[:3] == b"\xfd7z":
            raise ImageError(f"image {path} is compressed; zerolab images must be plain .tar")
        tf = tarfile.open(path, mode="r:")
    except (OSError, tarfile.TarError) as e:
        raise ImageError(f"cannot read image {path}: {getattr(e, 'strerror', None) or e}") from None
    root = Dir(ino=inode("dir", "/"))
    links = []
    with tf:
        for m in tf:
            name = posixpath.normpath("/" + m.name).lstrip("/")
            if not name or name == ".":
                root.mtime = int(m.mtime)
                continue
            parent = _mkdirs(root, posixpath.dirname(name))
            base = posixpath.basename(name)
            if m.isdir():
                d = parent.children.get(base)
                if not isinstance(d, Dir):
                    d = parent.children[base] = Dir(ino=inode("dir", name))
                d.mtime = int(m.mtime)
            elif m.isreg():
                parent.children[base] = File(m.offset_data, m.size, int(m.mtime), inode("file", name))
            elif m.issym():
                parent.children[base] = Symlink(m.linkname, inode("link", name))
            elif m.islnk():
                links.append((parent, base, m.linkname))
            # devices, fifos: nothing a guest may have
    for parent, base, target in links:
        node = resolve(root, target)
        if isinstance(node, File):
            parent.children[base] = node
    # the real path: the index is cached by it and shared by every name of the file
    image = Image(key[0], root, key)
    _attach(root, image)
    return image


def _mkdirs(root: Dir, path: str) -> Dir:
    d = root
    walked = ""
    for part in path.split("/"):
        if not part:
            continue
        walked = f"{walked}/{part}"
        child = d.children.get(part)
        if not isinstance(child, Dir):
            child = d.children[part] = Dir(d.mtime, inode("dir", walked.lstrip("/")))
        d = child
    return d


# Symlinks followed in one lookup, all levels together (Linux's own limit).  A
# budget per lookup, not a depth: links that each name several other links
# would otherwise make a few bytes of tar cost exponential time in one call.
MAX_SYMLINKS = 40


def resolve(root: Dir, path: str, follow_last: bool = True, budget: list[int] | None = None) -> Node | None:
    """Walks ``path`` (relative to root; '..' cannot climb above root) following symlinks.
    Returns None when any component is missing, or after MAX_SYMLINKS links."""
    if budget is None:
        budget = [MAX_SYMLINKS]
    stack: list[Dir] = [root]
    parts = [p for p in path.split("/") if p and p != "."]
    for i, part in enumerate(parts):
        if part == "..":
            if len(stack) > 1:
                stack.pop()
            continue
        node = stack[-1].children.get(part)
        if node is None:
            return None
        last = i == len(parts) - 1
        if isinstance(node, Symlink) and (follow_last or not last):
            budget[0] -= 1
            if budget[0] < 0:
                return None
            here = "/".join(_names(stack))
            target = node.target if node.target.startswith("/") else posixpath.join(here, node.target)
            node = resolve(root, target, True, budget)
            if node is None:
                return None
        if last:
            return node
        if not isinstance(node, Dir):
            return None
        stack.append(node)
    return stack[-1]


def _names(stack: list[Dir]) -> list[str]:
    # names of the directories on the stack (for relative symlink targets)
    names = []
    for parent, child in zip(stack, stack[1:]):
        for name, node in parent.children.items():
            if node is child:
                names.append(name)
                break
    return names
