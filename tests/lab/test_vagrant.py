"""The Vagrant lab's pre-flight checks: bad input is one line, before any VM starts."""

import json
import re
import shutil

import pytest

from zerolab.lab import inventory, vagrant
from zerolab.lab.steps import LabError


def test_several_machines_are_one_vagrant_regex_target():
    pattern = vagrant.target(["galera1", "galera2"])
    assert pattern == "/^(galera1|galera2)$/"
    regex = re.compile(pattern.strip("/"))
    assert regex.match("galera2") and not regex.match("galera22")
    assert vagrant.target(["sandbox1"]) == "sandbox1"


def test_not_enough_memory_names_the_machines_and_the_fix():
    lab = inventory.load()
    huge = [inventory.Machine(m.name, m.address, 10**9, m.cpus, m.groups, m.vars) for m in lab.machines[:2]]
    with pytest.raises(LabError, match=r"^memory: the VMs need \d+ MiB \(sandbox1 1000000000, swift-proxy1 .*bring up fewer"):
        vagrant.check_memory(huge, running=set())


def test_running_machines_need_no_more_memory():
    huge = [inventory.Machine("sandbox1", "192.168.56.10", 10**9, 1, ["sandbox"])]
    assert vagrant.check_memory(huge, running={"sandbox1"}).startswith("0 MiB")


def test_unknown_node_is_refused():
    class Args:
        nodes = ["nosuch"]

    with pytest.raises(inventory.InventoryError, match="no machine named 'nosuch'"):
        vagrant.selected(Args(), inventory.load())


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by scripts/bootstrap")
def test_missing_box_says_how_to_get_it():
    with pytest.raises(LabError, match=r"^box: 'zerolab/no-such-box' is not installed .*vagrant box add"):
        vagrant.check_box("zerolab/no-such-box")


def test_missing_vagrant_is_named_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabError, match=r"^provider: vagrant is missing \(vagrant\): run scripts/bootstrap"):
        vagrant.check_provider()


def fake_host_addresses(monkeypatch, ifname, address):
    """`ip -j address` as a host with one more interface would print it; no libvirt, no podman lab."""
    listing = [{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
               {"ifname": ifname, "addr_info": [{"family": "inet", "local": address}]}]

    class Printed:
        stdout = json.dumps(listing)

    monkeypatch.setattr(vagrant, "run", lambda argv, **_: Printed())
    monkeypatch.setattr(vagrant, "which", lambda tool: False)
    monkeypatch.setattr(vagrant, "libvirt_bridges", lambda: set())


def test_an_address_held_by_the_host_is_named(monkeypatch):
    lab = inventory.load()
    fake_host_addresses(monkeypatch, "eth7", "192.168.56.10")
    with pytest.raises(LabError, match=r"^addresses: sandbox1's address 192.168.56.10 is held by host interface eth7"):
        vagrant.check_addresses(lab, lab.machines)


def test_a_subnet_in_use_on_the_host_is_named(monkeypatch):
    lab = inventory.load()
    fake_host_addresses(monkeypatch, "br-other", "192.168.56.200")
    with pytest.raises(LabError, match=r"^addresses: 192.168.56.0/24 is already used by host interface br-other"):
        vagrant.check_addresses(lab, lab.machines)


def test_free_addresses_pass(monkeypatch):
    lab = inventory.load()
    fake_host_addresses(monkeypatch, "eth0", "10.0.2.15")
    assert vagrant.check_addresses(lab, lab.machines) == f"{len(lab.machines)} addresses free"


def test_the_lab_s_libvirt_files_are_found_without_libvirtd(tmp_path):
    qemu, networks, images = tmp_path / "qemu", tmp_path / "qemu" / "networks", tmp_path / "images"
    for d in (networks, images):
        d.mkdir(parents=True)
    (qemu / "zerolab_sandbox1.xml").write_text("<domain/>")
    (networks / "zerolab-provisioning.xml").write_text("<network/>")
    (networks / "default.xml").write_text("<network/>")
    (images / "zerolab-VAGRANTSLASH-debian12_vagrant_box_image_0_1_box.img").write_bytes(b"")
    (images / "other.img").write_bytes(b"")
    found = vagrant.libvirt_files_of_the_lab((qemu, networks, images, tmp_path / "absent"))
    assert found == sorted([str(qemu / "zerolab_sandbox1.xml"), str(networks / "zerolab-provisioning.xml"),
                            str(images / "zerolab-VAGRANTSLASH-debian12_vagrant_box_image_0_1_box.img")])
    assert vagrant.libvirt_files_of_the_lab((tmp_path / "absent",)) == []
