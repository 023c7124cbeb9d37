"""``zerovm MANIFEST``: run a saved manifest, print ZeroVM's report.

Accepts ZeroVM's switches so old command lines work: ``-t`` (report mode: 0 and
2 print the report on stdout, 1 on stderr), ``-v`` (verbosity), and ``-P``,
``-Q``, ``-s`` (no meaning on WebAssembly, accepted and ignored).  ``-F`` only
loads (validates) the program.  The exit code is the session's (docs/sandbox.md).
"""

from __future__ import annotations

import sys

from .cli import OneLineParser, die, executor
from .executor import ProgramError
from .manifest import Manifest, ManifestError
from .status import BAD_MANIFEST, INTERNAL, INVALID_PROGRAM, OK


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="zerovm", description="Run a ZeroVM manifest on WebAssembly.")
    parser.add_argument("manifest", help="manifest file (Version 20130611)")
    parser.add_argument("-t", dest="report_mode", type=int, choices=range(0, 4), default=0,
                        help="report to stdout (0, 2) or stderr (1, 3)")
    parser.add_argument("-v", dest="verbosity", type=int, default=0, help="accepted, ignored")
    parser.add_argument("-F", dest="load_only", action="store_true",
                        help="load and validate the program, do not run it")
    for flag in ("-P", "-Q", "-s", "-S"):
        parser.add_argument(flag, action="store_true", help="accepted for compatibility, ignored")
    args = parser.parse_args(argv)

    try:
        manifest = Manifest.load(args.manifest)
    except ManifestError as e:
        die("zerovm", BAD_MANIFEST, str(e))
    try:
        ex = executor()
        if args.load_only:
            try:
                ex.load_module(manifest.program)
            except ProgramError as e:
                die("zerovm", INVALID_PROGRAM, str(e))
            return OK
        report = ex.run(manifest)
    except Exception as e:  # a bug of ours: still one line, never a traceback
        die("zerovm", INTERNAL, f"internal error: {type(e).__name__}: {e}")
    sys.stdout.flush()
    out = sys.stderr if args.report_mode in (1, 3) else sys.stdout
    out.write(report.as_text())
    out.flush()
    if report.exit_code not in (0, 1) or report.quota_hit:
        sys.stderr.write(f"zerovm: {report.exit_state}\n")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
