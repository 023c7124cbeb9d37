"""The lab inventory (inventories/lab/hosts.yml): every machine, once.

Read through `ansible-inventory --list --export`, so that what the lab
command, the tests and the Vagrantfile (which calls `main --json`) see is
what Ansible sees: hosts.yml with its host_vars/ and group_vars/.  A
malformed inventory stops everything with a message that names the host and
the field.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The groups every lab inventory has, each with hosts (a parent group such as
# swift, over swift_proxy and swift_storage, is Ansible's business only).
LAB_GROUPS = ("sandbox", "swift_proxy", "swift_storage", "pxe", "galera", "galera_proxy")
ROOT = Path(__file__).resolve().parents[3]
DEFAULT_INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"


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


def _ansible_inventory() -> str:
    # The toolchain's own, next to this interpreter, also when PATH lacks it
    # (the Vagrantfile runs .venv/bin/python with Vagrant's PATH).
    beside = Path(sys.executable).parent / "ansible-inventory"
    found = str(beside) if beside.exists() else shutil.which("ansible-inventory")
    if not found:
        raise InventoryError("ansible-inventory is missing: run scripts/bootstrap first")
    return found


def _export(path: Path) -> dict[str, Any]:
    """The inventory as Ansible reads it; --export keeps each group's vars apart from its hosts'."""
    if not path.exists():
        raise InventoryError(f"{path}: cannot be read: No such file or directory")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           # A file no plugin parses is an error, not an empty inventory and a warning.
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"}
    result = subprocess.run([_ansible_inventory(), "-i", str(path), "--list", "--export"],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        # The YAML plugin's reason is the one that matters for a hosts.yml.
        reason = next((line.split("plugin: ", 1)[1] for line in lines if "with 'yaml' plugin: " in line),
                      lines[-1] if lines else f"ansible-inventory exited with {result.returncode}")
        raise InventoryError(f"{path}: is not a valid inventory: {reason}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise InventoryError(f"{path}: ansible-inventory printed no JSON: {result.stdout[:200]!r}") from None


def _children(data: dict[str, Any], group: str) -> set[str]:
    """Every group under `group`, however deep."""
    found: set[str] = set()
    for child in (data.get(group) or {}).get("children", []):
        if child not in found:
            found |= {child} | _children(data, child)
    return found


def load(path: Path = DEFAULT_INVENTORY) -> Lab:
    path = Path(path)
    data = _export(path)
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    known = _children(data, "all")
    if not hostvars and not known - {"ungrouped"}:
        raise InventoryError(f"{path}: has no 'all' group")
    lab_vars = (data.get("all") or {}).get("vars") or {}

    found: dict[str, dict] = {}
    for group in LAB_GROUPS:
        if group not in known:
            raise InventoryError(f"{path}: group '{group}' is missing")
        hosts = (data.get(group) or {}).get("hosts") or []
        if not hosts:
            raise InventoryError(f"{path}: group '{group}' has no hosts")
        for name in hosts:
            entry = found.setdefault(name, {"groups": [], "vars": {}})
            entry["groups"].append(group)
            # A lab group's vars (group_vars/GROUP.yml) are the host's, below its own.
            entry["vars"].update((data.get(group) or {}).get("vars") or {})
    for name, entry in found.items():
        entry["vars"].update(hostvars.get(name) or {})

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
    parser.add_argument("--json", action="store_true", help="print the lab's vars and machines as JSON")
    args = parser.parse_args(argv)
    try:
        lab = load(args.inventory)
    except InventoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        # The Vagrantfile's input: the all group's vars and every machine.
        print(json.dumps({"vars": lab.vars, "machines": [asdict(m) for m in lab.machines]}, indent=2))
    else:
        for machine in lab.machines:
            print(f"{machine.name:14} {machine.address:15} {machine.memory:6} MiB {machine.cpus} cpu  {','.join(machine.groups)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
