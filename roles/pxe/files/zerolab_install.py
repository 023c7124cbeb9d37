#!/usr/bin/python3
"""zerolab's image installer: copies the running system image onto the
machine's disk, makes it that machine's, reports the install and reboots.

It runs on the client, as init, in zerolab's system image, which the
initramfs fetched into memory (boot=zerolab).  Its kernel arguments:

    zerolab.answers=URL    the preseed's answers (JSON, preseed/<name>.json)
    zerolab.hostname=NAME  the machine's inventory hostname
    BOOTIF=01-<mac>        the MAC the install report names

What it does, in order: partition the first disk (BIOS: one partition on an
MBR label; UEFI: an EFI system partition and the root on GPT), copy the
system, give it its hostname, network (DHCP), admin user and keys, time
zone, apt sources and proxy (the pxe node's package cache), install the
answers' extra packages through that proxy, install GRUB, POST the install
report, reboot.  On any error it prints "zerolab-install: FAILED: <why>" on
the console and stops there (init must not exit: the kernel would panic).

Standard library only: it runs on the image's own python3.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET = Path("/run/zerolab-target")
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.I)
DOMAIN = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.I)
USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
MAC = re.compile(r"01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})")
IPV4 = re.compile(r"(\d{1,3}\.){3}\d{1,3}")
URL = re.compile(r"https?://[^\s\"'\\]+")
TIMEZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
CONSOLE = re.compile(r"console=[A-Za-z0-9,]+")
# EFI's global variable: 1 in its fifth byte when Secure Boot is on.
SECURE_BOOT = Path("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
# A locked password ("!" or "*" in front) means keys only: the admin then
# gets sudo without a password, as the lab's other nodes give it.
LOCKED = re.compile(r"[!*].*")


class InstallError(Exception):
    """What stops the install, in one line for the console."""


@dataclass(frozen=True)
class Answers:
    hostname: str
    domain: str
    nameservers: list[str]
    username: str
    user_fullname: str
    user_password_crypted: str
    authorized_keys: list[str]
    timezone: str
    mirror: str
    security: str
    suite: str
    proxy: str
    packages: list[str]
    report_url: str


def kernel_arguments(cmdline: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in cmdline.split() if "=" in word)


def _text(raw: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None, allow_empty: bool = False) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise InstallError(f"answers: {key} must be a string, not {type(value).__name__}")
    if not value and allow_empty:
        return value
    if "\n" in value or (pattern is not None and not pattern.fullmatch(value)):
        raise InstallError(f"answers: {key} {value!r} is not valid")
    return value


def _list(raw: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InstallError(f"answers: {key} must be a list of strings")
    for item in value:
        if "\n" in item or (pattern is not None and not pattern.fullmatch(item)):
            raise InstallError(f"answers: {key} has an invalid item {item!r}")
    return value


def parse_answers(text: str, hostname: str) -> Answers:
    """The answers file, every value checked: it ends up in files and
    command lines of the installed system."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise InstallError(f"answers: not JSON ({error})") from None
    if not isinstance(raw, dict):
        raise InstallError("answers: not a JSON object")
    if not HOSTNAME.fullmatch(hostname):
        raise InstallError(f"zerolab.hostname={hostname!r} is not a hostname")
    answers = Answers(
        hostname=hostname,
        domain=_text(raw, "domain", DOMAIN, allow_empty=True),
        nameservers=_list(raw, "nameservers", IPV4),
        username=_text(raw, "username", USERNAME),
        user_fullname=_text(raw, "user_fullname", re.compile(r"[^:,]*")),
        user_password_crypted=_text(raw, "user_password_crypted", re.compile(r"[!*]?[A-Za-z0-9./$=+-]*")),
        authorized_keys=_list(raw, "authorized_keys", re.compile(r"[^\r]+")),
        timezone=_text(raw, "timezone", TIMEZONE),
        mirror=_text(raw, "mirror", URL),
        security=_text(raw, "security", URL, allow_empty=True),
        suite=_text(raw, "suite", re.compile(r"[a-z]+")),
        proxy=_text(raw, "proxy", URL, allow_empty=True),
        packages=_list(raw, "packages", PACKAGE),
        report_url=_text(raw, "report_url", URL),
    )
    if not answers.authorized_keys and LOCKED.fullmatch(answers.user_password_crypted or "!"):
        raise InstallError("answers: neither an SSH key nor a password: nobody could log into this machine")
    return answers


