"""Which boot file dnsmasq hands to which firmware, probed with real DHCP packets."""

import pytest

from conftest import SERVER
from zerolab.pxe.client import ARCH_ARM32_EFI, ARCH_BIOS, ARCH_EFI_X64, dhcp_probe

UNKNOWN = "52:54:00:62:0f:0f"   # no policy
ARCH_ARM64_EFI = 11             # RFC 4578 (IANA): ARM 64-bit UEFI


@pytest.mark.parametrize("arch, user_class, mac, boot_file", [
    (ARCH_BIOS, None, UNKNOWN, "undionly.kpxe"),                # plain PXE chain-loads iPXE
    (ARCH_BIOS, "iPXE", UNKNOWN, f"http://{SERVER}/boot.ipxe"),   # ... which asks again as iPXE
    (ARCH_BIOS, None, "52:54:00:62:00:01", "pxelinux.0"),       # policy: loader pxelinux
    (ARCH_BIOS, "iPXE", "52:54:00:62:00:01", "pxelinux.0"),
    (ARCH_EFI_X64, None, UNKNOWN, "debian-installer/amd64/bootnetx64.efi"),   # pxe_uefi_loader: shim
    (ARCH_EFI_X64, None, "52:54:00:62:00:05", "snponly.efi"),   # policy: loader ipxe
    (ARCH_EFI_X64, "iPXE", "52:54:00:62:00:05", f"http://{SERVER}/boot.ipxe"),
    (ARCH_EFI_X64, "iPXE", UNKNOWN, f"http://{SERVER}/boot.ipxe"),
    (ARCH_ARM64_EFI, None, UNKNOWN, "debian-installer/arm64/bootnetaa64.efi"),   # pxe_arm64
])
def test_each_firmware_gets_its_loader(bridge, arch, user_class, mac, boot_file):
    offer = dhcp_probe(bridge, mac, arch, user_class)
    assert offer is not None, "no DHCPOFFER"
    assert offer["file"] == boot_file
    assert offer["siaddr"] == SERVER
    assert offer["yiaddr"].startswith("10.89.62.")
    # dnsmasq sends an empty router option for "dhcp-option=option:router".
    assert offer["options"].get(3, b"") == b"", "a router was offered although pxe_dhcp_router is empty"


def test_unknown_architecture_gets_no_boot_file_and_others_are_still_served(bridge, host):
    offer = dhcp_probe(bridge, UNKNOWN, ARCH_ARM32_EFI)
    assert offer is None or offer["file"] == "", offer
    assert host.service("dnsmasq").is_running
    after = dhcp_probe(bridge, UNKNOWN, ARCH_BIOS)
    assert after is not None and after["file"] == "undionly.kpxe"


def test_a_policy_with_a_fixed_address_gets_it(bridge):
    offer = dhcp_probe(bridge, "52:54:00:62:01:01", ARCH_BIOS, "iPXE")
    assert offer is not None and offer["yiaddr"] == "10.89.62.51"
