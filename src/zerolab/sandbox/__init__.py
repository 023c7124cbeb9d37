"""ZeroVM's sandbox model (manifest, channels, quotas) on WebAssembly.

    from zerolab.sandbox import Executor, Manifest, Channel, Report
    ex = Executor()
    report = ex.run(Manifest(program="hello.wasm", channels=[...]), stdin=b"")
"""

from .executor import (
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
                       ChannelReport,
                       Executor,
                       Report,
)
from .manifest import Channel, Manifest, ManifestError, Mount
from .nvram import NVRAM

__all__ = ["Executor", "Manifest", "Channel", "Report", "ChannelReport", "ManifestError", "Mount",
           "NVRAM", "OK", "GUEST_EXIT", "USAGE", "BAD_MANIFEST", "BAD_INPUT", "INVALID_PROGRAM",
           "TIMEOUT", "MEMORY", "QUOTA", "CRASH", "INTERNAL", "EXIT_NAMES"]