def boot_mac(arguments: dict[str, str]) -> str:
    match = MAC.fullmatch(arguments.get("BOOTIF", "").lower())
    if match is None:
        raise InstallError("no BOOTIF=01-<mac> on the kernel command line: the install report could not name the machine")
    return match.group(1)


def first_disk(sys_block: Path = Path("/sys/block")) -> str:
    """The first whole, writable, non-removable disk with a size."""
    for name in sorted(os.listdir(sys_block)):
        if not re.fullmatch(r"(vd[a-z]+|sd[a-z]+|nvme\d+n\d+|xvd[a-z]+)", name):
            continue
        device = sys_block / name
        if (device / "removable").read_text().strip() == "1" or (device / "ro").read_text().strip() == "1":
            continue
        if int((device / "size").read_text()) > 0:
            return f"/dev/{name}"
    raise InstallError(f"no disk to install on (looked in {sys_block})")


def partition_name(disk: str, number: int) -> str:
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def partition_table(efi: bool) -> str:
    """sfdisk's input: what the disk becomes."""
    if efi:
        return "label: gpt\nsize=256MiB, type=uefi, name=esp\ntype=linux, name=root\n"
    return "label: dos\ntype=83, bootable\n"


def hosts_file(answers: Answers) -> str:
    fqdn = f"{answers.hostname}.{answers.domain}" if answers.domain else answers.hostname
    names = f"{fqdn} {answers.hostname}" if answers.domain else answers.hostname
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


def apt_sources(answers: Answers) -> str:
    lines = [f"deb {answers.mirror} {answers.suite} main", f"deb {answers.mirror} {answers.suite}-updates main"]
    if answers.security:
        lines.append(f"deb {answers.security} {answers.suite}-security main")
    return "\n".join(lines) + "\n"


def apt_proxy(answers: Answers) -> str:
    return f'Acquire::http::Proxy "{answers.proxy}";\n' if answers.proxy else ""


def resolv_conf(answers: Answers) -> str:
    search = f"search {answers.domain}\n" if answers.domain else ""
    return search + "".join(f"nameserver {server}\n" for server in answers.nameservers)


def grub_defaults(original: str, cmdline: str) -> str:
    """/etc/default/grub with the installer's console= arguments (a serial
    console stays one) and a short menu timeout."""
    # /etc/default/grub is shell: only plain console= words go in.
    consoles = " ".join(word for word in cmdline.split() if CONSOLE.fullmatch(word))
    text = re.sub(r"^GRUB_TIMEOUT=.*$", "GRUB_TIMEOUT=1", original, flags=re.M)
    return re.sub(r"^GRUB_CMDLINE_LINUX=.*$", f'GRUB_CMDLINE_LINUX="{consoles}"', text, flags=re.M)


def say(message: str) -> None:
    print(f"zerolab-install: {message}", flush=True)


