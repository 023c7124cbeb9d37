"""The pxe role's install-report service (roles/pxe/files/pxe_installed.py),
on loopback: a report writes one mark per loader; what is not a report gets
one line.  The scenario runs the same program on the pxe node with real
clients."""

import http.client
import importlib.util
import threading
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parents[2] / "roles" / "pxe" / "files" / "pxe_installed.py"
MAC = "52:54:00:62:00:08"


@pytest.fixture
def service(tmp_path):
    spec = importlib.util.spec_from_file_location("pxe_installed", PROGRAM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hosts = tmp_path / "hosts"
    hosts.write_text(f"{MAC}\n")
    marks = tmp_path / "installed"
    marks.mkdir()
    handler = type("Handler", (module.Handler,), {"hosts_file": str(hosts), "marks": str(marks)})
    server = module.http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], marks
    server.shutdown()
    server.server_close()


def call(port, method, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=b"" if method == "POST" else None)
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_a_report_writes_a_mark_for_every_loader(service):
    port, marks = service
    assert call(port, "GET", f"/installed/{MAC}")[0] == 404
    status, body = call(port, "POST", f"/installed/{MAC.upper()}")
    assert (status, body.count("\n")) == (201, 1), body
    mac = MAC.replace(":", "-")
    assert (marks / f"{mac}.ipxe").read_text().startswith("#!ipxe\n")
    assert (marks / f"{mac}.ipxe").read_text().endswith("\nexit\n")
    assert (marks / f"{mac}.grub").read_text().endswith("\nset zerolab_installed=1\n")
    assert (marks / f"{mac}.pxelinux").read_text().endswith("\nDEFAULT installed\n")
    assert not list(marks.glob("*.tmp"))
    assert call(port, "GET", f"/installed/{mac}")[0] == 200


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/installed/52:54:00:62:00:09", 404),
    ("POST", "/installed/../../etc/passwd", 400),
    ("POST", "/elsewhere", 404),
    ("DELETE", f"/installed/{MAC}", 405),
])
def test_what_is_not_a_report_writes_nothing(service, method, path, status):
    port, marks = service
    got, body = call(port, method, path)
    assert (got, body.count("\n")) == (status, 1), body
    assert not list(marks.iterdir())
