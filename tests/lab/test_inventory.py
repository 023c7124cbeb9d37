"""The lab inventory: read through ansible-inventory, checked the same way for Python and for Vagrant."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from zerolab.lab import inventory

ROOT = inventory.DEFAULT_INVENTORY.parents[2]


def test_the_lab_inventory_has_every_node_kind():
    lab = inventory.load()
    assert {g: len(lab.group(g)) for g in inventory.LAB_GROUPS} == {
        "sandbox": 1, "swift_proxy": 1, "swift_storage": 3, "pxe": 1, "galera": 3, "galera_proxy": 1}
    addresses = [m.address for m in lab.machines]
    assert len(addresses) == len(set(addresses))


def _broken(tmp_path, edit):
    data = yaml.safe_load(inventory.DEFAULT_INVENTORY.read_text())
    edit(data["all"]["children"])
    path = tmp_path / "inventories" / "lab" / "hosts.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _duplicate_address(groups):
    groups["galera"]["hosts"]["galera3"]["ansible_host"] = groups["galera"]["hosts"]["galera1"]["ansible_host"]


def _missing_memory(groups):
    del groups["pxe"]["hosts"]["pxe1"]["lab_memory"]


def test_host_vars_and_group_vars_files_are_read(tmp_path):
    # A value that only a host_vars/ or group_vars/ file sets is what Ansible
    # sees, so it is what the lab (and the Vagrantfile) sees.
    path = _broken(tmp_path, lambda groups: groups["sandbox"]["hosts"]["sandbox1"].pop("lab_cpus"))
    (path.parent / "host_vars").mkdir()
    (path.parent / "host_vars" / "sandbox1.yml").write_text("lab_cpus: 3\nsandbox_only_here: from host_vars\n")
    (path.parent / "group_vars").mkdir()
    (path.parent / "group_vars" / "all.yml").write_text("lab_everywhere: from group_vars\n")
    (path.parent / "group_vars" / "galera.yml").write_text("galera_only_here: from group_vars\n")
    lab = inventory.load(path)
    sandbox1 = lab.machine("sandbox1")
    assert (sandbox1.cpus, sandbox1.vars["sandbox_only_here"]) == (3, "from host_vars")
    assert lab.vars["lab_everywhere"] == "from group_vars"
    assert lab.machine("galera2").vars["galera_only_here"] == "from group_vars"
    assert "galera_only_here" not in sandbox1.vars
    # A nested group's vars (swift_storage, under swift) reach its hosts.
    assert lab.machine("swift-storage2").vars["swift_devices"] == [{"name": "d1"}, {"name": "d2"}]


def test_the_json_for_the_vagrantfile_has_the_lab_vars_and_machines():
    result = subprocess.run([sys.executable, "-m", "zerolab.lab.inventory", "--json"],
                            capture_output=True, text=True, check=True)
    printed = json.loads(result.stdout)
    lab = inventory.load()
    assert printed["vars"] == lab.vars
    assert [(m["name"], m["address"], m["groups"]) for m in printed["machines"]] == \
        [(m.name, m.address, m.groups) for m in lab.machines]
    pxe1 = next(m for m in printed["machines"] if m["name"] == "pxe1")
    assert pxe1["vars"]["pxe_hosts"]    # inventories/lab/host_vars/pxe1.yml


BROKEN = {
    "missing group": (lambda groups: groups.pop("pxe"), "group 'pxe' is missing"),
    "duplicate address": (_duplicate_address, "host 'galera3'"),
    "missing field": (_missing_memory, "host 'pxe1' has no 'lab_memory'"),
    "bad address": (lambda g: g["sandbox"]["hosts"]["sandbox1"].update(ansible_host="10.0.0.300"), "host 'sandbox1'"),
    "bad size": (lambda g: g["sandbox"]["hosts"]["sandbox1"].update(lab_cpus=0), "'lab_cpus' must be a positive"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_malformed_inventory_names_the_host_and_field(tmp_path, case):
    edit, expected = BROKEN[case]
    with pytest.raises(inventory.InventoryError, match=expected.replace("(", r"\(")):
        inventory.load(_broken(tmp_path, edit))


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by scripts/bootstrap")
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_vagrantfile_stops_on_the_same_malformed_inventory(tmp_path, case):
    edit, expected = BROKEN[case]
    _broken(tmp_path, edit)
    shutil.copy(ROOT / "Vagrantfile", tmp_path / "Vagrantfile")
    # The Vagrantfile reads the inventory with the checkout's .venv/bin/python.
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_all_in_one_lab_differs_from_the_lab_in_its_swift_nodes_only():
    lab = inventory.load()
    aio = inventory.load(inventory.DEFAULT_INVENTORY.parents[1] / "lab-aio" / "hosts.yml")

    def not_swift(which):
        return [(m.name, m.address, m.memory, m.cpus, m.groups, m.vars) for m in which.machines
                if not {"swift_proxy", "swift_storage"} & set(m.groups)]

    assert not_swift(aio) == not_swift(lab)
    assert aio.vars == lab.vars
    # one host in both tiers: an all-in-one, at the cluster's proxy address
    (swift1,) = aio.group("swift_storage")
    assert swift1.groups == ["swift_proxy", "swift_storage"]
    assert swift1.address == lab.group("swift_proxy")[0].address
