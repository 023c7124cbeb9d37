"""The lab inventory (inventories/lab/hosts.yml): every machine, once.

Read by the lab command and the tests; the Vagrantfile reads the same file
with the same rules.  A malformed file stops everything with a message that
names the host and the field.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

LAB_GROUPS = ("sandbox", "swift", "pxe", "galera")
DEFAULT_INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "lab" / "hosts.yml"


class InventoryError(ValueError):
    """The inventory is malformed; the message names what and where."""


@dataclass
class Machine:
    name: str
    address: str
    memory: int
    cpus: int
    groups: list[str] = field(default_factory=list)
    vars: dict = field(default_factory=dict)


@dataclass
class Lab:
    path: Path
    vars: dict
    machines: list[Machine]

    def machine(self, name: str) -> Machine:
        for machine in self.machines:
            if machine.name == name:
                return machine
        known = ", ".join(m.name for m in self.machines)
        raise InventoryError(f"no machine named '{name}' in {self.path} (known: {known})")

    def group(self, group: str) -> list[Machine]:
        return [m for m in self.machines if group in m.groups]


def _positive_int(path, name, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InventoryError(f"{path}: host '{name}': '{key}' must be a positive whole number, not {value!r}")
    return value


def load(path: Path = DEFAULT_INVENTORY) -> Lab:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InventoryError(f"{path}: cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise InventoryError(f"{path}: is not valid YAML: {error}") from None
    everything = (data or {}).get("all") if isinstance(data, dict) else None
    if not isinstance(everything, dict):
        raise InventoryError(f"{path}: has no 'all' group")
    groups = everything.get("children") or {}
    lab_vars = everything.get("vars") or {}

    found: dict[str, dict] = {}
    for group in LAB_GROUPS:
        if group not in groups:
            raise InventoryError(f"{path}: group '{group}' is missing")
        hosts = (groups[group] or {}).get("hosts") or {}
        if not hosts:
            raise InventoryError(f"{path}: group '{group}' has no hosts")
        for name, host_vars in hosts.items():
            entry = found.setdefault(name, {"groups": [], "vars": {}})
            entry["groups"].append(group)
            entry["vars"].update(host_vars or {})

    machines, owners = [], {}
    for name, entry in found.items():
        host_vars = entry["vars"]
        for key in ("ansible_host", "lab_memory", "lab_cpus"):
            if key not in host_vars:
                raise InventoryError(f"{path}: host '{name}' has no '{key}'")
        address = str(host_vars["ansible_host"])
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise InventoryError(f"{path}: host '{name}': ansible_host '{address}' is not an IP address") from None
        if address in owners:
            raise InventoryError(f"{path}: host '{name}': ansible_host {address} is already used by '{owners[address]}'")
        owners[address] = name
        machines.append(Machine(
            name=name,
            address=address,
            memory=_positive_int(path, name, "lab_memory", host_vars["lab_memory"]),
            cpus=_positive_int(path, name, "lab_cpus", host_vars["lab_cpus"]),
            groups=entry["groups"],
            vars=host_vars,
        ))
    return Lab(path=path, vars=lab_vars, machines=machines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check the lab inventory and list its machines.")
    parser.add_argument("inventory", nargs="?", type=Path, default=DEFAULT_INVENTORY)
    parser.add_argument("--json", action="store_true", help="print the machines as JSON")
    args = parser.parse_args(argv)
    try:
        lab = load(args.inventory)
    except InventoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(m) for m in lab.machines], indent=2))
    else:
        for machine in lab.machines:
            print(f"{machine.name:10} {machine.address:15} {machine.memory:6} MiB {machine.cpus} cpu  {','.join(machine.groups)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
