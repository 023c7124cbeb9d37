# Shared by the scripts in this folder: paths, messages, podman settings.
# shellcheck shell=bash

ZEROLAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ZEROLAB_VENV="${ZEROLAB_VENV:-$ZEROLAB_ROOT/.venv}"
ZEROLAB_BUILD="${ZEROLAB_BUILD:-$ZEROLAB_ROOT/build}"
ZEROLAB_IMAGE_NAME="${ZEROLAB_IMAGE_NAME:-localhost/zerolab-node}"

# Every podman call of the project goes through the project's own settings.
export CONTAINERS_CONF="$ZEROLAB_ROOT/containers.conf"
export PATH="$ZEROLAB_VENV/bin:$PATH"

# One package cache for every lab container: apt-cacher-ng on the host, which
# the node image's apt finds at host.containers.internal:3142.  A host without
# an init system (CI) gets it started here.
ZEROLAB_PACKAGE_CACHE="${ZEROLAB_PACKAGE_CACHE:-/var/cache/zerolab/apt-cacher-ng}"
start_package_cache() {
    if (exec 3<>/dev/tcp/127.0.0.1/3142) 2>/dev/null; then
        return 0
    fi
    command -v apt-cacher-ng >/dev/null || die "apt-cacher-ng is missing: run scripts/bootstrap"
    say "starting the package cache (apt-cacher-ng on port 3142, $ZEROLAB_PACKAGE_CACHE)"
    install -d -o apt-cacher-ng -g apt-cacher-ng "$ZEROLAB_PACKAGE_CACHE"/{cache,log,run}
    # Its own small configuration: no mirror remapping, so each request goes
    # to the mirror the node asked for, which is the host's own.
    cat > "$ZEROLAB_PACKAGE_CACHE/acng.conf" <<CONF
CacheDir: $ZEROLAB_PACKAGE_CACHE/cache
LogDir: $ZEROLAB_PACKAGE_CACHE/log
SupportDir: /usr/lib/apt-cacher-ng
Port: 3142
PidFile: $ZEROLAB_PACKAGE_CACHE/run/pid
SocketPath: $ZEROLAB_PACKAGE_CACHE/run/socket
ExThreshold: 4
CONF
    su -s /bin/sh apt-cacher-ng -c "/usr/sbin/apt-cacher-ng -c $ZEROLAB_PACKAGE_CACHE ForeGround=0" \
        || die "apt-cacher-ng did not start; see $ZEROLAB_PACKAGE_CACHE/log"
}

# Heavy work (a Molecule scenario, VMs) runs one at a time on a small machine.
# --close: daemons started inside (libvirtd, the package cache) must not keep
# holding the lock after the command ends.
ZEROLAB_HEAVY_LOCK="${ZEROLAB_HEAVY_LOCK:-/tmp/zerolab-heavy.lock}"
one_at_a_time() { flock --close "$ZEROLAB_HEAVY_LOCK" "$@"; }

say() { printf '==> %s\n' "$*" >&2; }
# `SCRIPT --help` (or -h) prints the comment at the top of the script, which
# is its usage, and exits; call it first thing with the script's arguments.
usage_if_asked() {
    case "${1:-}" in
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    esac
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Debian's archive and security archive as the host's apt is configured for
# them, so users behind their own mirror get the same mirror in the lab.
debian_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/lab/hostconfig.py" debian-mirror; }
debian_security_mirror() { python3 -P "$ZEROLAB_ROOT/src/zerolab/lab/hostconfig.py" debian-security-mirror; }
# The package names in the given lists (one per line, # comments), comma
# separated as debootstrap's --include wants them.
package_list() { sed 's/#.*//' "$@" | xargs | tr ' ' ','; }

podman_usable() {
    command -v podman >/dev/null 2>&1 || return 1
    podman info >/dev/null 2>&1
}

# libvirt's daemons for Vagrant's libvirt provider.  A host with systemd starts
# them itself; a host without an init system (CI, containers) gets them
# started here, and `stop_libvirt` stops only what this started.
ZEROLAB_LIBVIRT_STARTED="$ZEROLAB_ROOT/.cache/lab/libvirt-started"
has_init_system() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }
start_libvirt() {
    command -v libvirtd >/dev/null || die "libvirtd is missing: run scripts/bootstrap (as root)"
    if has_init_system; then
        systemctl start virtlogd.socket libvirtd.service \
            || die "systemctl start libvirtd failed; see 'journalctl -u libvirtd'"
        return 0
    fi
    local daemons_started=()
    if ! pgrep -x virtlogd >/dev/null; then
        is_root || die "virtlogd is not running and only root can start it: rerun as root"
        virtlogd -d || die "virtlogd -d failed to start"
        daemons_started+=(virtlogd)
    fi
    if ! pgrep -x libvirtd >/dev/null; then
        is_root || die "libvirtd is not running and only root can start it: rerun as root"
        libvirtd -d || die "libvirtd -d failed to start; run 'libvirtd' in a terminal to see why"
        daemons_started+=(libvirtd)
    fi
    if [ "${#daemons_started[@]}" -gt 0 ]; then
        say "started ${daemons_started[*]} (no init system here)"
        mkdir -p "$(dirname "$ZEROLAB_LIBVIRT_STARTED")"
        printf '%s\n' "${daemons_started[@]}" >> "$ZEROLAB_LIBVIRT_STARTED"
    fi
    local deadline=$((SECONDS + 30))
    until virsh -c qemu:///system version >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "libvirtd does not answer on qemu:///system after 30 s"
        sleep 0.5
    done
}
stop_libvirt() {
    [ -f "$ZEROLAB_LIBVIRT_STARTED" ] || return 0
    if [ -n "$(virsh -c qemu:///system list --name 2>/dev/null | tr -d '[:space:]')" ]; then
        say "libvirtd keeps running: it still has domains (virsh list)"
        return 0
    fi
    local daemon pid
    # libvirtd first: it holds virtlogd's log files open.
    for daemon in libvirtd virtlogd; do
        grep -qx "$daemon" "$ZEROLAB_LIBVIRT_STARTED" || continue
        pid="$(cat "/run/$daemon.pid" 2>/dev/null)" || continue
        [ -n "$pid" ] && kill "$pid" 2>/dev/null && say "stopped $daemon (pid $pid)"
    done
    rm -f "$ZEROLAB_LIBVIRT_STARTED"
}
