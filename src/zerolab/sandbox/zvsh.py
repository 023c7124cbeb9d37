"""``zvsh``: run a program in the sandbox like a local command (zerovm-cli's zvsh).

    zvsh --zvm-image python.tar python @hello.py
    zvsh --zvm-save-dir ~/ --zvm-image python.tar --zvm-image ~/file.txt python @example.py

What it builds, in zvsh's order and numbering (see the seed post's manifest.1):
  /dev/stdin, /dev/stdout, /dev/stderr;
  one channel ``/dev/N.name`` per ``@file`` argument, then per ``--zvm-image``
  (N counts them all from 1; the argument becomes the channel's alias);
  ``/dev/self`` (the program) and ``/dev/nvram`` (args, env, fstab, mapping).
An existing ``@file`` or a ``ro`` image is a random-read channel (writes 0,0);
an ``@file`` that does not exist yet is created as a read-write output channel.
A tar image is mounted (read-only) where its ``mountpoint`` says; the program
name (``python``) is looked up inside the images first.  ``@NAME=value`` sets
an environment variable.  ``--zvm-save-dir`` keeps manifest.1, nvram.1 and the
program as boot.1, so ``zerovm manifest.1`` reruns the job.

Exit code: the program's own exit code, or, when the session failed (timeout,
quota, bad input...), the sandbox's code from docs/sandbox.md; with
``--zvm-getrc`` always the sandbox's code.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import sys
import tempfile

from . import tarfs
from .cli import OneLineParser, die, executor
from .executor import Executor
from .manifest import (
    DEFAULT_LIMIT,
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    RND_READ_RND_WRITE,
    SEQ_READ_SEQ_WRITE,
    Channel,
    Manifest,
    Mount,
)
from .nvram import NVRAM
from .status import BAD_INPUT, GUEST_EXIT, INTERNAL, INVALID_PROGRAM, OK

ENV_MATCH = re.compile(r"([_A-Z0-9]+)=(.*)")
NODE = 1
# where a program name is looked for inside an image, in order
PROGRAM_DIRS = ("", "bin/", "usr/bin/", "usr/local/bin/")
G = DEFAULT_LIMIT


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="zvsh", description="Run a program in the zerolab sandbox.")
    parser.add_argument("--zvm-image", action="append", default=[], metavar="FILE[,MOUNTPOINT][,ro|rw]",
                        help="a tar image to mount (default at /, ro), or any file to expose as a channel")
    parser.add_argument("--zvm-save-dir", metavar="DIR",
                        help="write manifest.1, nvram.1 and boot.1 there (rerun with: zerovm manifest.1)")
    parser.add_argument("--zvm-getrc", action="store_true",
                        help="exit with the sandbox's code instead of the program's")
    parser.add_argument("--zvm-debug", action="store_true",
                        help="print the manifest, the NVRAM and the report on stderr")
    parser.add_argument("--zvm-timeout", type=int, default=DEFAULT_TIMEOUT, help="Timeout, seconds")
    parser.add_argument("--zvm-memory", type=int, default=DEFAULT_MEMORY, help="Memory, bytes")
    parser.add_argument("--zvm-verbosity", type=int, help="written to NVRAM [debug]")
    parser.add_argument("command", help="program: a .wasm file, or a name inside an image (python)")
    parser.add_argument("cmd_args", nargs="...", help="its arguments; @FILE becomes a channel")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except SystemExit:
        raise
    except Exception as e:  # a bug of ours: still one line, never a traceback
        die("zvsh", INTERNAL, f"internal error: {type(e).__name__}: {e}")


def run(args: argparse.Namespace) -> int:
    ex = executor()
    if args.zvm_save_dir:
        workdir = os.path.abspath(args.zvm_save_dir)
        try:
            os.makedirs(workdir, exist_ok=True)
        except OSError as e:
            die("zvsh", BAD_INPUT, f"cannot create {workdir}: {e.strerror}")
        temporary = False
    else:
        workdir = tempfile.mkdtemp(prefix="zvsh-")
        temporary = True
    try:
        return _run(ex, args, workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        ex.close()


def _run(ex: Executor, args: argparse.Namespace, workdir: str) -> int:
    channels = [
        Channel("/dev/stdin", "/dev/stdin", SEQ_READ_SEQ_WRITE, 0, G, G, 0, 0),
        Channel(os.path.join(workdir, f"stdout.{NODE}"), "/dev/stdout", SEQ_READ_SEQ_WRITE, 0, 0, 0, G, G),
        Channel(os.path.join(workdir, f"stderr.{NODE}"), "/dev/stderr", SEQ_READ_SEQ_WRITE, 0, 0, 0, G, G),
    ]
    numbered = []  # host files given a /dev/N.name channel, in order

    def file_channel(path: str, writable: bool) -> str:
        numbered.append(path)
        alias = f"/dev/{len(numbered)}.{os.path.basename(path)}"
        if writable:
            channels.append(Channel(os.path.abspath(path), alias, RND_READ_RND_WRITE, 0, G, G, G, G))
        else:
            channels.append(Channel(os.path.abspath(path), alias, RND_READ_RND_WRITE, 0, G, G, 0, 0))
        return alias

    # program arguments: @file -> channel, @NAME=value -> environment
    guest_args = [posixpath.basename(args.command)]
    env: dict[str, str] = {}
    mapping: dict[str, str] = {}
    for arg in args.cmd_args:
        if not arg.startswith("@"):
            guest_args.append(arg)
            continue
        name = arg[1:]
        m = ENV_MATCH.match(name)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        if os.path.exists(name):
            if not os.path.isfile(name) or not os.access(name, os.R_OK):
                die("zvsh", BAD_INPUT, f"@{name}: not a readable file")
            alias = file_channel(name, writable=False)
        else:
            try:  # a new file: an output the program may write
                open(name, "wb").close()
            except OSError as e:
                die("zvsh", BAD_INPUT, f"@{name}: cannot create: {e.strerror}")
            alias = file_channel(name, writable=True)
        guest_args.append(alias)
        mapping[alias] = "file"

    # images: tars are mounted (and searched for the program), other files are channels
    mounts = []
    tars = []
    seen: dict[str, str] = {}
    for spec in args.zvm_image:
        parts = spec.split(",")
        if len(parts) > 3 or not parts[0]:
            die("zvsh", BAD_INPUT, f"--zvm-image {spec}: expected FILE[,MOUNTPOINT][,ro|rw]")
        path, mountpoint, access = (parts + ["/", "ro"][len(parts) - 1:])[:3]
        mountpoint = mountpoint or "/"
        if access not in ("ro", "rw"):
            die("zvsh", BAD_INPUT, f"--zvm-image {spec}: access must be ro or rw, not {access!r}")
        if not mountpoint.startswith("/"):
            die("zvsh", BAD_INPUT, f"--zvm-image {spec}: mountpoint must be absolute")
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            die("zvsh", BAD_INPUT, f"--zvm-image {path}: no such readable file")
        if os.path.abspath(path) not in seen:
            seen[os.path.abspath(path)] = file_channel(path, writable=access == "rw")
        alias = seen[os.path.abspath(path)]
        if tarfs.is_tar(path):
            mounts.append(Mount(alias, mountpoint, access))
            tars.append(path)

    # the program: a name inside an image wins (as in zvsh), else a host file
    program: str | None = None
    member_image: str | None = None
    member: str | None = None
    for tar in tars:
        try:
            image = ex.image(tar)
        except tarfs.ImageError as e:
            die("zvsh", BAD_INPUT, str(e))
        for prefix in PROGRAM_DIRS:
            if isinstance(image.lookup(prefix + args.command.lstrip("/")), tarfs.File):
                member_image, member = tar, prefix + args.command.lstrip("/")
                break
        if member:
            break
    if member and member_image is not None:
        if args.zvm_save_dir:
            # zvsh extracted the program as boot.1; a saved job is self-contained
            program = os.path.join(workdir, f"boot.{NODE}")
            image = ex.image(member_image)
            node = image.lookup(member)
            if not isinstance(node, tarfs.File):   # found there a moment ago; the image changed since
                die("zvsh", BAD_INPUT, f"program {member} is gone from {member_image}")
            with open(program, "wb") as out:
                pos = 0
                while pos < node.size:
                    chunk = image.pread(node, pos, 1 << 22)
                    out.write(chunk)
                    pos += len(chunk)
        else:
            program = os.path.join(os.path.abspath(member_image), member)
    elif os.path.isfile(args.command):
        program = os.path.abspath(args.command)
    else:
        where = " or in the images" if tars else ""
        die("zvsh", INVALID_PROGRAM, f"program {args.command} not found (not a file{where})")
    if os.path.isfile(program):
        channels.append(Channel(program, "/dev/self", RND_READ_RND_WRITE, 0, G, G, 0, 0))

    nvram_path = os.path.join(workdir, f"nvram.{NODE}")
    channels.append(Channel(nvram_path, "/dev/nvram", RND_READ_RND_WRITE, 0, G, G, G, G))
    for std, stream in (("/dev/stdin", sys.stdin), ("/dev/stdout", sys.stdout), ("/dev/stderr", sys.stderr)):
        mapping[std] = "char" if stream is not None and stream.isatty() else "file"
    nvram = NVRAM(args=guest_args, env=env, mounts=mounts, mapping=mapping,
                  verbosity=args.zvm_verbosity)
    manifest = Manifest(program=program, timeout=args.zvm_timeout, memory=args.zvm_memory,
                        channels=channels, node=NODE)
    try:
        with open(nvram_path, "w") as f:
            f.write(nvram.dumps())
        with open(os.path.join(workdir, f"manifest.{NODE}"), "w") as f:
            f.write(manifest.dumps())
    except OSError as e:
        die("zvsh", BAD_INPUT, f"cannot write to {workdir}: {e.strerror}")
    if args.zvm_debug:
        sys.stderr.write(f"----------manifest.{NODE}----------\n{manifest.dumps()}"
                         f"----------nvram.{NODE}----------\n{nvram.dumps()}-------------------------\n")

    # Run with stdout/stderr going straight to ours (zvsh piped its fifos to them).
    channels[1] = Channel("/dev/stdout", "/dev/stdout", SEQ_READ_SEQ_WRITE, 0, 0, 0, G, G)
    channels[2] = Channel("/dev/stderr", "/dev/stderr", SEQ_READ_SEQ_WRITE, 0, 0, 0, G, G)
    sys.stdout.flush()
    report = ex.run(manifest)
    if args.zvm_debug:
        sys.stderr.write(report.as_text())
    if report.exit_code not in (OK, GUEST_EXIT):
        sys.stderr.write(f"zvsh: {report.exit_state}\n")
    if args.zvm_getrc or report.exit_code not in (OK, GUEST_EXIT):
        return report.exit_code
    return report.user_rc & 0xFF


if __name__ == "__main__":
    sys.exit(main())
