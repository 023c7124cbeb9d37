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

--install KEY adds the whole install, side by side with the paths above:
a BIOS client with an empty disk (the scenario's inventory machine
installed1, preseed "install", 2 vCPUs, 3 GB) goes from power-on through
zerolab's image installer (image debian-12-image, built on the pxe node
through its package cache; the one package it lacks comes through the
cache too) to its install report, reboots, boots its disk (its policy now
says so) and answers SSH with KEY as its inventory hostname: power-on to
the first SSH login.  Then it is powered off and on again: power-on to SSH
from its disk, and no installer asked for.  Takes several minutes under
TCG.

It needs the pxe scenario's server.  Run it through the heavy-job lock:

  flock /tmp/zerolab-heavy.lock sh -c \
    'molecule converge -s pxe && python benchmarks/pxe.py --parallel 4; molecule destroy -s pxe'

--quick boots only the three paths the pxe scenario must prove anyway (BIOS
iPXE, UEFI Secure Boot shim/GRUB, UEFI chain-loaded iPXE), all at once (so
their times are shared-CPU times, not the table's), and no crowd: the scenario's boot tests
are this quick run (--json), so the benchmark runs on every CI pass and the
clients are booted once, not once for the tests and again for the numbers.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zerolab.pxe.client import ARTIFACTS, PxeClient, stop_all, wait_for

CONTAINER = "zerolab-pxe"
NETWORK = "zerolab-pxe-test"
TARGET_S = 45.0
TIMEOUT_S = 400.0
SERVER = "10.89.62.2"
# The scenario's inventory machine (molecule/pxe/molecule.yml) that is installed for real.
# It installs from zerolab's system image (this machine's mirror has no udebs
# for the Debian installer); with image "debian-12" the Debian installer.
INSTALLED = {"name": "installed1", "mac": "52:54:00:62:00:08", "ip": "10.89.62.68", "user": "labadmin",
             "image": "debian-12-image", "preseed": "install"}
INSTALL_TIMEOUT_S = 3600.0
LOGIN_TIMEOUT_S = 600.0


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def container(*argv: str) -> str:
    return sh("podman", "exec", CONTAINER, *argv)


def leased_ips(mac: str) -> set[str]:
    log = container("journalctl", "-u", "dnsmasq", "--no-pager", "-o", "cat")
    return set(re.findall(rf"DHCPACK\(\S+\) (\S+) {re.escape(mac)}", log))


def access_log_length() -> int:
    """Lines in lighttpd's access log now: where a client's evidence starts."""
    return len(container("cat", "/var/log/lighttpd/access.log").splitlines())


def gets(ips: set[str], pattern: str, since: int) -> list[str]:
    lines = container("cat", "/var/log/lighttpd/access.log").splitlines()[since:]
    return [l for l in lines if l.split(" ", 1)[0] in ips and re.search(rf'"GET {pattern} HTTP', l)]


def tftp_sent(ips: set[str], pattern: str) -> bool:
    log = container("journalctl", "-u", "dnsmasq", "--no-pager", "-o", "cat")
    return any((m := re.search(r"sent (\S+) to (\S+)", l)) and m.group(2) in ips and re.search(pattern, m.group(1))
               for l in log.splitlines())


def boot(name: str, mac: str, firmware: str, preseed: str, bridge: str) -> dict:
    """One client: seconds from power-on to preseed GET, and what it fetched."""
    since = access_log_length()
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


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def ssh(key: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
         f"{INSTALLED['user']}@{INSTALLED['ip']}", *command],
        capture_output=True, text=True, timeout=60, check=False)


def logged_in(key: Path) -> str | None:
    """The machine's hostname when an SSH login with the key works."""
    try:
        run = ssh(key, "hostname")
    except subprocess.TimeoutExpired:
        return None
    return run.stdout.strip() if run.returncode == 0 and run.stdout.strip() else None


