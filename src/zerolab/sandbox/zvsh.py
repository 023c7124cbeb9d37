"""``zvsh``: run a program in the sandbox like a local command (zerovm-cli's zvsh).

    zvsh --zvm-image python.tar python @hello.py
    zvsh --zvm-save-dir ~/ --zvm-image python.tar --zvm-image ~/file.txt python @example.py

What it builds, in zvsh's order and numbering (see the seed post's manifest.1):
  /dev/stdin, /dev/stdout, /dev/stderr;
  one channel ``/dev/N.name`` per zvsh.cfg ``[fstab]`` image, then per ``@file``
  argument, then per ``--zvm-image`` (N counts them all from 1; the argument
  becomes the channel's alias);
  ``/dev/self`` (the program) and ``/dev/nvram`` (args, env, fstab, mapping).
An ``@file`` this user may write is a random read/write channel, one it may only
read a random-read channel (writes 0,0), as zvsh chose with os.access(W_OK); an
``@file`` that does not exist yet is created first (so it is read-write).  A
``ro`` image is read-only.  A tar image is mounted where its ``mountpoint``
says; the program name (``python``) is looked up inside the images first.
``@NAME=value`` sets an environment variable.  ``--zvm-save-dir`` keeps
manifest.N, nvram.N and the program as boot.N, so ``zerovm manifest.N`` reruns
the job.

zvsh.cfg (zvsh's own file, same sections and keys): ``--zvm-cfg FILE`` alone,
else every one of ./zvsh.cfg, ~/.zvsh.cfg, /etc/zvsh.cfg that exists, a key in
an earlier one winning; command-line options win over all of them.  A value
zerolab cannot honour is refused (exit 2) rather than ignored.

Exit code: the program's own exit code, or, when the session failed (timeout,
quota, bad input...), the sandbox's code from docs/sandbox.md; with
``--zvm-getrc`` always the sandbox's code.
"""

from __future__ import annotations

import argparse
import configparser
import os
import posixpath
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field

from . import tarfs
from .cli import OneLineParser, die, executor
from .executor import Executor
from .manifest import (
    DEFAULT_LIMIT,
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    MAX_MEMORY,
    MAX_TIMEOUT,
    RND_READ_RND_WRITE,
    SEQ_READ_SEQ_WRITE,
    VERSION,
    Channel,
    Manifest,
    Mount,
    parse_int,
)
from .nvram import NVRAM
from .status import BAD_INPUT, GUEST_EXIT, INTERNAL, INVALID_PROGRAM, OK, USAGE

ENV_MATCH = re.compile(r"([_A-Z0-9]+)=(.*)")
NODE = 1
# where a program name is looked for inside an image, in order
PROGRAM_DIRS = ("", "bin/", "usr/bin/", "usr/local/bin/")
G = DEFAULT_LIMIT

# ------------------------------------------------------------------ zvsh.cfg
# zvsh's list, in its order; "~" is the user's home at the time of the run.
CFG_PATHS = ("zvsh.cfg", "~/.zvsh.cfg", "/etc/zvsh.cfg")
CFG_SECTIONS = ("manifest", "env", "limits", "fstab", "zvapp")
MANIFEST_KEYS = ("Timeout", "Memory", "Node", "Version")
LIMIT_KEYS = ("reads", "rbytes", "writes", "wbytes")
MAX_LIMIT = 2**63 - 1          # ZeroVM kept channel limits in 64-bit signed counters
MAX_CFG_BYTES = 1 << 20        # zvsh's file is a few lines; more is not a zvsh.cfg
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CfgError(ValueError):
    """A zvsh.cfg that zvsh refuses; str() is the one line to print."""


class _UnknownKey(ValueError):
    """The key itself is wrong (so the message need not show the value)."""


@dataclass
class ZvshCfg:
    """What the zvsh.cfg files asked for; None / absent means "not set there"."""

    timeout: int | None = None
    memory: int | None = None
    etag: int | None = None
    node: int | None = None
    limits: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # image path -> (mountpoint, access, the file that named it, for errors)
    fstab: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def over(self, lower: ZvshCfg) -> ZvshCfg:
        """This file's keys win; ``lower`` (a less specific file) fills the gaps."""
        return ZvshCfg(
            timeout=self.timeout if self.timeout is not None else lower.timeout,
            memory=self.memory if self.memory is not None else lower.memory,
            etag=self.etag if self.memory is not None else lower.etag,   # one key: Memory = bytes, etag
            node=self.node if self.node is not None else lower.node,
            limits={**lower.limits, **self.limits},
            env={**lower.env, **self.env},
            fstab={**lower.fstab, **self.fstab})

    def limit(self, key: str) -> int:
        return self.limits.get(key, G)


