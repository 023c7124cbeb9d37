"""Real PXE clients for tests, the smoke job and benchmarks.

Two tools, both talking only to the project's own bridge:

* ``PxeClient`` boots a disk-less QEMU machine (SeaBIOS or OVMF) on a tap
  attached to a bridge (a podman network's), keeps its serial console in a
  file, and stops it (by its own pid) when the caller has seen what it
  waited for, typically the installer's preseed GET.
* ``dhcp_probe`` sends one DHCPDISCOVER that looks like a given firmware
  (client architecture, iPXE user class) and returns the offer, so a test
  can check which boot file a DHCP server hands to which client in a second.

QEMU runs in software mode (TCG) by default: on hosts whose /dev/kvm cannot
boot ordinary guests (see ENVIRONMENT.md) KVM must be asked for explicitly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ARTIFACTS = Path(os.environ.get("ZEROLAB_ARTIFACTS", "/tmp/zerolab-artifacts")) / "pxe"
# OVMF's code and the variables it starts from, per firmware.  Secure Boot:
# Debian's build that enforces it, with Microsoft's and Debian's keys
# enrolled (the .ms variables), so only signed loaders (shim) run.
OVMF = {
    "uefi": (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    "uefi-secureboot": (Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")),
}
FIRMWARES = ("bios", *OVMF)

T = TypeVar("T")


def tap_name(name: str) -> str:
    """A tap name for a client: 'zpxe' + 8 hex digits (IFNAMSIZ is 16)."""
    return "zpxe" + hashlib.sha1(name.encode()).hexdigest()[:8]


def qemu_argv(
    *,
    name: str,
    mac: str,
    tap: str,
    firmware: str,
    console: Path,
    pidfile: Path,
    ovmf_vars: Path | None = None,
    memory_mb: int = 1024,
    accel: str = "tcg",
    disk: Path | None = None,
    cpus: int = 1,
) -> list[str]:
    """The QEMU command line of a machine that boots from its NIC first and,
    when it has a disk, from the disk when the network boot exits."""
    if firmware not in FIRMWARES:
        raise ValueError(f"firmware must be one of {FIRMWARES}, not {firmware!r}")
    nic = f"virtio-net-pci,netdev=net0,mac={mac}"
    argv = [
        "qemu-system-x86_64",
        "-name", f"zerolab-pxe-client-{name}",
        "-accel", accel,
        "-smp", str(cpus),
        "-m", str(memory_mb),
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console}",
        "-pidfile", str(pidfile),
        "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
        "-boot", "order=nc" if disk else "order=n",
    ]
    if disk is not None:
        # unsafe: a throw-away test disk; the installer's fsyncs cost minutes under TCG.
        argv += ["-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe"]
    if firmware in OVMF:
        if ovmf_vars is None:
            raise ValueError("a UEFI client needs its own copy of the OVMF variables")
        # No option ROM: QEMU's iPXE EFI ROM would boot first and shim
        # rejects the GRUB it is then handed; OVMF's own PXE is the client.
        nic += ",romfile="
        code = OVMF[firmware][0]
        if firmware == "uefi-secureboot":
            # The variables are writable only from SMM, or Secure Boot could
            # be switched off from the OS: the machine needs SMM, the flash
            # its secure mode.
            argv += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        else:
            argv += ["-machine", "q35"]
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={ovmf_vars}",
        ]
    return argv + ["-device", nic]


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 1.0, what: str = "condition") -> T:
    """Poll predicate until it returns something truthy; TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(interval)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


# Every client powered on in this process, so that a terminated run can power
# them all off (stop_all) whatever thread booted them.
_RUNNING: dict[int, PxeClient] = {}


def stop_all() -> None:
    """Power off every client this process started (e.g. on SIGTERM)."""
    for client in list(_RUNNING.values()):
        client.stop()


