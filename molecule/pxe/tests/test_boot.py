"""Real clients: disk-less QEMU machines boot from this server into the
Debian installer, which fetches its preseed.  The end point is that GET;
each VM is killed right after.  Serial consoles stay in
/tmp/zerolab-artifacts/pxe/ as artifacts.

BIOS (SeaBIOS + QEMU's iPXE ROM) goes the fastest path, iPXE over HTTP;
UEFI (OVMF) goes its own: OVMF PXE -> shim -> GRUB -> kernel, over TFTP.
benchmarks/pxe.py times both BIOS paths (TFTP/pxelinux and iPXE/HTTP).
"""

from zerolab.pxe.client import PxeClient, wait_for

BOOT_TIMEOUT = 300   # TCG, 1 vCPU: 60-100 s is usual; CI machines vary.


def boot_until_preseed(evidence, bridge, name, mac, firmware, preseed):
    since = len(evidence.access_log().splitlines())
    with PxeClient(name, mac, bridge, firmware=firmware) as vm:
        def preseed_fetched():
            ips = evidence.leased_ips(mac)
            return ips and evidence.gets(ips, rf"/preseed/{preseed}\.cfg", since)
        try:
            wait_for(preseed_fetched, BOOT_TIMEOUT, interval=2, what=f"{name}: preseed GET")
        except TimeoutError:
            raise AssertionError(f"{name}: no preseed GET; console tail:\n{vm.console_text()[-3000:]}") from None
        elapsed = vm.elapsed()
    print(f"{name}: power-on to preseed GET {elapsed:.0f} s (console: {vm.console})")
    return evidence.leased_ips(mac), since


def test_bios_client_boots_through_ipxe_over_http(evidence, bridge):
    ips, since = boot_until_preseed(evidence, bridge, "bios-ipxe", "52:54:00:62:00:02", "bios", "default")
    # The whole chain, in the access log: menu, kernel, initrd, preseed.
    for path in (r"/boot\.ipxe", r"/images/debian-12/linux", r"/images/debian-12/initrd\.gz"):
        assert evidence.gets(ips, path, since), path
    assert "DHCPACK" in evidence.dnsmasq_log()


def test_uefi_client_boots_through_shim_and_grub_over_tftp(evidence, bridge):
    ips, _ = boot_until_preseed(evidence, bridge, "uefi", "52:54:00:62:00:03", "uefi", "lab")
    # The UEFI chain, in dnsmasq's TFTP log: shim, GRUB, its menu, kernel, initrd.
    for path in (r"bootnetx64\.efi$", r"grubx64\.efi$", r"grub/grub\.cfg$",
                 r"images/debian-12/linux$", r"images/debian-12/initrd\.gz$"):
        assert evidence.tftp_sent(ips, path), path
