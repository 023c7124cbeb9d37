"""Bad variables fail before anything changes, with a message naming them."""

import pytest

from conftest import converge_with

WATCHED = "/etc/dnsmasq.d/zerolab-pxe.conf /srv/pxe/pxelinux.cfg/default /srv/pxe/boot.ipxe"


@pytest.mark.parametrize("extra_vars, named", [
    ({"pxe_dhcp_mode": "dhcp"}, "pxe_dhcp_mode"),
    ({"pxe_hosts": [{"mac": "52:54:00:zz:00:01", "hostname": "bad"}]}, "mac (pxe_mac) must look like"),
    ({"pxe_server_address": "10.89.63.2"}, "pxe_server_address"),
    ({"pxe_dhcp_range_start": "10.89.62.200", "pxe_dhcp_range_end": "10.89.62.100"}, "pxe_dhcp_range_start"),
    ({"pxe_network": "10.89.62.1/24"}, "pxe_network"),
    ({"pxe_hosts": [{"mac": "52:54:00:62:00:09", "hostname": "a"}, {"mac": "52:54:00:62:00:09", "hostname": "b"}]},
     "lists a MAC more than once"),
    ({"pxe_hosts": [{"mac": "52:54:00:62:00:09", "hostname": "a", "image": "windows-11"}]},
     "image must be one of"),
    ({"pxe_preseeds": {"default": {}, "bare": {"authorized_keys": []}}},
     "pxe_preseeds 'bare' installs a machine nobody can log into"),
    ({"pxe_uefi_loader": "grub"}, "value of pxe_uefi_loader must be one of: shim, ipxe, got: grub"),
    ({"pxe_system_image_extra_packages": ["tree", "jq,--aptopt=x"]},
     "pxe_system_image_extra_packages must be Debian package names"),
    # An extra var reaches every host: the inventory's machines get a malformed pxe_mac.
    ({"pxe_mac": "52:54:00:zz:00:01"}, "inventory host web7.zerolab.test"),
])
def test_bad_input_fails_naming_the_variable_and_changes_nothing(host, extra_vars, named):
    before = host.run(f"sha256sum {WATCHED}; systemctl show -p MainPID dnsmasq").stdout
    result = converge_with(extra_vars)
    output = result.stdout + result.stderr   # ansible-core 2.19 prints errors on stderr
    assert result.returncode != 0, output[-2000:]
    assert named in output, output[-2000:]
    assert "changed=0" in output, output[-2000:]
    assert host.run(f"sha256sum {WATCHED}; systemctl show -p MainPID dnsmasq").stdout == before
