"""Real clients: disk-less QEMU machines boot from this server into the
Debian installer, which fetches its preseed.  The end point is that GET;
each VM is killed right after.  Serial consoles stay in
/tmp/zerolab-artifacts/pxe/ as artifacts.

BIOS (SeaBIOS + QEMU's iPXE ROM) goes the fastest path, iPXE over HTTP;
UEFI with Secure Boot enforced (Debian's OVMF with the Microsoft keys
enrolled): OVMF PXE -> shim -> GRUB -> kernel and initrd, over TFTP;
plain UEFI PXE chain-loads iPXE (snponly.efi), then all over HTTP.

The clients are booted by benchmarks/pxe.py in its quick mode, at once: its
JSON says which addresses each client leased and where the access log
stood when it powered on; these tests read the evidence of the whole chain
from the server.  So the benchmark runs on every pass and cannot rot.
"""

import json
from pathlib import Path

import pytest

from conftest import run_benchmark

BOOTS_TIMEOUT = 1500   # three clients at once, TCG: 80-150 s is usual; the benchmark's own limit is 400 s each


@pytest.fixture(scope="module")
def booted():
    """benchmarks/pxe.py --quick --json: each client's result by name."""
    run = run_benchmark("--quick", "--json", timeout=BOOTS_TIMEOUT)
    assert run.stdout.strip(), f"benchmarks/pxe.py --quick printed nothing (rc {run.returncode}): {run.stderr[-2000:]}"
    result = json.loads(run.stdout)
    for client in result["paths"]:
        print(f"{client['name']}: power-on to preseed GET {client['seconds']} s (console: {client['console']})")
    return {client["name"]: client for client in result["paths"]}


def reached_the_preseed(client):
    assert client["seconds"], f"{client['name']}: no preseed GET; console tail:\n{client['console_tail']}"
    assert client["lease"] and client["kernel"] and client["initrd"], client
    return set(client["ips"]), client["access_log_since"]


def test_bios_client_boots_through_ipxe_over_http(booted, evidence):
    ips, since = reached_the_preseed(booted["bios-ipxe"])
    # The whole chain, in the access log: menu, kernel, initrd, preseed.
    for path in (r"/boot\.ipxe", r"/images/debian-12/linux", r"/images/debian-12/initrd\.gz",
                 r"/preseed/default\.cfg"):
        assert evidence.gets(ips, path, since), path
    assert "DHCPACK" in evidence.dnsmasq_log()


def test_secure_boot_client_boots_through_shim_and_grub(booted, evidence):
    client = booted["uefi"]
    ips, since = reached_the_preseed(client)
    # The signed chain, in dnsmasq's TFTP log: shim, GRUB, its menu, kernel, initrd.
    for path in (r"bootnetx64\.efi$", r"grubx64\.efi$", r"grub/grub\.cfg$",
                 r"images/debian-12/linux$", r"images/debian-12/initrd\.gz$"):
        assert evidence.tftp_sent(ips, path), path
    assert evidence.gets(ips, r"/preseed/lab\.cfg", since)
    # The installer's kernel saw Secure Boot on: every loader was checked.
    console = Path(client["console"]).read_text(errors="replace")
    assert "Secure boot enabled" in console, console[-3000:]


def test_plain_uefi_pxe_chain_loads_ipxe_and_goes_over_http(booted, evidence):
    ips, since = reached_the_preseed(booted["uefi-ipxe"])
    assert evidence.tftp_sent(ips, r"/snponly\.efi$")
    assert not evidence.tftp_sent(ips, r"bootnetx64\.efi$")
    for path in (r"/boot\.ipxe", r"/images/debian-12/linux", r"/images/debian-12/initrd\.gz",
                 r"/preseed/default\.cfg"):
        assert evidence.gets(ips, path, since), path