class InstallerStopped(Exception):
    """The installer stopped at an error (it waits there for ever)."""


def installer_components_missing(preseed: str) -> str | None:
    """Why the Debian installer cannot finish from the preseed's mirror, or
    None.  Past its netboot initrd the installer downloads its own
    components (udebs) from the mirror; a mirror that carries only .debs
    stops every install at "Download installer components"."""
    host = re.search(r"^d-i mirror/http/hostname string (\S+)$", preseed, re.M)
    directory = re.search(r"^d-i mirror/http/directory string (\S+)$", preseed, re.M)
    proxy = re.search(r"^d-i mirror/http/proxy string (\S+)$", preseed, re.M)
    if not (host and directory):
        return "the preseed names no HTTP mirror"
    mirror = f"http://{host.group(1)}{directory.group(1)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.group(1)} if proxy else {}))
    index = f"{mirror}/dists/bookworm/main/debian-installer/binary-amd64/Packages.xz"
    try:
        with opener.open(index, timeout=60) as response:
            packages = lzma.decompress(response.read()).decode()
        udeb = re.search(r"^Filename: (\S+\.udeb)$", packages, re.M)
        if udeb is None:
            return f"{index} lists no installer components"
        with opener.open(f"{mirror}/{udeb.group(1)}", timeout=60) as response:
            response.read(1)
    except urllib.error.HTTPError as error:
        return (f"the mirror {mirror} does not serve the installer's components ({error.url}: {error.code}); "
                "the Debian installer downloads them past its initrd, so no install can finish from it")
    except (OSError, lzma.LZMAError) as error:
        return f"the installer's components cannot be read from {mirror}: {error}"
    return None


def installer_error(console: str) -> str | None:
    """Why the installer stopped, read off the console, if it did: the
    Debian installer's error dialog ("[!!] ..."), zerolab's installer's
    "zerolab-install: FAILED: ...", an initramfs panic or a kernel panic."""
    for pattern in (r"\[!!\] ([A-Za-z][^\x1b\n]{3,60})", r"zerolab-install: (FAILED: [^\n]{1,300})",
                    r"(zerolab: [^\n]{1,200})\r?\n(?:.*\n){0,3}.*(?:Kernel panic|initramfs\))",
                    r"(Kernel panic - not syncing[^\n]{0,120})"):
        found = re.findall(pattern, console)
        if found:
            return found[-1].strip()
    return None


def installed_client(bridge: str, disk: Path) -> PxeClient:
    """The machine installed1, with its disk: 3 GB, since zerolab's
    installer runs from its image in memory (about 800 MB)."""
    return PxeClient(INSTALLED["name"], INSTALLED["mac"], bridge, disk=disk, cpus=2, memory_mb=3072)


