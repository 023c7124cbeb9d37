"""Boot one disk-less PXE client for a while: the smoke job's pxe step.

    python -m zerolab.pxeboot --network zerolab-provisioning --mac 52:54:00:57:00:10 [--firmware bios] [--seconds 300]

It attaches a QEMU machine (see zerolab.pxeclient) to the bridge of the given
podman network and keeps it running until it is stopped (SIGTERM) or the
time is up; whoever watches the PXE server's logs decides when the boot has
gone far enough.  The serial console stays in the artifacts folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

from .pxeclient import FIRMWARES, PxeClient


def bridge_of(network: str) -> str:
    result = subprocess.run(["podman", "network", "inspect", network], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pxeboot: no podman network '{network}': is the lab up? (scripts/lab status)")
    return json.loads(result.stdout)[0]["network_interface"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="podman network of the provisioning side")
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
