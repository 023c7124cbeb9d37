"""``zerolab-app``: bundle a directory into an app, deploy it to Swift, execute it.

    zerolab-app bundle DIR [-o APP.zapp] [--sysimage NAME]...
    zerolab-app deploy APP (CONTAINER/OBJECT | swift://ACCOUNT/CONTAINER/OBJECT)
    zerolab-app execute (APP | swift://ACCOUNT/CONTAINER/OBJECT) [--stdin FILE]

deploy and execute authenticate as the ``swift`` CLI does: -A/-U/-K (or
ST_AUTH, ST_USER, ST_KEY) for v1 auth, else --os-storage-url and
--os-auth-token (or OS_STORAGE_URL, OS_AUTH_TOKEN) used as they are;
options given on the command line win over the environment, and -A/-U/-K
given there win over a storage URL and token from the environment.

execute writes the job's answer to stdout and its X-Nexe-System,
X-Nexe-Status and X-Nexe-Retcode headers to stderr.  Exit status: 0 when
the job ran (200) and every node's status is ``ok`` with return code 0;
1 when a node failed, the server refused (one line: its status and reason)
or anything else went wrong; 2 for a command line that cannot mean anything.
Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, NoReturn, TypeVar

from zerolab.zerocloud.job import JobError, SwiftPath

from . import bundle as bundling
from .errors import USAGE, AppError, UsageError, one_line, quoted

if TYPE_CHECKING:
    from . import swift

T = TypeVar("T")
PROG = "zerolab-app"
EXECUTE_HEADER = "X-Zerovm-Execute"
SOURCE_HEADER = "X-Zerovm-Source"
SHOWN_HEADERS = ("X-Nexe-System", "X-Nexe-Status", "X-Nexe-Retcode", "X-Zerovm-Ignored")
# The most of a --stdin that is not a regular file (a pipe) held to send.
MAX_PIPED_STDIN = 256 << 20
# The most of a refusal's body read for its reason line.
REASON_BYTES = 64 * 1024


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{PROG}: {one_line(message)} (see {self.prog} --help)\n")


def auth_options() -> Parser:
    # SUPPRESS: an option given before the command is not reset by the
    # command's own parser, which has the same options.
    options = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    group = options.add_argument_group("authentication (as the swift CLI)")
    group.add_argument("-A", "--auth", metavar="URL", help="v1 auth URL (default: $ST_AUTH)")
    group.add_argument("-U", "--user", metavar="USER", help="user, e.g. test:tester (default: $ST_USER)")
    group.add_argument("-K", "--key", metavar="KEY", help="key (default: $ST_KEY)")
    group.add_argument("--os-storage-url", metavar="URL", help="storage URL used as it is (default: $OS_STORAGE_URL)")
    group.add_argument("--os-auth-token", metavar="TOKEN", help="token for it (default: $OS_AUTH_TOKEN)")
    group.add_argument("--timeout", metavar="SECONDS", type=float, help="seconds to wait for each answer (default: 300)")
    return options


def parser() -> Parser:
    auth = auth_options()
    top = Parser(prog=PROG, parents=[auth], description="Bundle, deploy and execute zerolab apps: a gzipped tar "
                 "whose boot/system.map is a ZeroCloud job description (docs/apps.md).")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    make = commands.add_parser("bundle", help="make an app of a directory holding boot/system.map",
                               description="Make a reproducible gzipped tar of DIR, whose boot/system.map "
                               "must be a valid job description.")
    make.add_argument("directory", metavar="DIR")
    make.add_argument("-o", "--output", metavar="APP", help="the app to write (default: DIR's name + .zapp)")
    make.add_argument("--sysimage", metavar="NAME", action="append", default=[],
                      help="a system image the cluster has besides python (file://NAME:PATH); repeatable")
    put = commands.add_parser("deploy", parents=[auth], help="upload an app to Swift",
                              description="PUT APP as a Swift object (application/gzip), creating its "
                              "container if it is missing.")
    put.add_argument("app", metavar="APP")
    put.add_argument("target", metavar="TARGET", help="CONTAINER/OBJECT or swift://ACCOUNT/CONTAINER/OBJECT")
    run = commands.add_parser("execute", parents=[auth], help="run an app (a local file or a Swift object)",
                              description="POST a local APP to the account as the job, or run a stored "
                              "app with X-Zerovm-Source; the answer goes to stdout, X-Nexe-* to stderr.")
    run.add_argument("app", metavar="APP", help="a local app file, or swift://ACCOUNT/CONTAINER/OBJECT")
    run.add_argument("--stdin", metavar="FILE",
                     help="a file (- for this stdin) sent as the POST's body: the stdin of the node whose "
                     "stdin device has no path (swift:// apps only)")
    return top


# ------------------------------------------------------------------ paths
def parse_swift(text: str, what: str) -> SwiftPath:
    """A swift://ACCOUNT/CONTAINER/OBJECT path, checked as the proxy checks
    it (``.`` and ``~`` stay: they mean the caller's own account)."""
    try:
        path = SwiftPath.parse(text, what, own_account=".")
    except JobError as e:
        raise UsageError(e.reason) from None
    if path.wildcard:
        raise UsageError(f"{what}: {quoted(text)} has * in the object name; an app is one object "
                         f"(X-Zerovm-Source cannot name a wildcard)")
    return path


def parse_target(text: str) -> SwiftPath:
    if text.startswith("swift://"):
        return parse_swift(text, "the deploy target")
    container, _, obj = text.partition("/")
    if "://" in text or not container or not obj:
        raise UsageError(f"the deploy target {quoted(text)} must be CONTAINER/OBJECT or "
                         f"swift://ACCOUNT/CONTAINER/OBJECT")
    return parse_swift(f"swift://./{text}", "the deploy target")


# ------------------------------------------------------------------ auth
def require_network() -> None:
    """The part that talks to Swift is imported only by the commands that do:
    bundle works without python-swiftclient, and its absence is one line."""
    try:
        from . import swift  # noqa: F401
    except ImportError as e:
        raise AppError(f"deploy and execute need python-swiftclient ({e}); install zerolab with its "
                       f"dependencies") from None


def session(args: argparse.Namespace, env: Mapping[str, str]) -> swift.Session:
    from . import swift

    timeout = getattr(args, "timeout", None)
    if timeout is None:
        timeout = swift.DEFAULT_TIMEOUT
    if not 0 < timeout <= 86400:
        raise UsageError(f"--timeout {timeout:g}: give seconds, more than 0 and at most a day")
    given = {name: getattr(args, name, None) for name in ("auth", "user", "key")}
    storage_url = getattr(args, "os_storage_url", None) or env.get("OS_STORAGE_URL")
    token = getattr(args, "os_auth_token", None) or env.get("OS_AUTH_TOKEN")
    if not any(given.values()) and storage_url and token:
        return usage(lambda: swift.direct(storage_url, token, timeout))
    auth = given["auth"] or env.get("ST_AUTH")
    user = given["user"] or env.get("ST_USER")
    key = given["key"] or env.get("ST_KEY")
    if auth and user and key:
        usage(lambda: (swift.check_url(auth, "the auth URL"), swift.check_header_value(user, "the user"),
                       swift.check_header_value(key, "the key")))
        return swift.authenticate(auth, user, key, timeout)
    if any(given.values()) or auth or user or key:
        missing = [f"{flag} ({var})" for flag, var, value in
                   (("-A", "ST_AUTH", auth), ("-U", "ST_USER", user), ("-K", "ST_KEY", key)) if not value]
        raise UsageError(f"v1 auth needs {', '.join(missing)} too")
    raise UsageError("no credentials: give -A URL -U USER -K KEY (or set ST_AUTH, ST_USER, ST_KEY), or "
                     "--os-storage-url and --os-auth-token (OS_STORAGE_URL, OS_AUTH_TOKEN)")


def usage(check: Callable[[], T]) -> T:
    """What the user gave, checked before anything is sent: a refusal is a usage error."""
    try:
        return check()
    except AppError as e:
        raise UsageError(str(e)) from None


# ------------------------------------------------------------------ commands
def do_bundle(args: argparse.Namespace) -> int:
    done = bundling.bundle(args.directory, args.output, args.sysimage)
    print(f"{done.path}: {done.members} members, {done.size} bytes")
    if done.note:
        print(f"{PROG}: note: {done.note}", file=sys.stderr)
    return 0


def do_deploy(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from . import swift

    target = parse_target(args.target)
    app = bundling.load_app(args.app)
    where = session(args, env)
    etag = swift.deploy(where, target, app.data, app.content_type)
    account = target.account
    if account in (".", "~"):
        try:
            account = where.own_account
        except AppError:
            pass
    print(f"deployed {args.app} to swift://{account}/{target.container}/{target.obj} "
          f"({len(app.data)} bytes, {app.content_type}, etag {etag})")
    return 0


def stdin_body(name: str) -> bytes | IO[bytes]:
    """The --stdin file: a regular file is sent as it is read, anything else
    (a pipe, ``-``) is read first (at most MAX_PIPED_STDIN bytes)."""
    if name == "-":
        data = sys.stdin.buffer.read(MAX_PIPED_STDIN + 1)
    else:
        try:
            f = open(name, "rb")  # noqa: SIM115 (sent, then closed by the caller)
        except OSError as e:
            raise AppError(f"cannot open the --stdin file {quoted(name)}: {e.strerror or e}") from None
        try:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return f
            data = f.read(MAX_PIPED_STDIN + 1)
        except OSError as e:
            f.close()
            raise AppError(f"cannot read the --stdin file {quoted(name)}: {e.strerror or e}") from None
        f.close()
    if len(data) > MAX_PIPED_STDIN:
        raise AppError(f"the --stdin stream is more than {MAX_PIPED_STDIN} bytes; give a file instead")
    return data


def do_execute(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from . import swift

    body: bytes | IO[bytes] | None
    if args.app.startswith("swift://"):
        parse_swift(args.app, "the app")
        headers = {EXECUTE_HEADER: "1.0", SOURCE_HEADER: str(args.app)}
        body = stdin_body(args.stdin) if args.stdin is not None else None
    else:
        if args.stdin is not None:
            raise UsageError("--stdin goes with a swift:// app: a local app is itself the POST's body "
                             "(deploy it, then execute swift://...)")
        if not os.path.lexists(args.app):
            raise AppError(f"no app file {quoted(args.app)} (a stored app is named "
                           f"swift://ACCOUNT/CONTAINER/OBJECT)")
        app = bundling.load_app(args.app)
        headers = {EXECUTE_HEADER: "1.0", "Content-Type": app.content_type}
        body = app.data
    try:
        where = session(args, env)
        with swift.execute(where, headers, body) as answer:
            return report(answer)
    finally:
        if body is not None and not isinstance(body, bytes):
            body.close()


def report(answer: swift.Answer) -> int:
    """The answer: X-Nexe-* on stderr, the body on stdout as it arrives, and
    the exit status."""
    from . import swift

    if answer.status // 100 != 2:
        raise swift.refused("execute", answer.status, answer.reason, answer.read(REASON_BYTES), answer.headers)
    if answer.status != 200:
        raise AppError(f"execute: the server answered {answer.status} {one_line(answer.reason, 80)}, not a "
                       f"job's answer (is zerocloud in the proxy's pipeline?)")
    retcodes, statuses = answer.header("X-Nexe-Retcode"), answer.header("X-Nexe-Status")
    if retcodes is None or statuses is None:
        raise AppError("execute: the server answered 200 without X-Nexe-Status and X-Nexe-Retcode: not "
                       "zerocloud's answer to a job")
    codes = [c.strip() for c in retcodes.split(",")]
    if not all(c.lstrip("-").isdigit() and len(c) < 12 for c in codes):
        raise AppError(f"execute: X-Nexe-Retcode {quoted(retcodes, 80)} is not a list of numbers")
    for name in SHOWN_HEADERS:
        value = answer.header(name)
        if value is not None:
            print(f"{name}: {one_line(value, 4000)}", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    out = sys.stdout.buffer
    for piece in answer.pieces():
        out.write(piece)
    out.flush()
    ok = all(int(c) == 0 for c in codes) and all(s.strip() == "ok" for s in statuses.split(","))
    return 0 if ok else 1


def run(argv: Sequence[str] | None, env: Mapping[str, str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:   # --help (0) or a usage error, already printed
        return e.code if isinstance(e.code, int) else USAGE
    if args.command == "bundle":
        return do_bundle(args)
    require_network()
    if args.command == "deploy":
        return do_deploy(args, env)
    return do_execute(args, env)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv, os.environ)
    except AppError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read stdout went away (| head): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:   # a bug of ours; still one line, never a traceback
        print(f"{PROG}: internal error: {type(e).__name__}: {one_line(str(e), 200)}", file=sys.stderr)
        return 1

