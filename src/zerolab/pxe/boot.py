"""Boot one disk-less PXE client for a while: the smoke job's pxe step.

    python -m zerolab.pxe.boot --network zerolab-provisioning --mac 52:54:00:57:00:10 [--firmware bios] [--seconds 300]

It attaches a QEMU machine (see zerolab.pxe.client) to the bridge of the given
network (the container lab's podman network, or the Vagrant lab's libvirt
network of that name) and keeps it running until it is stopped (SIGTERM) or the
time is up; whoever watches the PXE server's logs decides when the boot has
gone far enough.  The serial console stays in the artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time

from zerolab.lab.vagrant import libvirt_bridge

from .client import FIRMWARES, PxeClient


def bridge_of(network: str) -> str:
    """The host bridge behind a podman network or, under Vagrant, a libvirt network."""
    if shutil.which("podman"):
        podman = subprocess.run(["podman", "network", "inspect", network], capture_output=True, text=True)
        if podman.returncode == 0:
            return json.loads(podman.stdout)[0]["network_interface"]
    if shutil.which("virsh"):
        bridge = libvirt_bridge(network)
        if bridge:
            return bridge
    raise SystemExit(f"pxeboot: no podman or libvirt network '{network}': is the lab up? "
                     "(scripts/lab status, or scripts/lab status --vagrant)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="podman or libvirt network of the provisioning side")
    parser.add_argument("--mac", required=True)
    parser.add_argument("--name", default="smoke-client")
    parser.add_argument("--firmware", choices=FIRMWARES, default="bios")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args(argv)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with PxeClient(args.name, args.mac, bridge_of(args.network), firmware=args.firmware) as client:
        print(f"pxeboot: {args.name} ({args.firmware}, {args.mac}) booting; console: {client.console}", flush=True)
        deadline = time.monotonic() + args.seconds
        while not stop and time.monotonic() < deadline and client.running():
            time.sleep(0.5)
        if not client.running():
            print(f"pxeboot: QEMU ended early; console tail:\n{client.console_text()[-2000:]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
