"""Jinja tests that check addresses for the pxe role (Python's ipaddress).

ansible.utils' ipaddr needs the netaddr library, which zerolab does not
install; these four tests are all the role's asserts need.
"""

import ipaddress
import re

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)


def pxe_ipv4(value):
    """A dotted-quad IPv4 address, without a prefix."""
    try:
        ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return True


def pxe_ipv4_network(value):
    """An IPv4 network in CIDR form with no host bits set."""
    if "/" not in str(value):
        return False
    try:
        ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        return False
    return True


def pxe_in_network(address, network):
    """A usable host address of network (not its network or broadcast address)."""
    if not (pxe_ipv4(address) and pxe_ipv4_network(network)):
        return False
    net = ipaddress.IPv4Network(str(network))
    addr = ipaddress.IPv4Address(str(address))
    return addr in net and addr not in (net.network_address, net.broadcast_address)


def pxe_mac(value):
    """A MAC address as six colon-separated hex octets."""
    return bool(_MAC.match(str(value)))


class TestModule:
    def tests(self):
        return {
            "pxe_ipv4": pxe_ipv4,
            "pxe_ipv4_network": pxe_ipv4_network,
            "pxe_in_network": pxe_in_network,
            "pxe_mac": pxe_mac,
        }
