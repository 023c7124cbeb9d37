"""Address arithmetic for the pxe role's templates (Python's ipaddress), and
the machines an inventory group describes.

Inputs are checked first by the role's asserts (test_plugins/pxe_tests.py).
"""

import ipaddress

# A machine's own inventory entry -> the pxe_hosts key it fills.
INVENTORY_KEYS = {"pxe_mac": "mac", "pxe_image": "image", "pxe_preseed": "preseed", "pxe_loader": "loader",
                  "pxe_ip": "ip", "pxe_reinstall": "reinstall"}


def pxe_ipv4_int(address):
    """The address as an integer, to compare the ends of a range."""
    return int(ipaddress.IPv4Address(str(address)))


def pxe_netmask(network):
    """192.168.57.0/24 -> 255.255.255.0"""
    return str(ipaddress.IPv4Network(str(network)).netmask)


def pxe_prefixlen(network):
    """192.168.57.0/24 -> 24"""
    return ipaddress.IPv4Network(str(network)).prefixlen


def pxe_inventory_machines(names, hostvars):
    """The hosts of an inventory group that carry a pxe_mac, as pxe_hosts
    entries (Razor's node -> policy -> image, from the host's own entry):
    its inventory name (up to the first dot) is the hostname, pxe_image,
    pxe_preseed, pxe_loader, pxe_ip and pxe_reinstall the rest.  Each entry
    says where it came from, so an assert names the host to fix."""
    machines = []
    for name in names:
        host = hostvars[name]
        if "pxe_mac" not in host:
            continue
        entry = {key: host[var] for var, key in INVENTORY_KEYS.items() if var in host}
        entry["hostname"] = str(name).split(".", 1)[0]
        entry["source"] = f"inventory host {name}"
        machines.append(entry)
    return machines


class FilterModule:
    def filters(self):
        return {
            "pxe_ipv4_int": pxe_ipv4_int,
            "pxe_netmask": pxe_netmask,
            "pxe_prefixlen": pxe_prefixlen,
            "pxe_inventory_machines": pxe_inventory_machines,
        }
