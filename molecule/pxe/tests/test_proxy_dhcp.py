"""proxyDHCP next to a DHCP server that is not ours, as on an office network
whose router hands out the addresses: the pxe node only adds boot files.

The foreign server is a plain dnsmasq on the host's side of the provisioning
bridge (addresses from .210-.230, no boot information).  The pxe node is
converged with pxe_dhcp_mode: proxy for this module and back to full after
it (only its DHCP/TFTP part: --tags pxe_dnsmasq).  A DISCOVER gets two
offers: an address from the foreign server, the boot file from ours.  (A real iPXE client did not get further than DHCP
beside the foreign server when this was written: it kept asking the proxy
again; see the pxe role's README.)
"""

import ipaddress
import re
import subprocess
import time

import pytest

from conftest import SERVER, converge_with
from zerolab.pxe.client import ARCH_BIOS, ARCH_EFI_X64, dhcp_offers

FOREIGN_RANGE = ("10.89.62.210", "10.89.62.230")
UNKNOWN = "52:54:00:62:0f:0e"


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
            "--dhcp-option=option:router", f"--dhcp-leasefile={self.leases}",
            "--log-dhcp", f"--log-facility={self.log}", f"--pid-file={work / 'pid'}",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        if self.process.poll() is not None:
            raise RuntimeError(f"the foreign dnsmasq did not start: {self.process.stderr.read()}")

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


@pytest.mark.parametrize("arch, user_class, boot_file", [
    (ARCH_BIOS, "iPXE", f"http://{SERVER}/boot.ipxe"),
    (ARCH_EFI_X64, "iPXE", f"http://{SERVER}/boot.ipxe"),
])
def test_each_server_answers_its_part(bridge, foreign, arch, user_class, boot_file):
    offers = dhcp_offers(bridge, UNKNOWN, arch, user_class)
    addresses = [o for o in offers if o["yiaddr"] != "0.0.0.0"]
    boot = [o for o in offers if o["yiaddr"] == "0.0.0.0"]
    assert len(addresses) == 1 and in_foreign_range(addresses[0]["yiaddr"]), offers
    assert addresses[0]["file"] == "", "the foreign server offers no boot file"
    assert len(boot) == 1 and boot[0]["file"] == boot_file, offers
    assert boot[0]["options"].get(60) == b"PXEClient"