class _CaseSensitive(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        # zvsh's keys are written as the manifest spells them (Timeout, not timeout)
        return optionstr


def _printable(text: str) -> str:
    """``text`` with control characters shown escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _syntax_error(e: configparser.Error) -> str:
    if isinstance(e, configparser.MissingSectionHeaderError):
        return (f"line {e.lineno}: {_printable(e.line.strip())[:60]!r} comes before any section; "
                f"start with a header such as [manifest]")
    if isinstance(e, configparser.DuplicateSectionError):
        return f"line {e.lineno}: [{_printable(e.section)}] appears twice; merge the two"
    if isinstance(e, configparser.DuplicateOptionError):
        return f"line {e.lineno}: [{_printable(e.section)}] {_printable(e.option)} is set twice; keep one"
    if isinstance(e, configparser.ParsingError) and e.errors:
        lineno, line = e.errors[0]
        shown = str(line).replace("\\n'", "'")   # configparser keeps the line's newline in its repr
        return f"line {lineno}: {_printable(shown)[:60]} is not 'key = value'; fix or remove the line"
    return _printable(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _number(text: str, lo: int, hi: int, what: str) -> int:
    try:
        n = parse_int(text)    # read as ZeroVM read the manifest: decimal, 0x.., 0..
    except ValueError:
        raise ValueError(f"not an integer; write {what} from {lo} to {hi}") from None
    if not lo <= n <= hi:
        raise ValueError(f"out of range; write {what} from {lo} to {hi}")
    return n


def _manifest_key(cfg: ZvshCfg, key: str, value: str) -> None:
    if key == "Timeout":
        cfg.timeout = _number(value, 1, MAX_TIMEOUT, "whole seconds")
    elif key == "Node":
        cfg.node = _number(value, 1, MAX_TIMEOUT, "a node number")
    elif key == "Version":
        if value != VERSION:
            raise ValueError(f"zerolab runs manifest Version {VERSION} only; set that or remove the key")
    elif key == "Memory":
        # zvsh's sample writes "Memory = 419430400, 0" (bytes, etag); bytes alone also did
        tokens = [t.strip() for t in value.split(",")]
        if len(tokens) > 2:
            raise ValueError("write bytes or 'bytes, etag'")
        cfg.memory = _number(tokens[0], 65536, MAX_MEMORY, "bytes")
        if len(tokens) == 2 and tokens[1] not in ("0", "1"):
            raise ValueError("the etag after the comma is 0 or 1")
        cfg.etag = int(tokens[1]) if len(tokens) == 2 else 0
    else:
        near = [k for k in MANIFEST_KEYS if k.lower() == key.lower()]
        hint = f"did you mean {near[0]}? (keys are case-sensitive)" if near else \
            f"zvsh sets only {', '.join(MANIFEST_KEYS)} here"
        raise _UnknownKey(f"unknown key; {hint}")


def _fstab_key(cfg: ZvshCfg, path: str, value: str, source: str) -> None:
    # "image = /mount/point access", as zvsh's sample; both parts default as --zvm-image does
    if "," in path or not path.isprintable():
        raise ValueError("an image path with a comma or a control character cannot be a channel; rename the file")
    parts = value.split()
    if len(parts) > 2:
        raise ValueError("write '/mount/point ro' or '/mount/point rw'")
    mountpoint, access = (parts + ["/", "ro"][len(parts):])[:2]
    if not mountpoint.startswith("/") or "," in mountpoint or not mountpoint.isprintable():
        raise ValueError("the mount point must be an absolute path without commas, like /")
    if access not in ("ro", "rw"):
        raise ValueError(f"access must be ro or rw, not {_printable(access)!r}")
    cfg.fstab[path] = (mountpoint, access, source)


def parse_cfg(text: str, source: str) -> ZvshCfg:
    """One zvsh.cfg's text -> what it sets.  Raises CfgError (one line) for
    anything zvsh would have misread or zerolab cannot honour."""
    parser = _CaseSensitive(interpolation=None, strict=True)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as e:
        raise CfgError(f"{source}: {_syntax_error(e)}") from None
    if parser.defaults():
        raise CfgError(f"{source}: [DEFAULT]: not a zvsh.cfg section (its keys would land in every section); "
                       f"move them where they belong")
    cfg = ZvshCfg()
    for section in parser.sections():
        if section not in CFG_SECTIONS:
            raise CfgError(f"{source}: [{_printable(section)}]: unknown section; zvsh.cfg has "
                           + ", ".join(f"[{s}]" for s in CFG_SECTIONS))
        for key in parser.options(section):
            value = parser.get(section, key, raw=True)
            try:
                if not value.replace("\t", " ").isprintable():   # zvsh's sample lines up [fstab] with tabs
                    raise ValueError("the value holds a control character or spans lines; write it on one line")
                if section == "manifest":
                    _manifest_key(cfg, key, value)
                elif section == "limits":
                    if key not in LIMIT_KEYS:
                        raise _UnknownKey(f"unknown key; [limits] has {', '.join(LIMIT_KEYS)}")
                    cfg.limits[key] = _number(value, 0, MAX_LIMIT, "a count")
                elif section == "env":
                    if not ENV_NAME.fullmatch(key):
                        raise _UnknownKey("not a variable name; use letters, digits and _ (not first a digit)")
                    cfg.env[key] = value
                elif section == "fstab":
                    _fstab_key(cfg, key, value, source)
                else:
                    # [zvapp] configured zerovm-cli's zvapp (swift:// paths); zvsh never read it,
                    # and zerolab has no zvapp: a setting here would silently do nothing.
                    raise _UnknownKey("zerolab has no zvapp, so this does nothing; remove the key")
            except _UnknownKey as e:
                raise CfgError(f"{source}: [{section}] {_printable(key)}: {e}") from None
            except ValueError as e:
                shown = _printable(value if len(value) <= 40 else value[:40] + "...")
                raise CfgError(f"{source}: [{section}] {_printable(key)} = {shown}: {e}") from None
    return cfg


def read_cfg(path: str, found: bool = False) -> ZvshCfg:
    """Reads and parses one file; any trouble is a CfgError naming it.

    ``found``: the file was not named on the command line but found in one
    of zvsh's places (./zvsh.cfg of whatever directory zvsh runs in, say a
    fresh clone): then, as ssh does with its files, it must be the user's or
    root's and writable by nobody else, since its [fstab] can give a guest a
    host file read-write."""
    try:
        # O_NONBLOCK: a FIFO named zvsh.cfg must not hang us before the check below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CfgError(f"{path}: cannot read: {e.strerror}; fix the path or its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CfgError(f"{path}: not a regular file; point zvsh at a zvsh.cfg file")
        if found and (st.st_uid not in (os.getuid(), 0) or st.st_mode & 0o022):
            raise CfgError(f"{path}: owned by another user or writable by others, so zvsh will not read it; "
                           f"chmod go-w it (and own it), or name it with --zvm-cfg")
        data = b""
        while len(data) <= MAX_CFG_BYTES:
            chunk = os.read(fd, MAX_CFG_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise CfgError(f"{path}: cannot read: {e.strerror}; fix the file or remove it") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CFG_BYTES:
        raise CfgError(f"{path}: larger than {MAX_CFG_BYTES >> 20} MiB; a zvsh.cfg is a few lines")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CfgError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    return parse_cfg(text, path)


def load_cfg(explicit: str | None) -> ZvshCfg:
    """--zvm-cfg FILE alone, else zvsh's three places merged, the first listed winning.

    (zvsh handed its list to ConfigParser.read, which let the last file read
    win; the list's order, from the most specific place, is what it meant.)"""
    if explicit is not None:
        return read_cfg(explicit)
    merged = ZvshCfg()
    for path in reversed([os.path.expanduser(p) for p in CFG_PATHS]):
        if os.path.exists(path):   # absent is fine (as for zvsh); present but unreadable is not
            merged = read_cfg(path, found=True).over(merged)
    return merged


# ------------------------------------------------------------------ command
def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="zvsh", description="Run a program in the zerolab sandbox.")
    parser.add_argument("--zvm-image", action="append", default=[], metavar="FILE[,MOUNTPOINT][,ro|rw]",
                        help="a tar image to mount (default at /, ro), or any file to expose as a channel")
    parser.add_argument("--zvm-save-dir", metavar="DIR",
                        help="write manifest.N, nvram.N and boot.N there (rerun with: zerovm manifest.N)")
    parser.add_argument("--zvm-getrc", action="store_true",
                        help="exit with the sandbox's code instead of the program's")
    parser.add_argument("--zvm-debug", action="store_true",
                        help="print the manifest, the NVRAM and the report on stderr")
    parser.add_argument("--zvm-timeout", type=int, help=f"Timeout, seconds (default {DEFAULT_TIMEOUT})")
    parser.add_argument("--zvm-memory", type=int, help=f"Memory, bytes (default {DEFAULT_MEMORY})")
    parser.add_argument("--zvm-verbosity", type=int, help="written to NVRAM [debug]")
    parser.add_argument("--zvm-cfg", metavar="FILE",
                        help="read this zvsh.cfg instead of ./zvsh.cfg, ~/.zvsh.cfg and /etc/zvsh.cfg")
    parser.add_argument("command", help="program: a .wasm file, or a name inside an image (python)")
    parser.add_argument("cmd_args", nargs="...", help="its arguments; @FILE becomes a channel")
    args = parser.parse_args(argv)
    try:
        try:
            cfg = load_cfg(args.zvm_cfg)
        except CfgError as e:
            die("zvsh", USAGE, str(e))   # a bad setting is a usage error, like a bad option
        return run(args, cfg)
    except SystemExit:
        raise
    except Exception as e:  # a bug of ours: still one line, never a traceback
        die("zvsh", INTERNAL, f"internal error: {type(e).__name__}: {e}")


