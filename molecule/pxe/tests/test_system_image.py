"""zerolab's system image (image debian-12-image), which the scenario's
inventory machine installed1 installs: built on the pxe node through its
package cache, served over HTTP, and named by installed1's policy on every
loader.  The whole install from it is test_install.py (opt-in)."""

import importlib.util
import json
import sys
import urllib.request

import pytest

from conftest import ROOT, SCENARIO, SERVER

IMAGE = f"{ROOT}/images/debian-12-image"
MAC = "52-54-00-62-00-08"
INSTALLER = SCENARIO.parents[1] / "roles" / "pxe" / "files" / "zerolab_install.py"


def http_get(path):
    with urllib.request.urlopen(f"http://{SERVER}/{path}", timeout=30) as response:
        return response.read()


def http_size(path):
    request = urllib.request.Request(f"http://{SERVER}/{path}", method="HEAD")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.headers["Content-Length"])


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location("zerolab_install", INSTALLER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_image_kernel_initramfs_and_system_are_served_over_http():
    assert http_get("images/debian-12-image/linux")[0x202:0x206] == b"HdrS"   # a bzImage
    assert http_size("images/debian-12-image/initrd.img") > 5_000_000
    assert http_size("images/debian-12-image/root.tar.gz") > 100_000_000


def test_the_recipe_names_the_host_mirror_and_the_base_packages(host):
    recipe = json.loads(host.file(f"{IMAGE}/recipe.json").content_string)
    mirror = host.run("apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm'").stdout.split()[0]
    assert recipe["sources"][0] == f"deb {mirror} bookworm main"
    assert {"linux-image-amd64", "grub-pc", "openssh-server", "python3"} <= set(recipe["packages"])


def test_the_system_carries_the_installer_and_no_machine_identity(host):
    listing = host.run(f"tar -tzf {IMAGE}/root.tar.gz").stdout.splitlines()
    assert "./usr/local/sbin/zerolab-install" in listing
    assert "./boot/grub/" in listing or any(name.startswith("./usr/lib/grub/i386-pc/") for name in listing)
    assert not [name for name in listing if name.startswith("./etc/ssh/ssh_host_")]
    machine_id = host.run(f"tar -xzOf {IMAGE}/root.tar.gz ./etc/machine-id")
    assert machine_id.rc == 0 and machine_id.stdout == "", machine_id.stderr


def test_the_image_was_fetched_through_the_package_cache(host):
    log = host.run("cat /var/log/apt-cacher-ng/apt-cacher.log").stdout
    assert "linux-image-" in log and "openssh-server_" in log, log[-2000:]


def test_installed1_boots_the_image_installer_on_every_loader(host):
    args = (f"boot=zerolab zerolab.root=http://{SERVER}/images/debian-12-image/root.tar.gz "
            f"zerolab.answers=http://{SERVER}/preseed/install.json zerolab.hostname=installed1 "
            "init=/usr/local/sbin/zerolab-install")
    ipxe = host.file(f"{ROOT}/boot.ipxe").content_string
    assert f"kernel ${{base}}/images/debian-12-image/linux initrd=initrd.img {args}" in ipxe
    assert "initrd ${base}/images/debian-12-image/initrd.img" in ipxe
    pxelinux = host.file(f"{ROOT}/pxelinux.cfg/01-{MAC}").content_string
    assert f"APPEND initrd=images/debian-12-image/initrd.img {args}" in pxelinux
    grub = host.file(f"{ROOT}/debian-installer/amd64/grub/grub.cfg").content_string
    assert f"linux /images/debian-12-image/linux {args}" in grub
    for text in (ipxe, pxelinux, grub):
        assert f"zerolab.hostname=installed1 init=/usr/local/sbin/zerolab-install console=ttyS0,115200n8 BOOTIF=01-{MAC}" in text


def test_the_answers_are_what_the_installer_accepts(installer):
    """The role writes them, the installer reads them: the two agree."""
    answers = installer.parse_answers(http_get("preseed/install.json").decode(), "installed1")
    assert answers.username == "labadmin"
    assert answers.proxy == f"http://{SERVER}:3142/"
    assert answers.report_url == f"http://{SERVER}:8069/installed/"
    assert "tree" in answers.packages
    assert len(answers.authorized_keys) == 1
    # Every preseed gets its answers, the default one too.
    installer.parse_answers(http_get("preseed/default.json").decode(), "web1")
