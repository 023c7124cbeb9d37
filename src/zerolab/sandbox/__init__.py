"""ZeroVM's sandbox model (manifest, channels, quotas) on WebAssembly.

    from zerolab.sandbox import Executor, Manifest, Channel, Report
    ex = Executor()
    report = ex.run(Manifest(program="hello.wasm", channels=[...]), stdin=b"")

The Executor and its Report are loaded on first use: the Swift filters import
zerolab.sandbox.status in Swift's own python, which has no wasmtime, and
importing a submodule runs this file first.  (The Report itself, report.py,
needs no wasmtime either.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .manifest import Channel, Manifest, ManifestError, Mount
from .nvram import NVRAM
from .status import (
    BAD_INPUT,
    BAD_MANIFEST,
    CRASH,
    EXIT_NAMES,
    GUEST_EXIT,
    INTERNAL,
    INVALID_PROGRAM,
    MEMORY,
    OK,
    QUOTA,
    TIMEOUT,
    USAGE,
)

if TYPE_CHECKING:
    from .executor import Executor
    from .report import ChannelReport, Report

# Loaded on first use: only the Executor needs wasmtime.
NEEDS_WASMTIME = {"Executor": "executor", "Report": "report", "ChannelReport": "report"}

__all__ = ["Executor", "Manifest", "Channel", "Report", "ChannelReport", "ManifestError", "Mount",
           "NVRAM", "OK", "GUEST_EXIT", "USAGE", "BAD_MANIFEST", "BAD_INPUT", "INVALID_PROGRAM",
           "TIMEOUT", "MEMORY", "QUOTA", "CRASH", "INTERNAL", "EXIT_NAMES"]


def __getattr__(name: str) -> object:
    module = NEEDS_WASMTIME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