def install(bridge: str, key: Path) -> dict:
    """A real install from an empty disk, then a power cycle (see --install)."""
    name, mac = INSTALLED["name"], INSTALLED["mac"]
    mark = f"http://{SERVER}/installed/{mac.replace(':', '-')}.ipxe"
    result: dict = {"name": name, "ip": INSTALLED["ip"], "user": INSTALLED["user"]}
    if http_status(mark) == 200:
        raise SystemExit(f"{name} is marked installed already: converge with reinstall for it first")
    if INSTALLED["image"] == "debian-12":
        with urllib.request.urlopen(f"http://{SERVER}/preseed/{INSTALLED['preseed']}.cfg", timeout=10) as response:
            cannot = installer_components_missing(response.read().decode())
        if cannot:
            result["error"] = cannot
            return result
    disk = ARTIFACTS / f"{name}.qcow2"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    disk.unlink(missing_ok=True)
    sh("qemu-img", "create", "-f", "qcow2", str(disk), "8G")
    since = access_log_length()
    result["access_log_since"] = since
    vm = installed_client(bridge, disk)
    with vm:
        result["console"] = str(vm.console)
        try:
            wait_for(lambda: (ips := leased_ips(mac)) and gets(ips, rf"/preseed/{INSTALLED['preseed']}\.(cfg|json)", since),
                     TIMEOUT_S, what=f"{name}: preseed GET")
            result["preseed_seconds"] = vm.elapsed()
            def reported() -> bool:
                stopped = installer_error(vm.console_text())
                if stopped:
                    raise InstallerStopped(f"{name}: the installer stopped at an error: {stopped}")
                if not vm.running():
                    raise InstallerStopped(f"{name}: QEMU ended before the install report")
                return http_status(mark) == 200

            wait_for(reported, INSTALL_TIMEOUT_S, interval=10, what=f"{name}: install report")
            result["reported_seconds"] = vm.elapsed()
            result["hostname"] = wait_for(lambda: logged_in(key), LOGIN_TIMEOUT_S, interval=5,
                                          what=f"{name}: SSH login after the install")
            result["login_seconds"] = vm.elapsed()
        except (TimeoutError, InstallerStopped) as error:
            result["error"] = str(error)
            result["console_tail"] = vm.console_text()[-3000:]
            return result
        # What the tests read off the installed system while it runs.
        facts = ssh(key, "apt-config dump Acquire::http::Proxy; dpkg-query -W -f '${Package} ${Status}\\n' openssh-server tree")
        result["installed_system"] = facts.stdout
    since_cycle = access_log_length()
    result["power_cycle_access_log_since"] = since_cycle
    with installed_client(bridge, disk) as again:
        try:
            result["hostname_after_power_cycle"] = wait_for(lambda: logged_in(key), LOGIN_TIMEOUT_S, interval=5,
                                                            what=f"{name}: SSH login after a power cycle")
            result["power_cycle_login_seconds"] = again.elapsed()
        except TimeoutError as error:
            result["error"] = str(error)
            result["console_tail"] = again.console_text()[-3000:]
    ips = leased_ips(mac)
    result["ips"] = sorted(ips)
    result["power_cycle_mark_fetched"] = bool(gets(ips, r"/installed/\S+\.ipxe", since_cycle))
    result["power_cycle_installer_asked"] = bool(gets(ips, r"/images/[^/ ]+/linux", since_cycle))
    return result


def terminated(*_: object) -> None:
    """SIGTERM: power every client off (their taps too), whichever thread
    booted it, and end at once: the boots' threads would wait for nothing."""
    stop_all()
    os._exit(143)


