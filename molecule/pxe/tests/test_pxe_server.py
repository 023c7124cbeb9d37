"""The PXE server itself: services, sockets, files over TFTP/HTTP, NFS, NAT."""

import hashlib
import io
import re
import urllib.error
import urllib.request

import pytest
import tftpy

from conftest import ROOT, SERVER


def test_dnsmasq_runs_and_its_configuration_passes_the_check(host):
    assert host.service("dnsmasq").is_running
    assert host.service("dnsmasq").is_enabled
    check = host.run("dnsmasq --test")
    assert check.rc == 0 and "syntax check OK" in check.stderr + check.stdout


def test_dhcp_and_tftp_listen_on_udp(host):
    # ss cannot name dnsmasq's sockets in a container (no CAP_SYS_PTRACE),
    # and nothing else here serves these ports.
    sockets = host.run("ss -ulnH").stdout
    assert re.search(r"0\.0\.0\.0%\S+:67\s", sockets), sockets
    assert re.search(rf"{re.escape(SERVER)}:69\s", sockets), sockets


def test_tftp_is_bound_to_the_provisioning_interface_only(host):
    conf = host.file("/etc/dnsmasq.d/zerolab-pxe.conf").content_string
    interface = re.search(r"^interface=(\S+)$", conf, re.M).group(1)
    own = set(host.interface(interface).addresses)
    assert SERVER in own
    local = [line.split()[3] for line in host.run("ss -ulnpH").stdout.splitlines()
             if re.search(r":69\s", line)]
    # "10.89.62.2:69", "[fd00:89:62::2]:69", "[fe80::1%eth1]:69" -> the address
    bound = {re.sub(r"%\S+$", "", addr.rsplit(":", 1)[0]).strip("[]") for addr in local}
    assert bound and bound <= own, f"TFTP bound to {bound}, interface {interface} has {own}"


def tftp_get(path):
    data = io.BytesIO()
    tftpy.TftpClient(SERVER, 69).download(path, data, timeout=5, retries=3)
    return data.getvalue()


@pytest.mark.parametrize("path", ["pxelinux.0", "undionly.kpxe", "snponly.efi", "images/debian-12/linux",
                                  "debian-installer/arm64/bootnetaa64.efi", "debian-installer/arm64/grubaa64.efi",
                                  "debian-installer/amd64/bootnetx64.efi"])
def test_tftp_serves_the_loaders_and_the_installer_kernel(host, path):
    data = tftp_get(path)
    assert len(data) > 10_000
    assert hashlib.sha256(data).hexdigest() == host.file(f"{ROOT}/{path}").sha256sum


def test_the_arm64_grub_menu_installs_the_arm64_installer():
    menu = tftp_get("debian-installer/arm64/grub/grub.cfg").decode()
    assert "linux /images/debian-12-arm64/linux" in menu and "initrd /images/debian-12-arm64/initrd.gz" in menu
    assert "set default=local" in menu
    assert len(tftp_get("images/debian-12-arm64/initrd.gz")) > 10_000


def test_tftp_refuses_a_missing_file():
    with pytest.raises(tftpy.TftpException, match="not found|File not found"):
        tftp_get("no/such/file")


def http_get(path):
    with urllib.request.urlopen(f"http://{SERVER}/{path}", timeout=10) as response:
        return response.read().decode()


def test_preseeds_are_served_over_http_from_the_variables():
    default = http_get("preseed/default.cfg")
    assert "d-i passwd/username string zerolab" in default
    assert re.search(r"^d-i mirror/http/hostname string \S+", default, re.M)
    lab = http_get("preseed/lab.cfg")
    assert "d-i passwd/username string labadmin" in lab
    assert "molecule@zerolab" in lab
    with pytest.raises(urllib.error.HTTPError) as missing:
        http_get("preseed/nope.cfg")
    assert missing.value.code == 404


