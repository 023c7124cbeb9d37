"""Install once: the installer's report (the preseed's late_command POSTs
/installed/<MAC> to the pxe node) switches that machine's policy from the
installer to its disk, in each loader's path; "reinstall: true" in its
pxe_hosts entry switches it back at the next converge.  Real clients show
the switch, booted at once: a BIOS iPXE machine, a BIOS machine whose
policy says pxelinux, a UEFI machine with Secure Boot (shim and GRUB).
After the report each fetches its mark and never asks for the installer's
kernel.
"""

import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import SERVER, converge_with
from zerolab.pxe.client import PxeClient, wait_for

SERVICE = f"http://{SERVER}:8069"
# bench10: a machine the quick boot test does not boot.
MAC = "52:54:00:62:01:10"
MARK = "/srv/pxe/installed/52-54-00-62-01-10.ipxe"
# The other loaders' machines (converge.yml): loader pxelinux, and the Secure Boot client.
PXELINUX_MAC = "52:54:00:62:00:01"
GRUB_MAC = "52:54:00:62:00:03"
MARKED = (MAC, PXELINUX_MAC, GRUB_MAC)
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


def dashed(mac):
    return mac.replace(":", "-")


def boot_to_the_mark(evidence, bridge, name, mac, firmware, fetched):
    """Power the machine on until the evidence shows it fetched its mark;
    None, or what went wrong."""
    with PxeClient(name, mac, bridge, firmware=firmware) as vm:
        try:
            ips = wait_for(lambda: evidence.leased_ips(mac), 300, what=f"{name}: a lease")
            wait_for(lambda: fetched(ips), 300, what=f"{name}: its fetch of its mark")
            # Had it gone on to the installer, the kernel's fetch would follow at once
            # (dnsmasq logs a TFTP file when its transfer ends, or fails: give it time).
            time.sleep(20)
        except TimeoutError as error:
            return f"{error}; console tail:\n{vm.console_text()[-3000:]}"
    return None


def test_reported_machines_boot_their_disks_and_reinstall_brings_the_installer_back(host, bridge, evidence):
    host.run("rm -f /srv/pxe/installed/*")
    assert request(f"http://{SERVER}/installed/{dashed(MAC)}.ipxe")[0] == 404
    try:
        for mac in MARKED:
            assert request(f"{SERVICE}/installed/{mac}", "POST")[0] == 201
            assert request(f"{SERVICE}/installed/{mac}")[0] == 200
        status, mark = request(f"http://{SERVER}/installed/{dashed(MAC)}.ipxe")
        assert status == 200 and mark.startswith("#!ipxe") and "\nexit\n" in mark

        since_http = len(evidence.access_log().splitlines())
        since_tftp = len(evidence.dnsmasq_log().splitlines())
        clients = [
            ("installed", MAC, "bios", lambda ips: [
                line for line in evidence.gets(ips, rf"/installed/{dashed(MAC)}\.ipxe", since_http)
                if re.search(r'" 200 ', line)]),
            ("bios-tftp", PXELINUX_MAC, "bios",
             lambda ips: evidence.tftp_sent(ips, rf"installed/{dashed(PXELINUX_MAC)}\.pxelinux$", since_tftp)),
            ("uefi", GRUB_MAC, "uefi-secureboot",
             lambda ips: evidence.tftp_sent(ips, rf"installed/{dashed(GRUB_MAC)}\.grub$", since_tftp)),
        ]
        with ThreadPoolExecutor(max_workers=len(clients)) as pool:
            failures = list(pool.map(lambda client: boot_to_the_mark(evidence, bridge, *client), clients))
        assert failures == [None] * len(clients), "\n".join(f for f in failures if f)
        for name, mac, _, _ in clients:
            ips = evidence.leased_ips(mac)
            assert not evidence.gets(ips, r"/images/debian-12/linux", since_http), f"{name} asked for the installer"
            tftp = evidence.dnsmasq_log().splitlines()[since_tftp:]
            asked = [line for line in tftp if "images/debian-12/linux" in line
                     and any(re.search(rf"\b{re.escape(ip)}\b", line) for ip in ips)]
            assert not asked, f"{name} asked for the installer: {asked}"

        # reinstall: true for one converge removes the mark (only the install reports' part of the role)
        plays = yaml.safe_load(CONVERGE.read_text())
        clients_vars = next(p for p in plays if p["name"] == "Converge the pxe role")["vars"]
        bench = [dict(c, reinstall=True) if c["mac"] == MAC else c for c in clients_vars["__bench_clients"]]
        result = converge_with({"__bench_clients": bench}, tags=["pxe_installed"])
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert not host.file(MARK).exists
        assert request(f"{SERVICE}/installed/{MAC}")[0] == 404
        assert request(f"{SERVICE}/installed/{PXELINUX_MAC}")[0] == 200, "only the machine to reinstall loses its mark"
    finally:
        host.run("rm -f /srv/pxe/installed/*")
