"""zerolab's image installer (roles/pxe/files/zerolab_install.py): what it
reads (the answers file, the kernel command line, /sys/block) and what it
writes from them.  The pxe scenario's opt-in install test runs it for real
on a QEMU client (ZEROLAB_PXE_INSTALL=1)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

PROGRAM = Path(__file__).resolve().parents[2] / "roles" / "pxe" / "files" / "zerolab_install.py"
spec = importlib.util.spec_from_file_location("zerolab_install", PROGRAM)
installer = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = installer  # its dataclass looks itself up there
spec.loader.exec_module(installer)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq5QFRymNBSUk3AfVnRoa9JkN2SekpIaeTQ4PcH0+cf molecule@zerolab"
GOOD = {
    "domain": "zerolab.test", "nameservers": ["10.89.62.2"], "username": "labadmin",
    "user_fullname": "zerolab admin", "user_password_crypted": "!", "authorized_keys": [KEY],
    "timezone": "Etc/UTC", "suite": "bookworm", "mirror": "http://deb.example.invalid/debian/",
    "security": "http://deb.example.invalid/debian-security/", "proxy": "http://10.89.62.2:3142/",
    "packages": ["sudo", "python3", "tree"], "report_url": "http://10.89.62.2:8069/installed/",
}


def answers(**changes):
    return installer.parse_answers(json.dumps(GOOD | changes), "installed1")


def test_good_answers_are_read_as_given():
    read = answers()
    assert read.hostname == "installed1"
    assert read.authorized_keys == [KEY]
    assert read.packages == ["sudo", "python3", "tree"]


@pytest.mark.parametrize("key, value, named", [
    ("username", "root; rm -rf /", "username"),
    ("username", "Admin", "username"),
    ("packages", ["tree", "-o=APT::foo"], "packages"),
    ("packages", "tree", "packages"),
    ("timezone", "../../etc/shadow", "timezone"),
    ("mirror", "ftp://mirror/debian", "mirror"),
    ("mirror", "http://mirror/debian\ndeb http://evil/ bookworm main", "mirror"),
    ("authorized_keys", [KEY + "\nssh-rsa AAAA other"], "authorized_keys"),
    ("user_fullname", "a:b", "user_fullname"),
    ("nameservers", ["dns.example"], "nameservers"),
    ("report_url", "", "report_url"),
    ("suite", 12, "suite"),
])
def test_a_bad_answer_is_refused_by_name(key, value, named):
    with pytest.raises(installer.InstallError, match=named):
        answers(**{key: value})


def test_no_key_and_no_password_is_refused():
    with pytest.raises(installer.InstallError, match="nobody could log into"):
        answers(authorized_keys=[], user_password_crypted="!")
    assert answers(authorized_keys=[], user_password_crypted="$6$salt$hash").user_password_crypted


@pytest.mark.parametrize("hostname", ["", "-web", "web_1", "a" * 64, "web 1", "web1\n"])
def test_a_bad_hostname_is_refused(hostname):
    with pytest.raises(installer.InstallError, match="hostname"):
        installer.parse_answers(json.dumps(GOOD), hostname)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.sampled_from(sorted(GOOD)), st.one_of(
                     st.text(max_size=40), st.integers(), st.none(), st.lists(st.text(max_size=20), max_size=3)),
                     max_size=len(GOOD)).map(lambda d: json.dumps(GOOD | d))))
def test_any_answers_file_is_read_or_refused_in_one_line(text):
    """Whatever the server sends, the installer reads it or says why in one
    line, never a traceback (it runs as init: a crash ends the machine)."""
    try:
        read = installer.parse_answers(text, "installed1")
    except installer.InstallError as error:
        assert "\n" not in str(error)
        return
    for line in (installer.apt_sources(read) + installer.apt_proxy(read) + installer.resolv_conf(read)).splitlines():
        assert line.startswith(("deb ", "Acquire::http::Proxy ", "search ", "nameserver "))


def test_what_it_writes_from_the_answers():
    read = answers()
    assert installer.hosts_file(read).splitlines()[1] == "127.0.1.1\tinstalled1.zerolab.test installed1"
    assert installer.apt_sources(read).splitlines() == [
        "deb http://deb.example.invalid/debian/ bookworm main",
        "deb http://deb.example.invalid/debian/ bookworm-updates main",
        "deb http://deb.example.invalid/debian-security/ bookworm-security main"]
    assert installer.apt_proxy(read) == 'Acquire::http::Proxy "http://10.89.62.2:3142/";\n'
    assert installer.apt_proxy(answers(proxy="")) == ""
    assert installer.resolv_conf(read) == "search zerolab.test\nnameserver 10.89.62.2\n"
    assert len(installer.apt_sources(answers(security="")).splitlines()) == 2


def test_the_kernel_command_line():
    cmdline = ("boot=zerolab zerolab.root=http://s/images/debian-12-image/root.tar.gz "
               "zerolab.answers=http://s/preseed/install.json zerolab.hostname=installed1 "
               "init=/usr/local/sbin/zerolab-install console=tty0 console=ttyS0,115200n8 BOOTIF=01-52-54-00-62-00-08")
    arguments = installer.kernel_arguments(cmdline)
    assert arguments["zerolab.answers"] == "http://s/preseed/install.json"
    assert installer.boot_mac(arguments) == "52-54-00-62-00-08"
    with pytest.raises(installer.InstallError, match="BOOTIF"):
        installer.boot_mac({"BOOTIF": "01-52-54-00-62-00"})
    grub = installer.grub_defaults('GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=""\n', cmdline)
    assert grub == 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"\n'
    # /etc/default/grub is shell: a console word that is not plain stays out.
    hostile = installer.grub_defaults('GRUB_CMDLINE_LINUX=""\n', 'console=ttyS0 console=$(reboot) console="x')
    assert hostile == 'GRUB_CMDLINE_LINUX="console=ttyS0"\n'


def block_device(root, name, size="16777216", removable="0", ro="0"):
    device = root / name
    device.mkdir()
    (device / "size").write_text(size + "\n")
    (device / "removable").write_text(removable + "\n")
    (device / "ro").write_text(ro + "\n")


def test_the_first_real_disk_is_chosen(tmp_path):
    block_device(tmp_path, "loop0")
    block_device(tmp_path, "sr0", removable="1")
    block_device(tmp_path, "vda", size="0")
    block_device(tmp_path, "vdb")
    block_device(tmp_path, "nvme0n1")
    assert installer.first_disk(tmp_path) == "/dev/nvme0n1"
    (tmp_path / "nvme0n1" / "ro").write_text("1\n")
    assert installer.first_disk(tmp_path) == "/dev/vdb"


def test_no_disk_is_a_clear_error(tmp_path):
    block_device(tmp_path, "sr0", removable="1")
    with pytest.raises(installer.InstallError, match="no disk"):
        installer.first_disk(tmp_path)


def test_partitions():
    assert installer.partition_name("/dev/vda", 1) == "/dev/vda1"
    assert installer.partition_name("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"
    assert "label: dos" in installer.partition_table(efi=False)
    assert "type=uefi" in installer.partition_table(efi=True)


def test_it_refuses_to_run_outside_its_image():
    """Started by hand on a working machine it would wipe the first disk."""
    run = subprocess.run([sys.executable, str(PROGRAM)], capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "wipes the first disk" in run.stderr


@pytest.mark.parametrize("data, on", [(b"\x06\x00\x00\x00\x01", True), (b"\x06\x00\x00\x00\x00", False),
                                      (b"\x06", False), (None, False)])
def test_secure_boot_is_read_from_its_efi_variable(tmp_path, data, on):
    variable = tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    if data is not None:
        variable.write_bytes(data)
    assert installer.secure_boot_on(variable) is on


def test_what_would_stop_the_install_half_way_is_refused_before_the_disk_is_touched(tmp_path):
    secure_boot = tmp_path / "SecureBoot"
    with pytest.raises(installer.InstallError, match="timezone 'Mars/Olympus' is not a time zone"):
        installer.refuse_before_wiping(answers(timezone="Mars/Olympus"), secure_boot)
    with pytest.raises(installer.InstallError, match="username 'root' is a system account"):
        installer.refuse_before_wiping(answers(username="root"), secure_boot)
    secure_boot.write_bytes(b"\x06\x00\x00\x00\x01")
    with pytest.raises(installer.InstallError, match="Secure Boot is on"):
        installer.refuse_before_wiping(answers(), secure_boot)
    secure_boot.write_bytes(b"\x06\x00\x00\x00\x00")
    installer.refuse_before_wiping(answers(username="zerolab-test-nobody"), secure_boot)