def test_menus_offer_local_boot_by_default_and_the_debian_installer(host):
    default = host.file(f"{ROOT}/pxelinux.cfg/default").content_string
    assert "DEFAULT vesamenu.c32" in default
    local = default.split("LABEL local", 1)[1].split("MENU BEGIN", 1)[0]
    assert "MENU DEFAULT" in local and "LOCALBOOT 0" in local
    assert "INCLUDE pxelinux.cfg/debian-12.menu" in default
    submenu = host.file(f"{ROOT}/pxelinux.cfg/debian-12.menu").content_string
    assert "KERNEL images/debian-12/linux" in submenu
    assert f"preseed/url=http://{SERVER}/preseed/default.cfg" in submenu
    ipxe = http_get("boot.ipxe")
    assert ipxe.startswith("#!ipxe") and "choose --default local" in ipxe
    grub = host.file(f"{ROOT}/debian-installer/amd64/grub/grub.cfg").content_string
    assert "set default=local" in grub


def test_per_mac_policies_reach_every_loader(host):
    bios = host.file(f"{ROOT}/pxelinux.cfg/01-52-54-00-62-00-01").content_string
    assert "netcfg/get_hostname=bios-tftp" in bios and "preseed/default.cfg" in bios
    diskful = host.file(f"{ROOT}/pxelinux.cfg/01-52-54-00-62-00-04").content_string
    assert "LOCALBOOT 0" in diskful and "KERNEL" not in diskful
    ipxe = http_get("boot.ipxe")
    assert "iseq ${netX/mac} 52:54:00:62:00:02 && goto policy-2" in ipxe
    grub = host.file(f"{ROOT}/debian-installer/amd64/grub/grub.cfg").content_string
    uefi = grub.split('"52:54:00:62:00:03"', 1)[1].split("\nfi\n", 1)[0]
    assert "preseed/lab.cfg" in uefi and "netcfg/get_hostname=uefi" in uefi


def test_machines_on_their_own_inventory_entries_get_policies(host):
    """molecule.yml's pxe_clients group: web7.zerolab.test installs with the lab
    preseed, cache1 boots its disk, spare1 (no pxe_mac) is nobody's."""
    dnsmasq = host.file("/etc/dnsmasq.d/zerolab-pxe.conf").content_string
    assert "dhcp-host=52:54:00:62:00:06,web7\n" in dnsmasq
    assert "dhcp-host=52:54:00:62:00:07,cache1\n" in dnsmasq
    assert "spare1" not in dnsmasq
    ipxe = http_get("boot.ipxe")
    web7 = ipxe.split("zerolab policy: web7 (52:54:00:62:00:06) -> debian-12", 1)[1].split("\nboot\n", 1)[0]
    assert "preseed/lab.cfg" in web7 and "netcfg/get_hostname=web7 " in web7
    grub = host.file(f"{ROOT}/debian-installer/amd64/grub/grub.cfg").content_string
    assert "zerolab policy: cache1 -> local" in grub
    cache1 = host.file(f"{ROOT}/pxelinux.cfg/01-52-54-00-62-00-07").content_string
    assert "LOCALBOOT 0" in cache1 and "KERNEL" not in cache1


def test_nfs_export_is_listed_or_the_missing_kernel_server_is_reported(host):
    exports = host.file("/etc/exports.d/zerolab-pxe.exports").content_string
    assert f"{ROOT}/images 10.89.62.0/24(ro," in exports
    kernel_can_serve = host.run("grep -qw nfsd /proc/filesystems").rc == 0
    if kernel_can_serve:
        assert host.service("nfs-server").is_running
        assert f"{ROOT}/images" in host.run("showmount --exports localhost").stdout
    else:
        # The host kernel has no nfsd filesystem: the role must not pretend.
        assert not host.service("nfs-server").is_running
        pytest.skip("this kernel has no nfsd filesystem: NFS cannot be served here (role reports it)")


def test_clients_are_masqueraded_out_of_the_outside_interface(host):
    rules = host.run("nft list table ip zerolab_pxe")
    assert rules.rc == 0, rules.stderr
    assert re.search(r'ip saddr 10\.89\.62\.0/24 oifname "\S+" masquerade', rules.stdout)
    assert host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip() == "1"
    assert host.service("zerolab-pxe-nat").is_enabled
