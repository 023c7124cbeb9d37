"""Real PXE clients for the controller's tests, the smoke job and benchmarks; never installed on a node.

    client  a disk-less QEMU machine on a bridge, and a one-packet DHCP probe
    boot    `python -m zerolab.pxe.boot`: one client on a lab network, for the smoke job
"""
