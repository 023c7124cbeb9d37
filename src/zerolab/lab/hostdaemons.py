"""The host's own daemons that the lab leans on: the package cache and libvirt.

    python -m zerolab.lab.hostdaemons package-cache   # apt-cacher-ng on 127.0.0.1:3142
    python -m zerolab.lab.hostdaemons libvirt         # virtlogd + libvirtd (Vagrant's provider)
    python -m zerolab.lab.hostdaemons stop-libvirt    # stop only what `libvirt` started

A host with systemd runs libvirt itself; a host without an init system (CI,
containers) gets the daemons started here, and a record of what was started,
so that `stop-libvirt` (scripts/lab down --vagrant) stops only those.  The
package cache is started by hand everywhere: it runs with a configuration of
the lab's own, so the host's apt-cacher-ng settings (and service) are left
alone.  Every failure is one LabError line saying what to do.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .hostconfig import port_answers
from .steps import STATE, LabError

PACKAGE_CACHE_PORT = 3142
PACKAGE_CACHE_DIR = Path(os.environ.get("ZEROLAB_PACKAGE_CACHE", "/var/cache/zerolab/apt-cacher-ng"))
PACKAGE_CACHE_USER = "apt-cacher-ng"
LIBVIRT = "qemu:///system"
LIBVIRT_STARTED = STATE / "libvirt-started"
LIBVIRT_DAEMONS = ("virtlogd", "libvirtd")   # virtlogd first: libvirtd logs through it


def _answers(port: int) -> bool:
    return port_answers("127.0.0.1", port)


def _wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise LabError(what)
        time.sleep(0.25)


def _tool(name: str, package: str) -> str:
    found = shutil.which(name, path=f"/usr/sbin:/usr/bin:/sbin:{os.environ.get('PATH', '')}")
    if not found:
        raise LabError(f"{name} is missing ({package}): run scripts/bootstrap as root")
    return found


def _is_root() -> bool:
    return os.geteuid() == 0


def has_init_system() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


# --- the package cache ----------------------------------------------------------

def package_cache_config(directory: Path, port: int) -> str:
    # No mirror remapping: each request goes to the mirror the node asked for,
    # which is the host's own (the node image copies the host's apt sources).
    return "\n".join([
        f"CacheDir: {directory}/cache",
        f"LogDir: {directory}/log",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"Port: {port}",
        f"PidFile: {directory}/run/pid",
        f"SocketPath: {directory}/run/socket",
        "ExThreshold: 4",
        "",
    ])


def start_package_cache(directory: Path = PACKAGE_CACHE_DIR, port: int | None = None) -> str:
    """One package cache for every lab container: apt-cacher-ng on the host.

    The node image's apt finds it at host.containers.internal:3142.
    """
    port = port or PACKAGE_CACHE_PORT
    if _answers(port):
        return f"package cache answers on port {port}"
    binary = _tool("apt-cacher-ng", "apt-cacher-ng")
    if not _is_root():
        raise LabError(f"the package cache is not running and only root can start it: rerun as root "
                       f"(or start apt-cacher-ng on port {port})")
    try:
        owner = pwd.getpwnam(PACKAGE_CACHE_USER)
    except KeyError:
        raise LabError(f"user {PACKAGE_CACHE_USER} is missing: reinstall apt-cacher-ng "
                       "(apt-get install --reinstall apt-cacher-ng)") from None
    print(f"==> starting the package cache (apt-cacher-ng on port {port}, {directory})",
          file=sys.stderr, flush=True)
    for sub in ("cache", "log", "run"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
        os.chown(directory / sub, owner.pw_uid, owner.pw_gid)
    (directory / "acng.conf").write_text(package_cache_config(directory, port))
    result = subprocess.run([binary, "-c", str(directory), "ForeGround=0"], user=owner.pw_uid, group=owner.pw_gid,
                            extra_groups=[], cwd="/", capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"apt-cacher-ng did not start ({last}); see {directory}/log")
    _wait_until(lambda: _answers(port), 15,
                f"apt-cacher-ng started but port {port} does not answer after 15 s; see {directory}/log")
    return f"package cache started on port {port}"


# --- libvirt ----------------------------------------------------------------------

def _running(daemon: str) -> bool:
    return subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 0


def _libvirt_answers() -> bool:
    return subprocess.run(["virsh", "-c", LIBVIRT, "version"], capture_output=True).returncode == 0


def start_libvirt(record: Path = LIBVIRT_STARTED) -> str:
    """libvirt's daemons for Vagrant's libvirt provider, answering on qemu:///system."""
    _tool("libvirtd", "libvirt-daemon-system")
    _tool("virsh", "libvirt-clients")
    started: list[str] = []
    if has_init_system():
        result = subprocess.run(["systemctl", "start", "virtlogd.socket", "libvirtd.service"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise LabError("systemctl start libvirtd failed; see 'journalctl -u libvirtd'")
    else:
        for daemon in LIBVIRT_DAEMONS:
            if _running(daemon):
                continue
            if not _is_root():
                raise LabError(f"{daemon} is not running and only root can start it: rerun as root")
            if subprocess.run([_tool(daemon, "libvirt-daemon-system"), "-d"]).returncode != 0:
                raise LabError(f"{daemon} -d failed to start; run '{daemon}' in a terminal to see why")
            started.append(daemon)
        if started:
            record.parent.mkdir(parents=True, exist_ok=True)
            with record.open("a") as out:
                out.writelines(f"{daemon}\n" for daemon in started)
    _wait_until(_libvirt_answers, 30, f"libvirtd does not answer on {LIBVIRT} after 30 s")
    if started:
        return f"started {' '.join(started)} (no init system here)"
    return "libvirt answers"


def stop_libvirt(record: Path = LIBVIRT_STARTED) -> str:
    """Stop the daemons that start_libvirt started, once they hold no domain."""
    if not record.exists():
        return "nothing of ours to stop"
    domains = subprocess.run(["virsh", "-c", LIBVIRT, "list", "--name"], capture_output=True, text=True)
    if domains.returncode == 0 and domains.stdout.strip():
        return "libvirtd keeps running: it still has domains (virsh list)"
    ours = set(record.read_text().split())
    stopped = []
    # libvirtd first: it holds virtlogd's log files open.
    for daemon in reversed(LIBVIRT_DAEMONS):
        if daemon not in ours:
            continue
        try:
            pid = int(Path(f"/run/{daemon}.pid").read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue     # already gone
        stopped.append(f"{daemon} (pid {pid})")
    record.unlink(missing_ok=True)
    return f"stopped {', '.join(stopped)}" if stopped else "ours had stopped already"


ACTIONS = {"package-cache": start_package_cache, "libvirt": start_libvirt, "stop-libvirt": stop_libvirt}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ACTIONS:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: python -m zerolab.lab.hostdaemons {{{','.join(ACTIONS)}}}", file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    try:
        print(f"==> {ACTIONS[args[0]]()}", file=sys.stderr)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