def run(args: argparse.Namespace, cfg: ZvshCfg | None = None) -> int:
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
        return _run(ex, args, cfg or ZvshCfg(), workdir)
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        ex.close()


def _image_spec(spec: str) -> tuple[str, str, str]:
    parts = spec.split(",")
    if len(parts) > 3 or not parts[0]:
        die("zvsh", BAD_INPUT, f"--zvm-image {spec}: expected FILE[,MOUNTPOINT][,ro|rw]")
    path, mountpoint, access = (parts + ["/", "ro"][len(parts) - 1:])[:3]
    mountpoint = mountpoint or "/"
    if access not in ("ro", "rw"):
        die("zvsh", BAD_INPUT, f"--zvm-image {spec}: access must be ro or rw, not {access!r}")
    if not mountpoint.startswith("/"):
        die("zvsh", BAD_INPUT, f"--zvm-image {spec}: mountpoint must be absolute")
    return path, mountpoint, access


def _run(ex: Executor, args: argparse.Namespace, cfg: ZvshCfg, workdir: str) -> int:
    node = cfg.node if cfg.node is not None else NODE
    reads, rbytes, writes, wbytes = (cfg.limit(k) for k in LIMIT_KEYS)   # zvsh: for every channel
    channels = [
        Channel("/dev/stdin", "/dev/stdin", SEQ_READ_SEQ_WRITE, 0, reads, rbytes, 0, 0),
        Channel(os.path.join(workdir, f"stdout.{node}"), "/dev/stdout", SEQ_READ_SEQ_WRITE, 0, 0, 0, writes, wbytes),
        Channel(os.path.join(workdir, f"stderr.{node}"), "/dev/stderr", SEQ_READ_SEQ_WRITE, 0, 0, 0, writes, wbytes),
    ]
    numbered = []  # host files given a /dev/N.name channel, in order

    def file_channel(path: str, writable: bool) -> str:
        numbered.append(path)
        alias = f"/dev/{len(numbered)}.{os.path.basename(path)}"
        channels.append(Channel(os.path.abspath(path), alias, RND_READ_RND_WRITE, 0, reads, rbytes,
                                writes if writable else 0, wbytes if writable else 0))
        return alias

    mounts = []
    tars: list[str] = []        # --zvm-image tars, searched for the program first
    cfg_tars: list[str] = []    # then zvsh.cfg's [fstab] ones
    seen: dict[str, str] = {}

    def image(path: str, mountpoint: str, access: str, into: list[str]) -> None:
        if os.path.abspath(path) not in seen:
            seen[os.path.abspath(path)] = file_channel(path, writable=access == "rw")
        alias = seen[os.path.abspath(path)]
        if tarfs.is_tar(path):
            mounts.append(Mount(alias, mountpoint, access))
            into.append(path)

    specs = [_image_spec(spec) for spec in args.zvm_image]
    # [fstab] images come first, as zvsh created their channels before any other;
    # one also given with --zvm-image is the command line's (mountpoint, access).
    given = {os.path.abspath(path) for path, _, _ in specs}
    for path, (mountpoint, access, source) in cfg.fstab.items():
        if os.path.abspath(path) in given:
            continue
        given.add(os.path.abspath(path))   # python.tar and ./python.tar in two files: one image
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            die("zvsh", USAGE, f"{source}: [fstab] {path}: no such readable file; fix the path or remove the entry")
        image(path, mountpoint, access, cfg_tars)

    # program arguments: @file -> channel, @NAME=value -> environment
    guest_args = [posixpath.basename(args.command)]
    env: dict[str, str] = dict(cfg.env)   # zvsh: @NAME=value overrides [env]
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
        else:
            try:  # a new file: an output the program may write
                open(name, "wb").close()
            except OSError as e:
                die("zvsh", BAD_INPUT, f"@{name}: cannot create: {e.strerror}")
        # zvsh's rule: read-write when this user may write the file (the guest can
        # then update it in place), read-only otherwise.
        alias = file_channel(name, writable=os.access(name, os.W_OK))
        guest_args.append(alias)
        mapping[alias] = "file"

    # images: tars are mounted (and searched for the program), other files are channels
    for path, mountpoint, access in specs:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            die("zvsh", BAD_INPUT, f"--zvm-image {path}: no such readable file")
        image(path, mountpoint, access, tars)

    # the program: a name inside an image wins (as in zvsh), else a host file
    program: str | None = None
    member_image: str | None = None
    member: str | None = None
    for tar in tars + cfg_tars:
        try:
            img = ex.image(tar)
        except tarfs.ImageError as e:
            die("zvsh", BAD_INPUT, str(e))
        for prefix in PROGRAM_DIRS:
            if isinstance(img.lookup(prefix + args.command.lstrip("/")), tarfs.File):
                member_image, member = tar, prefix + args.command.lstrip("/")
                break
        if member:
            break
    if member and member_image is not None:
        if args.zvm_save_dir:
            # zvsh extracted the program as boot.N; a saved job is self-contained
            program = os.path.join(workdir, f"boot.{node}")
            img = ex.image(member_image)
            found = img.lookup(member)
            if not isinstance(found, tarfs.File):   # found there a moment ago; the image changed since
                die("zvsh", BAD_INPUT, f"program {member} is gone from {member_image}")
            with open(program, "wb") as out:
                pos = 0
                while pos < found.size:
                    chunk = img.pread(found, pos, 1 << 22)
                    out.write(chunk)
                    pos += len(chunk)
        else:
            program = os.path.join(os.path.abspath(member_image), member)
    elif os.path.isfile(args.command):
        program = os.path.abspath(args.command)
    else:
        where = " or in the images" if tars or cfg_tars else ""
        die("zvsh", INVALID_PROGRAM, f"program {args.command} not found (not a file{where})")
    if os.path.isfile(program):
        channels.append(Channel(program, "/dev/self", RND_READ_RND_WRITE, 0, reads, rbytes, 0, 0))

    nvram_path = os.path.join(workdir, f"nvram.{node}")
    channels.append(Channel(nvram_path, "/dev/nvram", RND_READ_RND_WRITE, 0, reads, rbytes, writes, wbytes))
    for std, stream in (("/dev/stdin", sys.stdin), ("/dev/stdout", sys.stdout), ("/dev/stderr", sys.stderr)):
        mapping[std] = "char" if stream is not None and stream.isatty() else "file"
    nvram = NVRAM(args=guest_args, env=env, mounts=mounts, mapping=mapping,
                  verbosity=args.zvm_verbosity)
    manifest = Manifest(program=program, channels=channels, node=node,
                        timeout=args.zvm_timeout if args.zvm_timeout is not None else cfg.timeout or DEFAULT_TIMEOUT,
                        memory=args.zvm_memory if args.zvm_memory is not None else cfg.memory or DEFAULT_MEMORY,
                        etag=cfg.etag or 0)
    try:
        with open(nvram_path, "w") as f:
            f.write(nvram.dumps())
        with open(os.path.join(workdir, f"manifest.{node}"), "w") as f:
            f.write(manifest.dumps())
    except OSError as e:
        die("zvsh", BAD_INPUT, f"cannot write to {workdir}: {e.strerror}")
    if args.zvm_debug:
        sys.stderr.write(f"----------manifest.{node}----------\n{manifest.dumps()}"
                         f"----------nvram.{node}----------\n{nvram.dumps()}-------------------------\n")

    # Run with stdout/stderr going straight to ours (zvsh piped its fifos to them).
    channels[1] = Channel("/dev/stdout", "/dev/stdout", SEQ_READ_SEQ_WRITE, 0, 0, 0, writes, wbytes)
    channels[2] = Channel("/dev/stderr", "/dev/stderr", SEQ_READ_SEQ_WRITE, 0, 0, 0, writes, wbytes)
    sys.stdout.flush()
    report = ex.run(manifest)
    if args.zvm_debug:
        sys.stderr.write(report.as_text())
    if report.exit_code not in (OK, GUEST_EXIT) or report.quota_hit:
        sys.stderr.write(f"zvsh: {report.exit_state}\n")
    if args.zvm_getrc or report.exit_code not in (OK, GUEST_EXIT):
        return report.exit_code
    return report.user_rc & 0xFF


if __name__ == "__main__":
    sys.exit(main())
