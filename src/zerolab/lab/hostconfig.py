"""What the host's own package tools are configured to use.

The project never names a package mirror: the lab's containers, images and
boxes use the Debian mirror that the host's apt already uses.  This module is
also run as a script by the shell scripts (before any virtualenv exists), so
it uses the standard library only.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import socket
import subprocess
import sys
from pathlib import Path

DEFAULT_APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")


class MirrorNotFound(RuntimeError):
    pass


def _apt_source_files(roots=DEFAULT_APT_SOURCES):
    for root in roots:
        path = Path(root)
        if path.is_file():
            yield path
        elif path.is_dir():
            for name in sorted(glob.glob(str(path / "*.list")) + glob.glob(str(path / "*.sources"))):
                yield Path(name)


def apt_sources(roots=DEFAULT_APT_SOURCES):
    """Yield (uri, suite) for every enabled deb source, one-line and deb822 formats."""
    for path in _apt_source_files(roots):
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            yield from _deb822_sources(text)
        else:
            yield from _one_line_sources(text)


def _one_line_sources(text):
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        words = _drop_options(words[1:])  # "deb [arch=amd64] URI SUITE ..."
        if len(words) >= 2:
            yield words[0].rstrip("/"), words[1]


def _drop_options(words):
    kept, inside = [], False
    for word in words:
        if word.startswith("["):
            inside = True
        if not inside:
            kept.append(word)
        if word.endswith("]"):
            inside = False
    return kept


def _deb822_sources(text):
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield uri.rstrip("/"), suite


def debian_mirror(codename="bookworm", roots=DEFAULT_APT_SOURCES):
    for uri, suite in apt_sources(roots):
        if suite == codename:
            return uri
    raise MirrorNotFound(
        f"no '{codename}' source in the host's apt configuration "
        f"({', '.join(roots)}); add one, or set ZEROLAB_DEBIAN_MIRROR"
    )


def debian_security_mirror(codename="bookworm", roots=DEFAULT_APT_SOURCES):
    for uri, suite in apt_sources(roots):
        if suite == f"{codename}-security":
            return uri
    return ""


def on_a_local_network(address: str) -> bool:
    """Whether this machine reaches `address` directly, on one of its own networks.

    The lab's addresses are private ones; when the lab is down, the kernel
    would send their traffic to the default gateway, off this machine, where
    no lab is and none may be probed.  So a caller asks first: a route with
    no gateway (a local bridge: the lab's podman or libvirt network) or a
    loopback address is local.
    """
    if ipaddress.ip_address(address).is_loopback:
        return True
    result = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True)
    if result.returncode != 0:
        return False
    try:
        routes = json.loads(result.stdout)
    except ValueError:
        return False
    return bool(routes) and all("gateway" not in route for route in routes)


def port_answers(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection at host:port within a second."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"debian-mirror": debian_mirror, "debian-security-mirror": debian_security_mirror}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: hostconfig.py {{{'|'.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        print(commands[argv[0]]())
    except MirrorNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
