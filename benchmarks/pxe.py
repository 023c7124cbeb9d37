#!/usr/bin/env python3
"""Power-on to preseed GET, measured side by side in one run.

Boots disk-less QEMU clients (TCG, 1 vCPU each) from the pxe scenario's
server and times each from QEMU start to the installer's preseed GET in
lighttpd's access log:

  * BIOS, pxelinux over TFTP   (policy loader: pxelinux)
  * BIOS, iPXE over HTTP       (QEMU's iPXE ROM gets boot.ipxe)
  * UEFI with Secure Boot enforced: shim + GRUB, kernel and initrd over TFTP
  * UEFI, plain PXE chain-loading iPXE (snponly.efi), then all over HTTP
  * N BIOS/iPXE clients at once: every one must get a lease, its kernel,
    initrd and preseed.

It needs the pxe scenario's server.  Run it through the heavy-job lock:

  flock /tmp/zerolab-heavy.lock sh -c \
    'molecule converge -s pxe && python benchmarks/pxe.py --parallel 4; molecule destroy -s pxe'

--quick boots only the three paths the pxe scenario must prove anyway (BIOS
iPXE, UEFI Secure Boot shim/GRUB, UEFI chain-loaded iPXE) and no crowd: the scenario's boot tests
are this quick run (--json), so the benchmark runs on every CI pass and the
clients are booted once, not once for the tests and again for the numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from zerolab.pxe.client import PxeClient, wait_for

CONTAINER = "zerolab-pxe"
NETWORK = "zerolab-pxe-test"
TARGET_S = 120.0
TIMEOUT_S = 400.0


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def container(*argv: str) -> str:
    return sh("podman", "exec", CONTAINER, *argv)


def leased_ips(mac: str) -> set[str]:
    log = container("journalctl", "-u", "dnsmasq", "--no-pager", "-o", "cat")
    return set(re.findall(rf"DHCPACK\(\S+\) (\S+) {re.escape(mac)}", log))


def gets(ips: set[str], pattern: str, since: int) -> list[str]:
    lines = container("cat", "/var/log/lighttpd/access.log").splitlines()[since:]
    return [l for l in lines if l.split(" ", 1)[0] in ips and re.search(rf'"GET {pattern} HTTP', l)]


def tftp_sent(ips: set[str], pattern: str) -> bool:
    log = container("journalctl", "-u", "dnsmasq", "--no-pager", "-o", "cat")
    return any((m := re.search(r"sent (\S+) to (\S+)", l)) and m.group(2) in ips and re.search(pattern, m.group(1))
               for l in log.splitlines())


def boot(name: str, mac: str, firmware: str, preseed: str, bridge: str) -> dict:
    """One client: seconds from power-on to preseed GET, and what it fetched."""
    since = len(container("cat", "/var/log/lighttpd/access.log").splitlines())
    with PxeClient(name, mac, bridge, firmware=firmware) as vm:
        try:
            wait_for(lambda: (ips := leased_ips(mac)) and gets(ips, rf"/preseed/{preseed}\.cfg", since),
                     TIMEOUT_S, interval=1, what=f"{name}: preseed GET")
            seconds = vm.elapsed()
        except TimeoutError:
            seconds = None
    ips = leased_ips(mac)
    kernel = bool(gets(ips, r"/images/debian-12/linux", since)) or tftp_sent(ips, r"images/debian-12/linux$")
    initrd = bool(gets(ips, r"/images/debian-12/initrd\.gz", since)) or tftp_sent(ips, r"initrd\.gz$")
    return {"name": name, "seconds": seconds, "lease": bool(ips), "kernel": kernel, "initrd": initrd,
            "ips": sorted(ips), "access_log_since": since, "console": str(vm.console),
            "console_tail": "" if seconds else vm.console_text()[-3000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="clients booting at once (max 10; default 4)")
    parser.add_argument("--skip-uefi", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="BIOS iPXE and the two UEFI paths only, no crowd (what the pxe scenario's boot tests run)")
    parser.add_argument("--json", action="store_true", help="print every client's result as JSON instead of the table")
    args = parser.parse_args()
    if args.quick:
        args.parallel = 0
    elif not 1 <= args.parallel <= 10:
        parser.error("--parallel must be 1..10 (the scenario has policies for bench01..bench10)")
    if subprocess.run(["podman", "container", "exists", CONTAINER]).returncode != 0:
        print(f"no {CONTAINER} container: run 'molecule converge -s pxe' first", file=sys.stderr)
        return 2
    bridge = json.loads(sh("podman", "network", "inspect", NETWORK))[0]["network_interface"]

    rows = [] if args.quick else [
        ("BIOS  pxelinux / TFTP", boot("bios-tftp", "52:54:00:62:00:01", "bios", "default", bridge))]
    rows.append(("BIOS  iPXE / HTTP", boot("bios-ipxe", "52:54:00:62:00:02", "bios", "default", bridge)))
    if not args.skip_uefi:
        rows.append(("UEFI  Secure Boot shim+GRUB", boot("uefi", "52:54:00:62:00:03", "uefi-secureboot", "lab", bridge)))
        rows.append(("UEFI  PXE -> iPXE / HTTP", boot("uefi-ipxe", "52:54:00:62:00:05", "uefi", "default", bridge)))

    started = time.monotonic()
    crowd = []
    if args.parallel:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            crowd = list(pool.map(
                lambda i: boot(f"bench{i:02d}", f"52:54:00:62:01:{i:02d}", "bios", "default", bridge),
                range(1, args.parallel + 1)))
    wall = time.monotonic() - started
    complete = all(r["lease"] and r["kernel"] and r["initrd"] and r["seconds"] for r in crowd)
    ok = complete and all(r["seconds"] for _, r in rows)
    if args.json:
        print(json.dumps({"paths": [dict(r, path=label) for label, r in rows], "crowd": crowd,
                          "crowd_wall_seconds": wall if crowd else None, "passed": ok}, indent=1))
        return 0 if ok else 1

    http = next(r["seconds"] for label, r in rows if "iPXE" in label)
    print(f"\nzerolab PXE: QEMU power-on -> installer's preseed GET (TCG, 1 vCPU per client, target <= {TARGET_S:.0f} s)\n")
    print(f"{'path':<26}{'seconds':>9}{'x iPXE/HTTP':>13}{'target':>9}")
    for label, r in rows:
        s = r["seconds"]
        ratio = f"{s / http:.2f}" if s and http else "-"
        verdict = "ok" if s and s <= TARGET_S else "MISSED"
        print(f"{label:<26}{(f'{s:.0f}' if s else 'timeout'):>9}{ratio:>13}{verdict:>9}")
    done = [r for r in crowd if r["seconds"]]
    times = sorted(r["seconds"] for r in done)
    if crowd:
        print(f"\n{args.parallel} BIOS/iPXE clients at once on {len(__import__('os').sched_getaffinity(0))} cores: "
              f"{len(done)}/{args.parallel} reached the preseed; all got lease+kernel+initrd+preseed: {complete}")
    if times:
        slowest = times[-1]
        print(f"  per client: min {times[0]:.0f} s, max {slowest:.0f} s, wall {wall:.0f} s; "
              f"slowest x one client: {slowest / http:.2f}" if http else "")
        print(f"  within target: {sum(t <= TARGET_S for t in times)}/{args.parallel}")
    for r in crowd:
        if not r["seconds"]:
            print(f"  {r['name']}: lease {r['lease']} kernel {r['kernel']} initrd {r['initrd']}; console {r['console']}")
    print("\nconsoles: /tmp/zerolab-artifacts/pxe/*.console.log")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
