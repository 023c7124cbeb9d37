"""Fixtures for the sandbox tests.

The guests and the Python image are real build outputs: the session builds
them with the project's own scripts when missing (nothing is skipped).  Compiled
modules are cached in build/cache/modules so the 20 MB CPython module is
compiled once per checkout, not once per test run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zerolab.sandbox import Channel, Executor, Manifest, Mount

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "build" / "guests"
PYTHON_IMAGE = ROOT / "build" / "images" / "python.tar"
CACHE = ROOT / "build" / "cache" / "modules"
BIN = Path(sys.executable).parent
G = 4294967296


@pytest.fixture(scope="session")
def guests() -> Path:
    subprocess.run([str(ROOT / "scripts" / "build-guests")], check=True, stdout=subprocess.DEVNULL)
    return GUESTS


@pytest.fixture(scope="session")
def python_image() -> Path:
    subprocess.run([str(ROOT / "scripts" / "build-python-image")], check=True, stdout=subprocess.DEVNULL)
    assert PYTHON_IMAGE.is_file()
    return PYTHON_IMAGE


@pytest.fixture(scope="session")
def executor():
    ex = Executor(cache_dir=str(CACHE))
    yield ex
    ex.close()


@pytest.fixture(scope="session")
def cli_env():
    """Environment for running zvsh/zerovm as commands (shared module cache)."""
    env = dict(os.environ)
    env["ZEROLAB_CACHE_DIR"] = str(CACHE)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def std_channels(stdout_limits=(G, G), stderr_limits=(G, G), stdin_limits=(G, G)):
    """stdin/stdout/stderr kept in memory, with the given (count, bytes) limits."""
    return [
        Channel(None, "/dev/stdin", 0, 0, stdin_limits[0], stdin_limits[1], 0, 0),
        Channel(None, "/dev/stdout", 0, 0, 0, 0, stdout_limits[0], stdout_limits[1]),
        Channel(None, "/dev/stderr", 0, 0, 0, 0, stderr_limits[0], stderr_limits[1]),
    ]


def job(program, args=None, extra=(), timeout=10, memory=256 << 20, **limits) -> Manifest:
    return Manifest(program=str(program), timeout=timeout, memory=memory,
                    channels=std_channels(**limits) + list(extra), args=args)


def python_job(image, code, extra=(), **kw) -> Manifest:
    """python -c CODE, with the image mounted at / as zvsh mounts it (a channel + fstab)."""
    image_channel = Channel(str(image), "/dev/1.python.tar", 3, 0, G, G, 0, 0)
    m = job(f"{image}/bin/python", ["python", "-c", code], [image_channel, *extra], **kw)
    m.mounts = [Mount("/dev/1.python.tar", "/", "ro")]
    return m