@dataclass
class PxeClient:
    """A QEMU machine that network-boots on a tap in ``bridge`` (disk-less
    unless given a ``disk``, a qcow2 image the caller made).

    Use it as a context manager: the machine and its tap are gone at exit,
    the serial console stays in ``console`` (an artifact for the CI log).
    """

    name: str
    mac: str
    bridge: str
    firmware: str = "bios"
    memory_mb: int = 1024
    accel: str = "tcg"
    workdir: Path = ARTIFACTS
    disk: Path | None = None
    cpus: int = 1
    started_at: float | None = field(default=None, init=False)
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def tap(self) -> str:
        return tap_name(self.name)

    @property
    def console(self) -> Path:
        return self.workdir / f"{self.name}.console.log"

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    def argv(self) -> list[str]:
        return qemu_argv(
            name=self.name, mac=self.mac, tap=self.tap, firmware=self.firmware,
            console=self.console, pidfile=self.pidfile,
            ovmf_vars=self.workdir / f"{self.name}.OVMF_VARS.fd",
            memory_mb=self.memory_mb, accel=self.accel, disk=self.disk, cpus=self.cpus,
        )

    def start(self) -> PxeClient:
        if not Path(f"/sys/class/net/{self.bridge}/bridge").exists():
            raise RuntimeError(f"{self.bridge} is not a bridge on this host")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.firmware in OVMF:
            shutil.copyfile(OVMF[self.firmware][1], self.workdir / f"{self.name}.OVMF_VARS.fd")
        self.console.unlink(missing_ok=True)
        if Path(f"/sys/class/net/{self.tap}").exists():
            _ip("link", "delete", self.tap)
        _ip("tuntap", "add", "dev", self.tap, "mode", "tap")
        _ip("link", "set", self.tap, "master", self.bridge)
        _ip("link", "set", self.tap, "up")
        self.started_at = time.monotonic()
        _RUNNING[id(self)] = self
        self._process = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{self.name}.qemu.log", "w"),
        )
        return self

    def elapsed(self) -> float:
        """Seconds since power-on."""
        assert self.started_at is not None, "not started"
        return time.monotonic() - self.started_at

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        _RUNNING.pop(id(self), None)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)
        self.pidfile.unlink(missing_ok=True)
        if Path(f"/sys/class/net/{self.tap}").exists():
            _ip("link", "delete", self.tap)

    def __enter__(self) -> PxeClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- DHCP probe ------------------------------------------------------------

DHCP_MAGIC = b"\x63\x82\x53\x63"
# RFC 4578 option 93 values.
ARCH_BIOS, ARCH_EFI_X64, ARCH_EFI_BC, ARCH_ARM32_EFI = 0, 7, 9, 10


def mac_bytes(mac: str) -> bytes:
    octets = mac.split(":")
    if len(octets) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(o, 16) for o in octets)


def build_discover(mac: str, arch: int, xid: int, user_class: str | None = None) -> bytes:
    """A DHCPDISCOVER as PXE firmware sends it (broadcast flag set)."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0x8000,
        b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4,
        mac_bytes(mac).ljust(16, b"\0"), b"", b"",
    )
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    options = [
        bytes([53, 1, 1]),                              # DHCPDISCOVER
        bytes([93, 2]) + struct.pack("!H", arch),       # client architecture
        bytes([94, 3, 1, 2, 1]),                        # UNDI 2.1
        bytes([60, len(vendor)]) + vendor,              # PXEClient vendor class
        bytes([55, 4, 1, 3, 66, 67]),                   # wanted: mask, router, server, file
    ]
    if user_class:
        options.append(bytes([77, len(user_class)]) + user_class.encode())
    return header + DHCP_MAGIC + b"".join(options) + b"\xff"


def parse_reply(packet: bytes) -> dict:
    """The fields of a DHCP reply a boot test cares about."""
    if len(packet) < 240 or packet[236:240] != DHCP_MAGIC:
        raise ValueError("not a DHCP packet")
    xid = struct.unpack("!I", packet[4:8])[0]
    options: dict[int, bytes] = {}
    i = 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, length = packet[i], packet[i + 1]
        options[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    file_field = packet[108:236].split(b"\0", 1)[0].decode(errors="replace")
    file_option = options.get(67, b"").split(b"\0", 1)[0].decode(errors="replace")
    return {
        "xid": xid,
        "type": options.get(53, b"\0")[0],
        "yiaddr": socket.inet_ntoa(packet[16:20]),
        "siaddr": socket.inet_ntoa(packet[20:24]),
        "chaddr": ":".join(f"{b:02x}" for b in packet[28:34]),
        "file": file_field or file_option,
        "options": options,
    }


def dhcp_offers(bridge: str, mac: str, arch: int, user_class: str | None = None, timeout: float = 8.0) -> list[dict]:
    """Send one DISCOVER out of ``bridge``; every OFFER that answers it within
    ``timeout`` (a DHCP server's and a proxyDHCP server's, say).

    The timeout is generous: dnsmasq pings an address (about 3 s) before it
    first offers it.
    """
    return list(_offers(bridge, mac, arch, user_class, timeout))


def dhcp_probe(bridge: str, mac: str, arch: int, user_class: str | None = None, timeout: float = 8.0) -> dict | None:
    """Send one DISCOVER out of ``bridge``; the first OFFER, or None if none came."""
    return next(_offers(bridge, mac, arch, user_class, timeout), None)


def _offers(bridge: str, mac: str, arch: int, user_class: str | None, timeout: float) -> Iterator[dict]:
    xid = int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, bridge.encode())
        sock.bind(("0.0.0.0", 68))
        sock.sendto(build_discover(mac, arch, xid, user_class), ("255.255.255.255", 67))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                packet, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            try:
                reply = parse_reply(packet)
            except ValueError:
                continue
            if reply["xid"] == xid and reply["type"] == 2:
                yield reply
