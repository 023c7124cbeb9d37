"""Install once: the installer's report (the preseed's late_command POSTs
/installed/<MAC> to the pxe node) switches that machine's iPXE policy from
the installer to its disk; "reinstall: true" in its pxe_hosts entry switches
it back at the next converge.  A real BIOS client shows the switch: after
the report it fetches its mark and never asks for the installer's kernel.
"""

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import SERVER, converge_with
from zerolab.pxe.client import PxeClient, wait_for

SERVICE = f"http://{SERVER}:8069"
# bench10: a machine the quick boot test does not boot.
MAC = "52:54:00:62:01:10"
MARK = "/srv/pxe/installed/52-54-00-62-01-10.ipxe"
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"


def request(url, method="GET"):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("method, path, status, says", [
    ("POST", "/installed/not-a-mac", 400, "not a MAC address"),
    ("POST", "/installed/52:54:00:62:00:04", 404, "is not a machine this server installs"),   # image: local
    ("POST", "/installed/52:54:00:99:99:99", 404, "is not a machine this server installs"),
    ("PUT", f"/installed/{MAC}", 405, "is not allowed"),
    ("GET", "/etc/passwd", 404, "no such path"),
])
def test_the_report_service_answers_what_is_not_a_report_with_one_line(method, path, status, says):
    got, body = request(SERVICE + path, method)
    assert (got, body.count("\n")) == (status, 1), body
    assert says in body


def test_the_policy_checks_for_the_mark_and_the_preseed_reports_the_install(host):
    _, ipxe = request(f"http://{SERVER}/boot.ipxe")
    assert f"imgfetch --name installed ${{base}}/installed/{MAC.replace(':', '-')}.ipxe && goto installed" in ipxe
    assert f"BOOTIF=01-{MAC.replace(':', '-')}" in ipxe
    _, preseed = request(f"http://{SERVER}/preseed/default.cfg")
    assert f"http://{SERVER}:8069/installed/$mac" in preseed
    assert host.service("zerolab-pxe-installed").is_running
    assert host.file("/etc/zerolab-pxe-install-hosts").contains(MAC)


def test_a_reported_machine_boots_its_disk_and_reinstall_brings_the_installer_back(host, bridge, evidence):
    host.run(f"rm -f {MARK}")
    assert request(f"http://{SERVER}/installed/{MAC.replace(':', '-')}.ipxe")[0] == 404
    try:
        assert request(f"{SERVICE}/installed/{MAC}", "POST")[0] == 201
        assert request(f"{SERVICE}/installed/{MAC}")[0] == 200
        status, mark = request(f"http://{SERVER}/installed/{MAC.replace(':', '-')}.ipxe")
        assert status == 200 and mark.startswith("#!ipxe") and "\nexit\n" in mark

        since = len(evidence.access_log().splitlines())
        with PxeClient("installed", MAC, bridge):
            ips = wait_for(lambda: evidence.leased_ips(MAC), 300, what="a lease for the installed machine")
            wait_for(lambda: [line for line in evidence.gets(ips, r"/installed/\S+\.ipxe", since)
                              if re.search(r'" 200 ', line)], 300, what="the machine's fetch of its mark")
            time.sleep(5)   # had it gone on to the installer, the kernel GET would follow at once
        assert not evidence.gets(ips, r"/images/debian-12/linux", since), "an installed machine asked for the installer"

        # reinstall: true for one converge removes the mark
        plays = yaml.safe_load(CONVERGE.read_text())
        clients = next(p for p in plays if p["name"] == "Converge the pxe role")["vars"]
        bench = [dict(c, reinstall=True) if c["mac"] == MAC else c for c in clients["__bench_clients"]]
        result = converge_with({"__bench_clients": bench}, tags=["pxe_installed"])
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert not host.file(MARK).exists
        assert request(f"{SERVICE}/installed/{MAC}")[0] == 404
    finally:
        host.run(f"rm -f {MARK}")
