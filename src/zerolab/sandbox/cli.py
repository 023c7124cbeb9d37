"""Shared pieces of the zvsh and zerovm commands."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from .executor import Executor
from .status import USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def cache_dir() -> str:
    """Where compiled modules and image indexes are kept between CLI runs."""
    if os.environ.get("ZEROLAB_CACHE_DIR"):
        return os.environ["ZEROLAB_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "zerolab", "modules")


def executor() -> Executor:
    return Executor(cache_dir=cache_dir())


def die(prog: str, code: int, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)
