"""zerolab.lab.hostdaemons: the package cache and libvirt, started from Python.

The real start of each runs in scripts/test (the package cache, before every
scenario) and in the vagrant scenario (libvirt); these are the answers that
need no daemon.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from zerolab.lab import hostdaemons
from zerolab.lab.steps import LabError


@pytest.fixture
def listening(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(hostdaemons, "PACKAGE_CACHE_PORT", server.getsockname()[1])
        yield server.getsockname()[1]


@pytest.fixture
def free_port(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(hostdaemons, "PACKAGE_CACHE_PORT", port)
    return port


def test_a_package_cache_that_answers_is_left_alone(listening, tmp_path):
    assert hostdaemons.start_package_cache(tmp_path) == f"package cache answers on port {listening}"
    assert list(tmp_path.iterdir()) == []


def test_only_root_may_start_the_package_cache_and_is_told_so(free_port, tmp_path, monkeypatch):
    monkeypatch.setattr(hostdaemons, "_is_root", lambda: False)
    monkeypatch.setattr(hostdaemons, "_tool", lambda name, package: "/usr/sbin/" + name)
    with pytest.raises(LabError, match=r"^the package cache is not running and only root can start it: rerun as root"):
        hostdaemons.start_package_cache(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_tool_names_its_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(hostdaemons.shutil, "which", lambda name, path=None: None)
    with pytest.raises(LabError, match=r"^libvirtd is missing \(libvirt-daemon-system\): run scripts/bootstrap as root$"):
        hostdaemons.start_libvirt()


def test_the_package_cache_has_a_configuration_of_its_own(tmp_path):
    config = hostdaemons.package_cache_config(tmp_path, 3142)
    assert f"CacheDir: {tmp_path}/cache\n" in config and "Port: 3142\n" in config
    # No remapping: a node's request goes to the mirror it named, the host's own.
    assert "Remap" not in config


def test_stop_libvirt_stops_nothing_it_did_not_start(tmp_path):
    assert hostdaemons.stop_libvirt(tmp_path / "libvirt-started") == "nothing of ours to stop"


@pytest.mark.parametrize("argv, code", [(["bogus"], 2), ([], 2), (["--help"], 0)])
def test_the_command_line_answers_in_a_line_or_two(argv, code):
    result = subprocess.run([sys.executable, "-m", "zerolab.lab.hostdaemons", *argv], capture_output=True, text=True)
    assert result.returncode == code
    assert "usage: python -m zerolab.lab.hostdaemons {package-cache,libvirt,stop-libvirt}" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port_below_32768():
    # apt-cacher-ng cannot bind a port above 32767 ("Error resolving address").
    for port in range(31420, 31520):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 31420-31519")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("apt-cacher-ng", path="/usr/sbin") is None,
                    reason="as root with apt-cacher-ng, as scripts/bootstrap leaves CI")
def test_the_package_cache_really_starts_on_a_port_of_its_own():
    port = _free_port_below_32768()
    # Not under pytest's tmp_path: apt-cacher-ng's user must reach the folder.
    directory = Path(tempfile.mkdtemp(prefix="zerolab-test-acng-", dir="/var/tmp"))
    directory.chmod(0o755)
    try:
        assert hostdaemons.start_package_cache(directory, port) == f"package cache started on port {port}"
        assert hostdaemons._answers(port)
        assert (directory / "cache").stat().st_uid == hostdaemons.pwd.getpwnam("apt-cacher-ng").pw_uid
        # Started once: a second call finds it answering.
        assert hostdaemons.start_package_cache(directory, port) == f"package cache answers on port {port}"
    finally:
        pid = directory / "run" / "pid"
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)
        shutil.rmtree(directory, ignore_errors=True)
