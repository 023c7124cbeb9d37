"""Address arithmetic for the pxe role's templates (Python's ipaddress).

Inputs are checked first by the role's asserts (test_plugins/pxe_tests.py).
"""

import ipaddress


def pxe_ipv4_int(address):
    """The address as an integer, to compare the ends of a range."""
    return int(ipaddress.IPv4Address(str(address)))


def pxe_netmask(network):
    """192.168.57.0/24 -> 255.255.255.0"""
    return str(ipaddress.IPv4Network(str(network)).netmask)


def pxe_prefixlen(network):
    """192.168.57.0/24 -> 24"""
    return ipaddress.IPv4Network(str(network)).prefixlen


class FilterModule:
    def filters(self):
        return {
            "pxe_ipv4_int": pxe_ipv4_int,
            "pxe_netmask": pxe_netmask,
            "pxe_prefixlen": pxe_prefixlen,
        }
