#!/usr/bin/python3
"""Install once: the Debian installer reports the end of an install here
(its preseed's late_command POSTs /installed/<MAC>), and from then on that
machine's policy finds its mark in the installed folder and boots its disk
instead of the installer, until the role removes the mark (the host's
``reinstall: true`` in the inventory).  One mark per loader, each in the
loader's own language: <MAC>.ipxe (iPXE, over HTTP), <MAC>.grub (GRUB,
over TFTP), <MAC>.pxelinux (pxelinux, over TFTP).

    pxe_installed.py --listen ADDR --port N --hosts FILE --dir DIR

FILE lists the MACs this server installs, one per line (the role writes it
from pxe_hosts); it is read again on every report, so a converge that
changes it needs no restart.  Standard library only: it runs on the PXE
server's own python3.

Requests come from the provisioning network, where anything may answer a
DHCP offer: a malformed MAC is 400, a MAC the server does not install is
404, any other method or path 404/405, each with one line; no request body
is read.  A mark is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import sys
import time

MAC = re.compile(r"([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})")
PREFIX = "/installed/"
# Seconds a client may take to send its request line and headers.
REQUEST_TIMEOUT = 10


def mac_of(text: str) -> str | None:
    """52:54:00:12:34:56 or 52-54-00-12-34-56 (any case) -> 52-54-00-12-34-56."""
    match = MAC.fullmatch(text.lower())
    return "-".join(match.groups()) if match else None


def known_macs(hosts_file: str) -> set[str]:
    with open(hosts_file, encoding="utf-8") as f:
        return {mac for line in f if (mac := mac_of(line.strip())) is not None}


def write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "zerolab-pxe-installed"
    timeout = REQUEST_TIMEOUT
    hosts_file = ""
    marks = ""

    def answer(self, status: int, line: str) -> None:
        body = (line + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def machine(self) -> str | None:
        """The MAC the path names, after answering when it names none this server installs."""
        if not self.path.startswith(PREFIX):
            self.answer(404, "no such path: report an install with POST /installed/<MAC>")
            return None
        mac = mac_of(self.path[len(PREFIX):])
        if mac is None:
            self.answer(400, "not a MAC address: use /installed/52:54:00:12:34:56")
            return None
        try:
            known = known_macs(self.hosts_file)
        except OSError as e:
            self.answer(503, f"the list of machines ({self.hosts_file}) cannot be read: {e.strerror}")
            return None
        if mac not in known:
            self.answer(404, f"{mac} is not a machine this server installs (pxe_hosts)")
            return None
        return mac

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        mac = self.machine()
        if mac is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        said = f"# {mac} reported the end of its install at {stamp}: it boots its disk"
        for loader, text in (("ipxe", f"#!ipxe\n{said}\nexit\n"),
                             ("grub", f"{said}\nset zerolab_installed=1\n"),
                             ("pxelinux", f"{said}\nDEFAULT installed\n")):
            write_atomically(os.path.join(self.marks, f"{mac}.{loader}"), text)
        self.answer(201, f"{mac} installed: it boots from its disk from now on")

    def do_GET(self) -> None:  # noqa: N802
        mac = self.machine()
        if mac is None:
            return
        if os.path.exists(os.path.join(self.marks, f"{mac}.ipxe")):
            self.answer(200, f"{mac} installed")
        else:
            self.answer(404, f"{mac} not installed yet")

    def refuse(self) -> None:
        self.answer(405, f"{self.command[:16]!a} is not allowed: POST /installed/<MAC>")

    def __getattr__(self, name: str) -> object:
        # Every other method, however it is spelled, is a 405 (http.server's own answer is a 501).
        if name.startswith("do_"):
            return self.refuse
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hosts", required=True, help="the MACs this server installs, one per line")
    p.add_argument("--dir", required=True, help="where the marks go (served over HTTP to iPXE)")
    args = p.parse_args()
    Handler.hosts_file, Handler.marks = args.hosts, args.dir
    server = http.server.HTTPServer((args.listen, args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
