"""The Vagrantfile defines exactly the inventory's machines, at its addresses."""

import shutil
import subprocess

import pytest
import vagrant

from zerolab.lab import inventory

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by scripts/bootstrap")
ROOT = inventory.DEFAULT_INVENTORY.parents[2]


def test_vagrant_validate_passes():
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "validated successfully" in result.stdout


def test_vagrant_machines_and_addresses_equal_the_inventory():
    # Vagrant's own view of its machines, through its machine-readable output:
    # `vagrant lab-machines` is a command the Vagrantfile adds, which reads
    # each machine's effective configuration.
    output = subprocess.run(["vagrant", "lab-machines", "--machine-readable"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True).stdout
    defined = {}
    for line in output.splitlines():
        fields = line.split(",")
        if len(fields) >= 5 and fields[2] == "lab-machine":
            defined[fields[3]] = fields[4]
    expected = {m.name: m.address for m in inventory.load().machines}
    assert defined == expected


def test_python_vagrant_sees_the_same_machine_names():
    names = [status.name for status in vagrant.Vagrant(str(ROOT)).status()]
    assert names == [m.name for m in inventory.load().machines]
