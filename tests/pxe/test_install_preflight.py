"""benchmarks/pxe.py's install checks, against a stand-in mirror on loopback:
an install that cannot finish is said at once, not after an hour.  The real
mirror is asked by the install test itself (molecule/pxe/tests/test_install.py)."""

import http.server
import importlib.util
import lzma
import threading
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "pxe.py"
spec = importlib.util.spec_from_file_location("pxe_benchmark", BENCHMARK)
pxe_benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pxe_benchmark)

UDEB = "pool/main/a/anna/anna_1.91_amd64.udeb"
PACKAGES = f"Package: anna\nVersion: 1.91\nFilename: {UDEB}\n\n".encode()


@pytest.fixture(params=[True, False], ids=["with udebs", "debs only"])
def mirror(request):
    serves_udebs = request.param

    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path.endswith("/debian-installer/binary-amd64/Packages.xz"):
                body = lzma.compress(PACKAGES)
            elif self.path.endswith(UDEB) and serves_udebs:
                body = b"!<arch>\n"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield serves_udebs, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_mirror_without_the_installers_components_is_named_before_any_boot(mirror):
    serves_udebs, address = mirror
    preseed = (f"d-i mirror/http/hostname string {address}\n"
               "d-i mirror/http/directory string /debian\nd-i mirror/http/proxy string \n")
    why = pxe_benchmark.installer_components_missing(preseed)
    if serves_udebs:
        assert why is None
    else:
        assert why and f"http://{address}/debian/{UDEB}: 404" in why and "no install can finish" in why


def test_a_preseed_without_a_mirror_is_named():
    assert pxe_benchmark.installer_components_missing("d-i debian-installer/locale string C\n") == \
        "the preseed names no HTTP mirror"


def test_the_installers_error_dialog_is_read_off_its_console():
    console = "\x1b[7m[!!] Download installer components\x1b[0m\nThe installer failed to download a file"
    assert pxe_benchmark.installer_error(console) == "Download installer components"
    assert pxe_benchmark.installer_error("Retrieving apt-mirror-setup ... 100%") is None
