"""Shared facts and evidence readers for the pxe scenario's tests.

The tests run on the host: TFTP, HTTP, DHCP probes and QEMU clients go out
of the provisioning network's bridge (which holds 10.89.62.1), the evidence
is read inside the container through testinfra's ``host``.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = "10.89.62.2"
NETWORK_NAME = "zerolab-pxe-test"
CONTAINER = "zerolab-pxe"
ROOT = "/srv/pxe"
SCENARIO = Path(__file__).resolve().parents[1]


def converge_with(extra_vars, tags=None):
    """The scenario's converge.yml again (without the common role's play),
    with these extra vars: bad input, or another DHCP mode.  ``tags``: only
    the role's tasks with these tags (its checks always run)."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(SCENARIO.parents[1] / "roles"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    # Molecule's inventory folder when Molecule runs the tests: its own file
    # beside the one molecule.yml's pxe_clients group is written to.
    molecule_inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    inventory = str(Path(molecule_inventory).parent) if molecule_inventory else f"{CONTAINER},"
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", inventory, "-c", "containers.podman.podman",
         "--skip-tags", "common", *(["--tags", ",".join(tags)] if tags else []), "-e", json.dumps(extra_vars), str(SCENARIO / "converge.yml")],
        capture_output=True, text=True, env=env, timeout=300,
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "install: a whole install (15-40 min): only with ZEROLAB_PXE_INSTALL=1")


def pytest_collection_modifyitems(config, items):
    """The whole install runs only when asked (ZEROLAB_PXE_INSTALL=1): it
    does not fit CI's time; the README says how to run it."""
    if os.environ.get("ZEROLAB_PXE_INSTALL") == "1":
        return
    heavy = [item for item in items if item.get_closest_marker("install")]
    config.hook.pytest_deselected(items=heavy)
    items[:] = [item for item in items if item not in heavy]


BENCHMARK = SCENARIO.parents[1] / "benchmarks" / "pxe.py"


def run_benchmark(*args, timeout):
    """benchmarks/pxe.py with these arguments; past the timeout it gets
    SIGTERM (it powers its clients off), then SIGKILL after 30 s."""
    process = subprocess.Popen([sys.executable, str(BENCHMARK), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def bridge():
    """The host side of the provisioning network (podman names it podmanN)."""
    out = subprocess.run(["podman", "network", "inspect", NETWORK_NAME],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]["network_interface"]


class Evidence:
    """dnsmasq's journal and lighttpd's access log, read in the container."""

    def __init__(self, host):
        self.host = host

    def dnsmasq_log(self):
        return self.host.run("journalctl -u dnsmasq --no-pager -o cat").stdout

    def access_log(self):
        return self.host.run("cat /var/log/lighttpd/access.log 2>/dev/null").stdout

    def leased_ips(self, mac):
        """Every address dnsmasq acknowledged to this MAC (firmware, then installer)."""
        return set(re.findall(rf"DHCPACK\(\S+\) (\S+) {re.escape(mac)}", self.dnsmasq_log()))

    def gets(self, ips, path_pattern, since_line=0):
        """Access-log lines of GETs by these addresses whose path matches."""
        lines = self.access_log().splitlines()[since_line:]
        return [line for line in lines
                if line.split(" ", 1)[0] in ips and re.search(rf'"GET {path_pattern} HTTP', line)]

    def tftp_sent(self, ips, path_pattern, since_line=0):
        """dnsmasq-tftp's 'sent <file> to <ip>' lines for these addresses."""
        return [line for line in self.dnsmasq_log().splitlines()[since_line:]
                if (m := re.search(r"sent (\S+) to (\S+)", line))
                and m.group(2) in ips and re.search(path_pattern, m.group(1))]


@pytest.fixture
def evidence(host):
    return Evidence(host)
