"""The Vagrant lab's pre-flight checks: bad input is one line, before any VM starts."""

import re
import shutil

import pytest

from zerolab import inventory, vagrantlab
from zerolab.lab import LabError


def test_several_machines_are_one_vagrant_regex_target():
    pattern = vagrantlab.target(["galera1", "galera2"])
    assert pattern == "/^(galera1|galera2)$/"
    regex = re.compile(pattern.strip("/"))
    assert regex.match("galera2") and not regex.match("galera22")
    assert vagrantlab.target(["sandbox1"]) == "sandbox1"


def test_not_enough_memory_names_the_machines_and_the_fix():
    lab = inventory.load()
    huge = [inventory.Machine(m.name, m.address, 10**9, m.cpus, m.groups, m.vars) for m in lab.machines[:2]]
    with pytest.raises(LabError, match=r"^memory: the VMs need \d+ MiB \(sandbox1 1000000000, swift1 .*bring up fewer"):
        vagrantlab.check_memory(huge, running=set())


def test_running_machines_need_no_more_memory():
    lab = inventory.load()
    huge = [inventory.Machine("sandbox1", "192.168.56.10", 10**9, 1, ["sandbox"])]
    assert vagrantlab.check_memory(huge, running={"sandbox1"}).startswith("0 MiB")


def test_unknown_node_is_refused():
    class Args:
        nodes = ["nosuch"]

    with pytest.raises(inventory.InventoryError, match="no machine named 'nosuch'"):
        vagrantlab.selected(Args(), inventory.load())


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is installed by scripts/bootstrap")
def test_missing_box_says_how_to_get_it():
    with pytest.raises(LabError, match=r"^box: 'zerolab/no-such-box' is not installed .*vagrant box add"):
        vagrantlab.check_box("zerolab/no-such-box")