def run(*argv: str, stdin: str | None = None, target: bool = False) -> str:
    command = ["chroot", str(TARGET), *argv] if target else list(argv)
    say("$ " + shlex.join(command))
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                               "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"})
    if done.returncode != 0:
        raise InstallError(f"{shlex.join(command)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def fetch(url: str) -> str:
    for attempt in range(5):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body: bytes = response.read()
                return body.decode()
        except OSError as error:
            if attempt == 4:
                raise InstallError(f"cannot fetch {url}: {error}") from None
            time.sleep(3)
    raise AssertionError("unreachable")


def write(relative: str, text: str, mode: int = 0o644) -> None:
    path = TARGET / relative.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def copy_system(disk: str, efi: bool) -> None:
    run("wipefs", "--all", "--force", disk)
    run("sfdisk", "--quiet", "--wipe", "always", disk, stdin=partition_table(efi))
    run("udevadm", "settle")
    root = partition_name(disk, 2 if efi else 1)
    run("mkfs.ext4", "-F", "-q", "-L", "root", root)
    TARGET.mkdir(parents=True, exist_ok=True)
    run("mount", root, str(TARGET))
    fstab = f"UUID={run('blkid', '-s', 'UUID', '-o', 'value', root).strip()}\t/\text4\terrors=remount-ro\t0\t1\n"
    if efi:
        esp = partition_name(disk, 1)
        run("mkfs.vfat", "-F", "32", "-n", "EFI", esp)
        (TARGET / "boot/efi").mkdir(parents=True)
        run("mount", esp, str(TARGET / "boot/efi"))
        fstab += f"UUID={run('blkid', '-s', 'UUID', '-o', 'value', esp).strip()}\t/boot/efi\tvfat\tumask=0077\t0\t1\n"
    # / is the image in memory; /proc, /sys, /dev and /run are other file
    # systems, so -x copies their folders empty.
    run("cp", "-ax", "/.", f"{TARGET}/")
    (TARGET / "usr/local/sbin/zerolab-install").unlink()
    write("/etc/fstab", fstab)
    for mount in ("dev", "proc", "sys"):
        run("mount", "--bind", f"/{mount}", str(TARGET / mount))
    if efi:
        run("mount", "--bind", "/sys/firmware/efi/efivars", str(TARGET / "sys/firmware/efi/efivars"))


def make_it_this_machine(answers: Answers, cmdline: str) -> None:
    write("/etc/hostname", answers.hostname + "\n")
    write("/etc/hosts", hosts_file(answers))
    write("/etc/resolv.conf", resolv_conf(answers))
    write("/etc/systemd/network/80-zerolab-dhcp.network",
          "# Written by zerolab's image installer.\n[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n\n"
          # The MAC, as the installer's DHCP client sent it: a fixed address
          # (dhcp-host) follows the machine from installer to installed system.
          "[DHCPv4]\nClientIdentifier=mac\n")
    zone = Path("/usr/share/zoneinfo") / answers.timezone   # checked by refuse_before_wiping
    (TARGET / "etc/localtime").unlink(missing_ok=True)
    (TARGET / "etc/localtime").symlink_to(zone)
    write("/etc/timezone", answers.timezone + "\n")
    write("/etc/apt/sources.list", apt_sources(answers))
    write("/etc/apt/apt.conf.d/00zerolab-proxy", apt_proxy(answers))
    run("ssh-keygen", "-A", target=True)

    user = answers.username
    run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo",
        "--comment", answers.user_fullname, user, target=True)
    run("usermod", "--password", answers.user_password_crypted or "!", user, target=True)
    if LOCKED.fullmatch(answers.user_password_crypted or "!"):
        write(f"/etc/sudoers.d/zerolab-{user}", f"{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    if answers.authorized_keys:
        write(f"/home/{user}/.ssh/authorized_keys", "".join(key + "\n" for key in answers.authorized_keys), 0o600)
        run("chown", "-R", f"{user}:{user}", f"/home/{user}/.ssh", target=True)
        (TARGET / f"home/{user}/.ssh").chmod(0o700)

    installed = run("dpkg-query", "-W", "-f", "${Package}\n", target=True).split()
    missing = [package for package in answers.packages if package not in installed]
    if missing:
        # Daemons their maintainer scripts would start here would hold the
        # target busy (it could not be unmounted): policy-rc.d says no.
        write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
        run("apt-get", "update", target=True)
        run("apt-get", "install", "--yes", "--no-install-recommends", *missing, target=True)
        run("apt-get", "clean", target=True)
        (TARGET / "usr/sbin/policy-rc.d").unlink()

    defaults = TARGET / "etc/default/grub"
    defaults.write_text(grub_defaults(defaults.read_text(), cmdline))


def install_bootloader(disk: str, efi: bool) -> None:
    if efi:
        # The removable path: firmware finds it with no boot entry.
        run("grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--removable", "--no-nvram",
            target=True)
    else:
        run("grub-install", "--target=i386-pc", disk, target=True)
    run("update-grub", target=True)


def report(answers: Answers, mac: str) -> None:
    url = answers.report_url.rstrip("/") + "/" + mac
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            say(f"install reported: {url} {response.status}")
    except OSError as error:
        raise InstallError(f"the install report {url} failed: {error}") from None


def unmount_all() -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in reversed([m for m in mounts if m == str(TARGET) or m.startswith(f"{TARGET}/")]):
        run("umount", mount)


def refuse_before_wiping(answers: Answers, secure_boot: Path = SECURE_BOOT) -> None:
    """What would stop the install half-way, checked while the disk is
    still as it was (the image running is the one copied onto it)."""
    zone = Path("/usr/share/zoneinfo") / answers.timezone
    if ".." in answers.timezone or not zone.is_file():
        raise InstallError(f"answers: timezone {answers.timezone!r} is not a time zone of the image")
    if subprocess.run(["getent", "passwd", answers.username], capture_output=True, check=False).returncode == 0:
        raise InstallError(f"answers: username {answers.username!r} is a system account of the image")
    if secure_boot_on(secure_boot):
        raise InstallError("Secure Boot is on, and zerolab's image installs an unsigned GRUB that it would refuse: "
                           "turn Secure Boot off for this machine, or give its policy image debian-12")


def secure_boot_on(variable: Path) -> bool:
    try:
        data = variable.read_bytes()
    except OSError:
        return False   # no such variable: BIOS, or firmware without Secure Boot
    return len(data) >= 5 and data[4] == 1


def start_udev() -> None:
    """Load the drivers of the machine's disks: the initramfs loaded only
    its network's, and as init nothing else starts udev."""
    run("/lib/systemd/systemd-udevd", "--daemon")
    run("udevadm", "trigger", "--action=add")
    run("udevadm", "settle", "--timeout=120")


def install() -> None:
    cmdline = Path("/proc/cmdline").read_text()
    arguments = kernel_arguments(cmdline)
    if "zerolab.answers" not in arguments:
        raise InstallError("no zerolab.answers=URL on the kernel command line")
    mac = boot_mac(arguments)
    answers = parse_answers(fetch(arguments["zerolab.answers"]), arguments.get("zerolab.hostname", ""))
    efi = Path("/sys/firmware/efi").is_dir()
    refuse_before_wiping(answers)
    start_udev()
    disk = first_disk()
    say(f"installing {answers.hostname} ({mac}) onto {disk}, {'UEFI' if efi else 'BIOS'}")
    copy_system(disk, efi)
    make_it_this_machine(answers, cmdline)
    install_bootloader(disk, efi)
    unmount_all()
    os.sync()
    run("udevadm", "control", "--exit")
    report(answers, mac)
    say("done: rebooting into the installed system")


def main() -> None:
    try:
        install()
    except InstallError as error:
        say(f"FAILED: {error}")
        halt()
    except Exception:  # noqa: BLE001 - init must never exit: say why and stop
        traceback.print_exc()
        say("FAILED: the installer crashed (traceback above)")
        halt()
    Path("/proc/sysrq-trigger").write_text("b")


def halt() -> None:
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if os.getpid() != 1 and "--force" not in sys.argv:
        raise SystemExit("zerolab-install runs as init in zerolab's system image (boot=zerolab); it wipes the first disk")
    main()