def main() -> int:
    signal.signal(signal.SIGTERM, terminated)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=4, help="clients booting at once (max 10; default 4)")
    parser.add_argument("--skip-uefi", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="BIOS iPXE and the two UEFI paths only, no crowd (what the pxe scenario's boot tests run)")
    parser.add_argument("--json", action="store_true", help="print every client's result as JSON instead of the table")
    parser.add_argument("--install", metavar="KEY", type=Path,
                        help="also install installed1 for real and log in with this private key (several minutes)")
    parser.add_argument("--install-only", action="store_true", help="with --install: no other path")
    args = parser.parse_args()
    if args.install_only and not args.install:
        parser.error("--install-only needs --install KEY")
    if args.install and not args.install.is_file():
        parser.error(f"--install: no private key at {args.install} (molecule/pxe/create.yml makes install_key)")
    if args.quick:
        args.parallel = 0
    elif not 1 <= args.parallel <= 10:
        parser.error("--parallel must be 1..10 (the scenario has policies for bench01..bench10)")
    if subprocess.run(["podman", "container", "exists", CONTAINER]).returncode != 0:
        print(f"no {CONTAINER} container: run 'molecule converge -s pxe' first", file=sys.stderr)
        return 2
    bridge = json.loads(sh("podman", "network", "inspect", NETWORK))[0]["network_interface"]

    if args.install_only:
        installed = install(bridge, args.install)
        if args.json:
            print(json.dumps({"paths": [], "crowd": [], "install": installed}, indent=1))
        else:
            print_install(installed)
        return 0 if "error" not in installed else 1

    paths = [] if args.quick else [("BIOS  pxelinux / TFTP", ("bios-tftp", "52:54:00:62:00:01", "bios", "default"))]
    paths.append(("BIOS  iPXE / HTTP", ("bios-ipxe", "52:54:00:62:00:02", "bios", "default")))
    if not args.skip_uefi:
        paths.append(("UEFI  Secure Boot shim+GRUB", ("uefi", "52:54:00:62:00:03", "uefi-secureboot", "lab")))
        paths.append(("UEFI  PXE -> iPXE / HTTP", ("uefi-ipxe", "52:54:00:62:00:05", "uefi", "default")))
    # One at a time, each timed alone; --quick boots them all at once (they
    # prove the chains, their times are then shared-CPU times).
    with ThreadPoolExecutor(max_workers=len(paths) if args.quick else 1) as pool:
        rows = list(zip([label for label, _ in paths],
                        pool.map(lambda client: boot(*client, bridge), [client for _, client in paths])))

    started = time.monotonic()
    crowd = []
    if args.parallel:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            crowd = list(pool.map(
                lambda i: boot(f"bench{i:02d}", f"52:54:00:62:01:{i:02d}", "bios", "default", bridge),
                range(1, args.parallel + 1)))
    wall = time.monotonic() - started
    installed = install(bridge, args.install) if args.install else None
    complete = all(r["lease"] and r["kernel"] and r["initrd"] and r["seconds"] for r in crowd)
    ok = complete and all(r["seconds"] for _, r in rows) and (installed is None or "error" not in installed)
    if args.json:
        print(json.dumps({"paths": [dict(r, path=label) for label, r in rows], "crowd": crowd,
                          "crowd_wall_seconds": wall if crowd else None, "install": installed,
                          "passed": ok}, indent=1))
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
        print(f"\n{args.parallel} BIOS/iPXE clients at once on {len(os.sched_getaffinity(0))} cores: "
              f"{len(done)}/{args.parallel} reached the preseed; all got lease+kernel+initrd+preseed: {complete}")
    if times:
        slowest = times[-1]
        print(f"  per client: min {times[0]:.0f} s, max {slowest:.0f} s, wall {wall:.0f} s; "
              f"slowest x one client: {slowest / http:.2f}" if http else "")
        print(f"  within target: {sum(t <= TARGET_S for t in times)}/{args.parallel}")
    for r in crowd:
        if not r["seconds"]:
            print(f"  {r['name']}: lease {r['lease']} kernel {r['kernel']} initrd {r['initrd']}; console {r['console']}")
    if installed:
        print_install(installed, http)
    print("\nconsoles: /tmp/zerolab-artifacts/pxe/*.console.log")
    return 0 if ok else 1


def print_install(r: dict, http: float | None = None) -> None:
    def seconds(key: str) -> str:
        value = r.get(key)
        return f"{value:.0f} s" + (f" ({value / http:.1f}x iPXE preseed GET)" if value and http else "") \
            if value else "-"
    print(f"\nwhole install of {r['name']} ({INSTALLED['image']}; BIOS, 2 vCPUs, TCG, packages through the pxe node's cache):")
    print(f"  power-on -> answers GET          {seconds('preseed_seconds')}")
    print(f"  power-on -> install report       {seconds('reported_seconds')}")
    print(f"  power-on -> first SSH login      {seconds('login_seconds')}   as {r.get('hostname', '-')}")
    print(f"  power cycle -> SSH from its disk {seconds('power_cycle_login_seconds')}   "
          f"installer asked again: {r.get('power_cycle_installer_asked', '-')}")
    if "error" in r:
        print(f"  FAILED: {r['error']}; console {r.get('console')}")


if __name__ == "__main__":
    sys.exit(main())
