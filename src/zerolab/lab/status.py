"""What `scripts/lab status` prints, for the containers and the Vagrant VMs alike."""

from __future__ import annotations

import json

from .hostconfig import on_a_local_network, port_answers


def print_status(lab, states, as_json):
    """Each node's name, groups, address and state (from `states`, by name)."""
    nodes = []
    for machine in lab.machines:
        state = states.get(machine.name) or "absent"
        if state == "running":
            state = "running, ssh ok" if ssh_port_open(machine.address) else "running, no ssh"
        nodes.append({"name": machine.name, "groups": machine.groups, "address": machine.address, "state": state})
    if as_json:
        print(json.dumps(nodes, indent=2))
    else:
        for node in nodes:
            print(f"{node['name']:10} {node['address']:15} {','.join(node['groups']):12} {node['state']}")
    return 0


def ssh_port_open(address):
    # Off this machine nothing of the lab's is there, and nothing is probed.
    return on_a_local_network(address) and port_answers(address, 22)
