"""Fast checks of zerolab.pxe.client: command lines and DHCP packets, no VM."""

import struct
from pathlib import Path

import pytest

from zerolab.pxe import client as pxeclient


def argv(firmware, **extra):
    return pxeclient.qemu_argv(
        name="c1", mac="52:54:00:62:00:01", tap="zpxe0", firmware=firmware,
        console=Path("/tmp/c1.log"), pidfile=Path("/tmp/c1.pid"),
        ovmf_vars=Path("/tmp/c1.vars"), **extra,
    )


def test_bios_client_boots_from_its_nic_in_software_mode():
    cmd = argv("bios")
    assert cmd[cmd.index("-accel") + 1] == "tcg"
    assert cmd[cmd.index("-smp") + 1] == "1"
    assert cmd[-1] == "virtio-net-pci,netdev=net0,mac=52:54:00:62:00:01"
    assert "tap,id=net0,ifname=zpxe0,script=no,downscript=no" in cmd
    assert "file:/tmp/c1.log" in cmd
    assert "-pidfile" in cmd and "pflash" not in " ".join(cmd)


def test_a_client_with_a_disk_boots_its_nic_first_then_the_disk():
    cmd = argv("bios", disk=Path("/tmp/c1.qcow2"), cpus=2)
    assert cmd[cmd.index("-boot") + 1] == "order=nc"
    assert cmd[cmd.index("-smp") + 1] == "2"
    assert "file=/tmp/c1.qcow2,if=virtio,format=qcow2,cache=unsafe" in cmd
    assert argv("bios")[argv("bios").index("-boot") + 1] == "order=n"
    assert "if=virtio" not in " ".join(argv("bios"))


def test_uefi_client_has_ovmf_and_no_option_rom():
    cmd = " ".join(argv("uefi"))
    assert "-machine q35 " in cmd and "smm=on" not in cmd and "secure" not in cmd
    assert "readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" in cmd
    assert "unit=1,file=/tmp/c1.vars" in cmd
    assert cmd.endswith(",romfile=")


def test_secure_boot_client_enforces_it_with_smm_and_the_enrolled_keys():
    cmd = argv("uefi-secureboot")
    joined = " ".join(cmd)
    assert cmd[cmd.index("-machine") + 1] == "q35,smm=on"
    assert cmd[cmd.index("-global") + 1] == "driver=cfi.pflash01,property=secure,value=on"
    assert "readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" in joined
    assert joined.endswith(",romfile=")
    code, variables = pxeclient.OVMF["uefi-secureboot"]
    assert variables.name == "OVMF_VARS_4M.ms.fd"   # Microsoft's keys enrolled: shim is trusted
    if code.exists():   # the real files, where OVMF is installed
        assert variables.exists()


def test_unknown_firmware_is_refused():
    with pytest.raises(ValueError, match="firmware"):
        argv("coreboot")


def test_tap_names_fit_and_differ():
    names = {pxeclient.tap_name(f"bench{i:02d}") for i in range(1, 11)}
    assert len(names) == 10
    assert all(len(n) <= 15 and n.startswith("zpxe") for n in names)


def test_discover_carries_the_firmware_identity():
    packet = pxeclient.build_discover("52:54:00:62:00:01", 7, 0x1234, user_class="iPXE")
    assert packet[0] == 1 and packet[28:34] == bytes.fromhex("525400620001")
    assert struct.unpack("!H", packet[10:12])[0] == 0x8000  # broadcast reply
    body = packet[240:]
    assert bytes([93, 2, 0, 7]) in body
    assert b"PXEClient:Arch:00007" in body
    assert bytes([77, 4]) + b"iPXE" in body
    assert packet.endswith(b"\xff")


def offer(file_field=b"", options=b""):
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0xABCD, 0, 0,
        b"\0" * 4, bytes([10, 89, 62, 150]), bytes([10, 89, 62, 2]), b"\0" * 4,
        bytes.fromhex("525400620001").ljust(16, b"\0"), b"", file_field,
    )
    return header + pxeclient.DHCP_MAGIC + bytes([53, 1, 2]) + options + b"\xff"


def test_reply_parsing_reads_the_boot_file_from_the_header_or_option_67():
    reply = pxeclient.parse_reply(offer(b"pxelinux.0"))
    assert reply == {**reply, "xid": 0xABCD, "type": 2, "yiaddr": "10.89.62.150",
                     "siaddr": "10.89.62.2", "chaddr": "52:54:00:62:00:01", "file": "pxelinux.0"}
    assert pxeclient.parse_reply(offer(options=bytes([67, 4]) + b"a.ef"))["file"] == "a.ef"
    assert pxeclient.parse_reply(offer())["file"] == ""


def test_garbage_is_not_a_reply():
    with pytest.raises(ValueError):
        pxeclient.parse_reply(b"\0" * 100)


def test_wait_for_returns_the_value_or_times_out():
    values = iter([None, "", "found"])
    assert pxeclient.wait_for(lambda: next(values), timeout=5, interval=0) == "found"
    with pytest.raises(TimeoutError, match="preseed GET"):
        pxeclient.wait_for(lambda: None, timeout=0.05, interval=0.01, what="preseed GET")
