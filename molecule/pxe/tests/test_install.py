"""A whole install, from power-on to an SSH login, then a power cycle.

A BIOS QEMU client with an empty disk, the scenario's inventory machine
installed1 (pxe_mac, pxe_preseed: install, pxe_ip and pxe_image:
debian-12-image in molecule.yml), boots zerolab's image installer.  The
image was built on the pxe node through its package cache (the
provisioning network has no way out); the installer copies it onto the
disk, applies the preseed's answers (user, key, time zone), installs the
one package the image lacks (tree) through the same cache, installs GRUB,
reports the install and reboots.  Its policy now boots the disk: the
machine answers SSH with the key create.yml made, as its inventory
hostname.  Powered off and on again, it fetches its mark and boots its disk
again, no installer asked for.

It takes several minutes under TCG, so it runs only when asked:
    ZEROLAB_PXE_INSTALL=1 scripts/test pxe
The client is booted by benchmarks/pxe.py --install-only (its JSON), so the
benchmark's install figure is this very run.
"""

import json
import os
import re
from pathlib import Path

import pytest

from conftest import SERVER, run_benchmark
from zerolab.pxe.client import ARTIFACTS

pytestmark = pytest.mark.install

KEY = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "install_key"


@pytest.fixture(scope="module")
def installed():
    run = run_benchmark("--install", str(KEY), "--install-only", "--json", timeout=5400)
    assert run.stdout.strip(), f"benchmarks/pxe.py printed nothing (rc {run.returncode}): {run.stderr[-3000:]}"
    result = json.loads(run.stdout)["install"]
    # Its figures outlive the scenario (pytest keeps a passing test's output to itself).
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "install-result.json").write_text(json.dumps(result, indent=1))
    return result


def test_the_machine_installs_and_answers_ssh_as_its_inventory_hostname(installed):
    assert "error" not in installed, f"{installed.get('error')}\n{installed.get('console_tail', '')}"
    assert installed["hostname"] == "installed1"
    assert installed["preseed_seconds"] < installed["reported_seconds"] < installed["login_seconds"]


def test_the_installed_system_got_its_packages_through_the_package_cache(installed, host):
    assert "error" not in installed, installed.get("error")
    # apt on the installed system keeps the pxe node's cache as its proxy.
    assert re.search(rf'Acquire::http::Proxy "http://{re.escape(SERVER)}:3142/?";', installed["installed_system"]), \
        installed["installed_system"]
    assert "openssh-server install ok installed" in installed["installed_system"]
    assert "tree install ok installed" in installed["installed_system"]
    # The cache served both: the image's build (openssh-server) and the
    # installer on the client (tree, which the image lacks).
    log = host.run("cat /var/log/apt-cacher-ng/apt-cacher.log").stdout
    assert re.search(r"openssh-server_\S+\.deb", log), log[-2000:]
    assert re.search(r"/tree_\S+\.deb", log), log[-2000:]


def test_after_a_power_cycle_it_boots_its_disk_not_the_installer(installed):
    assert "error" not in installed, f"{installed.get('error')}\n{installed.get('console_tail', '')}"
    assert installed["hostname_after_power_cycle"] == "installed1"
    assert installed["power_cycle_mark_fetched"], "the policy did not fetch the install mark"
    assert not installed["power_cycle_installer_asked"], "the installed machine asked for the installer again"
