"""proxyDHCP next to a DHCP server that is not ours, as on an office network
whose router hands out the addresses: the pxe node only adds boot files.

The foreign server is a plain dnsmasq on the host's side of the provisioning
bridge (addresses from .210-.230, no boot information).  The pxe node is
converged with pxe_dhcp_mode: proxy for this module and back to full after
it (only its DHCP/TFTP part: --tags pxe_dnsmasq).  A DISCOVER gets two
offers: an address from the foreign server, the boot information from ours.
Then real clients boot beside it, both at once: a BIOS iPXE machine and a
plain UEFI one chain-loading iPXE, each from a foreign address to its
preseed GET.
"""

import ipaddress
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SERVER, Evidence, converge_with
from zerolab.pxe.client import ARCH_BIOS, ARCH_EFI_X64, PxeClient, dhcp_offers, wait_for

FOREIGN_RANGE = ("10.89.62.210", "10.89.62.230")
UNKNOWN = "52:54:00:62:0f:0e"
BOOT_TIMEOUT_S = 400
RESERVED = {"52:54:00:62:00:02": "10.89.62.212", "52:54:00:62:00:05": "10.89.62.215"}


def in_foreign_range(address):
    low, high = (ipaddress.IPv4Address(a) for a in FOREIGN_RANGE)
    return low <= ipaddress.IPv4Address(address) <= high


class ForeignServer:
    def __init__(self, bridge, work):
        self.leases = work / "leases"
        self.log = work / "dnsmasq.log"
        self.process = subprocess.Popen([
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
            f"--interface={bridge}", "--bind-dynamic", "--except-interface=lo",
            f"--dhcp-range={FOREIGN_RANGE[0]},{FOREIGN_RANGE[1]},255.255.255.0,10m",
            # Reservations, as an office router has them: the clients booted at once
            # never race for the same free address.
            *(f"--dhcp-host={mac},{address}" for mac, address in RESERVED.items()),
            "--dhcp-option=option:router", f"--dhcp-leasefile={self.leases}",
            "--log-dhcp", f"--log-facility={self.log}", f"--pid-file={work / 'pid'}",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        if self.process.poll() is not None:
            raise RuntimeError(f"the foreign dnsmasq did not start: {self.process.stderr.read()}")

    def leased(self, mac):
        """The address this server leased to the MAC, if any (lease file: expiry mac ip name id)."""
        text = self.leases.read_text() if self.leases.exists() else ""
        return next((f[2] for f in map(str.split, text.splitlines()) if len(f) > 2 and f[1] == mac), None)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def foreign(bridge, tmp_path_factory):
    server = ForeignServer(bridge, tmp_path_factory.mktemp("foreign-dhcp"))
    try:
        proxy = converge_with({"pxe_dhcp_mode": "proxy"}, tags=["pxe_dnsmasq"])
        assert proxy.returncode == 0, (proxy.stdout + proxy.stderr)[-3000:]
        yield server
    finally:
        server.stop()
        back = converge_with({}, tags=["pxe_dnsmasq"])
        assert back.returncode == 0, (back.stdout + back.stderr)[-3000:]


def test_the_pxe_node_now_hands_out_no_address(host, foreign):
    conf = host.file("/etc/dnsmasq.d/zerolab-pxe.conf").content_string
    assert re.search(r"^dhcp-range=10\.89\.62\.0,proxy,255\.255\.255\.0$", conf, re.M), conf
    assert "dhcp-authoritative" not in conf


@pytest.mark.parametrize("arch", [ARCH_BIOS, ARCH_EFI_X64])
def test_each_server_answers_its_part(bridge, foreign, arch):
    """The address from the foreign server; from ours, for iPXE: on BIOS a
    PXE boot menu whose one service is the iPXE script (no file name in the
    offer: iPXE boots the menu's service); on UEFI (dnsmasq's workaround for
    UEFI firmware) nothing but our address, where the client asks on port
    4011 for its one service.  The real boots below walk both the rest of
    the way."""
    offers = dhcp_offers(bridge, UNKNOWN, arch, "iPXE")
    addresses = [o for o in offers if o["yiaddr"] != "0.0.0.0"]
    boot = [o for o in offers if o["yiaddr"] == "0.0.0.0"]
    assert len(addresses) == 1 and in_foreign_range(addresses[0]["yiaddr"]), offers
    assert addresses[0]["file"] == "", "the foreign server offers no boot file"
    assert len(boot) == 1 and boot[0]["options"].get(60) == b"PXEClient", offers
    vendor = boot[0]["options"].get(43, b"")
    if arch == ARCH_BIOS:
        # The menu holds each service's text (not its file): one, the script's.
        assert b"zerolab: iPXE menu" in vendor and vendor.count(b"zerolab:") == 1, vendor
    else:
        assert (boot[0]["siaddr"], boot[0]["file"], vendor) == (SERVER, "", b""), boot[0]


def boot_beside(foreign, evidence, bridge, name, mac, firmware, since):
    """One real client from power-on to its preseed GET; its foreign address
    and a failure message (or None)."""
    with PxeClient(name, mac, bridge, firmware=firmware) as vm:
        try:
            ip = wait_for(lambda: foreign.leased(mac), BOOT_TIMEOUT_S, what=f"{name}: a lease from the foreign server")
            wait_for(lambda: evidence.gets({ip}, r"/preseed/default\.cfg", since), BOOT_TIMEOUT_S,
                     what=f"{name}: preseed GET")
        except TimeoutError as error:
            return foreign.leased(mac), f"{error}; console tail:\n{vm.console_text()[-3000:]}"
        print(f"{name} ({firmware}) beside a foreign DHCP server: preseed GET after {vm.elapsed():.0f} s")
    return ip, None


@pytest.fixture(scope="module")
def booted_beside(foreign, host, bridge):
    """A BIOS machine (QEMU's iPXE ROM) and a plain UEFI one whose policy
    chain-loads iPXE, booted at once beside the foreign server."""
    evidence = Evidence(host)
    since = len(evidence.access_log().splitlines())
    clients = {"bios": ("bios-ipxe", "52:54:00:62:00:02", "bios"),
               "uefi": ("uefi-ipxe", "52:54:00:62:00:05", "uefi")}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {kind: pool.submit(boot_beside, foreign, evidence, bridge, *client, since)
                   for kind, client in clients.items()}
        return {kind: future.result() for kind, future in futures.items()}, since


@pytest.mark.parametrize("kind, first_file", [("bios", None), ("uefi", r"/snponly\.efi$")])
def test_real_clients_boot_with_our_boot_files_and_the_foreign_address(booted_beside, evidence, kind, first_file):
    results, since = booted_beside
    ip, failure = results[kind]
    assert failure is None, failure
    assert in_foreign_range(ip), ip
    if first_file:
        assert evidence.tftp_sent({ip}, first_file), first_file
    for path in (r"/boot\.ipxe", r"/images/debian-12/linux", r"/images/debian-12/initrd\.gz"):
        assert evidence.gets({ip}, path, since), path
