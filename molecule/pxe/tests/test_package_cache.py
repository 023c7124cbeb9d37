"""The installers' package cache: apt-cacher-ng on the provisioning address,
named by every preseed as its proxy, forwarding only to the repositories
the pxe node's own apt uses (ForceManaged)."""

import json
import re
import urllib.error
import urllib.request

import pytest

from conftest import SERVER

CACHE = f"http://{SERVER}:3142"


def through_the_cache(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": CACHE}))
    try:
        with opener.open(url, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.fixture(scope="module")
def mirror():
    """The installer's mirror, as the default preseed names it."""
    with urllib.request.urlopen(f"http://{SERVER}/preseed/default.cfg", timeout=10) as response:
        preseed = response.read().decode()
    host = re.search(r"^d-i mirror/http/hostname string (\S+)$", preseed, re.M)
    directory = re.search(r"^d-i mirror/http/directory string (\S+)$", preseed, re.M)
    proxy = re.search(r"^d-i mirror/http/proxy string (\S*)$", preseed, re.M)
    assert host and directory and proxy, preseed
    return {"url": f"http://{host.group(1)}{directory.group(1)}", "proxy": proxy.group(1)}


def test_every_preseed_names_the_cache_as_the_installers_proxy(mirror, host):
    assert mirror["proxy"] == f"{CACHE}/"
    preseeds = host.run("ls /srv/pxe/preseed").stdout.split()
    assert [name for name in preseeds if name.endswith(".cfg")]
    for preseed in preseeds:
        if preseed.endswith(".cfg"):    # the Debian installer's
            assert host.file(f"/srv/pxe/preseed/{preseed}").contains(rf"^d-i mirror/http/proxy string {CACHE}/$")
        else:                           # zerolab's image installer's answers
            assert json.loads(host.file(f"/srv/pxe/preseed/{preseed}").content_string)["proxy"] == f"{CACHE}/"


def test_the_cache_serves_the_installers_mirror(mirror):
    status, release = through_the_cache(f"{mirror['url']}/dists/bookworm/Release")
    assert status == 200, status
    assert re.search(r"^Codename: bookworm$", release, re.M), release[:500]


@pytest.mark.parametrize("url", [
    "http://10.89.62.1:9/debian/dists/bookworm/Release",        # the host's side of the bridge
    "http://zerolab-not-a-mirror.invalid/debian/dists/bookworm/Release",
    "http://169.254.169.254/latest/meta-data/",                   # a cloud's metadata service
])
def test_the_cache_refuses_anywhere_else(url):
    status, _ = through_the_cache(url)
    assert status == 403, f"{url}: {status}"


def test_the_cache_is_not_on_the_other_network(host):
    listening = host.run("ss -Htln 'sport = :3142'").stdout
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert f"{SERVER}" in addresses, listening
    assert addresses <= {SERVER, "127.0.0.1", "[::1]"}, listening
