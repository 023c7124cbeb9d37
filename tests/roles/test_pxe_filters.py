"""The pxe role's filters over Ansible's own inventory and hostvars: the
machines an inventory group describes become pxe_hosts entries."""

import importlib.util

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from .conftest import ROLES


def filters():
    path = ROLES / "pxe" / "filter_plugins" / "pxe_filters.py"
    spec = importlib.util.spec_from_file_location("pxe_filters", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INVENTORY = """
all:
  hosts:
    pxe1: {}
  children:
    pxe_clients:
      hosts:
        web7.zerolab.test: {pxe_mac: "52:54:00:62:00:06", pxe_preseed: lab, pxe_ip: 10.0.0.7}
        cache1: {pxe_mac: "52:54:00:62:00:07", pxe_image: local, pxe_reinstall: true, pxe_loader: ipxe}
        spare1: {unrelated: 1}
"""


def test_hosts_with_a_mac_become_policies_named_by_their_inventory_name(tmp_path):
    inventory_file = tmp_path / "hosts.yml"
    inventory_file.write_text(INVENTORY)
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(inventory_file)])
    variables = VariableManager(loader=loader, inventory=inventory)
    hostvars = HostVars(inventory, variables, loader)   # what a template sees as hostvars
    machines = filters().pxe_inventory_machines(inventory.get_groups_dict()["pxe_clients"], hostvars)
    assert machines == [
        {"mac": "52:54:00:62:00:06", "preseed": "lab", "ip": "10.0.0.7", "hostname": "web7",
         "source": "inventory host web7.zerolab.test"},
        {"mac": "52:54:00:62:00:07", "image": "local", "loader": "ipxe", "reinstall": True, "hostname": "cache1",
         "source": "inventory host cache1"},
    ]
    assert filters().pxe_inventory_machines([], hostvars) == []
