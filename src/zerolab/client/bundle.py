"""Making an app from a directory, and reading one back before it is sent.

An app is a gzipped tar whose ``boot/system.map`` is its job description
(zerolab.zerocloud.apps reads it on the proxy).  bundle() makes one:

* the directory must hold ``boot/system.map``, a regular file (not a
  symlink), whose JSON job.parse() accepts (checked before anything is
  written, with the system images the caller names: ``python`` always);
* members go in sorted by name (``boot/system.map`` first), each with mtime 0, uid/gid 0, no user or
  group names and a mode of 0755 (directories, executables) or 0644; the
  gzip header has no name and mtime 0, so the same directory gives the same
  bytes on every run and every machine (with the same zlib);
* a symlink is stored as a symlink when what it points to is inside the
  directory (its target rewritten relative to the link, so it still points
  there once the tar is mounted at ``/``); one pointing outside, to nothing
  or into a loop is refused, and so are devices, FIFOs and sockets;
* the output is written to a temporary file beside it and renamed into
  place, so a refused bundle leaves no half-written app behind; the output
  itself is never bundled (``bundle .`` works).

Every file is opened without following symlinks and without blocking, and
checked to still be a regular file once open: a file swapped for a FIFO or a
link while the walk runs is refused, not followed or waited on.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from zerolab.zerocloud import apps, job

from .errors import AppError, quoted

SYSTEM_MAP = apps.SYSTEM_MAP
SYSIMAGES = frozenset({"python"})
# A job description larger than this is refused by any proxy with the
# default zerovm_maxconfig (64 KiB) many times over; reading it whole to
# check it is all the memory a bundle needs beyond one file's buffer.
MAX_MAP = 1 << 20
# What deploy and execute read of a local app, packed and unpacked: four
# times the proxy's default zerovm_maxnexe (64 MiB), which no app passes.
MAX_APP = 256 << 20
GZIP_CONTENT_TYPE = "application/gzip"
TAR_CONTENT_TYPE = "application/x-tar"
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Member:
    """One entry of the tar: its name inside the app, where it is on disk,
    what it is ("dir", "file" or "symlink") and, for a symlink, its target."""

    name: str
    path: str
    kind: str
    mode: int
    target: str = ""


@dataclass(frozen=True)
class Bundled:
    path: str
    members: int
    size: int
    note: str | None = None


@dataclass(frozen=True)
class LocalApp:
    """An app read from a local file: its bytes and the content type to send them with."""

    data: bytes
    content_type: str


def reason_of(e: OSError) -> str:
    return e.strerror or type(e).__name__


def open_regular(path: str, what: str) -> tuple[int, os.stat_result]:
    """A descriptor on ``path`` (not followed if it is a symlink, never
    blocking on a FIFO) and its stat, refused unless it is a regular file."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AppError(f"{what} {quoted(path)} is a symlink; it must be a regular file") from None
        raise AppError(f"cannot open {what} {quoted(path)}: {reason_of(e)}") from None
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise AppError(f"cannot read {what} {quoted(path)}: {reason_of(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise AppError(f"{what} {quoted(path)} is {kind}")
    return fd, st


def read_regular(path: str, what: str, limit: int) -> bytes:
    """A regular file's bytes, refused when it is larger than ``limit``."""
    fd, st = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise AppError(f"{what} {quoted(path)} is {st.st_size} bytes, more than {limit}")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise AppError(f"cannot read {what} {quoted(path)}: {reason_of(e)}") from None
    if len(data) > limit:
        raise AppError(f"{what} {quoted(path)} grew past {limit} bytes while it was read")
    return data


# ------------------------------------------------------------------ the map
def check_map(data: bytes, where: str, sysimages: Iterable[str] = ()) -> str | None:
    """Refuses a job description the proxy would refuse on its own grounds
    (JSON, node and device rules), with job.parse's one-line reason.

    A description whose ``stdin`` device has no path is accepted with a note
    (returned): the proxy runs it only from X-Zerovm-Source, with the POST's
    body as that stdin (ZeroCloud's rule), so it is deployed, not POSTed."""
    images = SYSIMAGES | frozenset(sysimages)
    try:
        job.parse(data, sysimages=images, own_account="x", app=b"")
        return None
    except job.JobError as e:
        refusal = e
    try:
        job.parse(data, sysimages=images, own_account="x", app=b"", posted=b"stdin")
    except job.JobError:
        raise AppError(f"{where}: {refusal.reason}") from None
    return (f"{where} reads the POST's body as stdin: deploy the app and run it with "
            f"execute swift://ACCOUNT/CONTAINER/OBJECT --stdin FILE")


def find_map(root: str, sysimages: Iterable[str]) -> str | None:
    boot = os.path.join(root, "boot")
    try:
        st = os.lstat(boot)
    except FileNotFoundError:
        raise AppError(f"{quoted(root)} has no {SYSTEM_MAP}: put the app's JSON job description there") from None
    except OSError as e:
        raise AppError(f"cannot read {quoted(boot)}: {reason_of(e)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise AppError(f"{quoted(boot)} must be a directory holding system.map (not a symlink or a file)")
    path = os.path.join(root, SYSTEM_MAP)
    if not os.path.lexists(path):
        raise AppError(f"{quoted(root)} has no {SYSTEM_MAP}: put the app's JSON job description there")
    return check_map(read_regular(path, "the job description", MAX_MAP), SYSTEM_MAP, sysimages)


# ------------------------------------------------------------------ the walk
def mode_of(st: os.stat_result) -> int:
    if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111:
        return 0o755
    return 0o644


def link_target(root: str, path: str, name: str) -> str:
    """What the symlink at ``path`` is stored pointing to: where it ends up,
    relative to the link's own directory; refused when that is outside ``root``."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        raise AppError(f"the symlink {quoted(name)} points to nothing (or into a loop); "
                       f"remove it or make it point inside the directory") from None
    if os.path.commonpath([root, real]) != root:
        raise AppError(f"the symlink {quoted(name)} points outside the directory (to {quoted(real)}); "
                       f"copy what it points to into the directory instead")
    return os.path.relpath(real, os.path.dirname(path))


def walk(root: str, skip: set[tuple[int, int]]) -> list[Member]:
    """Everything under ``root`` (a real path), sorted by name.  ``skip``:
    (device, inode) pairs to leave out (the output being written)."""
    members: list[Member] = []
    todo = [""]
    while todo:
        rel = todo.pop()
        here = os.path.join(root, rel) if rel else root
        try:
            with os.scandir(here) as entries:
                names = [entry.name for entry in entries]
        except OSError as e:
            raise AppError(f"cannot list {quoted(rel or root)}: {reason_of(e)}") from None
        for base in names:
            name = f"{rel}/{base}" if rel else base
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise AppError(f"the file name {quoted(name)} is not UTF-8; Swift and the tar need UTF-8 "
                               f"names") from None
            path = os.path.join(here, base)
            try:
                st = os.lstat(path)
            except OSError as e:
                raise AppError(f"cannot read {quoted(name)}: {reason_of(e)}") from None
            if (st.st_dev, st.st_ino) in skip:
                continue
            if stat.S_ISDIR(st.st_mode):
                members.append(Member(name, path, "dir", 0o755))
                todo.append(name)
            elif stat.S_ISREG(st.st_mode):
                members.append(Member(name, path, "file", mode_of(st)))
            elif stat.S_ISLNK(st.st_mode):
                members.append(Member(name, path, "symlink", 0o777, link_target(root, path, name)))
            else:
                raise AppError(f"{quoted(name)} is not a regular file, directory or symlink (a device, FIFO "
                               f"or socket cannot go in an app)")
    # Code point order is UTF-8 byte order; a directory sorts before what it
    # holds.  boot/ and its system.map first: the proxy reads an app's
    # members only until it finds the map (and at most a few thousand).
    first = ("boot", "boot/system.map")
    members.sort(key=lambda m: (m.name not in first, first.index(m.name) if m.name in first else 0, m.name))
    return members


# ------------------------------------------------------------------ the tar
def tar_info(member: Member) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = member.mode
    if member.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif member.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = member.target
    return info


def write_tar(members: list[Member], sink: BinaryIO) -> None:
    """A reproducible gzipped tar of ``members`` on ``sink``."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=9, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for member in members:
            info = tar_info(member)
            if member.kind != "file":
                tar.addfile(info)
                continue
            fd, st = open_regular(member.path, "the file")
            with os.fdopen(fd, "rb") as f:
                info.size = st.st_size
                try:
                    tar.addfile(info, f)
                except OSError as e:   # tarfile's own "unexpected end of data" included
                    raise AppError(f"cannot read {quoted(member.name)}: {e.strerror or e} (did it change "
                                   f"while it was bundled?)") from None


def default_output(root: str) -> str:
    return (os.path.basename(root.rstrip(os.sep)) or "app") + ".zapp"


def identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def bundle(directory: str, output: str | None = None, sysimages: Iterable[str] = ()) -> Bundled:
    """Bundles ``directory`` into ``output`` (default: ``<directory's name>.zapp``
    in the current directory)."""
    try:
        root = os.path.realpath(directory, strict=True)
    except OSError as e:
        raise AppError(f"cannot open the directory {quoted(directory)}: {reason_of(e)}") from None
    if not os.path.isdir(root):
        raise AppError(f"{quoted(directory)} is not a directory (bundle makes an app of a directory)")
    sysimages = frozenset(sysimages)
    note = find_map(root, sysimages)
    output = output or default_output(root)
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise AppError(f"the output {quoted(output)} is a directory; name a file with -o")
    try:
        fd, partial = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(output) + ".", suffix=".part")
    except OSError as e:
        raise AppError(f"cannot write in {quoted(folder)}: {reason_of(e)}") from None
    try:
        with os.fdopen(fd, "wb") as sink:
            skip = {i for i in (identity(partial), identity(output)) if i is not None}
            members = walk(root, skip)
            write_tar(members, sink)
            sink.flush()
            size = sink.tell()
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    except OSError as e:
        raise AppError(f"cannot write the app {quoted(output)}: {reason_of(e)}") from None
    finally:
        if os.path.lexists(partial):
            os.unlink(partial)
    return Bundled(output, len(members), size, note)


# ------------------------------------------------------------------ reading an app back
def load_app(path: str) -> LocalApp:
    """A local app file, checked as the proxy will check it (a readable tar,
    gzipped or not, with a boot/system.map), and its content type."""
    data = read_regular(path, "the app", MAX_APP)
    try:
        apps.read_app(data, MAX_APP, MAX_MAP)
    except job.JobError as e:
        raise AppError(f"{quoted(path)} is not an app: {e.reason}") from None
    return LocalApp(data, GZIP_CONTENT_TYPE if data.startswith(apps.GZIP_MAGIC) else TAR_CONTENT_TYPE)
